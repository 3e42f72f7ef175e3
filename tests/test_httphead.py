"""The request-head parser: held to h11 (httpx's own HTTP/1.1 parser) with hypothesis, and its own refusals."""

from __future__ import annotations

import h11
import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from exporter.serving.httphead import HeadError, Http09, RequestHead, head_end, parse_head, split_target

SETTINGS = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])

TOKEN_CHARS = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
VALUE_CHARS = TOKEN_CHARS + ' \t/:;=,"()[]\x80\xe9\xff'
# What parsers disagree on, or smuggling relies on: put in, swapped for, or taken out of a well-formed head.
AWKWARD = [b" ", b"\t", b"\x00", b"\x01", b"\x0b", b"\x7f", b"\x80", b":", b"\r", b"\n", b"\r\n", b"\n ", b",", b"0"]
token = st.text(TOKEN_CHARS, min_size=1, max_size=10).map(str.encode)
value = st.text(VALUE_CHARS, max_size=16).map(lambda v: v.encode("latin-1"))
eol = st.sampled_from([b"\r\n", b"\n"])
header = st.one_of(
    st.tuples(st.sampled_from([b"Accept", b"Connection", b"content-length", b"X-Scope"]), value),
    st.tuples(token, value),
)


@st.composite
def heads(draw: st.DrawFn) -> bytes:
    """A well-formed request head, then up to three bytes put in, swapped or taken out anywhere in it."""
    request = draw(st.sampled_from([b"GET", b"HEAD", b"POST"])) + b" /" + draw(token) + b" HTTP/1.1"
    headers = [b"Host: " + draw(token), *(n + b": " + v for n, v in draw(st.lists(header, max_size=4)))]
    data = b"".join(line + draw(eol) for line in [request, *draw(st.permutations(headers))])
    for _ in range(draw(st.integers(0, 3))):
        at = draw(st.integers(0, len(data) - 1))
        what = draw(st.sampled_from(AWKWARD))
        data = draw(
            st.sampled_from(
                [data[:at] + what + data[at:], data[:at] + what + data[at + 1 :], data[:at] + data[at + 1 :]]
            )
        )
    return data + draw(eol)


def h11_reads(data: bytes) -> h11.Request | None:
    """What h11 makes of a whole head as a server: the request, or None when it refuses it."""
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(data)
    try:
        event = conn.next_event()
    except h11.RemoteProtocolError:
        return None
    assert isinstance(event, h11.Request), event  # a whole head is never NEED_DATA
    return event


def ours(data: bytes) -> RequestHead | None:
    try:
        return parse_head(data)
    except (HeadError, Http09):
        return None


@SETTINGS
@given(data=st.one_of(heads(), st.binary(max_size=120).map(lambda b: b + b"\r\n\r\n")))
@example(data=b"GET /metrics HTTP/1.1\r\nHost : x\r\n\r\n")
@example(data=b"GET /metrics HTTP/1.1\r\nHost: x\r\nAccept : y\r\n\r\n")
@example(data=b"GET /metrics HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n")
@example(data=b"GET /metrics HTTP/1.1\nHost: x\nContent-Length: 5, 05\n\n")
@example(data=b"GET /0 HTTP/1.1\r\nHost: 0\r\ncontent-length: 0\r\ncontent-length: 0\r\n\r\n")
@example(data=b"GET /0 HTTP/1.1\r\nHost: 0\r\ncontent-length: 5, 5\r\n\r\n")
def test_whatever_the_parser_accepts_h11_accepts_and_reads_the_same_way(data: bytes) -> None:
    """The parser may refuse more than h11 (obs-fold, control characters in values), never less. Not held
    to h11: a version other than 1.0 or 1.1 (the server answers 505) and Transfer-Encoding (h11 refuses all
    but chunked with 501; the server reads no body anyway and closes after the answer)."""
    end = head_end(data)
    assume(end > 0)  # a byte taken out of the last line end leaves no whole head
    data = data[:end]
    mine = ours(data)
    if mine is None or mine.version not in ("1.0", "1.1") or mine.get("transfer-encoding") is not None:
        return
    theirs = h11_reads(data)
    assert theirs is not None, f"accepted what h11 refuses: {data!r}"
    assert mine.method.encode("latin-1") == theirs.method
    assert mine.target.encode("latin-1") == theirs.target
    assert mine.version.encode("latin-1") == theirs.http_version
    assert as_h11_lists_them(mine.headers) == list(theirs.headers)


