"""The users group, as a table: jobs in, samples out (jobs and CPUs per queue, user and status; CPU-seconds per
queue and user, with the users named by 30 days of CPU-seconds; users folded). Every expected value is worked out
by hand; a comment says how where it is not obvious."""

from __future__ import annotations

import re

from exporter.groups.users import SavedUsers, UserNames, Users, fold_users
from exporter.model import Budget, Job
from tests.polls import Polls, Samples, job

T = 1_700_000_000.0
DAY0 = 19_676 * 86_400.0  # 2023-11-15 00:00 UTC, the first UTC midnight after T
DAY1 = DAY0 + 86_400


def users_group(p: Polls) -> Users:
    (group,) = [g for g in p.groups if isinstance(g, Users)]
    return group


def user_jobs(s: Samples) -> dict[tuple[str, str, str], float]:
    return s.by("sugon_user_jobs", "queue", "user", "status", nonzero=False)


def user_cpus(s: Samples) -> dict[tuple[str, str, str], float]:
    return s.by("sugon_user_job_cpus", "queue", "user", "status", nonzero=False)


def user_cpu_seconds(s: Samples) -> dict[tuple[str, str], float]:
    return s.by("sugon_user_job_cpu_seconds_total", "queue", "user", nonzero=False)


def users_folded(s: Samples) -> float:
    return s.by("sugon_users_folded", nonzero=False)[()]


def cpu_seconds(s: Samples) -> dict[str, float]:
    return s.by("sugon_job_cpu_seconds_total", "queue", nonzero=False)


def test_jobs_and_cpus_by_queue_user_and_status_non_zero_only() -> None:
    s = Polls().poll(
        [
            job("1", queue="debug", user="a", status="running", cpus=4),
            job("2", queue="debug", user="a", status="running", cpus=8),
            job("3", queue="debug", user="b", status="queued", cpus=16),
            job("4", queue="gpu", user="a", status="running", cpus=2),
            job("5", queue="gpu", user="c", status="held"),  # no CPUs: a series of jobs, and one of 0 CPUs
        ],
        T,
    )
    assert user_jobs(s) == {
        ("debug", "a", "running"): 2,
        ("debug", "b", "queued"): 1,
        ("gpu", "a", "running"): 1,
        ("gpu", "c", "held"): 1,
    }
    assert user_cpus(s) == {
        ("debug", "a", "running"): 12,
        ("debug", "b", "queued"): 16,
        ("gpu", "a", "running"): 2,
        ("gpu", "c", "held"): 0,
    }
    assert users_folded(s) == 0


def test_users_beyond_max_users_fold_into_other_ranked_by_jobs_with_ties_by_name() -> None:
    jobs: list[Job] = []
    for user, count in (("carol", 3), ("alice", 2), ("bob", 2), ("dave", 1)):
        jobs += [job(f"{user}{i}", user=user, status="running", cpus=1) for i in range(count)]
    s = Polls(budget=Budget(max_users=2)).poll(jobs, T)
    # carol (3) first; alice and bob tie at 2 and alice wins by name; bob and dave are other.
    assert user_jobs(s) == {("q", "carol", "running"): 3, ("q", "alice", "running"): 2, ("q", "other", "running"): 3}
    assert user_cpus(s) == user_jobs(s)  # one CPU each
    assert users_folded(s) == 2


def test_excluded_users_always_fold_even_within_the_budget() -> None:
    budget = Budget(max_users=10, users_exclude=(re.compile("svc_.*"), re.compile("root")))
    jobs = [job(str(n), user=u, cpus=2) for n, u in enumerate(["svc_backup", "svc_sync", "root", "rooted", "alice"])]
    s = Polls(budget=budget).poll(jobs, T)
    assert user_jobs(s) == {("q", "other", "queued"): 3, ("q", "rooted", "queued"): 1, ("q", "alice", "queued"): 1}
    assert user_cpus(s) == {("q", "other", "queued"): 6, ("q", "rooted", "queued"): 2, ("q", "alice", "queued"): 2}
    assert users_folded(s) == 3  # svc_backup, svc_sync, root (a full match only)


