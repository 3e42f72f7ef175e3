"""Polls of one cluster without HTTP, for table tests: jobs in, samples out, through the real book of known jobs,
queue budget and metric groups, in the order the poller drives them (exporter.poller.ClusterPoller._publish)."""

from __future__ import annotations

from collections.abc import Container, Iterable, Mapping
from typing import Any

from prometheus_client.core import Metric

from exporter.book import JobBook
from exporter.groups import GROUPS
from exporter.groups.base import Group, PollEnd, Settings
from exporter.model import NO_APP, NO_REASON, Budget, Job
from exporter.queues import QueueBudget

CLUSTER = "c"
Labels = tuple[tuple[str, str], ...]


def job(
    key: str,
    queue: str = "q",
    status: str = "queued",
    *,
    user: str = "u",
    cpus: int = 0,
    run: int | None = None,
    nodes: str | None = None,
    node_count: int | None = None,
    app: str = NO_APP,
    reason: str = NO_REASON,
    name: str = "",
) -> Job:
    """A Job as a row would read (labels already clean)."""
    return Job(
        key=key,
        queue=queue,
        user=user,
        status=status,
        cpus=cpus,
        run_seconds=run,
        node_count=node_count,
        nodes=nodes,
        app=app,
        reason=reason,
        name=name,
    )


class Samples:
    """A poll's families as samples: ``of(name)`` gives {labels but hpc_cluster, sorted: value}."""

    def __init__(self, families: Iterable[Metric]) -> None:
        self.families = list(families)

    def of(self, name: str) -> dict[Labels, float]:
        return {
            tuple(sorted((k, v) for k, v in s.labels.items() if k != "hpc_cluster")): s.value
            for family in self.families
            for s in family.samples
            if s.name == name
        }

    def by(self, name: str, *labels: str, nonzero: bool = True) -> dict[Any, float]:
        """The samples of ``name`` keyed by the values of ``labels`` (one: the value itself); zeros left out."""
        out: dict[Any, float] = {}
        for key, value in self.of(name).items():
            if value or not nonzero:
                values = tuple(dict(key)[label] for label in labels)
                out[values[0] if len(values) == 1 else values] = value
        return out

    def names(self) -> list[str]:
        return [f.name for f in self.families]


class Polls:
    """One cluster's polls: ``poll(jobs, now)`` as a successful poll that read ``jobs``."""

    def __init__(
        self,
        budget: Budget | None = None,
        per_user: bool = True,
        restored_waits: Mapping[str, float] | None = None,
        restored_runs: Mapping[str, int] | None = None,
        saved: Mapping[str, Any] | None = None,
        queues_seen: Mapping[str, float] | None = None,
        groups: Iterable[type[Group]] = GROUPS,
        cluster: str = CLUSTER,
        per_job: bool = False,
        max_job_series: int = 500,
        job_series_users: tuple[str, ...] = (),
    ) -> None:
        budget = budget or Budget()
        self.book = JobBook(restored_waits, restored_runs)
        self.queues = QueueBudget(budget.max_queues, budget.queues_exclude, queues_seen)
        settings = Settings(
            cluster=cluster,
            budget=budget,
            per_user=per_user,
            per_job=per_job,
            max_job_series=max_job_series,
            job_series_users=job_series_users,
            saved=saved or {},
        )
        self.groups = [group(settings) for group in groups]

    def poll(self, jobs: Iterable[Job], now: float, left: Container[str] | None = None) -> Samples:
        """A successful poll that read ``jobs`` (a job twice: read once); ``left`` as JobBook.commit takes it."""
        self.book.begin()
        by_queue: dict[str, int] = {}
        for j in jobs:
            if self.book.has(j.key) or self.queues.is_excluded(j.queue):
                continue
            seen = self.book.take(j, now)
            for group in self.groups:
                group.observe(seen)
            by_queue[j.queue] = by_queue.get(j.queue, 0) + 1
        for gone in self.book.commit(left):
            for group in self.groups:
                group.depart(gone)
        with_series = {q for g in self.groups for q in g.queues()}
        named, folded = self.queues.name(by_queue, now, with_series)
        zero_fill = frozenset(self.queues.seen)
        end = PollEnd(now=now, named=named, folded=folded, zero_fill=zero_fill)
        end = PollEnd(
            now=now,
            named=named,
            folded=folded,
            zero_fill=zero_fill,
            series=zero_fill | {end.queue(q) for q in with_series},
        )
        families: list[Metric] = []
        for group in self.groups:
            result = group.finish(end)
            families += result.gauges + result.kept
        return Samples(families)

    def failed(self, jobs: Iterable[Job], now: float) -> None:
        """A poll that read ``jobs`` and then failed: nothing of it counts."""
        self.book.begin()
        for j in jobs:
            if not self.book.has(j.key):
                seen = self.book.take(j, now)
                for group in self.groups:
                    group.observe(seen)
        self.book.abandon()
        for group in self.groups:
            group.abandon()
