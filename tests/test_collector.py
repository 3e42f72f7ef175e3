"""Rendering: a golden exposition checked by promtool, per_user, hostile label values, the usage families, and no
I/O at scrape."""

from __future__ import annotations

from dataclasses import replace

from exporter.counting.snapshot import SnapshotBuilder
from exporter.serving.collector import JobCollector
from exporter.serving.families import ClusterFamilies
from prometheus_client import CollectorRegistry, generate_latest

from exporter.model import (
    Activity,
    CapacitySnapshot,
    ClusterSnapshot,
    ClusterState,
    QueueCapacity,
    RunTimeHistogram,
    WaitHistogram,
)
from exporter.render import Exposition
from tests.helpers import FIXTURES, promtool_check_metrics
from tests.reference import Job, add_job

NOW = 1_700_000_000.0


# Waits of 20 s, 45 s and 200,000 s: buckets ≤30 s, ≤60 s and +Inf; the oldest queued job first seen 120 s ago.
# CPU-seconds: alice's jobs 1 (4 CPUs) and 2 (8 CPUs) each ran 450 s more, 5,400; bob's earlier 1-CPU job 1,800.
# Run times of two ended jobs, 200 s and 14,400 s: buckets ≤300 s and ≤14,400 s.
ACTIVITY = Activity(
    submitted={"debug": 5},
    started={"debug": 3},
    ended={("debug", "completed"): 2, ("debug", "gone"): 1},
    wait={"debug": WaitHistogram((1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1), 200065.0, 3)},
    oldest_queued_since={"debug": NOW - 120},
    cpu_seconds={"debug": 7200.0},
    user_cpu_seconds={("debug", "alice"): 5400.0, ("debug", "bob"): 1800.0},
    run_time={"debug": RunTimeHistogram((0, 1, 0, 0, 1, 0, 0, 0, 0, 0), 14600.0, 2)},
)


def with_usage(snap: ClusterSnapshot) -> ClusterSnapshot:
    """The usage fields of JOBS, as the tally fills them: job 1 (vasp) on n01, job 2 (fluent) on n[01-02], job 3
    (no appType) queued on no node; job 2 has run 2 h. Only the running nodes are given: the rest is zero-filled."""
    return replace(
        snap,
        nodes_by_queue={("debug", "running"): 3},
        nodes_in_use=2,
        by_app={("fluent", "running"): (1, 8), ("vasp", "running"): (1, 4), ("none", "queued"): (1, 16)},
        running_max_seconds={"debug": 7200.0},
    )


def store_with(jobs: list[Job], per_user: bool = True) -> StateStore:
    builder = SnapshotBuilder(per_user)
    for j in jobs:
        add_job(builder, j)
    snap = builder.build("kunshan", NOW, NOW + 300, reported_total=3, zero_fill_queues=["debug"], activity=ACTIVITY)
    snap = with_usage(snap)
    store = Exposition(["kunshan", "wuxi"])
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
    assert "sugon_user_job_cpu_seconds" not in text
    assert 'sugon_job_cpu_seconds_total{hpc_cluster="kunshan",queue="debug"} 7200.0' in text
    assert 'sugon_jobs{hpc_cluster="kunshan",queue="debug",status="running"} 2.0' in text


def test_a_cluster_that_has_not_finished_a_poll_shows_no_up_series_yet() -> None:
    text = render(Exposition(["kunshan"]))
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


def registry_of(store: StateStore, per_user: bool = True, now: float = NOW + 10) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(JobCollector(store, ClusterFamilies(per_user), clock=lambda: now))
    return registry


