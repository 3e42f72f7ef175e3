"""Job pages: what a page's bytes come to, rows or one typed error, whatever the server writes."""

from __future__ import annotations

import json
import math
from typing import Any

import httpx
import msgspec
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from exporter.model import Row
from exporter.sugon.conversation import ApiError, Reply, decode_job_page
from exporter.sugon.joblist import _same_rows
from exporter.values import count
from tests.helpers import envelope, fixture, read_list

FIELDS = Row.__struct_fields__


def answer(body: bytes, status: int = 200) -> Reply:
    return Reply(status_code=status, headers=httpx.Headers({"content-type": "application/json"}), content=body)


def outcome(body: bytes, status: int = 200) -> str:
    """What a page comes to, as text: the page (every field's repr) or the error's type and text."""
    try:
        total, rows = decode_job_page(answer(body, status))
    except ApiError as exc:
        return f"{type(exc).__name__}: {exc}"
    return repr((total, [None if r is None else msgspec.structs.astuple(r) for r in rows]))


def test_an_ordinary_page_is_read_into_its_rows() -> None:
    body = json.dumps(fixture("seed_jobs.json"), ensure_ascii=False).encode()
    total, rows = decode_job_page(answer(body))
    assert total == 2 and [r.jobId if r else None for r in rows] == ["27", "23"]
    assert msgspec.structs.astuple(rows[1]) == (
        "23", "1638523853", "debug", "test", "statR", 1, None, "01:02:20", "h04r3n07", "BASE", "STDIN_0910_094758"
    )  # fmt: skip


def page(*rows: str, extra: str = "") -> bytes:
    """A page whose rows are written out as JSON text (so that text json.dumps never writes can be in them)."""
    listed = ", ".join(rows)
    return f'{{"code": "0", "msg": "success", "data": {{"total": {len(rows)}, "list": [{listed}]}}{extra}}}'.encode()


ROW = '{"jobId": "7", "jobmanagerId": 1, "queue": "debug", "user": "u", "jobStatus": "statR", "procNumUsed": 4%s}'
SEVEN = ("7", 1, "debug", "u", "statR", 4, None, None, None, None, None)  # ROW % "" as a Row's fields


def read(*rows: tuple[Any, ...] | None, total: int = 1) -> str:
    return repr((total, list(rows)))


def changed(**fields: Any) -> tuple[Any, ...]:
    """SEVEN with some fields changed."""
    return tuple(fields.get(name, value) for name, value in zip(FIELDS, SEVEN))


def nested(depth: int) -> Any:
    value: list[Any] = []
    for _ in range(depth - 1):
        value = [value]
    return value


