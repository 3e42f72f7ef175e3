"""The backlog group, as a table: jobs in, samples out (reasons, oldest queued age, submitted, started and ended
counters, waits). Every expected value is worked out by hand; a comment says how where it is not obvious."""

from __future__ import annotations

from exporter.groups.backlog import Backlog
from exporter.groups.base import PollEnd, Settings
from exporter.model import Budget
from exporter.rows import normalise_reason
from tests.polls import Polls, Samples, job

T = 1_700_000_000.0
WAIT_LE = ("30.0", "60.0", "300.0", "900.0", "1800.0", "3600.0", "7200.0", "14400.0", "28800.0", "43200.0")
WAIT_LE += ("86400.0", "172800.0", "+Inf")
ENDED = ("cancelled", "completed", "failed", "node_fail", "timeout", "gone")


def per_queue(s: Samples, name: str) -> dict[str, float]:
    """Every sample of a family keyed by queue, zeros included."""
    return s.by(name, "queue", nonzero=False)


def submitted(s: Samples) -> dict[str, float]:
    return per_queue(s, "sugon_jobs_submitted_total")


def started(s: Samples) -> dict[str, float]:
    return per_queue(s, "sugon_jobs_started_total")


def ended(s: Samples) -> dict[tuple[str, str], float]:
    return s.by("sugon_jobs_ended_total", "queue", "status", nonzero=False)


def ends(queue: str, **counts: int) -> dict[tuple[str, str], float]:
    """The six ended series of ``queue``: the counts given, 0 for the rest."""
    return {(queue, status): counts.get(status, 0) for status in ENDED}


def waits(s: Samples, queue: str) -> tuple[dict[str, float], float, float]:
    """One queue's wait histogram: cumulative counts by ``le``, count, sum."""
    buckets = {
        le: v
        for (q, le), v in s.by("sugon_job_wait_seconds_bucket", "queue", "le", nonzero=False).items()
        if q == queue
    }
    return (
        buckets,
        per_queue(s, "sugon_job_wait_seconds_count")[queue],
        per_queue(s, "sugon_job_wait_seconds_sum")[queue],
    )


def cumulative(*counts: int) -> dict[str, float]:
    """Cumulative bucket counts, one per bound of WAIT_LE."""
    assert len(counts) == len(WAIT_LE)
    return dict(zip(WAIT_LE, counts))


NO_WAITS = (cumulative(*[0] * 13), 0, 0)


def oldest(s: Samples) -> dict[str, float]:
    return per_queue(s, "sugon_oldest_queued_job_age_seconds")


def reasons(s: Samples) -> dict[tuple[str, str], float]:
    return s.by("sugon_queued_jobs_by_reason", "queue", "reason", nonzero=False)


def test_a_sequence_of_polls_counts_submissions_starts_ends_and_waits() -> None:
    p = Polls()
    # Poll 1 seeds: a and w queued, b running, c completed. Nothing is counted; every counter of q is at 0.
    s = p.poll([job("a"), job("b", status="running"), job("c", status="completed"), job("w", reason="Priority")], T)
    assert (submitted(s), started(s), ended(s), waits(s, "q")) == ({"q": 0}, {"q": 0}, ends("q"), NO_WAITS)
    assert oldest(s) == {"q": 0.0}  # a and w first seen waiting now
    assert reasons(s) == {("q", "none"): 1, ("q", "Priority"): 1}
    # +60 s: a starts (waited 60 s); d is new and queued; e is new and already running (waited < 1 poll: 0 s);
    # c left the list having completed: not gone.
    s = p.poll(
        [
            job("a", status="running"),
            job("b", status="running"),
            job("d"),
            job("e", status="running"),
            job("w", reason="Priority"),
        ],
        T + 60,
    )
    assert (submitted(s), started(s), ended(s)) == ({"q": 2}, {"q": 2}, ends("q"))
    assert waits(s, "q") == (cumulative(1, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2), 2, 60.0)  # 0 s ≤ 30 s, 60 s ≤ 60 s
    assert oldest(s) == {"q": 60.0}  # w, first seen at T
    assert reasons(s) == {("q", "none"): 1, ("q", "Priority"): 1}  # d, w
    # +400 s: b completes, d is cancelled while waiting, a left without a terminal status.
    polled = [
        job("b", status="completed"),
        job("d", status="cancelled"),
        job("e", status="running"),
        job("w", reason="Priority"),
    ]
    s = p.poll(polled, T + 400)
    assert (submitted(s), started(s)) == ({"q": 2}, {"q": 2})  # d never started
    assert ended(s) == ends("q", completed=1, cancelled=1, gone=1)
    assert oldest(s) == {"q": 400.0} and reasons(s) == {("q", "Priority"): 1}
    # +460 s: nothing changed: no counter moves.
    s = p.poll(polled, T + 460)
    assert (submitted(s), started(s), ended(s)) == ({"q": 2}, {"q": 2}, ends("q", completed=1, cancelled=1, gone=1))
    assert waits(s, "q")[1:] == (2, 60.0) and oldest(s) == {"q": 460.0}


