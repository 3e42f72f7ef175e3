"""The API client against respx: envelope, every error reason, retries, and paging under caps and drift."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import msgspec
import pytest
import respx
from hypothesis import given, settings
from hypothesis import strategies as st

from exporter.model import QueueCapacity, Row
from exporter.sugon.conversation import (
    ApiAuthError,
    ApiCodeError,
    ApiConnectionError,
    ApiError,
    ApiHttpError,
    ApiInvalidResponse,
    ApiTimeout,
    Conversation,
    decode_job_page,
)
from exporter.sugon.joblist import SugonClient, _mostly_repeats, _same_rows, parse_capacity, parse_schedulers
from exporter.sugon.tokens import FileToken, StaticToken
from tests.helpers import FIXTURES, SCHEDULER, PagedList, envelope, fixture, read_list, row

BASE = "https://hpc.example.com:65106"
JOBS = BASE + "/hpc/openapi/v2/jobs"


class Observer:
    """Records what the client reports for self-metrics."""

    def __init__(self) -> None:
        self.sent = 0
        self.failed: list[str] = []

    def request_sent(self) -> None:
        self.sent += 1

    def request_failed(self, reason: str) -> None:
        self.failed.append(reason)


def client(
    observer: Observer | None = None, token: str = "tok", timeout: float = 5.0
) -> tuple[SugonClient, httpx.AsyncClient]:
    http = httpx.AsyncClient()
    return SugonClient(BASE, StaticToken(token), Conversation(http, timeout, observer, retry_backoff=0)), http


def fetch(page_size: int = 500, concurrency: int = 4, observer: Observer | None = None) -> tuple[int, list[Any]]:
    """Read the default scheduler's job list; returns (reported total, every row delivered, in order)."""

    async def go() -> tuple[int, list[Any]]:
        c, http = client(observer)
        async with http:
            return await read_list(c, SCHEDULER, page_size, concurrency)

    return asyncio.run(go())


def run_async(coro: Any) -> Any:
    return asyncio.run(coro)


def ids(rows: list[Any]) -> list[str]:
    return [r.jobId for r in rows]


@respx.mock
def test_the_seed_answer_is_read_and_the_token_and_parameters_are_sent() -> None:
    route = respx.get(JOBS).mock(return_value=httpx.Response(200, json=fixture("seed_jobs.json")))
    total, rows = fetch(page_size=25)
    assert total == 2 and ids(rows) == ["27", "23"]
    request = route.calls.last.request
    assert request.headers["token"] == "tok"
    assert dict(request.url.params) == {"strClusterIDList": SCHEDULER, "start": "0", "limit": "25"}


@respx.mock
def test_a_capped_server_is_paged_by_the_rows_it_returns_not_by_the_limit_sent() -> None:
    server = PagedList([row(i) for i in range(1234)], cap=100)
    respx.get(JOBS).mock(side_effect=server)
    total, rows = fetch(page_size=500)
    assert total == 1234
    assert set(ids(rows)) == {str(i) for i in range(1234)}
    # 13 requests, stepping by the 100 rows returned less the one row neighbouring pages share
    assert sorted(s for s, _ in server.calls) == list(range(0, 1234, 99))
    assert {limit for _, limit in server.calls} == {500}


@respx.mock
def test_never_more_than_concurrency_requests_are_in_flight() -> None:
    server = PagedList([row(i) for i in range(2000)], cap=50, delay=0.005)
    respx.get(JOBS).mock(side_effect=server)
    fetch(page_size=50, concurrency=3)
    assert len(server.calls) == 41  # offsets 0, 49, ..., 1960: pages of 50 sharing a row
    assert server.max_in_flight == 3


@respx.mock
def test_a_single_page_list_needs_one_request() -> None:
    server = PagedList([row(i) for i in range(30)], cap=100)
    respx.get(JOBS).mock(side_effect=server)
    total, rows = fetch(page_size=500)
    assert (total, len(rows), server.calls) == (30, 30, [(0, 500)])


@respx.mock
def test_an_empty_list_is_one_request_and_no_rows() -> None:
    route = respx.get(JOBS).mock(return_value=httpx.Response(200, json=fixture("empty_list.json")))
    assert fetch() == (0, [])
    assert route.call_count == 1


