"""Memory of jobs across successful polls, turned into counters, a wait histogram and first-queued times. Pure.

The exporter only ever sees the job list, every interval: a job is "submitted" when first seen, "started"
when first seen in a status that means it ran, "ended" when first seen terminal (or ``gone`` when it left
the list without that). Every time is when the exporter saw it, so waits and ages are lower bounds with
the resolution of the poll interval. The first poll after start only seeds the memory.
"""

from __future__ import annotations

from collections.abc import Container, Mapping
from types import MappingProxyType

from exporter.model import GONE, OTHER, RAN, TERMINAL, WAIT_BUCKETS, WAITING, Activity, QueueStatus, WaitHistogram

# What the tracker remembers of one job: (queue, status, first seen waiting in the current wait or None,
# started, ended). A plain tuple of strings, numbers and bools, which the garbage collector stops tracking:
# one per job adds nothing to the full collections that pause scrapes. A change of a job replaces its tuple.
_Memory = tuple[str, str, float | None, bool, bool]


def _bucket_index(seconds: float) -> int:
    for i, bound in enumerate(WAIT_BUCKETS):
        if seconds <= bound:
            return i
    return len(WAIT_BUCKETS)


class JobTracker:
    """Compares each successful poll's job list with the previous one; holds one small record per listed job."""

    def __init__(self, restored_waits: Mapping[str, float] | None = None) -> None:
        self._memory: dict[str, _Memory] = {}
        self._seeded = False
        self._restored = dict(restored_waits or {})
        self._submitted: dict[str, int] = {}
        self._started: dict[str, int] = {}
        self._ended: dict[QueueStatus, int] = {}
        self._waits: dict[str, list[float]] = {}  # queue → jobs by wait bucket..., then the sum of waits

    def _count_end(self, queue: str, status: str) -> None:
        self._ended[(queue, status)] = self._ended.get((queue, status), 0) + 1

    def _count_start(self, queue: str, waited: float) -> None:
        self._started[queue] = self._started.get(queue, 0) + 1
        histogram = self._waits.get(queue)
        if histogram is None:
            histogram = self._waits[queue] = [0.0] * (len(WAIT_BUCKETS) + 2)
        histogram[_bucket_index(waited)] += 1
        histogram[-1] += waited

    def commit(
        self, current: Mapping[str, tuple[str, str]], now: float, queues: Container[str] | None = None
    ) -> Activity:
        """Take one successful poll: ``current`` maps every listed job's key to its (queue, status).

        With ``queues`` (the queue budget's names), ``current`` names every other queue "other": a job that
        left the list from one of them ends as "other" too, and their counts by name are forgotten."""
        seed = not self._seeded
        # Updated in place, not rebuilt: a second dict of every job would be the biggest thing a poll holds.
        memory = self._memory
        for key, (queue, status) in current.items():
            old = memory.get(key)
            if old is None:
                since = None
                if status in WAITING:
                    restored = self._restored.get(key)
                    since = restored if restored is not None and restored <= now else now
                started, ended = status in RAN, status in TERMINAL
                memory[key] = (queue, status, since, started, ended)
                if not seed:
                    self._submitted[queue] = self._submitted.get(queue, 0) + 1
                    if started:
                        self._count_start(queue, 0.0)  # started between two polls: it waited less than one interval
                    if ended:
                        self._count_end(queue, status)
            elif old[1] == status and old[0] == queue:  # (queue, status, ...)
                continue  # unchanged, as most jobs are from one poll to the next: nothing to update
            else:
                _, old_status, since, started, ended = old
                if status in WAITING:
                    if old_status not in WAITING:  # waiting again (requeued): a new wait and a new start
                        since, started = now, False
                    elif since is None:
                        since = now
                if status in RAN and not started:
                    started = True
                    self._count_start(queue, now - (since if since is not None else now))
                if status not in WAITING:
                    since = None
                if status in TERMINAL and not ended:
                    ended = True
                    self._count_end(queue, status)
                memory[key] = (queue, status, since, started, ended)
        if len(memory) > len(current):  # some jobs left the list: forget them (and count those that just vanished)
            for key in [k for k in memory if k not in current]:
                gone_queue, _, _, _, ended = memory.pop(key)
                if not seed and not ended:
                    self._count_end(gone_queue if queues is None or gone_queue in queues else OTHER, GONE)
        self._seeded = True
        self._restored.clear()
        if queues is not None:
            self._forget_queues_but(queues)
        return self.activity()

    def _forget_queues_but(self, queues: Container[str]) -> None:
        for table in (self._submitted, self._started, self._waits):
            for queue in [q for q in table if q not in queues]:
                del table[queue]
        for key in [k for k in self._ended if k[0] not in queues]:
            del self._ended[key]

    def known_queues(self) -> set[str]:
        """The queues with counts (each has series, 0-valued or not, in the activity families)."""
        return {*self._submitted, *self._started, *self._waits, *(q for q, _ in self._ended)}

    def activity(self) -> Activity:
        """An immutable copy of the counts, and the earliest first-waiting time of the jobs now queued."""
        oldest: dict[str, float] = {}
        for queue, status, since, _, _ in self._memory.values():
            if status == "queued" and since is not None and since < oldest.get(queue, float("inf")):
                oldest[queue] = since
        wait = {
            q: WaitHistogram(tuple(int(n) for n in histogram[:-1]), histogram[-1], int(sum(histogram[:-1])))
            for q, histogram in self._waits.items()
        }
        return Activity(
            MappingProxyType(dict(self._submitted)),
            MappingProxyType(dict(self._started)),
            MappingProxyType(dict(self._ended)),
            MappingProxyType(wait),
            MappingProxyType(oldest),
        )

    def waiting_since(self) -> dict[str, float]:
        """First-waiting times of the jobs now waiting (what a state file keeps across a restart)."""
        return {k: since for k, (_, _, since, _, _) in self._memory.items() if since is not None}
