"""What the jobs consume: CPU-seconds, how long they run, and the longest running now, e.g.::

    sugon_job_cpu_seconds_total{hpc_cluster="kunshan",queue="debug"} 1.296e+06
    sugon_running_job_max_seconds{hpc_cluster="kunshan",queue="debug"} 86400.0

CPU-seconds are procNumUsed times the growth of a job's jobRunTime between polls: a lower bound (a job that
ends and leaves the list between two polls adds nothing after its last sighting).
"""

from __future__ import annotations

from prometheus_client.core import Metric

from exporter.groups.base import CACHED, COUNTED, Families, Group, Histogram, PollEnd, Settings, counter, gauge
from exporter.groups.base import histogram as histogram_family
from exporter.model import OTHER, Gone, Seen

RUN_BUCKETS: tuple[float, ...] = (60, 300, 900, 3600, 14400, 43200, 86400, 172800, 604800)  # 1m ... 7d
QUEUE = ("hpc_cluster", "queue")


class Usage(Group):
    """sugon_job_cpu_seconds_total, sugon_job_run_seconds and sugon_running_job_max_seconds."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self._spent: dict[str, int] = {}  # this poll: queue → CPU-seconds
        self._ended: list[tuple[str, int]] = []  # this poll: (queue, run seconds) of the jobs seen ending
        self._gone: list[tuple[str, int]] = []  # this poll: the same of the jobs that left the list without ending
        self._last: PollEnd | None = None  # how the last poll named queues: a job that left is counted so
        self._longest: dict[str, int] = {}  # this poll: queue → the longest run time of a running job
        self._queues: set[str] = set()  # this poll: the queues with jobs
        self._cpu: dict[str, int] = {}
        self._runs: dict[str, Histogram] = {}

    def observe(self, seen: Seen) -> None:
        job = seen.job
        self._queues.add(job.queue)
        if seen.ran and job.cpus:
            self._spent[job.queue] = self._spent.get(job.queue, 0) + seen.ran * job.cpus
        if seen.ends:
            self._ended_run(job.queue, seen.started, seen.run)
        if (
            job.status == "running"
            and job.run_seconds is not None
            and job.run_seconds > self._longest.get(job.queue, 0)
        ):
            self._longest[job.queue] = job.run_seconds

    def depart(self, gone: Gone) -> None:
        if not gone.ended and gone.run >= 0 and (gone.started or gone.run > 0):
            self._gone.append((gone.queue, gone.run))

    def _ended_run(self, queue: str, started: bool, run: int) -> None:
        """A job seen ending: its last known run time, if it ran and that is known."""
        if run >= 0 and (started or run > 0):
            self._ended.append((queue, run))

    def queues(self) -> set[str]:
        return {*self._cpu, *self._runs}

    def finish(self, end: PollEnd) -> Families:
        for queue, seconds in self._spent.items():
            named = end.queue(queue)
            self._cpu[named] = self._cpu.get(named, 0) + seconds
        for queue, run in self._ended:
            self._runs.setdefault(end.queue(queue), Histogram(RUN_BUCKETS)).observe(run)
        for queue, run in self._gone:  # under the name its queue had when the job was last seen
            self._runs.setdefault((self._last or end).queue(queue), Histogram(RUN_BUCKETS)).observe(run)
        self._last = end
        if end.named is not None:  # counts of a queue that lost its name are forgotten: its series go
            keep = {*end.named, OTHER}
            for table in (self._cpu, self._runs):
                for queue in [q for q in table if q not in keep]:
                    del table[queue]
        families = Families(gauges=[self._running_max(end)], kept=self.kept(end))
        self.abandon()
        return families

    def _running_max(self, end: PollEnd) -> Metric:
        family = gauge(
            "sugon_running_job_max_seconds",
            "The longest jobRunTime among running jobs; 0 if none runs." + CACHED,
            QUEUE,
        )
        longest = dict.fromkeys(sorted(end.zero_fill | {end.queue(q) for q in self._queues}), 0)
        for queue, seconds in self._longest.items():
            named = end.queue(queue)
            longest[named] = max(longest[named], seconds)
        for queue, seconds in longest.items():
            family.add_metric([self.settings.cluster, queue], seconds)
        return family

    def kept(self, end: PollEnd) -> list[Metric]:
        cluster = self.settings.cluster
        cpu = counter(
            "sugon_job_cpu_seconds",
            "CPU-seconds used: procNumUsed times the growth of jobRunTime between polls (a lower bound)." + COUNTED,
            QUEUE,
        )
        runs = histogram_family(
            "sugon_job_run_seconds",
            "Run time of jobs seen ending (a terminal status, or leaving the list): their last jobRunTime." + COUNTED,
            QUEUE,
        )
        for queue in sorted(end.series | self.queues()):
            cpu.add_metric([cluster, queue], self._cpu.get(queue, 0))
            hist = self._runs.get(queue) or Histogram(RUN_BUCKETS)
            runs.add_metric([cluster, queue], buckets=hist.buckets(), sum_value=hist.total)
        return [cpu, runs]

    def abandon(self) -> None:
        self._spent, self._ended, self._gone, self._longest, self._queues = {}, [], [], {}, set()
