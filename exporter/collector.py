"""Renders the published ClusterStates at scrape time: no I/O, no per-job work, never raises on odd data."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from exporter.state import StateStore

_CACHED = " Cached: taken from the cluster's last successful poll, refreshed every poll interval."


def _families(per_user: bool) -> dict[str, GaugeMetricFamily]:
    job = ["hpc_cluster", "queue", "status"]
    user = ["hpc_cluster", "queue", "user", "status"]
    fams = [
        GaugeMetricFamily(
            "sugon_up", "1 if the most recent poll of the cluster succeeded, else 0.", labels=["hpc_cluster"]
        ),
        GaugeMetricFamily(
            "sugon_last_success_timestamp_seconds", "Unix time of the last successful poll.", labels=["hpc_cluster"]
        ),
        GaugeMetricFamily(
            "sugon_poll_duration_seconds", "Wall time of the most recent poll, in seconds.", labels=["hpc_cluster"]
        ),
        GaugeMetricFamily(
            "sugon_api_reported_jobs",
            "data.total reported by the API in the last successful poll.",
            labels=["hpc_cluster"],
        ),
        GaugeMetricFamily("sugon_jobs", "Jobs in the real-time job list by queue and status." + _CACHED, labels=job),
        GaugeMetricFamily(
            "sugon_job_cpus",
            'Sum of procNumUsed by queue and status; CPUs in use is status="running".' + _CACHED,
            labels=job,
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
        ]
    return {f.name: f for f in fams}


class JobCollector(Collector):
    """The job gauges and per-cluster health gauges, e.g.::

        sugon_jobs{hpc_cluster="kunshan",queue="debug",status="queued"} 12.0
        sugon_job_cpus{hpc_cluster="kunshan",queue="debug",status="running"} 256.0
        sugon_up{hpc_cluster="kunshan"} 1.0

    A cluster whose last success is older than max_staleness loses its job gauges (no zeros).
    """

    def __init__(self, store: StateStore, per_user: bool, clock: Callable[[], float] = time.time) -> None:
        self._store = store
        self._per_user = per_user
        self._clock = clock

    def describe(self) -> Iterator[Metric]:
        """The families this collector yields (so registration needs no scrape)."""
        yield from _families(self._per_user).values()

    def collect(self) -> Iterator[Metric]:
        """Fresh families built from the states as they are at this instant."""
        fams = _families(self._per_user)
        now = self._clock()
        for name, state in self._store.states().items():
            if state.up is not None:
                fams["sugon_up"].add_metric([name], 1.0 if state.up else 0.0)
            if state.poll_duration is not None:
                fams["sugon_poll_duration_seconds"].add_metric([name], state.poll_duration)
            if state.last_success is not None:
                fams["sugon_last_success_timestamp_seconds"].add_metric([name], state.last_success)
            snap = state.snapshot
            if snap is None:
                continue
            fams["sugon_api_reported_jobs"].add_metric([name], snap.reported_total)
            if now >= snap.expires_at:
                continue
            for (queue, status), counts in snap.by_queue.items():
                fams["sugon_jobs"].add_metric([name, queue, status], counts.jobs)
                fams["sugon_job_cpus"].add_metric([name, queue, status], counts.cpus)
            if self._per_user:
                for (queue, user, status), counts in snap.by_user.items():
                    fams["sugon_user_jobs"].add_metric([name, queue, user, status], counts.jobs)
                    fams["sugon_user_job_cpus"].add_metric([name, queue, user, status], counts.cpus)
        yield from fams.values()
