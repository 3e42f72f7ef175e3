"""The lean transport: keep-alive HTTP/1.1 over asyncio for httpx, and a GET for job pages without httpx's objects.

httpx's own transport costs more CPU per request than everything else a poll does (bench/RESULTS.md), and a
poll is thousands of small requests. This one does what the exporter needs: GET and POST, Content-Length,
chunked or close-delimited bodies, TLS through an ``ssl.SSLContext``. It knows no proxies, so the service
uses httpx's transport when the environment names one. A kept-alive connection the server dropped while
idle gets the request once more on a fresh one. Failures are the httpx exceptions httpx's own transport
raises, so callers cannot tell the two apart; a body over ``max_body`` is ``BodyTooLarge``.
"""

from __future__ import annotations

import asyncio
import ssl
import zlib
from collections.abc import Awaitable
from typing import Any, TypeVar

import httpx

from exporter.sugon.connection import Connection, NoAnswer, Response
from exporter.sugon.http1 import MAX_BODY, Answer, AnswerHeaders, BodyTooLarge
from exporter.values import is_header

__all__ = ["Answer", "AnswerHeaders", "BodyTooLarge", "LeanTransport", "check_header", "transport_for", "within"]

T = TypeVar("T")
_DEFAULT_PORTS = {"http": 80, "https": 443}

Origin = tuple[str, str, int]


def _timeout(request: httpx.Request, kind: str) -> float | None:
    value = request.extensions.get("timeout", {}).get(kind)
    return float(value) if value is not None else None


_timeout_cm = getattr(asyncio, "timeout", None)


async def within(
    seconds: float | None, awaitable: Awaitable[T], error: type[httpx.TimeoutException] = httpx.TimeoutException
) -> T:
    """``await awaitable``, or ``error`` once ``seconds`` have passed (None: no limit). On Python 3.11 and
    later this needs no task per call, as asyncio.wait_for does."""
    if seconds is None:
        return await awaitable
    try:
        if _timeout_cm is None:
            return await asyncio.wait_for(awaitable, seconds)
        async with _timeout_cm(seconds):
            return await awaitable
    except asyncio.TimeoutError:
        raise error(f"no answer within {seconds:g}s") from None


def check_header(name: str, value: str) -> None:
    """LocalProtocolError for a header that breaks the one header rule (values.is_header), naming the header
    but never quoting its value, which may be a secret."""
    if not is_header(name, value):
        raise httpx.LocalProtocolError(f"header {name[:40]!r} has a character HTTP does not allow")


def _request_head(request: httpx.Request, body: bytes) -> bytes:
    lines = [b"%s %s HTTP/1.1" % (request.method.encode("ascii"), request.url.raw_path)]
    for name, value in request.headers.raw:
        check_header(name.decode("latin-1"), value.decode("latin-1"))  # for any caller, not only the conversation
        if name.lower() not in (b"content-length", b"transfer-encoding"):  # the body goes whole, with its length
            lines.append(b"%s: %s" % (name, value))
    if body or request.method in ("POST", "PUT", "PATCH"):
        lines.append(b"Content-Length: %d" % len(body))
    lines.append(b"\r\n")
    return b"\r\n".join(lines)


