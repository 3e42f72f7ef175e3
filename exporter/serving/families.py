"""One cluster's state as metric families: what /metrics holds of it, part by part, for the collector and
the cached exposition alike."""

from __future__ import annotations

import enum
import logging
import threading
from collections.abc import Callable
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.utils import floatToGoString

from exporter.model import (
    GONE,
    RUN_BUCKETS,
    TERMINAL,
    WAIT_BUCKETS,
    CapacitySnapshot,
    ClusterSnapshot,
    ClusterState,
)

log = logging.getLogger(__name__)

Families = dict[str, Any]  # name → *MetricFamily

_CACHED = " Cached: taken from the cluster's last successful poll, refreshed every poll interval."
_SEEN = " Counted by comparing successive polls (the first poll after start only seeds)."
_CLUSTER = ("hpc_cluster",)
_QUEUE = ("hpc_cluster", "queue")
_JOB = ("hpc_cluster", "queue", "status")
_USER = ("hpc_cluster", "queue", "user", "status")
_APP = ("hpc_cluster", "app", "status")
_GAUGE, _COUNTER, _HISTOGRAM = GaugeMetricFamily, CounterMetricFamily, HistogramMetricFamily

# Every family of a cluster, in the exposition's order: (kind, name, labels, help).
_FAMILIES: tuple[tuple[Callable[..., Metric], str, tuple[str, ...], str], ...] = (
    (_GAUGE, "sugon_up", _CLUSTER, "1 if the most recent poll of the cluster succeeded, else 0."),
    (_GAUGE, "sugon_last_success_timestamp_seconds", _CLUSTER, "Unix time of the last successful poll."),
    (_GAUGE, "sugon_poll_duration_seconds", _CLUSTER, "Wall time of the most recent poll, in seconds."),
    (_GAUGE, "sugon_api_reported_jobs", _CLUSTER, "data.total reported by the API in the last successful poll."),
    (_GAUGE, "sugon_jobs", _JOB, "Jobs in the real-time job list by queue and status." + _CACHED),
    (
        _GAUGE,
        "sugon_job_cpus",
        _JOB,
        'Sum of procNumUsed by queue and status; CPUs in use is status="running".' + _CACHED,
    ),
    (
        _GAUGE,
        "sugon_job_nodes",
        _JOB,
        "Sum over jobs of the nodes their nodeUsed host list names, by queue and status." + _CACHED,
    ),
    (_GAUGE, "sugon_nodes_in_use", _CLUSTER, "Distinct nodes named by the nodeUsed of running jobs." + _CACHED),
    (
        _GAUGE,
        "sugon_queued_jobs_by_reason",
        ("hpc_cluster", "queue", "reason"),
        "Queued jobs by the scheduler's reason (detail stripped; at most 20 reasons, the rest other)." + _CACHED,
    ),
    (
        _GAUGE,
        "sugon_oldest_queued_job_age_seconds",
        _QUEUE,
        "Age of the oldest queued job, from when the exporter first saw it waiting (a lower bound); 0 if none."
        + _CACHED,
    ),
    (
        _GAUGE,
        "sugon_running_job_max_seconds",
        _QUEUE,
        "The longest jobRunTime among running jobs; 0 if none runs." + _CACHED,
    ),
    (_COUNTER, "sugon_jobs_submitted", _QUEUE, "Jobs seen for the first time." + _SEEN),
    (_COUNTER, "sugon_jobs_started", _QUEUE, "Jobs seen entering running." + _SEEN),
    (
        _COUNTER,
        "sugon_jobs_ended",
        _JOB,
        "Jobs seen entering a terminal status, or gone when a job left the list without one." + _SEEN,
    ),
    (
        _HISTOGRAM,
        "sugon_job_wait_seconds",
        _QUEUE,
        "Time from first seen waiting to first seen running, observed when a job starts (lower bound)." + _SEEN,
    ),
    (
        _COUNTER,
        "sugon_job_cpu_seconds",
        _QUEUE,
        "CPU-seconds used: procNumUsed times the growth of jobRunTime between polls (a lower bound)." + _SEEN,
    ),
    (
        _HISTOGRAM,
        "sugon_job_run_seconds",
        _QUEUE,
        "Run time of jobs seen ending (a terminal status, or leaving the list): their last jobRunTime." + _SEEN,
    ),
    (_GAUGE, "sugon_queue_cpus", _QUEUE, "CPUs of the queue (queue capacity poll)."),
    (_GAUGE, "sugon_queue_free_cpus", _QUEUE, "Free CPUs of the queue (queue capacity poll)."),
    (_GAUGE, "sugon_queue_nodes", _QUEUE, "Nodes of the queue (queue capacity poll)."),
    (_GAUGE, "sugon_queue_free_nodes", _QUEUE, "Free nodes of the queue (queue capacity poll)."),
    (_GAUGE, "sugon_queues_folded", _CLUSTER, 'Queues merged into queue="other" by max_queues.' + _CACHED),
    (
        _GAUGE,
        "sugon_app_jobs",
        _APP,
        'Jobs by application (appType; none if empty; beyond max_apps, app="other") and status.' + _CACHED,
    ),
    (_GAUGE, "sugon_app_job_cpus", _APP, "Sum of procNumUsed by application and status." + _CACHED),
    (_GAUGE, "sugon_user_jobs", _USER, "Jobs by queue, user and status (non-zero only)." + _CACHED),
    (_GAUGE, "sugon_user_job_cpus", _USER, "Sum of procNumUsed by queue, user and status (non-zero only)." + _CACHED),
    (
        _COUNTER,
        "sugon_user_job_cpu_seconds",
        ("hpc_cluster", "queue", "user"),
        'CPU-seconds used by queue and user (beyond max_users, user="other"), as sugon_job_cpu_seconds_total.' + _SEEN,
    ),
    (
        _GAUGE,
        "sugon_users_folded",
        _CLUSTER,
        'Users merged into user="other" by max_users and users_exclude.' + _CACHED,
    ),
)
USER_FAMILIES = ("sugon_user_jobs", "sugon_user_job_cpus", "sugon_user_job_cpu_seconds")
_PER_USER_ONLY = frozenset({*USER_FAMILIES, "sugon_users_folded"})
# The families of a cluster left out when its job data is older than max_staleness, or its capacity is.
JOB_DATA_FAMILIES = frozenset(
    {
        "sugon_jobs",
        "sugon_job_cpus",
        "sugon_queued_jobs_by_reason",
        "sugon_oldest_queued_job_age_seconds",
        "sugon_user_jobs",
        "sugon_user_job_cpus",
        "sugon_users_folded",
        "sugon_queues_folded",
        "sugon_job_nodes",
        "sugon_nodes_in_use",
        "sugon_app_jobs",
        "sugon_app_job_cpus",
        "sugon_running_job_max_seconds",
    }
)
CAPACITY_FAMILIES = frozenset(
    {"sugon_queue_cpus", "sugon_queue_free_cpus", "sugon_queue_nodes", "sugon_queue_free_nodes"}
)
_ENDED_STATUSES = (*sorted(TERMINAL), GONE)


