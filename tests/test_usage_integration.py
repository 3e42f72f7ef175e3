"""Usage accounting end to end: the simulator's clock is driven (no sleeping) while its jobs run, start and end,
the exporter polls it over real HTTP, and every usage family must equal what the simulator's truth adds up to."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from exporter.config import build_config
from exporter.service import Exporter
from exporter.simulator import JobTruth, Scheduler, Simulator

T0 = 1_700_000_000.0
CLUSTER = "sim"
# Written out by hand from the API documentation and the issue: the statuses the simulator lists, their labels,
# the ones that end a job, and the run-time histogram's bounds (1m 5m 15m 1h 4h 12h 1d 2d 7d).
STATUS = {
    "statR": "running",
    "statQ": "queued",
    "statH": "held",
    "statE": "exiting",
    "statC": "completed",
    "statD": "failed",
    "statDE": "cancelled",
}
ENDED = {"statC", "statD", "statDE"}
BOUNDS = (60.0, 300.0, 900.0, 3600.0, 14400.0, 43200.0, 86400.0, 172800.0, 604800.0, float("inf"))

Key = tuple[str, str]
Series = dict[tuple[str, ...], float]


def metrics(exporter: Exporter) -> dict[str, Series]:
    """The registry's samples of the cluster: {sample name: {label values sorted by label name: value}}."""
    out: dict[str, Series] = {}
    for family in exporter.registry.collect():
        for s in family.samples:
            if s.labels.get("hpc_cluster") == CLUSTER:
                labels = tuple(v for k, v in sorted(s.labels.items()) if k != "hpc_cluster")
                out.setdefault(s.name, {})[labels] = s.value
    return out


def nonzero(series: Series) -> Series:
    return {k: v for k, v in series.items() if v}


class Ledger:
    """What the exporter must have counted, worked out from the simulator's truth at every poll: CPU-seconds
    (procNumUsed × the growth of the run time since the previous poll, all of it for a job not listed then,
    nothing on the first poll) and the last run time of every job seen ending."""

    def __init__(self) -> None:
        self.seeded = False
        self.last: dict[Key, JobTruth] = {}
        self.ended: set[Key] = set()
        self.cpu_seconds: Counter[str] = Counter()
        self.user_cpu_seconds: Counter[tuple[str, str]] = Counter()
        self.run_times: defaultdict[str, list[int]] = defaultdict(list)
        self.new_and_run = 0  # jobs first listed after the seed poll with a run time already: counted whole

    def take(self, truth: list[JobTruth]) -> None:
        current = {(t.scheduler_id, t.job_id): t for t in truth}
        if self.seeded:
            for key, t in current.items():
                before = self.last.get(key)
                base = before.run_seconds if before is not None and before.run_seconds is not None else 0
                self.new_and_run += before is None and bool(t.run_seconds)
                if t.run_seconds is not None and t.run_seconds > base:
                    self.cpu_seconds[t.queue] += t.cpus * (t.run_seconds - base)
                    self.user_cpu_seconds[(t.queue, t.user)] += t.cpus * (t.run_seconds - base)
                if t.status in ENDED and key not in self.ended and t.run_seconds is not None:
                    self.run_times[t.queue].append(t.run_seconds)
            for key, t in self.last.items():  # left the list without being seen ending: its last run time
                if key not in current and key not in self.ended and t.run_seconds is not None:
                    self.run_times[t.queue].append(t.run_seconds)
        self.ended = {key for key, t in current.items() if t.status in ENDED}
        self.last = current
        self.seeded = True


def histogram(run_times: list[int]) -> dict[float, int]:
    """Cumulative bucket counts of some run times, by upper bound."""
    return {bound: sum(1 for r in run_times if r <= bound) for bound in BOUNDS}