def as_h11_lists_them(headers: tuple[tuple[str, str], ...]) -> list[tuple[bytes, bytes]]:
    """Headers as h11 lists them: Content-Length once, as its one length ("5, 5" twice is "5")."""
    out: list[tuple[bytes, bytes]] = []
    length_seen = False
    for name, value in headers:
        if name == "content-length":
            if length_seen:
                continue
            length_seen = True
            value = value.split(",")[0].strip()
        out.append((name.encode(), value.encode("latin-1")))
    return out


@SETTINGS
@given(
    method=st.sampled_from(["GET", "HEAD"]),
    path=st.text(TOKEN_CHARS + "/?=[]%", max_size=30),
    headers=st.lists(st.tuples(token, value), max_size=6),
    eol=eol,
)
def test_a_well_formed_request_is_accepted_as_h11_reads_it(
    method: str, path: str, headers: list[tuple[bytes, bytes]], eol: bytes
) -> None:
    headers = [(n, v) for n, v in headers if n.lower() not in (b"host", b"content-length", b"transfer-encoding")]
    lines = [f"{method} /{path} HTTP/1.1".encode(), b"Host: x", *(n + b": " + v for n, v in headers)]
    data = eol.join(lines) + eol + eol
    mine = parse_head(data)
    theirs = h11_reads(data)
    assert theirs is not None
    assert [(n.encode(), v.encode("latin-1")) for n, v in mine.headers] == list(theirs.headers)
    assert (mine.method, mine.target) == (theirs.method.decode(), theirs.target.decode())


@pytest.mark.parametrize(
    "head",
    [
        b"GET /metrics HTTP/1.1\r\nHost : x\r\n\r\n",  # a space before the colon
        b"GET /metrics HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n",  # obs-fold
        b"GET /metrics HTTP/1.1\r\nHost: x\x01y\r\n\r\n",  # a control character
        b"GET /metrics HTTP/1.1\r\n\r\n",  # HTTP/1.1 without Host
        b"GET /metrics HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n",
        b"GET /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
        b"GET /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
        b"GET  /metrics HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /metrics HTTP/1.1 x\r\nHost: x\r\n\r\n",
    ],
)
def test_a_malformed_head_is_a_400(head: bytes) -> None:
    with pytest.raises(HeadError) as err:
        parse_head(head)
    assert err.value.status == "400 Bad Request"


def test_a_request_line_without_a_version_is_http_0_9() -> None:
    with pytest.raises(Http09):
        parse_head(b"GET /metrics\r\n\r\n")


def test_a_head_is_read_with_bare_line_feeds_as_h11_does() -> None:
    head = parse_head(b"GET /metrics HTTP/1.1\nHost: x\nAccept-Encoding:  gzip \n\n")
    assert head.headers == (("host", "x"), ("accept-encoding", "gzip"))


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("/metrics?name[]=up", ("/metrics", "name[]=up")),
        ("http://exporter:10863/metrics", ("/metrics", "")),
        ("HTTPS://exporter/metrics?x=1", ("/metrics", "x=1")),
        ("http://exporter", ("/", "")),
        ("http://exporter?x", ("/", "x")),
    ],
)
def test_origin_and_absolute_form_targets_give_the_path_and_query(target: str, expected: tuple[str, str]) -> None:
    assert split_target(target) == expected


@pytest.mark.parametrize("target", ["*", "exporter:10863", "ftp://x/metrics"])
def test_other_target_forms_are_a_400(target: str) -> None:
    with pytest.raises(HeadError):
        split_target(target)


@pytest.mark.parametrize(
    ("head", "keep_alive"),
    [
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", True),
        (b"GET / HTTP/1.1\r\nHost: x\r\nConnection: keep-alive, Close\r\n\r\n", False),
        (b"GET / HTTP/1.0\r\n\r\n", False),
        (b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\n", False),  # the body is never read
        (b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", True),
        (b"GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n", False),
    ],
)
def test_a_connection_is_kept_only_for_http_1_1_without_close_or_a_body(head: bytes, keep_alive: bool) -> None:
    assert parse_head(head).keep_alive is keep_alive
