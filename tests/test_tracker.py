"""The job memory on a hand-made sequence of polls: every expected number below is worked out by hand."""

from __future__ import annotations

import gc
import re

from exporter.counting.tracker import JobTracker, Seen
from exporter.counting.usernames import SavedUsers, UserNames

from exporter.model import WAIT_BUCKETS

T = 1_700_000_000.0


def jobs(poll: dict[str, tuple[str, str]]) -> dict[str, Seen]:
    """A poll of jobs by key → (queue, status), whose usage plays no part: no CPUs, not started."""
    return {key: (queue, status, "u", 0, None) for key, (queue, status) in poll.items()}


def test_a_sequence_of_polls_counts_submissions_starts_ends_and_waits() -> None:
    t = JobTracker()
    # poll 1 (seed): a queued, b running, c completed. Nothing is counted.
    act = t.commit(jobs({"a": ("q", "queued"), "b": ("q", "running"), "c": ("q", "completed")}), T)
    assert (dict(act.submitted), dict(act.started), dict(act.ended), dict(act.wait)) == ({}, {}, {}, {})
    assert dict(act.oldest_queued_since) == {"q": T}

    # poll 2, +60 s: a starts (waited 60 s), d submitted queued, e submitted already running, c gone after its linger
    act = t.commit(
        jobs({"a": ("q", "running"), "b": ("q", "running"), "d": ("q", "queued"), "e": ("q", "running")}), T + 60
    )
    assert dict(act.submitted) == {"q": 2}  # d, e
    assert dict(act.started) == {"q": 2}  # a, e
    assert dict(act.ended) == {}  # c had already ended (completed) before it left: not "gone"
    assert act.wait["q"].count == 2 and act.wait["q"].total == 60.0  # a: 60 s; e: 0 s
    assert act.wait["q"].counts[0] == 1 and act.wait["q"].counts[1] == 1  # 0 s ≤ 30 s; 60 s ≤ 1 m
    assert dict(act.oldest_queued_since) == {"q": T + 60}  # d

    # poll 3, +400 s: b completes, d is cancelled while waiting, a vanishes without a terminal status
    act = t.commit(jobs({"b": ("q", "completed"), "d": ("q", "cancelled"), "e": ("q", "running")}), T + 400)
    assert dict(act.ended) == {("q", "completed"): 1, ("q", "cancelled"): 1, ("q", "gone"): 1}
    assert dict(act.started) == {"q": 2}  # d never started
    assert dict(act.oldest_queued_since) == {}

    # poll 4: nothing changes → no count changes (counters never double count)
    again = t.commit(jobs({"b": ("q", "completed"), "d": ("q", "cancelled"), "e": ("q", "running")}), T + 460)
    assert (dict(again.submitted), dict(again.started), dict(again.ended)) == (
        dict(act.submitted),
        dict(act.started),
        dict(act.ended),
    )


def test_a_job_seen_queued_then_completed_counts_as_started_and_ended() -> None:
    t = JobTracker()
    t.commit(jobs({"x": ("q", "queued")}), T)
    act = t.commit(jobs({"x": ("q", "completed")}), T + 3600)
    assert dict(act.started) == {"q": 1}
    assert dict(act.ended) == {("q", "completed"): 1}
    assert act.wait["q"].total == 3600.0 and act.wait["q"].counts[WAIT_BUCKETS.index(3600)] == 1


def test_an_outage_between_polls_counts_what_changed_once_and_a_vanished_job_as_gone_once() -> None:
    t = JobTracker()
    t.commit(jobs({"a": ("q", "queued"), "b": ("q", "queued")}), T)
    # polls at T+60 .. T+600 failed: commit is never called for them
    act = t.commit(jobs({"a": ("q", "running")}), T + 660)
    assert dict(act.started) == {"q": 1} and act.wait["q"].total == 660.0
    assert dict(act.ended) == {("q", "gone"): 1}  # b left during the outage
    act = t.commit(jobs({"a": ("q", "running")}), T + 720)
    assert dict(act.ended) == {("q", "gone"): 1}


