"""A misbehaving HTTP/1.1 gateway on raw sockets (127.0.0.1), one mode per case, for tests/test_gateway.py; over
TLS when given a server context (the modes then misbehave inside TLS, as a gateway that terminates it does).

Each mode is a function that serves one accepted connection. Every answer carries the envelope
``{"code": "0", "msg": "ok", "data": {"request": n}}``, where ``n`` counts requests over all connections
from 1, so that a test can tell which request an answer belongs to. The gateway counts connections and
requests; ``settled()`` says whether every connection is waiting for a request (or gone), so that a test
can let a mode's misbehaviour on an idle connection happen before it sends the next request.
"""

from __future__ import annotations

import json
import socket
import ssl
import struct
import threading
import zlib
from collections.abc import Callable
from functools import cache

IDLE_DELAY = 0.02  # how long a connection sits idle before a mode misbehaves on it
LIMIT = 64 * 1024 * 1024  # the exporter's bound on a body, raw or decompressed
MIB = 1024 * 1024


class Gone(Exception):
    """The client closed or reset the connection, or the gateway is stopping."""


def envelope(n: int) -> bytes:
    return json.dumps({"code": "0", "msg": "ok", "data": {"request": n}}).encode()


def answer(n: int, extra: bytes = b"", status: bytes = b"HTTP/1.1 200 OK", eol: bytes = b"\r\n") -> bytes:
    """A whole answer to request ``n`` with ``Content-Length``; ``extra`` header lines use ``eol`` too."""
    body = envelope(n)
    lines = [status, b"Content-Type: application/json", b"Content-Length: %d" % len(body)]
    lines += [line for line in extra.split(b"\n") if line]
    return eol.join(lines) + eol + eol + body


def padded_envelope_parts(n: int, size: int) -> list[bytes]:
    """Request ``n``'s envelope padded with spaces inside to ``size`` bytes, in pieces of at most 1 MiB:
    valid JSON, so that only the size can make a client refuse it."""
    prefix = envelope(n)[:-1]
    pad = size - len(prefix) - 1
    return [prefix, *(b" " * min(MIB, pad - start) for start in range(0, pad, MIB)), b"}"]


@cache
def bomb(wbits: int, n: int) -> bytes:
    """A padded envelope of LIMIT + 1 bytes, compressed (gzip: wbits 31, zlib-wrapped deflate: 15): 65 KB."""
    packer = zlib.compressobj(9, zlib.DEFLATED, wbits)
    return b"".join([*(packer.compress(part) for part in padded_envelope_parts(n, LIMIT + 1)), packer.flush()])


class Peer:
    """One accepted connection."""

    def __init__(self, gateway: Gateway, sock: socket.socket) -> None:
        self.gateway = gateway
        self.sock = sock
        self.buffer = b""
        self.served = 0  # requests read on this connection
        self.waiting = False
        self.done = False

    def read_request(self) -> int | None:
        """The number of the next request (read whole), or None when the client has gone."""
        self.waiting = True
        try:
            while b"\r\n\r\n" not in self.buffer:
                data = self.sock.recv(65536)
                if not data:
                    return None
                self.buffer += data
        except OSError:
            return None
        head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        assert b"content-length" not in head.lower(), "the exporter's GETs have no body"
        self.served += 1
        self.waiting = False
        return self.gateway.count_request()

    def send(self, data: bytes) -> None:
        if self.gateway.stopping.is_set():
            raise Gone()
        try:
            self.sock.sendall(data)
        except OSError:
            raise Gone() from None

    def idle(self) -> None:
        """Sit idle a moment, as a connection does between requests."""
        if self.gateway.stopping.wait(IDLE_DELAY):
            raise Gone()

    def start_tls(self, context: ssl.SSLContext) -> None:
        """The TLS handshake, as the server: from then on the modes talk inside TLS."""
        self.sock = context.wrap_socket(self.sock, server_side=True)

    def reset(self) -> None:
        """Close with a TCP RST instead of a FIN."""
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()


Mode = Callable[[Peer], None]