def test_every_known_queue_has_zero_nodes_a_zero_longest_run_and_empty_usage_counters() -> None:
    """Queues known from the zero-fill (idle), from CPU-seconds only (drained: its jobs ended and left) and from
    run times only (ended) get 0-valued series, as sugon_jobs and the backlog counters do."""
    builder = SnapshotBuilder(True)
    for j in JOBS:
        add_job(builder, j)
    activity = replace(
        ACTIVITY,
        cpu_seconds={"debug": 7200.0, "drained": 60.0},
        run_time={"ended": RunTimeHistogram((1, 0, 0, 0, 0, 0, 0, 0, 0, 0), 30.0, 1)},
    )
    snap = with_usage(
        builder.build("kunshan", NOW, NOW + 300, 3, zero_fill_queues=["debug", "idle"], activity=activity)
    )
    store = Exposition(["kunshan"])
    store.publish(ClusterState("kunshan", True, NOW, 1.0, None, snap))
    registry = registry_of(store)

    def value(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, {"hpc_cluster": "kunshan", **labels})

    assert value("sugon_job_nodes", queue="debug", status="running") == 3
    for queue, status in (("debug", "queued"), ("debug", "other"), ("idle", "running"), ("idle", "queued")):
        assert value("sugon_job_nodes", queue=queue, status=status) == 0, (queue, status)
    assert value("sugon_job_nodes", queue="drained", status="running") is None  # not in sugon_jobs either
    assert value("sugon_running_job_max_seconds", queue="debug") == 7200
    assert value("sugon_running_job_max_seconds", queue="idle") == 0
    assert value("sugon_job_cpu_seconds_total", queue="drained") == 60
    assert (
        value("sugon_job_cpu_seconds_total", queue="idle") == value("sugon_job_cpu_seconds_total", queue="ended") == 0
    )
    for queue in ("debug", "idle", "drained"):  # debug's run times are not in this activity
        assert value("sugon_job_run_seconds_bucket", queue=queue, le="+Inf") == 0, queue
        assert value("sugon_job_run_seconds_count", queue=queue) == value("sugon_job_run_seconds_sum", queue=queue) == 0
    assert value("sugon_job_run_seconds_bucket", queue="ended", le="60.0") == 1
    assert value("sugon_job_run_seconds_count", queue="ended") == 1
    assert value("sugon_job_run_seconds_sum", queue="ended") == 30
    assert value("sugon_user_job_cpu_seconds_total", queue="idle", user="alice") is None  # users: as counted only


def test_stale_job_data_leaves_out_the_usage_gauges_and_keeps_the_cpu_counters_and_run_times() -> None:
    fresh, stale = registry_of(store_with(JOBS)), registry_of(store_with(JOBS), now=NOW + 300)
    gauges = {
        "sugon_job_nodes": {"queue": "debug", "status": "running"},
        "sugon_nodes_in_use": {},
        "sugon_running_job_max_seconds": {"queue": "debug"},
        "sugon_app_jobs": {"app": "vasp", "status": "running"},
        "sugon_app_job_cpus": {"app": "vasp", "status": "running"},
    }
    for name, labels in gauges.items():
        assert fresh.get_sample_value(name, {"hpc_cluster": "kunshan", **labels}) is not None, name
        assert stale.get_sample_value(name, {"hpc_cluster": "kunshan", **labels}) is None, name
    kept = {
        "sugon_job_cpu_seconds_total": ({"queue": "debug"}, 7200),
        "sugon_user_job_cpu_seconds_total": ({"queue": "debug", "user": "alice"}, 5400),
        "sugon_job_run_seconds_count": ({"queue": "debug"}, 2),
        "sugon_job_run_seconds_bucket": ({"queue": "debug", "le": "300.0"}, 1),
    }
    for name, (labels, expected) in kept.items():
        assert stale.get_sample_value(name, {"hpc_cluster": "kunshan", **labels}) == expected, name


def test_the_app_families_carry_what_the_snapshot_holds_with_their_app_labels_escaped() -> None:
    store = store_with(JOBS)
    snap = store.get("kunshan").snapshot
    assert snap is not None
    odd = 'ab"aqus\\n'
    apps = {("fluent", "running"): (3, 96), (odd, "running"): (1, 2), ("other", "queued"): (7, 70)}
    store.publish(replace(store.get("kunshan"), snapshot=replace(snap, by_app=apps)))
    registry = registry_of(store)
    for (app, status), (jobs, cpus) in apps.items():
        labels = {"hpc_cluster": "kunshan", "app": app, "status": status}
        assert registry.get_sample_value("sugon_app_jobs", labels) == jobs, app
        assert registry.get_sample_value("sugon_app_job_cpus", labels) == cpus, app
    text = render(store)
    assert 'sugon_app_jobs{app="ab\\"aqus\\\\n",hpc_cluster="kunshan",status="running"} 1.0' in text
    result = promtool_check_metrics(text)
    assert result.returncode == 0, result.stdout + result.stderr
