"""Aggregation: counts and CPU sums per queue/status and per user, and zero-filling."""

from __future__ import annotations

import gc
import re

import pytest
from exporter.counting.snapshot import SnapshotBuilder, fold_users, name_queues, top_reasons

from tests.reference import Job, add_job


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
        add_job(b, j)
    snap = b.build("c", taken_at=100.0, expires_at=400.0, reported_total=4)
    assert dict(snap.by_queue) == {
        ("debug", "running"): (2, 12),
        ("debug", "queued"): (1, 16),
        ("gpu", "running"): (1, 2),
    }
    assert dict(snap.by_user) == {
        ("debug", "a", "running"): (2, 12),
        ("debug", "b", "queued"): (1, 16),
        ("gpu", "a", "running"): (1, 2),
    }
    assert (snap.job_count, snap.reported_total, snap.expires_at) == (4, 4, 400.0)


def test_zero_fill_gives_every_remembered_queue_the_eight_documented_statuses() -> None:
    b = SnapshotBuilder(per_user=True)
    add_job(b, job(1, "debug", "a", "cancelled", 3))
    snap = b.build("c", 0.0, 1.0, 1, zero_fill_queues=["debug", "drained"])
    eight = {"running", "queued", "held", "suspended", "exiting", "completed", "waiting", "other"}
    assert {s for (q, s) in snap.by_queue if q == "drained"} == eight
    assert {s for (q, s) in snap.by_queue if q == "debug"} == eight | {"cancelled"}
    assert snap.by_queue[("drained", "queued")] == (0, 0)
    assert snap.by_queue[("debug", "cancelled")] == (1, 3)
    # Per-user families carry non-zero series only.
    assert list(snap.by_user) == [("debug", "a", "cancelled")]


def test_per_user_off_keeps_no_user_breakdown() -> None:
    b = SnapshotBuilder(per_user=False)
    add_job(b, job(1, "debug", "a", "running", 1))
    assert dict(b.build("c", 0.0, 1.0, 1).by_user) == {}


def test_users_beyond_max_users_fold_into_other_with_ties_broken_by_name() -> None:
    b = SnapshotBuilder(per_user=True, max_users=2)
    n = 0
    for user, count in (("carol", 3), ("alice", 2), ("bob", 2), ("dave", 1)):
        for _ in range(count):
            n += 1
            add_job(b, job(n, "q", user, "running", 1))
    snap = b.build("c", 0.0, 1.0, n)
    # carol (3) is first; alice and bob tie at 2 and alice wins by name; bob and dave become "other"
    assert dict(snap.by_user) == {
        ("q", "carol", "running"): (3, 3),
        ("q", "alice", "running"): (2, 2),
        ("q", "other", "running"): (3, 3),
    }
    assert snap.users_folded == 2


def test_excluded_users_always_fold_even_when_within_the_budget() -> None:
    b = SnapshotBuilder(per_user=True, max_users=10, users_exclude=[re.compile("svc_.*"), re.compile("root")])
    for n, user in enumerate(["svc_backup", "svc_sync", "root", "rooted", "alice"]):
        add_job(b, job(n, "q", user, "queued", 2))
    snap = b.build("c", 0.0, 1.0, 5)
    assert dict(snap.by_user) == {
        ("q", "other", "queued"): (3, 6),  # svc_backup, svc_sync, root (full match only)
        ("q", "rooted", "queued"): (1, 2),
        ("q", "alice", "queued"): (1, 2),
    }
    assert snap.users_folded == 3


def test_fold_users_is_deterministic_whatever_the_insertion_order() -> None:
    totals = {"b": 1, "a": 1, "c": 1}
    assert fold_users(totals, 2) == {"a", "b"}
    assert fold_users(dict(reversed(list(totals.items()))), 2) == {"a", "b"}


def test_reasons_beyond_twenty_per_cluster_become_other() -> None:
    b = SnapshotBuilder(per_user=False)
    n = 0
    for i in range(25):  # reason r00 has 25 jobs, r01 24, ... r24 1
        for _ in range(25 - i):
            n += 1
            add_job(b, Job(str(n), "q" if i % 2 else "p", "u", "queued", "statQ", 1, f"r{i:02d}"))
    add_job(b, Job("run", "q", "u", "running", "statR", 1, "ignored"))  # only queued jobs count
    snap = b.build("c", 0.0, 1.0, n)
    reasons = {r for _, r in snap.by_reason}
    assert reasons == {f"r{i:02d}" for i in range(20)} | {"other"}
    # r20..r24 have 5+4+3+2+1 jobs: 5, 3, 1 in queue p (even i), 4 and 2 in queue q
    assert snap.by_reason[("p", "other")] == 9 and snap.by_reason[("q", "other")] == 6
    assert sum(snap.by_reason.values()) == n


def test_top_reasons_break_ties_by_name() -> None:
    assert top_reasons({"b": 2, "a": 2, "c": 3}, limit=2) == {"c", "a"}


def test_a_snapshots_counts_add_nothing_the_garbage_collector_tracks() -> None:
    # Ten clusters × 50 queues × 200 users is 200k per-user series held between polls; tracked objects among
    # them would lengthen every full collection, which pauses scrapes.
    gc.collect()
    before = len(gc.get_objects())
    b = SnapshotBuilder(per_user=True, max_users=1000)
    for n in range(10_000):
        add_job(b, Job(str(n), f"q{n // 1000}", f"u{n % 1000}", "running", "", 2))
    snap = b.build("c", 0.0, 300.0, 10_000, zero_fill_queues=["q0"])
    del b  # what a poll keeps is the snapshot
    gc.collect()
    assert len(gc.get_objects()) - before < 100
    assert len(snap.by_user) == 10_000 and sum(jobs for jobs, _ in snap.by_user.values()) == 10_000


