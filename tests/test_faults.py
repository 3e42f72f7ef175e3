"""The fault matrix, over real HTTP against the simulator: for every way the API can fail, the daemon keeps
going, sugon_up and sugon_api_errors_total{reason} say what happened, nothing partial is published, the last
good data stays served, and the next good poll recovers everything."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator

import pytest

from exporter.config import build_config
from exporter.model import REASONS
from exporter.service import Exporter
from exporter.simulator import Simulator
from exporter.simulator.faults import CODES
from tests.helpers import job_count, job_counts

# fault → (does the poll still succeed, {reason: failed requests}); transient faults are retried once.
MATRIX: dict[str, tuple[bool, dict[str, int]]] = {
    "http_500": (False, {"http_status": 2}),
    "http_502": (False, {"http_status": 2}),
    "http_503": (False, {"http_status": 2}),
    "http_504": (False, {"http_status": 2}),
    "http_429": (False, {"http_status": 2}),
    "reset": (False, {"connection": 2}),
    "hang": (False, {"timeout": 2}),
    "truncated": (False, {"invalid_response": 1}),
    "html": (False, {"invalid_response": 1}),
    "data_null": (False, {"invalid_response": 1}),
    "list_not_list": (False, {"invalid_response": 1}),
    "total_string": (False, {"invalid_response": 1}),
    "total_missing": (False, {"invalid_response": 1}),
    **{f"code_{c}": (False, {"api_code": 1}) for c in CODES if c not in ("10008", "10012", "10013")},
    "code_10008": (False, {"auth": 1}),
    "code_10012": (False, {"api_code": 2}),
    "code_10013": (False, {"api_code": 2}),
    "ignore_offset": (False, {"invalid_response": 1}),
    "duplicates": (True, {}),
    "total_drift": (True, {}),
}


class Rig:
    def __init__(self) -> None:
        self.sim = Simulator(token="t", jobs=90, max_page=30, seed=12)  # a silent cap of 30 rows a page
        self.sim.hang_seconds = 1.5
        self.sim.serve()
        self.clock = [1_700_000_000.0]
        config = build_config(
            {
                "page_size": 100,
                "timeout": "0.5s",
                "max_staleness": "5m",
                "clusters": [{"name": "c", "api_url": self.sim.url, "token": "t", "cluster_ids": [1638523853]}],
            },
            environ={},
        )
        self.exporter = Exporter(config, clock=lambda: self.clock[0], retry_backoff=0)
        self.poller = self.exporter.pollers[0]
        self.loop = asyncio.new_event_loop()

    def poll(self) -> bool:
        return self.loop.run_until_complete(self.poller.poll_once())

    def errors(self) -> Counter[str]:
        get = self.exporter.registry.get_sample_value
        return Counter({r: int(get("sugon_api_errors_total", {"hpc_cluster": "c", "reason": r}) or 0) for r in REASONS})

    def running_jobs(self) -> float:
        return job_count(self.exporter.exposition.get("c"))

    def close(self) -> None:
        self.loop.run_until_complete(self.exporter.aclose())
        self.loop.close()
        self.sim.stop()


@pytest.fixture
def rig() -> Iterator[Rig]:
    r = Rig()
    yield r
    r.close()


@pytest.mark.parametrize("fault", list(MATRIX))
def test_every_fault_is_survived_reported_and_recovered_from(rig: Rig, fault: str) -> None:
    assert rig.poll()
    good = rig.exporter.exposition.get("c")
    assert good.jobs is not None and job_count(good) == len(rig.sim.rows())
    before = rig.errors()

    # The fault hits the first job-list request of the poll (and its retry, if any); the listing quirks
    # (an ignored offset, duplicated rows) last for every request of the poll.
    survives, expected = MATRIX[fault]
    times = 50 if fault in ("ignore_offset", "duplicates") else max(sum(expected.values()), 1)
    rig.sim.faults.inject(fault, times=times)
    rig.clock[0] += 60
    assert rig.poll() is survives
    state = rig.exporter.exposition.get("c")
    assert (rig.errors() - before) == Counter(expected)
    if survives:
        assert state.up and state.jobs is not None
        assert job_count(state) == len(rig.sim.rows())  # counted right despite the quirk
    else:
        assert state.up is False and state.last_error == next(iter(expected))
        assert state.jobs is good.jobs  # nothing partial was published; the last good data is still served
        assert (
            rig.exporter.registry.get_sample_value(
                "sugon_jobs", {"hpc_cluster": "c", "queue": "debug", "status": "running"}
            )
            == job_counts(good)[("debug", "running")]
        )

    rig.sim.faults.clear()
    rig.clock[0] += 60
    assert rig.poll()
    state = rig.exporter.exposition.get("c")
    assert state.up and state.jobs is not None and job_count(state) == len(rig.sim.rows())


def test_a_single_transient_failure_is_absorbed_by_the_retry(rig: Rig) -> None:
    rig.sim.faults.inject("http_503", times=1)
    assert rig.poll()
    assert rig.errors()["http_status"] == 1


def test_connection_refused_then_the_server_comes_back(rig: Rig) -> None:
    assert rig.poll()
    port = int(rig.sim.url.rsplit(":", 1)[1])
    rig.sim.stop()
    assert not rig.poll()
    assert rig.errors()["connection"] == 2
    assert rig.exporter.exposition.get("c").jobs is not None
    rig.sim.serve(port)
    assert rig.poll()
    assert rig.exporter.exposition.get("c").up


def test_the_fault_matrix_names_every_fault_the_simulator_can_inject() -> None:
    from exporter.simulator.faults import ALL

    assert set(MATRIX) == set(ALL)