def test_a_job_seen_queued_then_completed_counts_as_started_and_ended() -> None:
    p = Polls()
    p.poll([job("x")], T)
    s = p.poll([job("x", status="completed")], T + 3600)
    assert (started(s), ended(s)) == ({"q": 1}, ends("q", completed=1))
    assert waits(s, "q") == (cumulative(0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1), 1, 3600.0)  # 3600 s ≤ 1 h


def test_a_job_first_seen_already_finished_has_its_end_counted_under_its_status() -> None:
    p = Polls()
    p.poll([], T)
    statuses = ("completed", "completed", "failed", "timeout", "node_fail", "cancelled")
    s = p.poll([job(str(i), status=st) for i, st in enumerate(statuses)], T + 60)
    assert submitted(s) == {"q": 6}
    assert started(s) == {"q": 5}  # all but the cancelled one ran; each waited less than a poll: 0 s
    assert waits(s, "q") == (cumulative(*[5] * 13), 5, 0.0)
    assert ended(s) == ends("q", completed=2, failed=1, timeout=1, node_fail=1, cancelled=1)


def test_ended_counts_keep_rising_past_one() -> None:
    p = Polls()
    p.poll([job(k, status="running") for k in "abcdef"], T)
    s = p.poll([job("a", status="completed"), job("b", status="completed"), job("c", status="running")], T + 60)
    assert ended(s) == ends("q", completed=2, gone=3)  # d, e, f left while running
    s = p.poll([job("a", status="completed"), job("c", status="completed")], T + 120)
    assert ended(s) == ends("q", completed=3, gone=3)  # b had completed before it left: not gone


def test_an_outage_counts_what_changed_once_and_a_job_that_left_meanwhile_once() -> None:
    p = Polls()
    p.poll([job("a"), job("b")], T)
    for i in range(1, 11):  # the polls at T+60 .. T+600 fail after reading
        p.failed([job("a", status="running"), job("c")], T + 60 * i)
    s = p.poll([job("a", status="running")], T + 660)
    assert (submitted(s), started(s), ended(s)) == ({"q": 0}, {"q": 1}, ends("q", gone=1))
    assert waits(s, "q") == (cumulative(0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1), 1, 660.0)  # 660 s ≤ 15 m
    s = p.poll([job("a", status="running")], T + 720)
    assert (submitted(s), started(s), ended(s)) == ({"q": 0}, {"q": 1}, ends("q", gone=1))


def test_a_failed_poll_leaves_no_trace_in_the_gauges_of_the_next() -> None:
    p = Polls()
    p.poll([job("a", reason="Priority")], T)
    p.failed([job(k, queue="gone", reason="Resources") for k in "xyz"], T + 60)
    s = p.poll([job("a", reason="Priority")], T + 120)
    assert reasons(s) == {("q", "Priority"): 1} and oldest(s) == {"q": 120.0}


def test_waits_fall_in_the_bucket_whose_bound_they_equal() -> None:
    p = Polls()
    p.poll([job(k) for k in "abcd"], T)
    for key, at in (("a", 30), ("b", 60), ("c", 172_800)):
        p.poll([job(k, status="running" if k <= key else "queued") for k in "abcd"], T + at)
    s = p.poll([job(k, status="running") for k in "abcd"], T + 172_801)
    assert waits(s, "q") == (cumulative(1, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 3, 4), 4, 30 + 60 + 172_800 + 172_801)


