"""Jobs and their CPUs by application (appType) and status, e.g.::

    sugon_app_jobs{app="fluent",hpc_cluster="kunshan",status="running"} 3.0

An empty or null appType is ``none``; the ``max_apps`` applications with the most jobs keep their names (ties
by name), the rest are ``other``.
"""

from __future__ import annotations

from exporter.groups.base import CACHED, Families, Group, PollEnd, Settings, gauge
from exporter.model import OTHER, Seen
from exporter.queues import top

LABELS = ("hpc_cluster", "app", "status")


class Apps(Group):
    """sugon_app_jobs and sugon_app_job_cpus."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self._counts: dict[tuple[str, str], list[int]] = {}  # (app, status) → [jobs, CPUs]

    def observe(self, seen: Seen) -> None:
        job = seen.job
        counts = self._counts.get((job.app, job.status))
        if counts is None:
            counts = self._counts[(job.app, job.status)] = [0, 0]
        counts[0] += 1
        counts[1] += job.cpus

    def finish(self, end: PollEnd) -> Families:
        totals: dict[str, int] = {}
        for (app, _), (jobs, _) in self._counts.items():
            totals[app] = totals.get(app, 0) + jobs
        kept = top(totals, self.settings.budget.max_apps)
        named: dict[tuple[str, str], list[int]] = {}
        for (app, status), (jobs, cpus) in self._counts.items():
            into = named.setdefault((app if kept is None or app in kept else OTHER, status), [0, 0])
            into[0] += jobs
            into[1] += cpus
        self._counts = {}
        jobs_family = gauge(
            "sugon_app_jobs",
            'Jobs by application (appType; none if empty; beyond max_apps, app="other") and status.' + CACHED,
            LABELS,
        )
        cpus_family = gauge("sugon_app_job_cpus", "Sum of procNumUsed by application and status." + CACHED, LABELS)
        cluster = self.settings.cluster
        for (app, status), (jobs, cpus) in named.items():
            jobs_family.add_metric([cluster, app, status], jobs)
            cpus_family.add_metric([cluster, app, status], cpus)
        return Families(gauges=[jobs_family, cpus_family])

    def abandon(self) -> None:
        self._counts = {}
