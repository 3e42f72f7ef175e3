"""The /metrics HTTP server: request heads are read in one asyncio event loop, complete requests run on a
fixed pool of worker threads (the WSGI app), and answers are written back from the loop.

A thread that waits for a request head can be held by any client that never finishes one, so no thread
ever does: idle and half-sent connections cost memory in the loop (a TLS one 300 kB), never a thread. Whatever
clients do, the server runs ``workers`` + 1 threads and holds at most ``max_connections`` connections (at
the cap, the least recently active connection with no request in progress makes room, so a scrape always
gets in), and a request head must be whole within ``head_timeout`` of its first byte (of the accept for
the first one, the TLS handshake included).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import queue
import resource
import socket
import ssl
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

from exporter.serving.httpconn import SEND_BUFFER, Connection, Limits, WSGIApp, run_app
from exporter.serving.httphead import HttpDate, RequestHead, wsgi_environ

log = logging.getLogger(__name__)

ACCEPT_BATCH = 64  # connections accepted per wake-up, so that a flood of them cannot starve the others
_OUT_OF_RESOURCES = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)
# Whatever a misbehaving client makes happen on its connection: worth a debug line, not an error.
_CLIENT_ERRORS = (ConnectionError, ssl.SSLError, TimeoutError, asyncio.TimeoutError)
# A request for the workers: its connection, head, path, query, the app to run, and the server's address.
_Request = tuple[Connection, RequestHead, str, str, WSGIApp, tuple[str, int]]


def raise_open_files_limit() -> int:
    """Raise the soft limit on open files to the hard limit, as Go's runtime does; returns the soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard and hard != resource.RLIM_INFINITY:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (OSError, ValueError) as exc:  # e.g. a system-call filter; LimitNOFILE= sets both anyway
            log.debug(
                "cannot raise the open-files limit from %d to %d: %s",
                soft,
                hard,
                exc,
                extra={"soft_limit": soft, "hard_limit": hard},
            )
    return soft


class ListenError(OSError):
    """An address the server cannot listen on: ``address`` (host, port), with the errno and reason why."""

    def __init__(self, address: tuple[str, int], cause: OSError) -> None:
        super().__init__(cause.errno, cause.strerror or str(cause))
        self.address = address


def _listen(host: str, port: int) -> socket.socket:
    """A non-blocking socket listening on ``host:port``; ListenError if it cannot be had."""
    try:
        listener = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    except OSError as exc:
        raise ListenError((host, port), exc) from exc
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((host, port))
        listener.listen(socket.SOMAXCONN)
        listener.setblocking(False)
    except OSError as exc:
        listener.close()
        raise ListenError((host, port), exc) from exc
    return listener


