"""One client connection of the /metrics server (exporter.serving.httpserver): its request heads are read and its
answers written in the event loop's thread, with a deadline for each step; its requests run in a worker.

A connection is in one state at a time: ``opening`` (accepted; TLS handshake), ``head`` (reading a request
head), ``busy`` (a request in progress: queued for a worker, or its answer being handed over), ``idle``
(kept alive between requests), ``closing`` (answer sent, waiting for the client to close), ``closed``.
Only a busy connection is safe from eviction. Reading pauses while busy: a pipelined request is not read
until the answer before it has been handed over, so a client that does not read holds one answer at most.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import socket
import struct
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from exporter.serving.httphead import (
    ALLOWED_METHODS,
    HeadError,
    Http09,
    HttpDate,
    RequestHead,
    answer_head,
    check_request_line,
    error_answer,
    head_end,
    parse_head,
    split_target,
)

log = logging.getLogger("exporter.serving.httpserver")

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]
# What a client that does not read can hold: an answer is handed to the transport CHUNK at a time (the
# transport's high-water mark), and the kernel's send buffer is fixed at SEND_BUFFER rather than grown by the
# kernel; the memory this leaves to each connection is in bench/RESULTS.md (issue 23) and the README.
CHUNK = 16 * 1024
SEND_BUFFER = 64 * 1024


@dataclass(frozen=True)
class Limits:
    """What clients can hold of the server, together or one by one."""

    workers: int = 16  # threads that run the app; requests wait in a queue for one
    max_connections: int = 128  # and at most 3/4 of the open-files limit; a TLS one holds about 300 kB
    head_timeout: float = 10.0  # for a whole request head
    idle_timeout: float = 300.0  # a kept-alive connection with no request for this long is closed
    write_timeout: float = 60.0  # for handing over one answer, and then for closing
    max_head_bytes: int = 16 * 1024  # h11's default; a scrape's head is a few hundred bytes


class AcceptingServer(Protocol):
    """What a connection needs of the server that accepted it (all in the loop thread)."""

    loop: asyncio.AbstractEventLoop
    limits: Limits
    date: HttpDate

    def forget(self, conn: Connection) -> None: ...

    def touch(self, conn: Connection) -> None: ...

    def submit(self, conn: Connection, head: RequestHead, path: str, query: str) -> None: ...


@dataclass(frozen=True)
class Answer:
    """An answer's head and its body in the parts the app gave (sent one after another, never joined: a
    /metrics body is megabytes of cached bytes and a small part that changes)."""

    head: bytes
    body: tuple[bytes, ...]
    close: bool


class Connection(asyncio.Protocol):
    """One client's connection; everything here runs in the loop thread."""

    def __init__(self, server: AcceptingServer, peer: tuple[str, int], scheme: str) -> None:
        self.server = server
        self.peer = peer
        self.scheme = scheme
        self.transport: asyncio.Transport | None = None
        self.opening: asyncio.Task[Any] | None = None
        self.state = "opening"  # opening (TLS handshake), head, busy (a request in progress), idle, closing, closed
        self.buffer = bytearray()
        self.searched = 0  # how far the buffer has been searched for the end of the head
        self.line_checked = False
        self.timer: asyncio.TimerHandle | None = None
        self.pending: collections.deque[memoryview] = collections.deque()  # what is left of the answer, by part
        self.write_paused = False
        self.close_after = False

    @property
    def evictable(self) -> bool:
        """True unless a request is in progress: waiting for a worker, or its answer being handed over."""
        return self.state != "busy"

    def set_deadline(self, delay: float) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.timer = self.server.loop.call_later(delay, self.expire)

    def expire(self) -> None:
        log.debug(
            "connection from %s timed out (%s)",
            self.peer[0],
            self.state,
            extra={"peer": self.peer[0], "reason": "timeout", "state": self.state},
        )
        sock = self.transport.get_extra_info("socket") if self.transport is not None else None
        if self.state in ("busy", "closing") and sock is not None:
            # A client that does not take its answer: reset, or the kernel goes on trickling what it holds
            # (megabytes) to it after the close.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.close_now()

    def close_now(self) -> None:
        """End the connection at once (a deadline, an eviction, the server stopping)."""
        if self.state == "closed":
            return
        if self.transport is not None:
            self.transport.abort()
        if self.opening is not None:  # a TLS handshake, or a task about to report its end
            self.opening.cancel()
        self.forget()

    def forget(self) -> None:
        self.state = "closed"
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.pending.clear()
        self.server.forget(self)

    # asyncio's protocol callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.set_write_buffer_limits(high=CHUNK)
        if self.state == "closed":  # evicted while its TLS handshake finished
            transport.abort()
        else:
            self.state = "head"  # the deadline armed at accept runs on

    def connection_lost(self, exc: Exception | None) -> None:
        self.forget()

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        if self.state == "busy":
            self._write_pending()

    def eof_received(self) -> bool | None:
        if self.state == "busy" and self.transport is not None and self.transport.can_write_eof():
            self.close_after = True  # a client that half-closed still gets its answer
            return True
        return None  # the transport closes

    def data_received(self, data: bytes) -> None:
        if self.state in ("closing", "closed"):
            return  # what a client sends after its last request is dropped
        self.buffer += data
        if self.state == "busy":
            # Reading is paused during a request; a TLS transport may still pass on what it had decrypted.
            if len(self.buffer) > 2 * self.server.limits.max_head_bytes:
                self.close_now()
            return
        if self.state == "idle":
            self.state = "head"
            self.set_deadline(self.server.limits.head_timeout)
        self._read_head()

    # reading a request

    def _read_head(self) -> None:
        limits = self.server.limits
        try:
            if not self.line_checked:
                # RFC 9112: empty lines before a request line are ignored.
                blank = len(self.buffer) - len(self.buffer.lstrip(b"\r\n"))
                if blank:
                    del self.buffer[:blank]
                if not self.buffer:
                    return
                newline = self.buffer.find(b"\n")
                if newline < 0:
                    if not self.buffer[:1].isalpha():
                        raise HeadError("400 Bad Request")  # not HTTP (a TLS handshake on the plain port...)
                    if len(self.buffer) > limits.max_head_bytes:
                        raise HeadError("414 URI Too Long")
                    return
                line = bytes(self.buffer[:newline])
                check_request_line(line[:-1] if line.endswith(b"\r") else line)
                self.line_checked = True
            end = head_end(self.buffer, max(0, self.searched - 2))
            if end < 0 or end > limits.max_head_bytes:
                self.searched = len(self.buffer)
                if len(self.buffer) > limits.max_head_bytes:
                    raise HeadError("431 Request Header Fields Too Large")
                return
            head = parse_head(self.buffer[:end])
            del self.buffer[:end]
            self.searched, self.line_checked = 0, False
            if head.version not in ("1.0", "1.1"):
                raise HeadError("505 HTTP Version Not Supported")
            if head.method not in ALLOWED_METHODS:
                raise HeadError("405 Method Not Allowed")
            path, query = split_target(head.target)
        except Http09:
            log.debug("HTTP/0.9 request from %s: closed", self.peer[0], extra={"peer": self.peer[0]})
            self.close_now()
            return
        except HeadError as exc:
            log.debug(
                "bad request from %s: %s",
                self.peer[0],
                exc.status,
                extra={"peer": self.peer[0], "status": exc.status[:3]},
            )
            extra = [("Allow", ", ".join(ALLOWED_METHODS))] if exc.status.startswith("405") else []
            self.state = "busy"
            self.close_after = True
            assert self.transport is not None
            self.transport.pause_reading()
            self.set_deadline(limits.write_timeout)
            self.pending = collections.deque(
                [memoryview(error_answer(exc.status, self.server.date(time.time()), extra))]
            )
            self._write_pending()
            return
        assert self.transport is not None
        self.state = "busy"
        self.transport.pause_reading()  # the next pipelined request waits until this answer is handed over
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.close_after = not head.keep_alive
        self.server.submit(self, head, path, query)

    # writing the answer

    def respond(self, answer: Answer) -> None:
        """Called in the loop with a worker's answer."""
        if self.state != "busy" or self.transport is None or self.transport.is_closing():
            return
        self.close_after = self.close_after or answer.close
        self.set_deadline(self.server.limits.write_timeout)
        if sum(map(len, answer.body)) <= CHUNK:  # small: one write
            self.pending = collections.deque([memoryview(b"".join((answer.head, *answer.body)))])
        else:
            self.pending = collections.deque(memoryview(part) for part in (answer.head, *answer.body) if part)
        self._write_pending()

    def _write_pending(self) -> None:
        assert self.transport is not None
        pending = self.pending
        while pending and not self.write_paused:
            if self.transport.is_closing():  # the client went away: asyncio would log every further write
                pending.clear()
                return
            chunk, rest = pending[0][:CHUNK], pending[0][CHUNK:]
            if len(rest):
                pending[0] = rest
            else:
                pending.popleft()
            self.transport.write(chunk)
        if not pending and not self.write_paused and self.state == "busy":
            self._answered()

    def _answered(self) -> None:
        assert self.transport is not None
        if self.close_after:
            self.state = "closing"
            self.set_deadline(self.server.limits.write_timeout)  # for a client that does not take the rest
            if self.transport.can_write_eof():
                # Lingering close: end our side and read on until the client closes its own, so that a
                # body it still sends does not make the kernel reset the connection under the answer.
                self.transport.write_eof()
                self.transport.resume_reading()
            else:
                self.transport.close()
            return
        self.state = "idle"
        self.server.touch(self)
        self.set_deadline(self.server.limits.idle_timeout)
        self.transport.resume_reading()
        if self.buffer:  # a pipelined request, read before the answer left
            self.state = "head"
            self.set_deadline(self.server.limits.head_timeout)
            self._read_head()


