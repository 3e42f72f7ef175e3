"""The usage group, as a table: jobs in, samples out (CPU-seconds, run times of ended jobs, the longest running job).
Every expected value is worked out by hand; a comment says how where it is not obvious."""

from __future__ import annotations

from exporter.groups.base import PollEnd, Settings
from exporter.groups.usage import Usage
from exporter.model import INVALID, Budget
from exporter.rows import run_seconds
from tests.polls import Polls, Samples, job

T = 1_700_000_000.0
RUN_LE = ("60.0", "300.0", "900.0", "3600.0", "14400.0", "43200.0", "86400.0", "172800.0", "604800.0", "+Inf")


def cpu(s: Samples) -> dict[str, float]:
    return s.by("sugon_job_cpu_seconds_total", "queue", nonzero=False)


def longest(s: Samples) -> dict[str, float]:
    return s.by("sugon_running_job_max_seconds", "queue", nonzero=False)


def runs(s: Samples, queue: str) -> tuple[list[float], float, float]:
    """One queue's run-time histogram: cumulative counts in the order of RUN_LE, count, sum."""
    buckets = s.by("sugon_job_run_seconds_bucket", "queue", "le", nonzero=False)
    assert [le for q, le in buckets if q == queue] == list(RUN_LE)
    count = s.by("sugon_job_run_seconds_count", "queue", nonzero=False)[queue]
    return (
        [v for (q, _), v in buckets.items() if q == queue],
        count,
        s.by("sugon_job_run_seconds_sum", "queue", nonzero=False)[queue],
    )


NO_RUNS = ([0] * 10, 0, 0)


def test_cpu_seconds_count_nothing_on_the_seed_poll_then_cpus_times_the_growth_of_each_run_time() -> None:
    p = Polls()
    # Seed: a runs on 4 CPUs (100 s so far), b waits (2 CPUs), z has completed. Nothing is counted.
    s = p.poll(
        [job("a", status="running", cpus=4, run=100), job("b", cpus=2), job("z", status="completed", cpus=8, run=50)], T
    )
    assert cpu(s) == {"q": 0} and runs(s, "q") == NO_RUNS and longest(s) == {"q": 100}
    # +60 s: a grew by 60 s (4 × 60 = 240); b started and ran 30 s (2 × 30 = 60); c is new, running for 45 s on
    # 8 CPUs (all of it: 360); d is new and already completed after 500 s on 1 CPU (500); z unchanged.
    s = p.poll(
        [
            job("a", status="running", cpus=4, run=160),
            job("b", status="running", cpus=2, run=30),
            job("c", status="running", cpus=8, run=45),
            job("d", status="completed", cpus=1, run=500),
            job("z", status="completed", cpus=8, run=50),
        ],
        T + 60,
    )
    assert cpu(s) == {"q": 240 + 60 + 360 + 500}
    assert runs(s, "q") == ([0, 0, 1, 1, 1, 1, 1, 1, 1, 1], 1, 500)  # d: 500 s ≤ 15 m
    assert longest(s) == {"q": 160}  # a; d is not running
    # +120 s: a completed after 170 s (its last 10 s: 40); b grew by 60 s (120); c left (nothing more, its run
    # time 45 s observed); z left having completed (not observed again).
    s = p.poll(
        [
            job("a", status="completed", cpus=4, run=170),
            job("b", status="running", cpus=2, run=90),
            job("d", status="completed", cpus=1, run=500),
        ],
        T + 120,
    )
    assert cpu(s) == {"q": 1160 + 40 + 120}
    assert runs(s, "q") == ([1, 2, 3, 3, 3, 3, 3, 3, 3, 3], 3, 500 + 170 + 45)  # 45 ≤ 1 m, 170 ≤ 5 m, 500 ≤ 15 m
    assert longest(s) == {"q": 90}
    # +180 s: nothing grew (a completed; b's run time was not read again): nothing added.
    s = p.poll([job("a", status="completed", cpus=4, run=170), job("b", status="running", cpus=2, run=90)], T + 180)
    assert cpu(s) == {"q": 1320} and runs(s, "q")[1:] == (3, 715)