def test_held_then_queued_then_running_waits_from_the_first_sighting_and_requeue_starts_again() -> None:
    t = JobTracker()
    t.commit(jobs({}), T)
    t.commit(jobs({"h": ("q", "held")}), T + 10)
    t.commit(jobs({"h": ("q", "queued")}), T + 100)
    act = t.commit(jobs({"h": ("q", "running")}), T + 200)
    assert dict(act.submitted) == {"q": 1} and act.wait["q"].total == 190.0
    t.commit(jobs({"h": ("q", "requeued")}), T + 300)
    act = t.commit(jobs({"h": ("q", "running")}), T + 330)
    assert dict(act.started) == {"q": 2} and act.wait["q"].total == 190.0 + 30.0


def test_a_job_that_moves_queue_is_counted_in_its_new_queue() -> None:
    t = JobTracker()
    t.commit(jobs({"m": ("a", "queued")}), T)
    act = t.commit(jobs({"m": ("b", "running")}), T + 50)
    assert dict(act.started) == {"b": 1}


def test_restored_first_seen_times_survive_a_restart_but_the_first_poll_still_only_seeds() -> None:
    before = JobTracker()
    before.commit(jobs({"a": ("q", "queued"), "r": ("q", "running")}), T)
    saved = before.waiting_since()
    assert saved == {"a": T}
    after = JobTracker(restored_waits=saved)
    act = after.commit(
        jobs({"a": ("q", "queued"), "n": ("q", "queued")}), T + 1000
    )  # the restarted exporter's seed poll
    assert dict(act.submitted) == {} and dict(act.ended) == {}  # r vanished meanwhile: not counted, as in a seed
    assert dict(act.oldest_queued_since) == {"q": T}  # a's age continues from before the restart
    act = after.commit(jobs({"a": ("q", "running"), "n": ("q", "running")}), T + 1100)
    assert act.wait["q"].total == 1100.0 + 100.0  # a from T, n from its first sighting at T+1000


def test_without_restored_times_the_wait_counts_from_the_first_poll_after_the_restart() -> None:
    after = JobTracker()
    after.commit(jobs({"a": ("q", "queued")}), T + 1000)
    act = after.commit(jobs({"a": ("q", "running")}), T + 1100)
    assert act.wait["q"].total == 100.0


def test_a_restored_time_in_the_future_is_ignored() -> None:
    t = JobTracker(restored_waits={"a": T + 999})
    act = t.commit(jobs({"a": ("q", "queued")}), T)
    assert dict(act.oldest_queued_since) == {"q": T}


def test_cumulative_buckets_end_with_inf_and_equal_the_count() -> None:
    t = JobTracker()
    t.commit(jobs({"a": ("q", "queued"), "b": ("q", "queued"), "c": ("q", "queued")}), T)
    act = t.commit(jobs({"a": ("q", "running"), "b": ("q", "queued"), "c": ("q", "queued")}), T + 45)
    act = t.commit(jobs({"b": ("q", "running"), "c": ("q", "queued"), "a": ("q", "running")}), T + 3 * 86400)
    pairs = act.wait["q"].cumulative()
    assert pairs[0] == (30.0, 0) and pairs[1] == (60.0, 1)  # a waited 45 s
    assert pairs[-2] == (172800.0, 1) and pairs[-1] == (float("inf"), 2)  # b waited 3 days
    assert act.wait["q"].count == 2


def test_a_centres_job_records_add_nothing_the_garbage_collector_tracks() -> None:
    # A full collection holds the interpreter lock, scrapes included, for as long as it takes to walk every
    # tracked object: one tracked record per listed job made it 18 ms at 200k jobs.
    tracker = JobTracker()
    tracker.commit(jobs({"seed": ("q", "queued")}), 0.0)
    gc.collect()
    before = len(gc.get_objects())
    tracker.commit(jobs({str(i): ("q", "queued" if i % 2 else "running") for i in range(10_000)}), 100.0)
    tracker.commit(jobs({str(i): ("q", "running") for i in range(10_000)}), 160.0)  # half of them change
    gc.collect()
    assert len(gc.get_objects()) - before < 100
    assert tracker.activity().started == {"q": 10_000}  # the records still do their job


