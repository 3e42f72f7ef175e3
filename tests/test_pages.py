"""Job pages: the msgspec fast path reads every page exactly as the JSON fallback does, and leaves odd ones to it."""

from __future__ import annotations

import json
import math
from typing import Any

import httpx
import msgspec
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import exporter.sugon.pages
from exporter.model import Row
from exporter.sugon.conversation import ApiError, Reply, parse_envelope
from exporter.sugon.joblist import _same_rows
from exporter.sugon.pages import decode_job_page, parse_job_page, row_of
from tests.helpers import RowsReceived, envelope, fixture

FIELDS = Row.__struct_fields__


def answer(body: bytes, status: int = 200) -> Reply:
    return Reply(status_code=status, headers=httpx.Headers({"content-type": "application/json"}), content=body)


def outcome(decode: Any, body: bytes, status: int = 200) -> str:
    """What a decoder makes of a body, as text: the page (every field's repr) or the error's type and text."""
    try:
        total, rows = decode(answer(body, status))
    except ApiError as exc:
        return f"{type(exc).__name__}: {exc}"
    return repr((total, [None if r is None else msgspec.structs.astuple(r) for r in rows]))


def fallback(a: Reply) -> tuple[int, list[Row | None]]:
    """The JSON path alone, as the exporter read every page before the fast path."""
    total, rows = parse_job_page(parse_envelope(a))
    return total, [row_of(r) for r in rows]


def same(body: bytes, status: int = 200) -> str:
    fast, slow = outcome(decode_job_page, body, status), outcome(fallback, body, status)
    assert fast == slow, body[:300]
    return fast


def seed_body() -> bytes:
    return json.dumps(fixture("seed_jobs.json"), ensure_ascii=False).encode()


def test_an_ordinary_page_is_read_by_the_fast_path_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    body = seed_body()
    expected = same(body)
    monkeypatch.setattr(exporter.sugon.pages, "parse_envelope", lambda *_: pytest.fail("the fallback was used"))
    assert outcome(decode_job_page, body) == expected
    total, rows = decode_job_page(answer(body))
    assert total == 2 and [r.jobId if r else None for r in rows] == ["27", "23"]


def page(*rows: str, extra: str = "") -> bytes:
    """A page whose rows are written out as JSON text (so that text json.dumps never writes can be in them)."""
    listed = ", ".join(rows)
    return f'{{"code": "0", "msg": "success", "data": {{"total": {len(rows)}, "list": [{listed}]}}{extra}}}'.encode()


