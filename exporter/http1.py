"""HTTP/1.1 answers as a client reads them: the head's grammar and framing, the body-size bound, Answer.

Answers are read as RFC 9112 asks of a client and as h11 (httpx's parser, the reference of a differential
test in tests/test_transport.py) reads them: bare-LF line ends, obs-fold continuation lines,
``Content-Length: N, N`` when every value agrees. Where the grammar below looks odd, it is h11's
(h11/_abnf.py): field values may hold obs-text and most control bytes, never NUL, CR, LF, VT or FF.
The connection that reads them is ``exporter.connection``.
"""

from __future__ import annotations

import re

import httpx

MAX_HEAD = 256 * 1024  # a response head; httpx's stack allows about 100 KiB (httpcore's h11 buffer)
MAX_BODY = 64 * 1024 * 1024  # a response body, raw or decoded
MAX_CHUNK_LINE = 4096

_VALUE = rb"(?:[^\x00\s]+(?:[ \t]+[^\x00\s]+)*)?"
_FIELD = re.compile(rb"([-!#$%&'*+.^_`|~0-9a-zA-Z]+):[ \t]*(" + _VALUE + rb")[ \t]*\n")
_FIELDS = re.compile(rb"(?:[-!#$%&'*+.^_`|~0-9a-zA-Z]+:[ \t]*" + _VALUE + rb"[ \t]*\n)*")
_STATUS = re.compile(rb"HTTP/([0-9]\.[0-9]) ([0-9]{3})(?: ((?:[ \t]|[^\x00\s])*))?")
CHUNK_LINE = re.compile(rb"([0-9A-Fa-f]{1,20})(?:;.*)?[ \t]*\r\n")
HEAD_END = re.compile(rb"\n\r?\n")
_FOLD = re.compile(rb"[ \t]+")

Fields = list[tuple[bytes, bytes]]


class BodyTooLarge(httpx.DecodingError):
    """A response body over the limit (raw, or once decompressed): refused before it is decoded or parsed."""


class Head:
    """A parsed response head: status, reason, fields (names as sent) and what frames the body."""

    __slots__ = ("chunked", "fields", "keep", "length", "reason", "status", "version")

    def __init__(
        self, status: int, version: bytes, reason: bytes, fields: Fields, length: int | None, chunked: bool, keep: bool
    ) -> None:
        self.status = status
        self.version = version
        self.reason = reason
        self.fields = fields
        self.length = length
        self.chunked = chunked
        self.keep = keep


def _bad_fields(fields: bytes) -> httpx.RemoteProtocolError:
    for line in fields.split(b"\n"):
        if line and not _FIELD.fullmatch(line + b"\n"):
            return httpx.RemoteProtocolError(f"malformed header line: {line[:80]!r}")
    return httpx.RemoteProtocolError("malformed header lines")  # pragma: no cover (the block regex agrees)


def _unfold(fields: bytes) -> bytes:
    """Field lines with obs-fold continuations joined to their line by one space, as h11 does."""
    lines: list[bytes] = []
    for line in fields.split(b"\n")[:-1]:
        fold = _FOLD.match(line)
        if fold is None:
            lines.append(line)
        elif not lines:
            raise httpx.RemoteProtocolError("a continuation line before any header line")
        else:
            lines[-1] += b" " + line[fold.end() :]
    return b"".join(line + b"\n" for line in lines)


def parse_fields(fields: bytes) -> Fields:
    """(name, value) of field lines, each ending in LF; raises RemoteProtocolError on a malformed one."""
    if fields[:1] in (b" ", b"\t") or b"\n " in fields or b"\n\t" in fields:
        fields = _unfold(fields)
    if _FIELDS.fullmatch(fields) is None:
        raise _bad_fields(fields)
    return _FIELD.findall(fields)


