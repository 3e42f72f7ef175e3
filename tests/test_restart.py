"""A restart with a state file while the API fails: /metrics serves what the file knows, as during an outage."""

from __future__ import annotations

import asyncio
from pathlib import Path

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from exporter.config import build_config
from exporter.service import Exporter
from exporter.simulator import Simulator
from exporter.status import status_data
from tests.helpers import promtool_check_metrics

T0 = 1_700_000_000.0
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def exporter(sim: Simulator, state: Path, now: list[float], **settings: object) -> Exporter:
    config = build_config(
        {
            **settings,
            "max_staleness": "5m",
            "state_file": str(state),
            "clusters": [{"name": "sim", "api_url": sim.url, "token": "t", "cluster_ids": [1638523853]}],
        },
        environ={},
    )
    return Exporter(config, clock=lambda: now[0], retry_backoff=0)


def scrape(ex: Exporter) -> Samples:
    """/metrics as a scrape gets it (the cached exposition), checked by promtool, as {(name, labels): value};
    the registry's own rendering (--once, name[] scrapes) must agree."""
    text = b"".join(ex.exposition.body()).decode()
    checked = promtool_check_metrics(text)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.labels.get("hpc_cluster") == "sim"
    }
    again = text_string_to_metric_families(generate_latest(ex.registry).decode())
    assert {
        (s.name, tuple(sorted(s.labels.items()))) for f in again for s in f.samples if "hpc_cluster" in s.labels
    } == set(samples)
    return samples


def named(samples: Samples, name: str) -> Samples:
    return {key: value for key, value in samples.items() if key[0] == name}


def test_a_restart_while_every_poll_fails_serves_the_saved_job_data_until_max_staleness(tmp_path: Path) -> None:
    now = [T0]
    sim = Simulator(token="t", jobs=80, clock=lambda: now[0])
    sim.serve()
    state = tmp_path / "state.json"
    try:
        before = exporter(sim, state, now)
        assert asyncio.run(before.poll_all_once())
        saved = scrape(before)
        jobs = named(saved, "sugon_jobs")
        queues = {dict(labels)["queue"] for _, labels in jobs}
        assert sum(jobs.values()) == len(sim.rows()) and len(queues) > 1

        # Restarted 60 s later; from now on every job-list request fails.
        sim.faults.at_random(("http_503",), 1.0)
        now[0] = T0 + 60
        after = exporter(sim, state, now)
        first = scrape(after)  # before any poll ends
        assert named(first, "sugon_jobs") == jobs
        for family in ("sugon_job_cpus", "sugon_user_jobs", "sugon_queued_jobs_by_reason", "sugon_app_jobs"):
            assert named(first, family) == named(saved, family) != {}, family
        assert first[("sugon_last_success_timestamp_seconds", (("hpc_cluster", "sim"),))] == T0
        assert ("sugon_up", (("hpc_cluster", "sim"),)) not in first
        counters = {
            dict(labels)["queue"]: value for (_, labels), value in named(first, "sugon_jobs_submitted_total").items()
        }
        assert counters == dict.fromkeys(queues, 0.0)  # every known queue, at 0
        assert set(named(first, "sugon_job_cpu_seconds_total").values()) == {0.0}
        assert set(named(first, "sugon_job_wait_seconds_count").values()) == {0.0}
        assert status_data(after.exposition.states(), now[0])["clusters"][0]["state"] == "starting"

        # A failed poll: sugon_up 0, the saved data still served until T0 + 300.
        now[0] = T0 + 299
        assert not asyncio.run(after.poll_all_once())
        failed = scrape(after)
        assert failed[("sugon_up", (("hpc_cluster", "sim"),))] == 0
        assert named(failed, "sugon_jobs") == jobs
        assert failed[("sugon_last_success_timestamp_seconds", (("hpc_cluster", "sim"),))] == T0

        # Past max_staleness the job gauges go; the counters and the last success stay.
        now[0] = T0 + 300
        stale = scrape(after)
        assert named(stale, "sugon_jobs") == {} and named(stale, "sugon_user_jobs") == {}
        assert named(stale, "sugon_jobs_submitted_total") == named(first, "sugon_jobs_submitted_total")
        assert stale[("sugon_last_success_timestamp_seconds", (("hpc_cluster", "sim"),))] == T0

        # Restarted once more, past max_staleness: the data is not served, the known queues' counters are.
        now[0] = T0 + 400
        again = exporter(sim, state, now)
        late = scrape(again)
        asyncio.run(again.aclose())
        assert named(late, "sugon_jobs") == {}
        assert named(late, "sugon_jobs_submitted_total") == named(first, "sugon_jobs_submitted_total")
    finally:
        sim.stop()