ROW = '{"jobId": "7", "jobmanagerId": 1, "queue": "debug", "user": "u", "jobStatus": "statR", "procNumUsed": 4%s}'
ODD = {
    "NaN in a read field": page(ROW.replace('"procNumUsed": 4', '"procNumUsed": NaN') % ""),
    "NaN in a skipped field": page(ROW % ', "jobName": NaN'),
    "NaN in jobRunTime": page(ROW % ', "jobRunTime": NaN'),
    "1e400 in a read field": page(ROW.replace('"procNumUsed": 4', '"procNumUsed": 1e400') % ""),
    "1e400 in a skipped field": page(ROW % ', "x": 1e400'),
    "a lone surrogate in a read field": page(ROW.replace('"u"', '"\\ud800"') % ""),
    "a lone surrogate in a skipped field": page(ROW % ', "jobName": "\\udfff"'),
    "a surrogate pair": page(ROW.replace('"u"', '"\\ud83d\\ude00"') % ""),
    "a BOM": b"\xef\xbb\xbf" + page(ROW % ""),
    "UTF-16": page(ROW % "").decode().encode("utf-16"),
    "UTF-16 big-endian without BOM": page(ROW % "").decode().encode("utf-16-be"),
    "invalid UTF-8 in a skipped field": page(
        ROW % ', "workDir": "/home/\xff\xfe"'.encode("latin-1").decode("latin-1")
    ).replace(b"\xc3\xbf\xc3\xbe", b"\xff\xfe"),
    "invalid UTF-8 in a read field": page(ROW.replace('"debug"', '"d\xffg"') % "").replace(b"\xc3\xbf", b"\xff"),
    "valid UTF-8 in a skipped field": page(ROW % ', "jobName": "作业 1"'),
    "the usage fields as the API writes them": page(
        ROW % ', "jobRunTime": "2-00:00:58", "nodeUsed": "h04r3n[01-04]", "appType": "fluent"'
    ),
    "the usage fields empty and null": page(ROW % ', "jobRunTime": "", "nodeUsed": null, "appType": ""'),
    "the usage fields of odd types": page(ROW % ', "jobRunTime": 3600, "nodeUsed": ["n1"], "appType": {"a": 1}'),
    "fullwidth digits in jobRunTime": page(ROW % ', "jobRunTime": "１２:００"'),
    "a lone surrogate in nodeUsed": page(ROW % ', "nodeUsed": "n\\udfff[1-2]"'),
    "invalid UTF-8 in appType": page(ROW % ', "appType": "v\xffsp"').replace(b"\xc3\xbf", b"\xff"),
    "1e400 in jobRunTime": page(ROW % ', "jobRunTime": 1e400'),
    "an int beyond 64 bits in nodeUsed": page(ROW % f', "nodeUsed": {2**70}'),
    "a 5,000-digit integer in appType": page(ROW % (', "appType": ' + "9" * 5000)),
    "deep nesting in nodeUsed": page(ROW % (', "nodeUsed": ' + "[" * 600 + "]" * 600)),
    "a host list of 100,000 characters": page(ROW % (', "nodeUsed": "' + "n1," * 33_333 + 'n1"')),
    "duplicate usage fields": page(ROW % ', "appType": "vasp", "jobRunTime": "1:00", "appType": "BASE"'),
    "a 5,000-digit integer in a skipped field": page(ROW % (', "x": ' + "9" * 5000)),
    "a 5,000-digit integer in a read field": page(ROW.replace('"procNumUsed": 4', '"procNumUsed": ' + "9" * 5000) % ""),
    "a 5,000-digit string in a skipped field": page(ROW % (', "x": "' + "9" * 5000 + '"')),
    "a 4,300-digit integer in a skipped field": page(ROW % (', "x": ' + "9" * 4300)),
    "duplicate keys in a row": page(ROW % ', "queue": "gpu", "procNumUsed": 8'),
    "duplicate data": page(ROW % "", extra=', "data": {"total": 0, "list": []}'),
    "duplicate list": page(ROW % "").replace(b'"list": [', b'"list": [], "list": ['),
    "an int beyond 64 bits in jobId": page(ROW.replace('"7"', str(2**70)) % ""),
    "an int beyond 64 bits in procNumUsed": page(ROW.replace('"procNumUsed": 4', f'"procNumUsed": {2**80}') % ""),
    "a negative int beyond 64 bits in jobmanagerId": page(
        ROW.replace('"jobmanagerId": 1', f'"jobmanagerId": {-(2**70)}') % ""
    ),
    "a row that is not an object": page(ROW % "", "[1, 2]", '"x"', "null"),
    "a null row": page(ROW % "", "null"),
    "list null with total 0": b'{"code": "0", "data": {"total": 0, "list": null}}',
    "list null with total 3": b'{"code": "0", "data": {"total": 3, "list": null}}',
    "list not a list": b'{"code": "0", "data": {"total": 3, "list": {"a": 1}}}',
    "list missing": b'{"code": "0", "data": {"total": 0}}',
    "total missing": page(ROW % "").replace(b'"total": 1, ', b""),
    "total a digit string": page(ROW % "").replace(b'"total": 1', b'"total": " 12 "'),
    "total a superscript digit": page(ROW % "").replace(b'"total": 1', b'"total": "\xc2\xb2"'),
    "total negative": page(ROW % "").replace(b'"total": 1', b'"total": -1'),
    "code a number": page(ROW % "").replace(b'"code": "0"', b'"code": 0'),
    "code with blanks": page(ROW % "").replace(b'"code": "0"', b'"code": " 0 "'),
    "code true": page(ROW % "").replace(b'"code": "0"', b'"code": true'),
    "an error envelope": b'{"msg":"auth_fail","code":"10008","data":"token is invalid"}',
    "a busy envelope": b'{"msg":"timed out","code":"10013","data":null}',
    "data null": b'{"code": "0", "msg": "success", "data": null}',
    "an array body": b"[]",
    "an HTML page": b"<html><body>502 Bad Gateway</body></html>",
    "truncated": page(ROW % "")[:-20],
    "trailing garbage": page(ROW % "") + b" x",
    "trailing whitespace": page(ROW % "") + b" \r\n\t",
    "an empty body": b"",
    "deep nesting in a skipped field": page(ROW % (', "x": ' + "[" * 600 + "]" * 600)),
    "deeper nesting than json goes": page(ROW % (', "x": ' + "[" * 20000 + "]" * 20000)),
    "a control character in a string": page(ROW.replace('"u"', '"u\x01"') % ""),
    "escaped NUL in a read field": page(ROW.replace('"u"', '"u\\u0000v"') % ""),
    "1, 1.0 and true as ids": page(
        ROW % "", ROW.replace('"7"', "7") % "", ROW.replace('"7"', "7.0") % "", ROW.replace('"7"', "true") % ""
    ),
    "-0 and floats in procNumUsed": page(
        ROW.replace('"procNumUsed": 4', '"procNumUsed": -0') % "",
        ROW.replace('"procNumUsed": 4', '"procNumUsed": 2.5e1') % "",
    ),
}