def check_shape(m: dict[str, Series], truth: list[JobTruth]) -> None:
    """The gauges of one poll against the truth of the list it read."""
    nodes: Counter[tuple[str, str]] = Counter()
    apps: Counter[tuple[str, str]] = Counter()
    app_cpus: Counter[tuple[str, str]] = Counter()
    in_use: set[str] = set()
    longest: dict[str, int] = {}
    for t in truth:
        status = STATUS[t.status]
        nodes[(t.queue, status)] += len(t.nodes)
        apps[(t.app or "none", status)] += 1
        app_cpus[(t.app or "none", status)] += t.cpus
        if t.status == "statR":
            in_use.update(t.nodes)
            assert t.run_seconds is not None
            longest[t.queue] = max(longest.get(t.queue, 0), t.run_seconds)
    assert nonzero(m.get("sugon_job_nodes", {})) == {k: float(n) for k, n in nodes.items() if n}
    assert m.get("sugon_nodes_in_use") == {(): float(len(in_use))}
    assert nonzero(m.get("sugon_app_jobs", {})) == {k: float(n) for k, n in apps.items()}
    assert nonzero(m.get("sugon_app_job_cpus", {})) == {k: float(n) for k, n in app_cpus.items() if n}
    known = {q for q, _ in m["sugon_jobs"]}  # zero-filled: every queue the exporter knows
    assert m.get("sugon_running_job_max_seconds") == {(q,): float(longest.get(q, 0)) for q in known}
    assert sum(m.get("sugon_invalid_fields_total", {}).values()) == 0  # the simulator lists nothing unparsable


def check_counters(m: dict[str, Series], ledger: Ledger) -> None:
    """The counters and the run-time histogram against everything the ledger added up so far."""
    assert nonzero(m.get("sugon_job_cpu_seconds_total", {})) == {
        (q,): float(n) for q, n in ledger.cpu_seconds.items() if n
    }
    assert nonzero(m.get("sugon_user_job_cpu_seconds_total", {})) == {
        (q, u): float(n) for (q, u), n in ledger.user_cpu_seconds.items() if n
    }
    buckets: dict[tuple[str, float], float] = {
        (queue, float(le)): v for (le, queue), v in m.get("sugon_job_run_seconds_bucket", {}).items()
    }
    counts = m.get("sugon_job_run_seconds_count", {})
    sums = m.get("sugon_job_run_seconds_sum", {})
    for queue in {q for q, _ in buckets} | set(ledger.run_times):
        run_times = ledger.run_times.get(queue, [])
        assert counts.get((queue,), 0) == len(run_times), queue
        assert sums.get((queue,), 0) == sum(run_times), queue
        assert {b: buckets.get((queue, b), 0) for b in BOUNDS} == histogram(run_times), queue


def test_cpu_seconds_grow_by_the_cpus_times_the_run_time_each_job_gained_and_the_workload_shape_matches() -> None:
    now = [T0]
    sim = Simulator(
        token="t",
        jobs=400,
        max_page=50,
        arrival_rate=0.4,
        seed=9,
        clock=lambda: now[0],
        schedulers=[Scheduler("11", "A"), Scheduler("12", "B", {"gpu": 512, "a100": 256})],
    )
    sim.serve()
    config = build_config(
        {
            "page_size": 200,
            "clusters": [{"name": CLUSTER, "api_url": sim.url, "token": "t", "cluster_ids": [11, 12]}],
        },
        environ={},
    )
    exporter = Exporter(config, clock=lambda: now[0], retry_backoff=0)
    poller = exporter.pollers[0]
    ledger = Ledger()

    async def poll() -> dict[str, Series]:
        truth = sim.truth()
        assert await poller.poll_once()
        ledger.take(truth)
        m = metrics(exporter)
        check_shape(m, truth)
        check_counters(m, ledger)
        return m

    async def scenario() -> None:
        seed = await poll()
        assert sum(seed.get("sugon_job_cpu_seconds_total", {}).values()) == 0  # the first poll only seeds
        assert any(t.run_seconds is not None and t.run_seconds > 86400 for t in sim.truth())  # "1-..." is listed
        starts = sim.population.starts
        # Fifteen minutes of simulated time, the jobs moving every 5 s, a poll every 30 s: longer than a job
        # stays exiting (15 s), so that some are first seen completed, with growth since they were seen running.
        for _ in range(30):
            for _ in range(6):
                now[0] += 5
                sim.step(now[0])
            await poll()
        assert sim.population.starts - starts > 20
        assert ledger.new_and_run > 5  # jobs that arrived and started between two polls
        assert sum(len(r) for r in ledger.run_times.values()) > 20  # and ended
        assert sum(ledger.cpu_seconds.values()) > 0

        # One job started between two polls, 45 s before the second: all of its 8 × 45 CPU-seconds count.
        now[0] += 15
        sim.add_jobs(1, queue="debug", status="statR", cpus=8, user="newcomer")
        now[0] += 45
        sim.step(now[0])
        m = await poll()
        assert m["sugon_user_job_cpu_seconds_total"][("debug", "newcomer")] == 8 * 45
        await exporter.aclose()

    try:
        asyncio.run(scenario())
    finally:
        sim.stop()