NOT_JSON = "ApiInvalidResponse: body is not JSON"
# Each odd page, and what it comes to (checked by hand): the rows read, or the start of the error.
ODD: dict[str, tuple[bytes, str]] = {
    "NaN in a read field": (
        page(ROW.replace('"procNumUsed": 4', '"procNumUsed": NaN') % ""),
        read(changed(procNumUsed=math.nan)),
    ),
    "NaN in a skipped field": (page(ROW % ', "workDir": NaN'), read(SEVEN)),
    "NaN in jobRunTime": (page(ROW % ', "jobRunTime": NaN'), read(changed(jobRunTime=math.nan))),
    "1e400 in a read field": (
        page(ROW.replace('"procNumUsed": 4', '"procNumUsed": 1e400') % ""),
        read(changed(procNumUsed=math.inf)),
    ),
    "1e400 in a skipped field": (page(ROW % ', "x": 1e400'), read(SEVEN)),
    "a lone surrogate in a read field": (page(ROW.replace('"u"', '"\\ud800"') % ""), read(changed(user="\ud800"))),
    "a lone surrogate in a skipped field": (page(ROW % ', "workDir": "\\udfff"'), read(SEVEN)),
    "a surrogate pair": (page(ROW.replace('"u"', '"\\ud83d\\ude00"') % ""), read(changed(user="\U0001f600"))),
    "a BOM": (b"\xef\xbb\xbf" + page(ROW % ""), read(SEVEN)),
    "UTF-16": (page(ROW % "").decode().encode("utf-16"), read(SEVEN)),
    "UTF-16 big-endian without BOM": (page(ROW % "").decode().encode("utf-16-be"), read(SEVEN)),
    "invalid UTF-8 in a skipped field": (page(ROW % ', "workDir": "/home/XX"').replace(b"XX", b"\xff\xfe"), NOT_JSON),
    "invalid UTF-8 in a read field": (page(ROW.replace('"debug"', '"dXg"') % "").replace(b"X", b"\xff"), NOT_JSON),
    "valid UTF-8 in a skipped field": (page(ROW % ', "workDir": "作业 1"'), read(SEVEN)),
    "a job name": (page(ROW % ', "jobName": "作业 \\"1\\"\\n"'), read(changed(jobName='作业 "1"\n'))),
    "the usage fields as the API writes them": (
        page(ROW % ', "jobRunTime": "2-00:00:58", "nodeUsed": "h04r3n[01-04]", "appType": "fluent"'),
        read(changed(jobRunTime="2-00:00:58", nodeUsed="h04r3n[01-04]", appType="fluent")),
    ),
    "the usage fields empty and null": (
        page(ROW % ', "jobRunTime": "", "nodeUsed": null, "appType": ""'),
        read(changed(jobRunTime="", appType="")),
    ),
    "the usage fields of odd types": (
        page(ROW % ', "jobRunTime": 3600, "nodeUsed": ["n1"], "appType": {"a": 1}'),
        read(changed(jobRunTime=3600, nodeUsed=["n1"], appType={"a": 1})),
    ),
    "fullwidth digits in jobRunTime": (
        page(ROW % ', "jobRunTime": "１２:００"'),
        read(changed(jobRunTime="１２:００")),
    ),
    "a lone surrogate in nodeUsed": (
        page(ROW % ', "nodeUsed": "n\\udfff[1-2]"'),
        read(changed(nodeUsed="n\udfff[1-2]")),
    ),
    "invalid UTF-8 in appType": (page(ROW % ', "appType": "vXsp"').replace(b"X", b"\xff"), NOT_JSON),
    "1e400 in jobRunTime": (page(ROW % ', "jobRunTime": 1e400'), read(changed(jobRunTime=math.inf))),
    "an int beyond 64 bits in nodeUsed": (page(ROW % f', "nodeUsed": {2**70}'), read(changed(nodeUsed=2**70))),
    "a 5,000-digit integer in appType": (page(ROW % (', "appType": ' + "9" * 5000)), NOT_JSON),
    "deep nesting in nodeUsed": (
        page(ROW % (', "nodeUsed": ' + "[" * 600 + "]" * 600)),
        read(changed(nodeUsed=nested(600))),
    ),
    "a host list of 100,000 characters": (
        page(ROW % (', "nodeUsed": "' + "n1," * 33_333 + 'n1"')),
        read(changed(nodeUsed="n1," * 33_333 + "n1")),
    ),
    "duplicate usage fields": (
        page(ROW % ', "appType": "vasp", "jobRunTime": "1:00", "appType": "BASE"'),
        read(changed(jobRunTime="1:00", appType="BASE")),  # the last wins
    ),
    "a 5,000-digit integer in a skipped field": (page(ROW % (', "x": ' + "9" * 5000)), NOT_JSON),
    "a 5,000-digit integer in a read field": (
        page(ROW.replace('"procNumUsed": 4', '"procNumUsed": ' + "9" * 5000) % ""),
        NOT_JSON,
    ),
    "a 5,000-digit string in a skipped field": (page(ROW % (', "x": "' + "9" * 5000 + '"')), read(SEVEN)),
    "a 4,300-digit integer in a skipped field": (page(ROW % (', "x": ' + "9" * 4300)), read(SEVEN)),  # int()'s limit
    "duplicate keys in a row": (
        page(ROW % ', "queue": "gpu", "procNumUsed": 8'),
        read(changed(queue="gpu", procNumUsed=8)),
    ),
    "duplicate data": (page(ROW % "", extra=', "data": {"total": 0, "list": []}'), read(total=0)),
    "duplicate list": (page(ROW % "").replace(b'"list": [', b'"list": [], "list": ['), read(SEVEN)),
    "an int beyond 64 bits in jobId": (page(ROW.replace('"7"', str(2**70)) % ""), read(changed(jobId=2**70))),
    "an int beyond 64 bits in procNumUsed": (
        page(ROW.replace('"procNumUsed": 4', f'"procNumUsed": {2**80}') % ""),
        read(changed(procNumUsed=2**80)),
    ),
    "a negative int beyond 64 bits in jobmanagerId": (
        page(ROW.replace('"jobmanagerId": 1', f'"jobmanagerId": {-(2**70)}') % ""),
        read(changed(jobmanagerId=-(2**70))),
    ),
    "a row that is not an object": (page(ROW % "", "[1, 2]", '"x"', "null"), read(SEVEN, None, None, None, total=4)),
    "a null row": (page(ROW % "", "null"), read(SEVEN, None, total=2)),
    "list null with total 0": (b'{"code": "0", "data": {"total": 0, "list": null}}', read(total=0)),
    "list null with total 3": (
        b'{"code": "0", "data": {"total": 3, "list": null}}',
        "ApiInvalidResponse: job list 'list' is NoneType, not a list",
    ),
    "list not a list": (
        b'{"code": "0", "data": {"total": 3, "list": {"a": 1}}}',
        "ApiInvalidResponse: job list 'list' is dict, not a list",
    ),
    "list missing": (b'{"code": "0", "data": {"total": 0}}', read(total=0)),
    "total missing": (
        page(ROW % "").replace(b'"total": 1, ', b""),
        "ApiInvalidResponse: job list total is missing or not a count (None)",
    ),
    "total a digit string": (page(ROW % "").replace(b'"total": 1', b'"total": " 12 "'), read(SEVEN, total=12)),
    "total a superscript digit": (
        page(ROW % "").replace(b'"total": 1', b'"total": "\xc2\xb2"'),
        "ApiInvalidResponse: job list total is missing or not a count ('²')",
    ),
    "total negative": (
        page(ROW % "").replace(b'"total": 1', b'"total": -1'),
        "ApiInvalidResponse: job list total is missing or not a count (-1)",
    ),
    "code a number": (page(ROW % "").replace(b'"code": "0"', b'"code": 0'), read(SEVEN)),
    "code with blanks": (page(ROW % "").replace(b'"code": "0"', b'"code": " 0 "'), read(SEVEN)),
    "code true": (
        page(ROW % "").replace(b'"code": "0"', b'"code": true'),
        "ApiInvalidResponse: envelope code is not a string",
    ),
    "an error envelope": (
        b'{"msg":"auth_fail","code":"10008","data":"token is invalid"}',
        "ApiAuthError: API code 10008: auth_fail",
    ),
    "a busy envelope": (b'{"msg":"timed out","code":"10013","data":null}', "ApiCodeError: API code 10013: timed out"),
    "data null": (
        b'{"code": "0", "msg": "success", "data": null}',
        "ApiInvalidResponse: job list data is NoneType, not an object",
    ),
    "an array body": (b"[]", "ApiInvalidResponse: body is not the {code, msg, data} envelope"),
    "an HTML page": (b"<html><body>502 Bad Gateway</body></html>", NOT_JSON),
    "truncated": (page(ROW % "")[:-20], NOT_JSON),
    "trailing garbage": (page(ROW % "") + b" x", NOT_JSON),
    "trailing whitespace": (page(ROW % "") + b" \r\n\t", read(SEVEN)),
    "an empty body": (b"", NOT_JSON),
    "deep nesting in a skipped field": (page(ROW % (', "x": ' + "[" * 600 + "]" * 600)), read(SEVEN)),
    "deeper nesting than json goes": (
        page(ROW % (', "x": ' + "[" * 20000 + "]" * 20000)),
        "ApiInvalidResponse: body is JSON nested too deeply",
    ),
    "a control character in a string": (page(ROW.replace('"u"', '"u\x01"') % ""), NOT_JSON),
    "escaped NUL in a read field": (page(ROW.replace('"u"', '"u\\u0000v"') % ""), read(changed(user="u\x00v"))),
    "1, 1.0 and true as ids": (
        page(ROW % "", ROW.replace('"7"', "7") % "", ROW.replace('"7"', "7.0") % "", ROW.replace('"7"', "true") % ""),
        read(SEVEN, changed(jobId=7), changed(jobId=7.0), changed(jobId=True), total=4),
    ),
    "-0 and floats in procNumUsed": (
        page(
            ROW.replace('"procNumUsed": 4', '"procNumUsed": -0') % "",
            ROW.replace('"procNumUsed": 4', '"procNumUsed": 2.5e1') % "",
        ),
        read(changed(procNumUsed=0), changed(procNumUsed=25.0), total=2),
    ),
}