def framing(fields: Fields) -> tuple[Fields, int | None, bool, bool]:
    """(fields, Content-Length, chunked, Connection: close), with h11's rules: a Content-Length list or
    repeated header is one value when all agree (kept once) and an error when not; Transfer-Encoding may
    only be one ``chunked``."""
    length: bytes | None = None
    chunked = close = rebuild = False
    for name, value in fields:
        lower = name.lower()
        if lower == b"content-length":
            if b"," in value:
                values = {v.strip() for v in value.split(b",")}
                if len(values) != 1:
                    raise httpx.RemoteProtocolError("conflicting Content-Length values")
                value = values.pop()
                rebuild = True
            if not value.isdigit() or len(value) > 20:
                raise httpx.RemoteProtocolError(f"bad content-length {value[:40]!r}")
            if length is None:
                length = value
            elif value != length:
                raise httpx.RemoteProtocolError("conflicting Content-Length headers")
            else:
                rebuild = True
        elif lower == b"transfer-encoding":
            if chunked:
                raise httpx.RemoteProtocolError("more than one Transfer-Encoding header")
            if value != b"chunked":
                if value.lower() != b"chunked":
                    raise httpx.RemoteProtocolError(f"unsupported transfer-encoding {value[:40]!r}")
                rebuild = True  # kept in lower case, as h11 keeps it
            chunked = True
        elif lower == b"connection":
            close = close or b"close" in [v.strip() for v in value.lower().split(b",")]
    size = None if length is None else int(length)
    if rebuild:  # one Content-Length, with the one value, where it first stood
        kept: Fields = []
        seen = False
        for name, value in fields:
            lower = name.lower()
            if lower == b"content-length":
                if seen:
                    continue
                seen, value = True, length or value
            elif lower == b"transfer-encoding":
                value = b"chunked"
            kept.append((name, value))
        fields = kept
    return fields, size, chunked, close


def parse_head(head: bytes) -> Head:
    """A response head (status line to the empty line) with CRLF or bare-LF line ends."""
    text = head.replace(b"\r\n", b"\n")  # a lone CR stays, and is refused below as h11 does
    status_line, _, fields = text[:-1].partition(b"\n")
    status = _STATUS.fullmatch(status_line)
    if status is None:
        raise httpx.RemoteProtocolError(f"not an HTTP/1.x status line: {status_line[:80]!r}")
    version, code, reason = status.groups()
    if code < b"100":
        raise httpx.RemoteProtocolError(f"status code {code.decode()} out of range")
    parsed, length, chunked, close = framing(parse_fields(fields))
    return Head(int(code), version, reason or b"", parsed, length, chunked, version >= b"1.1" and not close)


class AnswerHeaders:
    """Response headers, looked up by name whatever its case (what parse_envelope asks of httpx.Headers)."""

    __slots__ = ("raw",)

    def __init__(self, raw: Fields) -> None:
        self.raw = raw

    def get(self, name: str, default: str | None = None) -> str | None:
        wanted = name.lower().encode("ascii")
        for key, value in self.raw:
            if key.lower() == wanted:
                return value.decode("latin-1")
        return default


class Answer:
    """A response as the job list's pages use it: status, headers and (decoded) body."""

    __slots__ = ("content", "headers", "status_code")

    def __init__(self, status_code: int, headers: Fields, content: bytes) -> None:
        self.status_code = status_code
        self.headers = AnswerHeaders(headers)
        self.content = content


async def read_limited(response: httpx.Response, limit: int = MAX_BODY) -> bytes:
    """The decoded body of a streamed httpx response; BodyTooLarge as soon as it, or what came over the
    wire, is over ``limit`` (and at once when Content-Length says so)."""
    length = response.headers.get("content-length", "")
    if length.isdigit() and int(length) > limit:
        raise BodyTooLarge(f"response body too large ({length} bytes, over {limit})")
    parts: list[bytes] = []
    size = 0
    async for part in response.aiter_bytes():
        size += len(part)
        if size > limit or response.num_bytes_downloaded > limit:
            raise BodyTooLarge(f"response body too large (over {limit} bytes)")
        parts.append(part)
    return b"".join(parts)