def test_the_demo_shows_nodes_applications_and_run_times() -> None:
    r = subprocess.run(
        [sys.executable, "-m", "exporter", "--demo", "--once"],
        cwd=Path(__file__).parent.parent,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert r.returncode == 0, r.stderr
    samples = [s for family in text_string_to_metric_families(r.stdout) for s in family.samples]

    def total(name: str, cluster: str, **labels: str) -> float:
        wanted = {"hpc_cluster": cluster, **labels}
        return sum(s.value for s in samples if s.name == name and wanted.items() <= s.labels.items())

    for cluster in ("demo-kunshan", "demo-wuxi"):
        assert total("sugon_nodes_in_use", cluster) > 0
        assert total("sugon_job_nodes", cluster, status="running") >= total("sugon_nodes_in_use", cluster)
        assert total("sugon_running_job_max_seconds", cluster) > 0
        assert total("sugon_app_jobs", cluster, app="fluent") > 0
        assert total("sugon_app_jobs", cluster, app="none") > 0


def test_with_more_users_than_max_users_each_cpu_second_goes_to_one_series_and_midnight_names_the_top() -> None:
    """Twelve users, four names: the first come are named until the first UTC midnight, which names the four with
    the most CPU-seconds of the day before (the ledger's figures) and drops the others' series. At every poll the
    per-user series, with what the dropped ones had counted, add up to the per-queue counters; none decreases."""
    midnight = 19_676 * 86_400.0  # 2023-11-15 00:00 UTC
    now = [midnight - 1200]
    sim = Simulator(token="t", jobs=300, max_page=100, arrival_rate=0.3, seed=4, clock=lambda: now[0])
    sim.serve()
    config = build_config(
        {
            "max_users": 4,
            "clusters": [{"name": CLUSTER, "api_url": sim.url, "token": "t", "cluster_ids": [1638523853]}],
        },
        environ={},
    )
    exporter = Exporter(config, clock=lambda: now[0], retry_backoff=0)
    poller = exporter.pollers[0]
    ledger = Ledger()
    before_midnight: Counter[str] = Counter()
    last: Series = {}
    dropped = 0.0

    async def scenario() -> None:
        nonlocal last, dropped
        for _ in range(40):
            now[0] += 60
            sim.step(now[0])
            if now[0] >= midnight and not before_midnight:  # the ledger as of the last poll of the day before
                for (_, user), n in ledger.user_cpu_seconds.items():
                    before_midnight[user] += n
            truth = sim.truth()
            assert await poller.poll_once()
            ledger.take(truth)
            m = metrics(exporter)
            users = m.get("sugon_user_job_cpu_seconds_total", {})
            assert all(value >= last[key] for key, value in users.items() if key in last)
            dropped += sum(value for key, value in last.items() if key not in users)
            last = users
            assert sum(users.values()) + dropped == sum(m["sugon_job_cpu_seconds_total"].values())
            # At the poll of the choice the users who leave still have their series, and those who come have
            # theirs, at 0: twice max_users at most, for that one poll.
            choice = midnight <= now[0] < midnight + 60
            assert len({user for _, user in users} - {"other"}) <= (8 if choice else 4)
        await exporter.aclose()

    try:
        asyncio.run(scenario())
    finally:
        sim.stop()
    assert len(before_midnight) > 4 and dropped > 0  # more users than names, and midnight dropped some
    top = set(sorted(before_midnight, key=lambda u: (-before_midnight[u], u))[:4])
    assert {user for _, user in last} - {"other"} <= top
