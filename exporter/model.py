"""The records that cross the layers: a row as decoded, the status map, what a poll publishes, what /metrics
reads. Imports nothing of ours.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import msgspec


class Row(msgspec.Struct, gc=False):
    """The fields of one job-list row that the exporter reads; None where the row has none."""

    jobId: Any = None  # the API's own names, as the JSON has them
    jobmanagerId: Any = None
    queue: Any = None
    user: Any = None
    jobStatus: Any = None
    procNumUsed: Any = None
    reason: Any = None
    jobRunTime: Any = None  # "D-HH:MM:SS", "HH:MM:SS", "MM:SS"; empty or null before the job starts
    nodeUsed: Any = None  # a Slurm host list: "h04r3n[01-04]"
    appType: Any = None  # "fluent", "vasp", "BASE", ...


# The eight statuses documented for the real-time list. The zero-filled families always carry these.
DOCUMENTED_STATUSES: dict[str, str] = {
    "statR": "running",
    "statQ": "queued",
    "statH": "held",
    "statS": "suspended",
    "statE": "exiting",
    "statC": "completed",
    "statW": "waiting",
    "statX": "other",
}
# Seen elsewhere in the API family; emitted only when non-zero.
EXTRA_STATUSES: dict[str, str] = {
    "statDE": "cancelled",
    "statD": "failed",
    "statT": "timeout",
    "statN": "node_fail",
    "statRQ": "requeued",
}
STATUS_MAP: dict[str, str] = {**DOCUMENTED_STATUSES, **EXTRA_STATUSES}
ZERO_FILL_STATUSES: tuple[str, ...] = tuple(DOCUMENTED_STATUSES.values())
UNKNOWN = "unknown"
OTHER = "other"  # what label values beyond a budget (users, queues, reasons) are counted as
NO_REASON = "none"

WAITING = frozenset({"queued", "held", "waiting", "requeued"})
# Statuses that mean the job has started, even if it was never seen running.
RAN = frozenset({"running", "suspended", "exiting", "completed", "failed", "timeout", "node_fail"})
TERMINAL = frozenset({"completed", "cancelled", "failed", "timeout", "node_fail"})
GONE = "gone"  # how a job that left the list without a terminal status ended

# The reasons an API call fails with: the values of every `reason` label of the exporter's own metrics.
REASONS = ("timeout", "connection", "http_status", "invalid_response", "auth", "api_code")

QueueStatus = tuple[str, str]
QueueUserStatus = tuple[str, str, str]
QueueReason = tuple[str, str]
Counts = tuple[int, int]
"""(number of jobs, sum of their ``procNumUsed``). A plain tuple, which the garbage collector stops tracking."""
NO_JOBS: Counts = (0, 0)

WAIT_BUCKETS: tuple[float, ...] = (30, 60, 300, 900, 1800, 3600, 7200, 14400, 28800, 43200, 86400, 172800)
RUN_BUCKETS: tuple[float, ...] = (60, 300, 900, 3600, 14400, 43200, 86400, 172800, 604800)  # 1m ... 7d
NO_APP = "none"  # the app label of a job whose appType is empty or null
INVALID_FIELDS = ("jobRunTime", "jobStatus", "nodeUsed", "procNumUsed")  # the field label of sugon_invalid_fields_total


@dataclass(frozen=True)
class WaitHistogram:
    """Observations of one queue: per-bucket counts (the last is +Inf, not cumulative), their sum and count."""

    counts: tuple[int, ...]
    total: float
    count: int

    def cumulative(self) -> list[tuple[float, int]]:
        """(upper bound, cumulative count) pairs, ending with +Inf."""
        out, running = [], 0
        for bound, n in zip((*WAIT_BUCKETS, float("inf")), self.counts):
            running += n
            out.append((float(bound), running))
        return out


@dataclass(frozen=True)
class RunTimeHistogram:
    """Run times of the jobs of one queue seen ending: per-bucket counts over RUN_BUCKETS (the last is +Inf, not
    cumulative), their sum and count."""

    counts: tuple[int, ...]
    total: float
    count: int

    def cumulative(self) -> list[tuple[float, int]]:
        """(upper bound, cumulative count) pairs, ending with +Inf."""
        out, running = [], 0
        for bound, n in zip((*RUN_BUCKETS, float("inf")), self.counts):
            running += n
            out.append((float(bound), running))
        return out


@dataclass(frozen=True)
class Activity:
    """What the tracker has counted so far (cumulative; never decreases) and the oldest wait per queue now."""

    submitted: Mapping[str, int] = field(default_factory=dict)
    started: Mapping[str, int] = field(default_factory=dict)
    ended: Mapping[QueueStatus, int] = field(default_factory=dict)
    wait: Mapping[str, WaitHistogram] = field(default_factory=dict)
    oldest_queued_since: Mapping[str, float] = field(default_factory=dict)
    # Usage (cumulative): CPU-seconds by queue and by (queue, user), and the run times of jobs seen ending.
    cpu_seconds: Mapping[str, float] = field(default_factory=dict)
    user_cpu_seconds: Mapping[tuple[str, str], float] = field(default_factory=dict)
    run_time: Mapping[str, RunTimeHistogram] = field(default_factory=dict)


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
    by_reason: Mapping[QueueReason, int] = field(default_factory=dict)
    oldest_queued_age: Mapping[str, float] = field(default_factory=dict)
    users_folded: int = 0
    activity: Activity = field(default_factory=Activity)
    queues_folded: int = 0
    # The shape of the workload in this poll: nodes of the jobs by (queue, status) (zero-filled like by_queue),
    # distinct nodes named by running jobs, jobs and CPUs by (app, status) within max_apps, and the longest
    # run time of a running job by queue (a queue in by_queue without one has none here: 0).
    nodes_by_queue: Mapping[QueueStatus, int] = field(default_factory=dict)
    nodes_in_use: int = 0
    by_app: Mapping[tuple[str, str], Counts] = field(default_factory=dict)
    running_max_seconds: Mapping[str, float] = field(default_factory=dict)

    def stale(self, now: float) -> bool:
        """Past max_staleness: /metrics leaves the job data out from ``now`` on (the one staleness rule)."""
        return now >= self.expires_at


@dataclass(frozen=True)
class QueueCapacity:
    """One queue's size and what is free in it, as far as the answer says (None where it does not)."""

    cpus: int | None
    free_cpus: int | None
    nodes: int | None
    free_nodes: int | None