@respx.mock
def test_a_job_inserted_at_the_front_while_paging_shows_up_twice_and_nothing_is_lost() -> None:
    server = PagedList([row(i) for i in range(300)], cap=100)

    def insert_once(start: int) -> None:
        if start == 100 and len(server.rows) == 300:
            server.rows.insert(0, row(9999))  # a new job arrives; everything shifts down one place

    server.before_answer = insert_once
    respx.get(JOBS).mock(side_effect=server)
    _, rows = fetch(page_size=100, concurrency=1)
    got = ids(rows)
    assert set(got) >= {str(i) for i in range(300)}  # no original job skipped
    assert got.count("99") == 2  # row 99 was pushed onto page 2: the caller must deduplicate


@respx.mock
def test_a_list_that_grows_during_the_poll_is_read_to_its_new_end() -> None:
    server = PagedList([row(i) for i in range(250)], cap=100)

    def grow(start: int) -> None:
        if start > 0 and len(server.rows) == 250:
            server.rows.extend(row(i) for i in range(250, 420))

    server.before_answer = grow
    respx.get(JOBS).mock(side_effect=server)
    total, rows = fetch(page_size=100, concurrency=1)
    assert total == 250  # the first page's figure is what was reported
    assert set(ids(rows)) == {str(i) for i in range(420)}


@respx.mock
def test_a_list_that_shrinks_during_the_poll_stops_at_the_first_empty_page() -> None:
    server = PagedList([row(i) for i in range(500)], cap=100)

    def shrink(start: int) -> None:
        if start > 0:
            del server.rows[150:]

    server.before_answer = shrink
    respx.get(JOBS).mock(side_effect=server)
    _, rows = fetch(page_size=100, concurrency=1)
    assert set(ids(rows)) == {str(i) for i in range(150)}
    assert [s for s, _ in server.calls] == [0, 99, 198]  # 198 came back empty: no 297, no 396


@respx.mock
def test_a_short_page_in_the_middle_is_refilled_from_where_it_stopped() -> None:
    server = PagedList([row(i) for i in range(300)], cap=100)
    original = server.__call__

    async def short_second_page(request: httpx.Request) -> httpx.Response:
        if request.url.params["start"] == "99" and server.cap == 100:
            server.cap = 60  # this one answer is cut at 60 rows
            try:
                return await original(request)
            finally:
                server.cap = 100
        return await original(request)

    respx.get(JOBS).mock(side_effect=short_second_page)
    _, rows = fetch(page_size=100, concurrency=1)
    assert set(ids(rows)) == {str(i) for i in range(300)}
    assert 158 in [s for s, _ in server.calls]  # the 60 rows from 99, less the one row pages share


@respx.mock
def test_a_server_that_ignores_the_offset_fails_the_poll_instead_of_looping() -> None:
    rows = [row(i) for i in range(100)]
    route = respx.get(JOBS).mock(
        side_effect=lambda request: httpx.Response(200, json=envelope({"total": 1000, "list": rows}))
    )
    with pytest.raises(ApiInvalidResponse, match="ignores the offset"):
        fetch(page_size=100, concurrency=2)
    assert route.call_count <= 3


@respx.mock
def test_an_ignored_offset_is_caught_even_while_the_list_changes() -> None:
    """Each answer is page 0 of a list that moved a little: never identical, always mostly the same jobs."""
    calls = [0]

    def answer(request: httpx.Request) -> httpx.Response:
        calls[0] += 1
        first = calls[0]
        rows = [row(i) for i in range(first, first + 100)]
        return httpx.Response(200, json=envelope({"total": 1000, "list": rows}))

    route = respx.get(JOBS).mock(side_effect=answer)
    with pytest.raises(ApiInvalidResponse, match="ignores the offset"):
        fetch(page_size=100, concurrency=1)
    assert route.call_count == 2


@respx.mock
def test_an_empty_first_page_with_a_positive_total_is_not_taken_for_no_jobs() -> None:
    respx.get(JOBS).mock(return_value=httpx.Response(200, json=envelope({"total": 40, "list": []})))
    with pytest.raises(ApiInvalidResponse, match="no rows although total is 40"):
        fetch()


@respx.mock
def test_a_failing_page_fails_the_whole_fetch_and_cancels_the_rest() -> None:
    server = PagedList([row(i) for i in range(1000)], cap=100, delay=0.01)

    async def fail_page_3(request: httpx.Request) -> httpx.Response:
        if request.url.params["start"] == "297":
            return httpx.Response(200, json=fixture("missing_parameter.json"))
        return await server(request)

    respx.get(JOBS).mock(side_effect=fail_page_3)
    with pytest.raises(ApiCodeError):
        fetch(page_size=100, concurrency=4)
    assert len(server.calls) < 9  # it stopped instead of reading the remaining pages


# ---- errors and retries ------------------------------------------------------------------------


