"""End to end over real HTTP on 127.0.0.1: the exporter polls the simulator and /metrics must equal its job list."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from exporter.config import build_config
from exporter.endpoints import make_app
from exporter.service import Exporter
from exporter.simulator import Scheduler, Simulator
from exporter.web import WebServer
from tests.helpers import promtool_check_metrics

# Written out by hand from the API documentation, independently of the status map in exporter/model.py.
STATUS = {
    "statR": "running",
    "statQ": "queued",
    "statH": "held",
    "statS": "suspended",
    "statE": "exiting",
    "statC": "completed",
    "statW": "waiting",
    "statX": "other",
    "statDE": "cancelled",
    "statD": "failed",
    "statT": "timeout",
    "statN": "node_fail",
    "statRQ": "requeued",
}


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def expected(
    sim: Simulator,
) -> tuple[Counter[tuple[str, str]], Counter[tuple[str, str]], Counter[tuple[str, str, str]]]:
    """Jobs and CPUs per (queue, status), and jobs per (queue, user, status), counted straight from the simulator."""
    jobs: Counter[tuple[str, str]] = Counter()
    cpus: Counter[tuple[str, str]] = Counter()
    users: Counter[tuple[str, str, str]] = Counter()
    for r in sim.rows():
        key = (r["queue"], STATUS[r["jobStatus"]])
        jobs[key] += 1
        cpus[key] += r["procNumUsed"]
        users[(r["queue"], r["user"], STATUS[r["jobStatus"]])] += 1
    return jobs, cpus, users


def scrape(url: str, cluster: str) -> dict[str, dict[tuple[str, ...], float]]:
    """/metrics over HTTP → {family: {label values: value}} for one cluster (label values sorted by label name)."""
    text = httpx.get(url + "/metrics").text
    out: dict[str, dict[tuple[str, ...], float]] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.labels.get("hpc_cluster") == cluster:
                labels = tuple(v for k, v in sorted(s.labels.items()) if k != "hpc_cluster")
                out.setdefault(s.name, {})[labels] = s.value
    return out


def nonzero(d: dict[tuple[str, ...], float]) -> dict[tuple[str, ...], float]:
    return {k: v for k, v in d.items() if v}


@pytest.fixture
def sim() -> Iterator[Simulator]:
    s = Simulator(
        token="int-token", schedulers=[Scheduler("11", "A"), Scheduler("12", "B")], jobs=700, max_page=40, seed=5
    )
    s.serve()
    yield s
    s.stop()


def test_metrics_equal_the_simulators_job_list_before_and_after_it_changes_and_through_an_outage(
    sim: Simulator,
) -> None:
    clock = Clock()
    config = build_config(
        {
            "page_size": 100,
            "concurrency": 3,
            "max_staleness": "5m",
            "clusters": [{"name": "sim", "api_url": sim.url + "/hpc/", "token": "int-token"}],
        },
        environ={},
    )
    exporter = Exporter(config, clock=clock, retry_backoff=0)
    server = WebServer(make_app(exporter.exposition), "127.0.0.1", 0)
    server.start()
    url = f"http://127.0.0.1:{server.port}"
    poller = exporter.pollers[0]

    def check_equal() -> None:
        jobs, cpus, users = expected(sim)
        m = scrape(url, "sim")
        assert nonzero(m["sugon_jobs"]) == {(q, s): float(n) for (q, s), n in jobs.items()}
        assert nonzero(m["sugon_job_cpus"]) == {(q, s): float(n) for (q, s), n in cpus.items() if n}
        assert m["sugon_user_jobs"] == {(q, s, u): float(n) for (q, u, s), n in users.items()}
        assert m["sugon_api_reported_jobs"] == {(): float(sum(jobs.values()))}
        assert m["sugon_up"] == {(): 1.0}

    async def scenario() -> None:
        assert await poller.poll_once()  # scheduler ids discovered, both listed, pages capped at 40
        check_equal()
        queues_before = {q for q, _ in scrape(url, "sim")["sugon_jobs"]}
        sim.step(time.time() + 1800)  # half an hour of arrivals, starts and finishes
        sim.add_jobs(30, queue="brand-new", status="statQ", cpus=4)
        assert await poller.poll_once()
        check_equal()
        assert queues_before | {"brand-new"} <= {q for q, _ in scrape(url, "sim")["sugon_jobs"]}
        before = scrape(url, "sim")
        sim.stop()
        clock.now += 60
        assert not await poller.poll_once()
        after = scrape(url, "sim")
        assert after["sugon_up"] == {(): 0.0}
        assert after["sugon_jobs"] == before["sugon_jobs"]  # kept: never a false 0
        assert after["sugon_api_errors_total"][("connection",)] == 2
        clock.now += 300
        gone = scrape(url, "sim")
        assert "sugon_jobs" not in gone and "sugon_job_cpus" not in gone and "sugon_user_jobs" not in gone
        assert gone["sugon_up"] == {(): 0.0}
        await exporter.aclose()

    try:
        asyncio.run(scenario())
        result = promtool_check_metrics(httpx.get(url + "/metrics").text)
        assert result.returncode == 0, result.stdout + result.stderr
    finally:
        server.stop()


def test_a_slow_cluster_does_not_delay_another_clusters_data_or_the_metrics_answer() -> None:
    slow = Simulator(token="t", jobs=20, latency=5.0)
    fast = Simulator(token="t", jobs=20)
    slow.serve(), fast.serve()
    config = build_config(
        {
            "timeout": "20s",
            "clusters": [
                {"name": "slow", "api_url": slow.url, "token": "t", "cluster_ids": [1638523853]},
                {"name": "fast", "api_url": fast.url, "token": "t", "cluster_ids": [1638523853]},
            ],
        },
        environ={},
    )
    exporter = Exporter(config)
    server = WebServer(make_app(exporter.exposition), "127.0.0.1", 0)
    server.start()
    exporter.start()
    try:
        deadline = time.monotonic() + 4
        while exporter.exposition.get("fast").up is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert exporter.exposition.get("fast").up is True
        assert exporter.exposition.get("slow").up is None  # its first poll is still waiting on the API
        m = scrape(f"http://127.0.0.1:{server.port}", "fast")
        assert sum(m["sugon_jobs"].values()) == 20
    finally:
        exporter.stop()
        server.stop()
        slow.stop(), fast.stop()