def _le(bound: float) -> str:
    """A bucket bound as the ``le`` label value (``30.0``, ``+Inf``)."""
    return "+Inf" if bound == float("inf") else repr(float(bound))


_EMPTY_WAIT = [(_le(b), 0) for b in (*WAIT_BUCKETS, float("inf"))]
_EMPTY_RUN = [(_le(b), 0) for b in (*RUN_BUCKETS, float("inf"))]


class StatePart(enum.Enum):
    """The parts of a ClusterState that change on their own, each filling its own families; the value names
    the part in logs."""

    HEALTH = "health gauges"  # up, last success, poll duration: new after every poll
    SNAPSHOT = "job data"  # state.snapshot: job gauges, counters, histograms
    CAPACITY = "queue capacity"  # state.capacity

    def source(self, state: ClusterState) -> object | None:
        """What this part of ``state`` is rendered from (None: nothing to render). The snapshot and capacity
        are new objects when they change; health is a small tuple, compared by value."""
        if self is StatePart.HEALTH:
            return (state.up, state.last_success, state.poll_duration)
        return state.snapshot if self is StatePart.SNAPSHOT else state.capacity


def stale_families(state: ClusterState, now: float) -> frozenset[str]:
    """The families of a cluster that ``now`` leaves out: its job data past max_staleness, its capacity
    likewise. The counters and histograms stay, since they only ever grow."""
    snap, cap = state.snapshot, state.capacity
    stale: frozenset[str] = frozenset()
    if snap is not None and snap.stale(now):
        stale |= JOB_DATA_FAMILIES
    if cap is not None and now >= cap.expires_at:
        stale |= CAPACITY_FAMILIES
    return stale


