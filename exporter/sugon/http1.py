"""HTTP/1.1 answers as a client reads them: the head's grammar and framing, and the body-size bound.

Answers are read as RFC 9112 asks of a client and as h11 (httpx's parser, the reference of a differential
test in tests/test_http1.py) reads them: bare-LF line ends, obs-fold continuation lines,
``Content-Length: N, N`` when every value agrees. Where the grammar below looks odd, it is h11's
(h11/_abnf.py): field values may hold obs-text and most control bytes, never NUL, CR, LF, VT or FF.
The connection that reads them is in connection.py.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import httpx

MAX_HEAD = 256 * 1024  # a response head; httpx's stack allows about 100 KiB (httpcore's h11 buffer)
MAX_BODY = 64 * 1024 * 1024  # a response body, raw or decoded
MAX_CHUNK_LINE = 4096

# h11's field line, name ":" OWS *(vchar / obs-text) with SP and HTAB between them OWS, is the same as
# name ":" and any run of bytes other than NUL, CR, LF, VT and FF, stripped of SP and HTAB; that form is
# read without backtracking.
_FIELD = re.compile(rb"([-!#$%&'*+.^_`|~0-9a-zA-Z]+):[ \t]*([^\x00\n\r\x0b\x0c]*)")
_STATUS = re.compile(rb"HTTP/([0-9]\.[0-9]) ([0-9]{3})(?: ((?:[ \t]|[^\x00\s])*))?")
CHUNK_LINE = re.compile(rb"([0-9A-Fa-f]{1,20})(?:;.*)?[ \t]*\r\n")

Fields = list[tuple[bytes, bytes]]


class BodyTooLarge(httpx.DecodingError):
    """A response body over the limit (raw, or once decompressed): refused before it is decoded or parsed."""


@dataclass(frozen=True)
class Head:
    """A parsed response head: status, reason, fields (names as sent) and what frames the body."""

    status: int
    version: bytes
    reason: bytes
    fields: Fields
    length: int | None  # Content-Length
    chunked: bool
    keep: bool  # HTTP/1.1 without Connection: close


def parse_fields(text: bytes) -> Fields:
    """(name, value) of field lines, each ending in LF, with obs-fold continuation lines joined to their line
    by one space as h11 does; RemoteProtocolError on a malformed line."""
    lines: list[bytes] = []
    for line in text.split(b"\n")[:-1]:
        if line[:1] not in (b" ", b"\t"):
            lines.append(line)
        elif lines:
            lines[-1] += b" " + line.lstrip(b" \t")
        else:
            raise httpx.RemoteProtocolError("a continuation line before any header line")
    fields: Fields = []
    for line in lines:
        found = _FIELD.fullmatch(line)
        if found is None:
            raise httpx.RemoteProtocolError(f"malformed header line: {line[:80]!r}")
        fields.append((found.group(1), found.group(2).rstrip(b" \t")))
    return fields


def framing(fields: Fields) -> tuple[Fields, int | None, bool, bool]:
    """(fields, Content-Length, chunked, Connection: close) with h11's rules: a Content-Length list or
    repeated header is one value when all agree (kept once, where it first stood) and an error when not;
    Transfer-Encoding may only be one ``chunked`` (kept in lower case)."""
    kept: Fields = []
    length: bytes | None = None
    codings: list[bytes] = []
    close = False
    for name, value in fields:
        lower = name.lower()
        if lower == b"content-length":
            values = {v.strip() for v in value.split(b",")}
            if len(values) != 1:
                raise httpx.RemoteProtocolError("conflicting Content-Length values")
            value = values.pop()
            if not value.isdigit() or len(value) > 20:
                raise httpx.RemoteProtocolError(f"bad content-length {value[:40]!r}")
            if length is not None:
                if value != length:
                    raise httpx.RemoteProtocolError("conflicting Content-Length headers")
                continue
            length = value
        elif lower == b"transfer-encoding":
            codings.append(value)
            value = value.lower()
        elif lower == b"connection":
            close = close or b"close" in [token.strip() for token in value.lower().split(b",")]
        kept.append((name, value))
    if len(codings) > 1:
        raise httpx.RemoteProtocolError("more than one Transfer-Encoding header")
    if codings and codings[0].lower() != b"chunked":
        raise httpx.RemoteProtocolError(f"unsupported transfer-encoding {codings[0][:40]!r}")
    return kept, None if length is None else int(length), bool(codings), close


def parse_head(head: bytes) -> Head:
    """A response head (status line to the empty line) with CRLF or bare-LF line ends."""
    text = head.replace(b"\r\n", b"\n")  # a lone CR stays, and is refused as h11 does
    line, _, rest = text.partition(b"\n")
    status = _STATUS.fullmatch(line)
    if status is None:
        raise httpx.RemoteProtocolError(f"not an HTTP/1.x status line: {line[:80]!r}")
    version, code, reason = status.groups()
    if code < b"100":
        raise httpx.RemoteProtocolError(f"status code {code.decode()} out of range")
    fields, length, chunked, close = framing(parse_fields(rest[:-1]))
    return Head(
        status=int(code),
        version=version,
        reason=reason or b"",
        fields=fields,
        length=length,
        chunked=chunked,
        keep=version >= b"1.1" and not close,
    )
