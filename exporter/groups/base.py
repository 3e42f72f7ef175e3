"""Metric groups: each turns the jobs of a cluster's polls into families of its own (see each module).

A poll hands every job it read to every group (``observe``), then every job confirmed to have left the list
(``depart``), then ends (``finish``), which returns the group's families: job gauges, served until the data
is max_staleness old, and kept families (counters, histograms), served as long as the exporter runs. A failed
poll ends with ``abandon``, and counts nothing. Adding a group takes its module and one line in GROUPS.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

from exporter.model import OTHER, Budget, Gone, Seen

CACHED = " Cached: taken from the cluster's last successful poll, refreshed every poll interval."
COUNTED = " Counted by comparing successive polls (the first poll after start only seeds)."


@dataclass(frozen=True)
class Settings:
    """What every group of a cluster is built with: the cluster's name (the ``hpc_cluster`` label), its label
    budget, whether per-user families are on, whether per-job series are on (for at most ``max_job_series`` jobs,
    only those of ``job_series_users`` unless it is empty), and what the state file kept of the group (by the
    group's own key)."""

    cluster: str
    budget: Budget = field(default_factory=Budget)
    per_user: bool = True
    per_job: bool = False
    max_job_series: int = 500
    job_series_users: tuple[str, ...] = ()
    saved: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class PollEnd:
    """How a poll ended, for every group: when; the queues named within max_queues (None: every queue, nothing
    folds) and how many fold into "other"; the queues seen within a day (zero-filled), and those and every
    queue with counts (their counters have series, 0-valued or not), all named."""

    now: float
    named: Collection[str] | None = None
    folded: int = 0
    zero_fill: frozenset[str] = frozenset()
    series: frozenset[str] = frozenset()

    def queue(self, queue: str) -> str:
        """The ``queue`` label a queue's jobs are counted under this poll."""
        return queue if self.named is None or queue in self.named else OTHER


@dataclass
class Families:
    """What a group's poll gives: job gauges (left out once stale) and kept families (counters, histograms)."""

    gauges: list[Metric] = field(default_factory=list)
    kept: list[Metric] = field(default_factory=list)


class Group:
    """A metric group of one cluster; every method does nothing unless a group needs it."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def observe(self, seen: Seen) -> None:
        """One job this poll read."""

    def depart(self, gone: Gone) -> None:
        """One job confirmed to have left the list."""

    def queues(self) -> set[str]:
        """The queues this group keeps series of from poll to poll (they compete for a name like queues with
        jobs)."""
        return set()

    def finish(self, end: PollEnd) -> Families:
        """The poll succeeded: its families."""
        return Families(kept=self.kept(end))

    def kept(self, end: PollEnd) -> list[Metric]:
        """The kept families as they stand (before any poll too: a 0-valued series of every queue in
        ``end.series``)."""
        return []

    def abandon(self) -> None:
        """The poll failed: forget what it observed."""

    def saved(self) -> Mapping[str, Any]:
        """What the state file keeps of this group (by key), if anything."""
        return {}


def gauge(name: str, documentation: str, labels: Iterable[str]) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, labels=list(labels))


def counter(name: str, documentation: str, labels: Iterable[str]) -> CounterMetricFamily:
    return CounterMetricFamily(name, documentation, labels=list(labels))


def histogram(name: str, documentation: str, labels: Iterable[str]) -> HistogramMetricFamily:
    return HistogramMetricFamily(name, documentation, labels=list(labels))


def le(bound: float) -> str:
    """A bucket bound as the ``le`` label value (``30.0``, ``+Inf``)."""
    return "+Inf" if bound == float("inf") else repr(float(bound))


class Histogram:
    """Observations of one series: counts per bucket (not cumulative; the last is +Inf) and their sum."""

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.total = 0.0

    def observe(self, value: float) -> None:
        i = 0
        while i < len(self.bounds) and value > self.bounds[i]:
            i += 1
        self.counts[i] += 1
        self.total += value

    def buckets(self) -> list[tuple[str, float]]:
        """(``le``, cumulative count) pairs, ending with +Inf."""
        out: list[tuple[str, float]] = []
        running = 0
        for bound, n in zip((*self.bounds, float("inf")), self.counts):
            running += n
            out.append((le(bound), running))
        return out
