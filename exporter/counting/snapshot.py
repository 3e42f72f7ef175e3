"""Pure aggregation: counts by series in, one immutable ClusterSnapshot of counts and CPU sums out, within a
label budget."""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Mapping
from types import MappingProxyType
from typing import NamedTuple

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


def top_apps(jobs: Mapping[str, int], max_apps: int) -> set[str] | None:
    """The applications kept by name: the ``max_apps`` with most jobs (ties by name), never one called "other";
    None when every application fits."""
    return name_queues(jobs, max_apps)  # the same rule as the queue budget's


def top_reasons(counts: Mapping[str, int], limit: int = MAX_REASONS) -> set[str]:
    """The reasons kept by name: the ``limit`` with most queued jobs (ties by name)."""
    return set(sorted(counts, key=lambda r: (-counts[r], r))[:limit])


class SeriesUse(NamedTuple):
    """How much of what a builder holds is in use: series with a job this poll, and series known."""

    counted: int
    known: int


class SnapshotBuilder:
    """Accumulates counts page by page, so a poll never has to hold the whole job list.

    Each series (queue and status; queue, user and status; application and status) has a slot in
    ``job_counts`` and ``cpu_sums``, which a caller adds to (see ``slots_of`` and ``app_slot``); a series by
    queue also adds its jobs' nodes in ``node_sums`` and its longest run in ``run_max``. One builder may serve
    poll after poll (``reset`` between them): its series keep their slots, so the next poll finds the series
    it had before instead of building them again. A series belongs to a poll's snapshot only if that poll
    counted a job in it.
    """

    def __init__(
        self,
        per_user: bool,
        max_users: int = 200,
        users_exclude: Iterable[re.Pattern[str]] = (),
        max_apps: int = 50,
    ) -> None:
        self._per_user = per_user
        self._max_users = max_users
        self._users_exclude = list(users_exclude)
        self._max_apps = max_apps
        # Flat lists of counters indexed by slot, not a [jobs, cpus] list per series: nothing per series for
        # the garbage collector to walk, or to free after the poll.
        self._queue_slots: dict[QueueStatus, int] = {}
        self._user_slots: dict[QueueUserStatus, int] = {}
        self._app_slots: dict[tuple[str, str], int] = {}
        self.job_counts: list[int] = []
        self.cpu_sums: list[int] = []
        self.node_sums: list[int] = []
        self.run_max: list[int] = []
        self._reason_jobs: dict[QueueReason, int] = {}
        self.nodes_in_use = 0  # distinct nodes named by running jobs, set by the caller

    def reset(self) -> None:
        """Start the next poll: every counter back to 0; the series and their slots stay."""
        self.job_counts = [0] * len(self.job_counts)
        self.cpu_sums = [0] * len(self.cpu_sums)
        self.node_sums = [0] * len(self.node_sums)
        self.run_max = [0] * len(self.run_max)
        self._reason_jobs = {}
        self.nodes_in_use = 0

    def series_use(self) -> SeriesUse:
        """How many series counted a job this poll, of how many the builder knows."""
        return SeriesUse(len(self.job_counts) - self.job_counts.count(0), len(self.job_counts))

    @property
    def queues(self) -> set[str]:
        """The queues with a job counted this poll."""
        jobs = self.job_counts
        return {queue for (queue, _), slot in self._queue_slots.items() if jobs[slot]}

    def queue_jobs(self) -> dict[str, int]:
        """Jobs counted this poll, by queue (queues without any are left out)."""
        jobs = self.job_counts
        totals: dict[str, int] = {}
        for (queue, _), slot in self._queue_slots.items():
            if jobs[slot]:
                totals[queue] = totals.get(queue, 0) + jobs[slot]
        return totals

    @property
    def job_count(self) -> int:
        """Jobs counted this poll."""
        jobs = self.job_counts
        return sum(jobs[slot] for slot in self._queue_slots.values())

    def _new_slot(self) -> int:
        self.job_counts.append(0)
        self.cpu_sums.append(0)
        self.node_sums.append(0)
        self.run_max.append(0)
        return len(self.job_counts) - 1

    def slots_of(self, queue: str, user: str, status: str) -> tuple[int, int]:
        """The slots in ``job_counts`` and ``cpu_sums`` that a job of this queue, user and status adds to: by
        queue, and by user (-1 when per-user series are off). A caller that meets the same three values again
        may keep them and add to the counters directly, for as long as the builder lives: that is the fast
        path of a poll."""
        queue_slot = self._queue_slots.get((queue, status))
        if queue_slot is None:
            queue_slot = self._queue_slots[(queue, status)] = self._new_slot()
        if not self._per_user:
            return queue_slot, -1
        user_slot = self._user_slots.get((queue, user, status))
        if user_slot is None:
            user_slot = self._user_slots[(queue, user, status)] = self._new_slot()
        return queue_slot, user_slot

    def app_slot(self, app: str, status: str) -> int:
        """The slot in ``job_counts`` and ``cpu_sums`` that a job of this application and status adds to (kept,
        like those of ``slots_of``, for as long as the builder lives)."""
        slot = self._app_slots.get((app, status))
        if slot is None:
            slot = self._app_slots[(app, status)] = self._new_slot()
        return slot

    def count_reason(self, queue: str, reason: str, jobs: int = 1) -> None:
        """``jobs`` queued jobs of ``queue`` wait for ``reason``."""
        self._reason_jobs[(queue, reason)] = self._reason_jobs.get((queue, reason), 0) + jobs

    def _by_user(self, named: Collection[str] | None) -> tuple[dict[QueueUserStatus, Counts], int]:
        all_jobs, all_cpus = self.job_counts, self.cpu_sums
        totals: dict[str, int] = {}
        live = [(key, slot) for key, slot in self._user_slots.items() if all_jobs[slot]]  # series of this poll
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

    def _by_reason(self, named: Collection[str] | None) -> dict[QueueReason, int]:
        per_reason: dict[str, int] = {}
        for (_, reason), n in self._reason_jobs.items():
            per_reason[reason] = per_reason.get(reason, 0) + n
        kept = top_reasons(per_reason)
        out: dict[QueueReason, int] = {}
        for (queue, reason), n in self._reason_jobs.items():
            key = (queue if named is None or queue in named else OTHER, reason if reason in kept else OTHER)
            out[key] = out.get(key, 0) + n
        return out

    def _by_app(self) -> dict[tuple[str, str], Counts]:
        all_jobs, all_cpus = self.job_counts, self.cpu_sums
        live = [(key, slot) for key, slot in self._app_slots.items() if all_jobs[slot]]
        totals: dict[str, int] = {}
        for (app, _), slot in live:
            totals[app] = totals.get(app, 0) + all_jobs[slot]
        kept = top_apps(totals, self._max_apps)
        out: dict[tuple[str, str], Counts] = {}
        for key, slot in live:
            if kept is not None and key[0] not in kept:
                key = (OTHER, key[1])
            had = out.get(key, NO_JOBS)
            out[key] = (had[0] + all_jobs[slot], had[1] + all_cpus[slot])
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
        nodes: dict[QueueStatus, int] = {}
        longest: dict[str, float] = {}
        oldest: dict[str, float] = {}
        for queue in zero_fill_queues:
            oldest[queue] = 0.0
            for status in ZERO_FILL_STATUSES:
                by_queue[(queue, status)] = NO_JOBS
                nodes[(queue, status)] = 0
        all_jobs, all_cpus, all_nodes, run_max = self.job_counts, self.cpu_sums, self.node_sums, self.run_max
        for key, slot in self._queue_slots.items():
            if all_jobs[slot]:  # a series of an earlier poll only: not in this snapshot
                if named is not None and key[0] not in named:
                    key = (OTHER, key[1])
                had = by_queue.get(key, NO_JOBS)
                by_queue[key] = (had[0] + all_jobs[slot], had[1] + all_cpus[slot])
                nodes[key] = nodes.get(key, 0) + all_nodes[slot]
                if key[1] == "running" and run_max[slot] >= longest.get(key[0], 0):
                    longest[key[0]] = float(run_max[slot])
        for queue, since in activity.oldest_queued_since.items():
            oldest[queue] = max(taken_at - since, 0.0)
        by_user, folded = self._by_user(named) if self._per_user else ({}, 0)
        return ClusterSnapshot(
            cluster=cluster,
            taken_at=taken_at,
            expires_at=expires_at,
            reported_total=reported_total,
            job_count=self.job_count,
            by_queue=MappingProxyType(by_queue),
            by_user=MappingProxyType(by_user),
            by_reason=MappingProxyType(self._by_reason(named)),
            oldest_queued_age=MappingProxyType(oldest),
            users_folded=folded,
            activity=activity,
            queues_folded=queues_folded,
            nodes_by_queue=MappingProxyType(nodes),
            nodes_in_use=self.nodes_in_use,
            by_app=MappingProxyType(self._by_app()),
            running_max_seconds=MappingProxyType(longest),
        )