@pytest.mark.parametrize("other_first", [True, False])
def test_a_user_called_other_adds_up_with_the_folded_users_whatever_the_order(other_first: bool) -> None:
    b = SnapshotBuilder(per_user=True, max_users=1)
    jobs = [Job(f"o{n}", "q", "other", "running", "", 1) for n in range(3)]  # kept: the most jobs
    folded = [Job("a", "q", "alice", "running", "", 10), Job("b", "q", "bob", "running", "", 100)]
    for job in jobs + folded if other_first else folded + jobs:
        add_job(b, job)
    snap = b.build("c", 0.0, 300.0, 5)
    assert dict(snap.by_user) == {("q", "other", "running"): (5, 113)} and snap.users_folded == 2


def test_name_queues_keeps_the_queues_with_most_jobs_ties_by_name_and_nothing_when_all_fit() -> None:
    jobs = {"d": 1, "b": 2, "c": 2, "a": 3, "other": 50}
    assert name_queues(jobs, 2) == {"a", "b"}  # "other" is never a candidate: it is where the rest goes
    assert name_queues(jobs, 4) is None  # four real queues fit: none is renamed
    assert name_queues({"x": 0, "y": 0, "z": 0}, 2) == {"x", "y"}  # known queues without jobs: by name


def test_a_queue_budget_folds_the_other_queues_in_every_family_of_the_snapshot() -> None:
    b = SnapshotBuilder(per_user=True, max_users=10)
    n = 0
    for queue, user, status, cpus, reason in (
        ("big", "alice", "running", 4, "none"),
        ("big", "alice", "queued", 2, "Priority"),
        ("small", "bob", "queued", 8, "Resources"),
        ("tiny", "bob", "queued", 16, "Resources"),
        ("other", "carol", "running", 1, "none"),  # a queue really called "other" adds up with the folded ones
    ):
        n += 1
        add_job(b, Job(str(n), queue, user, status, "", cpus, reason))
    assert b.queue_jobs() == {"big": 2, "small": 1, "tiny": 1, "other": 1}
    snap = b.build("c", 0.0, 1.0, n, zero_fill_queues=["big", "other"], named={"big"}, queues_folded=2)
    assert snap.by_queue[("big", "queued")] == (1, 2)
    assert snap.by_queue[("other", "queued")] == (2, 24)  # small and tiny
    assert snap.by_queue[("other", "running")] == (1, 1)
    assert {q for q, _ in snap.by_queue} == {"big", "other"}
    assert dict(snap.by_user) == {
        ("big", "alice", "running"): (1, 4),
        ("big", "alice", "queued"): (1, 2),
        ("other", "bob", "queued"): (2, 24),
        ("other", "carol", "running"): (1, 1),
    }
    assert dict(snap.by_reason) == {("big", "Priority"): 1, ("other", "Resources"): 2}
    assert snap.queues_folded == 2 and snap.users_folded == 0


def test_applications_beyond_max_apps_fold_into_other_with_ties_broken_by_name() -> None:
    b = SnapshotBuilder(per_user=False, max_apps=2)
    n = 0
    for app, status, count, cpus in (
        ("vasp", "running", 3, 8),
        ("fluent", "running", 1, 4),
        ("fluent", "queued", 1, 2),  # fluent: 2 jobs in all
        ("abaqus", "running", 2, 1),  # abaqus: 2 jobs, before fluent by name
        ("lammps", "queued", 1, 16),
        ("other", "running", 5, 1),  # an application really called "other" adds up with the folded ones
    ):
        for _ in range(count):
            n += 1
            add_job(b, Job(str(n), "q", "u", status, "", cpus, app=app))
    snap = b.build("c", 0.0, 1.0, n)
    assert dict(snap.by_app) == {
        ("vasp", "running"): (3, 24),
        ("abaqus", "running"): (2, 2),
        ("other", "running"): (5 + 1, 5 + 4),  # the real "other" and fluent
        ("other", "queued"): (2, 2 + 16),  # fluent and lammps
    }


def test_within_max_apps_every_application_keeps_its_name_and_none_is_one_of_them() -> None:
    b = SnapshotBuilder(per_user=False)
    add_job(b, Job("1", "q", "u", "running", "", 4, app="fluent"))
    add_job(b, Job("2", "q", "u", "running", "", 2, app="none"))
    assert dict(b.build("c", 0.0, 1.0, 2).by_app) == {("fluent", "running"): (1, 4), ("none", "running"): (1, 2)}


def test_nodes_and_the_longest_run_add_up_over_the_queues_folded_into_other() -> None:
    b = SnapshotBuilder(per_user=False)
    for n, queue, status, nodes, run in (
        (1, "big", "running", 4, 100),
        (2, "small", "running", 2, 7200),
        (3, "tiny", "running", 1, 50),
        (4, "tiny", "queued", 0, None),
        (5, "small", "completed", 3, 9000),  # not running: not the longest run
    ):
        add_job(b, Job(str(n), queue, "u", status, "", 1, nodes=nodes, run=run))
    snap = b.build("c", 0.0, 1.0, 5, zero_fill_queues=["big", "other"], named={"big"}, queues_folded=2)
    assert snap.nodes_by_queue[("big", "running")] == 4
    assert snap.nodes_by_queue[("other", "running")] == 3 and snap.nodes_by_queue[("other", "completed")] == 3
    assert snap.nodes_by_queue[("other", "queued")] == 0 and snap.nodes_by_queue[("big", "held")] == 0
    assert set(snap.nodes_by_queue) == set(snap.by_queue)
    assert dict(snap.running_max_seconds) == {"big": 100.0, "other": 7200.0}