@pytest.mark.parametrize("body", ODD.values(), ids=ODD.keys())
def test_an_odd_page_is_read_as_the_json_path_reads_it(body: bytes) -> None:
    same(body)


def test_what_the_odd_pages_come_to() -> None:
    """Checked by hand: the odd pages that mean something in particular."""
    assert same(ODD["invalid UTF-8 in a skipped field"]).startswith("ApiInvalidResponse: body is not JSON")
    assert same(ODD["a 5,000-digit integer in a skipped field"]).startswith("ApiInvalidResponse: body is not JSON")
    assert same(ODD["a 4,300-digit integer in a skipped field"]).startswith("(1, [('7', 1, 'debug'")
    assert "('7', 1, 'gpu', 'u', 'statR', 8, None, None, None, None)" in same(ODD["duplicate keys in a row"])
    assert same(ODD["duplicate data"]) == "(0, [])"
    assert same(ODD["an int beyond 64 bits in procNumUsed"]) == repr(
        (1, [("7", 1, "debug", "u", "statR", 2**80, None, None, None, None)])
    )
    assert same(ODD["NaN in a read field"]).endswith("nan, None, None, None, None)])")
    assert same(ODD["1e400 in a read field"]).endswith("inf, None, None, None, None)])")
    assert same(ODD["NaN in jobRunTime"]).endswith("None, nan, None, None)])")
    assert same(ODD["the usage fields as the API writes them"]).endswith(
        "None, '2-00:00:58', 'h04r3n[01-04]', 'fluent')])"
    )
    assert same(ODD["the usage fields empty and null"]).endswith("None, '', None, '')])")
    assert same(ODD["the usage fields of odd types"]).endswith("None, 3600, ['n1'], {'a': 1})])")
    assert same(ODD["a lone surrogate in nodeUsed"]).endswith("None, None, 'n\\udfff[1-2]', None)])")
    assert same(ODD["invalid UTF-8 in appType"]).startswith("ApiInvalidResponse: body is not JSON")
    assert same(ODD["an int beyond 64 bits in nodeUsed"]).endswith(f"None, None, {2**70}, None)])")
    assert same(ODD["duplicate usage fields"]).endswith("None, '1:00', None, 'BASE')])")  # the last wins
    assert same(ODD["a null row"]).endswith("None])")
    assert same(ODD["an error envelope"]) == "ApiAuthError: API code 10008: auth_fail"
    assert same(ODD["list null with total 0"]) == "(0, [])"
    assert same(ODD["deeper nesting than json goes"]).startswith("ApiInvalidResponse")


def test_nesting_near_the_limit_of_either_decoder_is_read_as_the_json_path_reads_it() -> None:
    # Both decoders stop at the interpreter's recursion limit, msgspec a few levels later than json from the
    # same frame (Python 3.10 and 3.11), or at the C stack limit (3.12: about 1,500 levels, 3.13: 10,000).
    for depth in (*range(940, 1001), *range(1480, 1501), *range(9980, 10001)):
        same(page(ROW % (', "x": ' + "[" * depth + "]" * depth)))


@pytest.mark.parametrize("status", [204, 301, 401, 403, 429, 500, 502])
def test_a_status_other_than_success_is_read_as_the_json_path_reads_it(status: int) -> None:
    same(page(ROW % ""), status)


