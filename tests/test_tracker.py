"""The job memory on a hand-made sequence of polls: every expected number below is worked out by hand."""

from __future__ import annotations

import gc

from exporter.counting.tracker import JobTracker
from exporter.model import WAIT_BUCKETS

T = 1_700_000_000.0


def test_a_sequence_of_polls_counts_submissions_starts_ends_and_waits() -> None:
    t = JobTracker()
    # poll 1 (seed): a queued, b running, c completed. Nothing is counted.
    act = t.commit({"a": ("q", "queued"), "b": ("q", "running"), "c": ("q", "completed")}, T)
    assert (dict(act.submitted), dict(act.started), dict(act.ended), dict(act.wait)) == ({}, {}, {}, {})
    assert dict(act.oldest_queued_since) == {"q": T}

    # poll 2, +60 s: a starts (waited 60 s), d submitted queued, e submitted already running, c gone after its linger
    act = t.commit({"a": ("q", "running"), "b": ("q", "running"), "d": ("q", "queued"), "e": ("q", "running")}, T + 60)
    assert dict(act.submitted) == {"q": 2}  # d, e
    assert dict(act.started) == {"q": 2}  # a, e
    assert dict(act.ended) == {}  # c had already ended (completed) before it left: not "gone"
    assert act.wait["q"].count == 2 and act.wait["q"].total == 60.0  # a: 60 s; e: 0 s
    assert act.wait["q"].counts[0] == 1 and act.wait["q"].counts[1] == 1  # 0 s ≤ 30 s; 60 s ≤ 1 m
    assert dict(act.oldest_queued_since) == {"q": T + 60}  # d

    # poll 3, +400 s: b completes, d is cancelled while waiting, a vanishes without a terminal status
    act = t.commit({"b": ("q", "completed"), "d": ("q", "cancelled"), "e": ("q", "running")}, T + 400)
    assert dict(act.ended) == {("q", "completed"): 1, ("q", "cancelled"): 1, ("q", "gone"): 1}
    assert dict(act.started) == {"q": 2}  # d never started
    assert dict(act.oldest_queued_since) == {}

    # poll 4: nothing changes → no count changes (counters never double count)
    again = t.commit({"b": ("q", "completed"), "d": ("q", "cancelled"), "e": ("q", "running")}, T + 460)
    assert (dict(again.submitted), dict(again.started), dict(again.ended)) == (
        dict(act.submitted),
        dict(act.started),
        dict(act.ended),
    )


def test_a_job_seen_queued_then_completed_counts_as_started_and_ended() -> None:
    t = JobTracker()
    t.commit({"x": ("q", "queued")}, T)
    act = t.commit({"x": ("q", "completed")}, T + 3600)
    assert dict(act.started) == {"q": 1}
    assert dict(act.ended) == {("q", "completed"): 1}
    assert act.wait["q"].total == 3600.0 and act.wait["q"].counts[WAIT_BUCKETS.index(3600)] == 1


def test_an_outage_between_polls_counts_what_changed_once_and_a_vanished_job_as_gone_once() -> None:
    t = JobTracker()
    t.commit({"a": ("q", "queued"), "b": ("q", "queued")}, T)
    # polls at T+60 .. T+600 failed: commit is never called for them
    act = t.commit({"a": ("q", "running")}, T + 660)
    assert dict(act.started) == {"q": 1} and act.wait["q"].total == 660.0
    assert dict(act.ended) == {("q", "gone"): 1}  # b left during the outage
    act = t.commit({"a": ("q", "running")}, T + 720)
    assert dict(act.ended) == {("q", "gone"): 1}


def test_held_then_queued_then_running_waits_from_the_first_sighting_and_requeue_starts_again() -> None:
    t = JobTracker()
    t.commit({}, T)
    t.commit({"h": ("q", "held")}, T + 10)
    t.commit({"h": ("q", "queued")}, T + 100)
    act = t.commit({"h": ("q", "running")}, T + 200)
    assert dict(act.submitted) == {"q": 1} and act.wait["q"].total == 190.0
    t.commit({"h": ("q", "requeued")}, T + 300)
    act = t.commit({"h": ("q", "running")}, T + 330)
    assert dict(act.started) == {"q": 2} and act.wait["q"].total == 190.0 + 30.0


def test_a_job_that_moves_queue_is_counted_in_its_new_queue() -> None:
    t = JobTracker()
    t.commit({"m": ("a", "queued")}, T)
    act = t.commit({"m": ("b", "running")}, T + 50)
    assert dict(act.started) == {"b": 1}