def test_a_run_time_that_goes_backwards_adds_nothing_and_becomes_the_new_base() -> None:
    p = Polls()
    p.poll([job("r", status="running", cpus=2, run=1000)], T)
    steps = [
        ("running", 1060, 120),  # 2 × 60
        ("requeued", None, 120),  # waiting again, with no run time
        ("running", 30, 120),  # running again: 30 < 1060
        ("running", 90, 240),  # from the new base: 2 × 60
        ("requeued", 0, 240),  # requeued with a run time of 0: the base is 0
        ("running", 50, 340),  # 2 × 50
    ]
    for i, (status, run, total) in enumerate(steps, start=1):
        assert cpu(p.poll([job("r", status=status, cpus=2, run=run)], T + 60 * i)) == {"q": total}, i


def test_a_run_time_that_cannot_be_read_adds_nothing_and_the_next_readable_one_counts_from_the_last() -> None:
    p = Polls()
    p.poll([job("x", status="running", cpus=3, run=100), job("s", status="running", cpus=5, run=INVALID)], T)
    s = p.poll([job("x", status="running", cpus=3, run=INVALID), job("s", status="running", cpus=5, run=400)], T + 60)
    assert cpu(s) == {"q": 0}  # x: nothing read; s: its run time before is unknown, 400 is its base
    s = p.poll([job("x", status="running", cpus=3, run=220), job("s", status="running", cpus=5, run=460)], T + 120)
    assert cpu(s) == {"q": 3 * 120 + 5 * 60}
    # A job new since the last poll ran only since then: its first readable run time counts whole.
    p.poll([job("x", status="running", cpus=3, run=220), job("n", status="running", cpus=2, run=INVALID)], T + 180)
    s = p.poll([job("x", status="running", cpus=3, run=220), job("n", status="running", cpus=2, run=100)], T + 240)
    assert cpu(s) == {"q": 660 + 2 * 100}


def test_jobs_not_started_and_jobs_without_cpus_add_nothing_and_are_not_observed_ending() -> None:
    p = Polls()
    p.poll([], T)
    s = p.poll([job("w", cpus=64), job("z", status="running", run=3600)], T + 60)
    assert cpu(s) == {"q": 0} and longest(s) == {"q": 3600}
    s = p.poll([job("w", status="cancelled", cpus=64), job("z", status="running", run=3660)], T + 120)
    assert cpu(s) == {"q": 0}
    assert runs(s, "q") == NO_RUNS  # w ended without ever running


def test_the_run_time_of_a_job_is_observed_once_when_it_is_seen_ending_or_leaving() -> None:
    p = Polls()
    # Seed: nothing is observed, not even a job already completed.
    s = p.poll(
        [
            job("a", status="running", run=30),
            job("b", status="running", run=4000),
            job("c", status="running", run=700_000),
            job("w"),
            job("old", status="completed", run=100),
        ],
        T,
    )
    assert runs(s, "q") == NO_RUNS
    # a is seen completed after 45 s; b left the list without a terminal status (last seen at 4,000 s); w was
    # cancelled while waiting (it never ran: not observed); n is new and already failed after 200 s.
    s = p.poll(
        [
            job("a", status="completed", run=45),
            job("c", status="running", run=700_060),
            job("w", status="cancelled"),
            job("n", status="failed", run=200),
            job("old", status="completed", run=100),
        ],
        T + 60,
    )
    # Buckets 60, 300, 900, 3600, 14400, ...: 45 ≤ 60, 200 ≤ 300, 4000 ≤ 14400.
    assert runs(s, "q") == ([1, 2, 2, 2, 3, 3, 3, 3, 3, 3], 3, 45 + 4000 + 200)
    # a stays listed as completed: not observed again. c times out after more than 7 days: +Inf.
    s = p.poll([job("a", status="completed", run=45), job("c", status="timeout", run=700_100)], T + 120)
    assert runs(s, "q") == ([1, 2, 2, 2, 3, 3, 3, 3, 3, 4], 4, 4245 + 700_100)


