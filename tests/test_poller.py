"""The poll loop: all-or-nothing publishing, dedupe, odd rows, token files, zero-fill memory, scheduling."""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import AsyncGenerator
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx
from prometheus_client import CollectorRegistry, generate_latest

from exporter.groups.base import Settings
from exporter.groups.own import Own
from exporter.model import Budget, ClusterState, PollSettings
from exporter.poller import ClusterPoller
from exporter.render import Exposition
from exporter.statefile import StateFile
from exporter.sugon.conversation import Conversation
from exporter.sugon.discovery import Endpoint
from exporter.sugon.joblist import MAX_JOBS, JobListRead, SugonClient
from exporter.sugon.platform import Center
from exporter.sugon.tokens import FileToken, StaticToken, TokenProvider
from tests.helpers import SCHEDULER, PagedList, envelope, fixture, row

BASE = "https://hpc.example.com:65106"
JOBS = BASE + "/hpc/openapi/v2/jobs"


class Clock:
    """A hand-driven wall clock."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Rig:
    """One poller wired like the real thing, with its exposition and a hand clock. ``platform`` (anything with
    an async ``center(token)``) makes the HPC URL discovered; ``capacity`` the account of capacity polls."""

    def __init__(
        self,
        ids: tuple[str, ...] = (SCHEDULER,),
        tokens: TokenProvider | None = None,
        max_staleness: float = 300.0,
        per_user: bool = True,
        page_size: int = 100,
        concurrency: int = 2,
        platform: Any = None,
        budget: Budget | None = None,
        capacity: str | None = None,
        state_file: StateFile | None = None,
        max_jobs: int = MAX_JOBS,
    ) -> None:
        self.clock = Clock()
        self.mono = [0.0]
        self.exposition = Exposition(["kunshan"], self.clock)
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self.exposition)
        self.own = Own("kunshan")
        self.http = httpx.AsyncClient()
        caller = Conversation(self.http, 5.0, self.own, retry_backoff=0)
        self.client = SugonClient("" if platform else BASE, tokens or StaticToken("tok"), caller)
        self.poller = ClusterPoller(
            "kunshan",
            self.client,
            Endpoint("kunshan", self.client, ids, platform, monotonic=lambda: self.mono[0]),
            self.exposition,
            self.own,
            PollSettings(
                interval=60,
                page_size=page_size,
                concurrency=concurrency,
                max_staleness=max_staleness,
                max_jobs=max_jobs,
                capacity_interval=300 if capacity is not None else None,
                username=capacity or "",
            ),
            Settings(cluster="kunshan", budget=budget or Budget(), per_user=per_user),
            state_file=state_file,
            clock=self.clock,
            monotonic=lambda: self.mono[0],
        )

    @property
    def state(self) -> ClusterState:
        return self.exposition.get("kunshan")

    def poll(self) -> bool:
        return asyncio.run(self.poller.poll_once())

    def value(self, name: str, **labels: str) -> float | None:
        return self.registry.get_sample_value(name, {"hpc_cluster": "kunshan", **labels})

    def values(self, name: str) -> dict[tuple[tuple[str, str], ...], float]:
        """Every sample of ``name`` of the cluster: {its labels but hpc_cluster, sorted: value}."""
        return {
            tuple(sorted((k, v) for k, v in s.labels.items() if k != "hpc_cluster")): s.value
            for family in self.registry.collect()
            for s in family.samples
            if s.name == name and s.labels.get("hpc_cluster") == "kunshan"
        }


def serve(rows: list[dict[str, Any]], cap: int = 100) -> PagedList:
    server = PagedList(rows, cap=cap)
    respx.get(JOBS).mock(side_effect=server)
    return server


@respx.mock
def test_a_successful_poll_publishes_counts_and_cpu_sums() -> None:
    rows = [
        row(1, "statR", "debug", "a", 4),
        row(2, "statR", "debug", "b", 8),
        row(3, "statQ", "debug", "a", 16),
        row(4, "statQ", "gpu", "a", 2),
        row(5, "statC", "gpu", "b", 1),
    ]
    serve(rows, cap=2)
    rig = Rig()
    assert rig.poll() is True
    assert rig.value("sugon_jobs", queue="debug", status="running") == 2
    assert rig.value("sugon_job_cpus", queue="debug", status="running") == 12
    assert rig.value("sugon_jobs", queue="debug", status="queued") == 1
    assert rig.value("sugon_job_cpus", queue="debug", status="queued") == 16
    assert rig.value("sugon_jobs", queue="gpu", status="completed") == 1
    assert rig.value("sugon_jobs", queue="gpu", status="running") == 0  # zero-filled
    assert rig.value("sugon_user_job_cpus", queue="debug", user="a", status="queued") == 16
    assert rig.value("sugon_user_jobs", queue="gpu", user="a", status="running") is None  # per-user: non-zero only
    assert rig.value("sugon_up") == 1
    assert rig.value("sugon_api_reported_jobs") == 5
    assert rig.value("sugon_last_success_timestamp_seconds") == rig.clock.now
    assert rig.value("sugon_polls_total", result="success") == 1
    assert rig.value("sugon_api_requests_total") == 5  # 5 rows, 2 per page, neighbouring pages sharing one


@respx.mock
def test_a_job_seen_twice_because_the_list_moved_is_counted_once() -> None:
    server = serve([row(i, cpus=2) for i in range(300)])
    server.before_answer = lambda start: server.rows.insert(0, row(1000 + start, cpus=2)) if start == 99 else None
    rig = Rig(concurrency=1)
    assert rig.poll()
    # Pages of 100 rows share one with the next. The newcomer landed on the page already read (the next poll
    # sees it); every original job was read, rows 98 and 99 twice (pages 1 and 2) and row 299 on a fourth
    # page, since total grew to 301.
    assert [s for s, _ in server.calls] == [0, 99, 198, 297]
    assert rig.value("sugon_jobs", queue="debug", status="running") == 300
    assert rig.value("sugon_job_cpus", queue="debug", status="running") == 600


@respx.mock
def test_a_job_listed_under_two_scheduler_ids_is_counted_once() -> None:
    both = row(7, scheduler="1")

    def answer(request: httpx.Request) -> httpx.Response:
        sid = request.url.params["strClusterIDList"]
        rows = [both, row(100 + int(sid), scheduler=sid)]
        return httpx.Response(200, json=envelope({"total": 2, "list": rows}))

    respx.get(JOBS).mock(side_effect=answer)
    rig = Rig(ids=("1", "2"))
    assert rig.poll()
    assert rig.value("sugon_jobs", queue="debug", status="running") == 3  # 7, 101, 102
    assert rig.value("sugon_api_reported_jobs") == 4  # the API's own totals, summed


@respx.mock
def test_a_poll_that_fails_on_a_late_page_publishes_nothing() -> None:
    server = PagedList([row(i) for i in range(500)])

    async def fail_at_300(request: httpx.Request) -> httpx.Response:
        if request.url.params["start"] == "297":  # the fourth page: pages of 100 rows share one
            return httpx.Response(500)
        return await server(request)

    respx.get(JOBS).mock(side_effect=fail_at_300)
    rig = Rig()
    assert rig.poll() is False
    assert rig.state.jobs is None
    assert rig.value("sugon_jobs", queue="debug", status="running") is None
    assert rig.value("sugon_up") == 0
    assert rig.value("sugon_polls_total", result="failure") == 1
    assert rig.value("sugon_api_errors_total", reason="http_status") == 2  # the request and its one retry


@respx.mock
def test_after_a_failure_the_last_good_data_is_served_until_max_staleness_then_dropped(
    caplog: pytest.LogCaptureFixture,
) -> None:
    route = respx.get(JOBS).mock(
        return_value=httpx.Response(200, json=envelope({"total": 1, "list": [row(1, "statQ")]}))
    )
    rig = Rig(max_staleness=300)
    assert rig.poll()
    good = rig.state.jobs
    route.mock(side_effect=httpx.ConnectError("refused"))
    rig.clock.now += 60
    assert rig.poll() is False
    assert rig.state.jobs is good
    assert rig.value("sugon_up") == 0
    assert rig.value("sugon_jobs", queue="debug", status="queued") == 1  # kept, not a false 0
    rig.clock.now += 239
    assert rig.value("sugon_jobs", queue="debug", status="queued") == 1
    rig.clock.now += 1  # 300 s after the last success
    assert rig.value("sugon_jobs", queue="debug", status="queued") is None  # gone, not zero
    assert rig.value("sugon_job_cpus", queue="debug", status="queued") is None
    assert rig.value("sugon_up") == 0
    assert rig.value("sugon_last_success_timestamp_seconds") == good.taken_at
    with caplog.at_level(logging.WARNING):
        assert not rig.poll()
        assert not rig.poll()
    dropped = [r.getMessage() for r in caplog.records if "no longer served" in r.getMessage()]
    assert dropped == ["cluster kunshan: last good job data is older than max_staleness (300s); no longer served"]


@respx.mock
def test_each_poll_counts_only_its_own_jobs_though_the_poller_keeps_what_it_learnt_about_series() -> None:
    """The poller keeps its tally from poll to poll (series, labels, slots), never its counts: a series, user
    or reason gone from the list leaves every family, also after a poll that failed half-way."""

    def queued(job_id: int, user: str, reason: str) -> dict[str, Any]:
        return {**row(job_id, "statQ", "debug", user, 8), "reason": reason}

    first = [row(1, "statR", "debug", "a", 4), queued(2, "b", "Priority"), row(3, "statD", "gpu", "c", 2)]
    server = serve(first, cap=1)
    rig = Rig(budget=Budget(max_users=1))
    assert rig.poll()
    assert rig.value("sugon_user_jobs", queue="debug", user="a", status="running") == 1  # a: first by name
    assert rig.value("sugon_user_jobs", queue="debug", user="other", status="queued") == 1  # b, folded
    assert rig.value("sugon_users_folded") == 2
    assert rig.value("sugon_queued_jobs_by_reason", queue="debug", reason="Priority") == 1
    assert rig.value("sugon_jobs", queue="gpu", status="failed") == 1

    server.rows[:] = [row(4, "statR", "debug", "b", 1), queued(5, "b", "Resources"), row(6, "statR", "debug", "d")]
    original = server.__call__

    async def fail_at_row_3(request: httpx.Request) -> httpx.Response:
        if request.url.params["start"] == "2":
            return httpx.Response(500)
        return await original(request)

    respx.get(JOBS).mock(side_effect=fail_at_row_3)  # jobs 4 and 5 counted, then the poll fails
    assert not rig.poll()
    respx.get(JOBS).mock(side_effect=server)
    server.rows[:] = [row(4, "statR", "debug", "b", 1)]
    assert rig.poll()
    assert rig.value("sugon_jobs", queue="debug", status="running") == 1  # not 2 nor 3: nothing carried over
    assert rig.value("sugon_job_cpus", queue="debug", status="running") == 1
    assert rig.value("sugon_jobs", queue="debug", status="queued") == 0  # zero-filled
    assert rig.value("sugon_jobs", queue="gpu", status="running") == 0  # zero-filled, seen within 24 hours
    assert rig.value("sugon_jobs", queue="gpu", status="failed") is None  # not a documented status: no zero
    assert rig.value("sugon_user_jobs", queue="debug", user="b", status="running") == 1  # b alone: by name
    assert rig.value("sugon_user_jobs", queue="debug", user="a", status="running") is None
    assert rig.value("sugon_user_jobs", queue="debug", user="other", status="queued") is None
    assert rig.value("sugon_user_jobs", queue="gpu", user="other", status="failed") is None
    assert rig.value("sugon_users_folded") == 0  # a, c and d are gone: not counted as folded
    assert rig.value("sugon_queued_jobs_by_reason", queue="debug", reason="Priority") is None
    assert rig.value("sugon_queued_jobs_by_reason", queue="debug", reason="Resources") is None
    assert sum(rig.values("sugon_jobs").values()) == 1


@respx.mock
def test_odd_rows_are_skipped_and_counted_and_the_rest_is_published() -> None:
    respx.get(JOBS).mock(return_value=httpx.Response(200, json=fixture("odd_rows.json")))
    rig = Rig()
    assert rig.poll()
    assert rig.value("sugon_invalid_records_total") == 4
    assert rig.value("sugon_jobs", queue="debug", status="running") == 2  # 101 and 104
    assert rig.value("sugon_job_cpus", queue="debug", status="running") == 8
    assert rig.value("sugon_jobs", queue="unknown", status="queued") == 1
    assert rig.value("sugon_jobs", queue="debug", status="unknown") == 1


@respx.mock
def test_an_unknown_status_is_a_warning_once_then_a_debug_line_a_poll(caplog: pytest.LogCaptureFixture) -> None:
    respx.get(JOBS).mock(
        return_value=httpx.Response(200, json=envelope({"total": 2, "list": [row(1, "statZZ"), row(2, "statZZ")]}))
    )
    rig = Rig()
    with caplog.at_level(logging.DEBUG, logger="exporter.poller"):
        rig.poll()
        rig.poll()
    assert [(r.levelno, r.getMessage()) for r in caplog.records if "statZZ" in r.getMessage()] == [
        (logging.WARNING, "cluster kunshan: 2 rows with an unknown jobStatus counted as unknown, such as 'statZZ'"),
        (logging.DEBUG, "cluster kunshan: 2 rows with an unknown jobStatus counted as unknown, such as 'statZZ'"),
    ]


@respx.mock
def test_a_rejected_token_tells_the_operator_to_renew_it_once_and_recovery_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    route = respx.get(JOBS).mock(return_value=httpx.Response(200, json=fixture("auth_fail.json")))
    rig = Rig(tokens=StaticToken("s3cr3t-token-value"))
    with caplog.at_level(logging.DEBUG):
        assert not rig.poll()
        assert not rig.poll()
        route.mock(return_value=httpx.Response(200, json=fixture("seed_jobs.json")))
        assert rig.poll()
    messages = [r.getMessage() for r in caplog.records if r.name == "exporter.poller"]
    assert sum("renew the token" in m for m in messages) == 1
    assert "cluster kunshan: recovered after 2 failed poll(s)" in messages
    assert rig.value("sugon_api_errors_total", reason="auth") == 2
    assert all("s3cr3t" not in r.getMessage() for r in caplog.records)


@respx.mock
def test_a_changed_token_file_is_used_without_a_restart(tmp_path: Path) -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        if request.headers["token"] != "new-token":
            return httpx.Response(200, json=fixture("auth_fail.json"))
        return httpx.Response(200, json=fixture("seed_jobs.json"))

    respx.get(JOBS).mock(side_effect=answer)
    path = tmp_path / "token"
    path.write_text("old-token\n")
    rig = Rig(tokens=FileToken(str(path)))
    assert rig.poll() is False
    path.write_text("new-token\n")
    assert rig.poll() is True


@respx.mock
def test_a_queue_stays_zero_filled_for_24_hours_after_it_was_last_seen() -> None:
    route = respx.get(JOBS).mock(
        return_value=httpx.Response(200, json=envelope({"total": 1, "list": [row(1, queue="short")]}))
    )
    rig = Rig()
    assert rig.poll()
    route.mock(return_value=httpx.Response(200, json=envelope({"total": 1, "list": [row(2, queue="long")]})))
    rig.clock.now += 23 * 3600
    assert rig.poll()
    assert rig.value("sugon_jobs", queue="short", status="running") == 0
    assert rig.value("sugon_job_cpus", queue="short", status="running") == 0
    rig.clock.now += 2 * 3600
    assert rig.poll()
    assert {dict(labels)["queue"] for labels in rig.values("sugon_jobs")} == {"long"}


@respx.mock
def test_scheduler_ids_are_discovered_once_and_again_after_a_failure() -> None:
    cluster = respx.get(BASE + "/hpc/openapi/v2/cluster").mock(
        return_value=httpx.Response(200, json=fixture("schedulers.json"))
    )
    jobs = respx.get(JOBS).mock(return_value=httpx.Response(200, json=envelope({"total": 0, "list": []})))
    rig = Rig(ids=())
    assert rig.poll() and rig.poll()
    assert cluster.call_count == 1
    assert sorted(c.request.url.params["strClusterIDList"] for c in jobs.calls) == [
        "1638523853",
        "1638523853",
        "1638523854",
        "1638523854",
    ]
    jobs.mock(return_value=httpx.Response(503))
    assert not rig.poll()
    jobs.mock(return_value=httpx.Response(200, json=envelope({"total": 0, "list": []})))
    assert rig.poll()
    assert cluster.call_count == 2


@respx.mock
def test_a_discovered_url_is_kept_and_looked_up_again_only_after_it_stopped_answering_or_an_hour() -> None:
    other = "https://hpc2.example.com:65106"
    respx.get(JOBS).mock(return_value=httpx.Response(200, json=envelope({"total": 0, "list": []})))
    moved = respx.get(other + "/hpc/openapi/v2/jobs").mock(
        return_value=httpx.Response(200, json=envelope({"total": 0, "list": []}))
    )
    urls = [BASE, BASE, other]
    lookups = []

    class Platform:
        async def center(self, token: str) -> Center:
            lookups.append(1)
            return Center(hpc_url=urls[len(lookups) - 1], user_name=None)

    rig = Rig(platform=Platform())
    assert rig.poll() and rig.poll()
    assert len(lookups) == 1  # cached
    rig.mono[0] = 3601.0
    assert rig.poll()
    assert len(lookups) == 2  # an hour later
    respx.get(JOBS).mock(side_effect=httpx.ConnectError("refused"))
    assert not rig.poll()
    assert rig.poll()  # looked up again: the region moved
    assert len(lookups) == 3 and rig.client.base_url == other and moved.call_count == 1


def test_polls_never_overlap_and_a_long_poll_delays_the_next_one() -> None:
    """run() sleeps only for what is left of the interval; a poll longer than it is followed at once."""
    durations = iter([10.0, 75.0, 30.0])
    mono = [0.0]
    sleeps: list[float] = []
    active = [0, 0]  # in progress, most at once

    class Reader:
        read: JobListRead | None = None

        async def pages(self) -> AsyncGenerator[tuple[list[Any], bool], None]:
            active[0] += 1
            active[1] = max(active)
            mono[0] += next(durations)
            await asyncio.sleep(0)
            active[0] -= 1
            self.read = JobListRead(total=0, pages=1, least_total=0, complete=True, extra=0, distinct=0, spare=0)
            return
            yield

    class Stub:
        base_url = "https://hpc.example.com"

        def job_list(self, *args: Any) -> Reader:
            return Reader()

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        mono[0] += seconds
        if len(sleeps) == 2:
            raise asyncio.CancelledError

    stub = Stub()
    poller = ClusterPoller(
        "kunshan",
        stub,  # type: ignore[arg-type]
        Endpoint("kunshan", stub, ("1",)),  # type: ignore[arg-type]
        Exposition(["kunshan"]),
        Own("kunshan"),
        PollSettings(interval=60, page_size=10, concurrency=1, max_staleness=300),
        Settings(cluster="kunshan", per_user=False),
        monotonic=lambda: mono[0],
        sleep=sleep,
    )
    with pytest.raises(asyncio.CancelledError):
        asyncio.run(poller.run())
    # poll 1 took 10 s → sleep 50; poll 2 took 75 s → no sleep; poll 3 took 30 s → sleep 30
    assert sleeps == [50.0, 30.0]
    assert active[1] == 1


# ---- backlog: excludes, state file, capacity -------------------------------------------------------

CAPACITY = BASE + "/hpc/openapi/v2/queuenames/users/"


@respx.mock
def test_excluded_queues_are_left_out_of_every_family() -> None:
    respx.get(JOBS).mock(
        return_value=httpx.Response(
            200,
            json=envelope(
                {
                    "total": 3,
                    "list": [row(1, "statQ", "test-small"), row(2, "statR", "debug"), row(3, "statQ", "test-big")],
                }
            ),
        )
    )
    respx.get(CAPACITY + "alice").mock(
        return_value=httpx.Response(
            200, json=envelope([{"queueName": "debug", "queNcpus": 8}, {"queueName": "test-small", "queNcpus": 8}])
        )
    )
    budget = Budget(queues_exclude=(re.compile("test-.*"),))
    rig = Rig(budget=budget, capacity="alice")
    assert rig.poll() and rig.poll()
    assert asyncio.run(rig.poller.capacity.poll_once())
    text = generate_latest(rig.registry).decode()
    assert 'queue="debug"' in text and "test-" not in text
    assert rig.value("sugon_api_reported_jobs") == 3  # the API's own figure is not filtered


@respx.mock
def test_the_state_file_keeps_first_seen_times_across_a_restart(tmp_path: Path) -> None:
    route = respx.get(JOBS).mock(
        return_value=httpx.Response(200, json=envelope({"total": 1, "list": [row(1, "statQ")]}))
    )
    path = str(tmp_path / "state.json")
    first = Rig(state_file=StateFile(path))
    assert first.poll()
    saved = json.loads(Path(path).read_text())
    assert saved["version"] == 1 and list(saved["clusters"]["kunshan"]["waiting_since"].values()) == [first.clock.now]
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]  # no temporary file left behind
    # a restart 10 minutes later: the queued job's age continues
    again = Rig(state_file=StateFile(path))
    again.clock.now = first.clock.now + 600
    assert again.poll()
    assert again.value("sugon_oldest_queued_job_age_seconds", queue="debug") == 600
    route.mock(return_value=httpx.Response(200, json=envelope({"total": 1, "list": [row(1, "statR")]})))
    again.clock.now += 60
    assert again.poll()
    assert again.value("sugon_job_wait_seconds_sum", queue="debug") == 660
    # without the state file the wait would have started at the restart
    fresh = Rig()
    fresh.clock.now = first.clock.now + 600
    route.mock(return_value=httpx.Response(200, json=envelope({"total": 1, "list": [row(1, "statQ")]})))
    assert fresh.poll()
    assert fresh.value("sugon_oldest_queued_job_age_seconds", queue="debug") == 0


@pytest.mark.parametrize("content", ["{not json", '{"version": 99, "clusters": {}}', "[]", "\x00\xff"])
@respx.mock
def test_a_corrupt_state_file_warns_and_starts_fresh(
    tmp_path: Path, content: str, caplog: pytest.LogCaptureFixture
) -> None:
    respx.get(JOBS).mock(return_value=httpx.Response(200, json=envelope({"total": 1, "list": [row(1, "statQ")]})))
    path = tmp_path / "state.json"
    path.write_bytes(content.encode("latin-1"))
    with caplog.at_level(logging.WARNING):
        rig = Rig(state_file=StateFile(str(path)))
        assert rig.poll()
    assert any("state_file" in r.getMessage() and "starting fresh" in r.getMessage() for r in caplog.records)
    assert json.loads(path.read_text())["version"] == 1  # rewritten whole after the poll


def hostile(part: str) -> bytes:
    """A state file whose section of kunshan would restore job 1's wait (600 s before the test's clock), but for
    ``part`` somewhere in it."""
    good = json.dumps({"waiting_since": {f"{SCHEDULER}\x001": 1_699_999_400}})[1:-1]
    return ('{"version": 1, "clusters": {"kunshan": {' + good + ", " + part + "}}}").encode("utf-8")


SAVED_GAUGES = {  # a poll's job gauges as the state file keeps them
    "taken_at": 1_699_999_400,
    "families": [["sugon_jobs", "Jobs.", [[{"hpc_cluster": "kunshan", "queue": "debug", "status": "queued"}, 1]]]],
}
HOSTILE_STATE_FILES = {
    "nested 100,000 deep": b"[" * 100_000,
    "nested deep in a section": hostile('"queues_seen": ' + "[" * 100_000 + "]" * 100_000),
    "not UTF-8": hostile('"queues_seen": {"QUEUE": 1}').replace(b"QUEUE", b"\xff\xfe"),
    "a section that is a list": b'{"version": 1, "clusters": {"kunshan": [1, 2]}}',
    "clusters a list": b'{"version": 1, "clusters": [{"kunshan": {}}]}',
    "times a list": hostile('"queues_seen": [["debug", 1]]'),
    "a time that is text": hostile('"queues_seen": {"debug": "1699999400"}'),
    "a time that is true": hostile('"queues_seen": {"debug": true}'),
    "a time that is NaN": hostile('"queues_seen": {"debug": NaN}'),
    "a time that is Infinity": hostile('"queues_seen": {"debug": -Infinity}'),
    "a float no double holds": hostile('"queues_seen": {"debug": 1e400}'),
    "an integer no double holds": hostile('"queues_seen": {"debug": 1' + "0" * 400 + "}"),
    "an integer of 5,000 digits": hostile('"queues_seen": {"debug": 1' + "0" * 5000 + "}"),
    "a day that is not a date": hostile('"users": {"day": "2024-13-01", "named": [], "cpu_seconds": {}}'),
    "a named user that is a number": hostile('"users": {"day": "2024-05-01", "named": [1], "cpu_seconds": {}}'),
    "negative CPU-seconds of a user": hostile(
        '"users": {"day": "2024-05-01", "named": [], "cpu_seconds": {"2024-05-01": {"a": -1}}}'
    ),
    "users without their figures": hostile('"users": {"day": "2024-05-01", "named": []}'),
    "job gauges without their families": hostile('"gauges": {"taken_at": 1699999400}'),
    "a sample of three values": hostile(
        '"gauges": ' + json.dumps({**SAVED_GAUGES, "families": [["sugon_jobs", "Jobs.", [[{}, 1, 2]]]]})
    ),
    "a label value that is a number": hostile(
        '"gauges": ' + json.dumps({**SAVED_GAUGES, "families": [["sugon_jobs", "Jobs.", [[{"queue": 7}, 1]]]]})
    ),
    "negative run seconds": hostile('"run_seconds": {"k": -5}'),
    "run seconds not whole": hostile('"run_seconds": {"k": 1.5}'),
}


@pytest.mark.parametrize("content", HOSTILE_STATE_FILES.values(), ids=HOSTILE_STATE_FILES.keys())
@respx.mock
def test_a_hostile_state_file_is_ignored_whole_with_a_warning_and_the_exporter_starts_fresh(
    tmp_path: Path, content: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    respx.get(JOBS).mock(return_value=httpx.Response(200, json=envelope({"total": 1, "list": [row(1, "statQ")]})))
    path = tmp_path / "state.json"
    path.write_bytes(content)
    with caplog.at_level(logging.WARNING):
        rig = Rig(state_file=StateFile(str(path)))
        assert rig.poll()
    warnings = [r.getMessage() for r in caplog.records if "state_file" in r.getMessage()]
    assert len(warnings) == 1 and warnings[0].endswith("; starting fresh")
    # Nothing of the file is used, not even the part that was fine: job 1 waits from this poll on.
    assert rig.value("sugon_oldest_queued_job_age_seconds", queue="debug") == 0
    assert json.loads(path.read_text())["version"] == 1


def test_the_hostile_files_would_restore_the_wait_were_it_not_for_their_hostile_part(tmp_path: Path) -> None:
    """So that the test above shows the whole file ignored, not a key it failed to find."""
    path = tmp_path / "state.json"
    path.write_bytes(hostile('"queues_seen": {"debug": 1699999400}, "gauges": ' + json.dumps(SAVED_GAUGES)))
    state = StateFile(str(path))
    assert state.waiting_since("kunshan") == {f"{SCHEDULER}\x001": 1_699_999_400}
    assert state.gauges("kunshan", 300) is not None


@respx.mock
def test_an_unwritable_state_file_warns_once_and_polling_goes_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    respx.get(JOBS).mock(return_value=httpx.Response(200, json=envelope({"total": 1, "list": [row(1, "statQ")]})))
    folder = tmp_path / "gone"
    folder.mkdir()
    state = StateFile(str(folder / "state.json"))
    folder.rmdir()
    rig = Rig(state_file=state)
    with caplog.at_level(logging.WARNING):
        assert rig.poll() and rig.poll()
    assert sum("cannot be written" in r.getMessage() for r in caplog.records) == 1


@respx.mock
def test_capacity_failures_are_counted_and_never_touch_the_job_data() -> None:
    respx.get(JOBS).mock(return_value=httpx.Response(200, json=envelope({"total": 1, "list": [row(1)]})))
    cap = respx.get(CAPACITY + "alice").mock(return_value=httpx.Response(500))
    rig = Rig(capacity="alice")
    assert rig.poll()
    assert not asyncio.run(rig.poller.capacity.poll_once())
    assert rig.value("sugon_api_errors_total", reason="http_status") == 2  # the request and its retry
    assert rig.value("sugon_up") == 1 and rig.value("sugon_polls_total", result="failure") == 0
    cap.mock(
        return_value=httpx.Response(
            200,
            json=envelope(
                [{"queueName": "debug", "queNcpus": "256", "queFreeNcpus": 64, "queNodes": 4, "queFreeNodes": None}]
            ),
        )
    )
    assert asyncio.run(rig.poller.capacity.poll_once())
    assert cap.calls.last.request.url.params["strJobManagerID"] == SCHEDULER
    assert (rig.value("sugon_queue_cpus", queue="debug"), rig.value("sugon_queue_free_cpus", queue="debug")) == (
        256,
        64,
    )
    assert rig.value("sugon_queue_nodes", queue="debug") == 4
    assert rig.value("sugon_queue_free_nodes", queue="debug") is None  # not in the answer: not invented
    respx.get(JOBS).mock(side_effect=httpx.ConnectError("down"))
    assert not rig.poll()
    assert rig.value("sugon_queue_cpus", queue="debug") == 256  # a failed job poll leaves capacity alone


@pytest.mark.parametrize(
    ("configured", "center_user", "token", "expected"),
    [
        ("ops", "acct_alice", "tok", "ops"),
        ("", "acct_alice", "tok", "acct_alice"),
        (
            "",
            None,
            "eyJhbGciOiJIUzI1NiJ9.eyJjb21wdXRlVXNlciI6ImNvbXB1dGVfYWxpY2UiLCJ1c2VyIjoiYWxpY2UifQ.c2ln",
            "compute_alice",
        ),
    ],
    ids=["configured", "from /center", "from the token"],
)
@respx.mock
def test_the_capacity_account_comes_from_config_then_center_then_the_token(
    configured: str, center_user: str | None, token: str, expected: str
) -> None:
    respx.get(JOBS).mock(return_value=httpx.Response(200, json=envelope({"total": 0, "list": []})))
    cap = respx.get(url__startswith=CAPACITY).mock(return_value=httpx.Response(200, json=envelope([])))

    class Platform:
        async def center(self, token: str) -> Center:
            return Center(hpc_url=BASE, user_name=center_user)

    rig = Rig(tokens=StaticToken(token), platform=Platform(), capacity=configured)
    assert asyncio.run(rig.poller.capacity.poll_once())
    assert cap.calls.last.request.url.path.endswith("/" + expected)


# ---- usage: CPU-seconds, nodes, applications, run times ---------------------------------------------


def used(job_id: int, status: str, queue: str, user: str, cpus: int, run_time: Any, nodes: Any, app: Any) -> Any:
    return {**row(job_id, status, queue, user, cpus), "jobRunTime": run_time, "nodeUsed": nodes, "appType": app}


def nonzero(rig: Rig, name: str, *labels: str) -> dict[Any, float]:
    """The non-zero samples of ``name``: {its ``labels``' values (one value: alone, else a tuple): value}."""
    out = {}
    for key, value in rig.values(name).items():
        if value:
            values = tuple(dict(key)[label] for label in labels)
            out[values[0] if len(values) == 1 else values] = value
    return out


@respx.mock
def test_usage_goes_from_the_rows_to_the_published_snapshot() -> None:
    server = serve(
        [
            used(1, "statR", "debug", "a", 4, "00:01:40", "n[01-02]", "fluent"),
            used(2, "statQ", "gpu", "b", 2, "", "", None),
        ]
    )
    rig = Rig()
    assert rig.poll()  # seeds: no CPU-second yet
    assert nonzero(rig, "sugon_job_cpu_seconds_total", "queue") == {} and rig.value("sugon_nodes_in_use") == 2
    server.rows = [
        used(1, "statR", "debug", "a", 4, "00:02:40", "n[01-02]", "fluent"),  # +60 s on 4 CPUs
        used(2, "statR", "gpu", "b", 2, "00:00:30", "g1", None),  # started: 30 s on 2 CPUs
        used(3, "statC", "debug", "a", 1, "00:10:00", "n03", "vasp"),  # new, done after 600 s on 1 CPU
    ]
    rig.clock.now += 60
    assert rig.poll()
    assert nonzero(rig, "sugon_job_cpu_seconds_total", "queue") == {"debug": 240 + 600, "gpu": 60}
    assert nonzero(rig, "sugon_user_job_cpu_seconds_total", "queue", "user") == {("debug", "a"): 840, ("gpu", "b"): 60}
    assert rig.value("sugon_job_run_seconds_count", queue="debug") == 1
    assert rig.value("sugon_job_run_seconds_sum", queue="debug") == 600
    assert rig.value("sugon_nodes_in_use") == 3  # n01, n02, g1: n03's job is not running
    assert rig.value("sugon_job_nodes", queue="debug", status="running") == 2
    assert rig.value("sugon_job_nodes", queue="debug", status="completed") == 1
    assert rig.value("sugon_job_nodes", queue="gpu", status="running") == 1
    assert rig.value("sugon_job_nodes", queue="gpu", status="queued") == 0
    assert nonzero(rig, "sugon_app_jobs", "app", "status") == {
        ("fluent", "running"): 1,
        ("none", "running"): 1,
        ("vasp", "completed"): 1,
    }
    assert nonzero(rig, "sugon_app_job_cpus", "app", "status") == {
        ("fluent", "running"): 4,
        ("none", "running"): 2,
        ("vasp", "completed"): 1,
    }
    assert nonzero(rig, "sugon_running_job_max_seconds", "queue") == {"debug": 160.0, "gpu": 30.0}


@respx.mock
def test_without_per_user_cpu_seconds_are_counted_by_queue_only() -> None:
    server = serve([used(1, "statR", "debug", "a", 4, "00:01:40", "n1", "fluent")])
    rig = Rig(per_user=False)
    assert rig.poll()
    server.rows = [used(1, "statR", "debug", "a", 4, "00:02:40", "n1", "fluent")]
    assert rig.poll()
    assert nonzero(rig, "sugon_job_cpu_seconds_total", "queue") == {"debug": 240}
    assert rig.values("sugon_user_job_cpu_seconds_total") == {}


@respx.mock
def test_values_that_cannot_be_read_are_counted_by_field_and_their_rows_still_count() -> None:
    server = serve(
        [
            used(1, "statR", "debug", "a", 4, "forever", "n1", "x"),
            used(2, "statR", "debug", "a", 4, "00:01:00", "n[1-", "x"),
            used(3, "statR", "debug", "a", 10**8, "00:01:00", "n2", "x"),
            used(4, "statR", "debug", "a", 4, 42, ["n3"], "x"),
        ]
    )
    rig = Rig()
    assert rig.poll()
    assert rig.value("sugon_invalid_fields_total", field="jobRunTime") == 2
    assert rig.value("sugon_invalid_fields_total", field="nodeUsed") == 2
    assert rig.value("sugon_invalid_fields_total", field="procNumUsed") == 1
    assert rig.value("sugon_invalid_records_total") == 1  # the CPU count, as before
    assert rig.value("sugon_jobs", queue="debug", status="running") == 4  # every row counts
    assert rig.value("sugon_job_nodes", queue="debug", status="running") == 2  # n1 and n2
    server.rows = server.rows[1:2]
    assert rig.poll()
    assert rig.value("sugon_invalid_fields_total", field="nodeUsed") == 3
    assert rig.value("sugon_invalid_fields_total", field="jobRunTime") == 2


def test_every_field_starts_at_zero() -> None:
    rig = Rig()
    fields = ("jobRunTime", "jobStatus", "nodeUsed", "procNumUsed")
    assert [rig.value("sugon_invalid_fields_total", field=f) for f in fields] == [0, 0, 0, 0]


@respx.mock
def test_applications_beyond_max_apps_are_other() -> None:
    serve([used(i, "statR", "debug", "a", 1, "00:01:00", "n1", app) for i, app in enumerate(["v", "v", "f", "g"])])
    rig = Rig(budget=Budget(max_apps=1))
    assert rig.poll()
    assert nonzero(rig, "sugon_app_jobs", "app", "status") == {("v", "running"): 2, ("other", "running"): 2}
    assert nonzero(rig, "sugon_app_job_cpus", "app", "status") == {("v", "running"): 2, ("other", "running"): 2}


@respx.mock
def test_the_state_file_keeps_run_times_so_a_restart_loses_no_cpu_second(tmp_path: Path) -> None:
    server = serve([used(1, "statR", "debug", "a", 4, "00:01:40", "n1", "x")])
    path = str(tmp_path / "state.json")
    first = Rig(state_file=StateFile(path))
    assert first.poll()
    server.rows = [used(1, "statR", "debug", "a", 4, "00:02:40", "n1", "x")]
    first.clock.now += 60
    assert first.poll()
    assert nonzero(first, "sugon_job_cpu_seconds_total", "queue") == {"debug": 240}
    saved = json.loads(Path(path).read_text())["clusters"]["kunshan"]
    assert saved["run_seconds"] == {f"{SCHEDULER}\x001": 160}
    # Restarted 10 minutes later: job 1 ran on (600 s more on 4 CPUs); job 2 is not in the file: seeded.
    server.rows = [
        used(1, "statR", "debug", "a", 4, "00:12:40", "n1", "x"),
        used(2, "statR", "debug", "a", 8, "00:05:00", "n2", "x"),
    ]
    again = Rig(state_file=StateFile(path))
    again.clock.now = first.clock.now + 600
    assert again.poll()
    assert nonzero(again, "sugon_job_cpu_seconds_total", "queue") == {"debug": 2400}  # from 0: counters restart
    assert nonzero(again, "sugon_jobs_submitted_total", "queue") == {}  # the first poll after a restart seeds


@respx.mock
def test_a_state_file_written_before_run_times_were_kept_still_loads_and_seeds(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    key = f"{SCHEDULER}\x001"
    path.write_text(json.dumps({"version": 1, "clusters": {"kunshan": {"waiting_since": {}, "queues_seen": {}}}}))
    server = serve([used(1, "statR", "debug", "a", 4, "00:12:40", "n1", "x")])
    rig = Rig(state_file=StateFile(str(path)))
    assert rig.poll()
    assert nonzero(rig, "sugon_job_cpu_seconds_total", "queue") == {}
    server.rows = [used(1, "statR", "debug", "a", 4, "00:13:40", "n1", "x")]
    assert rig.poll()
    assert nonzero(rig, "sugon_job_cpu_seconds_total", "queue") == {"debug": 240}
    assert json.loads(path.read_text())["clusters"]["kunshan"]["run_seconds"] == {key: 820}


DAY0 = 19_676 * 86_400.0  # 2023-11-15 00:00 UTC
DAY1 = DAY0 + 86_400


def running(run_times: dict[str, str]) -> list[dict[str, Any]]:
    """One job each of a (1 CPU), b (1), c (4) and d (3) in queue debug, those with a run time given."""
    cpus = {"a": 1, "b": 1, "c": 4, "d": 3}
    return [used(i, "statR", "debug", user, cpus[user], t, "n1", "x") for i, (user, t) in enumerate(run_times.items())]


def user_cpu_seconds(rig: Rig) -> dict[str, float]:
    """The per-user CPU-second counters of queue debug, by user, as /metrics has them."""
    return {
        s.labels["user"]: s.value
        for family in rig.registry.collect()
        for s in family.samples
        if s.name == "sugon_user_job_cpu_seconds_total" and s.labels["queue"] == "debug"
    }


@respx.mock
def test_the_users_named_by_cpu_seconds_stay_named_across_a_restart_with_the_state_file_and_not_without(
    tmp_path: Path,
) -> None:
    path = str(tmp_path / "state.json")
    server = serve(running({"a": "00:00:00", "b": "00:00:00"}))
    first = Rig(state_file=StateFile(path), budget=Budget(max_users=2))
    first.clock.now = DAY0
    assert first.poll()  # a and b come first: named while there is room
    # 10 minutes on: a and b 600 each; c and d started meanwhile (5 minutes ago): c 1200, d 900, both other.
    server.rows = running({"a": "00:10:00", "b": "00:10:00", "c": "00:05:00", "d": "00:05:00"})
    first.clock.now = DAY0 + 600
    assert first.poll()
    assert user_cpu_seconds(first) == {"a": 600, "b": 600, "other": 2100}
    # The first poll of day 1 counts its minute under those names, then chooses by day 0: c 1200 and d 900.
    # Their series start at 0; a's and b's go at the next poll.
    server.rows = running({"a": "00:11:00", "b": "00:11:00", "c": "00:06:00", "d": "00:06:00"})
    first.clock.now = DAY1 + 60
    assert first.poll()
    assert user_cpu_seconds(first) == {"a": 660, "b": 660, "c": 0, "d": 0, "other": 2100 + 240 + 180}

    def restarted(state_file: StateFile | None) -> dict[str, float]:
        """A restart at DAY1 + 120, and the CPU-seconds of its second poll, a minute later."""
        server.rows = running({"a": "00:12:00", "b": "00:12:00", "c": "00:07:00", "d": "00:07:00"})
        rig = Rig(state_file=state_file, budget=Budget(max_users=2))
        rig.clock.now = DAY1 + 120
        assert rig.poll()
        server.rows = running({"a": "00:13:00", "b": "00:13:00", "c": "00:08:00", "d": "00:08:00"})
        rig.clock.now += 60
        assert rig.poll()
        seconds = user_cpu_seconds(rig)
        assert sum(seconds.values()) == rig.value("sugon_job_cpu_seconds_total", queue="debug")
        return seconds

    # With the state file the same users are named, and the restart's first poll counts the minute since the
    # file too (its run times): c 2 × 240, d 2 × 180; a and b add to other (2 × 60 each).
    assert restarted(StateFile(path)) == {"c": 480, "d": 360, "other": 240}
    # Without it the set starts empty, and a and b, listed first, are named again until the next UTC day.
    assert restarted(None) == {"a": 60, "b": 60, "other": 420}
