"""The records that cross the layers: a row as decoded, a job as counted, what a poll publishes. Imports nothing
of ours."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import msgspec
from prometheus_client.core import Metric


class Row(msgspec.Struct):
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
    jobName: Any = None


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
OTHER = "other"  # what label values beyond a budget (users, queues, reasons, applications) are counted as
NO_REASON = "none"
NO_APP = "none"  # the app label of a job whose appType is empty or null

WAITING = frozenset({"queued", "held", "waiting", "requeued"})
# Statuses that mean the job has started, even if it was never seen running.
RAN = frozenset({"running", "suspended", "exiting", "completed", "failed", "timeout", "node_fail"})
TERMINAL = frozenset({"completed", "cancelled", "failed", "timeout", "node_fail"})
GONE = "gone"  # how a job that left the list without a terminal status ended

# The reasons an API call fails with: the values of every `reason` label of the exporter's own metrics.
REASONS = ("timeout", "connection", "http_status", "invalid_response", "auth", "api_code")
INVALID_FIELDS = ("jobRunTime", "jobStatus", "nodeUsed", "procNumUsed")  # the field label of sugon_invalid_fields_total
NOT_STARTED = None  # run seconds of a job with an empty or null jobRunTime
INVALID = -1  # run seconds (or a node count) that could not be read


@dataclass(slots=True)
class Job:
    """One job of a poll, as its row reads: labels cleaned, numbers checked.

    ``run_seconds`` is None before the job started and INVALID when its jobRunTime could not be read;
    ``node_count`` is None when it names no nodes and INVALID when nodeUsed is not a host list.
    """

    key: str  # "jobmanagerId NUL jobId": unique across a cluster's schedulers
    queue: str
    user: str
    status: str
    cpus: int
    run_seconds: int | None
    node_count: int | None
    nodes: str | None  # nodeUsed as listed, for the nodes in use (only a running job's are listed)
    app: str
    reason: str  # the scheduler's reason reduced to its kind (queued jobs)
    name: str  # jobName, cut and cleaned like a label ("" when there is none)


@dataclass(slots=True)
class Known:
    """What the exporter keeps of a job from one poll to the next."""

    queue: str
    status: str
    run: int  # its last known run seconds (the base its CPU-seconds grow from); INVALID when never known
    since: float | None  # when it was first seen waiting in its current wait
    started: bool
    ended: bool
    read: int = 0  # the last poll that read it, by JobBook's count of polls


@dataclass(slots=True)
class Seen:
    """One job of a poll and what changed since the last poll (no event on the first poll after start, which
    only learns the list)."""

    job: Job
    new: bool  # not known before this poll (on the first poll after start too)
    submitted: bool  # event: seen for the first time
    starts: bool  # event: seen starting (or seen first in a status that means it ran)
    waited: float  # when it starts: seconds from first seen waiting to seen starting (0 if never seen waiting)
    ends: bool  # event: seen entering a terminal status
    started: bool  # it has started, now or before
    ran: int  # run seconds gained since the last poll: CPU-seconds are this times its CPUs
    run: int  # its run seconds as now known (INVALID: not known)
    since: float | None  # when it was first seen waiting in its current wait


@dataclass(slots=True)
class Gone:
    """A job confirmed to have left the list, as it was last known."""

    queue: str
    status: str
    run: int
    started: bool
    ended: bool


@dataclass(frozen=True)
class QueueCapacity:
    """One queue's size and what is free in it, as far as the answer says (None where it does not)."""

    cpus: int | None
    free_cpus: int | None
    nodes: int | None
    free_nodes: int | None


@dataclass(frozen=True)
class PollFailure:
    """A failed poll: its reason (one of REASONS, or "internal"), its message with secrets masked, and when."""

    reason: str
    message: str
    at: float


@dataclass(frozen=True)
class Served:
    """Families of one cluster served until ``expires_at`` (job data past max_staleness, capacity likewise)."""

    taken_at: float
    expires_at: float
    families: tuple[Metric, ...]

    def stale(self, now: float) -> bool:
        """Past max_staleness: /metrics leaves these families out from ``now`` on (the one staleness rule)."""
        return now >= self.expires_at


@dataclass(frozen=True)
class ClusterState:
    """The outcome of a cluster's polls so far, as /metrics and the status page read it. ``up`` is None until
    the first poll ends.

    ``jobs`` holds the job gauges of the last successful poll; ``kept`` the families that stay through an outage
    (counters, histograms, the API's total); ``own`` the exporter's own counters of the cluster (polls, requests,
    errors, tokens); ``job_counts`` the jobs by (queue, status) of ``jobs``, for the status page.
    ``last_error`` is the reason of the failing poll while it fails; ``last_failure`` is kept after a recovery.
    """

    name: str
    up: bool | None = None
    last_success: float | None = None
    poll_duration: float | None = None
    last_error: str | None = None
    pages: int | None = None
    last_failure: PollFailure | None = None
    next_poll_at: float | None = None
    token_expiry: float | None = None
    jobs: Served | None = None
    job_counts: Mapping[tuple[str, str], int] = field(default_factory=dict)
    kept: tuple[Metric, ...] = ()
    capacity: Served | None = None
    own: tuple[Metric, ...] = ()


@dataclass(frozen=True)
class Budget:
    """Bounds on label values: the users, queues and applications kept by name, and those left out."""

    max_users: int = 200
    users_exclude: tuple[re.Pattern[str], ...] = ()
    queues_exclude: tuple[re.Pattern[str], ...] = ()
    max_queues: int = 100
    max_apps: int = 50


@dataclass(frozen=True)
class PollSettings:
    """How one cluster is polled (see the configuration's keys of the same names)."""

    interval: float
    page_size: int
    concurrency: int
    max_staleness: float
    max_jobs: int = 5_000_000  # per scheduler: a larger data.total fails the poll
    capacity_interval: float | None = None  # None: queue capacity is not polled
    username: str = ""  # the account for the capacity endpoint; empty: from /center or the token