def test_a_user_called_other_adds_up_with_the_folded_users_whatever_the_order() -> None:
    ours = [job(f"o{n}", user="other", status="running", cpus=1) for n in range(3)]  # kept: the most jobs
    theirs = [job("a", user="alice", status="running", cpus=10), job("b", user="bob", status="running", cpus=100)]
    for jobs in (ours + theirs, theirs + ours):
        s = Polls(budget=Budget(max_users=1)).poll(jobs, T)
        assert user_jobs(s) == {("q", "other", "running"): 5} and user_cpus(s) == {("q", "other", "running"): 113}
        assert users_folded(s) == 2


def test_fold_users_is_deterministic_whatever_the_insertion_order() -> None:
    totals = {"b": 1, "a": 1, "c": 1}
    assert fold_users(totals, 2) == {"a", "b"}
    assert fold_users(dict(reversed(list(totals.items()))), 2) == {"a", "b"}
    assert fold_users({"a": 1, "b": 5}, 1) == {"b"}


def test_the_user_families_fold_queues_as_every_family_does() -> None:
    jobs = [
        job("1", queue="big", user="alice", status="running", cpus=4),
        job("2", queue="big", user="alice", status="queued", cpus=2),
        job("3", queue="small", user="bob", cpus=8),
        job("4", queue="tiny", user="bob", cpus=16),
        job("5", queue="other", user="carol", status="running", cpus=1),  # a queue really called other
    ]
    s = Polls(budget=Budget(max_queues=1)).poll(jobs, T)  # big has two jobs, the rest one each
    assert user_jobs(s) == {
        ("big", "alice", "running"): 1,
        ("big", "alice", "queued"): 1,
        ("other", "bob", "queued"): 2,
        ("other", "carol", "running"): 1,
    }
    assert user_cpus(s) == {
        ("big", "alice", "running"): 4,
        ("big", "alice", "queued"): 2,
        ("other", "bob", "queued"): 24,
        ("other", "carol", "running"): 1,
    }


def test_without_per_user_there_are_no_user_families_and_cpu_seconds_count_by_queue() -> None:
    p = Polls(per_user=False)
    p.poll([job("a", status="running", cpus=1, run=0)], T)
    s = p.poll([job("a", status="running", cpus=1, run=60)], T + 60)
    assert not [n for n in s.names() if "user" in n]
    assert cpu_seconds(s) == {"q": 60}


def test_a_users_cpu_seconds_series_starts_at_zero_when_their_job_is_first_seen_running() -> None:
    """So that increase() over the counter sees the first growth too: a series born at 600 would lose it."""
    p = Polls()
    s = p.poll([job("a", user="alice", status="running", cpus=2, run=100), job("b", user="bob", cpus=4)], T)
    assert user_cpu_seconds(s) == {("q", "alice"): 0}  # seeding counts nothing; bob has not run
    s = p.poll([job("a", user="alice", status="running", cpus=2, run=400), job("b", user="bob", cpus=4)], T + 300)
    assert user_cpu_seconds(s) == {("q", "alice"): 600}
    # carol's job is new and running, on no CPU yet: a series at 0; dave's is new and completed: it ran 50 s.
    jobs = [job("c", user="carol", status="running", run=10), job("d", user="dave", status="completed", cpus=1, run=50)]
    s = p.poll(jobs, T + 360)
    assert user_cpu_seconds(s) == {("q", "alice"): 600, ("q", "carol"): 0, ("q", "dave"): 50}


def test_a_failed_poll_counts_no_cpu_second_of_any_user() -> None:
    p = Polls()
    p.poll([job("a", user="alice", status="running", cpus=2, run=100)], T)
    p.failed(
        [
            job("a", user="alice", status="running", cpus=2, run=160),
            job("b", user="bob", status="running", cpus=1, run=9),
        ],
        T + 60,
    )
    s = p.poll([job("a", user="alice", status="running", cpus=2, run=220)], T + 120)
    assert user_cpu_seconds(s) == {("q", "alice"): 240}
    assert user_jobs(s) == {("q", "alice", "running"): 1}


def everyone(run_seconds: int) -> list[Job]:
    """One job each, all running in queue q since the same moment: a on 1 CPU, svc_backup on 8, b on 1, c on 4,
    d on 2 (16 CPUs in all), in that order."""
    cpus = {"a": 1, "svc_backup": 8, "b": 1, "c": 4, "d": 2}
    return [job(user, user=user, status="running", cpus=n, run=run_seconds) for user, n in cpus.items()]


