"""Backlog metrics end to end: the simulator's clock is driven (no sleeping) through minutes of activity,
and what the exporter counted over real HTTP must match what the simulator did."""

from __future__ import annotations

import asyncio

from exporter.config import build_config
from exporter.service import Exporter
from exporter.simulator import Scheduler, Simulator
from tests.helpers import job_counts

T0 = 1_700_000_000.0


def test_started_jobs_and_wait_observations_equal_the_starts_the_simulator_made() -> None:
    now = [T0]
    sim = Simulator(
        token="t",
        jobs=300,
        max_page=50,
        arrival_rate=0.4,
        seed=9,
        clock=lambda: now[0],
        schedulers=[Scheduler("1638523853", "Cluster", {"debug": 256, "normal": 1024, "gpu": 384})],
    )
    sim.serve()
    config = build_config(
        {
            "page_size": 200,
            "queue_capacity": True,
            "username": "alice",
            "clusters": [{"name": "sim", "api_url": sim.url, "token": "t", "cluster_ids": [1638523853]}],
        },
        environ={},
    )
    exporter = Exporter(config, clock=lambda: now[0], retry_backoff=0)
    poller = exporter.pollers[0]
    value = exporter.registry.get_sample_value

    async def scenario() -> None:
        assert await poller.poll_once()  # the seed poll
        baseline = sim.population.starts
        for _ in range(60):  # ten minutes of simulated time, a poll every 10 s
            now[0] += 10
            sim.step(now[0])
            assert await poller.poll_once()
        assert await poller.capacity.poll_once()
        starts = sim.population.starts - baseline
        assert starts > 20  # the simulator really moved
        queues = {q for q, _ in job_counts(exporter.exposition.get("sim"))}
        started = sum(value("sugon_jobs_started_total", {"hpc_cluster": "sim", "queue": q}) or 0 for q in queues)
        waits = sum(value("sugon_job_wait_seconds_count", {"hpc_cluster": "sim", "queue": q}) or 0 for q in queues)
        assert started == starts
        assert waits == starts
        submitted = sum(value("sugon_jobs_submitted_total", {"hpc_cluster": "sim", "queue": q}) or 0 for q in queues)
        assert submitted > 0
        ended = [
            value("sugon_jobs_ended_total", {"hpc_cluster": "sim", "queue": q, "status": s}) or 0
            for q in queues
            for s in ("completed", "cancelled", "failed", "gone")
        ]
        assert sum(ended) > 0
        assert (
            max(value("sugon_oldest_queued_job_age_seconds", {"hpc_cluster": "sim", "queue": q}) or 0 for q in queues)
            > 60
        )
        reasons = {
            s.labels["reason"]
            for fam in exporter.registry.collect()
            if fam.name == "sugon_queued_jobs_by_reason"
            for s in fam.samples
        }
        assert {"Priority", "Resources", "ReqNodeNotAvail"} <= reasons
        assert value("sugon_queue_cpus", {"hpc_cluster": "sim", "queue": "normal"}) == 1024
        free = value("sugon_queue_free_cpus", {"hpc_cluster": "sim", "queue": "normal"})
        assert free is not None and 0 <= free < 1024
        await exporter.aclose()

    try:
        asyncio.run(scenario())
    finally:
        sim.stop()