def call_jobs(observer: Observer, timeout: float = 5.0) -> Any:
    async def go() -> Any:
        c, http = client(observer, timeout=timeout)
        async with http:
            return await c.call("/hpc/openapi/v2/jobs", {"strClusterIDList": SCHEDULER})

    return asyncio.run(go())


ERRORS: list[tuple[str, Any, type[ApiError], str, int]] = [
    # (case, side effect, exception, reason, attempts)
    ("read timeout", httpx.ReadTimeout("slow"), ApiTimeout, "timeout", 2),
    ("connect timeout", httpx.ConnectTimeout("slow"), ApiTimeout, "timeout", 2),
    ("connection refused", httpx.ConnectError("refused"), ApiConnectionError, "connection", 2),
    ("reset mid-body", httpx.RemoteProtocolError("peer closed connection"), ApiConnectionError, "connection", 2),
    ("HTTP 500", httpx.Response(500), ApiHttpError, "http_status", 2),
    (
        "HTTP 502 HTML page",
        httpx.Response(
            502, content=(FIXTURES / "bad_gateway.html").read_bytes(), headers={"content-type": "text/html"}
        ),
        ApiHttpError,
        "http_status",
        2,
    ),
    ("HTTP 404", httpx.Response(404), ApiHttpError, "http_status", 1),
    ("HTTP 401", httpx.Response(401), ApiAuthError, "auth", 1),
    ("HTTP 403", httpx.Response(403), ApiAuthError, "auth", 1),
    ("code 10008", httpx.Response(200, json=fixture("auth_fail.json")), ApiAuthError, "auth", 1),
    ("code 10003", httpx.Response(200, json=fixture("missing_parameter.json")), ApiCodeError, "api_code", 1),
    (
        "code 10013 (server timed out)",
        httpx.Response(200, json=fixture("server_timeout.json")),
        ApiCodeError,
        "api_code",
        2,
    ),
    (
        "HTML with 200",
        httpx.Response(
            200, content=(FIXTURES / "bad_gateway.html").read_bytes(), headers={"content-type": "text/html"}
        ),
        ApiInvalidResponse,
        "invalid_response",
        1,
    ),
    (
        "truncated JSON",
        httpx.Response(200, content=json.dumps(fixture("seed_jobs.json")).encode()[:120]),
        ApiInvalidResponse,
        "invalid_response",
        1,
    ),
    ("no envelope", httpx.Response(200, json={"total": 2, "list": []}), ApiInvalidResponse, "invalid_response", 1),
    (
        "code not a string",
        httpx.Response(200, json={"code": None, "data": {}}),
        ApiInvalidResponse,
        "invalid_response",
        1,
    ),
]


@pytest.mark.parametrize(("case", "effect", "exc", "reason", "attempts"), ERRORS, ids=[e[0] for e in ERRORS])
@respx.mock
def test_each_failure_becomes_its_typed_error_and_only_transient_ones_are_retried(
    case: str, effect: Any, exc: type[ApiError], reason: str, attempts: int
) -> None:
    route = respx.get(JOBS).mock(side_effect=effect)
    observer = Observer()
    with pytest.raises(exc) as err:
        call_jobs(observer)
    assert err.value.reason == reason
    assert route.call_count == attempts
    assert observer.sent == attempts and observer.failed == [reason] * attempts


@respx.mock
def test_one_transient_failure_then_success_is_a_success() -> None:
    route = respx.get(JOBS).mock(side_effect=[httpx.Response(503), httpx.Response(200, json=fixture("seed_jobs.json"))])
    observer = Observer()
    data = call_jobs(observer)
    assert data["total"] == 2
    assert route.call_count == 2 and observer.failed == ["http_status"]


@respx.mock
def test_a_request_that_hangs_past_the_timeout_is_a_timeout() -> None:
    async def hang(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(5)
        return httpx.Response(200, json=fixture("seed_jobs.json"))

    respx.get(JOBS).mock(side_effect=hang)
    observer = Observer()
    with pytest.raises(ApiTimeout):
        call_jobs(observer, timeout=0.05)
    assert observer.failed == ["timeout", "timeout"]


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("data_null.json", "job list data is NoneType"),
        ("list_not_list.json", "'list' is dict"),
        ("total_missing.json", "total is missing"),
    ],
)
@respx.mock
def test_a_malformed_job_page_is_an_invalid_response(name: str, reason: str) -> None:
    respx.get(JOBS).mock(return_value=httpx.Response(200, json=fixture(name)))
    with pytest.raises(ApiInvalidResponse, match=reason):
        fetch()