def test_the_named_users_are_first_come_until_the_first_utc_day_then_the_top_by_cpu_seconds_of_30_days() -> None:
    p = Polls(budget=Budget(max_users=3, users_exclude=(re.compile("svc_.*"),)))
    # Day 0, the first poll: it seeds, and each running job's user gets a series at 0 while the set has room:
    # a, b, c (svc_backup is excluded: other; d comes when the set is full: other).
    s = p.poll(everyone(0), DAY0)
    assert user_cpu_seconds(s) == {("q", "a"): 0, ("q", "other"): 0, ("q", "b"): 0, ("q", "c"): 0}
    # 100 s later: a 1 × 100, b 1 × 100, c 4 × 100; other = svc_backup 8 × 100 + d 2 × 100.
    s = p.poll(everyone(100), DAY0 + 100)
    assert user_cpu_seconds(s) == {("q", "a"): 100, ("q", "other"): 1000, ("q", "b"): 100, ("q", "c"): 400}
    # The first poll of day 1 counts its 100 s under the names it finds (a 200, b 200, c 800, other 2000), then
    # chooses by day 0's CPU-seconds, svc_backup aside: c 400, d 200, then a and b with 100 each, a first by
    # name. d's series starts at 0; b leaves, and its series goes at the next poll.
    s = p.poll(everyone(200), DAY1 + 100)
    assert user_cpu_seconds(s) == {
        ("q", "a"): 200,
        ("q", "other"): 2000,
        ("q", "b"): 200,
        ("q", "c"): 800,
        ("q", "d"): 0,
    }
    # From now on b adds to other: other 2000 + b 100 + svc_backup 800; d 2 × 100.
    s = p.poll(everyone(300), DAY1 + 200)
    assert user_cpu_seconds(s) == {("q", "a"): 300, ("q", "other"): 2900, ("q", "c"): 1200, ("q", "d"): 200}
    # Each increment went to one series: these, plus the 200 b counted before it left, are all of the queue's.
    assert sum(user_cpu_seconds(s).values()) + 200 == cpu_seconds(s)["q"] == 16 * 300
    # The job gauges name users by this poll's jobs (one each: by name), never svc_backup.
    assert {user for _, user, _ in user_jobs(s)} == {"a", "b", "c", "other"} and users_folded(s) == 2


def test_between_choices_a_user_is_named_while_the_set_has_room_and_a_quiet_user_is_not_chosen() -> None:
    p = Polls(budget=Budget(max_users=2))
    p.poll(
        [job("1", user="a", status="running", cpus=1, run=0), job("2", user="b", status="running", cpus=1, run=0)], DAY0
    )
    p.poll(
        [job("1", user="a", status="running", cpus=1, run=60), job("2", user="b", status="completed", cpus=1, run=60)],
        DAY0 + 60,
    )
    # Day 1: a and b used 60 s each on day 0; both are chosen (b has no job left, its series stays).
    s = p.poll([job("1", user="a", status="running", cpus=1, run=120)], DAY1)
    assert user_cpu_seconds(s) == {("q", "a"): 120, ("q", "b"): 60}
    # Day 31: the 30 days before it are days 1 to 30, where only a used CPU (60 s on day 1). The choice names a
    # alone (b's series goes at the next poll), and e, new the next poll, takes the room left.
    day31 = DAY0 + 31 * 86_400
    s = p.poll([job("1", user="a", status="running", cpus=1, run=180)], day31)
    assert user_cpu_seconds(s) == {("q", "a"): 180, ("q", "b"): 60}
    s = p.poll(
        [job("1", user="a", status="running", cpus=1, run=240), job("3", user="e", status="running", cpus=2, run=30)],
        day31 + 60,
    )
    assert user_cpu_seconds(s) == {("q", "a"): 240, ("q", "e"): 60}