def test_run_times_fall_in_the_bucket_whose_bound_they_equal() -> None:
    p = Polls()
    p.poll([], T)
    s = p.poll([job(str(r), status="completed", run=r) for r in (60, 61, 604_800, 604_801)], T + 60)
    assert runs(s, "q") == ([1, 2, 2, 2, 2, 2, 2, 2, 3, 4], 4, 60 + 61 + 604_800 + 604_801)


def test_what_is_observed_of_a_job_without_a_known_run_time_or_that_never_ran() -> None:
    p = Polls()
    p.poll(
        [
            job("r0", status="running", run=0),  # started, ran 0 s so far
            job("ri", status="running", run=INVALID),  # started, run time never known
            job("q0", run=0),  # waiting, never ran
            job("rq", status="requeued", run=1),  # waiting again after running 1 s
        ],
        T,
    )
    p.poll([], T + 60)  # all four leave
    p.poll([], T + 120)
    s = p.poll(
        [
            job("c0", status="completed", run=0),  # new and completed after 0 s: observed
            job("x0", status="cancelled", run=0),  # cancelled, never ran: not observed
            job("x1", status="cancelled", run=1),  # cancelled after running 1 s: observed
        ],
        T + 180,
    )
    # Observed: r0 (0 s) and rq (1 s) when they left; c0 (0 s) and x1 (1 s) when seen ending.
    assert runs(s, "q") == ([4, 4, 4, 4, 4, 4, 4, 4, 4, 4], 4, 0 + 1 + 0 + 1)


def test_cpu_seconds_of_a_folded_queue_add_to_other_and_a_queue_that_loses_its_name_loses_them() -> None:
    p = Polls(budget=Budget(max_queues=2))
    p.poll(
        [
            job("a", queue="big", status="running", cpus=1, run=0),
            job("a2", queue="big"),
            job("b", queue="small", status="running", cpus=1, run=0),
        ],
        T,
    )
    s = p.poll(
        [
            job("a", queue="big", status="running", cpus=1, run=60),
            job("a2", queue="big"),
            job("b", queue="small", status="running", cpus=1, run=60),
        ],
        T + 60,
    )
    assert cpu(s) == {"big": 60, "small": 60}
    # tiny comes with two jobs: big (2) and tiny (2) keep their names, small (1) folds: b's 60 s add to
    # other, and small's series goes with its name.
    s = p.poll(
        [
            job("a", queue="big", status="running", cpus=1, run=120),
            job("a2", queue="big"),
            job("b", queue="small", status="running", cpus=1, run=120),
            job("t1", queue="tiny"),
            job("t2", queue="tiny"),
        ],
        T + 120,
    )
    assert cpu(s) == {"big": 120, "other": 60, "tiny": 0}
    assert longest(s) == {"big": 120, "other": 120, "tiny": 0}
    assert set(s.by("sugon_job_run_seconds_count", "queue", nonzero=False)) == {"big", "other", "tiny"}


def test_a_job_that_left_a_folded_queue_is_observed_as_other() -> None:
    p = Polls(budget=Budget(max_queues=1))
    p.poll([job("j1", queue="big"), job("j2", queue="big"), job("a", queue="small", status="running", run=100)], T)
    # a leaves; big and other fit the budget now, so nothing folds, but a was last seen as other.
    s = p.poll([job("j1", queue="big"), job("j2", queue="big")], T + 60)
    assert runs(s, "other") == ([0, 1, 1, 1, 1, 1, 1, 1, 1, 1], 1, 100) and runs(s, "big") == NO_RUNS


def test_the_longest_running_job_is_per_queue_and_the_longest_of_the_queues_folded_into_other() -> None:
    p = Polls(budget=Budget(max_queues=1))
    jobs = [
        job("1", queue="big", status="running", run=100),
        job("2", queue="big", status="running", run=20),
        job("3", queue="small", status="running", run=7200),
        job("4", queue="small", status="completed", run=9000),  # not running
        job("5", queue="tiny", status="running", run=50),
        job("6", queue="tiny", status="suspended", run=80_000),  # not running
    ]
    s = p.poll(jobs, T)  # each queue has two jobs: big keeps its name (ties by name)
    assert longest(s) == {"big": 100, "other": 7200}
    s = p.poll([job("7", queue="big", status="running", run=INVALID), job("8", queue="big")], T + 60)
    assert longest(s) == {"big": 0, "other": 0}  # nothing runs with a run time; other is known: 0