def test_with_a_queue_budget_only_the_named_queues_and_other_keep_counts() -> None:
    t = JobTracker()
    t.commit(jobs({"a": ("q1", "queued"), "b": ("q2", "queued")}), T)
    act = t.commit(jobs({"a": ("q1", "running"), "b": ("q2", "running"), "c": ("q3", "queued")}), T + 60)
    assert dict(act.started) == {"q1": 1, "q2": 1} and dict(act.submitted) == {"q3": 1}
    assert t.known_queues() == {"q1", "q2", "q3"}
    # The next poll names q1 only: q2 and q3 are "other" in what the poller hands over, and their counts go.
    act = t.commit(
        jobs({"a": ("q1", "completed"), "b": ("other", "completed"), "d": ("other", "queued")}),
        T + 120,
        {"q1", "other"},
    )
    assert dict(act.submitted) == {"other": 1}  # d; c's submission was q3's, and q3 is no more
    assert dict(act.started) == {"q1": 1}
    assert dict(act.ended) == {("q1", "completed"): 1, ("other", "completed"): 1, ("other", "gone"): 1}  # b; c
    assert set(act.wait) == {"q1"} and dict(act.oldest_queued_since) == {"other": T + 120}
    assert t.known_queues() == {"q1", "other"}


# ---- usage: CPU-seconds and run times --------------------------------------------------------------

UNREADABLE = -1  # what run_seconds gives for a jobRunTime it cannot read


def run(queue: str, status: str, cpus: int, seconds: int | None, user: str = "u") -> Seen:
    return (queue, status, user, cpus, seconds)


def test_cpu_seconds_count_nothing_on_the_seed_poll_then_cpus_times_the_growth_of_each_run_time() -> None:
    t = JobTracker()
    # seed: a runs on 4 CPUs (100 s so far), b waits (2 CPUs, not started), z has completed. Nothing counted.
    act = t.commit(
        {"a": run("q", "running", 4, 100), "b": run("q", "queued", 2, None), "z": run("q", "completed", 8, 50)}, T
    )
    assert dict(act.cpu_seconds) == {}
    # +60 s: a grew by 60 s (4 × 60 = 240); b started and ran 30 s (2 × 30 = 60); c is new, running for 45 s
    # on 8 CPUs (all of it: 360); d is new and already completed after 500 s on 1 CPU (500); z unchanged.
    act = t.commit(
        {
            "a": run("q", "running", 4, 160),
            "b": run("q", "running", 2, 30),
            "c": run("q", "running", 8, 45),
            "d": run("q", "completed", 1, 500),
            "z": run("q", "completed", 8, 50),
        },
        T + 60,
    )
    assert dict(act.cpu_seconds) == {"q": 240 + 60 + 360 + 500}
    # +120 s: a completed after 170 s (its last 10 s: 40); b grew by 60 s (120); c vanished (nothing more).
    act = t.commit(
        {"a": run("q", "completed", 4, 170), "b": run("q", "running", 2, 90), "d": run("q", "completed", 1, 500)},
        T + 120,
    )
    assert dict(act.cpu_seconds) == {"q": 1160 + 40 + 120}
    # +180 s: nothing grew (a completed; b's run time was not read again): nothing added.
    act = t.commit({"a": run("q", "completed", 4, 170), "b": run("q", "running", 2, 90)}, T + 180)
    assert dict(act.cpu_seconds) == {"q": 1320}


