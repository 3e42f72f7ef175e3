"""A forwarding proxy on 127.0.0.1 for the tests (a context manager), as a client meets one: CONNECT tunnels for
https, absolute-form requests for http.

After a connection's first request head it relays bytes both ways as they come, and passes each end on as it
came (a FIN as a FIN, a reset as a reset), so that whatever a server does reaches the client unchanged. It
records each connection's first head, and may ask for credentials (407) or refuse every request.
"""

from __future__ import annotations

import base64
import select
import socket
import struct
import threading
from urllib.parse import urlsplit

HEAD_LIMIT = 64 * 1024


def reset(sock: socket.socket) -> None:
    """Close with a TCP RST instead of a FIN."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


class ForwardingProxy:
    """``credentials`` (user, password): requests without them get 407. ``refusal``: an answer every request
    gets instead of a tunnel or a relay (the connection is then closed)."""

    def __init__(self, credentials: tuple[str, str] | None = None, refusal: bytes | None = None) -> None:
        self.credentials = credentials
        self.refusal = refusal
        self.heads: list[bytes] = []  # the first request head of each connection
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        self._busy = 0  # relays holding bytes they read and have not passed on yet
        self._sockets: set[socket.socket] = set()
        self._threads: list[threading.Thread] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.05)
        self.address = f"127.0.0.1:{self._listener.getsockname()[1]}"

    @property
    def url(self) -> str:
        """The proxy's URL, with its credentials when it asks for some."""
        userinfo = ":".join(self.credentials) + "@" if self.credentials else ""
        return f"http://{userinfo}{self.address}"

    def settled(self) -> bool:
        """Whether every byte that reached the proxy has been passed on (nothing unread, no relay in the midst)."""
        with self._lock:
            sockets = [s for s in self._sockets if s.fileno() >= 0]
        try:
            readable = select.select(sockets, [], [], 0)[0]
        except (OSError, ValueError):  # a socket closed in between: ask again
            return False
        with self._lock:
            return not readable and self._busy == 0

    def __enter__(self) -> ForwardingProxy:  # noqa: PYI034  (typing.Self needs Python 3.11)
        thread = threading.Thread(target=self._accept, name="proxy-accept", daemon=True)
        self._threads.append(thread)
        thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        self._listener.close()
        for thread in self._threads:
            thread.join(timeout=5)

    def _accept(self) -> None:
        while not self.stopping.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            thread = threading.Thread(target=self._serve, args=(client,), name="proxy", daemon=True)
            self._threads.append(thread)
            thread.start()

    def _authorized(self, head: bytes) -> bool:
        if self.credentials is None:
            return True
        expected = b"Basic " + base64.b64encode(":".join(self.credentials).encode())
        lines = head.split(b"\r\n")[1:]
        return any(line.lower().startswith(b"proxy-authorization:") and line[20:].strip() == expected for line in lines)

    def _serve(self, client: socket.socket) -> None:
        upstream: socket.socket | None = None
        try:
            data = b""
            while b"\r\n\r\n" not in data and len(data) < HEAD_LIMIT:
                more = client.recv(65536)
                if not more:
                    return
                data += more
            head, _, rest = data.partition(b"\r\n\r\n")
            self.heads.append(head)
            method, target, _ = head.split(b"\r\n")[0].split(b" ", 2)
            if not self._authorized(head):
                client.sendall(b"HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 0\r\n\r\n")
                return
            if self.refusal is not None:
                client.sendall(self.refusal)
                return
            if method == b"CONNECT":
                host, _, port = target.decode().rpartition(":")
                upstream = socket.create_connection((host.strip("[]"), int(port)))
                client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
                first = rest
            else:  # absolute form: the request goes on as it came
                parts = urlsplit(target.decode())
                upstream = socket.create_connection((parts.hostname, parts.port or 80))
                first = data
            upstream.sendall(first)
            self._relay(client, upstream)
        except OSError:
            pass
        finally:
            for sock in (client, upstream):
                if sock is not None:
                    sock.close()

    def _relay(self, client: socket.socket, upstream: socket.socket) -> None:
        """Bytes both ways until both ends have finished; a reset on one side resets the other."""
        ends = {client: upstream, upstream: client}  # a side still read from → the side its bytes go to
        for sock in ends:  # bytes go on as they come, never held back for an ACK (Nagle's algorithm)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self._lock:
            self._sockets.update(ends)
        try:
            while ends and not self.stopping.is_set():
                for source in select.select(list(ends), [], [], 0.05)[0]:
                    target = ends[source]
                    with self._lock:
                        self._busy += 1
                    try:
                        try:
                            data = source.recv(65536)
                        except ConnectionResetError:
                            reset(target)
                            return
                        if data:
                            target.sendall(data)
                        else:  # its end: passed on, and nothing more to read from it
                            target.shutdown(socket.SHUT_WR)
                            del ends[source]
                            self._sockets.discard(source)
                    finally:
                        with self._lock:
                            self._busy -= 1
        finally:
            with self._lock:
                self._sockets.difference_update((client, upstream))
