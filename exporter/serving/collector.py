"""Renders the published ClusterStates at scrape time: no I/O, no per-job work, never raises on odd data."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from exporter.model import GONE, TERMINAL, WAIT_BUCKETS, CapacitySnapshot, ClusterSnapshot, ClusterState
from exporter.serving.store import StateStore

log = logging.getLogger(__name__)
_CACHED = " Cached: taken from the cluster's last successful poll, refreshed every poll interval."
_SEEN = " Counted by comparing successive polls (the first poll after start only seeds)."
ENDED_STATUSES = (*sorted(TERMINAL), GONE)


def _le(bound: float) -> str:
    """A bucket bound as the ``le`` label value (``30.0``, ``+Inf``)."""
    return "+Inf" if bound == float("inf") else repr(float(bound))


_EMPTY_WAIT = [(_le(b), 0) for b in (*WAIT_BUCKETS, float("inf"))]

Families = dict[str, Any]  # name → *MetricFamily
# The families of a cluster that go when its job data is older than max_staleness, or its capacity is.
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
    }
)
USER_FAMILIES = ("sugon_user_jobs", "sugon_user_job_cpus")
PARTS = ("health", "snapshot", "capacity")  # what a cluster's samples come from (see JobCollector.part)
_PART_NAMES = {"health": "health gauges", "snapshot": "job data", "capacity": "queue capacity"}
CAPACITY_FAMILIES = frozenset(
    {"sugon_queue_cpus", "sugon_queue_free_cpus", "sugon_queue_nodes", "sugon_queue_free_nodes"}
)


def _families(per_user: bool) -> Families:
    job = ["hpc_cluster", "queue", "status"]
    user = ["hpc_cluster", "queue", "user", "status"]
    queue = ["hpc_cluster", "queue"]
    cluster = ["hpc_cluster"]
    fams: list[Any] = [
        GaugeMetricFamily("sugon_up", "1 if the most recent poll of the cluster succeeded, else 0.", labels=cluster),
        GaugeMetricFamily(
            "sugon_last_success_timestamp_seconds", "Unix time of the last successful poll.", labels=cluster
        ),
        GaugeMetricFamily(
            "sugon_poll_duration_seconds", "Wall time of the most recent poll, in seconds.", labels=cluster
        ),
        GaugeMetricFamily(
            "sugon_api_reported_jobs", "data.total reported by the API in the last successful poll.", labels=cluster
        ),
        GaugeMetricFamily("sugon_jobs", "Jobs in the real-time job list by queue and status." + _CACHED, labels=job),
        GaugeMetricFamily(
            "sugon_job_cpus",
            'Sum of procNumUsed by queue and status; CPUs in use is status="running".' + _CACHED,
            labels=job,
        ),
        GaugeMetricFamily(
            "sugon_queued_jobs_by_reason",
            "Queued jobs by the scheduler's reason (detail stripped; at most 20 reasons, the rest other)." + _CACHED,
            labels=["hpc_cluster", "queue", "reason"],
        ),
        GaugeMetricFamily(
            "sugon_oldest_queued_job_age_seconds",
            "Age of the oldest queued job, from when the exporter first saw it waiting (a lower bound); 0 if none."
            + _CACHED,
            labels=queue,
        ),
        CounterMetricFamily("sugon_jobs_submitted", "Jobs seen for the first time." + _SEEN, labels=queue),
        CounterMetricFamily("sugon_jobs_started", "Jobs seen entering running." + _SEEN, labels=queue),
        CounterMetricFamily(
            "sugon_jobs_ended",
            "Jobs seen entering a terminal status, or gone when a job left the list without one." + _SEEN,
            labels=job,
        ),
        HistogramMetricFamily(
            "sugon_job_wait_seconds",
            "Time from first seen waiting to first seen running, observed when a job starts (lower bound)." + _SEEN,
            labels=queue,
        ),
        GaugeMetricFamily("sugon_queue_cpus", "CPUs of the queue (queue capacity poll).", labels=queue),
        GaugeMetricFamily("sugon_queue_free_cpus", "Free CPUs of the queue (queue capacity poll).", labels=queue),
        GaugeMetricFamily("sugon_queue_nodes", "Nodes of the queue (queue capacity poll).", labels=queue),
        GaugeMetricFamily("sugon_queue_free_nodes", "Free nodes of the queue (queue capacity poll).", labels=queue),
        GaugeMetricFamily(
            "sugon_queues_folded", 'Queues merged into queue="other" by max_queues.' + _CACHED, labels=cluster
        ),
    ]
    if per_user:
        fams += [
            GaugeMetricFamily(
                "sugon_user_jobs", "Jobs by queue, user and status (non-zero only)." + _CACHED, labels=user
            ),
            GaugeMetricFamily(
                "sugon_user_job_cpus",
                "Sum of procNumUsed by queue, user and status (non-zero only)." + _CACHED,
                labels=user,
            ),
            GaugeMetricFamily(
                "sugon_users_folded",
                'Users merged into user="other" by max_users and users_exclude.' + _CACHED,
                labels=cluster,
            ),
        ]
    return {f.name: f for f in fams}


class JobCollector(Collector):
    """The job gauges, backlog counters and per-cluster health gauges, e.g.::

        sugon_jobs{hpc_cluster="kunshan",queue="debug",status="queued"} 12.0
        sugon_job_cpus{hpc_cluster="kunshan",queue="debug",status="running"} 256.0
        sugon_up{hpc_cluster="kunshan"} 1.0

    A cluster whose last success is older than max_staleness loses its gauges of job data (no zeros);
    its counters and the wait histogram stay, since they only ever grow. A part of a cluster's samples that
    cannot be rendered (a value no float holds) is left out, and logged once, rather than failing /metrics.
    """

    def __init__(self, store: StateStore, per_user: bool, clock: Callable[[], float] = time.time) -> None:
        self._store = store
        self._per_user = per_user
        self._clock = clock
        self._failing: set[tuple[str, str]] = set()  # (cluster, part) that could not be rendered last time
        self._failing_lock = threading.Lock()

    def describe(self) -> Iterator[Metric]:
        """The families this collector yields (so registration needs no scrape)."""
        yield from _families(self._per_user).values()

    def collect(self) -> Iterator[Metric]:
        """Fresh families built from the states as they are at this instant, each cluster's parts checked."""
        fams = _families(self._per_user)
        now = self._clock()
        for name, state in self._store.states().items():
            snap, cap = state.snapshot, state.capacity
            stale: dict[str, frozenset[str]] = {
                "snapshot": JOB_DATA_FAMILIES if snap is not None and now >= snap.expires_at else frozenset(),
                "capacity": CAPACITY_FAMILIES if cap is not None and now >= cap.expires_at else frozenset(),
            }
            for part in PARTS:
                for family, fam in self._checked_part(name, state, part).items():
                    if fam.samples and family not in stale.get(part, ()):
                        fams[family].samples.extend(fam.samples)
        yield from fams.values()

    def _checked_part(self, name: str, state: ClusterState, part: str) -> Families:
        """part(), with every value tried as rendering will (floatToGoString starts with float()); {} if one fails."""
        try:
            fams = self.part(name, state, part)
            for fam in fams.values():
                for sample in fam.samples:
                    float(sample.value)
        except Exception as exc:  # noqa: BLE001 - logged by render_failed; odd data must not fail /metrics
            self.render_failed(name, part, exc)
            return {}
        self.rendered(name, part)
        return fams

    def render_failed(self, name: str, part: str, exc: Exception) -> None:
        """One part of a cluster could not be rendered: it is left out; logged once until it renders again."""
        with self._failing_lock:
            first = (name, part) not in self._failing
            self._failing.add((name, part))
        if first:
            what = exc.args[0] if exc.args and isinstance(exc.args[0], str) else str(exc)  # not the Metric it names
            log.warning(
                "cluster %s: its %s cannot be rendered (%s: %.100s) and are left out of /metrics until they can",
                name,
                _PART_NAMES.get(part, part),
                type(exc).__name__,
                what,
            )
            log.debug("cluster %s: rendering its %s failed", name, part, exc_info=exc)

    def rendered(self, name: str, part: str) -> None:
        """One part of a cluster was rendered (logs when it had failed before)."""
        if (name, part) in self._failing:
            with self._failing_lock:
                again = (name, part) in self._failing
                self._failing.discard((name, part))
            if again:
                log.info("cluster %s: its %s render again", name, _PART_NAMES.get(part, part))

    def empty_families(self) -> Families:
        """The families collect() yields, in its order, with no samples."""
        return _families(self._per_user)

    def part(self, name: str, state: ClusterState, part: str, users: bool = True) -> Families:
        """One cluster's samples of one part, whatever its staleness: ``health`` (from the state),
        ``snapshot`` (job data and activity, from state.snapshot) or ``capacity`` (from state.capacity).
        collect() is, per cluster, these parts less what has gone stale (JOB_DATA_FAMILIES when the snapshot
        is stale, all of CAPACITY_FAMILIES when the capacity is). ``users=False`` leaves USER_FAMILIES empty
        (see user_samples)."""
        fams = _families(self._per_user)
        if part == "health":
            self._health(fams, name, state)
        elif part == "snapshot" and state.snapshot is not None:
            self._snapshot(fams, name, state.snapshot, with_job_data=True, users=users)
        elif part == "capacity" and state.capacity is not None:
            self._capacity(fams, name, state.capacity)
        return fams

    def _snapshot(
        self, fams: Families, name: str, snap: ClusterSnapshot, with_job_data: bool, users: bool = True
    ) -> None:
        fams["sugon_api_reported_jobs"].add_metric([name], snap.reported_total)
        self._activity(fams, name, snap)
        if with_job_data:
            self._jobs(fams, name, snap, users)

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

    @staticmethod
    def _health(fams: Families, name: str, state: ClusterState) -> None:
        if state.up is not None:
            fams["sugon_up"].add_metric([name], 1.0 if state.up else 0.0)
        if state.poll_duration is not None:
            fams["sugon_poll_duration_seconds"].add_metric([name], state.poll_duration)
        if state.last_success is not None:
            fams["sugon_last_success_timestamp_seconds"].add_metric([name], state.last_success)

    def _jobs(self, fams: Families, name: str, snap: ClusterSnapshot, users: bool = True) -> None:
        for (queue, status), (jobs, cpus) in snap.by_queue.items():
            fams["sugon_jobs"].add_metric([name, queue, status], jobs)
            fams["sugon_job_cpus"].add_metric([name, queue, status], cpus)
        for (queue, reason), n in snap.by_reason.items():
            fams["sugon_queued_jobs_by_reason"].add_metric([name, queue, reason], n)
        for queue, age in snap.oldest_queued_age.items():
            fams["sugon_oldest_queued_job_age_seconds"].add_metric([name, queue], age)
        if self._per_user:
            if users:
                for (queue, user, status), (jobs, cpus) in snap.by_user.items():
                    fams["sugon_user_jobs"].add_metric([name, queue, user, status], jobs)
                    fams["sugon_user_job_cpus"].add_metric([name, queue, user, status], cpus)
            fams["sugon_users_folded"].add_metric([name], snap.users_folded)
        fams["sugon_queues_folded"].add_metric([name], snap.queues_folded)

    @staticmethod
    def user_samples(name: str, snap: ClusterSnapshot) -> tuple[bytes, bytes]:
        """The samples of sugon_user_jobs and sugon_user_job_cpus of one cluster, written out directly.

        These two families are nearly all of a large exposition, and prometheus-client builds a sample
        object and a label dict per series before writing it. The bytes are what it writes for them
        (gauges are written alike in the text format and OpenMetrics: labels sorted by name, values
        escaped, floatToGoString); tests hold the two equal.
        """
        escaped: dict[str, str] = {}
        numbers: dict[int, str] = {}

        def esc(value: str) -> str:
            out = escaped.get(value)
            if out is None:
                out = escaped[value] = value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')
            return out

        def num(value: int) -> str:
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
        return "".join(jobs).encode("utf-8"), "".join(cpus).encode("utf-8")

    @staticmethod
    def _activity(fams: Families, name: str, snap: ClusterSnapshot) -> None:
        act = snap.activity
        # Known queues get 0-valued series, so that rate() sees a counter from its first event.
        queues = sorted(
            set(snap.oldest_queued_age)
            | set(act.submitted)
            | set(act.started)
            | set(act.wait)
            | {q for q, _ in act.ended}
        )
        for queue in queues:
            fams["sugon_jobs_submitted"].add_metric([name, queue], act.submitted.get(queue, 0))
            fams["sugon_jobs_started"].add_metric([name, queue], act.started.get(queue, 0))
            for status in ENDED_STATUSES:
                fams["sugon_jobs_ended"].add_metric([name, queue, status], act.ended.get((queue, status), 0))
            hist = act.wait.get(queue)
            if hist is None:
                fams["sugon_job_wait_seconds"].add_metric([name, queue], buckets=_EMPTY_WAIT, sum_value=0.0)
            else:
                buckets = [(_le(bound), n) for bound, n in hist.cumulative()]
                fams["sugon_job_wait_seconds"].add_metric([name, queue], buckets=buckets, sum_value=hist.total)
