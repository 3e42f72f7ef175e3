"""Pure aggregation: Jobs in, one immutable ClusterSnapshot of counts and CPU sums out."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from exporter.jobs import ZERO_FILL_STATUSES, Job

QueueStatus = tuple[str, str]
QueueUserStatus = tuple[str, str, str]


@dataclass(frozen=True, slots=True)
class Counts:
    """Number of jobs and the sum of their ``procNumUsed``."""

    jobs: int = 0
    cpus: int = 0


@dataclass(frozen=True)
class ClusterSnapshot:
    """The job counts of one successful poll of one cluster; never changed after it is built."""

    cluster: str
    taken_at: float
    expires_at: float
    reported_total: int
    job_count: int
    by_queue: Mapping[QueueStatus, Counts] = field(default_factory=dict)
    by_user: Mapping[QueueUserStatus, Counts] = field(default_factory=dict)


class SnapshotBuilder:
    """Accumulates Jobs page by page, so a poll never has to hold the whole job list."""

    def __init__(self, per_user: bool) -> None:
        self._per_user = per_user
        self._queue: dict[QueueStatus, list[int]] = {}
        self._user: dict[QueueUserStatus, list[int]] = {}
        self.job_count = 0
        self.queues: set[str] = set()

    def add(self, job: Job) -> None:
        """Count one (already deduplicated) job."""
        self.job_count += 1
        self.queues.add(job.queue)
        cell = self._queue.get((job.queue, job.status))
        if cell is None:
            cell = self._queue[(job.queue, job.status)] = [0, 0]
        cell[0] += 1
        cell[1] += job.cpus
        if self._per_user:
            ucell = self._user.get((job.queue, job.user, job.status))
            if ucell is None:
                ucell = self._user[(job.queue, job.user, job.status)] = [0, 0]
            ucell[0] += 1
            ucell[1] += job.cpus

    def build(
        self,
        cluster: str,
        taken_at: float,
        expires_at: float,
        reported_total: int,
        zero_fill_queues: Iterable[str] = (),
    ) -> ClusterSnapshot:
        """Freeze the counts; every queue in ``zero_fill_queues`` gets all documented statuses (0 if none)."""
        by_queue: dict[QueueStatus, Counts] = {}
        for queue in zero_fill_queues:
            for status in ZERO_FILL_STATUSES:
                by_queue[(queue, status)] = Counts()
        for key, (jobs, cpus) in self._queue.items():
            by_queue[key] = Counts(jobs, cpus)
        by_user = {key: Counts(jobs, cpus) for key, (jobs, cpus) in self._user.items()}
        return ClusterSnapshot(
            cluster=cluster,
            taken_at=taken_at,
            expires_at=expires_at,
            reported_total=reported_total,
            job_count=self.job_count,
            by_queue=MappingProxyType(by_queue),
            by_user=MappingProxyType(by_user),
        )