@dataclass(frozen=True)
class CapacitySnapshot:
    """Queue capacity of one successful capacity poll."""

    taken_at: float
    expires_at: float
    queues: Mapping[str, QueueCapacity]


@dataclass(frozen=True)
class PollFailure:
    """A failed poll: its reason (one of REASONS, or "internal"), its message with secrets masked, and when."""

    reason: str
    message: str
    at: float


@dataclass(frozen=True)
class ClusterState:
    """The outcome of a cluster's polls so far. ``up`` is None until the first poll ends.

    ``last_error`` is the reason of the failing poll while it fails; ``last_failure`` is kept after a
    recovery, for the status page. ``pages`` counts the job-list pages of the last poll when it succeeded;
    ``next_poll_at`` is when the run loop polls next (None outside it).
    """

    name: str
    up: bool | None = None
    last_success: float | None = None
    poll_duration: float | None = None
    last_error: str | None = None
    snapshot: ClusterSnapshot | None = None
    capacity: CapacitySnapshot | None = None
    pages: int | None = None
    last_failure: PollFailure | None = None
    next_poll_at: float | None = None


@dataclass(frozen=True)
class LabelBudget:
    """Bounds on label values: the users, queues and applications kept by name, and the queues left out
    entirely."""

    max_users: int = 200
    users_exclude: tuple[re.Pattern[str], ...] = ()
    queues_exclude: tuple[re.Pattern[str], ...] = ()
    max_queues: int = 100
    max_apps: int = 50


@dataclass(frozen=True)
class CapacitySettings:
    """Queue-capacity polling: how often, and as which account (empty: from /center or the token)."""

    interval: float = 300.0
    username: str = ""