class _ServerLoop:
    """The server's event loop and what it keeps: the listening sockets, the connections (least recently active
    first, each with the address of the socket that accepted it), the queue of requests for the workers."""

    def __init__(
        self, listeners: list[socket.socket], limits: Limits, app_and_tls: Callable[[], tuple[WSGIApp, Any]]
    ) -> None:
        self.loop = asyncio.new_event_loop()
        self.limits = limits
        self.date = HttpDate()
        self.listeners = listeners
        self.app_and_tls = app_and_tls
        self.connections: OrderedDict[Connection, tuple[str, int]] = OrderedDict()
        self.connection_cap = limits.max_connections
        self.requests: queue.SimpleQueue[_Request | None] = queue.SimpleQueue()
        self.backoff = 0.0  # > 0 while accepting is paused (out of file descriptors or the like)

    def run(self) -> None:
        """The loop thread."""
        asyncio.set_event_loop(self.loop)
        self.loop.set_exception_handler(_on_loop_error)
        for listener in self.listeners:
            self.loop.add_reader(listener.fileno(), self.accept, listener)
        self.loop.run_forever()

    async def shutdown(self) -> None:
        for listener in self.listeners:
            self.loop.remove_reader(listener.fileno())
        opening = [c.opening for c in self.connections if c.opening is not None]
        for conn in list(self.connections):
            conn.close_now()
        await asyncio.gather(*opening, return_exceptions=True)
        await asyncio.sleep(0)  # the aborted transports close their sockets in the next round

    def accept(self, listener: socket.socket) -> None:
        for attempt in range(ACCEPT_BATCH):
            try:
                sock, peer = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in (errno.ECONNABORTED, errno.EPROTO):
                    continue  # the client gave up before its connection was accepted
                # Linux takes a descriptor before it looks for a connection: EMFILE after an accept in this
                # round may mean that none is waiting. Only the first attempt is sure that one is.
                if attempt == 0:
                    self.accept_failed(listener, exc)
                return
            if self.backoff:
                log.info(
                    "accepting connections again (%d open)",
                    len(self.connections),
                    extra={"connections": len(self.connections)},
                )
                self.backoff = 0.0
            self.admit(sock, peer, listener.getsockname()[:2])

    def accept_failed(self, listener: socket.socket, exc: OSError) -> None:
        """Out of descriptors or memory: make room or back off, rather than spin on a readable socket."""
        self.loop.remove_reader(listener.fileno())
        if exc.errno in _OUT_OF_RESOURCES and self.evict():
            # The evicted connection's socket closes in a callback already queued; accept after it.
            self.loop.call_soon(self.resume_accepting, listener)
            return
        if not self.backoff:
            log.warning(
                "cannot accept connections: %s (%d open); retrying with back-off, logged once until it works again",
                exc.strerror or exc,
                len(self.connections),
                extra={"reason": exc.strerror or str(exc), "connections": len(self.connections)},
            )
        self.backoff = min(max(2 * self.backoff, 0.005), 1.0)
        self.loop.call_later(self.backoff, self.resume_accepting, listener)

    def resume_accepting(self, listener: socket.socket) -> None:
        if listener.fileno() >= 0:
            self.loop.add_reader(listener.fileno(), self.accept, listener)

    def admit(self, sock: socket.socket, peer: tuple[str, int], address: tuple[str, int]) -> None:
        # TCP_NODELAY, as Go's servers (Prometheus's own) have it: otherwise the last part of a large answer
        # can wait for the scraper's delayed ACK; see bench/RESULTS.md.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)  # what a slow reader holds in the kernel
        sock.setblocking(False)
        if len(self.connections) >= self.connection_cap and not self.evict():
            log.debug(
                "connection from %s refused: %d connections, all busy",
                peer[0],
                len(self.connections),
                extra={"peer": peer[0], "connections": len(self.connections)},
            )
            sock.close()
            return
        tls = self.app_and_tls()[1]
        conn = Connection(self, peer[:2], "http" if tls is None else "https")
        self.connections[conn] = address
        conn.set_deadline(self.limits.head_timeout)  # from the accept: the TLS handshake and the first head
        conn.opening = self.loop.create_task(self.open(conn, sock, tls))
        conn.opening.add_done_callback(lambda task: self.opened(conn, sock, task))

    async def open(self, conn: Connection, sock: socket.socket, tls: ssl.SSLContext | None) -> None:
        if tls is None:
            await self.loop.connect_accepted_socket(lambda: conn, sock)
            return
        extra: dict[str, Any] = {"ssl_shutdown_timeout": 5.0} if sys.version_info >= (3, 11) else {}
        # TLS per connection, so that reconfigure() can change it; the handshake runs in the loop, within
        # the head deadline (the connection's timer cancels it).
        await self.loop.connect_accepted_socket(
            lambda: conn, sock, ssl=tls, ssl_handshake_timeout=self.limits.head_timeout, **extra
        )

    def opened(self, conn: Connection, sock: socket.socket, task: asyncio.Task[Any]) -> None:
        conn.opening = None
        if task.cancelled() or task.exception() is not None or conn.transport is None:
            if not task.cancelled():
                log.debug(
                    "connection from %s failed before its first request: %r",
                    conn.peer[0],
                    task.exception(),
                    extra={"peer": conn.peer[0]},
                )
            sock.close()
            conn.forget()

    def evict(self) -> bool:
        """End the least recently active connection that has no request in progress; False if none has."""
        for conn in self.connections:
            if conn.evictable:
                log.debug("connection from %s evicted to make room", conn.peer[0], extra={"peer": conn.peer[0]})
                conn.close_now()
                return True
        return False

    # AcceptingServer, for the connections

    def forget(self, conn: Connection) -> None:
        self.connections.pop(conn, None)

    def touch(self, conn: Connection) -> None:
        if conn in self.connections:
            self.connections.move_to_end(conn)

    def submit(self, conn: Connection, head: RequestHead, path: str, query: str) -> None:
        self.requests.put((conn, head, path, query, self.app_and_tls()[0], self.connections[conn]))

    # in the worker threads

    def worker(self) -> None:
        while True:
            request = self.requests.get()
            if request is None:
                return
            conn, head, path, query, app, address = request
            environ = wsgi_environ(head, path, query, address, conn.peer, conn.scheme)
            environ["RAW_PATH"] = path  # as sent (visible ASCII), for log lines
            answer = run_app(app, environ, not head.keep_alive, self.date(time.time()))
            try:
                self.loop.call_soon_threadsafe(conn.respond, answer)
            except RuntimeError:  # the loop is closed: the server has stopped
                return


