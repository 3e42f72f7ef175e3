"""Jobs, CPUs and CPU-seconds per user, e.g.::

    sugon_user_jobs{hpc_cluster="kunshan",queue="debug",status="running",user="alice"} 3.0
    sugon_user_job_cpu_seconds_total{hpc_cluster="kunshan",queue="debug",user="alice"} 86400.0

Only with ``per_user: true``. The gauges keep the ``max_users`` users with the most jobs in the poll (ties by
name; never one matching ``users_exclude``), the rest are ``user="other"`` (``sugon_users_folded`` says how
many), and only non-zero series are given. The CPU-second counter names the ``max_users`` users with the most
CPU-seconds over the last 30 UTC days, chosen again once a day (``UserNames``); each increment goes to exactly
one series, so the sum over users (other included) equals ``sugon_job_cpu_seconds_total`` and no series ever
decreases.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

from prometheus_client.core import Metric

from exporter.groups.base import CACHED, COUNTED, Families, Group, PollEnd, Settings, counter, gauge
from exporter.model import OTHER, RAN, TERMINAL, Seen

DAY = 86_400
WINDOW_DAYS = 30  # the CPU-seconds of the 30 UTC days before a choice decide it
MAX_TRACKED_USERS = 10_000  # users whose daily CPU-seconds are kept, per cluster


def utc_day(now: float) -> int:
    """The UTC day of a Unix time, as days since 1970-01-01."""
    return int(now // DAY)


class SavedUsers(NamedTuple):
    """What the state file keeps: the UTC day of the last poll, the users named then, and the CPU-seconds of
    each user by UTC day."""

    day: int
    named: tuple[str, ...]
    cpu_seconds: Mapping[int, Mapping[str, int]]


class UserNames:
    """The named users of one cluster, and each user's CPU-seconds per UTC day for the last 30 days (at most
    MAX_TRACKED_USERS users; a user beyond them is not kept until older days leave the window). ``saved``,
    from a state file, names the same users as before a restart; without it the set starts empty, and users
    are named as they come until the first daily choice."""

    MAX_FOLDED_REMEMBERED = 100_000  # users known to fold until the next choice; the memory starts over when full

    def __init__(
        self, max_users: int, exclude: Iterable[re.Pattern[str]] = (), saved: SavedUsers | None = None
    ) -> None:
        self._max_users = max_users
        self._exclude = tuple(exclude)
        self.named: set[str] = set()
        self._folded: set[str] = set()
        self._day: int | None = None  # the UTC day of the last poll
        self._days: dict[int, dict[str, int]] = {}  # UTC day → user → CPU-seconds
        self._tracked: set[str] = set()  # the users in _days
        if saved is not None:
            self._day = saved.day
            for day in sorted(saved.cpu_seconds, reverse=True):  # the newest first, should the bound bite
                self._add(day, saved.cpu_seconds[day])
            named = {u for u in saved.named if not self._excluded(u)}
            self.named = self._top(named, self._totals(saved.day)) if len(named) > max_users else named

    def _excluded(self, user: str) -> bool:
        return any(p.fullmatch(user) for p in self._exclude)

    def name(self, user: str) -> str:
        """The ``user`` label that ``user``'s CPU-seconds add to."""
        if user in self.named:
            return user
        if user in self._folded:
            return OTHER
        if len(self.named) < self._max_users and not self._excluded(user):
            self.named.add(user)
            return user
        if len(self._folded) >= self.MAX_FOLDED_REMEMBERED:
            self._folded.clear()
        self._folded.add(user)
        return OTHER

    def _add(self, day: int, spent: Mapping[str, int]) -> None:
        by_user = self._days.setdefault(day, {})
        tracked = self._tracked
        for user, seconds in spent.items():
            if seconds <= 0:
                continue
            if user not in tracked:
                if len(tracked) >= MAX_TRACKED_USERS or self._excluded(user):
                    continue
                tracked.add(user)
            by_user[user] = by_user.get(user, 0) + seconds

    def _totals(self, before: int) -> dict[str, int]:
        totals: dict[str, int] = {}
        for day, by_user in self._days.items():
            if day < before:
                for user, seconds in by_user.items():
                    totals[user] = totals.get(user, 0) + seconds
        return totals

    def _top(self, users: Iterable[str], totals: Mapping[str, int]) -> set[str]:
        """The ``max_users`` of ``users`` with the most CPU-seconds in ``totals``, ties broken by name."""
        return set(sorted(users, key=lambda u: (-totals.get(u, 0), u))[: self._max_users])

    def take(self, spent: Mapping[str, int], now: float) -> set[str] | None:
        """Add one poll's CPU-seconds by user (not by label) to its UTC day. At the first poll of a new UTC day,
        choose the named users again and return those who left (None: no choice); they add to other until the
        next choice, even while the set has room."""
        today = utc_day(now)
        self._add(today, spent)
        if self._day is None:  # the first poll without a state file: the set fills as users come
            self._day = today
        if today <= self._day:
            return None
        self._day = today
        self._days = {day: by_user for day, by_user in self._days.items() if day >= today - WINDOW_DAYS}
        self._tracked = {user for by_user in self._days.values() for user in by_user}
        totals = self._totals(today)
        left, self.named = self.named, self._top(totals, totals)
        self._folded = left - self.named
        return set(self._folded)

    def saved(self) -> SavedUsers:
        """What the state file keeps (copies)."""
        days = {day: dict(by_user) for day, by_user in self._days.items() if by_user}
        return SavedUsers(self._day if self._day is not None else 0, tuple(sorted(self.named)), days)


