"""Aggregation: counts and CPU sums per queue/status and per user, and zero-filling."""

from __future__ import annotations

from exporter.jobs import Job
from exporter.snapshot import Counts, SnapshotBuilder


def job(n: int, queue: str, user: str, status: str, cpus: int) -> Job:
    return Job(key=str(n), queue=queue, user=user, status=status, raw_status="", cpus=cpus)


def test_counts_and_cpu_sums_by_queue_status_and_user() -> None:
    b = SnapshotBuilder(per_user=True)
    for j in [
        job(1, "debug", "a", "running", 4),
        job(2, "debug", "a", "running", 8),
        job(3, "debug", "b", "queued", 16),
        job(4, "gpu", "a", "running", 2),
    ]:
        b.add(j)
    snap = b.build("c", taken_at=100.0, expires_at=400.0, reported_total=4)
    assert dict(snap.by_queue) == {
        ("debug", "running"): Counts(2, 12),
        ("debug", "queued"): Counts(1, 16),
        ("gpu", "running"): Counts(1, 2),
    }
    assert dict(snap.by_user) == {
        ("debug", "a", "running"): Counts(2, 12),
        ("debug", "b", "queued"): Counts(1, 16),
        ("gpu", "a", "running"): Counts(1, 2),
    }
    assert (snap.job_count, snap.reported_total, snap.expires_at) == (4, 4, 400.0)


def test_zero_fill_gives_every_remembered_queue_the_eight_documented_statuses() -> None:
    b = SnapshotBuilder(per_user=True)
    b.add(job(1, "debug", "a", "cancelled", 3))
    snap = b.build("c", 0.0, 1.0, 1, zero_fill_queues=["debug", "drained"])
    eight = {"running", "queued", "held", "suspended", "exiting", "completed", "waiting", "other"}
    assert {s for (q, s) in snap.by_queue if q == "drained"} == eight
    assert {s for (q, s) in snap.by_queue if q == "debug"} == eight | {"cancelled"}
    assert snap.by_queue[("drained", "queued")] == Counts(0, 0)
    assert snap.by_queue[("debug", "cancelled")] == Counts(1, 3)
    # Per-user families carry non-zero series only.
    assert list(snap.by_user) == [("debug", "a", "cancelled")]


def test_per_user_off_keeps_no_user_breakdown() -> None:
    b = SnapshotBuilder(per_user=False)
    b.add(job(1, "debug", "a", "running", 1))
    assert dict(b.build("c", 0.0, 1.0, 1).by_user) == {}
