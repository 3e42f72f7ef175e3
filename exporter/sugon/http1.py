"""HTTP/1.1 answers as a client reads them: the head's grammar and framing, the body-size bound, Answer.

Answers are read as RFC 9112 asks of a client and as h11 (httpx's parser, the reference of a differential
test in tests/test_http1.py) reads them: bare-LF line ends, obs-fold continuation lines,
``Content-Length: N, N`` when every value agrees. Where the grammar below looks odd, it is h11's
(h11/_abnf.py): field values may hold obs-text and most control bytes, never NUL, CR, LF, VT or FF.
The connection that reads them is in connection.py.
"""

from __future__ import annotations

import re

import httpx

MAX_HEAD = 256 * 1024  # a response head; httpx's stack allows about 100 KiB (httpcore's h11 buffer)
MAX_BODY = 64 * 1024 * 1024  # a response body, raw or decoded
MAX_CHUNK_LINE = 4096

# h11's field line, name ":" OWS *(vchar / obs-text) with SP and HTAB between them OWS, is the same as
# name ":" and any run of bytes other than NUL, CR, LF, VT and FF, stripped of SP and HTAB; that form is
# read without backtracking.
_FIELD = re.compile(rb"^([-!#$%&'*+.^_`|~0-9a-zA-Z]+):[ \t]*([^\x00\n\r\x0b\x0c]*)\n", re.MULTILINE)
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
    return httpx.RemoteProtocolError("malformed header lines")  # pragma: no cover (every line matched)


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


def parse_fields(fields: bytes) -> tuple[Fields, bytes]:
    """(name, value) of field lines, each ending in LF, and the lines with obs-folds undone; raises
    RemoteProtocolError on a malformed line."""
    found: Fields = _FIELD.findall(fields)
    if len(found) != fields.count(b"\n"):  # a match starts a line and ends it: a line did not match
        if fields[:1] in (b" ", b"\t") or b"\n " in fields or b"\n\t" in fields:
            fields = _unfold(fields)
            found = _FIELD.findall(fields)
        if len(found) != fields.count(b"\n"):
            raise _bad_fields(fields)
    if b" \n" in fields or b"\t\n" in fields:  # trailing whitespace, not part of a value
        found = [(name, value.rstrip(b" \t")) for name, value in found]
    return found, fields


def _values(lowered: bytes, text: bytes, name: bytes) -> list[bytes]:
    """The values of the field lines called ``name`` (b"\\nname:") in ``text``; ``lowered`` is b"\\n" and
    ``text`` in lower case. Finding three names this way costs less than a loop over every field."""
    values = []
    at = lowered.find(name)
    while at >= 0:
        end = lowered.index(b"\n", at + 1)
        values.append(text[at + len(name) - 1 : end - 1].strip(b" \t"))
        at = lowered.find(name, end)
    return values


def framing(fields: Fields, text: bytes) -> tuple[Fields, int | None, bool, bool]:
    """(fields, Content-Length, chunked, Connection: close) of ``fields`` as parsed from ``text``, with
    h11's rules: a Content-Length list or repeated header is one value when all agree (kept once) and an
    error when not; Transfer-Encoding may only be one ``chunked`` (kept in lower case)."""
    lowered = b"\n" + text.lower()
    lengths = _values(lowered, text, b"\ncontent-length:")
    length: bytes | None = None
    rebuild = len(lengths) > 1
    for value in lengths:
        if b"," in value:
            values = {v.strip() for v in value.split(b",")}
            if len(values) != 1:
                raise httpx.RemoteProtocolError("conflicting Content-Length values")
            value = values.pop()
            rebuild = True
        if not value.isdigit() or len(value) > 20:
            raise httpx.RemoteProtocolError(f"bad content-length {value[:40]!r}")
        if length is not None and value != length:
            raise httpx.RemoteProtocolError("conflicting Content-Length headers")
        length = value
    codings = _values(lowered, text, b"\ntransfer-encoding:") if b"\ntransfer-encoding:" in lowered else []
    if len(codings) > 1:
        raise httpx.RemoteProtocolError("more than one Transfer-Encoding header")
    if codings and codings[0] != b"chunked":
        if codings[0].lower() != b"chunked":
            raise httpx.RemoteProtocolError(f"unsupported transfer-encoding {codings[0][:40]!r}")
        rebuild = True
    close = False
    if b"\nconnection:" in lowered:
        tokens = b",".join(_values(lowered, text, b"\nconnection:")).lower().split(b",")
        close = b"close" in [token.strip() for token in tokens]
    if rebuild:  # as h11 hands them on: one Content-Length with its one value where it first stood
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
    return fields, None if length is None else int(length), bool(codings), close


_TOKEN = re.compile(rb"[-!#$%&'*+.^_`|~0-9a-zA-Z]+")  # a field name, as values.is_header's; in bytes, for answers
_NOT_IN_FIELDS = b"\x00\r\x0b\x0c"  # LF splits the lines; a CR left after CRLF became LF stood alone
_FRAMING = frozenset({b"content-length", b"transfer-encoding", b"connection"})
_NAMES: dict[bytes, bytes] = {}  # field names seen, all tokens, and their lower case: a server repeats its own


def parse_head(head: bytes) -> Head:
    """A response head (status line to the empty line) with CRLF or bare-LF line ends.

    The usual head (no obs-fold, one plain Content-Length or none, no Transfer-Encoding) is read line by
    line here, with names looked up among those already seen; anything else goes through parse_fields and
    framing, which hold h11's rules for every case (one regex over every field costs more CPU).
    """
    text = head.replace(b"\r\n", b"\n")  # a lone CR stays, and is refused as h11 does
    lines = text.split(b"\n")
    status = _STATUS.fullmatch(lines[0])
    if status is None:
        raise httpx.RemoteProtocolError(f"not an HTTP/1.x status line: {lines[0][:80]!r}")
    version, code, reason = status.groups()
    if code < b"100":
        raise httpx.RemoteProtocolError(f"status code {code.decode()} out of range")
    fields: Fields = []
    length: bytes | None = None
    close = False
    usual = len(text.translate(None, _NOT_IN_FIELDS)) == len(text)
    for line in lines[1:-2] if usual else ():
        name, colon, value = line.partition(b":")
        lower = _NAMES.get(name)
        if lower is None:
            if not colon or not _TOKEN.fullmatch(name):
                usual = False  # obs-fold, or a malformed line
                break
            lower = name.lower()
            if len(_NAMES) < 256 and len(name) <= 64:
                _NAMES[name] = lower
        elif not colon:
            usual = False
            break
        value = value.strip(b" \t")
        fields.append((name, value))
        if lower in _FRAMING:
            if lower == b"connection":
                close = close or b"close" in [token.strip() for token in value.lower().split(b",")]
            elif length is None and lower == b"content-length" and value.isdigit() and len(value) <= 20:
                length = value
            else:  # a Transfer-Encoding, a Content-Length list or repeated, or a bad one
                usual = False
                break
    if usual:
        size = None if length is None else int(length)
        return Head(int(code), version, reason or b"", fields, size, False, version >= b"1.1" and not close)
    rest = text[len(lines[0]) + 1 : -1]
    parsed, size, chunked, close = framing(*parse_fields(rest))
    return Head(int(code), version, reason or b"", parsed, size, chunked, version >= b"1.1" and not close)


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