def run_app(app: WSGIApp, environ: dict[str, Any], close: bool, date: str) -> Answer:
    """Run the WSGI app for one request (in a worker thread); an exception in it becomes a 500."""
    started: list[Any] = []
    written: list[bytes] = []

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Callable[[bytes], Any]:
        started[:] = [status, headers]
        return written.append  # WSGI's write(), for an app that uses it

    try:
        result = app(environ, start_response)
        try:
            written.extend(result)
        finally:
            if hasattr(result, "close"):
                result.close()
        status, headers = started
        body = tuple(written)
    except Exception:
        log.exception(
            "serving %s failed",
            environ["RAW_PATH"],
            extra={"method": environ["REQUEST_METHOD"], "path": environ["RAW_PATH"]},
        )
        status, headers, body = "500 Internal Server Error", [("Content-Type", "text/plain")], (b"internal error\n",)
        close = True
    length = sum(map(len, body))
    if environ["REQUEST_METHOD"] == "HEAD":
        given = [v for n, v in headers if n.lower() == "content-length"]
        length, body = (int(given[0]) if given and not length else length), ()
    log.debug(
        "%s %s %s %s",
        environ["REMOTE_ADDR"],
        environ["REQUEST_METHOD"],
        environ["RAW_PATH"],
        status[:3],
        extra={
            "peer": environ["REMOTE_ADDR"],
            "method": environ["REQUEST_METHOD"],
            "path": environ["RAW_PATH"],
            "status": status[:3],
        },
    )
    return Answer(answer_head(status, headers, length, close, date), body, close)
