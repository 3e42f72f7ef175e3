"""The flow counters while the job list moves during a poll, end to end over real HTTP against the simulator.

The simulator's churn removes jobs that a poll before it has read (waiting jobs, never shown finished) and
adds new ones, at the front of the list or at its end, on every job-list request; it records both. Once the
churn stops and two quiet polls have run, the exporter's counts must equal that record: equal, not close.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections import Counter
from collections.abc import Iterator

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from exporter.config import build_config
from exporter.service import Exporter
from exporter.simulator import LINGER_SECONDS, JobTruth, Simulator
from tests.helpers import job_count

T0 = 1_700_000_000.0
SID = "1638523853"  # the simulator's default scheduler
TERMINAL = {"statC": "completed", "statD": "failed", "statDE": "cancelled"}  # what the simulator ends jobs with


class Rig:
    """A simulator of ``jobs`` jobs served in pages of at most 100 rows, and an exporter polling it (pages of 100,
    concurrency 4) on a clock of the test's."""

    def __init__(self, jobs: int = 3000, seed: int = 1) -> None:
        self.now = [T0]
        self.sim = Simulator(token="t", jobs=jobs, max_page=100, arrival_rate=0.0, seed=seed, clock=self.clock)
        self.sim.serve()
        cluster = {"name": "c", "api_url": self.sim.url, "token": "t", "cluster_ids": [int(SID)]}
        config = build_config({"page_size": 100, "concurrency": 4, "clusters": [cluster]}, environ={})
        self.exporter = Exporter(config, clock=self.clock, retry_backoff=0)
        self.poller = self.exporter.pollers[0]
        self.pages = math.ceil(jobs / 100)

    def clock(self) -> float:
        return self.now[0]

    def poll(self) -> tuple[bool, int]:
        """One poll; (whether it succeeded, the requests it made)."""
        before = self.sim.requests
        ok = asyncio.run(self.poller.poll_once())
        return ok, self.sim.requests - before

    def total(self, name: str, **labels: str) -> float:
        """The sum of the samples of ``name`` that carry ``labels``."""
        text = generate_latest(self.exporter.registry).decode()
        return sum(
            s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
        )

    def close(self) -> None:
        asyncio.run(self.exporter.aclose())
        self.sim.stop()


@pytest.fixture
def rig() -> Iterator[Rig]:
    r = Rig()
    yield r
    r.close()


@pytest.mark.parametrize("front", [False, True], ids=["new jobs at the end", "new jobs at the front"])
@pytest.mark.parametrize("rate", [0.1, 1.0, 5.0], ids=["1 event per 10 requests", "1 per request", "5 per request"])
def test_arrivals_and_departures_during_polls_are_counted_exactly_once(rig: Rig, rate: float, front: bool) -> None:
    assert rig.poll()[0]  # the first poll seeds the exporter's memory: every job churn removes is known to it
    rig.sim.churn_per_request, rig.sim.churn_front = rate, front
    for _ in range(5):
        ok, requests = rig.poll()
        assert ok
        assert requests <= rig.pages * 5 // 4  # at most a quarter more requests than the list has pages
        # Never an invented event, at any poll.
        assert rig.total("sugon_jobs_ended_total", status="gone") <= len(rig.sim.departed)
        assert rig.total("sugon_jobs_submitted_total") <= len(rig.sim.arrived)
    rig.sim.churn_per_request = 0
    for _ in range(2):
        assert rig.poll()[0]
    departed, arrived = len(rig.sim.departed), len(rig.sim.arrived)
    assert departed == arrived >= 5 * rig.pages * rate  # the churn really happened
    assert rig.total("sugon_jobs_ended_total", status="gone") == departed
    assert rig.total("sugon_jobs_ended_total") == departed  # the clock stood still: no job ended otherwise
    assert rig.total("sugon_jobs_submitted_total") == arrived
    assert rig.total("sugon_departures_confirmed_total") == departed
    waiting = sum(1 for t in rig.sim.truth() if t.status in ("statQ", "statH"))
    assert rig.total("sugon_jobs", status="queued") + rig.total("sugon_jobs", status="held") == waiting