def test_held_then_queued_then_running_waits_from_the_first_sighting_and_a_requeue_starts_again() -> None:
    p = Polls()
    p.poll([], T)
    p.poll([job("h", status="held")], T + 10)
    p.poll([job("h", status="queued")], T + 100)
    s = p.poll([job("h", status="running")], T + 200)
    assert (submitted(s), started(s)) == ({"q": 1}, {"q": 1}) and waits(s, "q")[1:] == (1, 190.0)
    p.poll([job("h", status="requeued")], T + 300)
    s = p.poll([job("h", status="running")], T + 330)
    assert (submitted(s), started(s)) == ({"q": 1}, {"q": 2}) and waits(s, "q")[1:] == (2, 190.0 + 30.0)
    assert ended(s) == ends("q")


def test_a_job_that_moves_queue_starts_in_its_new_queue() -> None:
    p = Polls()
    p.poll([job("m", queue="a")], T)
    s = p.poll([job("m", queue="b", status="running")], T + 50)
    assert started(s) == {"a": 0, "b": 1}  # a is known (zero-filled): its series stays at 0
    assert waits(s, "b")[1:] == (1, 50.0) and waits(s, "a") == NO_WAITS


def test_every_known_queue_has_every_counter_at_zero_from_the_start() -> None:
    seen = {"idle": T - 3600, "old": T - 86_401, "day": T - 86_400}  # from a state file; old is over a day ago
    p = Polls(queues_seen=seen)
    s = p.poll([job("x", queue="busy", status="running")], T)
    zero = {"busy": 0, "day": 0, "idle": 0}
    assert (submitted(s), started(s), oldest(s)) == (zero, zero, zero)
    assert ended(s) == {**ends("busy"), **ends("day"), **ends("idle")}
    for queue in zero:
        assert waits(s, queue) == NO_WAITS


def test_the_counters_before_any_poll_are_zero_for_every_queue_with_series() -> None:
    """What the poller serves at start, before its first poll: a 0-valued series of every known queue."""
    families = Backlog(Settings(cluster="c")).kept(PollEnd(now=T, series=frozenset({"a", "b"})))
    s = Samples(families)
    assert (submitted(s), started(s)) == ({"a": 0, "b": 0}, {"a": 0, "b": 0})
    assert ended(s) == {**ends("a"), **ends("b")}
    assert waits(s, "a") == waits(s, "b") == NO_WAITS


def test_a_queue_budget_counts_folded_queues_as_other_and_a_queue_that_loses_its_name_loses_its_series() -> None:
    p = Polls(budget=Budget(max_queues=2))
    p.poll([job("a", queue="q1"), job("b", queue="q2")], T)
    # Poll 2: three queues with a job each, two names: q1 and q2 (ties by name); q3 is other.
    s = p.poll(
        [job("a", queue="q1", status="running"), job("b", queue="q2", status="running"), job("c", queue="q3")], T + 60
    )
    assert submitted(s) == {"q1": 0, "q2": 0, "other": 1}  # c, counted as other
    assert started(s) == {"q1": 1, "q2": 1, "other": 0}
    # Poll 3: q3 has three jobs, q1 one (a completes), q2 none (b left while running): q3 and q1 are named;
    # q2, known with 0 jobs, folds. b's departure counts under q2, the name it had when last seen, and q2's
    # series go with its name; other keeps what it counted (c's submission) though c's queue is named now.
    s = p.poll([job("a", queue="q1", status="completed"), *(job(k, queue="q3") for k in "cde")], T + 120)
    assert submitted(s) == {"q1": 0, "q3": 2, "other": 1}  # d, e
    assert started(s) == {"q1": 1, "q3": 0, "other": 0}
    assert ended(s) == {**ends("q1", completed=1), **ends("other"), **ends("q3")}
    assert waits(s, "q1")[1:] == (1, 60.0) and waits(s, "q3") == waits(s, "other") == NO_WAITS
    assert oldest(s) == {"q1": 0.0, "other": 0.0, "q3": 60.0}  # c, first seen at T+60
    assert reasons(s) == {("q3", "none"): 3}
    assert s.by("sugon_queues_folded") == {(): 1}  # q2