@respx.mock
def test_total_as_a_digit_string_and_code_as_a_number_are_accepted() -> None:
    body = {"code": 0, "msg": "success", "data": {"total": "1", "list": [row(1)]}}
    respx.get(JOBS).mock(return_value=httpx.Response(200, json=body))
    total, rows = fetch()
    assert total == 1 and ids(rows) == ["1"]


@respx.mock
def test_schedulers_are_read_from_the_cluster_answer_with_ids_as_numbers_or_strings() -> None:
    respx.get(BASE + "/hpc/openapi/v2/cluster").mock(return_value=httpx.Response(200, json=fixture("schedulers.json")))

    async def go() -> list[str]:
        c, http = client()
        async with http:
            return await c.schedulers()

    assert asyncio.run(go()) == ["1638523853", "1638523854"]


@respx.mock
def test_an_unreadable_token_file_is_an_auth_error_and_sends_nothing(tmp_path: Any) -> None:
    route = respx.get(JOBS).mock(return_value=httpx.Response(200, json=fixture("seed_jobs.json")))
    observer = Observer()

    async def go() -> Any:
        async with httpx.AsyncClient() as http:
            c = SugonClient(BASE, FileToken(str(tmp_path / "gone")), Conversation(http, 5.0, observer, retry_backoff=0))
            return await c.call("/hpc/openapi/v2/jobs", {})

    with pytest.raises(ApiAuthError, match="gone"):
        asyncio.run(go())
    assert route.call_count == 0 and observer.sent == 0 and observer.failed == []  # no request, no request error


@pytest.mark.parametrize(
    ("content", "problem"), [("", "is empty"), ("s3cr3t\nline\n", "whitespace"), ("s3cr3tö", "non-ASCII")]
)
@respx.mock
def test_a_token_file_that_cannot_be_a_header_is_an_auth_error(tmp_path: Any, content: str, problem: str) -> None:
    route = respx.get(JOBS).mock(return_value=httpx.Response(200, json=fixture("seed_jobs.json")))
    path = tmp_path / "token"
    path.write_text(content, encoding="utf-8")

    async def go() -> Any:
        async with httpx.AsyncClient() as http:
            c = SugonClient(BASE, FileToken(str(path)), Conversation(http, 5.0, retry_backoff=0))
            return await c.call("/hpc/openapi/v2/jobs", {})

    with pytest.raises(ApiAuthError, match=problem) as err:
        asyncio.run(go())
    assert route.call_count == 0 and "s3cr3t" not in str(err.value)


def test_error_messages_never_contain_the_token() -> None:
    secret = "eyJzZWNyZXQiOiJ5ZXMifQ.s3cr3t"
    with respx.mock:
        respx.get(JOBS).mock(side_effect=httpx.ConnectError("refused"))

        async def go() -> None:
            c, http = client(token=secret)
            async with http:
                await read_list(c, SCHEDULER, 10, 1)

        with pytest.raises(ApiError) as err:
            asyncio.run(go())
    assert secret not in str(err.value) and secret not in repr(err.value)


@pytest.mark.parametrize(
    ("retry_after", "waited", "attempts"),
    [("3", [3.0], 2), ("60", [], 1), (None, [0.0], 2), ("²", [0.0], 2), ("9" * 400, [], 1)],
)  # "²": a digit float() refuses; 400 digits: more seconds than a float holds
@respx.mock
def test_a_429_is_retried_after_the_delay_it_asks_for_unless_that_is_too_long(
    retry_after: str | None, waited: list[float], attempts: int
) -> None:
    headers = {"Retry-After": retry_after.encode("latin-1")} if retry_after else {}  # as the wire has it
    route = respx.get(JOBS).mock(return_value=httpx.Response(429, headers=headers))
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    async def go() -> None:
        async with httpx.AsyncClient() as http:
            caller = Conversation(http, 5.0, retry_backoff=0, sleep=sleep)
            await SugonClient(BASE, StaticToken("tok"), caller).call("/hpc/openapi/v2/jobs", {})

    with pytest.raises(ApiHttpError):
        run_async(go())
    assert slept == waited and route.call_count == attempts


@respx.mock
def test_job_ids_that_are_lists_or_objects_do_not_break_paging() -> None:
    rows = [{"jobId": [i]} if i % 2 else {"jobId": {"id": i}} for i in range(250)]
    respx.get(JOBS).mock(side_effect=PagedList(rows, cap=100))
    total, delivered = fetch(page_size=100, concurrency=2)
    # Delivered as they are (the tally counts them as unusable); with no id to link pages by, gaps are read again
    # within the poll's allowance.
    assert total == 250 and len(delivered) >= 250
    assert {repr(r.jobId) for r in delivered if r is not None} == {repr(r["jobId"]) for r in rows}


