"""One HTTP/1.1 client connection of the lean transport, and the reading of its answers.

A kept-alive connection must never be reused once anything arrived on it while idle (a gateway's ``408`` or stray
CRLF would be read as the next answer). asyncio's streams show neither their buffer nor when bytes arrive
(bench/RESULTS.md, issue 25), so this is an asyncio.Protocol with its own buffer. Failures are httpx's exceptions.
"""

from __future__ import annotations

import asyncio
import select
import ssl
from dataclasses import dataclass

import httpx

from exporter.sugon import http1
from exporter.sugon.http1 import MAX_HEAD, BodyTooLarge, Head

HIGH_WATER = 256 * 1024  # bytes held beyond what the reader waits for before reading is paused
_NO_BODY_STATUSES = frozenset({204, 304})
_STALE_ERRORS = (ConnectionResetError, BrokenPipeError)


class NoAnswer(Exception):
    """The connection ended (EOF, reset, broken pipe) before any byte of an answer arrived."""

    def __init__(self, error: BaseException | None) -> None:
        super().__init__(error)
        self.error = error

    @property
    def stale(self) -> bool:
        """Whether this is how a kept-alive connection the server had already dropped ends."""
        return self.error is None or isinstance(self.error, _STALE_ERRORS)


@dataclass(frozen=True)
class WholeAnswer:
    """A whole answer: its head and body, and whether the connection may carry another request."""

    head: Head
    body: bytes
    keep: bool