class LeanTransport(httpx.AsyncBaseTransport):
    """Keep-alive HTTP/1.1 over asyncio, at most ``max_connections`` requests at a time."""

    def __init__(
        self,
        ssl_context: ssl.SSLContext | None = None,
        max_connections: int = 8,
        max_body: int = MAX_BODY,
    ) -> None:
        self._ssl = ssl_context
        self._max_connections = max_connections
        self._slots = asyncio.Semaphore(max_connections)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._idle: dict[Origin, list[Connection]] = {}
        self._max_body = max_body
        self._closed = False

    async def _connect(self, origin: Origin, timeout: float | None) -> Connection:
        scheme, host, port = origin
        context: ssl.SSLContext | None = None
        if scheme == "https":
            context = self._ssl or ssl.create_default_context()
        loop = asyncio.get_running_loop()
        try:
            _, conn = await within(
                timeout,
                loop.create_connection(Connection, host, port, ssl=context, server_hostname=host if context else None),
                httpx.ConnectTimeout,
            )
        except (OSError, ssl.SSLError) as exc:
            raise httpx.ConnectError(f"{type(exc).__name__}: {exc}") from None
        return conn

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        body = await request.aread()
        answer = await self._send(
            url,
            _request_head(request, body) + body,
            request.method,
            _timeout(request, "connect"),
            _timeout(request, "read"),
        )
        head = answer.head
        return httpx.Response(
            head.status,
            headers=head.fields,
            content=answer.body,
            extensions={"http_version": b"HTTP/" + head.version, "reason_phrase": head.reason},
        )

    async def get(self, url: httpx.URL, headers: bytes) -> Answer:
        """GET ``url`` with ``headers`` (``Name: value\\r\\n`` lines, checked by the caller) without building
        httpx's request and response objects: the job list's pages go this way. Content-Encoding (gzip,
        deflate) is undone here; timeouts are the caller's."""
        head = b"GET %s HTTP/1.1\r\nHost: %s\r\n%s\r\n" % (url.raw_path, url.netloc, headers)
        response = await self._send(url, head, "GET", None, None)
        answer = Answer(response.head.status, response.head.fields, response.body)
        encoding = answer.headers.get("content-encoding")
        if encoding:
            answer.content = _decoded(response.body, encoding, self._max_body)
        return answer

    async def _send(
        self, url: httpx.URL, data: bytes, method: str, connect_timeout: float | None, read_timeout: float | None
    ) -> Response:
        if self._closed:
            raise httpx.ConnectError("transport is closed")
        if url.scheme not in _DEFAULT_PORTS:
            raise httpx.UnsupportedProtocol(f"unsupported URL scheme {url.scheme!r}")
        origin = (url.scheme, url.host, url.port or _DEFAULT_PORTS[url.scheme])
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # used from another event loop: what belonged to the old one is useless
            self._loop, self._slots = loop, asyncio.Semaphore(self._max_connections)
            self._drop_idle()
        async with self._slots:
            conn = self._take_idle(origin)
            if conn is not None:
                try:
                    return await self._exchange(conn, data, method, origin, read_timeout, reused=True)
                except _StaleConnection:
                    pass  # the server had dropped the kept-alive connection: once more, on a fresh one
            conn = await self._connect(origin, connect_timeout)
            return await self._exchange(conn, data, method, origin, read_timeout, reused=False)

    def _take_idle(self, origin: Origin) -> Connection | None:
        """A kept-alive connection to ``origin`` that nothing arrived on since its last answer."""
        idle = self._idle.get(origin)
        while idle:
            conn = idle.pop()
            if conn.reusable():
                conn.idle = False
                return conn
            conn.abort()
        return None

    async def _exchange(
        self, conn: Connection, data: bytes, method: str, origin: Origin, read_timeout: float | None, reused: bool
    ) -> Response:
        keep = False
        try:
            conn.send(data)
            reading = conn.read_response(method, self._max_body)
            response = await (reading if read_timeout is None else within(read_timeout, reading, httpx.ReadTimeout))
            if reused and response.head.status == 408:  # the server's idle timeout, met as we sent
                raise _StaleConnection()
            keep = response.keep and not conn.buffer  # bytes after an answer (a duplicate, a stray CRLF): never reuse
        except NoAnswer as exc:
            if reused and exc.stale:
                raise _StaleConnection() from None
            if exc.error is None:
                raise httpx.RemoteProtocolError("server closed the connection without an answer") from None
            raise httpx.ReadError(f"{type(exc.error).__name__}: {exc.error}") from None
        finally:
            if not keep:
                conn.close()
        idle = self._idle.setdefault(origin, [])
        if len(idle) < self._max_connections and not self._closed:
            conn.idle = True
            idle.append(conn)
        else:
            conn.close()
        return response

    def _drop_idle(self) -> None:
        for idle in self._idle.values():
            for conn in idle:
                try:
                    conn.close()
                except RuntimeError:  # its event loop is already closed
                    pass
        self._idle.clear()

    async def aclose(self) -> None:
        self._closed = True
        self._drop_idle()


def _decoded(content: bytes, encoding: str, limit: int) -> bytes:
    """A body with its Content-Encoding undone (gzip, deflate with or without its zlib wrapper)."""
    out = content
    for coding in reversed([c.strip().lower() for c in encoding.split(",") if c.strip()]):
        if coding == "identity":
            continue
        if coding in ("gzip", "x-gzip"):
            wbits = [16 + zlib.MAX_WBITS]
        elif coding == "deflate":
            wbits = [zlib.MAX_WBITS, -zlib.MAX_WBITS]
        else:
            raise httpx.DecodingError(f"unsupported content-encoding {coding[:40]!r}")
        for i, bits in enumerate(wbits):
            try:
                inflate = zlib.decompressobj(bits)
                decoded = inflate.decompress(out, limit + 1)
            except zlib.error as exc:
                if i + 1 < len(wbits):
                    continue
                raise httpx.DecodingError(f"bad {coding} body: {exc}") from None
            if len(decoded) > limit or inflate.unconsumed_tail:
                raise BodyTooLarge(f"response body too large once decompressed (over {limit} bytes)")
            out = decoded
            break
    return out


class _StaleConnection(Exception):
    """A reused connection the server had already dropped: it ended before any answer, or answered 408."""


def transport_for(verify: Any, max_connections: int) -> LeanTransport:
    """A LeanTransport checking certificates as httpx would for ``verify`` (True, False or an SSLContext)."""
    if isinstance(verify, ssl.SSLContext):
        context = verify
    else:
        context = ssl.create_default_context()
        if verify is False:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
    return LeanTransport(context, max_connections)