@pytest.mark.parametrize(("body", "expected"), ODD.values(), ids=ODD.keys())
def test_an_odd_page_comes_to_its_rows_or_to_one_typed_error(body: bytes, expected: str) -> None:
    assert outcome(body).startswith(expected)


def test_nesting_near_the_interpreters_limit_is_read_or_refused_as_an_invalid_response() -> None:
    # json stops at the interpreter's recursion limit (Python 3.10 and 3.11), or at the C stack limit (3.12:
    # about 1,500 levels, 3.13: 10,000): either way the page is read, or refused without a crash.
    for depth in (*range(940, 1001, 20), *range(1480, 1501, 10), *range(9980, 10001, 10)):
        result = outcome(page(ROW % (', "x": ' + "[" * depth + "]" * depth)))
        assert result == read(SEVEN) or result.startswith("ApiInvalidResponse: body is JSON nested too deeply"), depth


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (204, read(SEVEN)),  # a success: the body is read
        (301, "ApiHttpError: HTTP 301 redirect: redirects are not followed"),
        (401, "ApiAuthError: HTTP 401"),
        (403, "ApiAuthError: HTTP 403"),
        (407, "ApiHttpError: HTTP 407 from the proxy: it wants credentials"),
        (429, "ApiHttpError: HTTP 429"),
        (500, "ApiHttpError: HTTP 500"),
        (502, "ApiHttpError: HTTP 502"),
    ],
)
def test_a_status_other_than_success_is_its_own_error_whatever_the_body(status: int, expected: str) -> None:
    assert outcome(page(ROW % ""), status).startswith(expected)


