"""A lean HTTP/1.1 transport for httpx on asyncio streams: keep-alive connections, no pool bookkeeping.

httpx's default transport (httpcore, anyio, h11) costs about 0.8 ms of CPU per request; a full poll of a
centre's job list is thousands of small requests, so that overhead was most of a poll's CPU. This
transport does the same job in a small fraction of that for what the exporter needs: GET and POST,
``Content-Length``, chunked or close-delimited bodies, TLS through an ``ssl.SSLContext``. As an httpx
transport it leaves building requests and undoing ``Content-Encoding`` to httpx; its ``get`` (the job
list's pages) does without httpx's objects altogether. It knows no proxies: httpx ignores the proxy
environment variables for a client with its own transport, so the exporter uses this one only when
none is set.

Failures come out as the httpx exceptions the default transport raises (ConnectError, ReadError,
RemoteProtocolError, ConnectTimeout, ReadTimeout), so callers cannot tell the two apart.
"""

from __future__ import annotations

import asyncio
import re
import ssl
import zlib
from collections.abc import Awaitable
from typing import Any, TypeVar

import httpx

from exporter.wire import within

T = TypeVar("T")
MAX_HEADER_BYTES = 64 * 1024
MAX_CHUNK_LINE = 1024
_NO_BODY_STATUSES = frozenset({204, 304})
_DEFAULT_PORTS = {"http": 80, "https": 443}

Origin = tuple[str, str, int]


