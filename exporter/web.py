"""The HTTP server: aiohttp.web's low-level server reads the requests and writes the answers of a request
handler (exporter.endpoints.make_app builds the exporter's).

What aiohttp lacks is added here: an accept loop that holds at most ``max_connections`` connections (at the
cap, the least recently active one with no request in progress makes room, TLS handshakes in progress
included), a deadline for the first request head from the accept (the TLS handshake included), and one for
taking an answer. The handler's blocking work runs in a few worker threads (the loop's default executor).
"""

from __future__ import annotations

import asyncio
import errno
import functools
import logging
import resource
import socket
import ssl
import struct
import sys
import threading
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp.abc import AbstractStreamWriter
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.http_parser import RawRequestMessage
from aiohttp.streams import StreamReader

log = logging.getLogger(__name__)

Handler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]
# What a client that does not read can hold: an answer is written CHUNK at a time as the client takes it,
# and the kernel's send buffer is fixed at SEND_BUFFER (bench/RESULTS.md, issues 23 and 25; the README).
CHUNK = 16 * 1024
SEND_BUFFER = 64 * 1024
ACCEPT_BATCH = 64  # connections accepted per wake-up, so that a flood of them cannot starve the others
_OUT_OF_RESOURCES = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)


@dataclass(frozen=True)
class Limits:
    """What clients can hold of the server, together or one by one."""

    workers: int = 8  # threads that check passwords and render answers; requests wait for one
    max_connections: int = 128  # and at most 3/4 of the open-files limit
    head_timeout: float = 10.0  # for the first request head, from the accept (TLS handshake included)
    idle_timeout: float = 300.0  # aiohttp's keep-alive: a connection with no whole request for this long closes
    write_timeout: float = 60.0  # for taking an answer, or the connection is reset


class ListenError(OSError):
    """An address the server cannot listen on: ``address`` (host, port), with the errno and reason why."""

    def __init__(self, address: tuple[str, int], cause: OSError) -> None:
        super().__init__(cause.errno, cause.strerror or str(cause))
        self.address = address


def raise_open_files_limit() -> int:
    """Raise the soft limit on open files to the hard limit, as Go's runtime does; returns the soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard and hard != resource.RLIM_INFINITY:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (OSError, ValueError) as exc:  # e.g. a system-call filter; LimitNOFILE= sets both anyway
            log.debug("cannot raise the open-files limit from %d to %d: %s", soft, hard, exc)
    return soft


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


class _Request(web.BaseRequest):
    """aiohttp's request, with what every answer to it gets, aiohttp's own refusals of malformed heads
    included (which no public hook reaches): no Server header, which would only tell attackers what runs
    here, and ``X-Content-Type-Options: nosniff``, so that a browser takes an answer as its Content-Type says
    (never a plain-text answer, or a status page with upstream names in it, as HTML)."""

    async def _prepare_hook(self, response: web.StreamResponse) -> None:
        response.headers.popall("Server", None)
        response.headers["X-Content-Type-Options"] = "nosniff"


class _RefusedRequests(logging.Filter):
    """aiohttp logs a malformed request it refuses as an error with a traceback; it is a client's doing."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError):
            log.debug("malformed request refused: %s %s", exc.code, exc.message.splitlines()[0] if exc.message else "")
            return False
        return True


_AIOHTTP_LOG = logging.getLogger(__name__ + ".aiohttp")  # what aiohttp logs of the connections it serves
_AIOHTTP_LOG.addFilter(_RefusedRequests())