class ClusterFamilies:
    """Builds a cluster's families part by part, e.g.::

        sugon_jobs{hpc_cluster="kunshan",queue="debug",status="queued"} 12.0
        sugon_up{hpc_cluster="kunshan"} 1.0

    and logs a part that cannot be rendered (a value no float holds) once, until it renders again: one
    instance serves the collector and the cached exposition, so that the log line comes once for both.
    """

    def __init__(self, per_user: bool) -> None:
        self.per_user = per_user
        self._failing: set[tuple[str, StatePart]] = set()  # (cluster, part) that could not be rendered last time
        self._failing_lock = threading.Lock()

    def empty(self) -> Families:
        """Every family /metrics holds, in its order, with no samples."""
        return {
            name: kind(name, help_text, labels=labels)
            for kind, name, labels, help_text in _FAMILIES
            if self.per_user or name not in _PER_USER_ONLY
        }

    def of(self, name: str, state: ClusterState, part: StatePart, users: bool = True) -> Families:
        """One cluster's samples of one part, whatever its staleness. ``users=False`` leaves USER_FAMILIES
        empty (see user_lines)."""
        fams = self.empty()
        if part is StatePart.HEALTH:
            self._health(fams, name, state)
        elif part is StatePart.SNAPSHOT and state.snapshot is not None:
            fams["sugon_api_reported_jobs"].add_metric([name], state.snapshot.reported_total)
            self._activity(fams, name, state.snapshot, users)
            self._jobs(fams, name, state.snapshot, users)
        elif part is StatePart.CAPACITY and state.capacity is not None:
            self._capacity(fams, name, state.capacity)
        return fams

    def note_failure(self, name: str, part: StatePart, exc: Exception) -> None:
        """One part of a cluster could not be rendered: it is left out; logged once until it renders again."""
        with self._failing_lock:
            first = (name, part) not in self._failing
            self._failing.add((name, part))
        if first:
            what = exc.args[0] if exc.args and isinstance(exc.args[0], str) else str(exc)  # not the Metric it names
            log.warning(
                "cluster %s: its %s cannot be rendered (%s: %.100s) and are left out of /metrics until they can",
                name,
                part.value,
                type(exc).__name__,
                what,
                extra={"cluster": name, "part": part.value, "reason": type(exc).__name__},
            )
            log.debug(
                "cluster %s: rendering its %s failed",
                name,
                part.value,
                exc_info=exc,
                extra={"cluster": name, "part": part.value},
            )

    def note_success(self, name: str, part: StatePart) -> None:
        """One part of a cluster was rendered (logged when it had failed before)."""
        if (name, part) in self._failing:
            with self._failing_lock:
                again = (name, part) in self._failing
                self._failing.discard((name, part))
            if again:
                log.info(
                    "cluster %s: its %s render again", name, part.value, extra={"cluster": name, "part": part.value}
                )

    @staticmethod
    def user_lines(name: str, snap: ClusterSnapshot) -> tuple[bytes, bytes, bytes]:
        """The samples of USER_FAMILIES (jobs and CPUs by queue, user and status; CPU-seconds by queue and user)
        of one cluster, written out directly.

        These families are nearly all of a large exposition, and prometheus-client builds a sample object and a
        label dict per series before writing it. The bytes are what it writes for them (the sample lines of
        gauges and of counters without _created are alike in the text format and OpenMetrics: labels sorted
        by name, values escaped, floatToGoString); tests hold the two equal.
        """
        escaped: dict[str, str] = {}
        numbers: dict[float, str] = {}

        def esc(value: str) -> str:
            out = escaped.get(value)
            if out is None:
                out = escaped[value] = value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')
            return out

        def num(value: float) -> str:
            out = numbers.get(value)
            if out is None:
                out = numbers[value] = floatToGoString(value)  # type: ignore[no-untyped-call]
            return out

        cluster = esc(name)
        jobs: list[str] = []
        cpus: list[str] = []
        for (queue, user, status), (n, used) in snap.by_user.items():
            labels = f'{{hpc_cluster="{cluster}",queue="{esc(queue)}",status="{esc(status)}",user="{esc(user)}"}} '
            jobs.append(f"sugon_user_jobs{labels}{num(n)}\n")
            cpus.append(f"sugon_user_job_cpus{labels}{num(used)}\n")
        seconds = [
            f'sugon_user_job_cpu_seconds_total{{hpc_cluster="{cluster}",queue="{esc(queue)}",user="{esc(user)}"}} '
            f"{num(value)}\n"
            for (queue, user), value in snap.activity.user_cpu_seconds.items()
        ]
        return "".join(jobs).encode("utf-8"), "".join(cpus).encode("utf-8"), "".join(seconds).encode("utf-8")

    @staticmethod
    def _health(fams: Families, name: str, state: ClusterState) -> None:
        if state.up is not None:
            fams["sugon_up"].add_metric([name], 1.0 if state.up else 0.0)
        if state.poll_duration is not None:
            fams["sugon_poll_duration_seconds"].add_metric([name], state.poll_duration)
        if state.last_success is not None:
            fams["sugon_last_success_timestamp_seconds"].add_metric([name], state.last_success)

    @staticmethod
    def _capacity(fams: Families, name: str, cap: CapacitySnapshot) -> None:
        for queue, q in cap.queues.items():
            for family, value in (
                ("sugon_queue_cpus", q.cpus),
                ("sugon_queue_free_cpus", q.free_cpus),
                ("sugon_queue_nodes", q.nodes),
                ("sugon_queue_free_nodes", q.free_nodes),
            ):
                if value is not None:
                    fams[family].add_metric([name, queue], value)

    def _jobs(self, fams: Families, name: str, snap: ClusterSnapshot, users: bool) -> None:
        nodes = snap.nodes_by_queue
        for (queue, status), (jobs, cpus) in snap.by_queue.items():
            fams["sugon_jobs"].add_metric([name, queue, status], jobs)
            fams["sugon_job_cpus"].add_metric([name, queue, status], cpus)
            fams["sugon_job_nodes"].add_metric([name, queue, status], nodes.get((queue, status), 0))
        for (queue, status), n in nodes.items():
            if (queue, status) not in snap.by_queue:
                fams["sugon_job_nodes"].add_metric([name, queue, status], n)
        fams["sugon_nodes_in_use"].add_metric([name], snap.nodes_in_use)
        longest = snap.running_max_seconds
        for queue in dict.fromkeys([*(q for q, _ in snap.by_queue), *longest]):  # in order, once each
            fams["sugon_running_job_max_seconds"].add_metric([name, queue], longest.get(queue, 0))
        for (app, status), (jobs, cpus) in snap.by_app.items():
            fams["sugon_app_jobs"].add_metric([name, app, status], jobs)
            fams["sugon_app_job_cpus"].add_metric([name, app, status], cpus)
        for (queue, reason), n in snap.by_reason.items():
            fams["sugon_queued_jobs_by_reason"].add_metric([name, queue, reason], n)
        for queue, age in snap.oldest_queued_age.items():
            fams["sugon_oldest_queued_job_age_seconds"].add_metric([name, queue], age)
        if self.per_user:
            if users:
                for (queue, user, status), (jobs, cpus) in snap.by_user.items():
                    fams["sugon_user_jobs"].add_metric([name, queue, user, status], jobs)
                    fams["sugon_user_job_cpus"].add_metric([name, queue, user, status], cpus)
            fams["sugon_users_folded"].add_metric([name], snap.users_folded)
        fams["sugon_queues_folded"].add_metric([name], snap.queues_folded)

    def _activity(self, fams: Families, name: str, snap: ClusterSnapshot, users: bool) -> None:
        act = snap.activity
        # Known queues get 0-valued series, so that rate() sees a counter from its first event.
        queues = sorted(
            set(snap.oldest_queued_age)
            | set(act.submitted)
            | set(act.started)
            | set(act.wait)
            | {q for q, _ in act.ended}
            | set(act.cpu_seconds)
            | set(act.run_time)
        )
        for queue in queues:
            fams["sugon_jobs_submitted"].add_metric([name, queue], act.submitted.get(queue, 0))
            fams["sugon_jobs_started"].add_metric([name, queue], act.started.get(queue, 0))
            for status in _ENDED_STATUSES:
                fams["sugon_jobs_ended"].add_metric([name, queue, status], act.ended.get((queue, status), 0))
            hist = act.wait.get(queue)
            if hist is None:
                fams["sugon_job_wait_seconds"].add_metric([name, queue], buckets=_EMPTY_WAIT, sum_value=0.0)
            else:
                buckets = [(_le(bound), n) for bound, n in hist.cumulative()]
                fams["sugon_job_wait_seconds"].add_metric([name, queue], buckets=buckets, sum_value=hist.total)
            fams["sugon_job_cpu_seconds"].add_metric([name, queue], act.cpu_seconds.get(queue, 0.0))
            run = act.run_time.get(queue)
            if run is None:
                fams["sugon_job_run_seconds"].add_metric([name, queue], buckets=_EMPTY_RUN, sum_value=0.0)
            else:
                buckets = [(_le(bound), n) for bound, n in run.cumulative()]
                fams["sugon_job_run_seconds"].add_metric([name, queue], buckets=buckets, sum_value=run.total)
        if self.per_user and users:
            for (queue, user), seconds in act.user_cpu_seconds.items():
                fams["sugon_user_job_cpu_seconds"].add_metric([name, queue, user], seconds)
