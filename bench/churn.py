"""Issue 24: the flow counters while the job list moves during polls, and what staying exact costs in requests.

The simulator (in this process, over real HTTP on 127.0.0.1) lists ``--jobs`` jobs in pages of at most 100
rows; the exporter polls it with pages of 100 and concurrency 4. After a quiet first poll, five polls run
with churn (each event: a waiting job the exporter has seen leaves, a new job arrives at the front of the
list or at its end), then two quiet ones. Printed per rate and order: the churn's record against what the
exporter counted, and the requests a churn poll made against the list's pages.

    python bench/churn.py [--jobs 5000]
"""

from __future__ import annotations

import argparse
import asyncio
import math
import statistics

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from exporter.config import build_config
from exporter.service import Exporter
from exporter.simulator import Simulator


def run(jobs: int, rate: float, front: bool) -> str:
    now = [1_700_000_000.0]
    sim = Simulator(token="t", jobs=jobs, max_page=100, arrival_rate=0.0, seed=1, clock=lambda: now[0])
    sim.serve()
    cluster = {"name": "c", "api_url": sim.url, "token": "t", "cluster_ids": [1638523853]}
    exporter = Exporter(
        build_config({"page_size": 100, "concurrency": 4, "clusters": [cluster]}, environ={}),
        clock=lambda: now[0],
        retry_backoff=0,
    )
    poller = exporter.pollers[0]

    def total(name: str, **labels: str) -> float:
        text = generate_latest(exporter.registry).decode()
        return sum(
            s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
        )

    async def polls() -> list[int]:
        requests = []
        for i in range(8):
            sim.churn_per_request, sim.churn_front = (rate if 1 <= i <= 5 else 0.0), front
            before = sim.requests
            assert await poller.poll_once()
            requests.append(sim.requests - before)
        await exporter.aclose()
        return requests

    try:
        requests = asyncio.run(polls())
    finally:
        sim.stop()
    pages = math.ceil(jobs / 100)
    churn = requests[1:6]
    return (
        f"| {rate:g} | {'front' if front else 'end'} | {len(sim.departed)} | {total('sugon_jobs_ended_total', status='gone'):.0f} "
        f"| {len(sim.arrived)} | {total('sugon_jobs_submitted_total'):.0f} | {total('sugon_rows_recovered_total'):.0f} "
        f"| {statistics.mean(churn) / pages:.2f} × (max {max(churn) / pages:.2f} ×) | {requests[7] - pages} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=5000)
    args = parser.parse_args()
    print(
        "| churn per request | new jobs | departures | gone counted | arrivals | submitted counted | rows recovered "
        "| requests per churn poll / pages | quiet poll: requests beyond its pages |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for rate in (0.1, 1.0, 5.0):
        for front in (False, True):
            print(run(args.jobs, rate, front), flush=True)


if __name__ == "__main__":
    main()
