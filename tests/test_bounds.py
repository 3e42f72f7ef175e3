"""What an upstream sends, bounded: the queue budget (max_queues), the size of a poll (max_jobs), and parse
failures that are reasons, logged once per change, never tracebacks every poll."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import httpx
import pytest
import respx
from prometheus_client import CollectorRegistry

from exporter.model import Budget
from tests.helpers import PagedList, envelope, row
from tests.test_poller import BASE, JOBS, Rig, nonzero

CAPACITY = BASE + "/hpc/openapi/v2/queuenames/users/alice"


def queue_values(registry: CollectorRegistry) -> dict[str, set[str]]:
    """Family → the queue label values it has (families with a queue label only)."""
    found: dict[str, set[str]] = {}
    for family in registry.collect():
        for sample in family.samples:
            if "queue" in sample.labels:
                found.setdefault(family.name, set()).add(sample.labels["queue"])
    return found


def total(registry: CollectorRegistry, name: str, **labels: str) -> float:
    """The sum of one family's samples that have these labels."""
    return sum(
        s.value
        for family in registry.collect()
        for s in family.samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    )


def capacity_of(queues: dict[str, int]) -> httpx.Response:
    return httpx.Response(200, json=envelope([{"queueName": q, "queNcpus": n} for q, n in queues.items()]))


# ---- the queue budget -------------------------------------------------------------------------------


@respx.mock
def test_thousands_of_queues_leave_every_family_with_at_most_max_queues_names_and_other() -> None:
    """5,000 queues of one job each and 100 of three jobs: the 100 keep their names in every family keyed by
    queue (jobs, CPUs, users, reasons, ages, counters, the wait histogram, capacity); the rest are "other"."""
    heavy = [f"heavy{i:03d}" for i in range(100)]
    light = [f"light{i:04d}" for i in range(5000)]
    rows = [row(f"h{q}{k}", "statQ", q, f"u{k}", 2) for q in heavy for k in range(3)]
    rows += [{**row(f"l{q}", "statQ", q, "u9", 1), "reason": "Resources"} for q in light]
    server = PagedList(rows, cap=1000)
    respx.get(JOBS).mock(side_effect=server)
    respx.get(CAPACITY).mock(return_value=capacity_of({q: 64 for q in heavy + light}))
    rig = Rig(page_size=1000, capacity="alice")
    assert rig.poll()
    # The next poll: every job starts, and each light queue gets one new queued job.
    server.rows = [{**r, "jobStatus": "statR"} for r in rows] + [
        {**row(f"n{q}", "statQ", q, "u9", 1), "reason": "Priority"} for q in light
    ]
    rig.clock.now += 60
    assert rig.poll()
    assert asyncio.run(rig.poller.capacity.poll_once())

    families = queue_values(rig.registry)
    assert set(families) == {
        "sugon_jobs",
        "sugon_job_cpus",
        "sugon_user_jobs",
        "sugon_user_job_cpus",
        "sugon_queued_jobs_by_reason",
        "sugon_oldest_queued_job_age_seconds",
        "sugon_jobs_submitted",
        "sugon_jobs_started",
        "sugon_jobs_ended",
        "sugon_job_wait_seconds",
        "sugon_queue_cpus",
        "sugon_job_nodes",
        "sugon_running_job_max_seconds",
        "sugon_job_cpu_seconds",
        "sugon_user_job_cpu_seconds",
        "sugon_job_run_seconds",
    }
    for name, queues in families.items():
        assert "other" in queues and queues <= {*heavy, "other"}, name
    assert (
        families["sugon_jobs"] == families["sugon_jobs_submitted"] == families["sugon_queue_cpus"] == {*heavy, "other"}
    )
    assert rig.value("sugon_queues_folded") == 5000
    assert total(rig.registry, "sugon_jobs") == 300 + 5000 + 5000  # every job is counted, by name or as other
    assert rig.value("sugon_jobs", queue="other", status="running") == 5000
    assert rig.value("sugon_job_cpus", queue="other", status="queued") == 5000
    assert rig.value("sugon_jobs", queue="heavy000", status="running") == 3
    assert rig.value("sugon_jobs_started_total", queue="other") == 5000
    assert rig.value("sugon_jobs_submitted_total", queue="other") == 5000
    assert rig.value("sugon_jobs_submitted_total", queue="heavy000") == 0
    assert rig.value("sugon_job_wait_seconds_count", queue="other") == 5000
    assert rig.value("sugon_queued_jobs_by_reason", queue="other", reason="Priority") == 5000  # the new jobs
    assert rig.value("sugon_queue_cpus", queue="other") == 64 * 5000
    assert rig.value("sugon_queue_cpus", queue="heavy042") == 64
    assert len({dict(labels)["queue"] for labels in rig.values("sugon_jobs")}) == 101  # 100 names and other


