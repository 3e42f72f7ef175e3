"""Jobs, their CPUs and their nodes by queue and status, e.g.::

    sugon_jobs{hpc_cluster="kunshan",queue="debug",status="queued"} 12.0
    sugon_job_cpus{hpc_cluster="kunshan",queue="debug",status="running"} 256.0

Zero-filled: every queue with series (seen within a day) has all eight documented statuses, 0 where there
are none, so that a queue whose backlog drains shows 0 rather than a gap.
"""

from __future__ import annotations

from exporter.groups.base import CACHED, Families, Group, PollEnd, Settings, gauge
from exporter.model import ZERO_FILL_STATUSES, Seen

LABELS = ("hpc_cluster", "queue", "status")


class Jobs(Group):
    """sugon_jobs, sugon_job_cpus, sugon_job_nodes and sugon_queues_folded."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self._counts: dict[tuple[str, str], list[int]] = {}  # (queue, status) → [jobs, CPUs, nodes]

    def observe(self, seen: Seen) -> None:
        job = seen.job
        counts = self._counts.get((job.queue, job.status))
        if counts is None:
            counts = self._counts[(job.queue, job.status)] = [0, 0, 0]
        counts[0] += 1
        counts[1] += job.cpus
        if job.node_count is not None and job.node_count > 0:
            counts[2] += job.node_count

    def finish(self, end: PollEnd) -> Families:
        cluster = self.settings.cluster
        named: dict[tuple[str, str], list[int]] = {}
        for queue in sorted(end.zero_fill):
            for status in ZERO_FILL_STATUSES:
                named[(queue, status)] = [0, 0, 0]
        for (queue, status), counts in self._counts.items():
            into = named.setdefault((end.queue(queue), status), [0, 0, 0])
            for i, n in enumerate(counts):
                into[i] += n
        self._counts = {}
        jobs = gauge("sugon_jobs", "Jobs in the real-time job list by queue and status." + CACHED, LABELS)
        cpus = gauge(
            "sugon_job_cpus",
            'Sum of procNumUsed by queue and status; CPUs in use is status="running".' + CACHED,
            LABELS,
        )
        nodes = gauge(
            "sugon_job_nodes",
            "Sum over jobs of the nodes their nodeUsed host list names, by queue and status." + CACHED,
            LABELS,
        )
        for (queue, status), (n, c, k) in named.items():
            jobs.add_metric([cluster, queue, status], n)
            cpus.add_metric([cluster, queue, status], c)
            nodes.add_metric([cluster, queue, status], k)
        folded = gauge(
            "sugon_queues_folded", 'Queues merged into queue="other" by max_queues.' + CACHED, ["hpc_cluster"]
        )
        folded.add_metric([cluster], end.folded)
        return Families(gauges=[jobs, cpus, nodes, folded])

    def abandon(self) -> None:
        self._counts = {}