def fold_users(totals: Mapping[str, int], max_users: int, exclude: Iterable[re.Pattern[str]] = ()) -> set[str]:
    """The users kept by name: the ``max_users`` with most jobs (ties by name), never an excluded one."""
    patterns = list(exclude)
    ranked = sorted((u for u in totals if not any(p.fullmatch(u) for p in patterns)), key=lambda u: (-totals[u], u))
    return set(ranked[:max_users])


USER = ("hpc_cluster", "queue", "user", "status")


class Users(Group):
    """sugon_user_jobs, sugon_user_job_cpus, sugon_user_job_cpu_seconds_total and sugon_users_folded (with
    per_user); the state file keeps its named users and daily CPU-seconds (key "users")."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        budget = settings.budget
        saved = settings.saved.get("users")
        self._names = UserNames(
            budget.max_users, budget.users_exclude, saved if isinstance(saved, SavedUsers) else None
        )
        self._counts: dict[tuple[str, str, str], list[int]] = {}  # this poll: (queue, user, status) → [jobs, CPUs]
        self._spent: list[tuple[str, str, int]] = []  # this poll: (queue, user, CPU-seconds; 0: a series at 0)
        self._running: list[tuple[str, str]] = []  # this poll: (queue, user) of the jobs that may add CPU-seconds
        self._cpu: dict[tuple[str, str], int] = {}  # (queue, user label) → CPU-seconds
        self._leaving: set[str] = set()  # users the last daily choice left out: their series go this poll

    def observe(self, seen: Seen) -> None:
        if not self.settings.per_user:
            return
        job = seen.job
        counts = self._counts.get((job.queue, job.user, job.status))
        if counts is None:
            counts = self._counts[(job.queue, job.user, job.status)] = [0, 0]
        counts[0] += 1
        counts[1] += job.cpus
        if seen.ran and job.cpus:
            self._spent.append((job.queue, job.user, seen.ran * job.cpus))
        elif seen.new and seen.started:  # its user's series starts at 0, so that increase() sees all it adds
            self._spent.append((job.queue, job.user, 0))
        if job.cpus and job.status in RAN and job.status not in TERMINAL:
            self._running.append((job.queue, job.user))

    def queues(self) -> set[str]:
        return {queue for queue, _ in self._cpu}

    def finish(self, end: PollEnd) -> Families:
        if not self.settings.per_user:
            return Families()
        for key in [k for k in self._cpu if k[1] in self._leaving]:
            del self._cpu[key]
        self._leaving = set()
        names, by_user = self._names, dict[str, int]()
        for queue, user, seconds in self._spent:
            if seconds:
                by_user[user] = by_user.get(user, 0) + seconds
            key = (end.queue(queue), names.name(user))
            self._cpu[key] = self._cpu.get(key, 0) + seconds
        left = names.take(by_user, end.now)
        if left is not None:  # a daily choice: every job that may add CPU-seconds has the series it adds to
            self._leaving = left
            for queue, user in self._running:
                self._cpu.setdefault((end.queue(queue), names.name(user)), 0)
        if end.named is not None:  # counts of a queue that lost its name are forgotten: its series go
            keep = {*end.named, OTHER}
            for key in [k for k in self._cpu if k[0] not in keep]:
                del self._cpu[key]
        families = Families(gauges=self._gauges(end), kept=self.kept(end))
        self.abandon()
        return families

    def kept(self, end: PollEnd) -> list[Metric]:
        if not self.settings.per_user:
            return []
        seconds = counter(
            "sugon_user_job_cpu_seconds",
            'CPU-seconds used by queue and user (beyond max_users, user="other"), as sugon_job_cpu_seconds_total.'
            + COUNTED,
            ("hpc_cluster", "queue", "user"),
        )
        for (queue, user), value in self._cpu.items():
            seconds.add_metric([self.settings.cluster, queue, user], value)
        return [seconds]

    def _gauges(self, end: PollEnd) -> list[Metric]:
        totals: dict[str, int] = {}
        for (_, user, _), (jobs, _) in self._counts.items():
            totals[user] = totals.get(user, 0) + jobs
        budget = self.settings.budget
        kept = fold_users(totals, budget.max_users, budget.users_exclude)
        named: dict[tuple[str, str, str], list[int]] = {}
        for (queue, user, status), (jobs, cpus) in self._counts.items():
            into = named.setdefault((end.queue(queue), user if user in kept else OTHER, status), [0, 0])
            into[0] += jobs
            into[1] += cpus
        cluster = self.settings.cluster
        jobs_family = gauge("sugon_user_jobs", "Jobs by queue, user and status (non-zero only)." + CACHED, USER)
        cpus_family = gauge(
            "sugon_user_job_cpus", "Sum of procNumUsed by queue, user and status (non-zero only)." + CACHED, USER
        )
        for (queue, user, status), (jobs, cpus) in named.items():
            jobs_family.add_metric([cluster, queue, user, status], jobs)
            cpus_family.add_metric([cluster, queue, user, status], cpus)
        folded = gauge(
            "sugon_users_folded",
            'Users merged into user="other" by max_users and users_exclude.' + CACHED,
            ["hpc_cluster"],
        )
        folded.add_metric([cluster], len(totals) - len(kept))
        return [jobs_family, cpus_family, folded]

    def abandon(self) -> None:
        self._counts, self._spent, self._running = {}, [], []

    def saved(self) -> Mapping[str, Any]:
        return {"users": self._names.saved()} if self.settings.per_user else {}