# Generated pages: rows of the ten fields (and others) holding every kind of JSON value, written by
# json.dumps one way or another, then changed here and there at the byte level.
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**80), 2**80),
    st.floats(allow_nan=False),
    st.text(max_size=8),
    st.sampled_from(
        ["statR", "statQ", "debug", " 7 ", "", "²", "\ud800", "作业", "2-00:00:58", "05:30", "n[01-04,07]", "fluent"]
    ),
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3),
    max_leaves=6,
)
rows = st.one_of(
    st.fixed_dictionaries(
        {},
        optional={**{f: values for f in FIELDS}, "jobName": values, "startTime": values, "workDir": values},
    ),
    values,
)
pages = st.fixed_dictionaries(
    {
        "code": st.sampled_from(["0", "0", "0", 0, "10008", " 0", None]),
        "data": st.one_of(
            st.fixed_dictionaries(
                {
                    "total": st.one_of(st.integers(-1, 50), st.sampled_from(["5", "x", None])),
                    "list": st.lists(rows, max_size=6),
                }
            ),
            values,
        ),
    },
    optional={"msg": st.text(max_size=5)},
)
TOKENS = [
    b"NaN",
    b"Infinity",
    b"1e400",
    b"\xef\xbb\xbf",
    b"\xff",
    b"\\ud800",
    b'"',
    b",",
    b"9" * 4400,
    b"[" * 300,
    b"\x00",
]


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=pages,
    ascii_only=st.booleans(),
    edits=st.lists(st.tuples(st.integers(0, 10**6), st.sampled_from(TOKENS), st.booleans()), max_size=2),
    encoding=st.sampled_from(["utf-8", "utf-8", "utf-8", "utf-16", "utf-8-sig"]),
)
@example(
    data={"code": "0", "data": {"total": 1, "list": [{"jobId": 2**70, "procNumUsed": 2**65}]}},
    ascii_only=True,
    edits=[],
    encoding="utf-8",
)
def test_the_fast_path_reads_every_generated_page_as_the_json_path_does(
    data: Any, ascii_only: bool, edits: list[tuple[int, bytes, bool]], encoding: str
) -> None:
    body = json.dumps(data, ensure_ascii=ascii_only).encode(encoding, "surrogatepass")
    for at, token, replace in edits:
        at %= len(body) + 1
        body = body[:at] + token + body[at + (len(token) if replace else 0) :]
    same(body)


def test_nan_compares_as_itself_in_these_outcomes() -> None:
    # The outcomes are compared as text, so that a NaN (which is not equal to itself) still compares.
    assert math.isnan(json.loads("NaN")) and repr(float("nan")) == "nan"


def test_a_page_read_again_is_the_same_page_though_its_run_times_have_grown() -> None:
    """What the ignored-offset check compares: the rows as the exporter reads them, but their run times, which
    grow between two reads of one page. A field it skips does not make a page another page; one it counts by
    does, the usage fields as well."""
    usage = ', "jobRunTime": "%s", "nodeUsed": "%s", "appType": "%s", "jobName": "%s"'
    first = page(ROW % (usage % ("00:01:00", "n[1-4]", "vasp", "a")))
    later = page(ROW % (usage % ("00:01:07", "n[1-4]", "vasp", "b")))
    others = [
        page(ROW % (usage % ("00:01:00", "n[1-5]", "vasp", "a"))),
        page(ROW % (usage % ("00:01:00", "n[1-4]", "fluent", "a"))),
        page(ROW.replace('"statR"', '"statC"') % (usage % ("00:01:00", "n[1-4]", "vasp", "a"))),
    ]
    rows = [decode_job_page(answer(body))[1] for body in (first, later, *others)]
    assert [r.jobRunTime for r in rows[0] + rows[1] if r] == ["00:01:00", "00:01:07"]
    assert _same_rows(rows[0], rows[1])
    assert not any(_same_rows(rows[0], other) for other in rows[2:])


def test_a_server_that_ignores_the_offset_is_found_though_the_run_times_grow() -> None:
    """Page 0 again at a later offset, every row's run time a second older: still the rows of start=0 (pages of
    three rows, below what the check of job ids can tell)."""
    import asyncio

    import respx

    from exporter.sugon.conversation import ApiInvalidResponse, Conversation
    from exporter.sugon.joblist import SugonClient
    from exporter.sugon.tokens import StaticToken

    calls = 0

    def again(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        rows = [json.loads(ROW.replace('"7"', f'"{i}"') % f', "jobRunTime": "00:00:{calls:02d}"') for i in range(3)]
        return httpx.Response(200, json=envelope({"total": 9, "list": rows}))

    async def go() -> None:
        async with httpx.AsyncClient() as http:
            client = SugonClient("https://h", StaticToken("t"), Conversation(http, 5, retry_backoff=0))
            await client.fetch_jobs("1", 3, 1, RowsReceived())

    with respx.mock:
        respx.get("https://h/hpc/openapi/v2/jobs").mock(side_effect=again)
        with pytest.raises(ApiInvalidResponse, match="ignores the offset"):
            asyncio.run(go())
