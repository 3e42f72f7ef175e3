"""The plain way to count rows, for tests: one raw row → one Job, added to a SnapshotBuilder job by job.

The daemon counts pages with RowTally (exporter/counting/tally.py), which builds nothing per row; a test
holds the two equal (tests/test_fuzz.py), and tests build snapshots by hand with ``add_job``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from exporter.counting.rows import RowParser, cpu_count, scalar_text
from exporter.counting.snapshot import SnapshotBuilder
from exporter.model import NO_REASON


class Job(NamedTuple):
    """What the exporter counts of one row."""

    key: str
    queue: str
    user: str
    status: str
    raw_status: str
    cpus: int
    reason: str = NO_REASON


def job_key(row: Any, scheduler_id: str) -> str | None:
    """The dedupe key ``jobmanagerId NUL jobId`` of a raw row, or None when the row has no usable jobId."""
    if not isinstance(row, dict):
        return None
    job_id = scalar_text(row.get("jobId"))
    if job_id is None:
        return None
    manager = scalar_text(row.get("jobmanagerId")) or scheduler_id
    return f"{manager}\x00{job_id}"


def cpus(value: Any) -> int:
    """``procNumUsed`` as a non-negative int up to MAX_CPUS; missing, invalid or too big counts as 0."""
    return cpu_count(value) or 0


def parse_job(row: Any, scheduler_id: str, parser: RowParser | None = None) -> Job | None:
    """A Job from one raw row, or None when the row is unusable (not an object, or no jobId)."""
    key = job_key(row, scheduler_id)
    if key is None:
        return None
    parser = parser or RowParser()
    raw_status, status = parser.status(row.get("jobStatus"))
    reason = parser.reason(row.get("reason")) if status == "queued" else NO_REASON  # only queued jobs by reason
    return Job(
        key,
        parser.label(row.get("queue")),
        parser.label(row.get("user")),
        status,
        raw_status,
        cpus(row.get("procNumUsed")),
        reason,
    )


def add_job(builder: SnapshotBuilder, job: Job) -> None:
    """Count one (already deduplicated) job."""
    queue_slot, user_slot = builder.slots_of(job.queue, job.user, job.status)
    for slot in (queue_slot, user_slot) if user_slot >= 0 else (queue_slot,):
        builder.job_counts[slot] += 1
        builder.cpu_sums[slot] += job.cpus
    if job.status == "queued":
        builder.count_reason(job.queue, job.reason)
