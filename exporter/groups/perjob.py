"""One series set per job, for people who watch their own jobs (only with ``per_job: true``), e.g.::

    sugon_per_job_info{hpc_cluster="kunshan",scheduler="1638523853",job_id="4242",job_name="relax",user="alice",queue="debug",app="vasp"} 1.0
    sugon_per_job_status{hpc_cluster="kunshan",scheduler="1638523853",job_id="4242",status="running"} 1.0

At most ``max_job_series`` jobs of a cluster have series. A job that has them keeps them while it is listed,
so that no series comes and goes while its job stays. Room that frees up goes to running jobs first, then to
jobs in a terminal or exiting status (their last minutes in the list), then to the others, newest first (the
highest job id), ties by scheduler and job id. Jobs of users not in ``job_series_users`` (when it names any),
of users matching ``users_exclude``, and beyond the budget are counted in ``sugon_per_job_folded``.

``scheduler`` is the job's jobmanagerId: two schedulers of one cluster number their jobs each on their own.
"""

from __future__ import annotations

import re

from exporter.groups.base import CACHED, Families, Group, PollEnd, Settings, gauge
from exporter.model import TERMINAL, UNKNOWN, Job, Seen
from exporter.rows import clean_label

ENDING = TERMINAL | {"exiting"}
JOB = ("hpc_cluster", "scheduler", "job_id")
_LEADING_DIGITS = re.compile(r"[0-9]{1,18}")
_MIN_TRIM = 1_000  # candidates held before the first trim, whatever the budget


def preference(job: Job) -> tuple[int, int, str]:
    """How a job not yet given series stands for free room; the lowest is given it first."""
    rank = 0 if job.status == "running" else 1 if job.status in ENDING else 2
    digits = _LEADING_DIGITS.match(job.key.partition("\x00")[2])
    return rank, -int(digits.group()) if digits else 1, job.key


class PerJob(Group):
    """sugon_per_job_info, sugon_per_job_status, sugon_per_job_cpus, sugon_per_job_nodes,
    sugon_per_job_run_seconds and sugon_per_job_folded (with per_job)."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self._users = frozenset(settings.job_series_users)
        self._kept: set[str] = set()  # the keys of the jobs with series, from poll to poll
        self._read: list[Job] = []  # this poll: the jobs of _kept it read
        self._candidates: list[tuple[tuple[int, int, str], Job]] = []  # this poll: the best of the others
        self._others = 0  # this poll: jobs read that could have series, not in _kept
        self._left_out = 0  # this poll: jobs left out by their user
        self._allowed: dict[str, bool] = {}  # this poll: user → whether their jobs may have series

    def _allows(self, user: str) -> bool:
        allowed = self._allowed.get(user)
        if allowed is None:
            allowed = (not self._users or user in self._users) and not any(
                p.fullmatch(user) for p in self.settings.budget.users_exclude
            )
            self._allowed[user] = allowed
        return allowed

    def observe(self, seen: Seen) -> None:
        if not self.settings.per_job:
            return
        job = seen.job
        if not self._allows(job.user):
            self._left_out += 1
        elif job.key in self._kept:
            self._read.append(job)
        else:
            self._others += 1
            self._candidates.append((preference(job), job))
            if len(self._candidates) >= max(2 * self.settings.max_job_series, _MIN_TRIM):
                self._trim()

    def _trim(self) -> None:
        """Only the best max_job_series candidates can be given room: the others need not be held."""
        self._candidates.sort()
        del self._candidates[self.settings.max_job_series :]

    def finish(self, end: PollEnd) -> Families:
        if not self.settings.per_job:
            return Families()
        self._trim()
        room = max(self.settings.max_job_series - len(self._read), 0)
        chosen = self._read + [job for _, job in self._candidates[:room]]
        self._kept = {job.key for job in chosen}
        families = self._families(chosen, self._left_out + self._others - (len(chosen) - len(self._read)))
        self.abandon()
        return families

    def _families(self, jobs: list[Job], folded: int) -> Families:
        cluster = self.settings.cluster
        info = gauge(
            "sugon_per_job_info",
            "1 for each job with per-job series: its jobName, user, queue and appType." + CACHED,
            (*JOB, "job_name", "user", "queue", "app"),
        )
        status = gauge(
            "sugon_per_job_status",
            "1 for each job with per-job series, in its current status." + CACHED,
            (*JOB, "status"),
        )
        cpus = gauge("sugon_per_job_cpus", "procNumUsed of each job with per-job series." + CACHED, JOB)
        nodes = gauge(
            "sugon_per_job_nodes",
            "The nodes the nodeUsed host list of each job with per-job series names (0: none, or not a host list)."
            + CACHED,
            JOB,
        )
        run = gauge(
            "sugon_per_job_run_seconds",
            "jobRunTime of each job with per-job series, in seconds (0: not started, or not a run time)." + CACHED,
            JOB,
        )
        named: set[tuple[str, str]] = set()
        for job in sorted(jobs, key=lambda j: j.key):
            scheduler, _, job_id = job.key.partition("\x00")
            ids = (clean_label(scheduler) or UNKNOWN, clean_label(job_id) or UNKNOWN)
            if ids in named:  # two ids the same once cut to a label's length: the second would repeat a series
                folded += 1
                continue
            named.add(ids)
            labels = [cluster, *ids]
            info.add_metric([*labels, job.name, job.user, job.queue, job.app], 1)
            status.add_metric([*labels, job.status], 1)
            cpus.add_metric(labels, job.cpus)
            nodes.add_metric(labels, max(job.node_count or 0, 0))
            run.add_metric(labels, max(job.run_seconds or 0, 0))
        left = gauge(
            "sugon_per_job_folded",
            "Jobs listed without per-job series: beyond max_job_series, or of users job_series_users does not name "
            "or users_exclude matches." + CACHED,
            ["hpc_cluster"],
        )
        left.add_metric([cluster], folded)
        return Families(gauges=[info, status, cpus, nodes, run, left])

    def abandon(self) -> None:
        self._read, self._candidates, self._others, self._left_out, self._allowed = [], [], 0, 0, {}
