"""One HTTP/1.1 client connection of the lean transport: an asyncio.Protocol with its own buffer, and the
reading of its answers.

A kept-alive connection must never be reused while anything waits on it (a gateway may write a ``408`` or
a stray CRLF on an idle connection, which would be read as the next answer), and asyncio.StreamReader does
not show its buffer: so the connection keeps its bytes, its end and whether anything arrived while idle
where the transport can see them. Empty lines before a status line are skipped (h11 refuses them).
Failures are httpx's exceptions; a body over the limit is BodyTooLarge.
"""

from __future__ import annotations

import asyncio
import select

import httpx

from exporter.sugon.http1 import (
    CHUNK_LINE,
    HEAD_END,
    MAX_CHUNK_LINE,
    MAX_HEAD,
    BodyTooLarge,
    Head,
    framing,
    parse_fields,
    parse_head,
)

HIGH_WATER = 256 * 1024  # bytes held beyond what the reader waits for before reading is paused
_NO_BODY_STATUSES = frozenset({204, 304})
_STALE_ERRORS = (ConnectionResetError, BrokenPipeError)
_CR_LF = (10, 13)


class NoAnswer(Exception):
    """The connection ended (EOF, reset, broken pipe) before any byte of an answer arrived."""

    def __init__(self, error: BaseException | None) -> None:
        super().__init__(error)
        self.error = error

    @property
    def stale(self) -> bool:
        """Whether this is how a kept-alive connection the server had already dropped ends."""
        return self.error is None or isinstance(self.error, _STALE_ERRORS)


class Response:
    """A whole answer: its head and body, and whether the connection may carry another request."""

    __slots__ = ("body", "head", "keep")

    def __init__(self, head: Head, body: bytes, keep: bool) -> None:
        self.head = head
        self.body = body
        self.keep = keep


class _Readable:
    """Whether a socket has bytes or its end waiting that the event loop has not taken yet."""

    __slots__ = ("fd", "poller")

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.poller = select.poll() if hasattr(select, "poll") else None
        if self.poller is not None and fd >= 0:
            self.poller.register(fd, select.POLLIN)

    def __call__(self) -> bool:
        if self.fd < 0:
            return True
        if self.poller is None:  # pragma: no cover (Windows)
            return bool(select.select([self.fd], [], [], 0)[0])
        return bool(self.poller.poll(0))


