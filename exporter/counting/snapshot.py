"""Pure aggregation: Jobs in, one immutable ClusterSnapshot of counts and CPU sums out, within a label budget."""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Mapping
from types import MappingProxyType

from exporter.counting.rows import Job
from exporter.model import (
    NO_JOBS,
    OTHER,
    ZERO_FILL_STATUSES,
    Activity,
    ClusterSnapshot,
    Counts,
    QueueReason,
    QueueStatus,
    QueueUserStatus,
)

MAX_REASONS = 20  # per cluster; the rest are counted as reason="other"


def fold_users(totals: Mapping[str, int], max_users: int, exclude: Iterable[re.Pattern[str]] = ()) -> set[str]:
    """The users kept by name: the ``max_users`` with most jobs (ties by name), never an excluded one."""
    patterns = list(exclude)
    ranked = sorted(
        (u for u in totals if not any(p.fullmatch(u) for p in patterns)),
        key=lambda u: (-totals[u], u),
    )
    return set(ranked[:max_users])


def name_queues(jobs: Mapping[str, int], max_queues: int) -> set[str] | None:
    """The queues kept by name: the ``max_queues`` with most jobs (ties by name), never one called "other";
    None when every queue fits (nothing folds, and nothing has to be renamed)."""
    if len(jobs) - (OTHER in jobs) <= max_queues:
        return None
    return set(sorted((q for q in jobs if q != OTHER), key=lambda q: (-jobs[q], q))[:max_queues])


def top_reasons(counts: Mapping[str, int], limit: int = MAX_REASONS) -> set[str]:
    """The reasons kept by name: the ``limit`` with most queued jobs (ties by name)."""
    return set(sorted(counts, key=lambda r: (-counts[r], r))[:limit])


