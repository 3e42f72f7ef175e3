"""Per-job series end to end over real HTTP on 127.0.0.1: the exporter polls the simulator, and /metrics has one
series set per listed job, equal to the simulator's list job by job (and so is the status page's list); a job
that ends shows its terminal status while it lingers in the list, then its series go; an outage keeps the last
good poll's series until max_staleness, and a restart with a state file serves them as it serves sugon_jobs."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from exporter.config import build_config
from exporter.endpoints import make_app
from exporter.service import Exporter
from exporter.simulator import Scheduler, Simulator
from exporter.web import WebServer
from tests.helpers import promtool_check_metrics
from tests.test_integration import STATUS, Clock, scrape
from tests.test_restart import T0
from tests.test_restart import exporter as exporter_with_state_file
from tests.test_restart import scrape as scrape_samples

PER_JOB = ("info", "status", "cpus", "nodes", "run_seconds", "folded")


@pytest.fixture
def sim() -> Iterator[Simulator]:
    s = Simulator(
        token="int-token",
        schedulers=[Scheduler("11", "A"), Scheduler("12", "B")],
        jobs=300,
        max_page=40,
        arrival_rate=0.01,
        seed=5,
    )
    s.serve()
    yield s
    s.stop()


def expected(sim: Simulator) -> dict[tuple[str, str], tuple[Any, ...]]:
    """Each listed job, straight from the simulator: (scheduler, job id) → (job name, user, queue, app, status,
    CPUs, nodes, run seconds)."""
    names = {(r["jobmanagerId"], r["jobId"]): r["jobName"] for r in sim.rows()}
    return {
        (t.scheduler_id, t.job_id): (
            names[(t.scheduler_id, t.job_id)],
            t.user,
            t.queue,
            t.app or "none",
            STATUS[t.status],
            float(t.cpus),
            float(len(t.nodes)),
            float(t.run_seconds or 0),
        )
        for t in sim.truth()
    }


def served(metrics: dict[str, dict[tuple[str, ...], float]]) -> dict[tuple[str, str], tuple[Any, ...]]:
    """The per-job series of one scrape, in the same shape (labels sorted by name, hpc_cluster left out)."""
    info = {(s, j): (name, user, queue, app) for (app, j, name, queue, s, user) in metrics["sugon_per_job_info"]}
    status = {(s, j): st for (j, s, st) in metrics["sugon_per_job_status"]}
    assert set(metrics["sugon_per_job_info"].values()) == set(metrics["sugon_per_job_status"].values()) == {1.0}
    assert len(status) == len(metrics["sugon_per_job_status"])
    cpus, nodes, run = (
        {(s, j): v for (j, s), v in metrics[f"sugon_per_job_{name}"].items()}
        for name in ("cpus", "nodes", "run_seconds")
    )
    assert set(info) == set(status) == set(cpus) == set(nodes) == set(run)
    return {k: (*info[k], status[k], cpus[k], nodes[k], run[k]) for k in info}


def test_per_job_series_equal_the_simulators_list_job_by_job_as_jobs_end_linger_and_go(sim: Simulator) -> None:
    clock = Clock()
    config = build_config(
        {
            "page_size": 100,
            "concurrency": 3,
            "max_staleness": "5m",
            "per_job": True,
            "clusters": [{"name": "sim", "api_url": sim.url + "/hpc/", "token": "int-token", "max_job_series": 1000}],
        },
        environ={},
    )
    exporter = Exporter(config, clock=clock, retry_backoff=0)
    server = WebServer(make_app(exporter.exposition), "127.0.0.1", 0)
    server.start()
    url = f"http://127.0.0.1:{server.port}"
    poller = exporter.pollers[0]

    def check_equal() -> dict[tuple[str, str], tuple[Any, ...]]:
        metrics = scrape(url, "sim")
        jobs = served(metrics)
        assert jobs == expected(sim)
        assert metrics["sugon_per_job_folded"] == {(): 0.0}
        (page,) = httpx.get(url + "/", headers={"Accept": "application/json"}).json()["clusters"]
        fields = ("name", "user", "queue", "status", "cpus", "nodes", "run_seconds")
        listed = {(j["scheduler"], j["job_id"]): tuple(j[f] for f in fields) for j in page["per_job"]["jobs"]}
        assert listed == {k: (*row[:3], *row[4:]) for k, row in jobs.items()}  # the status page: all but app
        assert page["per_job"]["folded"] == 0
        return jobs

    async def scenario() -> None:
        t0 = time.time()
        assert await poller.poll_once()
        first = check_equal()
        assert {"11", "12"} == {s for s, _ in first} and len(first) >= 300
        assert {row[4] for row in first.values()} >= {"running", "queued"}
        sim.step(t0 + 7200)  # two hours on: jobs whose run time is over are exiting
        assert await poller.poll_once()
        exiting = {k for k, row in check_equal().items() if row[4] == "exiting"}
        assert exiting
        sim.step(t0 + 7220)  # 15 seconds later they have ended, and linger in the list for 5 minutes
        assert await poller.poll_once()
        jobs = check_equal()
        assert {jobs[k][4] for k in exiting} <= {"completed", "failed"}
        sim.step(t0 + 7520)  # past the 5 minutes: gone from the list, and their series with them
        assert await poller.poll_once()
        assert not exiting & set(check_equal())

        before = scrape(url, "sim")
        sim.stop()
        clock.now += 60
        assert not await poller.poll_once()
        after = scrape(url, "sim")
        assert after["sugon_up"] == {(): 0.0}
        for name in PER_JOB:  # the last good poll's, neither dropped nor changed
            assert after[f"sugon_per_job_{name}"] == before[f"sugon_per_job_{name}"], name
        clock.now += 300
        gone = scrape(url, "sim")
        assert not {f"sugon_per_job_{name}" for name in PER_JOB} & set(gone)
        await exporter.aclose()

    try:
        asyncio.run(scenario())
        result = promtool_check_metrics(httpx.get(url + "/metrics").text)
        assert result.returncode == 0, result.stdout + result.stderr
    finally:
        server.stop()


def test_within_max_job_series_the_running_jobs_have_series_and_the_rest_are_folded(sim: Simulator) -> None:
    cluster = {"name": "sim", "api_url": sim.url + "/hpc/", "token": "int-token", "max_job_series": 10}
    config = build_config({"per_job": True, "clusters": [cluster]}, environ={})
    running = {(t.scheduler_id, t.job_id) for t in sim.truth() if t.status == "statR"}
    assert 10 < len(running) < len(sim.truth())
    exporter = Exporter(config, retry_backoff=0)

    async def poll() -> None:
        assert await exporter.pollers[0].poll_once()
        await exporter.aclose()

    asyncio.run(poll())
    families = {f.name: f for f in exporter.registry.collect()}
    kept = {(s.labels["scheduler"], s.labels["job_id"]) for s in families["sugon_per_job_status"].samples}
    assert len(kept) == 10 and kept <= running
    (folded,) = families["sugon_per_job_folded"].samples
    assert folded.value == len(sim.truth()) - 10


def test_a_restart_with_a_state_file_serves_the_saved_per_job_series_until_max_staleness(tmp_path: Path) -> None:
    now = [T0]
    sim = Simulator(token="t", jobs=80, clock=lambda: now[0])
    sim.serve()
    state = tmp_path / "state.json"
    try:
        before = exporter_with_state_file(sim, state, now, per_job=True)
        assert asyncio.run(before.poll_all_once())
        saved = {k: v for k, v in scrape_samples(before).items() if k[0].startswith("sugon_per_job_")}
        assert len([k for k in saved if k[0] == "sugon_per_job_status"]) == len(sim.rows())

        sim.faults.at_random(("http_503",), 1.0)  # restarted 60 s later, and every poll fails
        now[0] = T0 + 60
        after = exporter_with_state_file(sim, state, now, per_job=True)
        assert not asyncio.run(after.poll_all_once())
        served = {k: v for k, v in scrape_samples(after).items() if k[0].startswith("sugon_per_job_")}
        assert served == saved
        now[0] = T0 + 300
        assert not any(k[0].startswith("sugon_per_job_") for k in scrape_samples(after))
    finally:
        sim.stop()