def test_a_list_moving_faster_than_its_gaps_can_be_read_again_is_logged_when_it_starts_and_when_it_ends(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="exporter")
    assert rig.poll()[0]
    rig.sim.churn_per_request, rig.sim.churn_front = 5.0, True
    # Whether a poll's re-reads catch up depends on how its requests in flight interleave with the moves: it
    # usually takes one poll, and on a loaded machine a few more.
    for polls in range(1, 13):
        assert rig.poll()[0]
        if polls >= 4 and any("moved faster than its pages" in r.getMessage() for r in caplog.records):
            break
    rig.sim.churn_per_request = 0
    assert rig.poll()[0]
    # A line when the pages cannot all be linked, one when they can again: never the same line twice running.
    changes = [
        "gaps" if "moved faster than its pages" in m else "linked"
        for m in (r.getMessage() for r in caplog.records)
        if "moved faster than its pages" in m or "is linked again" in m
    ]
    assert changes and changes == ["gaps", "linked"] * (len(changes) // 2)


def test_a_quiet_poll_costs_a_handful_of_requests_beyond_its_pages(rig: Rig) -> None:
    for _ in range(3):
        ok, requests = rig.poll()
        assert ok and rig.pages <= requests <= rig.pages + 2  # pages overlapping by one row: 30 → 31 requests
    assert rig.total("sugon_rows_recovered_total") == 0
    assert rig.total("sugon_departures_confirmed_total") == 0


def first_terminal(history: dict[str, str], truth: list[JobTruth]) -> None:
    for t in truth:
        if t.status in TERMINAL:
            history.setdefault(t.job_id, TERMINAL[t.status])


def test_a_job_that_finishes_lingers_and_leaves_ends_once_in_its_status_and_never_as_gone() -> None:
    rig = Rig(jobs=600)
    try:
        sim = rig.sim
        assert rig.poll()[0]
        job = next(t for t in sim.truth() if t.status == "statR")
        sim.population.set_runtime(job.scheduler_id, int(job.job_id), 0)  # it ends at the next step
        sim.churn_per_request = 1.0  # and the list moves under every poll
        ended: dict[str, str] = {}  # job → the first terminal status a poll could see
        seen_leaving = False
        for _ in range((15 + LINGER_SECONDS) // 5 + 4):  # exiting 15 s, 5 minutes completed, then out of the list
            rig.now[0] += 5
            sim.step(rig.now[0])
            first_terminal(ended, sim.truth())
            assert rig.poll()[0]
            seen_leaving = seen_leaving or job.job_id not in {t.job_id for t in sim.truth()}
        assert job.job_id in ended and seen_leaving
        sim.churn_per_request = 0
        assert rig.poll()[0]
        by_status = Counter(ended.values())
        for status in ("completed", "failed", "cancelled"):
            assert rig.total("sugon_jobs_ended_total", status=status) == by_status[status], status
        # The only jobs gone are churn's departures (waiting jobs, never shown finished).
        assert rig.total("sugon_jobs_ended_total", status="gone") == len(sim.departed)
    finally:
        rig.close()


def test_a_server_that_ignores_strjobid_leaves_missed_jobs_to_later_polls_and_counts_no_wrong_event(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    rig.sim.ignore_job_id_filter = True  # a lookup answers the whole list
    assert rig.poll()[0]
    for rate in (0.1, 0.1, 0.1, 5.0, 5.0, 5.0):  # the slow churn leaves requests to spare for lookups
        rig.sim.churn_per_request = rate
        assert rig.poll()[0]
        assert rig.total("sugon_jobs_ended_total", status="gone") <= len(rig.sim.departed)
        assert rig.total("sugon_jobs_submitted_total") <= len(rig.sim.arrived)
    assert "ignores strJobId" in caplog.text
    rig.sim.churn_per_request = 0
    for _ in range(2):
        assert rig.poll()[0]
    assert rig.total("sugon_jobs_ended_total", status="gone") == len(rig.sim.departed)
    assert rig.total("sugon_jobs_submitted_total") == len(rig.sim.arrived)


@pytest.mark.parametrize("page", range(0, 31, 6))
@pytest.mark.parametrize("seeded", [False, True], ids=["first poll", "later poll"])
def test_one_page_of_a_listing_that_repeats_jobs_gives_exact_counts_or_a_failed_poll(
    rig: Rig, page: int, seeded: bool
) -> None:
    """The duplicates quirk: one answer comes from a listing with every tenth job twice (its total counts
    them), so that its rows repeat those of the page before and the rows at its end are not on it."""
    if seeded:
        assert rig.poll()[0]
    rig.sim.faults.inject("duplicates", after=page)
    ok, _ = rig.poll()
    assert rig.sim.faults.injected["duplicates"] == 1
    if ok:
        assert rig.total("sugon_jobs") == 3000
        assert job_count(rig.exporter.exposition.get("c")) == 3000
    else:
        assert rig.exporter.exposition.get("c").up is False
    assert rig.total("sugon_jobs_ended_total") == 0 and rig.total("sugon_jobs_submitted_total") == 0


def test_cpu_seconds_equal_what_the_jobs_ran_through_churn_skips_and_an_outage() -> None:
    rig = Rig(jobs=1500, seed=3)
    try:
        sim = rig.sim
        seen: dict[tuple[str, str], int] = {}  # job → its run seconds at the last successful poll
        cpu_seconds = 0

        def good_poll() -> None:
            nonlocal cpu_seconds
            truth = {(t.scheduler_id, t.job_id): t for t in sim.truth()}  # churn during the poll moves no run time
            assert rig.poll()[0]
            for key, t in truth.items():
                if t.run_seconds is not None and seen:
                    cpu_seconds += t.cpus * max(t.run_seconds - seen.get(key, 0), 0)
            seen.clear()
            seen.update({k: t.run_seconds or 0 for k, t in truth.items()})
            seen.setdefault(("", ""), 0)  # seeded

        good_poll()
        sim.churn_per_request = 5.0
        for minute in range(8):
            rig.now[0] += 60
            sim.step(rig.now[0])
            if minute in (3, 4):  # an outage: the polls fail, the jobs run on
                sim.faults.inject("http_502", times=10)
                assert not rig.poll()[0]
                sim.faults.clear()
                continue
            good_poll()
        sim.churn_per_request = 0
        for _ in range(2):
            rig.now[0] += 60
            sim.step(rig.now[0])
            good_poll()
        assert cpu_seconds > 0
        assert rig.total("sugon_job_cpu_seconds_total") == cpu_seconds
        assert rig.total("sugon_rows_recovered_total") > 0  # skipped rows were read again, not counted afresh
    finally:
        rig.close()
