"""The HTTP server: aiohttp.web's low-level server with what it lacks on top (bench/RESULTS.md, issue 25): a cap
on connections, TLS handshakes included, a deadline for the first request head and one for taking an answer."""

from __future__ import annotations

import asyncio
import errno
import logging
import resource
import socket
import ssl
import struct
import threading
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

log = logging.getLogger(__name__)

Handler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]
CHUNK = 16 * 1024  # an answer is written this much at a time, as the client takes it
_OUT_OF_RESOURCES = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)
_CLIENTS_DOING = (errno.EAGAIN, errno.ECONNABORTED, errno.EPROTO)  # none waiting, or it gave up before its accept


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


class _Request(web.BaseRequest):
    """aiohttp's request, whose answers (its own refusals of malformed heads included) carry no Server header,
    ``nosniff``, so that a browser takes an answer as its Content-Type says, and the configured ``answer_headers``."""

    answer_headers: Mapping[str, str] = {}

    async def _prepare_hook(self, response: web.StreamResponse) -> None:
        response.headers.popall("Server", None)
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers.update(self.answer_headers)


def _not_a_refusal(record: logging.LogRecord) -> bool:
    """aiohttp logs each malformed request it refuses as an error with a traceback: a client's doing, so debug."""
    exc = record.exc_info[1] if record.exc_info else None
    if isinstance(exc, HttpProcessingError):
        log.debug("malformed request refused: %s", exc.message.splitlines()[0] if exc.message else exc.code)
        return False
    return True


_AIOHTTP_LOG = logging.getLogger(__name__ + ".aiohttp")  # what aiohttp logs of the connections it serves
_AIOHTTP_LOG.addFilter(_not_a_refusal)


