"""The book of known jobs on hand-made sequences of polls: what each reading means (Seen), which jobs have left
(Gone), and what a state file keeps. Every expected value is worked out by hand."""

from __future__ import annotations

from exporter.book import MAX_MISSED, JobBook
from exporter.model import INVALID, Gone, Job, Seen
from tests.polls import job

T = 1_700_000_000.0


def seen(
    j: Job,
    *,
    new: bool = False,
    submitted: bool = False,
    starts: bool = False,
    waited: float = 0.0,
    ends: bool = False,
    started: bool = False,
    ran: int = 0,
    run: int = 0,
    since: float | None = None,
) -> Seen:
    """The Seen expected of ``j``: every field given, no default taken from the code under test."""
    return Seen(
        job=j,
        new=new,
        submitted=submitted,
        starts=starts,
        waited=waited,
        ends=ends,
        started=started,
        ran=ran,
        run=run,
        since=since,
    )


def poll(
    book: JobBook, jobs: list[Job], now: float, left: frozenset[str] | None = None
) -> tuple[list[Seen], list[Gone]]:
    """One successful poll that read ``jobs``: what each means, and the jobs that left."""
    book.begin()
    readings = [book.take(j, now) for j in jobs]
    return readings, book.commit(left)


def test_the_first_poll_learns_the_list_and_counts_no_event() -> None:
    book = JobBook()
    assert book.seeding
    a, b, c = job("a"), job("b", status="running", cpus=4, run=100), job("c", status="completed", run=50)
    readings, gone = poll(book, [a, b, c], T)
    assert readings == [
        seen(a, new=True, run=0, since=T),  # waiting since now; not started: its run base is 0
        seen(b, new=True, started=True, run=100),  # its run time so far is the base, none of it counted
        seen(c, new=True, started=True, run=50),  # already completed: no end counted
    ]
    assert gone == [] and book.departures == 0 and not book.seeding


def test_a_second_poll_sees_starts_with_their_waits_submissions_ends_and_a_departure() -> None:
    book = JobBook()
    a, b, c = job("a"), job("b", status="running", run=100), job("c", status="completed", run=50)
    poll(book, [a, b, c], T)
    # +60 s: a starts after waiting 60 s and has run 30 s; b ran 60 s more; d is new and waits; e is new and
    # already running (45 s, all of it new); f is new and already completed after 500 s; g is new and was
    # cancelled without running; c (completed) is not listed any more.
    a2, b2 = job("a", status="running", run=30), job("b", status="running", run=160)
    d, e, f = job("d"), job("e", status="running", run=45), job("f", status="completed", run=500)
    g = job("g", status="cancelled")
    readings, gone = poll(book, [a2, b2, d, e, f, g], T + 60)
    assert readings == [
        seen(a2, starts=True, waited=60.0, started=True, ran=30, run=30),
        seen(b2, started=True, ran=60, run=160),
        seen(d, new=True, submitted=True, since=T + 60),
        seen(e, new=True, submitted=True, starts=True, started=True, ran=45, run=45),  # waited less than a poll
        seen(f, new=True, submitted=True, starts=True, ends=True, started=True, ran=500, run=500),
        seen(g, new=True, submitted=True, ends=True),
    ]
    assert gone == [Gone(queue="q", status="completed", run=50, started=True, ended=True)]
    assert book.departures == 1
    # +120 s: a completes after 40 s (10 more); b is not listed: it left while running; f stays listed.
    a3 = job("a", status="completed", run=40)
    readings, gone = poll(book, [a3, d, e, f, g], T + 120)
    assert readings[0] == seen(a3, ends=True, started=True, ran=10, run=40)
    assert readings[3] == seen(f, started=True, run=500)  # its end was counted once, when first seen
    assert readings[4] == seen(g)
    assert gone == [Gone(queue="q", status="running", run=160, started=True, ended=False)]
    assert book.departures == 2
    # +180 s: nothing changed: no event, nothing ran, nothing left.
    readings, gone = poll(book, [a3, d, e, f, g], T + 180)
    assert [(r.submitted, r.starts, r.ends, r.ran) for r in readings] == [(False, False, False, 0)] * 5
    assert gone == [] and book.departures == 2