class Connection(asyncio.Protocol):
    """One client connection. Received bytes wait in ``buffer``; ``eof`` says nothing more will come.

    Reading is paused while more than HIGH_WATER bytes wait beyond what the reader asked for, and at once
    when anything arrives on an idle connection (which is then never reused).
    """

    __slots__ = (
        "_loop",
        "_paused",
        "_readable",
        "_waiter",
        "_want",
        "buffer",
        "eof",
        "error",
        "idle",
        "stale",
        "transport",
    )

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.eof = False
        self.error: BaseException | None = None
        self.idle = False
        self.stale = False  # bytes or an end arrived while idle
        self._readable = _Readable(-1)
        self._waiter: asyncio.Future[None] | None = None
        self._want = 0
        self._paused = False

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        sock = transport.get_extra_info("socket")
        self._readable = _Readable(sock.fileno() if sock is not None else -1)

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer
        buffer += data
        if self.idle:
            self.stale = True
            self._pause()
            return
        waiter = self._waiter
        if waiter is not None and len(buffer) >= self._want and not waiter.done():
            waiter.set_result(None)
        if len(buffer) > self._want + HIGH_WATER:
            self._pause()

    def eof_received(self) -> None:
        self._ended()

    def connection_lost(self, exc: Exception | None) -> None:
        if exc is not None and self.error is None:
            self.error = exc
        self._ended()

    def _ended(self) -> None:
        self.eof = True
        self.stale = self.stale or self.idle
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _pause(self) -> None:
        if not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()

    # Used by the pool

    def reusable(self) -> bool:
        """Whether this idle connection can carry a request: nothing received, not ended, socket quiet."""
        transport = self.transport
        if self.stale or self.eof or self.buffer or transport is None or transport.is_closing():
            return False
        return not self._readable()

    def send(self, data: bytes) -> None:
        """Write a request (the transport buffers what the socket does not take at once)."""
        transport = self.transport
        if transport is None or transport.is_closing():
            raise NoAnswer(self.error)
        transport.write(data)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        """Close at once, without a TLS goodbye: for a connection the server already dropped or wrote on."""
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
        waiter = self._waiter = self._loop.create_future()
        try:
            await waiter
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
        buffer = self.buffer
        skipped = searched = 0
        while True:
            if buffer:
                if buffer[0] in _CR_LF and buffer.startswith((b"\n", b"\r\n")):
                    skipped += self._skip_empty_lines()
                    searched = 0
                # The end of the head is the first LF CR? LF (as h11 finds it), told by two plain searches.
                end = buffer.find(b"\n\r\n", searched)
                bare = buffer.find(b"\n\n", searched, len(buffer) if end < 0 else end + 1)
                end = bare + 2 if bare >= 0 else end + 3 if end >= 0 else -1
                if end >= 0:
                    if end + skipped > MAX_HEAD:
                        break
                    head = bytes(buffer[:end])
                    del buffer[:end]
                    return parse_head(head)
            if len(buffer) + skipped > MAX_HEAD:
                break
            if self.eof:
                raise self._gone(started or bool(buffer))
            searched = len(buffer) - 2 if len(buffer) > 2 else 0
            await self._wait(len(buffer) + 1)
        raise httpx.RemoteProtocolError(f"response head too large (over {MAX_HEAD} bytes)")

    def _skip_empty_lines(self) -> int:
        """Drops the empty lines at the start of the buffer (a stray CRLF after a body, before a status line)."""
        buffer = self.buffer
        blank = 0
        while True:
            if buffer.startswith(b"\r\n", blank):
                blank += 2
            elif buffer.startswith(b"\n", blank):
                blank += 1
            else:
                break
        del buffer[:blank]
        return blank

    async def _read_exactly(self, size: int) -> bytes:
        buffer = self.buffer
        while len(buffer) < size:
            if self.eof:
                raise self._gone(True)
            await self._wait(size)
        if len(buffer) == size:
            data = bytes(buffer)
            buffer.clear()
            return data
        with memoryview(buffer) as view:
            data = bytes(view[:size])
        del buffer[:size]
        return data

    async def _read_line(self, limit: int) -> int:
        """The length of the CRLF-ended line at the start of ``buffer``, CRLF included."""
        buffer = self.buffer
        searched = 0
        while True:
            end = buffer.find(b"\r\n", searched)
            if end >= 0:
                if end + 2 > limit:
                    break
                return end + 2
            if len(buffer) > limit:
                break
            if self.eof:
                raise self._gone(True)
            searched = max(0, len(buffer) - 1)
            await self._wait(len(buffer) + 1)
        raise httpx.RemoteProtocolError("chunk size line too long")

    async def _read_chunked(self, limit: int) -> bytes:
        buffer = self.buffer
        parts: list[bytes] = []
        total = 0
        while True:
            end = await self._read_line(MAX_CHUNK_LINE)
            line = CHUNK_LINE.fullmatch(buffer, 0, end)
            if line is None:
                raise httpx.RemoteProtocolError(f"bad chunk size {bytes(buffer[: min(end, 40)])!r}")
            size = int(line.group(1), 16)
            del buffer[:end]
            if size == 0:
                break
            total += size
            if total > limit:
                raise BodyTooLarge(f"response body too large (over {limit} bytes)")
            data = await self._read_exactly(size + 2)
            if data[-2:] != b"\r\n":
                raise httpx.RemoteProtocolError("chunk not followed by CRLF")
            parts.append(data[:-2])
        await self._read_trailers()
        return b"".join(parts)

    async def _read_trailers(self) -> None:
        """The trailer section: checked as h11 checks it, then dropped."""
        buffer = self.buffer
        while True:
            if buffer[:1] == b"\n" or buffer[:2] == b"\r\n":
                del buffer[: 1 if buffer[:1] == b"\n" else 2]
                return
            found = HEAD_END.search(buffer)
            if found is not None:
                trailers = bytes(buffer[: found.end()]).replace(b"\r\n", b"\n")[:-1]
                del buffer[: found.end()]
                framing(*parse_fields(trailers))
                return
            if len(buffer) > MAX_HEAD:
                raise httpx.RemoteProtocolError("trailer section too large")
            if self.eof:
                raise self._gone(True)
            await self._wait(len(buffer) + 1)

    async def _read_to_end(self, limit: int) -> bytes:
        buffer = self.buffer
        while not self.eof:
            if len(buffer) > limit:
                break
            await self._wait(len(buffer) + 1)
        if len(buffer) > limit:
            raise BodyTooLarge(f"response body too large (over {limit} bytes)")
        if self.error is not None:
            raise self._gone(True)
        data = bytes(buffer)
        buffer.clear()
        return data

    async def read_response(self, method: str, max_body: int) -> Response:
        """The answer to the request just sent: interim (1xx) answers skipped, the body read whole.

        Raises NoAnswer when the connection ends before any byte of an answer, BodyTooLarge when the
        body is over ``max_body``, and httpx's RemoteProtocolError or ReadError otherwise."""
        head = await self._read_head(False)
        while head.status < 200:
            if head.status == 101:
                raise httpx.RemoteProtocolError("101 Switching Protocols, which was not asked for")
            head = await self._read_head(True)
        keep = head.keep
        if method == "HEAD" or head.status in _NO_BODY_STATUSES:
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
        return Response(head, body, keep)
