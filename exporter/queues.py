"""The queue budget of one cluster: which queues a poll names, and which fold into queue "other". Pure.

Candidates for a name are the queues with jobs now and those with series: zero-filled (seen within a day),
with activity counters, or with capacity. Queue capacity is named as the job data is.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from exporter.model import OTHER, QueueCapacity

QUEUE_MEMORY_SECONDS = 24 * 3600  # a queue seen within this long keeps its zero-filled series


class QueueBudget:
    """Names a cluster's queues poll after poll, within ``max_queues``; excluded queues are left out."""

    def __init__(
        self, max_queues: int, exclude: Iterable[re.Pattern[str]] = (), seen: Mapping[str, float] | None = None
    ) -> None:
        self._max_queues = max_queues
        self._exclude = tuple(exclude)
        self._excluded: dict[str, bool] = {}
        self.seen: dict[str, float] = dict(seen or {})  # queue → last seen: zero-filled, kept in the state file
        self._named: set[str] | None = None  # the queues named at the last job poll (None: none yet)

    def is_excluded(self, queue: str) -> bool:
        """Whether ``queue`` matches one of the excluded patterns (left out of every family)."""
        hit = self._excluded.get(queue)
        if hit is None:
            hit = self._excluded[queue] = any(p.fullmatch(queue) for p in self._exclude)
        return hit

    def name(self, jobs: Mapping[str, int], now: float, with_series: Iterable[str]) -> tuple[set[str] | None, int]:
        """The queues named this poll (None: every queue, nothing folds) and how many fold into "other".

        ``jobs`` are this poll's jobs by queue; ``with_series`` the queues with counters or capacity. The
        zero-fill memory is updated here, under the names this poll gives.
        """
        seen = {q: t for q, t in self.seen.items() if now - t <= QUEUE_MEMORY_SECONDS and not self.is_excluded(q)}
        candidates = dict.fromkeys((*seen, *with_series), 0)
        candidates.update(jobs)
        named = top(candidates, self._max_queues)
        for queue in jobs:
            seen[queue if named is None or queue in named else OTHER] = now
        if named is None:
            self._named = {q for q in candidates if q != OTHER}
            self.seen = seen
            return None, 0
        self._named = named
        self.seen = {q: t for q, t in seen.items() if q in named or q == OTHER}
        return named, len(candidates) - (OTHER in candidates) - len(named)

    def capacity_view(self, raw: Mapping[str, QueueCapacity]) -> dict[str, QueueCapacity]:
        """A capacity poll's queues, named as the job data is: a queue the job data folds is "other"; one it
        does not know is named while the budget has room (the capacity of an idle queue)."""
        named = self._named or set()
        room = self._max_queues - len(named)
        unknown = sorted(q for q in raw if q not in named and q != OTHER)
        kept = named.union(unknown[: max(room, 0)]) if unknown else named
        queues: dict[str, QueueCapacity] = {}
        for queue, cap in raw.items():
            name = queue if queue in kept else OTHER
            queues[name] = add_capacity(queues.get(name), cap)
        return queues


def add_capacity(a: QueueCapacity | None, b: QueueCapacity) -> QueueCapacity:
    """A queue listed under two schedulers: their sizes add up."""
    if a is None:
        return b

    def plus(x: int | None, y: int | None) -> int | None:
        return None if x is None and y is None else (x or 0) + (y or 0)

    return QueueCapacity(
        plus(a.cpus, b.cpus), plus(a.free_cpus, b.free_cpus), plus(a.nodes, b.nodes), plus(a.free_nodes, b.free_nodes)
    )


def top(counts: Mapping[str, int], limit: int) -> set[str] | None:
    """The ``limit`` names with the highest counts (ties by name), never one called "other"; None when every
    name fits (nothing folds)."""
    if len(counts) - (OTHER in counts) <= limit:
        return None
    return set(sorted((n for n in counts if n != OTHER), key=lambda n: (-counts[n], n))[:limit])