# Generated pages: rows of the fields of a Row (and others) holding every kind of JSON value, written by
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
        optional={**{f: values for f in FIELDS}, "startTime": values, "workDir": values},
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


def as_read(body: bytes) -> str | None:
    """What the page should come to when it is a success: (total, each row's Row fields, None where a row is
    not an object), from the standard library's reading of the JSON; None when it is no such page."""
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):
        return None
    data = document.get("data") if isinstance(document, dict) else None
    code = document.get("code") if isinstance(document, dict) else None
    if str(code).strip() != "0" or isinstance(code, bool) or not isinstance(data, dict):
        return None
    total, listed = count(data.get("total")), data.get("list")
    if total == 0 and listed is None:
        return repr((0, []))
    if total is None or not isinstance(listed, list):
        return None
    fields = [tuple(r.get(f) for f in FIELDS) if isinstance(r, dict) else None for r in listed]
    return repr((total, fields))


@settings(max_examples=300, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
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
def test_every_generated_page_comes_to_its_rows_or_to_one_typed_error(
    data: Any, ascii_only: bool, edits: list[tuple[int, bytes, bool]], encoding: str
) -> None:
    body = json.dumps(data, ensure_ascii=ascii_only).encode(encoding, "surrogatepass")
    for at, token, replace in edits:
        at %= len(body) + 1
        body = body[:at] + token + body[at + (len(token) if replace else 0) :]
    result = outcome(body)  # an ApiError or a page, never another exception
    expected = as_read(body)
    if expected is None:
        assert result.startswith("Api"), result[:200]
    else:
        assert result == expected


def test_nan_compares_as_itself_in_these_outcomes() -> None:
    # The outcomes are compared as text, so that a NaN (which is not equal to itself) still compares.
    assert math.isnan(json.loads("NaN")) and repr(float("nan")) == "nan"


def test_a_page_read_again_is_the_same_page_though_its_run_times_have_grown() -> None:
    """What the ignored-offset check compares: the rows as the exporter reads them, but their run times, which
    grow between two reads of one page. A field it skips does not make a page another page; one it counts by
    does, the usage fields as well."""
    usage = ', "jobRunTime": "%s", "nodeUsed": "%s", "appType": "%s", "workDir": "%s"'
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
            await read_list(client, "1", 3, 1)

    with respx.mock:
        respx.get("https://h/hpc/openapi/v2/jobs").mock(side_effect=again)
        with pytest.raises(ApiInvalidResponse, match="ignores the offset"):
            asyncio.run(go())