def test_a_job_that_left_is_counted_under_the_name_its_queue_had_when_it_was_last_seen() -> None:
    p = Polls(budget=Budget(max_queues=1))
    # Seed: big has two jobs, small one: small is other.
    p.poll([job("j1", queue="big"), job("j2", queue="big"), job("x", queue="small", status="running", run=100)], T)
    # x leaves; only big has jobs, and big and other fit the budget: every queue is named now, small too, had
    # it jobs. x was last seen as other: its departure is other's.
    s = p.poll([job("j1", queue="big"), job("j2", queue="big")], T + 60)
    assert ended(s) == {**ends("big"), **ends("other", gone=1)}


def test_a_job_that_left_from_a_queue_that_lost_its_name_meanwhile_is_counted_there_and_forgotten() -> None:
    p = Polls(budget=Budget(max_queues=1))
    p.poll([job("x", queue="small", status="running")], T)
    # x leaves small as big comes with two jobs: big takes the one name; x's departure counts under small, the
    # name it had, and small's series go with its name: other has counted nothing. (other has series: small
    # had one, its user's CPU-seconds at 0, and folds into other.)
    s = p.poll([job("j1", queue="big"), job("j2", queue="big")], T + 60)
    assert ended(s) == {**ends("big"), **ends("other")} and submitted(s) == {"big": 2, "other": 0}


def test_the_oldest_queued_age_is_per_queue_and_the_oldest_of_the_queues_folded_into_other() -> None:
    p = Polls(budget=Budget(max_queues=1))
    big = [job(f"r{i}", queue="big", status="running") for i in range(4)]
    p.poll([*big, job("a", queue="s1"), job("a2", queue="s1")], T)
    p.poll([*big, job("a", queue="s1"), job("b", queue="s2")], T + 50)
    # At T+100: a waited 100 s (a2 left), b 50 s, c 0 s; h is held, not queued: big has no queued job.
    s = p.poll(
        [*big, job("a", queue="s1"), job("b", queue="s2"), job("c", queue="s2"), job("h", queue="big", status="held")],
        T + 100,
    )
    assert oldest(s) == {"big": 0.0, "other": 100.0}
    assert reasons(s) == {("other", "none"): 3}


def test_the_oldest_queued_age_goes_on_from_a_restored_first_sighting() -> None:
    p = Polls(restored_waits={"a": T - 500, "b": T + 10})  # b's time is after the poll: no first sighting is
    s = p.poll([job("a"), job("b", queue="r")], T)
    assert oldest(s) == {"q": 500.0, "r": 0.0}
    s = p.poll([job("a"), job("b", queue="r")], T + 60)
    assert oldest(s) == {"q": 560.0, "r": 60.0}


def test_queued_jobs_by_reason_count_every_job_of_every_user() -> None:
    p = Polls()
    jobs = [
        job("1", user="alice", reason="Priority"),
        job("2", user="bob", reason="Priority"),
        job("3", user="bob", reason="Priority"),
        job("4", user="carol", reason="Resources"),
        job("5", queue="gpu", user="alice", reason="Priority"),
        job("6", user="alice", status="held", reason="Priority"),  # not queued: not counted
        job("7", user="alice", status="running", reason="Priority"),
    ]
    s = p.poll(jobs, T)
    assert reasons(s) == {("q", "Priority"): 3, ("q", "Resources"): 1, ("gpu", "Priority"): 1}


def test_reasons_beyond_twenty_per_cluster_become_other_with_ties_broken_by_name() -> None:
    jobs = []
    for i in range(25):  # reason r00 has 25 jobs, r01 24, ... r24 1; even ones in queue p, odd ones in q
        jobs += [job(f"{i}-{n}", queue="p" if i % 2 == 0 else "q", reason=f"r{i:02d}") for n in range(25 - i)]
    jobs.append(job("run", queue="p", status="running", reason="ignored"))  # only queued jobs count
    s = Polls().poll(jobs, T)
    # r00..r19 keep their names; r20..r24 have 5, 4, 3, 2, 1 jobs: 5 + 3 + 1 in p, 4 + 2 in q.
    expected = {("p" if i % 2 == 0 else "q", f"r{i:02d}"): 25 - i for i in range(20)}
    assert reasons(s) == {**expected, ("p", "other"): 9, ("q", "other"): 6}
    assert sum(reasons(s).values()) == sum(range(1, 26))
    # 21 reasons of one job each: the 20 first by name keep theirs, "u" becomes other.
    s = Polls().poll([job(c, reason=c) for c in "abcdefghijklmnopqrstu"], T)
    assert reasons(s) == {**{("q", c): 1 for c in "abcdefghijklmnopqrst"}, ("q", "other"): 1}


