"""The backlog: why jobs wait, how long, and how fast the queues move, e.g.::

    sugon_queued_jobs_by_reason{hpc_cluster="kunshan",queue="debug",reason="Priority"} 4.0
    sugon_oldest_queued_job_age_seconds{hpc_cluster="kunshan",queue="debug"} 3600.0
    sugon_jobs_started_total{hpc_cluster="kunshan",queue="debug"} 42.0

Every time is when the exporter saw something, so ages and waits are lower bounds with the resolution of the
poll interval. The counters and the wait histogram have a series (0 or not) for every queue with series, and
count a job under the name its queue had when the job was seen.
"""

from __future__ import annotations

from prometheus_client.core import Metric

from exporter.groups.base import CACHED, COUNTED, Families, Group, Histogram, PollEnd, Settings, counter, gauge
from exporter.groups.base import histogram as histogram_family
from exporter.model import GONE, OTHER, TERMINAL, Gone, Seen

WAIT_BUCKETS: tuple[float, ...] = (30, 60, 300, 900, 1800, 3600, 7200, 14400, 28800, 43200, 86400, 172800)
MAX_REASONS = 20  # per cluster; the rest are counted as reason="other"
ENDED_STATUSES = (*sorted(TERMINAL), GONE)
QUEUE = ("hpc_cluster", "queue")


class Backlog(Group):
    """sugon_queued_jobs_by_reason, sugon_oldest_queued_job_age_seconds, sugon_jobs_submitted_total,
    sugon_jobs_started_total, sugon_jobs_ended_total and sugon_job_wait_seconds."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self._reasons: dict[tuple[str, str], int] = {}  # this poll: (queue, reason) → queued jobs
        self._oldest: dict[str, float] = {}  # this poll: queue → the earliest first-waiting time of a queued job
        self._events: list[tuple[str, str, float]] = []  # this poll: (queue, event, wait) to count at its end
        self._gone: list[str] = []  # this poll: the queues of the jobs that left the list without ending
        self._last: PollEnd | None = None  # how the last poll named queues: a job that left is counted so
        self._submitted: dict[str, int] = {}
        self._started: dict[str, int] = {}
        self._ended: dict[tuple[str, str], int] = {}
        self._waits: dict[str, Histogram] = {}

    def observe(self, seen: Seen) -> None:
        job = seen.job
        if job.status == "queued":
            self._reasons[(job.queue, job.reason)] = self._reasons.get((job.queue, job.reason), 0) + 1
            if seen.since is not None and seen.since < self._oldest.get(job.queue, float("inf")):
                self._oldest[job.queue] = seen.since
        if seen.submitted:
            self._events.append((job.queue, "submitted", 0.0))
        if seen.starts:
            self._events.append((job.queue, "started", seen.waited))
        if seen.ends:
            self._events.append((job.queue, job.status, 0.0))

    def depart(self, gone: Gone) -> None:
        if not gone.ended:
            self._gone.append(gone.queue)

    def queues(self) -> set[str]:
        return {*self._submitted, *self._started, *self._waits, *(q for q, _ in self._ended)}

    def finish(self, end: PollEnd) -> Families:
        for queue, event, waited in self._events:
            queue = end.queue(queue)
            if event == "submitted":
                self._submitted[queue] = self._submitted.get(queue, 0) + 1
            elif event == "started":
                self._started[queue] = self._started.get(queue, 0) + 1
                self._waits.setdefault(queue, Histogram(WAIT_BUCKETS)).observe(waited)
            else:
                self._ended[(queue, event)] = self._ended.get((queue, event), 0) + 1
        for queue in self._gone:  # under the name its queue had when the job was last seen
            key = ((self._last or end).queue(queue), GONE)
            self._ended[key] = self._ended.get(key, 0) + 1
        self._last = end
        self._forget_queues_but(end)
        families = Families(gauges=[self._by_reason(end), self._oldest_age(end)], kept=self.kept(end))
        self.abandon()
        return families

    def _forget_queues_but(self, end: PollEnd) -> None:
        """Counts of a queue that lost its name are forgotten: its series go, and other only grows."""
        if end.named is None:
            return
        keep = {*end.named, OTHER}
        for table in (self._submitted, self._started, self._waits):
            for queue in [q for q in table if q not in keep]:
                del table[queue]
        for key in [k for k in self._ended if k[0] not in keep]:
            del self._ended[key]

    def _by_reason(self, end: PollEnd) -> Metric:
        per_reason: dict[str, int] = {}
        for (_, reason), n in self._reasons.items():
            per_reason[reason] = per_reason.get(reason, 0) + n
        kept = set(sorted(per_reason, key=lambda r: (-per_reason[r], r))[:MAX_REASONS])
        family = gauge(
            "sugon_queued_jobs_by_reason",
            "Queued jobs by the scheduler's reason (detail stripped; at most 20 reasons, the rest other)." + CACHED,
            ("hpc_cluster", "queue", "reason"),
        )
        named: dict[tuple[str, str], int] = {}
        for (queue, reason), n in self._reasons.items():
            key = (end.queue(queue), reason if reason in kept else OTHER)
            named[key] = named.get(key, 0) + n
        for (queue, reason), n in named.items():
            family.add_metric([self.settings.cluster, queue, reason], n)
        return family

    def _oldest_age(self, end: PollEnd) -> Metric:
        family = gauge(
            "sugon_oldest_queued_job_age_seconds",
            "Age of the oldest queued job, from when the exporter first saw it waiting (a lower bound); 0 if none."
            + CACHED,
            QUEUE,
        )
        ages = dict.fromkeys(sorted(end.zero_fill), 0.0)
        for queue, since in self._oldest.items():
            named = end.queue(queue)
            age = max(end.now - since, 0.0)
            ages[named] = max(ages.get(named, 0.0), age)
        for queue, age in ages.items():
            family.add_metric([self.settings.cluster, queue], age)
        return family

    def kept(self, end: PollEnd) -> list[Metric]:
        cluster = self.settings.cluster
        submitted = counter("sugon_jobs_submitted", "Jobs seen for the first time." + COUNTED, QUEUE)
        started = counter("sugon_jobs_started", "Jobs seen entering running." + COUNTED, QUEUE)
        ended = counter(
            "sugon_jobs_ended",
            "Jobs seen entering a terminal status, or gone when a job left the list without one." + COUNTED,
            ("hpc_cluster", "queue", "status"),
        )
        waits = histogram_family(
            "sugon_job_wait_seconds",
            "Time from first seen waiting to first seen running, observed when a job starts (lower bound)." + COUNTED,
            QUEUE,
        )
        for queue in sorted(end.series | self.queues()):
            submitted.add_metric([cluster, queue], self._submitted.get(queue, 0))
            started.add_metric([cluster, queue], self._started.get(queue, 0))
            for status in ENDED_STATUSES:
                ended.add_metric([cluster, queue, status], self._ended.get((queue, status), 0))
            hist = self._waits.get(queue) or Histogram(WAIT_BUCKETS)
            waits.add_metric([cluster, queue], buckets=hist.buckets(), sum_value=hist.total)
        return [submitted, started, ended, waits]

    def abandon(self) -> None:
        self._reasons, self._oldest, self._events, self._gone = {}, {}, [], []