def test_a_run_time_that_goes_backwards_adds_nothing_and_becomes_the_new_base() -> None:
    t = JobTracker()
    t.commit({"r": run("q", "running", 2, 1000)}, T)
    act = t.commit({"r": run("q", "running", 2, 1060)}, T + 60)
    assert dict(act.cpu_seconds) == {"q": 120}
    act = t.commit({"r": run("q", "requeued", 2, None)}, T + 120)  # waiting again, with no run time
    assert dict(act.cpu_seconds) == {"q": 120}
    act = t.commit({"r": run("q", "running", 2, 30)}, T + 180)  # running again: 30 < 1060
    assert dict(act.cpu_seconds) == {"q": 120}
    act = t.commit({"r": run("q", "running", 2, 90)}, T + 240)  # from the new base: 2 × 60
    assert dict(act.cpu_seconds) == {"q": 240}
    act = t.commit({"r": run("q", "requeued", 2, 0)}, T + 300)  # requeued with a run time of 0: the base is 0
    act = t.commit({"r": run("q", "running", 2, 50)}, T + 360)
    assert dict(act.cpu_seconds) == {"q": 340}


def test_a_run_time_that_cannot_be_read_adds_nothing_and_the_next_readable_one_counts_from_the_last() -> None:
    t = JobTracker()
    t.commit({"x": run("q", "running", 3, 100), "s": run("q", "running", 5, UNREADABLE)}, T)
    act = t.commit({"x": run("q", "running", 3, UNREADABLE), "s": run("q", "running", 5, 400)}, T + 60)
    assert dict(act.cpu_seconds) == {}  # x: nothing read; s: its run time before is unknown, 400 is its base
    act = t.commit({"x": run("q", "running", 3, 220), "s": run("q", "running", 5, 460)}, T + 120)
    assert dict(act.cpu_seconds) == {"q": 3 * 120 + 5 * 60}
    # A job new since the last poll ran only since then: its first readable run time counts whole.
    t.commit({"x": run("q", "running", 3, 220), "n": run("q", "running", 2, UNREADABLE)}, T + 180)
    act = t.commit({"x": run("q", "running", 3, 220), "n": run("q", "running", 2, 100)}, T + 240)
    assert dict(act.cpu_seconds) == {"q": 660 + 2 * 100}


def test_jobs_not_started_and_jobs_without_cpus_add_nothing() -> None:
    t = JobTracker()
    t.commit({}, T)
    act = t.commit({"w": run("q", "queued", 64, None), "z": run("q", "running", 0, 3600)}, T + 60)
    assert dict(act.cpu_seconds) == {}
    act = t.commit({"w": run("q", "cancelled", 64, None), "z": run("q", "running", 0, 3660)}, T + 120)
    assert dict(act.cpu_seconds) == {}


def test_cpu_seconds_of_a_queue_the_budget_folds_add_to_other_and_a_queue_that_loses_its_name_loses_them() -> None:
    t = JobTracker()
    t.commit({"a": run("big", "running", 1, 0), "b": run("small", "running", 1, 0)}, T)
    act = t.commit({"a": run("big", "running", 1, 60), "b": run("small", "running", 1, 60)}, T + 60)
    assert dict(act.cpu_seconds) == {"big": 60, "small": 60}
    # small is folded from now on: the poller hands its jobs over as "other".
    act = t.commit(
        {"a": run("big", "running", 1, 120), "b": run("other", "running", 1, 120)}, T + 120, {"big", "other"}
    )
    assert dict(act.cpu_seconds) == {"big": 120, "other": 60}


DAY0 = 19_676 * 86_400.0  # 2023-11-15 00:00 UTC, the first UTC midnight after T
DAY1 = DAY0 + 86_400


def everyone(run_seconds: int, *extra: tuple[str, Seen]) -> dict[str, Seen]:
    """One job each, all running in queue q since the same moment: a on 1 CPU, svc_backup on 8, b on 1, c on 4,
    d on 2 (16 CPUs in all), in that order."""
    cpus = {"a": 1, "svc_backup": 8, "b": 1, "c": 4, "d": 2}
    return {**{user: run("q", "running", n, run_seconds, user) for user, n in cpus.items()}, **dict(extra)}