class ClientConnection(asyncio.Protocol):
    """One client connection. Received bytes wait in ``buffer``; ``eof`` says nothing more will come. Reading is
    paused while more than HIGH_WATER bytes wait beyond what the reader asked for, and when anything arrives on an
    idle connection (which is then never reused)."""

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.eof = False
        self.error: BaseException | None = None
        self._idle = False
        self._stale = False  # bytes or an end arrived while idle
        self._socket = select.poll()  # bytes the event loop has not read yet show only here
        self._waiter: asyncio.Future[None] | None = None
        self._want = 0
        self._paused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            self._socket.register(sock.fileno(), select.POLLIN)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if self._idle:
            self._stale = True
            self._pause()
            return
        if self._waiter is not None and len(self.buffer) >= self._want and not self._waiter.done():
            self._waiter.set_result(None)
        if len(self.buffer) > self._want + HIGH_WATER:
            self._pause()

    def eof_received(self) -> None:
        self._ended()

    def connection_lost(self, exc: Exception | None) -> None:
        if exc is not None and self.error is None:
            self.error = exc
        self._ended()

    def _ended(self) -> None:
        self.eof = True
        self._stale = self._stale or self._idle
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def _pause(self) -> None:
        if not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()

    def rest(self) -> None:
        """The answer is read: from now on anything that arrives makes the connection unusable."""
        self._idle = True

    def wake(self) -> bool:
        """Take the idle connection for a request: True if nothing arrived while it was idle, it has not ended, and
        its socket is quiet; else it is closed at once (no TLS goodbye to a server that left)."""
        self._idle = False
        if self._stale or self.eof or self.buffer or self.transport is None or self.transport.is_closing():
            self.abort()
            return False
        if self._socket.poll(0):
            self.abort()
            return False
        return True

    def send(self, data: bytes) -> None:
        """Write a request (the transport buffers what the socket does not take at once)."""
        if self.transport is None or self.transport.is_closing():
            raise NoAnswer(self.error)
        self.transport.write(data)

    async def start_tls(self, context: ssl.SSLContext, hostname: str) -> None:
        """TLS to ``hostname`` over this connection (a tunnel a proxy opened to it)."""
        assert self.transport is not None
        tls = await self._loop.start_tls(self.transport, self, context, server_hostname=hostname)
        assert isinstance(tls, asyncio.Transport)
        self.transport = tls

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    # Reading an answer

    async def _wait(self, want: int) -> None:
        """Until ``buffer`` holds ``want`` bytes or the connection ends."""
        if self.eof:
            return
        if self._paused:
            self._paused = False
            assert self.transport is not None
            self.transport.resume_reading()
        self._want = want
        self._waiter = self._loop.create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None
            self._want = 0

    def _gone(self, started: bool) -> Exception:
        """What the end of the connection amounts to, before (NoAnswer) or during an answer."""
        if not started:
            return NoAnswer(self.error)
        if self.error is not None:
            return httpx.ReadError(f"{type(self.error).__name__}: {self.error}")
        return httpx.RemoteProtocolError("server closed the connection in mid-answer")

    async def _read_head(self, started: bool) -> Head:
        """The next head; its end is the first LF CR? LF, as h11 finds it. Empty lines before it are skipped
        (a stray CRLF after a body) and count towards MAX_HEAD."""
        buffer = self.buffer
        skipped = searched = 0
        while True:
            while buffer.startswith((b"\r\n", b"\n")):
                blank = 2 if buffer[0] == 13 else 1
                del buffer[:blank]
                skipped += blank
                searched = 0
            end = buffer.find(b"\n\r\n", searched)
            bare = buffer.find(b"\n\n", searched, len(buffer) if end < 0 else end + 1)
            end = bare + 2 if bare >= 0 else end + 3 if end >= 0 else -1
            if end >= 0 and end + skipped <= MAX_HEAD:
                head = bytes(buffer[:end])
                del buffer[:end]
                return http1.parse_head(head)
            if max(end, len(buffer)) + skipped > MAX_HEAD:
                raise httpx.RemoteProtocolError(f"response head too large (over {MAX_HEAD} bytes)")
            if self.eof:
                raise self._gone(started or bool(buffer))
            searched = max(len(buffer) - 2, 0)
            await self._wait(len(buffer) + 1)

    async def _read_exactly(self, size: int) -> bytes:
        while len(self.buffer) < size:
            if self.eof:
                raise self._gone(True)
            await self._wait(size)
        data = bytes(self.buffer[:size])
        del self.buffer[:size]
        return data

    async def _read_line(self, limit: int, what: str) -> bytes:
        """The CRLF-ended (or, for h11's checks, LF-ended) line at the start of ``buffer``, its end included."""
        searched = 0
        while (end := self.buffer.find(b"\n", searched)) < 0:
            if len(self.buffer) > limit:
                raise httpx.RemoteProtocolError(f"{what} too long")
            if self.eof:
                raise self._gone(True)
            searched = len(self.buffer)
            await self._wait(len(self.buffer) + 1)
        if end + 1 > limit:
            raise httpx.RemoteProtocolError(f"{what} too long")
        return await self._read_exactly(end + 1)

    async def _read_chunked(self, limit: int) -> bytes:
        parts: list[bytes] = []
        total = 0
        while True:
            line = await self._read_line(http1.MAX_CHUNK_LINE, "chunk size line")
            found = http1.CHUNK_LINE.fullmatch(line)
            if found is None:
                raise httpx.RemoteProtocolError(f"bad chunk size {line[:40]!r}")
            size = int(found.group(1), 16)
            if size == 0:
                break
            total += size
            if total > limit:
                raise BodyTooLarge(f"response body too large (over {limit} bytes)")
            data = await self._read_exactly(size + 2)
            if data[-2:] != b"\r\n":
                raise httpx.RemoteProtocolError("chunk not followed by CRLF")
            parts.append(data[:-2])
        trailers: list[bytes] = []
        size = 0
        while (line := await self._read_line(MAX_HEAD - size, "trailer section")) not in (b"\n", b"\r\n"):
            trailers.append(line)
            size += len(line)
        http1.framing(http1.parse_fields(b"".join(trailers).replace(b"\r\n", b"\n")))  # checked as h11 does, dropped
        return b"".join(parts)

    async def _read_to_end(self, limit: int) -> bytes:
        while not self.eof and len(self.buffer) <= limit:
            await self._wait(len(self.buffer) + 1)
        if len(self.buffer) > limit:
            raise BodyTooLarge(f"response body too large (over {limit} bytes)")
        if self.error is not None:
            raise self._gone(True)
        data = bytes(self.buffer)
        self.buffer.clear()
        return data

    async def read_response(self, method: str, max_body: int) -> WholeAnswer:
        """The answer to the request just sent: interim (1xx) answers skipped, the body read whole (none for a
        tunnel a CONNECT opened).

        Raises NoAnswer when the connection ends before any byte of an answer, BodyTooLarge when the
        body is over ``max_body``, and httpx's RemoteProtocolError or ReadError otherwise."""
        head = await self._read_head(False)
        while head.status < 200:
            if head.status == 101:
                raise httpx.RemoteProtocolError("101 Switching Protocols, which was not asked for")
            head = await self._read_head(True)
        keep = head.keep
        tunnel = method == "CONNECT" and head.status < 300
        if method == "HEAD" or head.status in _NO_BODY_STATUSES or tunnel:
            body = b""
        elif head.chunked:
            body = await self._read_chunked(max_body)
            keep = keep and head.length is None  # both framings at once: never trust the connection again
        elif head.length is not None:
            if head.length > max_body:
                raise BodyTooLarge(f"response body too large ({head.length} bytes, over {max_body})")
            body = await self._read_exactly(head.length)
        else:
            body = await self._read_to_end(max_body)
            keep = False
        return WholeAnswer(head=head, body=body, keep=keep)