def serve_each(reply: Callable[[int], bytes], then: Callable[[Peer], bool] | None = None) -> Mode:
    """A mode that sends ``reply(n)`` to each request; ``then`` runs after each and ends the connection by
    returning False."""

    def mode(peer: Peer) -> None:
        while (n := peer.read_request()) is not None:
            peer.send(reply(n))
            if then is not None and not then(peer):
                return

    return mode


def idle_408(peer: Peer) -> bool:
    peer.idle()
    peer.send(b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
    peer.sock.close()
    return False


def idle_crlf(peer: Peer) -> bool:
    peer.idle()
    peer.send(b"\r\n")
    return True


def idle_fin(peer: Peer) -> bool:
    peer.idle()
    peer.sock.close()
    return False


def idle_rst(peer: Peer) -> bool:
    peer.idle()
    peer.reset()
    return False


def second_request_408(peer: Peer) -> None:
    """Answers the first request; the second (on the reused connection) gets 408 and a close."""
    while (n := peer.read_request()) is not None:
        if peer.served == 1:
            peer.send(answer(n))
        else:
            peer.send(b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
            peer.sock.close()
            return


def second_request_rst(peer: Peer) -> None:
    """Answers the first request; the second is read and met with a reset."""
    while (n := peer.read_request()) is not None:
        if peer.served > 1:
            peer.reset()
            return
        peer.send(answer(n))


def huge_content_length(peer: Peer) -> None:
    if (n := peer.read_request()) is None:
        return
    peer.send(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % (LIMIT + 1))
    for part in padded_envelope_parts(n, LIMIT + 1):
        peer.send(part)  # until the client gives up


def huge_chunked(peer: Peer) -> None:
    if (n := peer.read_request()) is None:
        return
    peer.send(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
    for part in padded_envelope_parts(n, LIMIT + 1):
        peer.send(b"%x\r\n%s\r\n" % (len(part), part))
    peer.send(b"0\r\n\r\n")


def compressed(wbits: int, coding: bytes) -> Mode:
    def mode(peer: Peer) -> None:
        while (n := peer.read_request()) is not None:
            body = bomb(wbits, n)
            peer.send(b"HTTP/1.1 200 OK\r\nContent-Encoding: %s\r\nContent-Length: %d\r\n\r\n" % (coding, len(body)))
            peer.send(body)

    return mode


def cut_short(reply: Callable[[int], bytes]) -> Mode:
    """Sends ``reply(n)``, which holds less than its head promises, and closes."""

    def mode(peer: Peer) -> None:
        if (n := peer.read_request()) is not None:
            peer.send(reply(n))
            peer.sock.close()

    return mode


def http10(peer: Peer) -> None:
    if (n := peer.read_request()) is not None:
        peer.send(b"HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n" + envelope(n))
        peer.sock.close()


def trickle(peer: Peer) -> None:
    """One byte of the answer a second, until the client goes (it times out long before the end)."""
    if (n := peer.read_request()) is None:
        return
    for byte in answer(n):
        peer.send(bytes([byte]))
        if peer.gateway.stopping.wait(1.0):
            return


def padded(n: int) -> bytes:
    """An answer whose head is 100 KiB."""
    plain = answer(n)
    head_size = plain.index(b"\r\n\r\n") + 4
    pad = 100 * 1024 - head_size - len(b"X-Padding: \r\n")
    return answer(n, b"X-Padding: " + b"p" * pad)


def blank_lines_first(n: int) -> bytes:
    return b"\r\n\r\n" + answer(n)


def length_list(n: int) -> bytes:
    size = len(envelope(n))
    return answer(n).replace(b"Content-Length: %d" % size, b"Content-Length: %d, %d" % (size, size))


def length_list_differing(n: int) -> bytes:
    size = len(envelope(n))
    return answer(n).replace(b"Content-Length: %d" % size, b"Content-Length: %d, %d" % (size, size + 1))


def length_twice(n: int) -> bytes:
    return answer(n, b"Content-Length: %d" % len(envelope(n)))


def length_twice_differing(n: int) -> bytes:
    return answer(n, b"Content-Length: %d" % (len(envelope(n)) + 1))


MODES: dict[str, Mode] = {
    "keep-alive": serve_each(answer),
    "408 on idle": serve_each(answer, idle_408),
    "408 to a reused connection": second_request_408,
    "stray CRLF on idle": serve_each(answer, idle_crlf),
    "FIN on idle": serve_each(answer, idle_fin),
    "RST on idle": serve_each(answer, idle_rst),
    "RST when a reused connection is written to": second_request_rst,
    "obs-fold": serve_each(lambda n: answer(n, b"X-Folded: one\n  two\n\tthree")),
    "bare LF": serve_each(lambda n: answer(n, b"X-Plain: 1", eol=b"\n")),
    "empty lines before the status line": serve_each(blank_lines_first),
    "Content-Length N, N": serve_each(length_list),
    "Content-Length N, M": serve_each(length_list_differing),
    "two equal Content-Lengths": serve_each(length_twice),
    "two differing Content-Lengths": serve_each(length_twice_differing),
    "a 100 KiB head": serve_each(padded),
    "a Content-Length over 64 MiB": huge_content_length,
    "a chunked body over 64 MiB": huge_chunked,
    "a gzip bomb": compressed(31, b"gzip"),
    "a deflate bomb": compressed(15, b"deflate"),
    "a truncated body": cut_short(lambda n: answer(n).replace(b"Content-Length: ", b"Content-Length: 1")),
    "an over-long body": serve_each(lambda n: answer(n) + b"and more"),
    "a truncated chunked body": cut_short(
        lambda n: (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n%s" % (len(envelope(n)) + 10, envelope(n))
        )
    ),
    "100 Continue first": serve_each(lambda n: b"HTTP/1.1 100 Continue\r\n\r\n" + answer(n)),
    "HTTP/1.0, close-delimited": http10,
    "a duplicated answer": serve_each(lambda n: answer(n) * 2),
    "a byte a second": trickle,
}


class Gateway:
    """A server on 127.0.0.1 that serves every connection with one mode of MODES (a context manager)."""

    def __init__(self, mode: str, tls: ssl.SSLContext | None = None) -> None:
        self.mode = MODES[mode]
        self.tls = tls
        self.connections = 0
        self.requests = 0
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        self._peers: list[Peer] = []
        self._threads: list[threading.Thread] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.05)  # so that the accept loop sees ``stopping``

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self._listener.getsockname()[1]}"

    def count_request(self) -> int:
        with self._lock:
            self.requests += 1
            return self.requests

    def settled(self) -> bool:
        """Whether every connection waits for a request or has ended: nothing more is on its way."""
        with self._lock:
            return all(p.waiting or p.done for p in self._peers)

    def _accept(self) -> None:
        while not self.stopping.is_set():
            try:
                sock, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            sock.settimeout(None)
            # Without it, an answer written after TLS's own records waits for an ACK (Nagle's algorithm), and a
            # reset soon after drops it unsent.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            peer = Peer(self, sock)
            with self._lock:
                self.connections += 1
                self._peers.append(peer)
            thread = threading.Thread(target=self._serve, args=(peer,), name="gateway", daemon=True)
            self._threads.append(thread)
            thread.start()

    def _serve(self, peer: Peer) -> None:
        try:
            if self.tls is not None:
                peer.start_tls(self.tls)
            self.mode(peer)
        except (Gone, OSError):  # OSError: a TLS handshake that failed
            pass
        finally:
            peer.sock.close()
            peer.done = True

    def __enter__(self) -> Gateway:  # noqa: PYI034  (typing.Self needs Python 3.11)
        thread = threading.Thread(target=self._accept, name="gateway-accept", daemon=True)
        self._threads.append(thread)
        thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        self._listener.close()
        with self._lock:
            peers = list(self._peers)
        for peer in peers:
            try:
                peer.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for thread in self._threads:
            thread.join(timeout=5)