class _Connection:
    __slots__ = ("reader", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    def close(self) -> None:
        self.writer.close()


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


def _parse_head(head: bytes) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
    """(status, reason, headers) of a response head; raises RemoteProtocolError when it is not HTTP/1.x."""
    lines = head[:-4].split(b"\r\n")
    parts = lines[0].split(b" ", 2)
    if len(parts) < 2 or parts[0] not in (b"HTTP/1.1", b"HTTP/1.0") or not parts[1].isdigit() or len(parts[1]) != 3:
        raise httpx.RemoteProtocolError(f"not an HTTP/1.x status line: {lines[0][:80]!r}")
    headers: list[tuple[bytes, bytes]] = []
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if not sep or not name or name != name.strip():
            raise httpx.RemoteProtocolError(f"malformed header line: {line[:80]!r}")
        headers.append((name, value.strip()))
    return int(parts[1]), parts[2] if len(parts) > 2 else b"", headers


def _header(headers: list[tuple[bytes, bytes]], name: bytes) -> bytes | None:
    for key, value in headers:
        if key.lower() == name:
            return value
    return None


async def _read_chunked(reader: asyncio.StreamReader, limit: int) -> bytes:
    parts: list[bytes] = []
    size_total = 0
    while True:
        line = await reader.readuntil(b"\r\n")
        if len(line) > MAX_CHUNK_LINE:
            raise httpx.RemoteProtocolError("chunk size line too long")
        size_text = line.split(b";", 1)[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError:
            raise httpx.RemoteProtocolError(f"bad chunk size {size_text[:20]!r}") from None
        if size == 0:
            while (await reader.readuntil(b"\r\n")) != b"\r\n":  # trailers, ignored
                pass
            return b"".join(parts)
        size_total += size
        if size_total > limit:
            raise httpx.RemoteProtocolError("response body too large")
        parts.append(await reader.readexactly(size))
        if await reader.readexactly(2) != b"\r\n":
            raise httpx.RemoteProtocolError("chunk not followed by CRLF")


class StreamTransport(httpx.AsyncBaseTransport):
    """Keep-alive HTTP/1.1 over asyncio streams, at most ``max_connections`` requests at a time."""

    def __init__(
        self,
        ssl_context: ssl.SSLContext | None = None,
        max_connections: int = 8,
        max_body: int = 256 * 1024 * 1024,
    ) -> None:
        self._ssl = ssl_context
        self._max_connections = max_connections
        self._slots = asyncio.Semaphore(max_connections)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._idle: dict[Origin, list[_Connection]] = {}
        self._max_body = max_body
        self._closed = False

    async def _connect(self, origin: Origin, timeout: float | None) -> _Connection:
        scheme, host, port = origin
        context: ssl.SSLContext | None = None
        if scheme == "https":
            context = self._ssl or ssl.create_default_context()
        try:
            reader, writer = await _bounded(
                asyncio.open_connection(
                    host, port, ssl=context, server_hostname=host if context else None, limit=MAX_HEADER_BYTES
                ),
                timeout,
                httpx.ConnectTimeout,
            )
        except (OSError, ssl.SSLError) as exc:
            raise httpx.ConnectError(f"{type(exc).__name__}: {exc}") from None
        return _Connection(reader, writer)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        body = await request.aread()
        status, reason, headers, content = await self._send(
            url, _head(request, body) + body, request.method, _timeout(request, "connect"), _timeout(request, "read")
        )
        return httpx.Response(
            status,
            headers=headers,
            content=content,
            extensions={"http_version": b"HTTP/1.1", "reason_phrase": reason},
        )

    async def get(self, url: httpx.URL, headers: bytes) -> Answer:
        """GET ``url`` with ``headers`` (``Name: value\\r\\n`` lines, checked by the caller) without building
        httpx's request and response objects: the job list's pages go this way. Content-Encoding (gzip,
        deflate) is undone here; timeouts are the caller's."""
        head = b"GET %s HTTP/1.1\r\nHost: %s\r\n%s\r\n" % (url.raw_path, url.netloc, headers)
        status, _, raw, content = await self._send(url, head, "GET", None, None)
        answer = Answer(status, raw, content)
        encoding = answer.headers.get("content-encoding")
        if encoding:
            answer.content = _decoded(content, encoding, self._max_body)
        return answer

    async def _send(
        self, url: httpx.URL, data: bytes, method: str, connect_timeout: float | None, read_timeout: float | None
    ) -> tuple[int, bytes, list[tuple[bytes, bytes]], bytes]:
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
            idle = self._idle.get(origin)
            while idle:
                conn = idle.pop()
                if conn.reader.at_eof() or conn.writer.is_closing():
                    conn.close()
                    continue
                try:
                    return await self._exchange(conn, data, method, origin, read_timeout)
                except _StaleConnection:
                    continue  # the server closed a kept-alive connection before reading our request: try anew
            conn = await self._connect(origin, connect_timeout)
            try:
                return await self._exchange(conn, data, method, origin, read_timeout)
            except _StaleConnection:
                raise httpx.RemoteProtocolError("server closed the connection without an answer") from None

    async def _exchange(
        self, conn: _Connection, data: bytes, method: str, origin: Origin, read_timeout: float | None
    ) -> tuple[int, bytes, list[tuple[bytes, bytes]], bytes]:
        reusable = False
        try:
            conn.writer.write(data)
            status, reason, headers, content, reusable = await _bounded(
                self._read_response(conn, method), read_timeout, httpx.ReadTimeout
            )
        except asyncio.IncompleteReadError as exc:
            if not exc.partial:
                raise _StaleConnection() from None
            raise httpx.RemoteProtocolError("server closed the connection in mid-answer") from None
        except asyncio.LimitOverrunError:
            raise httpx.RemoteProtocolError("response head too large") from None
        except (ConnectionError, OSError) as exc:
            raise httpx.ReadError(f"{type(exc).__name__}: {exc}") from None
        finally:
            if not reusable:
                conn.close()
        idle = self._idle.setdefault(origin, [])
        if len(idle) < self._max_connections and not self._closed:
            idle.append(conn)
        else:
            conn.close()
        return status, reason, headers, content

    async def _read_response(
        self, conn: _Connection, method: str
    ) -> tuple[int, bytes, list[tuple[bytes, bytes]], bytes, bool]:
        reader = conn.reader
        await conn.writer.drain()
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError as exc:
                if exc.partial:
                    raise httpx.RemoteProtocolError("server closed the connection in mid-answer") from None
                raise
            status, reason, headers = _parse_head(head)
            if not 100 <= status < 200:
                break  # 1xx (100 Continue, 103 Early Hints): another head follows
        try:
            connection = (_header(headers, b"connection") or b"").lower()
            keep = b"close" not in connection and head.startswith(b"HTTP/1.1")
            if method == "HEAD" or status in _NO_BODY_STATUSES:
                return status, reason, headers, b"", keep
            encoding = _header(headers, b"transfer-encoding")
            if encoding is not None:
                if encoding.lower().rsplit(b",", 1)[-1].strip() != b"chunked":
                    raise httpx.RemoteProtocolError(f"unsupported transfer-encoding {encoding[:40]!r}")
                return status, reason, headers, await _read_chunked(reader, self._max_body), keep
            length = _header(headers, b"content-length")
            if length is not None:
                if not length.strip().isdigit():
                    raise httpx.RemoteProtocolError(f"bad content-length {length[:40]!r}")
                size = int(length)
                if size > self._max_body:
                    raise httpx.RemoteProtocolError("response body too large")
                return status, reason, headers, await reader.readexactly(size), keep
            content = await reader.read(self._max_body + 1)
            while not reader.at_eof() and len(content) <= self._max_body:
                content += await reader.read(self._max_body + 1 - len(content))
            if len(content) > self._max_body:
                raise httpx.RemoteProtocolError("response body too large")
            return status, reason, headers, content, False
        except asyncio.IncompleteReadError:
            raise httpx.RemoteProtocolError("server closed the connection in mid-answer") from None

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


class AnswerHeaders:
    """Response headers, looked up by name whatever its case (what parse_envelope asks of httpx.Headers)."""

    __slots__ = ("raw",)

    def __init__(self, raw: list[tuple[bytes, bytes]]) -> None:
        self.raw = raw

    def get(self, name: str, default: str | None = None) -> str | None:
        value = _header(self.raw, name.lower().encode("ascii"))
        return default if value is None else value.decode("latin-1")


class Answer:
    """What StreamTransport.get returns: the status, headers and (decoded) body of an answer."""

    __slots__ = ("content", "headers", "status_code")

    def __init__(self, status_code: int, headers: list[tuple[bytes, bytes]], content: bytes) -> None:
        self.status_code = status_code
        self.headers = AnswerHeaders(headers)
        self.content = content


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
                raise httpx.DecodingError("response body too large once decompressed")
            out = decoded
            break
    return out


class _StaleConnection(Exception):
    """A reused connection that the server had already closed: nothing of an answer arrived."""


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
