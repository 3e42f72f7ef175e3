"""Which users keep their name in the per-user CPU-second counters: the ``max_users`` with the most CPU-seconds
over the last 30 UTC days, chosen again once a day. Pure.

Between two choices a user not yet named is named while the set has room; the others add to user="other", and
so does a user a choice leaves out, until the next choice. The tracker drops the series of such a user, so
that each increment goes to exactly one series and no series ever decreases.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import NamedTuple

from exporter.model import OTHER

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
