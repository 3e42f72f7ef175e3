"""HTTP/1.1 request heads as the /metrics server reads them, and the heads of its answers (pure, no I/O).

A small strict parser rather than h11: the server never reads a request body (GET and HEAD only), it must
judge the request line as soon as that line is in (an HTTP/0.9 line is closed at once, bytes that are not
HTTP are refused before the head deadline), and it is stricter than h11 where that is safer (no obs-fold,
no control characters in values). tests/test_httphead.py holds it to h11 with hypothesis: whatever this
parser accepts, h11 accepts and reads the same way.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from email.utils import formatdate
from io import BytesIO
from typing import Any
from urllib.parse import unquote

_HEAD_END = re.compile(rb"\n\r?\n")
_TOKEN = re.compile(rb"[-!#$%&'*+.^_`|~0-9a-zA-Z]+")
_TARGET = re.compile(rb"[\x21-\x7e]+")
_VERSION = re.compile(rb"HTTP/([0-9]\.[0-9])")
# Visible characters and obs-text, single spaces or tabs between them; h11 also lets control characters in.
_VALUE = re.compile(rb"[\x21-\x7e\x80-\xff]+(?:[ \t]+[\x21-\x7e\x80-\xff]+)*")
_DIGITS = re.compile(rb"[0-9]{1,20}")
_ABSOLUTE = re.compile(rb"https?://[^/?#]*", re.IGNORECASE)
MAX_HEADERS = 100
ALLOWED_METHODS = ("GET", "HEAD")


class HeadError(Exception):
    """The head cannot be served; ``status`` is the answer ("400 Bad Request"), sent before the connection closes."""

    def __init__(self, status: str) -> None:
        super().__init__(status)
        self.status = status


class Http09(Exception):
    """A request line without a version (HTTP/0.9): the connection is closed with no answer."""


@dataclass(frozen=True)
class RequestHead:
    """A parsed request head: ``headers`` with lower-case names and Latin-1 values, in the order sent."""

    method: str
    target: str
    version: str
    headers: tuple[tuple[str, str], ...]

    def get(self, name: str) -> str | None:
        """The value of header ``name`` (lower case); repeated headers joined with commas."""
        values = [v for n, v in self.headers if n == name]
        return ",".join(values) if values else None

    @property
    def has_body(self) -> bool:
        """True when a body follows: it is never read, so the connection ends after the answer."""
        length = self.get("content-length")
        return self.get("transfer-encoding") is not None or (length is not None and int(length.split(",")[0]) > 0)

    @property
    def keep_alive(self) -> bool:
        """HTTP/1.1 without ``Connection: close`` and without a body; HTTP/1.0 always closes."""
        if self.version != "1.1" or self.has_body:
            return False
        tokens = (self.get("connection") or "").lower().split(",")
        return "close" not in (t.strip() for t in tokens)


def head_end(buffer: bytes | bytearray, start: int = 0) -> int:
    """Where the head in ``buffer`` ends (after its empty line), or -1; searching from ``start``."""
    match = _HEAD_END.search(buffer, start)
    return match.end() if match else -1


def check_request_line(line: bytes) -> None:
    """Judge a request line (without its line end) as soon as it is in; raises Http09 or HeadError."""
    parts = line.split(b" ")
    if len(parts) == 2 and _TOKEN.fullmatch(parts[0]) and _TARGET.fullmatch(parts[1]):
        raise Http09
    if len(parts) != 3 or not _TOKEN.fullmatch(parts[0]) or not _TARGET.fullmatch(parts[1]):
        raise HeadError("400 Bad Request")
    if not _VERSION.fullmatch(parts[2]):
        raise HeadError("400 Bad Request")


def parse_head(head: bytes | bytearray) -> RequestHead:
    """Parse a whole head (request line, header lines, the empty line); raises Http09 or HeadError."""
    if head_end(head) != len(head):
        raise HeadError("400 Bad Request")  # not one whole head
    lines = bytes(head).split(b"\n")
    lines = [line[:-1] if line.endswith(b"\r") else line for line in lines[:-2]]
    check_request_line(lines[0])
    method, target, version = lines[0].split(b" ")
    if len(lines) - 1 > MAX_HEADERS:
        raise HeadError("431 Request Header Fields Too Large")
    headers = []
    lengths: set[bytes] = set()
    hosts = 0
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        # A space before the colon (or a folded line) is where request smuggling hides: refused, as RFC 9112 asks.
        if not colon or not _TOKEN.fullmatch(name):
            raise HeadError("400 Bad Request")
        value = value.strip(b" \t")
        if value and not _VALUE.fullmatch(value):
            raise HeadError("400 Bad Request")
        lower = name.lower()
        if lower == b"content-length":
            for part in value.split(b","):
                if not _DIGITS.fullmatch(part.strip()):
                    raise HeadError("400 Bad Request")
                lengths.add(part.strip())  # "5, 5" is one length; "5, 05" is two, as h11 reads them
        elif lower == b"host":
            hosts += 1
        headers.append((lower.decode("ascii"), value.decode("latin-1")))
    http_version = version[5:].decode("ascii")
    if len(lengths) > 1 or hosts > 1 or (hosts == 0 and http_version == "1.1"):
        raise HeadError("400 Bad Request")
    return RequestHead(method.decode("ascii"), target.decode("ascii"), http_version, tuple(headers))


def split_target(target: str) -> tuple[str, str]:
    """(path, query) of an origin-form (``/metrics?x``) or absolute-form (``http://host/metrics``) target."""
    if not target.startswith("/"):
        match = _ABSOLUTE.match(target.encode("ascii"))
        if not match:
            raise HeadError("400 Bad Request")
        target = target[match.end() :]
        if not target.startswith("/"):
            target = "/" + target
    path, _, query = target.partition("?")
    return path, query


def wsgi_environ(
    head: RequestHead, path: str, query: str, server: tuple[str, int], peer: tuple[str, int], scheme: str
) -> dict[str, Any]:
    """The WSGI environ (PEP 3333) of a request; the body is never read, so ``wsgi.input`` is empty."""
    environ: dict[str, Any] = {
        "REQUEST_METHOD": head.method,
        "SCRIPT_NAME": "",
        "PATH_INFO": unquote(path, "latin-1"),
        "QUERY_STRING": query,
        "SERVER_NAME": server[0],
        "SERVER_PORT": str(server[1]),
        "SERVER_PROTOCOL": f"HTTP/{head.version}",
        "REMOTE_ADDR": peer[0],
        "REMOTE_PORT": str(peer[1]),
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": scheme,
        "wsgi.input": BytesIO(),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
    }
    for name, value in head.headers:
        if "_" in name:
            continue  # HTTP_X_Y could then come from "x-y" or "x_y": one could pass for the other (as wsgiref does)
        key = name.upper().replace("-", "_")
        if key not in ("CONTENT_TYPE", "CONTENT_LENGTH"):
            key = "HTTP_" + key
        environ[key] = f"{environ[key]},{value}" if key in environ else value
    return environ


class HttpDate:
    """The Date header's value, formatted once a second."""

    def __init__(self) -> None:
        self._cached = (-1, "")  # one tuple, swapped whole: the workers and the loop read it at once

    def __call__(self, now: float) -> str:
        second, text = self._cached
        if int(now) != second:
            second, text = int(now), formatdate(int(now), usegmt=True)
            self._cached = (second, text)
        return text


# Hop-by-hop and framing headers, and nosniff, are the server's to write, whatever the app says.
_SERVER_HEADERS = frozenset(
    ("connection", "keep-alive", "transfer-encoding", "content-length", "date", "server", "x-content-type-options")
)


def answer_head(status: str, headers: list[tuple[str, str]], length: int, close: bool, date: str) -> bytes:
    """The head of an answer with a ``length``-byte body. No Server header: it would only tell attackers
    what runs here. Every answer says ``X-Content-Type-Options: nosniff``, so that a browser takes it as its
    Content-Type says (never a plain-text answer, or a status page with upstream names in it, as HTML)."""
    lines = [f"HTTP/1.1 {status}", f"Date: {date}", "X-Content-Type-Options: nosniff"]
    lines += [f"{name}: {value}" for name, value in headers if name.lower() not in _SERVER_HEADERS]
    lines.append(f"Content-Length: {length}")
    if close:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def error_answer(status: str, date: str, extra: list[tuple[str, str]] | None = None) -> bytes:
    """A whole plain-text answer for a request the server refuses itself; the connection closes after it."""
    body = (status + "\n").encode("ascii")
    headers = [("Content-Type", "text/plain; charset=utf-8"), *(extra or [])]
    return answer_head(status, headers, len(body), True, date) + body