def test_a_job_seen_queued_then_completed_started_and_ended_at_once() -> None:
    book = JobBook()
    poll(book, [job("x")], T)
    x = job("x", status="completed", run=3000)
    readings, _ = poll(book, [x], T + 3600)
    assert readings == [seen(x, starts=True, waited=3600.0, ends=True, started=True, ran=3000, run=3000)]


def test_an_outage_counts_what_changed_once_and_a_job_that_left_meanwhile_once() -> None:
    book = JobBook()
    poll(book, [job("a"), job("b")], T)
    # polls at T+60 ... T+600 failed: what they read is forgotten
    for i in range(1, 11):
        book.begin()
        book.take(job("a", status="running", run=60 * i), T + 60 * i)
        book.take(job("c"), T + 60 * i)
        book.abandon()
    a = job("a", status="running", run=600)
    readings, gone = poll(book, [a], T + 660)
    assert readings == [seen(a, starts=True, waited=660.0, started=True, ran=600, run=600)]
    assert gone == [Gone(queue="q", status="queued", run=0, started=False, ended=False)]  # b
    readings, gone = poll(book, [a], T + 720)
    assert readings == [seen(a, started=True, run=600)] and gone == []


def test_a_failed_first_poll_leaves_the_next_one_to_seed() -> None:
    book = JobBook()
    book.begin()
    book.take(job("a", status="running", run=10), T)
    book.abandon()
    assert book.seeding and book.missing() == ([], [])
    a = job("a", status="running", run=70)
    readings, _ = poll(book, [a], T + 60)
    assert readings == [seen(a, new=True, started=True, run=70)]  # still the seed: nothing counted


def test_held_then_queued_waits_from_the_first_sighting_and_a_requeue_starts_a_new_wait() -> None:
    book = JobBook()
    poll(book, [], T)
    h = job("h", status="held")
    assert poll(book, [h], T + 10)[0] == [seen(h, new=True, submitted=True, since=T + 10)]
    q = job("h", status="queued")
    assert poll(book, [q], T + 100)[0] == [seen(q, since=T + 10)]  # still the same wait
    r = job("h", status="running", run=90)
    assert poll(book, [r], T + 200)[0] == [seen(r, starts=True, waited=190.0, started=True, ran=90, run=90)]
    rq = job("h", status="requeued")  # no run time: the base stays
    assert poll(book, [rq], T + 300)[0] == [seen(rq, run=90, since=T + 300)]
    w = job("h", status="waiting")
    assert poll(book, [w], T + 310)[0] == [seen(w, run=90, since=T + 300)]
    r2 = job("h", status="running", run=20)  # running again: 20 < 90, nothing ran; 20 is the new base
    assert poll(book, [r2], T + 330)[0] == [seen(r2, starts=True, waited=30.0, started=True, run=20)]
    r3 = job("h", status="running", run=80)
    assert poll(book, [r3], T + 390)[0] == [seen(r3, started=True, ran=60, run=80)]


def test_a_job_seen_first_in_a_status_that_means_it_ran_has_started() -> None:
    book = JobBook()
    poll(book, [], T)
    jobs = [job(s, status=s, run=5) for s in ("suspended", "exiting", "failed", "timeout", "node_fail", "other")]
    readings, _ = poll(book, jobs, T + 60)
    # other is not among the statuses that mean a job ran; failed, timeout and node_fail are terminal.
    assert [(r.starts, r.started, r.ends) for r in readings] == [
        (True, True, False),
        (True, True, False),
        (True, True, True),
        (True, True, True),
        (True, True, True),
        (False, False, False),
    ]
    assert [r.ran for r in readings] == [5] * 6  # a new job's readable run time counts whole, started or not


def test_a_job_that_moves_queue_is_seen_in_its_new_queue_and_leaves_from_it() -> None:
    book = JobBook()
    poll(book, [job("m", queue="a")], T)
    m = job("m", queue="b", status="running", run=5)
    assert poll(book, [m], T + 50)[0] == [seen(m, starts=True, waited=50.0, started=True, ran=5, run=5)]
    assert poll(book, [], T + 100)[1] == [Gone(queue="b", status="running", run=5, started=True, ended=False)]