class WebServer:
    """Serves ``app`` on ``host:port`` and each of ``more_addresses`` (TLS when ``tls`` is given) from one
    background event loop that accepts on every listening socket.

    Binds in the constructor (a ListenError naming the address if it cannot); ``start()`` and ``stop()`` from
    the main thread, ``reconfigure()`` from any thread.
    """

    def __init__(
        self,
        app: Handler,
        host: str,
        port: int,
        tls: ssl.SSLContext | None = None,
        limits: Limits | None = None,
        *,
        more_addresses: Sequence[tuple[str, int]] = (),
    ) -> None:
        self._app_and_tls = (app, tls)  # swapped whole by reconfigure()
        self._limits = limits or Limits()
        self._listeners: list[socket.socket] = []
        try:
            for address in ((host, port), *more_addresses):
                self._listeners.append(_listen(*address))
        except ListenError:
            for listener in self._listeners:
                listener.close()
            raise
        self.ports: list[int] = [listener.getsockname()[1] for listener in self._listeners]  # in the order given
        self.port: int = self.ports[0]
        self._loop = asyncio.new_event_loop()
        self._loop.set_default_executor(ThreadPoolExecutor(self._limits.workers, thread_name_prefix="web-worker"))
        self._server = web.Server(
            self._handle,
            request_factory=self._request,
            loop=self._loop,
            keepalive_timeout=self._limits.idle_timeout,
            access_log=None,
            logger=_AIOHTTP_LOG,
        )
        self._thread = threading.Thread(target=self._run, name="web", daemon=True)
        self._cap = self._limits.max_connections
        # Every connection from its accept until it is seen closed, least recently active first, with its
        # socket; those whose opening (the TLS handshake) runs, those with no request yet (their deadline),
        # and those with a request in progress.
        self._connections: OrderedDict[web.RequestHandler, socket.socket] = OrderedDict()
        self._opening: dict[web.RequestHandler, asyncio.Task[None]] = {}
        self._head_due: dict[web.RequestHandler, asyncio.TimerHandle] = {}
        self._busy: set[web.RequestHandler] = set()
        self._backoff = 0.0  # > 0 while accepting is paused (out of file descriptors or the like)

    def reconfigure(self, app: Handler, tls: ssl.SSLContext | None) -> None:
        """New connections use ``tls`` (None: plain HTTP), new requests ``app``; open connections keep their
        TLS session."""
        self._app_and_tls = (app, tls)

    def start(self) -> None:
        """Start answering requests."""
        # At the usual default soft limit of 1,024, idle connections alone could use up the descriptors.
        self._cap = max(1, min(self._limits.max_connections, raise_open_files_limit() * 3 // 4))
        self._thread.start()

    def stop(self) -> None:
        """Stop answering: close the sockets, end every connection and the worker threads."""
        if self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(timeout=10)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=5)
        for listener in self._listeners:
            listener.close()
        if not self._thread.is_alive() and not self._loop.is_closed():
            self._loop.close()

    # in the event loop's thread

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.set_exception_handler(_on_loop_error)
        for listener in self._listeners:
            self._loop.add_reader(listener.fileno(), self._accept, listener)
        self._loop.run_forever()

    async def _shutdown(self) -> None:
        for listener in self._listeners:
            self._loop.remove_reader(listener.fileno())
        for handler in list(self._connections):
            self._close(handler)
        tasks = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._loop.shutdown_default_executor()

    def _accept(self, listener: socket.socket) -> None:
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
                    self._accept_failed(listener, exc)
                return
            if self._backoff:
                log.info("accepting connections again (%d open)", len(self._connections))
                self._backoff = 0.0
            self._admit(sock, peer[0])

    def _accept_failed(self, listener: socket.socket, exc: OSError) -> None:
        """Out of descriptors or memory: make room or back off, rather than spin on a readable socket."""
        self._loop.remove_reader(listener.fileno())
        if exc.errno in _OUT_OF_RESOURCES and self._make_room():
            # The ended connection's socket closes in a callback already queued; accept after it.
            self._loop.call_soon(self._resume_accepting, listener)
            return
        if not self._backoff:
            log.warning(
                "cannot accept connections: %s (%d open); retrying with back-off, logged once until it works again",
                exc.strerror or exc,
                len(self._connections),
                extra={"reason": exc.strerror or str(exc), "connections": len(self._connections)},
            )
        self._backoff = min(max(2 * self._backoff, 0.005), 1.0)
        self._loop.call_later(self._backoff, self._resume_accepting, listener)

    def _resume_accepting(self, listener: socket.socket) -> None:
        if listener.fileno() >= 0:
            self._loop.add_reader(listener.fileno(), self._accept, listener)

    def _admit(self, sock: socket.socket, peer: str) -> None:
        # TCP_NODELAY, as Go's servers (Prometheus's own) have it: otherwise the last part of a large answer
        # can wait for the scraper's delayed ACK.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)  # what a slow reader holds in the kernel
        sock.setblocking(False)
        if len(self._connections) >= self._cap and not self._make_room():
            log.debug("connection from %s refused: %d connections, all busy", peer, len(self._connections))
            sock.close()
            return
        handler = self._server()  # aiohttp's protocol for this connection's requests
        self._connections[handler] = sock
        self._head_due[handler] = self._loop.call_later(self._limits.head_timeout, self._head_late, handler)
        opening = self._loop.create_task(self._open(handler, sock, self._app_and_tls[1]))
        opening.add_done_callback(functools.partial(self._opened, handler, sock))
        self._opening[handler] = opening

    async def _open(self, handler: web.RequestHandler, sock: socket.socket, tls: ssl.SSLContext | None) -> None:
        """Hand the connection to aiohttp, after a TLS handshake with ``tls`` (per connection, so that
        reconfigure() can change it)."""
        extra: dict[str, Any] = {"ssl_shutdown_timeout": 5.0} if tls and sys.version_info >= (3, 11) else {}
        transport, _ = await self._loop.connect_accepted_socket(lambda: handler, sock, ssl=tls, **extra)
        transport.set_write_buffer_limits(high=CHUNK)

    def _opened(self, handler: web.RequestHandler, sock: socket.socket, opening: asyncio.Task[None]) -> None:
        """When _open has ended, also if it was cancelled before it began: a connection that failed (its TLS
        handshake) or was ended by _close() is closed and forgotten."""
        self._opening.pop(handler, None)
        if opening.cancelled() or opening.exception() is not None:
            log.debug(
                "connection ended before its first request: %r", None if opening.cancelled() else opening.exception()
            )
            sock.close()
            self._forget(handler)

    def _make_room(self) -> bool:
        """Forget the connections seen closed; if none was, end the least recently active connection that has
        no request in progress. False if none could be ended."""
        closed = [handler for handler, sock in self._connections.items() if sock.fileno() < 0]
        for handler in closed:
            self._forget(handler)
        if closed:
            return True
        for handler in self._connections:
            if handler not in self._busy:
                log.debug("a connection was ended to make room")
                self._close(handler)
                return True
        return False

    def _head_late(self, handler: web.RequestHandler) -> None:
        self._head_due.pop(handler, None)
        log.debug("a connection sent no request head within %s s", self._limits.head_timeout)
        self._close(handler)

    def _reset(self, handler: web.RequestHandler) -> None:
        """End a connection whose client does not take its answer, with a reset: after a close the kernel would
        go on trickling what it holds to it."""
        sock = self._connections.get(handler)
        if sock is not None and sock.fileno() >= 0:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self._close(handler)

    def _close(self, handler: web.RequestHandler) -> None:
        """End a connection at once (a deadline, room for another, the server stopping)."""
        if handler.transport is not None:
            handler.transport.abort()
        opening = self._opening.get(handler)
        if opening is not None:
            opening.cancel()
        self._forget(handler)

    def _forget(self, handler: web.RequestHandler) -> None:
        self._connections.pop(handler, None)
        self._busy.discard(handler)
        timer = self._head_due.pop(handler, None)
        if timer is not None:
            timer.cancel()

    def _request(
        self,
        message: RawRequestMessage,
        payload: StreamReader,
        protocol: web.RequestHandler,
        writer: AbstractStreamWriter,
        task: asyncio.Task[None],
    ) -> web.BaseRequest:
        return _Request(message, payload, protocol, writer, task, self._loop)

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        """Run the app for one request and write its answer, with a request in progress on the connection."""
        handler = request.protocol
        timer = self._head_due.pop(handler, None)
        if timer is not None:
            timer.cancel()
        self._busy.add(handler)
        try:
            return await self._answer(request)
        finally:
            self._busy.discard(handler)
            if handler in self._connections:
                self._connections.move_to_end(handler)

    async def _answer(self, request: web.BaseRequest) -> web.StreamResponse:
        try:
            response = await self._app_and_tls[0](request)
        except Exception:
            log.exception("serving %s failed", request.path, extra={"method": request.method, "path": request.path})
            response = web.Response(status=500, text="500 Internal Server Error\n")
            response.force_close()
        if request.body_exists:  # never read: the connection ends after the answer
            response.force_close()
        try:
            await asyncio.wait_for(_send(request, response), self._limits.write_timeout)
        except asyncio.TimeoutError:
            log.debug("%s did not take its answer in time: connection reset", request.remote)
            self._reset(request.protocol)
        except ConnectionError:
            pass  # the client went away
        log.debug(
            "%s %s %s %d",
            request.remote,
            request.method,
            request.path,
            response.status,
            extra={"peer": request.remote, "method": request.method, "path": request.path, "status": response.status},
        )
        return response


async def _send(request: web.BaseRequest, response: web.StreamResponse) -> None:
    await response.prepare(request)
    await response.write_eof()


# Whatever a misbehaving client makes happen on its connection: worth a debug line, not an error.
_CLIENT_ERRORS = (ConnectionError, ssl.SSLError, TimeoutError, asyncio.TimeoutError)


def _on_loop_error(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    if isinstance(context.get("exception"), _CLIENT_ERRORS):
        log.debug("client connection: %s", context.get("message"))
    else:
        loop.default_exception_handler(context)