def test_restored_first_seen_times_survive_a_restart_but_the_first_poll_still_only_seeds() -> None:
    before = JobTracker()
    before.commit({"a": ("q", "queued"), "r": ("q", "running")}, T)
    saved = before.waiting_since()
    assert saved == {"a": T}
    after = JobTracker(restored_waits=saved)
    act = after.commit({"a": ("q", "queued"), "n": ("q", "queued")}, T + 1000)  # the restarted exporter's seed poll
    assert dict(act.submitted) == {} and dict(act.ended) == {}  # r vanished meanwhile: not counted, as in a seed
    assert dict(act.oldest_queued_since) == {"q": T}  # a's age continues from before the restart
    act = after.commit({"a": ("q", "running"), "n": ("q", "running")}, T + 1100)
    assert act.wait["q"].total == 1100.0 + 100.0  # a from T, n from its first sighting at T+1000


def test_without_restored_times_the_wait_counts_from_the_first_poll_after_the_restart() -> None:
    after = JobTracker()
    after.commit({"a": ("q", "queued")}, T + 1000)
    act = after.commit({"a": ("q", "running")}, T + 1100)
    assert act.wait["q"].total == 100.0


def test_a_restored_time_in_the_future_is_ignored() -> None:
    t = JobTracker(restored_waits={"a": T + 999})
    act = t.commit({"a": ("q", "queued")}, T)
    assert dict(act.oldest_queued_since) == {"q": T}


def test_cumulative_buckets_end_with_inf_and_equal_the_count() -> None:
    t = JobTracker()
    t.commit({"a": ("q", "queued"), "b": ("q", "queued"), "c": ("q", "queued")}, T)
    act = t.commit({"a": ("q", "running"), "b": ("q", "queued"), "c": ("q", "queued")}, T + 45)
    act = t.commit({"b": ("q", "running"), "c": ("q", "queued"), "a": ("q", "running")}, T + 3 * 86400)
    pairs = act.wait["q"].cumulative()
    assert pairs[0] == (30.0, 0) and pairs[1] == (60.0, 1)  # a waited 45 s
    assert pairs[-2] == (172800.0, 1) and pairs[-1] == (float("inf"), 2)  # b waited 3 days
    assert act.wait["q"].count == 2


def test_a_centres_job_records_add_nothing_the_garbage_collector_tracks() -> None:
    # A full collection holds the interpreter lock, scrapes included, for as long as it takes to walk every
    # tracked object: one tracked record per listed job made it 18 ms at 200k jobs.
    tracker = JobTracker()
    tracker.commit({"seed": ("q", "queued")}, 0.0)
    gc.collect()
    before = len(gc.get_objects())
    tracker.commit({str(i): ("q", "queued" if i % 2 else "running") for i in range(10_000)}, 100.0)
    tracker.commit({str(i): ("q", "running") for i in range(10_000)}, 160.0)  # half of them change
    gc.collect()
    assert len(gc.get_objects()) - before < 100
    assert tracker.activity().started == {"q": 10_000}  # the records still do their job


def test_with_a_queue_budget_only_the_named_queues_and_other_keep_counts() -> None:
    t = JobTracker()
    t.commit({"a": ("q1", "queued"), "b": ("q2", "queued")}, T)
    act = t.commit({"a": ("q1", "running"), "b": ("q2", "running"), "c": ("q3", "queued")}, T + 60)
    assert dict(act.started) == {"q1": 1, "q2": 1} and dict(act.submitted) == {"q3": 1}
    assert t.known_queues() == {"q1", "q2", "q3"}
    # The next poll names q1 only: q2 and q3 are "other" in what the poller hands over, and their counts go.
    act = t.commit(
        {"a": ("q1", "completed"), "b": ("other", "completed"), "d": ("other", "queued")}, T + 120, {"q1", "other"}
    )
    assert dict(act.submitted) == {"other": 1}  # d; c's submission was q3's, and q3 is no more
    assert dict(act.started) == {"q1": 1}
    assert dict(act.ended) == {("q1", "completed"): 1, ("other", "completed"): 1, ("other", "gone"): 1}  # b; c
    assert set(act.wait) == {"q1"} and dict(act.oldest_queued_since) == {"other": T + 120}
    assert t.known_queues() == {"q1", "other"}
