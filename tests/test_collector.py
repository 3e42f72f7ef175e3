"""Rendering: a golden exposition checked by promtool, per_user, hostile label values, and no I/O at scrape."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest

from exporter.counting.snapshot import SnapshotBuilder
from exporter.model import Activity, CapacitySnapshot, ClusterState, QueueCapacity, WaitHistogram
from exporter.serving.collector import JobCollector
from exporter.serving.families import ClusterFamilies
from exporter.serving.store import StateStore
from tests.helpers import FIXTURES, promtool_check_metrics
from tests.reference import Job, add_job

NOW = 1_700_000_000.0


# Waits of 20 s, 45 s and 200,000 s: buckets ≤30 s, ≤60 s and +Inf; the oldest queued job first seen 120 s ago.
ACTIVITY = Activity(
    submitted={"debug": 5},
    started={"debug": 3},
    ended={("debug", "completed"): 2, ("debug", "gone"): 1},
    wait={"debug": WaitHistogram((1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1), 200065.0, 3)},
    oldest_queued_since={"debug": NOW - 120},
)


def store_with(jobs: list[Job], per_user: bool = True) -> StateStore:
    builder = SnapshotBuilder(per_user)
    for j in jobs:
        add_job(builder, j)
    snap = builder.build("kunshan", NOW, NOW + 300, reported_total=3, zero_fill_queues=["debug"], activity=ACTIVITY)
    store = StateStore(["kunshan", "wuxi"])
    capacity = CapacitySnapshot(NOW, NOW + 300, {"debug": QueueCapacity(256, 64, 4, 1)})
    store.publish(ClusterState("kunshan", True, NOW, 1.5, None, snap, capacity))
    store.publish(ClusterState("wuxi", False, None, 30.0, "timeout", None))
    return store


JOBS = [
    Job("1", "debug", "alice", "running", "statR", 4),
    Job("2", "debug", "alice", "running", "statR", 8),
    Job("3", "debug", "bob", "queued", "statQ", 16, "Resources"),
]


def render(store: StateStore, per_user: bool = True, now: float = NOW + 10) -> str:
    registry = CollectorRegistry()
    registry.register(JobCollector(store, ClusterFamilies(per_user), clock=lambda: now))
    return generate_latest(registry).decode("utf-8")


def test_the_exposition_matches_the_hand_written_golden_file_and_passes_promtool() -> None:
    text = render(store_with(JOBS))
    assert text == (FIXTURES / "golden.prom").read_text(encoding="utf-8")
    result = promtool_check_metrics(text)
    assert result.returncode == 0, result.stdout + result.stderr


def test_per_user_off_leaves_out_the_user_families() -> None:
    text = render(store_with(JOBS, per_user=False), per_user=False)
    assert "sugon_user_jobs" not in text and "sugon_user_job_cpus" not in text
    assert 'sugon_jobs{hpc_cluster="kunshan",queue="debug",status="running"} 2.0' in text


def test_a_cluster_that_has_not_finished_a_poll_shows_no_up_series_yet() -> None:
    text = render(StateStore(["kunshan"]))
    assert "sugon_up{" not in text and "sugon_jobs{" not in text


def test_hostile_label_values_are_escaped_and_promtool_accepts_them() -> None:
    nasty = 'q"ue\\ue\nline ' + "队列" * 50
    store = store_with([Job("1", nasty, 'u"s\\er\n', "running", "statR", 1)])
    text = render(store)
    assert 'queue="q\\"ue\\\\ue\\nline ' in text
    result = promtool_check_metrics(text)
    assert result.returncode == 0, result.stdout + result.stderr


def test_collect_leaves_out_a_part_that_cannot_be_rendered_and_renders_every_other_cluster() -> None:
    """What --once and name[] scrapes render: a capacity no float holds (past the bounds on parsing) costs
    that cluster its capacity series, not the whole exposition."""
    store = store_with(JOBS)
    bad = CapacitySnapshot(NOW, NOW + 300, {"debug": QueueCapacity(10**400, 1, 1, 1)})
    store.publish(ClusterState("wuxi", True, NOW, 2.0, None, None, bad))
    text = render(store)
    assert 'sugon_queue_cpus{hpc_cluster="kunshan",queue="debug"} 256.0' in text
    assert 'hpc_cluster="wuxi",queue' not in text and 'sugon_up{hpc_cluster="wuxi"} 1.0' in text
    result = promtool_check_metrics(text)
    assert result.returncode == 0, result.stdout + result.stderr