def test_run_times_that_go_backwards_or_cannot_be_read_move_the_base_as_the_rules_say() -> None:
    book = JobBook()
    poll(book, [job("r", status="running", cpus=2, run=1000), job("s", status="running", run=INVALID)], T)
    steps = [
        # (r's run time, s's run time, what r ran, r's base, what s ran, s's base)
        (1060, 400, 60, 1060, 0, 400),  # s: its run time before is unknown; 400 is its base
        (INVALID, 460, 0, 1060, 60, 460),  # r unreadable: nothing, the base stays
        (1120, INVALID, 60, 1120, 0, 460),  # r counts from the last readable one
        (30, 470, 0, 30, 10, 470),  # r went backwards (requeued and running again): the new base
        (None, 470, 0, 30, 0, 470),  # no run time: the base stays
        (0, 470, 0, 0, 0, 470),  # 0 is readable: the base is 0
        (50, 470, 50, 50, 0, 470),
    ]
    for i, (r_run, s_run, r_ran, r_base, s_ran, s_base) in enumerate(steps, start=1):
        readings, _ = poll(
            book, [job("r", status="running", cpus=2, run=r_run), job("s", status="running", run=s_run)], T + 60 * i
        )
        assert [(x.ran, x.run) for x in readings] == [(r_ran, r_base), (s_ran, s_base)], i


def test_a_new_job_whose_run_time_cannot_be_read_counts_its_first_readable_one_whole() -> None:
    book = JobBook()
    poll(book, [], T)
    n = job("n", status="running", run=INVALID)
    assert poll(book, [n], T + 60)[0] == [seen(n, new=True, submitted=True, starts=True, started=True)]
    n2 = job("n", status="running", run=100)
    assert poll(book, [n2], T + 120)[0] == [seen(n2, started=True, ran=100, run=100)]


def test_a_job_read_twice_in_one_poll_is_known_to_have_been_read() -> None:
    book = JobBook()
    book.begin()
    assert not book.has("a")
    book.take(job("a"), T)
    assert book.has("a") and not book.has("b")
    book.commit(None)
    book.begin()
    assert not book.has("a")  # a new poll has read nothing yet


def test_a_job_missed_by_paging_is_kept_as_it_was_until_read_again_and_never_gone_or_new() -> None:
    book = JobBook()
    poll(book, [job("a", status="running", cpus=4, run=100), job("b")], T)
    # Poll 2 did not read a, and nothing confirmed that it left: it stays as it was.
    book.begin()
    book.take(job("b"), T + 60)
    assert book.missing() == (["a"], [])
    assert book.commit(frozenset()) == [] and book.departures == 0
    # Poll 3 reads it again, 150 s further on: it ran 250 - 100 s, not its whole run time again.
    a = job("a", status="running", cpus=4, run=250)
    readings, gone = poll(book, [a, job("b")], T + 120)
    assert readings[0] == seen(a, started=True, ran=150, run=250) and gone == []
    # It was read again, so its misses start over: nine more unconfirmed misses keep it.
    for i in range(MAX_MISSED - 1):
        assert poll(book, [], T + 180 + 60 * i, frozenset())[1] == [], i
    assert book.departures == 0


def test_a_missed_job_is_gone_once_a_complete_read_or_a_lookup_confirms_it_or_after_ten_misses() -> None:
    assert MAX_MISSED == 10
    book = JobBook()
    poll(book, [job(k) for k in "abcd"], T)
    queued = Gone(queue="q", status="queued", run=0, started=False, ended=False)
    assert poll(book, [job("d")], T + 60, frozenset({"a"}))[1] == [queued]  # a: looked up, not listed
    assert book.departures == 1
    assert poll(book, [job("d")], T + 120)[1] == [queued, queued]  # read without gaps: b and c have left
    assert book.departures == 3
    assert poll(book, [job("e")], T + 180)[1] == [queued]  # d leaves; e arrives
    for i in range(9):  # e goes unread, unconfirmed, nine polls: kept
        assert poll(book, [], T + 240 + 60 * i, frozenset())[1] == [], i
    assert poll(book, [], T + 900, frozenset())[1] == [queued]  # the tenth: taken to have left
    assert book.departures == 5
    assert poll(book, [], T + 960, frozenset())[1] == []  # and only once