def test_a_failed_poll_counts_no_cpu_second_and_the_next_counts_from_the_last_success() -> None:
    p = Polls()
    p.poll([job("a", status="running", cpus=2, run=100)], T)
    p.failed([job("a", status="running", cpus=2, run=160), job("b", status="completed", cpus=4, run=10)], T + 60)
    s = p.poll([job("a", status="running", cpus=2, run=220)], T + 120)
    assert cpu(s) == {"q": 2 * 120} and runs(s, "q") == NO_RUNS and longest(s) == {"q": 220}


def test_the_state_file_run_seconds_carry_cpu_seconds_across_a_restart() -> None:
    p = Polls(restored_runs={"r": 100, "s": 50, "q": 500})
    # The first poll after the restart: r grew by 600 s (2 × 600); s ran on for 10 s and ended (1 × 10); w
    # started meanwhile and ran 300 s, but is not in the file: seeded, like n (new); q's run time went
    # backwards (requeued meanwhile): nothing.
    s = p.poll(
        [
            job("r", status="running", cpus=2, run=700),
            job("s", status="completed", cpus=1, run=60),
            job("w", status="running", cpus=4, run=300),
            job("n", status="running", cpus=8, run=30),
            job("q", status="running", cpus=1, run=20),
        ],
        T + 600,
    )
    assert cpu(s) == {"q": 1200 + 10}
    assert runs(s, "q") == NO_RUNS  # the first poll still only seeds the rest
    s = p.poll(
        [
            job("r", status="running", cpus=2, run=760),
            job("w", status="running", cpus=4, run=360),
            job("q", status="running", cpus=1, run=80),
        ],
        T + 660,
    )
    assert cpu(s) == {"q": 1210 + 120 + 240 + 60}


def test_the_counters_before_any_poll_are_zero_for_every_queue_with_series() -> None:
    s = Samples(Usage(Settings(cluster="c")).kept(PollEnd(now=T, series=frozenset({"a", "b"}))))
    assert cpu(s) == {"a": 0, "b": 0}
    assert runs(s, "a") == runs(s, "b") == NO_RUNS


def test_a_job_missed_by_paging_adds_only_its_growth_when_read_again() -> None:
    p = Polls()
    p.poll([job("a", status="running", cpus=4, run=100), job("b")], T)
    s = p.poll([job("b")], T + 60, left=frozenset())  # a not read, not confirmed gone: kept as it was
    assert cpu(s) == {"q": 0} and runs(s, "q") == NO_RUNS
    s = p.poll([job("a", status="running", cpus=4, run=250), job("b")], T + 120)
    assert cpu(s) == {"q": 4 * 150} and runs(s, "q") == NO_RUNS  # 250 - 100 s, not its whole run time again


def test_a_run_time_is_read_with_minutes_and_seconds_below_60() -> None:
    assert [run_seconds(v) for v in ("00:59:59", "1-00:59:00", "59:59")] == [3599, 86_400 + 3540, 3599]
    assert [run_seconds(v) for v in ("00:60:00", "1-00:60:00", "1:60:00", "00:00:60", "60:60")] == [INVALID] * 5
    assert run_seconds("60:00") == 3600  # the leading field takes any number of its unit


def test_the_longest_run_of_a_queue_is_one_second_when_that_is_all_it_has_run() -> None:
    s = Polls().poll([job("a", status="running", run=1), job("b", queue="r", status="running", run=0)], T)
    assert longest(s) == {"q": 1, "r": 0}


def test_a_queue_whose_jobs_never_counted_a_cpu_second_goes_a_day_after_its_last_job() -> None:
    p = Polls(per_user=False)
    p.poll([job("x", queue="short", status="completed", cpus=2, run=100), job("y", queue="long")], T)
    p.poll([job("y", queue="long")], T + 60)  # x left having completed: no counter moved
    s = p.poll([job("y", queue="long")], T + 86_401)
    assert cpu(s) == {"long": 0} and set(s.by("sugon_job_run_seconds_count", "queue", nonzero=False)) == {"long"}