def test_a_restart_with_the_saved_users_names_the_same_users() -> None:
    day0 = int(DAY0 // 86_400)
    saved = SavedUsers(day0, ("b",), {day0: {"a": 10, "b": 50}})
    p = Polls(budget=Budget(max_users=1), saved={"users": saved})
    s = p.poll(
        [job("1", user="a", status="running", cpus=1, run=0), job("2", user="b", status="running", cpus=1, run=0)],
        DAY0 + 60,
    )
    assert user_cpu_seconds(s) == {("q", "other"): 0, ("q", "b"): 0}  # the set is full: a is other
    s = p.poll(
        [job("1", user="a", status="running", cpus=1, run=30), job("2", user="b", status="running", cpus=1, run=40)],
        DAY0 + 120,
    )
    assert user_cpu_seconds(s) == {("q", "other"): 30, ("q", "b"): 40}
    assert users_group(p).saved() == {"users": SavedUsers(day0, ("b",), {day0: {"a": 40, "b": 90}})}


def test_a_restart_on_a_later_day_chooses_from_the_saved_daily_figures_of_the_last_30_days() -> None:
    day0 = int(DAY0 // 86_400)
    saved = SavedUsers(day0, ("a",), {day0: {"a": 10, "b": 50}, day0 - 30: {"c": 999}})
    users = UserNames(max_users=1, saved=saved)
    assert (users.name("a"), users.name("b")) == ("a", "other")  # the same set as before the restart: full
    # Day 1: the 30 days before are day0 - 29 to day0; c's figure is of day0 - 30, a day too old.
    assert users.take({}, DAY1) == {"a"}
    assert users.named == {"b"}
    assert users.name("a") == "other" and users.name("new") == "other"
    assert users.saved() == SavedUsers(day0 + 1, ("b",), {day0: {"a": 10, "b": 50}})


def test_saved_users_beyond_max_users_keep_the_top_by_cpu_seconds_and_never_an_excluded_one() -> None:
    day0 = int(DAY0 // 86_400)
    saved = SavedUsers(day0, ("a", "b", "c", "svc"), {day0 - 1: {"a": 5, "b": 50, "c": 20, "svc": 999}})
    users = UserNames(max_users=2, exclude=[re.compile("svc")], saved=saved)
    assert users.named == {"b", "c"}  # svc is excluded (and not tracked); b 50, c 20, a 5
    assert UserNames(max_users=4, exclude=[re.compile("svc")], saved=saved).named == {"a", "b", "c"}


def test_at_most_10000_users_are_tracked_and_one_beyond_them_is_not_chosen() -> None:
    users = UserNames(max_users=1)
    users.take({f"u{i:05}": 1 for i in range(10_000)}, DAY0)
    users.take({"zz": 1_000_000, "u00009": 5}, DAY0 + 60)
    assert users.take({}, DAY1) is not None
    assert users.named == {"u00009"}  # zz used the most, but came when 10,000 users were tracked


def test_a_user_who_used_no_cpu_in_the_window_is_not_chosen() -> None:
    users = UserNames(max_users=5)
    users.take({"a": 10, "b": 0}, DAY0)
    assert users.name("b") == "b"  # named as it came: the set had room
    assert users.take({}, DAY1) == {"b"} and users.named == {"a"}


def test_a_users_jobs_in_every_status_count_toward_their_rank() -> None:
    # carol: one running, two queued (3 jobs); alice: two running. With one name, carol keeps hers.
    jobs = [job("c1", user="carol", status="running"), job("c2", user="carol"), job("c3", user="carol")]
    jobs += [job("a1", user="alice", status="running"), job("a2", user="alice", status="running")]
    s = Polls(budget=Budget(max_users=1)).poll(jobs, T)
    assert user_jobs(s) == {("q", "carol", "running"): 1, ("q", "carol", "queued"): 2, ("q", "other", "running"): 2}
    assert users_folded(s) == 1


def test_a_queue_that_loses_its_name_loses_its_users_cpu_seconds_series() -> None:
    p = Polls(budget=Budget(max_queues=1))
    p.poll([job("a", queue="a", user="alice", status="running", cpus=1, run=0)], T)
    s = p.poll([job("a", queue="a", user="alice", status="running", cpus=1, run=60)], T + 60)
    assert user_cpu_seconds(s) == {("a", "alice"): 60}
    # b comes with two jobs and takes the one name: a's jobs are other's now, and a's series go.
    jobs = [
        job("a", queue="a", user="alice", status="running", cpus=1, run=90),
        job("b1", queue="b"),
        job("b2", queue="b"),
    ]
    s = p.poll(jobs, T + 120)
    assert user_cpu_seconds(s) == {("other", "alice"): 30}


def test_the_daily_figures_add_up_every_job_of_a_user() -> None:
    day0 = int(DAY0 // 86_400)
    p = Polls()
    two = [job("1", user="a", status="running", cpus=1, run=0), job("2", user="a", status="running", cpus=2, run=0)]
    p.poll(two, DAY0)
    p.poll(
        [job("1", user="a", status="running", cpus=1, run=10), job("2", user="a", status="running", cpus=2, run=10)],
        DAY0 + 60,
    )
    assert users_group(p).saved() == {"users": SavedUsers(day0, ("a",), {day0: {"a": 10 + 20}})}


def test_without_per_user_the_state_file_keeps_no_users() -> None:
    p = Polls(per_user=False)
    p.poll([job("1", user="a", status="running", cpus=1, run=0)], DAY0)
    assert users_group(p).saved() == {}


def test_before_any_poll_the_saved_users_are_of_day_zero_and_none() -> None:
    assert UserNames(max_users=3).saved() == SavedUsers(0, (), {})


def test_a_choice_counts_the_30_days_before_it_summed_over_days_and_not_the_day_it_is_made() -> None:
    users = UserNames(max_users=1)
    users.take({"a": 10, "b": 15}, DAY0)
    users.take({"a": 10}, DAY1)  # day 1's choice: by day 0 alone, b (15) before a (10)
    assert users.named == {"b"}
    users.take({"c": 1000}, DAY1 + 86_400)  # day 2's: a 20 over days 0 and 1, b 15; c's 1,000 s are today's
    assert users.named == {"a"}


def test_users_with_nothing_to_count_or_excluded_are_skipped_and_the_rest_tracked() -> None:
    users = UserNames(max_users=1, exclude=[re.compile("svc")])
    users.take({"svc": 50, "zero": 0, "a": 10}, DAY0)
    assert users.take({}, DAY1) is not None and users.named == {"a"}
    assert users.saved() == SavedUsers(int(DAY1 // 86_400), ("a",), {int(DAY0 // 86_400): {"a": 10}})


def test_saved_users_without_figures_rank_last_when_too_many_are_saved() -> None:
    day0 = int(DAY0 // 86_400)
    saved = SavedUsers(day0, ("a", "aa", "b"), {day0 - 1: {"a": 5, "b": 1}})
    assert UserNames(max_users=2, saved=saved).named == {"a", "b"}  # aa has none: after b, though first by name


def test_the_memory_of_folded_users_starts_over_when_it_holds_100000() -> None:
    """Until then a user who left at a choice adds to other, though the set has room; after, it may be named."""
    assert UserNames.MAX_FOLDED_REMEMBERED == 100_000
    users = UserNames(max_users=2, exclude=[re.compile("svc.*")])
    users.take({"a": 10, "b": 0}, DAY0)
    users.name("b")  # named as it came
    assert users.take({}, DAY1) == {"b"} and users.named == {"a"}  # b used nothing: it leaves, room for one
    for i in range(99_999):  # excluded users: folded and remembered, with b: 100,000
        assert users.name(f"svc{i}") == "other"
    assert users.name("b") == "other"  # still remembered
    assert users.name("svc-last") == "other"  # the memory is full: it starts over with svc-last
    assert users.name("b") == "b"  # b is no longer remembered, and the set has room


def test_a_daily_choice_gives_a_series_to_the_users_of_running_jobs_only() -> None:
    p = Polls(budget=Budget(max_users=5))
    p.poll([job("a", user="a", status="running", cpus=1, run=0)], DAY0)
    p.poll([job("a", user="a", status="running", cpus=1, run=60)], DAY0 + 60)
    jobs = [
        job("a", user="a", status="running", cpus=1, run=120),
        job("w", user="w", cpus=4),  # queued: it adds nothing
        job("z", user="z", status="exiting", run=5),  # no CPU: it adds nothing
    ]
    p.poll([*jobs, job("c", user="c", status="completed", cpus=2)], DAY0 + 120)
    s = p.poll([*jobs, job("c", user="c", status="completed", cpus=2)], DAY1)  # the choice: a (60 s on day 0)
    assert user_cpu_seconds(s) == {("q", "a"): 120, ("q", "z"): 0, ("q", "c"): 0}  # z and c: first seen started
    assert users_group(p).saved()["users"].named == ("a",)


def test_saved_figures_are_taken_newest_day_first_when_more_users_than_are_tracked_are_saved() -> None:
    day0 = int(DAY0 // 86_400)
    old = {f"u{i:05}": 1 for i in range(10_000)}
    saved = SavedUsers(day0, (), {day0 - 2: old, day0 - 1: {"new": 5}})
    users = UserNames(max_users=1, saved=saved)
    assert users.take({}, DAY1) is not None and users.named == {"new"}  # u09999 of the older day is not kept