@settings(max_examples=300, deadline=None)
@given(size=st.integers(4, 40), shift=st.integers(-80, 80), front=st.integers(0, 30))
def test_the_ignored_offset_probe_agrees_with_counting_the_whole_page(size: int, shift: int, front: int) -> None:
    """Page 0, then a contiguous stretch of the list after ``front`` new jobs arrived at its head: the
    three-row probe answers exactly what comparing every id of the page answers."""
    old = [f"j{i}" for i in range(200)]
    new = [f"n{i}" for i in range(front)] + old
    first_ids: set[str | int] = set(old[:size])
    start = max(0, size + shift)
    page: list[Row | None] = [Row(jobId=j) for j in new[start : start + size]]
    if not page:
        return
    ids = {r.jobId for r in page if r is not None}
    expected = len(first_ids) >= 4 and len(ids) >= 4 and len(ids & first_ids) * 2 >= len(ids)
    assert _mostly_repeats(page, first_ids) == expected


def test_digits_that_int_refuses_are_invalid_answers_not_crashes() -> None:
    # "²" is a digit to str.isdigit(); int() refuses it, as it refuses more than 4,300 digits.
    for total in ("²", "9" * 5000):
        with pytest.raises(ApiInvalidResponse):
            decode_job_page(httpx.Response(200, json=envelope({"total": total, "list": []})))
    with pytest.raises(ApiInvalidResponse, match="numeric id"):
        parse_schedulers([{"id": "²"}, {"id": "١٢"}])


def test_rows_nested_deeper_than_a_comparison_can_go_are_not_the_same_rows() -> None:
    a: list[Any] = []
    b: list[Any] = []
    for _ in range(100_000):  # built here, not decoded: deeper than json would ever hand over
        a, b = [a], [b]
    assert _same_rows([Row(reason=a)], [Row(reason=b)]) is False
    assert _same_rows([Row(jobId="1")], [Row(jobId="1")]) is True


def test_two_pages_are_the_same_page_when_every_field_a_row_is_counted_by_but_its_run_time_is() -> None:
    """The ignored-offset check: each of the ten other fields, changed, makes another page; a run time that
    grew (or any other) does not, since it grows between two reads of one page."""
    row = Row("7", 1, "q", "u", "statR", 4, None, "00:01:00", "n[1-4]", "vasp", "relax")
    changes = {
        "jobId": "8",
        "jobmanagerId": 2,
        "queue": "r",
        "user": "v",
        "jobStatus": "statC",
        "procNumUsed": 8,
        "reason": "Priority",
        "nodeUsed": "n[1-5]",
        "appType": "fluent",
        "jobName": "relax-2",
    }
    assert {*changes, "jobRunTime"} == set(Row.__struct_fields__)  # a new field of Row is decided here too
    for field, value in changes.items():
        assert not _same_rows([row], [msgspec.structs.replace(row, **{field: value})]), field
    for run_time in ("00:01:07", "", None, "x"):
        assert _same_rows([row, None], [msgspec.structs.replace(row, jobRunTime=run_time), None])
    assert not _same_rows([row], [row, row]) and not _same_rows([row], [None])


def test_a_queue_size_above_a_billion_is_left_out_like_a_missing_one() -> None:
    item = {
        "queueName": "q",
        "queNcpus": 10**9,
        "queFreeNcpus": 10**9 + 1,
        "queNodes": "9" * 400,
        "queFreeNodes": 1e308,
    }
    assert parse_capacity([item])["q"] == QueueCapacity(10**9, None, None, None)


@respx.mock
def test_after_a_center_discovery_requests_go_to_the_url_it_names_with_its_gateway_credentials() -> None:
    from exporter.sugon.platform import Center

    old = respx.get(BASE + "/hpc/openapi/v2/cluster").mock(return_value=httpx.Response(200, json=envelope([])))
    moved = respx.get("https://other.example/hpc/openapi/v2/cluster").mock(
        return_value=httpx.Response(200, json=envelope([{"id": 7}]))
    )

    async def go() -> tuple[bool, bool, list[str]]:
        c, http = client()
        async with http:
            same = c.use_center(Center(hpc_url=BASE, user_name=None))
            other = c.use_center(
                Center(hpc_url="https://other.example", user_name="alice", hpc_authorization="Basic Z3c6cHc=")
            )
            return same, other, await c.schedulers()

    assert run_async(go()) == (False, True, ["7"])
    assert not old.called and moved.calls.last.request.headers["Authorization"] == "Basic Z3c6cHc="