class SnapshotBuilder:
    """Accumulates Jobs page by page, so a poll never has to hold the whole job list.

    One builder may serve poll after poll (``reset`` between them): its series keep their slots, so the
    next poll finds the series it had before instead of building and freeing them all again. A series
    belongs to a poll's snapshot only if that poll counted a job in it.
    """

    def __init__(self, per_user: bool, max_users: int = 200, users_exclude: Iterable[re.Pattern[str]] = ()) -> None:
        self._per_user = per_user
        self._max_users = max_users
        self._users_exclude = list(users_exclude)
        # Series → slot in ``jobs`` and ``cpus``: two flat lists of counters rather than a [jobs, cpus] list
        # per series. A list per series is an object the garbage collector walks in every full collection
        # (which pauses scrapes) and that has to be freed after the poll: 40,000 of them for a cluster of
        # 20,000 per-user series.
        self._queue: dict[QueueStatus, int] = {}
        self._user: dict[QueueUserStatus, int] = {}
        self.jobs: list[int] = []
        self.cpus: list[int] = []
        self._reason: dict[QueueReason, int] = {}

    def reset(self) -> None:
        """Start the next poll: every counter back to 0; the series and their slots stay."""
        self.jobs = [0] * len(self.jobs)
        self.cpus = [0] * len(self.cpus)
        self._reason = {}

    @property
    def series(self) -> tuple[int, int]:
        """(series with a job this poll, series known): how much of what the builder holds is in use."""
        return len(self.jobs) - self.jobs.count(0), len(self.jobs)

    @property
    def queues(self) -> set[str]:
        """The queues with a job counted this poll."""
        jobs = self.jobs
        return {queue for (queue, _), slot in self._queue.items() if jobs[slot]}

    def queue_jobs(self) -> dict[str, int]:
        """Jobs counted this poll, by queue (queues without any are left out)."""
        jobs = self.jobs
        totals: dict[str, int] = {}
        for (queue, _), slot in self._queue.items():
            if jobs[slot]:
                totals[queue] = totals.get(queue, 0) + jobs[slot]
        return totals

    @property
    def job_count(self) -> int:
        jobs = self.jobs
        return sum(jobs[slot] for slot in self._queue.values())

    def _slot(self) -> int:
        self.jobs.append(0)
        self.cpus.append(0)
        return len(self.jobs) - 1

    def cells(self, queue: str, user: str, status: str) -> tuple[int, int]:
        """The slots in ``jobs`` and ``cpus`` that a job of this queue, user and status adds to: by queue,
        and by user (-1 when per-user series are off). A caller that meets the same three values again may
        keep them and add to ``jobs`` and ``cpus`` directly, for as long as the builder lives: that is the fast
        path of a poll."""
        slot = self._queue.get((queue, status))
        if slot is None:
            slot = self._queue[(queue, status)] = self._slot()
        if not self._per_user:
            return slot, -1
        uslot = self._user.get((queue, user, status))
        if uslot is None:
            uslot = self._user[(queue, user, status)] = self._slot()
        return slot, uslot

    def count_reason(self, queue: str, reason: str, jobs: int = 1) -> None:
        """``jobs`` queued jobs of ``queue`` wait for ``reason``."""
        self._reason[(queue, reason)] = self._reason.get((queue, reason), 0) + jobs

    def add(self, job: Job) -> None:
        """Count one (already deduplicated) job."""
        slot, uslot = self.cells(job.queue, job.user, job.status)
        self.jobs[slot] += 1
        self.cpus[slot] += job.cpus
        if uslot >= 0:
            self.jobs[uslot] += 1
            self.cpus[uslot] += job.cpus
        if job.status == "queued":
            self.count_reason(job.queue, job.reason)

    def _users(self, named: Collection[str] | None) -> tuple[dict[QueueUserStatus, Counts], int]:
        all_jobs, all_cpus = self.jobs, self.cpus
        totals: dict[str, int] = {}
        live = [(key, slot) for key, slot in self._user.items() if all_jobs[slot]]  # series of this poll
        for (_, user, _), slot in live:
            totals[user] = totals.get(user, 0) + all_jobs[slot]
        kept = fold_users(totals, self._max_users, self._users_exclude)
        folded: dict[QueueUserStatus, Counts] = {}
        for key, slot in live:
            queue, user, status = key
            if named is not None and queue not in named:
                key = (OTHER, user, status)  # a queue may be called "other" too, and a user
            if user not in kept:
                key = (key[0], OTHER, status)
            had = folded.get(key)
            jobs, cpus = all_jobs[slot], all_cpus[slot]
            folded[key] = (jobs, cpus) if had is None else (had[0] + jobs, had[1] + cpus)
        return folded, len(totals) - len(kept)

    def _reasons(self, named: Collection[str] | None) -> dict[QueueReason, int]:
        per_reason: dict[str, int] = {}
        for (_, reason), n in self._reason.items():
            per_reason[reason] = per_reason.get(reason, 0) + n
        kept = top_reasons(per_reason)
        out: dict[QueueReason, int] = {}
        for (queue, reason), n in self._reason.items():
            key = (queue if named is None or queue in named else OTHER, reason if reason in kept else OTHER)
            out[key] = out.get(key, 0) + n
        return out

    def build(
        self,
        cluster: str,
        taken_at: float,
        expires_at: float,
        reported_total: int,
        zero_fill_queues: Iterable[str] = (),
        activity: Activity | None = None,
        named: Collection[str] | None = None,
        queues_folded: int = 0,
    ) -> ClusterSnapshot:
        """Freeze the counts; every queue in ``zero_fill_queues`` gets all documented statuses (0 if none)
        and an oldest-queued age (0 when nothing is queued there). With ``named`` (see name_queues), every
        other queue is counted as queue="other" (``queues_folded`` of them); ``zero_fill_queues`` and
        ``activity`` are the caller's, and must name queues the same way."""
        activity = activity or Activity()
        by_queue: dict[QueueStatus, Counts] = {}
        oldest: dict[str, float] = {}
        for queue in zero_fill_queues:
            oldest[queue] = 0.0
            for status in ZERO_FILL_STATUSES:
                by_queue[(queue, status)] = NO_JOBS
        all_jobs, all_cpus = self.jobs, self.cpus
        for key, slot in self._queue.items():
            if all_jobs[slot]:  # a series of an earlier poll only: not in this snapshot
                if named is None:
                    by_queue[key] = (all_jobs[slot], all_cpus[slot])
                    continue
                if key[0] not in named:
                    key = (OTHER, key[1])
                had = by_queue.get(key, NO_JOBS)
                by_queue[key] = (had[0] + all_jobs[slot], had[1] + all_cpus[slot])
        for queue, since in activity.oldest_queued_since.items():
            oldest[queue] = max(taken_at - since, 0.0)
        by_user, folded = self._users(named) if self._per_user else ({}, 0)
        return ClusterSnapshot(
            cluster=cluster,
            taken_at=taken_at,
            expires_at=expires_at,
            reported_total=reported_total,
            job_count=self.job_count,
            by_queue=MappingProxyType(by_queue),
            by_user=MappingProxyType(by_user),
            by_reason=MappingProxyType(self._reasons(named)),
            oldest_queued_age=MappingProxyType(oldest),
            users_folded=folded,
            activity=activity,
            queues_folded=queues_folded,
        )
