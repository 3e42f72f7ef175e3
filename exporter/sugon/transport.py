"""A lean HTTP/1.1 transport for httpx: keep-alive connections, no pool bookkeeping.

httpx's default transport (httpcore, anyio, h11) costs about 0.8 ms of CPU per request; a full poll of a
centre's job list is thousands of small requests, so that overhead was most of a poll's CPU. This
transport does the same job in a small fraction of that for what the exporter needs: GET and POST,
``Content-Length``, chunked or close-delimited bodies, TLS through an ``ssl.SSLContext``. As an httpx
transport it leaves building requests and undoing ``Content-Encoding`` to httpx; its ``get`` (the job
list's pages) does without httpx's objects altogether. It knows no proxies: httpx ignores the proxy
environment variables for a client with its own transport, so the exporter uses this one only when
none is set. Connections are in ``exporter.connection``, the grammar of answers in ``exporter.http1``.

A kept-alive connection is reused only when nothing arrived on it while idle and its socket is quiet.
When a reused one ends before any byte of an answer (FIN, reset, broken pipe) or answers 408, the
request goes once more, on a fresh connection: the server had dropped the idle connection.

Failures come out as the httpx exceptions the default transport raises (ConnectError, ReadError,
RemoteProtocolError, ConnectTimeout, ReadTimeout), so callers cannot tell the two apart; a body over
``max_body`` (raw or decompressed) as ``BodyTooLarge``, an ``httpx.DecodingError``.
"""

from __future__ import annotations

import asyncio
import re
import ssl
import zlib
from collections.abc import Awaitable
from typing import Any, TypeVar

import httpx

from exporter.sugon.connection import Connection, NoAnswer, Response
from exporter.sugon.conversation import within
from exporter.sugon.http1 import MAX_BODY, Answer, AnswerHeaders, BodyTooLarge

__all__ = ["Answer", "AnswerHeaders", "BodyTooLarge", "StreamTransport", "transport_for"]

T = TypeVar("T")
_DEFAULT_PORTS = {"http": 80, "https": 443}

Origin = tuple[str, str, int]


def _timeout(request: httpx.Request, kind: str) -> float | None:
    value = request.extensions.get("timeout", {}).get(kind)
    return float(value) if value is not None else None


async def _bounded(awaitable: Awaitable[T], seconds: float | None, error: type[httpx.TimeoutException]) -> T:
    if seconds is None:
        return await awaitable
    try:
        return await within(seconds, awaitable)
    except asyncio.TimeoutError:
        raise error(f"no answer within {seconds:g}s") from None


_NAME = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_VALUE = re.compile(rb"[^\x00-\x08\x0a-\x1f\x7f]*")


def _head(request: httpx.Request, body: bytes) -> bytes:
    lines = [b"%s %s HTTP/1.1" % (request.method.encode("ascii"), request.url.raw_path)]
    for name, value in request.headers.raw:
        if not _NAME.fullmatch(name) or not _VALUE.fullmatch(value):  # no header injection; the value may be secret
            raise httpx.LocalProtocolError(f"header {name[:40]!r} has a character HTTP does not allow")
        if name.lower() not in (b"content-length", b"transfer-encoding"):  # the body goes whole, with its length
            lines.append(b"%s: %s" % (name, value))
    if body or request.method in ("POST", "PUT", "PATCH"):
        lines.append(b"Content-Length: %d" % len(body))
    lines.append(b"\r\n")
    return b"\r\n".join(lines)


class StreamTransport(httpx.AsyncBaseTransport):
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
            _, conn = await _bounded(
                loop.create_connection(Connection, host, port, ssl=context, server_hostname=host if context else None),
                timeout,
                httpx.ConnectTimeout,
            )
        except (OSError, ssl.SSLError) as exc:
            raise httpx.ConnectError(f"{type(exc).__name__}: {exc}") from None
        return conn

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        body = await request.aread()
        answer = await self._send(
            url, _head(request, body) + body, request.method, _timeout(request, "connect"), _timeout(request, "read")
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
            response = await (reading if read_timeout is None else _bounded(reading, read_timeout, httpx.ReadTimeout))
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


def transport_for(verify: Any, max_connections: int) -> StreamTransport:
    """A StreamTransport checking certificates as httpx would for ``verify`` (True, False or an SSLContext)."""
    if isinstance(verify, ssl.SSLContext):
        context = verify
    else:
        context = ssl.create_default_context()
        if verify is False:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
    return StreamTransport(context, max_connections)