class WebServer:
    """Serves a WSGI app on ``host:port`` and each of ``more_addresses`` (TLS when ``tls`` is given) from one
    background event loop that accepts on every listening socket.

    Binds in the constructor (a ListenError naming the address if it cannot); ``start()`` and ``stop()`` from
    the main thread, ``reconfigure()`` from any thread.
    """

    def __init__(
        self,
        app: WSGIApp,
        host: str,
        port: int,
        tls: ssl.SSLContext | None = None,
        limits: Limits | None = None,
        *,
        more_addresses: Sequence[tuple[str, int]] = (),
    ) -> None:
        self._app_and_tls: tuple[WSGIApp, ssl.SSLContext | None] = (app, tls)
        listeners: list[socket.socket] = []
        try:
            for address in ((host, port), *more_addresses):
                listeners.append(_listen(*address))
        except ListenError:
            for listener in listeners:
                listener.close()
            raise
        self._server_loop = _ServerLoop(listeners, limits or Limits(), lambda: self._app_and_tls)
        self.ports: list[int] = [listener.getsockname()[1] for listener in listeners]  # in the order given
        self.port: int = self.ports[0]
        self._thread = threading.Thread(target=self._server_loop.run, name="web", daemon=True)
        self._workers = [
            threading.Thread(target=self._server_loop.worker, name=f"web-worker-{i}", daemon=True)
            for i in range(self._server_loop.limits.workers)
        ]

    def reconfigure(self, app: WSGIApp, tls: ssl.SSLContext | None) -> None:
        """New connections use ``tls`` (None: plain HTTP), new requests ``app``; open connections keep their
        TLS session. Thread-safe: one reference is swapped, and read whole."""
        self._app_and_tls = (app, tls)

    def start(self) -> None:
        """Start answering requests."""
        # At the usual default soft limit of 1,024, idle connections alone could use up the descriptors.
        self._server_loop.connection_cap = max(
            1, min(self._server_loop.limits.max_connections, raise_open_files_limit() * 3 // 4)
        )
        for worker in self._workers:
            worker.start()
        self._thread.start()

    def stop(self) -> None:
        """Stop answering: close the socket, end every connection and the worker threads."""
        loop = self._server_loop.loop
        if self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(self._server_loop.shutdown(), loop).result(timeout=10)
            loop.call_soon_threadsafe(loop.stop)
            self._thread.join(timeout=5)
        for listener in self._server_loop.listeners:
            listener.close()
        for _ in self._workers:
            self._server_loop.requests.put(None)
        deadline = time.monotonic() + 5  # a worker stuck in the app is a daemon thread: it is left behind
        for worker in self._workers:
            if worker.is_alive():
                worker.join(timeout=max(0.0, deadline - time.monotonic()))
        if not self._thread.is_alive() and not loop.is_closed():
            loop.close()


def _on_loop_error(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    if isinstance(context.get("exception"), _CLIENT_ERRORS):
        log.debug("client connection: %s", context.get("message"))
    else:
        loop.default_exception_handler(context)