def test_a_job_missed_by_paging_is_counted_neither_gone_nor_new_and_is_gone_once_confirmed() -> None:
    p = Polls()
    p.poll([job(k) for k in "abcd"], T)
    s = p.poll([job("d")], T + 60, left=frozenset({"a"}))  # a: looked up, not listed; b and c: not read
    assert (submitted(s), ended(s)) == ({"q": 0}, ends("q", gone=1))
    s = p.poll([job("b"), job("d")], T + 120, left=frozenset())  # b is read again: it never left
    assert (submitted(s), ended(s)) == ({"q": 0}, ends("q", gone=1))
    s = p.poll([job("d")], T + 180)  # read without gaps: b and c have left
    assert (submitted(s), ended(s)) == ({"q": 0}, ends("q", gone=3))
    p.poll([job("e")], T + 240)  # d leaves, e arrives
    for i in range(9):  # e goes unread, unconfirmed, nine polls: kept
        s = p.poll([], T + 300 + 60 * i, left=frozenset())
        assert ended(s) == ends("q", gone=4), i
    s = p.poll([], T + 900, left=frozenset())  # the tenth: taken to have left
    assert (submitted(s), ended(s)) == ({"q": 1}, ends("q", gone=5))


def test_a_job_seen_first_neither_waiting_nor_running_waited_nothing_when_it_starts() -> None:
    p = Polls()
    p.poll([], T)
    p.poll([job("o", status="other")], T + 60)
    s = p.poll([job("o", status="running")], T + 3600)
    assert started(s) == {"q": 1} and waits(s, "q") == (cumulative(*[1] * 13), 1, 0.0)


def test_reasons_are_ranked_by_their_jobs_over_every_queue_not_by_name() -> None:
    # zz has 6 jobs, 3 in each of two queues; a..t one each: zz and a..s keep their names, t is other.
    jobs = [job(f"zz{i}", queue="p" if i % 2 else "q", reason="zz") for i in range(6)]
    jobs += [job(c, reason=c) for c in "abcdefghijklmnopqrst"]
    s = Polls().poll(jobs, T)
    assert reasons(s) == {
        ("q", "zz"): 3,
        ("p", "zz"): 3,
        **{("q", c): 1 for c in "abcdefghijklmnopqrs"},
        ("q", "other"): 1,
    }
    # two reasons of 2 jobs each, one in one queue, the other split over two: each counts 2, ties by name
    jobs = [job("1", reason="y"), job("2", queue="p", reason="y"), job("3", reason="x"), job("4", reason="x")]
    jobs += [job(f"r{i:02}", reason=f"r{i:02}") for i in range(19)]
    s = Polls().poll(jobs, T)
    assert reasons(s) == {
        ("q", "y"): 1,
        ("p", "y"): 1,
        ("q", "x"): 2,
        **{("q", f"r{i:02}"): 1 for i in range(18)},
        ("q", "other"): 1,  # r18
    }


def test_a_reason_is_reduced_to_its_kind() -> None:
    cases = {
        "ReqNodeNotAvail, UnavailableNodes:n[1-3]": "ReqNodeNotAvail",
        "Resources": "Resources",
        "Dependency (job 12 not finished)": "Dependency",
        "AssocGrpCpuLimit:cpu=256": "AssocGrpCpuLimit",
        "a:b:c": "a",
        "a,b,c": "a",
        "x (1) y (2), z": "x  y",
        "  QOSMaxJobsPerUserLimit  ": "QOSMaxJobsPerUserLimit",
        "(null)": "none",
        ":x": "none",
        "": "none",
        "x" * 100: "x" * 64,
        "Bad\udfffReason": "Bad?Reason",
    }
    assert {raw: normalise_reason(raw) for raw in cases} == cases
    assert [normalise_reason(v) for v in (None, 42, ["Priority"])] == ["none"] * 3
