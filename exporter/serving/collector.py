"""The job families as a prometheus-client collector: built from the published states at each collect()
(what --once renders); no I/O, never raises on odd data."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

from prometheus_client.core import Metric
from prometheus_client.registry import Collector

from exporter.model import ClusterState
from exporter.serving.families import ClusterFamilies, Families, StatePart, stale_families
from exporter.serving.store import StateStore


class JobCollector(Collector):
    """The job gauges, backlog counters and per-cluster health gauges of every cluster in ``store``, e.g.::

        sugon_jobs{hpc_cluster="kunshan",queue="debug",status="queued"} 12.0
        sugon_job_cpus{hpc_cluster="kunshan",queue="debug",status="running"} 256.0
        sugon_up{hpc_cluster="kunshan"} 1.0

    A cluster whose last success is older than max_staleness loses its gauges of job data (no zeros);
    its counters and histograms stay, since they only ever grow. A part of a cluster's samples that
    cannot be rendered (a value no float holds) is left out, and logged once, rather than failing /metrics.
    """

    def __init__(self, store: StateStore, families: ClusterFamilies, clock: Callable[[], float] = time.time) -> None:
        self._store = store
        self._families = families
        self._clock = clock

    def describe(self) -> Iterator[Metric]:
        """The families this collector yields (so registration needs no scrape)."""
        yield from self._families.empty().values()

    def collect(self) -> Iterator[Metric]:
        """Fresh families built from the states as they are at this instant, each cluster's parts checked."""
        fams = self._families.empty()
        now = self._clock()
        for name, state in self._store.states().items():
            stale = stale_families(state, now)
            for part in StatePart:
                for family, fam in self._checked(name, state, part).items():
                    if fam.samples and family not in stale:
                        fams[family].samples.extend(fam.samples)
        yield from fams.values()

    def _checked(self, name: str, state: ClusterState, part: StatePart) -> Families:
        """One part's families, every value tried as rendering will (floatToGoString starts with float());
        none if one fails."""
        try:
            fams = self._families.of(name, state, part)
            for fam in fams.values():
                for sample in fam.samples:
                    float(sample.value)
        except Exception as exc:  # noqa: BLE001 - logged by note_failure; odd data must not fail /metrics
            self._families.note_failure(name, part, exc)
            return {}
        self._families.note_success(name, part)
        return fams