@respx.mock
def test_the_queues_with_most_jobs_keep_their_names_ties_broken_by_name() -> None:
    rows = [row(1, "statR", "a"), row(2, "statR", "a"), row(3, "statR", "a")]  # a: 3 jobs
    rows += [row(4, "statQ", "c"), row(5, "statQ", "c"), row(6, "statQ", "b"), row(7, "statQ", "b")]  # 2 each
    rows += [row(8, "statQ", "d", cpus=16)]
    respx.get(JOBS).mock(side_effect=PagedList(rows))
    rig = Rig(budget=Budget(max_queues=2))
    assert rig.poll()
    assert rig.value("sugon_jobs", queue="a", status="running") == 3
    assert rig.value("sugon_jobs", queue="b", status="queued") == 2  # b before c: by name
    assert rig.value("sugon_jobs", queue="c", status="queued") is None
    assert rig.value("sugon_jobs", queue="other", status="queued") == 3  # c and d
    assert rig.value("sugon_job_cpus", queue="other", status="queued") == 18
    assert rig.value("sugon_jobs", queue="other", status="running") == 0  # zero-filled like any known queue
    assert rig.value("sugon_user_jobs", queue="other", user="test", status="queued") == 3
    assert rig.value("sugon_queued_jobs_by_reason", queue="other", reason="none") == 3
    assert rig.value("sugon_queues_folded") == 2


@respx.mock
def test_a_queue_that_loses_its_name_loses_its_series_and_other_only_ever_grows() -> None:
    server = PagedList([row(1, "statQ", "a"), row(2, "statQ", "a"), row(3, "statQ", "b")])
    respx.get(JOBS).mock(side_effect=server)
    rig = Rig(budget=Budget(max_queues=1))
    assert rig.poll()  # a: named; b: other
    server.rows = [row(1, "statR", "a"), row(3, "statR", "b"), row(4, "statQ", "b"), row(5, "statQ", "b")]
    rig.clock.now += 60
    assert rig.poll()  # b (3 jobs) now outnumbers a (1): b is named, a is other
    assert rig.value("sugon_jobs", queue="b", status="queued") == 2
    assert rig.value("sugon_jobs", queue="other", status="running") == 1  # job 1, of a
    assert rig.value("sugon_jobs", queue="a", status="running") is None
    # Counted when they happened, under the name of that poll: job 1 started as "other" (a is folded now),
    # job 3 as b; jobs 4 and 5 were submitted to b, and b's counts start with this poll.
    assert rig.value("sugon_jobs_started_total", queue="other") == 1
    assert rig.value("sugon_jobs_started_total", queue="b") == 1
    assert rig.value("sugon_jobs_submitted_total", queue="b") == 2
    assert rig.value("sugon_jobs_submitted_total", queue="a") is None  # its series ends with its name
    before = rig.value("sugon_jobs_started_total", queue="other")
    server.rows = [row(1, "statR", "a"), row(3, "statR", "b"), row(4, "statR", "b"), row(5, "statR", "b")]
    rig.clock.now += 60
    assert rig.poll()
    assert rig.value("sugon_jobs_started_total", queue="other") == before  # never goes back
    assert rig.value("sugon_jobs_started_total", queue="b") == 3


@respx.mock
def test_queues_exclude_applies_before_the_queue_budget() -> None:
    import re

    rows = [row(i, "statQ", "test-big") for i in range(10)] + [row(20, "statQ", "a"), row(21, "statQ", "b")]
    respx.get(JOBS).mock(side_effect=PagedList(rows))
    respx.get(CAPACITY).mock(return_value=capacity_of({"test-big": 8, "a": 8, "b": 8}))
    budget = Budget(queues_exclude=(re.compile("test-.*"),), max_queues=2)
    rig = Rig(budget=budget, capacity="alice")
    assert rig.poll() and asyncio.run(rig.poller.capacity.poll_once())
    assert {q for qs in queue_values(rig.registry).values() for q in qs} == {"a", "b"}  # no "other", no test-
    assert rig.value("sugon_queues_folded") == 0


@respx.mock
def test_within_the_budget_nothing_is_renamed_and_an_idle_queue_keeps_its_capacity() -> None:
    respx.get(JOBS).mock(side_effect=PagedList([row(1, "statR", "a")]))
    respx.get(CAPACITY).mock(return_value=capacity_of({"a": 8, "idle": 16}))
    rig = Rig(budget=Budget(max_queues=2), capacity="alice")
    assert asyncio.run(rig.poller.capacity.poll_once())  # before any job poll: named while there is room
    assert rig.poll()
    assert (rig.value("sugon_queue_cpus", queue="a"), rig.value("sugon_queue_cpus", queue="idle")) == (8, 16)
    assert rig.value("sugon_queue_cpus", queue="other") is None and rig.value("sugon_queues_folded") == 0


