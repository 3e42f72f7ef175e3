"""One HTTP/1.1 client connection of the exporter's transport; h11 reads its answers. A kept-alive connection is
never reused once anything arrived on it while idle (a gateway's ``408`` or stray CRLF would be read as the next
answer), which asyncio's streams cannot see (bench/RESULTS.md, issue 25): so an asyncio.Protocol with its own buffer.
"""

from __future__ import annotations

import asyncio
import select
import ssl
from collections.abc import AsyncIterator

import h11
import httpx

MAX_HEAD = 256 * 1024  # a response head; httpx's stack allows about 100 KiB (httpcore's h11 buffer)
MAX_BODY = 64 * 1024 * 1024  # a response body, raw or decoded
PIECE = 16 * 1024  # httpx decodes a body piece by piece, and a compressed piece expands at most about 1,000-fold
_STALE_ERRORS = (ConnectionResetError, BrokenPipeError)
_HEAD_TOO_LARGE = f"response head too large (over {MAX_HEAD} bytes)"


class BodyTooLarge(httpx.DecodingError):
    """A response body over the limit (raw, or once decompressed): refused before it is decoded or parsed."""


class NoAnswer(Exception):
    """The connection ended (EOF, reset, broken pipe) before any byte of an answer arrived."""

    def __init__(self, error: BaseException | None) -> None:
        super().__init__(error)
        self.error = error

    @property
    def stale(self) -> bool:
        """Whether this is how a kept-alive connection the server had already dropped ends."""
        return self.error is None or isinstance(self.error, _STALE_ERRORS)


class _Body(httpx.AsyncByteStream):
    """A body that was read whole, handed to httpx in pieces (so that decompressing one is bounded)."""

    def __init__(self, body: bytes) -> None:
        self._body = body

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for start in range(0, len(self._body), PIECE):
            yield self._body[start : start + PIECE]


class ClientConnection(asyncio.Protocol):
    """One client connection. Received bytes wait in ``buffer`` for the reader, which takes them as they come;
    ``eof`` says nothing more will come. Reading stops when anything arrives on an idle connection, which is then
    never reused."""

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.eof = False
        self.error: BaseException | None = None
        self.reusable = False  # the last answer leaves the connection open for another request
        self._idle = False  # between an answer and the next request: bytes that arrive make the connection unusable
        self._socket = select.poll()  # bytes the event loop has not read yet show only here
        self._waiter: asyncio.Future[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            self._socket.register(sock.fileno(), select.POLLIN)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if self._idle and self.transport is not None:  # the rest stays in the kernel's buffers
            self.transport.pause_reading()
        self._wake_reader()

    def eof_received(self) -> None:
        self._ended()

    def connection_lost(self, exc: Exception | None) -> None:
        if exc is not None and self.error is None:
            self.error = exc
        self._ended()

    def _ended(self) -> None:
        self.eof = True
        self._wake_reader()

    def _wake_reader(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def rest(self) -> None:
        """The answer is read: from now on anything that arrives makes the connection unusable."""
        self._idle = True

    def wake(self) -> bool:
        """Take the idle connection for a request: True if nothing arrived while it was idle, it has not ended, and
        its socket is quiet; else it is closed at once (no TLS goodbye to a server that left)."""
        self._idle = False
        if self.eof or self.buffer or self.transport is None or self.transport.is_closing():
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
        # A closing transport is left to end (Python 3.11.2's TLS transport raises when aborted after closing).
        if self.transport is not None and not self.transport.is_closing():
            self.transport.abort()

    async def _wait(self) -> None:
        """Until more bytes arrive or the connection ends."""
        if self.eof:
            return
        self._waiter = self._loop.create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

    async def _skip_empty_lines(self) -> None:
        """Drop the empty lines before a status line (a stray CRLF after a body), which h11 would refuse; they
        count towards MAX_HEAD."""
        skipped = 0
        while True:
            while self.buffer.startswith((b"\r\n", b"\n")):
                blank = 2 if self.buffer[0] == 13 else 1
                del self.buffer[:blank]
                skipped += blank
            if skipped > MAX_HEAD:
                raise httpx.RemoteProtocolError(_HEAD_TOO_LARGE)
            if self.eof or (self.buffer and self.buffer != b"\r"):
                return
            await self._wait()

    async def read_response(self, method: str, max_body: int) -> httpx.Response:
        """The answer to the request just sent, as h11 reads it, its body whole (none for a tunnel a CONNECT opened);
        bytes after it stay in ``buffer``, and ``reusable`` says whether another request may follow. NoAnswer when the connection ends before any byte of an answer,
        BodyTooLarge for a body over ``max_body``, else httpx's RemoteProtocolError or ReadError."""
        await self._skip_empty_lines()
        if not self.buffer:
            raise NoAnswer(self.error)
        parser = h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_HEAD)
        parser.send(h11.Request(method=method, target="/", headers=[("Host", "-")]))
        parser.send(h11.EndOfMessage())
        head: h11.Response | None = None
        parts: list[bytes] = []
        size = received = 0
        ended = False
        try:
            while True:
                event = parser.next_event()
                if event is h11.NEED_DATA:
                    if not self.buffer and not self.eof:
                        await self._wait()
                    if self.buffer:
                        received += len(self.buffer)
                        parser.receive_data(bytes(self.buffer))
                        self.buffer.clear()
                    elif self.error is not None:
                        raise httpx.ReadError(f"{type(self.error).__name__}: {self.error}")
                    else:
                        ended = True
                        parser.receive_data(b"")
                elif isinstance(event, h11.Response):
                    head = event
                    if received - len(parser.trailing_data[0]) > MAX_HEAD:
                        raise httpx.RemoteProtocolError(_HEAD_TOO_LARGE)
                    length = dict(head.headers).get(b"content-length")
                    if length is not None and int(length) > max_body:
                        raise BodyTooLarge(f"response body too large ({int(length)} bytes, over {max_body})")
                elif isinstance(event, h11.Data):
                    size += len(event.data)
                    if size > max_body:
                        raise BodyTooLarge(f"response body too large (over {max_body} bytes)")
                    parts.append(bytes(event.data))
                elif isinstance(event, h11.EndOfMessage) or event is h11.PAUSED:
                    break
        except h11.RemoteProtocolError as exc:
            if ended:
                raise httpx.RemoteProtocolError(f"server closed the connection in mid-answer ({exc})") from None
            if head is None and received > MAX_HEAD:
                raise httpx.RemoteProtocolError(_HEAD_TOO_LARGE) from None
            raise httpx.RemoteProtocolError(str(exc)) from None
        assert head is not None
        self.buffer[:0] = parser.trailing_data[0]
        names = {name for name, _ in head.headers}
        both_framings = {b"content-length", b"transfer-encoding"} <= names  # never trust the connection again
        self.reusable = parser.their_state is h11.DONE and not ended and not both_framings
        return httpx.Response(
            head.status_code,
            headers=head.headers.raw_items(),
            stream=_Body(b"".join(parts)),
            extensions={"http_version": b"HTTP/" + head.http_version, "reason_phrase": head.reason},
        )
