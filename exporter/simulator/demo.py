"""The demo: two evolving simulated clusters on 127.0.0.1 and a configuration that polls them (``--demo``)."""

from __future__ import annotations

from typing import Any

from exporter.config import Config, build_config
from exporter.simulator import Scheduler, SimPlatform, Simulator


def start_demo() -> tuple[Config, list[Simulator]]:
    """Start two evolving simulators on 127.0.0.1 and a config that polls them.

    demo-kunshan logs in with a password (10-minute tokens, renewed as they age) and discovers its HPC
    URL through /center; demo-wuxi uses a static token and discovers its scheduler ids. Both poll queue
    capacity and fold users beyond a budget of 10. Per-job series are on, for at most 100 jobs of a cluster
    (demo-kunshan lists more, so that the budget shows in sugon_per_job_folded).
    """
    east = Simulator(
        token=None,
        schedulers=[
            Scheduler("1638523853", "Cluster"),
            Scheduler("1638523854", "Cluster_gpu", {"gpu": 512, "a100": 256}),
        ],
        jobs=400,
        max_page=100,
        arrival_rate=0.4,
        seed=7,
        platform=SimPlatform(passwords={"demo": "demo-password"}, org_id="demo-org", token_lifetime=600),
    )
    west = Simulator(token="demo-token-wuxi", jobs=150, max_page=50, arrival_rate=0.15, seed=11)
    for sim in (east, west):
        sim.serve()
        sim.start_evolving(5.0)
    data: dict[str, Any] = {
        "interval": "10s",
        "timeout": "5s",
        "page_size": 500,
        "queue_capacity": True,
        "capacity_interval": "30s",
        "max_users": 10,  # of 12 simulated users, so that folding shows
        "users_exclude": ["zhou"],
        "per_job": True,
        "max_job_series": 100,
        "clusters": [
            {
                "name": "demo-kunshan",
                "cluster_ids": [1638523853, 1638523854],
                "auth": {
                    "kind": "password",
                    "url": east.url,
                    "user": "demo",
                    "password": "demo-password",
                    "org_id": "demo-org",
                },
            },
            # a static token names no account, so the capacity endpoint needs one
            {"name": "demo-wuxi", "api_url": west.url + "/hpc", "token": west.token, "username": "demo"},
        ],
    }
    return build_config(data, environ={}), [east, west]