class WebServer:
    """Serves ``app`` on ``host:port`` and each of ``more_addresses`` from a background event loop; blocking work
    runs in its default executor. ``tls`` gives the TLS context of each new connection (None: plain HTTP); every
    answer carries ``headers``. Binds in the constructor (ListenError if it cannot)."""

    def __init__(
        self,
        app: Handler,
        host: str,
        port: int,
        tls: Callable[[], ssl.SSLContext] | None = None,
        limits: Limits | None = None,
        *,
        more_addresses: Sequence[tuple[str, int]] = (),
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self._app, self._tls, self._headers = app, tls, dict(headers or {})
        self._limits = limits or Limits()
        self._listeners: list[socket.socket] = []
        for address in ((host, port), *more_addresses):
            try:
                listener = socket.socket(socket.AF_INET6 if ":" in address[0] else socket.AF_INET, socket.SOCK_STREAM)
                self._listeners.append(listener)
                listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                listener.bind(address)
                listener.listen(socket.SOMAXCONN)
                listener.setblocking(False)
            except OSError as exc:
                for opened in self._listeners:
                    opened.close()
                raise ListenError(address, exc) from exc
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
        soft_limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]  # lest idle connections use up the descriptors
        self._cap = max(1, min(self._limits.max_connections, soft_limit * 3 // 4))
        # Every connection from its accept until seen closed, least recently active first; those in their TLS
        # handshake, those with no request yet, and those with one in progress.
        self._connections: OrderedDict[web.RequestHandler, socket.socket] = OrderedDict()
        self._opening: dict[web.RequestHandler, asyncio.Task[None]] = {}
        self._fresh: set[web.RequestHandler] = set()
        self._busy: set[web.RequestHandler] = set()
        self._backoff = 0.0  # > 0 while accepting is paused (out of file descriptors or the like)

    def reconfigure(
        self, app: Handler, tls: Callable[[], ssl.SSLContext] | None, headers: Mapping[str, str] | None = None
    ) -> None:
        """New connections use ``tls`` (None: plain HTTP), new requests ``app`` and ``headers``; open connections
        keep their TLS."""
        self._app, self._tls, self._headers = app, tls, dict(headers or {})

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The event loop that answers requests (the poll loops run on it too)."""
        return self._loop

    def start(self) -> None:
        """Start answering requests."""
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
        """Accept one connection (one a wake-up, so that a flood of them cannot starve the others)."""
        try:
            sock, peer = listener.accept()
        except OSError as exc:
            if exc.errno not in _CLIENTS_DOING:
                self._accept_failed(listener, exc)
            return
        if self._backoff:
            log.info("accepting connections again (%d open)", len(self._connections))
            self._backoff = 0.0
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 * 1024)  # what a client that does not read holds
        sock.setblocking(False)
        if len(self._connections) >= self._cap and not self._make_room():
            log.debug("connection from %s refused: %d connections, all busy", peer[0], len(self._connections))
            sock.close()
            return
        handler = self._server()  # aiohttp's protocol for this connection's requests
        self._connections[handler] = sock
        self._fresh.add(handler)
        self._loop.call_later(self._limits.head_timeout, self._head_late, handler)
        tls = self._tls() if self._tls is not None else None
        self._opening[handler] = self._loop.create_task(self._open(handler, sock, tls))

    def _accept_failed(self, listener: socket.socket, exc: OSError) -> None:
        """Out of descriptors or memory: make room or back off, rather than spin on a readable socket."""
        self._loop.remove_reader(listener.fileno())
        if exc.errno in _OUT_OF_RESOURCES and self._make_room():
            # The ended connection's socket closes in a callback already queued; accept after it.
            self._loop.call_soon(self._loop.add_reader, listener.fileno(), self._accept, listener)
            return
        if not self._backoff:
            reason, count = exc.strerror or str(exc), len(self._connections)
            message = (
                "cannot accept connections: %s (%d open); retrying with back-off, logged once until it works again"
            )
            log.warning(message, reason, count, extra={"reason": reason, "connections": count})
        self._backoff = min(max(2 * self._backoff, 0.005), 1.0)
        self._loop.call_later(self._backoff, self._loop.add_reader, listener.fileno(), self._accept, listener)

    async def _open(self, handler: web.RequestHandler, sock: socket.socket, tls: ssl.SSLContext | None) -> None:
        """Hand the connection to aiohttp, after a TLS handshake with the ``tls`` of its accept."""
        try:
            transport, _ = await self._loop.connect_accepted_socket(lambda: handler, sock, ssl=tls)
            transport.set_write_buffer_limits(high=CHUNK)
        except (Exception, asyncio.CancelledError) as exc:  # noqa: BLE001 - whatever failed, the connection ends
            log.debug("connection ended before its first request: %r", exc)
            sock.close()
            self._forget(handler)
        finally:
            self._opening.pop(handler, None)

    def _make_room(self) -> bool:
        """Forget the connections seen closed, or else end the least recently active one not busy; False if none."""
        closed = [handler for handler, sock in self._connections.items() if sock.fileno() < 0]
        for handler in closed:
            self._forget(handler)
        if closed:
            return True
        idle = next((handler for handler in self._connections if handler not in self._busy), None)
        if idle is None:
            return False
        log.debug("a connection was ended to make room")
        self._close(idle)
        return True

    def _head_late(self, handler: web.RequestHandler) -> None:
        if handler in self._fresh:
            log.debug("a connection sent no request head within %s s", self._limits.head_timeout)
            self._close(handler)

    def _close(self, handler: web.RequestHandler, reset: bool = False) -> None:
        """End a connection at once; with a reset, so that the kernel stops trickling what it holds to the client."""
        sock = self._connections.get(handler)
        if reset and sock is not None and sock.fileno() >= 0:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        if handler.transport is not None:
            handler.transport.abort()
        if handler in self._opening:
            self._opening[handler].cancel()
        self._forget(handler)

    def _forget(self, handler: web.RequestHandler) -> None:
        self._connections.pop(handler, None)
        self._fresh.discard(handler)
        self._busy.discard(handler)

    def _request(self, message: Any, payload: Any, protocol: Any, writer: Any, task: Any) -> _Request:
        request = _Request(message, payload, protocol, writer, task, self._loop)
        request.answer_headers = self._headers
        return request

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        """Answer one request; an answer not taken within the write deadline resets the connection."""
        handler = request.protocol
        self._fresh.discard(handler)
        self._busy.add(handler)
        try:
            try:
                response = await self._app(request)
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
                self._close(handler, reset=True)
            except ConnectionError:
                pass  # the client went away
            log.debug("answered", extra={"peer": request.remote, "path": request.path, "status": response.status})
            return response
        finally:
            self._busy.discard(handler)
            if handler in self._connections:
                self._connections.move_to_end(handler)


async def _send(request: web.BaseRequest, response: web.StreamResponse) -> None:
    await response.prepare(request)
    await response.write_eof()