def test_the_named_users_are_first_come_until_the_first_utc_day_then_the_top_by_cpu_seconds_of_30_days() -> None:
    users = UserNames(max_users=3, exclude=[re.compile("svc_.*")])
    t = JobTracker(users=users)
    # Day 0, the first poll: it seeds, and each running job's user gets a series at 0 while the set has room:
    # a, b, c (svc_backup is excluded: other; d comes when the set is full: other).
    act = t.commit(everyone(0), DAY0)
    assert dict(act.user_cpu_seconds) == {("q", "a"): 0, ("q", "other"): 0, ("q", "b"): 0, ("q", "c"): 0}
    # 100 s later: a 1 × 100, b 1 × 100, c 4 × 100; other = svc_backup 8 × 100 + d 2 × 100.
    act = t.commit(everyone(100), DAY0 + 100)
    assert dict(act.user_cpu_seconds) == {("q", "a"): 100, ("q", "other"): 1000, ("q", "b"): 100, ("q", "c"): 400}
    assert users.named == {"a", "b", "c"}
    # The first poll of day 1 counts its 100 s under the names it finds (a 200, b 200, c 800, other 2000), then
    # chooses by day 0's CPU-seconds, svc_backup aside: c 400, d 200, then a and b with 100 each, a first by
    # name. d's series starts at 0; b leaves, and its series goes at the next poll.
    act = t.commit(everyone(200), DAY1 + 100)
    assert users.named == {"c", "d", "a"}
    assert dict(act.user_cpu_seconds) == {
        ("q", "a"): 200,
        ("q", "other"): 2000,
        ("q", "b"): 200,
        ("q", "c"): 800,
        ("q", "d"): 0,
    }
    # From now on b adds to other: other 2000 + b 100 + svc_backup 800; d 2 × 100.
    act = t.commit(everyone(300), DAY1 + 200)
    assert dict(act.user_cpu_seconds) == {("q", "a"): 300, ("q", "other"): 2900, ("q", "c"): 1200, ("q", "d"): 200}
    # Each increment went to one series: these, plus the 200 b counted before it left, are all of the queue's.
    assert sum(act.user_cpu_seconds.values()) + 200 == act.cpu_seconds["q"] == 16 * 300


def test_between_choices_a_user_is_named_while_the_set_has_room_and_a_quiet_user_is_not_chosen() -> None:
    users = UserNames(max_users=2)
    t = JobTracker(users=users)
    t.commit({"1": run("q", "running", 1, 0, "a"), "2": run("q", "running", 1, 0, "b")}, DAY0)
    t.commit({"1": run("q", "running", 1, 60, "a"), "2": run("q", "completed", 1, 60, "b")}, DAY0 + 60)
    # Day 1: a and b used 60 s each on day 0; both are chosen (b has no job left, its series stays).
    t.commit({"1": run("q", "running", 1, 120, "a")}, DAY1)
    assert users.named == {"a", "b"}
    # Day 31: the 30 days before it are days 1 to 30, where only a used CPU (60 s on day 1). The choice names a
    # alone (b's series goes), and e, new the next poll, takes the room left.
    day31 = DAY0 + 31 * 86_400
    t.commit({"1": run("q", "running", 1, 180, "a")}, day31)
    assert users.named == {"a"}
    act = t.commit({"1": run("q", "running", 1, 240, "a"), "3": run("q", "running", 2, 30, "e")}, day31 + 60)
    assert users.named == {"a", "e"}
    assert dict(act.user_cpu_seconds) == {("q", "a"): 240, ("q", "e"): 60}