def test_the_missing_jobs_are_told_apart_by_whether_they_had_ended_in_the_order_first_seen() -> None:
    book = JobBook()
    jobs = [job("a", status="running", run=5), job("b", status="completed", run=9), job("c"), job("d", status="failed")]
    poll(book, jobs, T)
    book.begin()
    book.take(job("c"), T + 60)
    assert book.missing() == (["a"], ["b", "d"])
    for j in jobs:
        if not book.has(j.key):
            book.take(j, T + 60)
    assert book.missing() == ([], [])


def test_restored_first_seen_times_carry_a_wait_across_a_restart_but_the_first_poll_still_only_seeds() -> None:
    before = JobBook()
    poll(before, [job("a"), job("r", status="running", run=10), job("h", status="held")], T)
    poll(before, [job("a"), job("r", status="running", run=70), job("h", status="running", run=5)], T + 60)
    assert before.waiting_since() == {"a": T}  # h runs now: its wait ended
    after = JobBook(restored_waits={**before.waiting_since(), "late": T + 1999, "x": T + 500})
    # The restarted exporter's seed poll, at T+1000: a waits on from T; n is new (since now); late's time is
    # after now, which no first sighting can be: ignored; x runs now: no wait.
    a, n = job("a"), job("n")
    late, x = job("late"), job("x", status="running", run=5)
    readings, gone = poll(after, [a, n, late, x], T + 1000)
    assert readings == [
        seen(a, new=True, since=T),
        seen(n, new=True, since=T + 1000),
        seen(late, new=True, since=T + 1000),
        seen(x, new=True, started=True, run=5),
    ]
    assert gone == []
    assert after.waiting_since() == {"a": T, "n": T + 1000, "late": T + 1000}
    a2, n2 = job("a", status="running", run=50), job("n", status="running", run=50)
    readings, _ = poll(after, [a2, n2, late], T + 1100)
    assert [r.waited for r in readings[:2]] == [1100.0, 100.0]  # a from T, n from its first sighting


def test_restored_times_only_count_on_the_first_poll_after_the_restart() -> None:
    book = JobBook(restored_waits={"a": T - 500}, restored_runs={"r": 100})
    poll(book, [], T)  # the seed poll reads neither a nor r
    a, r = job("a"), job("r", status="running", run=400)
    readings, _ = poll(book, [a, r], T + 60)
    assert readings == [
        seen(a, new=True, submitted=True, since=T + 60),
        seen(r, new=True, submitted=True, starts=True, started=True, ran=400, run=400),  # all of it: new
    ]


def test_without_restored_times_a_wait_counts_from_the_first_poll_after_the_restart() -> None:
    book = JobBook()
    poll(book, [job("a")], T + 1000)
    a = job("a", status="running", run=5)
    assert poll(book, [a], T + 1100)[0][0].waited == 100.0


