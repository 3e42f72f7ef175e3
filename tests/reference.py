"""The plain way to count, for tests: one raw row → one Job, added to a SnapshotBuilder job by job; and the
usage counters worked out one job at a time from a list of polls.

The daemon counts pages with RowTally (exporter/counting/tally.py), which builds nothing per row, and turns
polls into counters with JobTracker (exporter/counting/tracker.py), which keeps one tuple per job; tests
hold each equal to what is here (tests/test_fuzz.py), and tests build snapshots by hand with ``add_job``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, NamedTuple

from exporter.counting.rows import RowParser, cpu_count, scalar_text
from exporter.counting.snapshot import SnapshotBuilder
from exporter.counting.tracker import Seen
from exporter.counting.usage import MAX_NODES, node_count, node_names, run_seconds

from exporter.model import NO_REASON, RAN, TERMINAL, WAITING


class Job(NamedTuple):
    """What the exporter counts of one row. ``app`` None (a hand-made job) leaves the application series
    alone; ``nodes`` None and ``run`` below 0 are values that could not be read; ``run`` None: not started."""

    key: str
    queue: str
    user: str
    status: str
    raw_status: str
    cpus: int
    reason: str = NO_REASON
    app: str | None = None
    nodes: int | None = 0
    node_list: tuple[str, ...] = ()  # the nodes named, for a running job
    run: int | None = None


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
    hosts = row.get("nodeUsed")
    names = node_names(hosts)
    return Job(
        key,
        parser.label(row.get("queue")),
        parser.label(row.get("user")),
        status,
        raw_status,
        cpus(row.get("procNumUsed")),
        reason,
        parser.app(row.get("appType")),
        None if names is None else node_count(hosts),
        tuple(names or ()) if status == "running" else (),
        run_seconds(row.get("jobRunTime")),
    )


def add_job(builder: SnapshotBuilder, job: Job) -> None:
    """Count one (already deduplicated) job."""
    queue_slot, user_slot = builder.slots_of(job.queue, job.user, job.status)
    for slot in (queue_slot, user_slot) if user_slot >= 0 else (queue_slot,):
        builder.job_counts[slot] += 1
        builder.cpu_sums[slot] += job.cpus
    if job.status == "queued":
        builder.count_reason(job.queue, job.reason)
    if job.app is not None:
        app_slot = builder.app_slot(job.app, job.status)
        builder.job_counts[app_slot] += 1
        builder.cpu_sums[app_slot] += job.cpus
    builder.node_sums[queue_slot] += job.nodes or 0
    if job.status == "running" and job.run is not None and job.run > builder.run_max[queue_slot]:
        builder.run_max[queue_slot] = job.run


def nodes_in_use(jobs: Iterable[Job]) -> int:
    """Distinct nodes named by the running jobs, at most MAX_NODES."""
    names: set[str] = set()
    for job in jobs:
        names.update(job.node_list)
    return min(len(names), MAX_NODES)


def seen(job: Job) -> Seen:
    """What the tracker is handed of a job."""
    return (job.queue, job.status, job.user, job.cpus, job.run)


class Usage(NamedTuple):
    """Usage counters: CPU-seconds by queue and by (queue, user), and the run times of the jobs seen ending."""

    cpu_seconds: dict[str, int]
    user_cpu_seconds: dict[tuple[str, str], int]
    run_times: dict[str, list[int]]


def usage_of(polls: list[dict[str, Seen]], restored_runs: dict[str, int] | None = None) -> Usage:
    """The usage counters after these polls (the first a seed), job by job, by the rules of issue 15.

    A run time that cannot be read (below 0) or is None moves nothing. Users are counted by name, unbounded.
    """
    usage = Usage({}, {}, {})
    restored_runs = restored_runs or {}
    # job → [last readable run seconds (None: none known), has run, has ended]
    jobs: dict[str, list[Any]] = {}

    def add(queue: str, user: str, amount: int) -> None:
        if amount:
            usage.cpu_seconds[queue] = usage.cpu_seconds.get(queue, 0) + amount
            usage.user_cpu_seconds[(queue, user)] = usage.user_cpu_seconds.get((queue, user), 0) + amount

    def observe(queue: str, state: list[Any]) -> None:
        last, ran, _ = state
        if last is not None and (ran or last > 0):
            usage.run_times.setdefault(queue, []).append(last)

    statuses: dict[str, str] = {}
    for n, poll in enumerate(polls):
        seed = n == 0
        for key, (queue, status, user, cpus, run) in poll.items():
            value = run if run is not None and run >= 0 else None  # a readable run time
            state = jobs.get(key)
            if state is None:
                if seed and key in restored_runs:
                    before = restored_runs[key]
                    last = before if value is None else value
                    if value is not None:  # the growth since the state file
                        add(queue, user, max(value - before, 0) * cpus)
                elif seed:
                    last = value if value is not None else (0 if run is None else None)
                else:  # new since the last poll: all of its run time is
                    last = value or 0
                    add(queue, user, last * cpus)
                state = jobs[key] = [last, status in RAN, status in TERMINAL]
                if status in RAN:  # a user's series exists from their job's first sighting as started, at 0
                    usage.user_cpu_seconds.setdefault((queue, user), 0)
                if state[2] and not seed:
                    observe(queue, state)
            else:
                if value is not None:
                    if state[0] is not None and value > state[0]:
                        add(queue, user, (value - state[0]) * cpus)
                    state[0] = value
                if status in WAITING and statuses[key] not in WAITING:
                    state[1] = False  # requeued: it has to run again
                if status in RAN:
                    state[1] = True
                if status in TERMINAL and not state[2]:
                    state[2] = True
                    observe(queue, state)
            statuses[key] = status
        for key in [k for k in jobs if k not in poll]:
            state = jobs.pop(key)
            if not seed and not state[2]:
                observe(polls[n - 1][key][0], state)  # in the queue it was last seen in
            del statuses[key]
    return usage