def test_a_restart_on_a_later_day_chooses_from_the_saved_daily_figures_of_the_last_30_days() -> None:
    day0 = int(DAY0 // 86_400)
    saved = SavedUsers(day0, ("a",), {day0: {"a": 10, "b": 50}, day0 - 30: {"c": 999}})
    users = UserNames(max_users=1, saved=saved)
    assert (users.name("a"), users.name("b")) == ("a", "other")  # the same set as before the restart: full
    # Day 1: the 30 days before are day0 - 29 to day0; c's figure is of day0 - 30, a day too old.
    assert users.take({}, DAY1) == {"a"}
    assert users.named == {"b"}
    assert users.name("a") == "other" and users.name("new") == "other"


def test_at_most_10000_users_are_tracked_and_one_beyond_them_is_not_chosen() -> None:
    users = UserNames(max_users=1)
    users.take({f"u{i:05}": 1 for i in range(10_000)}, DAY0)
    users.take({"zz": 1_000_000, "u00009": 5}, DAY0 + 60)
    assert users.take({}, DAY1) is not None
    assert users.named == {"u00009"}  # zz used the most, but came when 10,000 users were tracked


def test_without_per_user_there_are_no_user_cpu_seconds() -> None:
    t = JobTracker()
    t.commit({"a": run("q", "running", 1, 0)}, T)
    act = t.commit({"a": run("q", "running", 1, 60)}, T + 60)
    assert dict(act.user_cpu_seconds) == {} and dict(act.cpu_seconds) == {"q": 60}


def test_the_run_time_of_a_job_is_observed_once_when_it_is_seen_ending() -> None:
    t = JobTracker()
    # seed: nothing is observed, not even a job already completed.
    act = t.commit(
        {
            "a": run("q", "running", 1, 30),
            "b": run("q", "running", 1, 4000),
            "c": run("q", "running", 1, 700_000),
            "w": run("q", "queued", 1, None),
            "old": run("q", "completed", 1, 100),
        },
        T,
    )
    assert dict(act.run_time) == {}
    # a is seen completed after 45 s; b left the list without a terminal status (last seen at 4,000 s); w was
    # cancelled while waiting (it never ran: not observed); n is new and already failed after 200 s.
    act = t.commit(
        {
            "a": run("q", "completed", 1, 45),
            "c": run("q", "running", 1, 700_060),
            "w": run("q", "cancelled", 1, None),
            "n": run("q", "failed", 1, 200),
            "old": run("q", "completed", 1, 100),
        },
        T + 60,
    )
    hist = act.run_time["q"]
    assert (hist.count, hist.total) == (3, 45 + 4000 + 200)
    # Buckets 60, 300, 900, 3600, 14400, ...: 45 ≤ 60, 200 ≤ 300, 4000 ≤ 14400.
    assert hist.counts == (1, 1, 0, 0, 1, 0, 0, 0, 0, 0)
    # a stays listed as completed: not observed again. c times out after more than 7 days: +Inf.
    act = t.commit({"a": run("q", "completed", 1, 45), "c": run("q", "timeout", 1, 700_100)}, T + 120)
    hist = act.run_time["q"]
    assert hist.count == 4 and hist.counts[-1] == 1 and hist.total == 4245 + 700_100
    assert hist.cumulative()[-1] == (float("inf"), 4)


def test_a_job_gone_from_a_folded_queue_is_observed_as_other() -> None:
    t = JobTracker()
    t.commit({"a": run("small", "running", 1, 100)}, T)
    act = t.commit({}, T + 60, {"big", "other"})
    assert set(act.run_time) == {"other"} and act.run_time["other"].total == 100


def test_the_state_file_run_seconds_carry_cpu_seconds_across_a_restart() -> None:
    before = JobTracker()
    before.commit(
        {
            "r": run("q", "running", 2, 100),
            "s": run("q", "suspended", 1, 50),
            "w": run("q", "queued", 4, None),
            "c": run("q", "completed", 8, 70),
        },
        T,
    )
    saved = before.run_seconds()
    assert saved == {"r": 100, "s": 50}  # started, not ended: queued and completed jobs are not kept
    after = JobTracker(restored_runs={**saved, "q": 500})
    # The first poll after the restart: r grew by 600 s (2 × 600); s ran on for 10 s (1 × 10) and ended; w
    # started meanwhile and ran 300 s, but is not in the file: seeded, like n (new); q's run time went
    # backwards (requeued meanwhile): nothing.
    act = after.commit(
        {
            "r": run("q", "running", 2, 700),
            "s": run("q", "completed", 1, 60),
            "w": run("q", "running", 4, 300),
            "n": run("q", "running", 8, 30),
            "q": run("q", "running", 1, 20),
        },
        T + 600,
    )
    assert dict(act.cpu_seconds) == {"q": 1200 + 10}
    assert dict(act.run_time) == {} and dict(act.submitted) == {}  # the first poll still only seeds the rest
    act = after.commit(
        {"r": run("q", "running", 2, 760), "w": run("q", "running", 4, 360), "q": run("q", "running", 1, 80)},
        T + 660,
    )
    assert dict(act.cpu_seconds) == {"q": 1210 + 120 + 240 + 60}


def test_a_users_cpu_seconds_series_starts_at_zero_when_their_job_is_first_seen_running() -> None:
    """So that increase() over the counter sees the first growth too: a series born at 600 would lose it."""
    t = JobTracker(users=UserNames(max_users=10))
    act = t.commit({"a": run("q", "running", 2, 100, "alice"), "b": run("q", "queued", 4, None, "bob")}, T)
    assert dict(act.user_cpu_seconds) == {("q", "alice"): 0}  # seeding counts nothing; bob has not run
    act = t.commit({"a": run("q", "running", 2, 400, "alice"), "b": run("q", "queued", 4, None, "bob")}, T + 300)
    assert dict(act.user_cpu_seconds) == {("q", "alice"): 600}


def test_a_job_missed_by_paging_is_kept_unchanged_until_read_again_and_never_counted_as_gone_or_new() -> None:
    t = JobTracker()
    t.commit({"a": ("q", "running", "u", 4, 100), "b": ("q", "queued", "u", 1, None)}, T)
    # Poll 2 did not read a, and nothing confirmed that it left: it stays as it was.
    act = t.commit({"b": ("q", "queued", "u", 1, None)}, T + 60, left=frozenset())
    assert dict(act.ended) == {} and dict(act.submitted) == {}
    assert t.missing({"b"}) == (["a"], [])
    # Poll 3 reads it again, 150 s further on: 4 CPUs × (250 - 100) s, not its whole run time again.
    act = t.commit({"a": ("q", "running", "u", 4, 250), "b": ("q", "queued", "u", 1, None)}, T + 120, left=None)
    assert dict(act.ended) == {} and dict(act.submitted) == {}
    assert dict(act.cpu_seconds) == {"q": 4 * 150}
    assert t.departures == 0


def test_a_missed_job_is_gone_once_a_complete_read_or_a_lookup_confirms_it_or_after_ten_misses() -> None:
    seen = {k: ("q", "queued", "u", 1, None) for k in ("a", "b", "c", "d")}
    t = JobTracker()
    t.commit(seen, T)
    act = t.commit({"d": seen["d"]}, T + 60, left=frozenset({"a"}))  # a: looked up, not listed
    assert dict(act.ended) == {("q", "gone"): 1} and t.departures == 1
    act = t.commit({"d": seen["d"]}, T + 120, left=None)  # a read without gaps: b and c have left
    assert dict(act.ended) == {("q", "gone"): 3} and t.departures == 3
    t.commit({"e": ("q", "queued", "u", 1, None)}, T + 180, left=None)  # d leaves too; e arrives
    for i in range(9):  # e goes unread, unconfirmed, nine polls: kept
        act = t.commit({}, T + 240 + 60 * i, left=frozenset())
        assert dict(act.ended) == {("q", "gone"): 4}
    act = t.commit({}, T + 900, left=frozenset())  # the tenth: taken to have left
    assert dict(act.ended) == {("q", "gone"): 5} and t.departures == 5


def test_the_missing_jobs_are_told_apart_by_whether_they_had_ended() -> None:
    t = JobTracker()
    t.commit(
        {"a": ("q", "running", "u", 1, 5), "b": ("q", "completed", "u", 1, 9), "c": ("q", "queued", "u", 1, None)}, T
    )
    assert t.missing({"c"}) == (["a"], ["b"])
    assert t.missing({"a", "b", "c"}) == ([], [])