def test_restored_run_seconds_carry_cpu_seconds_across_a_restart() -> None:
    before = JobBook()
    poll(
        before,
        [
            job("r", status="running", cpus=2, run=100),
            job("s", status="suspended", run=50),
            job("w", cpus=4),
            job("c", status="completed", run=70),
            job("e", status="exiting", run=0),  # started, run 0: kept
            job("u", status="running", run=INVALID),  # unknown run time: not kept
        ],
        T,
    )
    poll(before, [job("rq", status="requeued", run=30), job("q2", status="queued", run=0)], T + 60)
    # rq is new since the seed: its 30 s were counted, and it waits with 30 s run: kept (it ran). q2 waits
    # having run 0 s and never started: nothing to keep. The rest left, gone from the book.
    assert before.run_seconds() == {"rq": 30}
    before2 = JobBook()
    poll(
        before2,
        [
            job("r", status="running", cpus=2, run=100),
            job("s", status="suspended", run=50),
            job("w", cpus=4),
            job("c", status="completed", run=70),
            job("e", status="exiting", run=0),
            job("u", status="running", run=INVALID),
        ],
        T,
    )
    assert before2.run_seconds() == {"r": 100, "s": 50, "e": 0}  # started, not ended, run time known
    after = JobBook(restored_runs={**before2.run_seconds(), "q": 500, "z": 40})
    # The first poll after the restart: r ran 600 s more; s ran on 10 s and completed; w started meanwhile and
    # ran 300 s, but is not in the file: seeded; n is new: seeded; q's run time went backwards (requeued
    # meanwhile): nothing, 20 is its base; z's run time cannot be read: nothing, its saved 40 s is its base.
    r, s, w = (
        job("r", status="running", cpus=2, run=700),
        job("s", status="completed", run=60),
        job("w", status="running", cpus=4, run=300),
    )
    n, q, z = (
        job("n", status="running", cpus=8, run=30),
        job("q", status="running", run=20),
        job("z", status="running", run=INVALID),
    )
    readings, _ = poll(after, [r, s, w, n, q, z], T + 600)
    assert readings == [
        seen(r, new=True, started=True, ran=600, run=700),
        seen(s, new=True, started=True, ran=10, run=60),  # its end is not counted: the first poll seeds
        seen(w, new=True, started=True, run=300),
        seen(n, new=True, started=True, run=30),
        seen(q, new=True, started=True, run=20),
        seen(z, new=True, started=True, run=40),
    ]
    z2 = job("z", status="running", run=100)
    readings, _ = poll(after, [job("r", status="running", cpus=2, run=760), z2], T + 660)
    assert [(x.ran, x.run) for x in readings] == [(60, 760), (60, 100)]


def test_a_restored_run_without_a_run_time_now_keeps_the_saved_base() -> None:
    book = JobBook(restored_runs={"a": 300})
    a = job("a", status="requeued")
    readings, _ = poll(book, [a], T)
    assert readings == [seen(a, new=True, run=300, since=T)]
    assert book.run_seconds() == {"a": 300}  # it waits again having run: still kept
    a2 = job("a", status="running", run=360)
    assert poll(book, [a2], T + 60)[0] == [seen(a2, starts=True, waited=60.0, started=True, ran=60, run=360)]


def test_a_job_first_seen_in_a_status_that_is_neither_waiting_nor_running_waited_nothing_when_it_starts() -> None:
    book = JobBook()
    poll(book, [], T)
    o, u = job("o", status="other"), job("u", status="unknown")
    assert poll(book, [o, u], T + 60)[0] == [seen(o, new=True, submitted=True), seen(u, new=True, submitted=True)]
    o2, u2 = job("o", status="running", run=5), job("u", status="completed", run=7)
    readings, _ = poll(book, [o2, u2], T + 120)
    assert readings == [
        seen(o2, starts=True, waited=0.0, started=True, ran=5, run=5),
        seen(u2, starts=True, waited=0.0, ends=True, started=True, ran=7, run=7),
    ]


def test_a_waiting_job_that_ran_a_second_is_kept_in_the_state_file() -> None:
    book = JobBook()
    poll(book, [job("a", status="requeued", run=1), job("b", status="requeued", run=0)], T)
    assert book.run_seconds() == {"a": 1}  # b never ran: nothing to keep


def test_a_restored_run_whose_job_runs_again_from_zero_grows_from_zero() -> None:
    book = JobBook(restored_runs={"a": 500})
    a = job("a", status="running", run=0)  # requeued meanwhile and started again: 0 s so far
    assert poll(book, [a], T)[0] == [seen(a, new=True, started=True, run=0)]
    a2 = job("a", status="running", run=30)
    assert poll(book, [a2], T + 60)[0] == [seen(a2, started=True, ran=30, run=30)]


def test_a_confirmed_departure_is_counted_whatever_comes_before_it_in_the_book() -> None:
    book = JobBook()
    poll(book, [job("a"), job("b"), job("c")], T)
    gone = poll(book, [job("c")], T + 60, frozenset({"b"}))[1]  # a: unread, unconfirmed; b: confirmed
    assert gone == [Gone(queue="q", status="queued", run=0, started=False, ended=False)]
    book.begin()
    assert book.missing() == (["a", "c"], [])  # a is kept (c, read last time, too)