@respx.mock
def test_capacity_is_named_as_the_job_data_is_even_when_the_job_poll_changes_the_names() -> None:
    server = PagedList([row(1, "statR", "a"), row(2, "statR", "b"), row(3, "statR", "b")])
    respx.get(JOBS).mock(side_effect=server)
    respx.get(CAPACITY).mock(return_value=capacity_of({"a": 8, "b": 16, "c": 32}))
    rig = Rig(budget=Budget(max_queues=1), capacity="alice")
    assert rig.poll() and asyncio.run(rig.poller.capacity.poll_once())
    assert rig.value("sugon_queue_cpus", queue="b") == 16 and rig.value("sugon_queue_cpus", queue="other") == 40
    server.rows = [row(1, "statR", "a"), row(4, "statR", "a")]  # a now has the most jobs: a job poll renames
    assert rig.poll()
    assert rig.value("sugon_queue_cpus", queue="a") == 8 and rig.value("sugon_queue_cpus", queue="other") == 48
    assert queue_values(rig.registry)["sugon_queue_cpus"] == {"a", "other"}


@respx.mock
def test_cpu_seconds_and_run_times_of_a_folded_queue_add_to_other_and_never_go_down() -> None:
    def job(job_id: int, queue: str, status: str, run_time: str) -> dict[str, Any]:
        return {**row(job_id, status, queue, "u", 2), "jobRunTime": run_time, "nodeUsed": "n1", "appType": "x"}

    server = PagedList([job(1, "a", "statR", "00:01:00"), job(2, "a", "statQ", ""), job(3, "b", "statR", "00:01:00")])
    respx.get(JOBS).mock(side_effect=server)
    rig = Rig(budget=Budget(max_queues=1))
    assert rig.poll()  # a (2 jobs) is named, b is other; seeds
    server.rows = [job(1, "a", "statR", "00:02:00"), job(2, "a", "statQ", ""), job(3, "b", "statR", "00:03:00")]
    rig.clock.now += 60
    assert rig.poll()
    assert nonzero(rig, "sugon_job_cpu_seconds_total", "queue") == {"a": 2 * 60, "other": 2 * 120}
    assert nonzero(rig, "sugon_user_job_cpu_seconds_total", "queue", "user") == {("a", "u"): 120, ("other", "u"): 240}
    server.rows = [job(1, "a", "statC", "00:02:30")]  # job 3 of b leaves the list: observed as other
    rig.clock.now += 60
    assert rig.poll()
    assert nonzero(rig, "sugon_job_cpu_seconds_total", "queue") == {"a": 120 + 60, "other": 240}
    assert nonzero(rig, "sugon_job_run_seconds_count", "queue") == {"a": 1, "other": 1}
    assert nonzero(rig, "sugon_job_run_seconds_sum", "queue") == {"a": 150.0, "other": 180.0}


@respx.mock
def test_nodes_in_use_stop_at_100000_and_nodes_by_queue_still_count_every_node() -> None:
    def job(job_id: int, nodes: str) -> dict[str, Any]:
        return {**row(job_id, "statR", "big", "u", 1), "jobRunTime": "01:00:00", "nodeUsed": nodes, "appType": "x"}

    respx.get(JOBS).mock(side_effect=PagedList([job(1, "a[00001-60000]"), job(2, "b[00001-60000]")]))
    rig = Rig()
    assert rig.poll()
    assert rig.value("sugon_nodes_in_use") == 100_000
    assert rig.value("sugon_job_nodes", queue="big", status="running") == 120_000


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
        if start > 0 and len(server.rows) == 250:
            server.rows.extend(row(i) for i in range(250, 2000))

    server.before_answer = grow
    respx.get(JOBS).mock(side_effect=server)
    rig = Rig()
    assert rig.poll()
    assert sum(rig.values("sugon_jobs").values()) == 2000 and len(server.calls) == 21  # 0, 99, ..., 1980


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
    assert rig.state.last_error == "invalid_response"
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
        assert rig.state.last_error == "invalid_response"
        assert rig.value("sugon_api_errors_total", reason="invalid_response") == 1


@respx.mock
def test_an_unexpected_error_logs_its_traceback_once_then_only_at_debug(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="exporter.poller")
    respx.get(JOBS).mock(side_effect=PagedList([row(1)]))
    rig = Rig()

    def broken(*args: Any) -> Any:
        raise RuntimeError("a bug")

    rig.client.job_list = broken  # type: ignore[method-assign]
    for _ in range(4):
        assert not rig.poll()
    tracebacks = [r for r in caplog.records if r.exc_info]
    assert [r.levelno for r in tracebacks] == [logging.ERROR, logging.DEBUG, logging.DEBUG, logging.DEBUG]
    assert sum("poll failed (internal)" in r.getMessage() for r in caplog.records) == 1
    assert rig.value("sugon_polls_total", result="failure") == 4


@respx.mock
def test_an_unexpected_error_in_the_capacity_poll_logs_its_traceback_once(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="exporter.capacity")
    respx.get(CAPACITY).mock(return_value=capacity_of({"a": 8}))
    rig = Rig(capacity="alice")

    async def broken(*args: Any) -> dict[str, Any]:
        raise RuntimeError("a bug")

    rig.client.queue_capacity = broken  # type: ignore[method-assign]
    for _ in range(3):
        assert not asyncio.run(rig.poller.capacity.poll_once())
    assert [r.levelno for r in caplog.records if r.exc_info] == [logging.ERROR, logging.DEBUG, logging.DEBUG]
