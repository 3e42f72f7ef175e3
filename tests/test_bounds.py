"""What an upstream sends, bounded: the size of a poll (max_jobs), and parse failures that are reasons,
logged once per change, never tracebacks every poll."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import httpx
import pytest
import respx

from exporter.poller import CapacitySettings
from tests.helpers import PagedList, envelope, row
from tests.test_poller import BASE, JOBS, Rig

CAPACITY = BASE + "/hpc/openapi/v2/queuenames/users/alice"


def capacity_of(queues: dict[str, int]) -> httpx.Response:
    return httpx.Response(200, json=envelope([{"queueName": q, "queNcpus": n} for q, n in queues.items()]))


# ---- the size of a poll -----------------------------------------------------------------------------


@pytest.mark.parametrize("late", [False, True], ids=["first page", "later page"])
@respx.mock
def test_a_total_above_max_jobs_fails_the_poll_as_an_invalid_response(
    late: bool, caplog: pytest.LogCaptureFixture
) -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        start = int(request.url.params["start"])
        claimed = 10**12 if late is (start > 0) else 300
        return httpx.Response(200, json=envelope({"total": claimed, "list": [row(start + i) for i in range(100)]}))

    respx.get(JOBS).mock(side_effect=answer)
    rig = Rig(max_jobs=1000)
    for _ in range(3):
        assert not rig.poll()
    assert rig.value("sugon_api_errors_total", reason="invalid_response") == 3
    assert rig.value("sugon_polls_total", result="failure") == 3
    failed = [r.getMessage() for r in caplog.records if "poll failed" in r.getMessage()]
    assert len(failed) == 1 and "total 1000000000000, above max_jobs (1000)" in failed[0]


@respx.mock
def test_a_list_that_never_ends_fails_after_twice_max_jobs_rows_of_pages(caplog: pytest.LogCaptureFixture) -> None:
    """Page 0 has 100 rows, every later page 10: each short page is refilled from where it stopped, and with
    a total that moves on with every answer the list never ends. It is read no further than 2 × max_jobs
    rows' worth of pages of the first page's size."""
    calls: list[int] = []

    def answer(request: httpx.Request) -> httpx.Response:
        start = int(request.url.params["start"])
        calls.append(start)
        rows = [row(start + i) for i in range(100 if start == 0 else 10)]
        return httpx.Response(200, json=envelope({"total": min(start + 1000, 5000), "list": rows}))

    respx.get(JOBS).mock(side_effect=answer)
    rig = Rig(max_jobs=5000)  # 2 × 5,000 rows at 100 a page: 100 pages
    assert not rig.poll()
    assert 95 <= len(calls) <= 100  # the requests still in flight when it stopped may be cancelled unsent
    assert rig.value("sugon_api_errors_total", reason="invalid_response") == 1
    assert "did not end within 100 pages of 100 rows (twice max_jobs, 5000)" in caplog.text


@respx.mock
def test_a_list_that_grows_fast_during_a_poll_is_read_to_its_end_not_cut_short() -> None:
    """The request budget of before (twice the first total's pages, plus 8) stopped here, at 14 requests, and
    published a partial list; within max_jobs the list is now read to its end."""
    server = PagedList([row(i) for i in range(250)], cap=100)

    def grow(start: int) -> None:
        if start == 100 and len(server.rows) == 250:
            server.rows.extend(row(i) for i in range(250, 2000))

    server.before_answer = grow
    respx.get(JOBS).mock(side_effect=server)
    rig = Rig()
    assert rig.poll()
    snap = rig.store.get("kunshan").snapshot
    assert snap is not None and snap.job_count == 2000 and len(server.calls) == 20


# ---- failures are reasons ---------------------------------------------------------------------------


def deep(depth: int) -> bytes:
    return b'{"code":"0","msg":"","data":{"total":1,"list":[' + b"[" * depth + b"]" * depth + b"]}}"


@respx.mock
def test_json_nested_100000_deep_is_an_invalid_response_logged_once_without_a_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    respx.get(JOBS).mock(return_value=httpx.Response(200, content=deep(100_000)))
    rig = Rig()
    for _ in range(5):
        assert not rig.poll()
    assert rig.value("sugon_api_errors_total", reason="invalid_response") == 5
    assert rig.store.get("kunshan").last_error == "invalid_response"
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert [r.getMessage() for r in warnings] == [
        f"cluster kunshan: poll failed (invalid_response): body is JSON nested too deeply ({len(deep(100_000))} bytes)"
    ]
    assert not any(r.exc_info for r in caplog.records)


@pytest.mark.parametrize("depth", [900, 960, 975, 1000, 100_000])
@pytest.mark.parametrize("total", [3, 6])  # 6: a second page, the same as the first, is compared with it
@respx.mock
def test_a_row_nested_about_as_deep_as_json_allows_is_counted_or_an_invalid_response(depth: int, total: int) -> None:
    """The decoder's limit is the interpreter's recursion limit, less the frames above it: near it, a body
    is decoded or not depending on where it is decoded. Never a crash (it was reason "internal")."""
    nested = b'{"jobId":"3","jobStatus":"statR","queue":' + b"[" * depth + b"]" * depth + b"}"
    rows = b",".join([nested, httpx.Response(200, json=row(1)).content])
    body = b'{"code":"0","msg":"","data":{"total":%d,"list":[%s]}}' % (total, rows)
    respx.get(JOBS).mock(side_effect=lambda _: httpx.Response(200, content=body))
    rig = Rig(page_size=2)
    if rig.poll():
        assert total == 3 and rig.value("sugon_jobs", queue="unknown", status="running") == 1  # job 3
    else:
        assert rig.store.get("kunshan").last_error == "invalid_response"
        assert rig.value("sugon_api_errors_total", reason="invalid_response") == 1


@respx.mock
def test_an_unexpected_error_logs_its_traceback_once_then_only_at_debug(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="exporter.poller")
    respx.get(JOBS).mock(side_effect=PagedList([row(1)]))
    rig = Rig()

    async def broken(*args: Any) -> int:
        raise RuntimeError("a bug")

    rig.client.fetch_jobs = broken  # type: ignore[method-assign]
    for _ in range(4):
        assert not rig.poll()
    tracebacks = [r for r in caplog.records if r.exc_info]
    assert [r.levelno for r in tracebacks] == [logging.ERROR, logging.DEBUG, logging.DEBUG, logging.DEBUG]
    assert sum("poll failed (internal)" in r.getMessage() for r in caplog.records) == 1
    assert rig.value("sugon_polls_total", result="failure") == 4


@respx.mock
def test_an_unexpected_error_in_the_capacity_poll_logs_its_traceback_once(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="exporter.poller")
    respx.get(CAPACITY).mock(return_value=capacity_of({"a": 8}))
    rig = Rig(capacity=CapacitySettings(username="alice"))

    async def broken(*args: Any) -> dict[str, Any]:
        raise RuntimeError("a bug")

    rig.client.queue_capacity = broken  # type: ignore[method-assign]
    for _ in range(3):
        assert not asyncio.run(rig.poller.poll_capacity_once())
    assert [r.levelno for r in caplog.records if r.exc_info] == [logging.ERROR, logging.DEBUG, logging.DEBUG]
