"""The simulated scheduler's jobs: arrivals, starts, finishes, the 5-minute linger, rendered as API rows; and
the truth about them that tests compare the exporter's counts with."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from exporter.simulator.nodes import NodePools

CHINA = timezone(timedelta(hours=8))  # jobStartTime is local time on the platform (UTC+8, a guess)
LINGER_SECONDS = 300  # finished jobs stay in the real-time list for 5 minutes (doc)
DEFAULT_QUEUES = {"debug": 256, "normal": 2048, "largemem": 512, "gpu": 384}
DEFAULT_USERS = ("alice", "bob", "chen", "dong", "fang", "guo", "huang", "li", "liu", "wang", "zhang", "zhou")
APPS = ("BASE", "fluent", "vasp", "gromacs", "lammps", "abaqus")  # six: the draw of an app must not change
WIDTHS = (1, 1, 1, 1, 2, 2, 4, 8)  # nodes a job asks for, at most one per 4 of its CPUs
REASONS = ("Resources", "Priority", "QOSMaxCpuPerUserLimit", "ReqNodeNotAvail, UnavailableNodes:h04r3n[07-09]")


def _run_time(seconds: float) -> str:
    seconds = max(int(seconds), 0)
    days, rest = divmod(seconds, 86400)
    hms = f"{rest // 3600:02d}:{rest % 3600 // 60:02d}:{rest % 60:02d}"
    return f"{days}-{hms}" if days else hms


@dataclass
class SimJob:
    """One job of the simulated scheduler, with the times that drive its transitions."""

    job_id: int
    scheduler_id: str
    queue: str
    user: str
    app: str
    cpus: int
    submitted: float
    status: str = "statQ"
    reason: str | None = "Priority"
    started: float | None = None
    runtime: float = 600.0
    release_at: float | None = None
    ended: float | None = None
    width: int = 1
    app_type: str | None = None  # appType as listed: the app, or empty or null for a job submitted without one
    compressed: bool = True  # whether its host list is bracketed (h01r1n[01-04]) or plain names with commas
    nodes: tuple[str, ...] = ()
    node_used: str = ""


@dataclass(frozen=True)
class JobTruth:
    """One listed job as the simulator knows it: what the exporter's usage counts must add up to."""

    scheduler_id: str
    job_id: str
    queue: str
    user: str
    status: str  # the API's code, e.g. "statR"
    cpus: int
    run_seconds: int | None  # whole seconds run, as jobRunTime shows them; None before the job starts
    nodes: tuple[str, ...]  # the nodes nodeUsed names, in order; none before the job starts
    app: str | None  # appType as listed


@dataclass
class Scheduler:
    """A scheduler (``strClusterIDList`` id) of the simulated HPC host."""

    id: str
    name: str
    queues: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_QUEUES))


class Population:
    """The job population of one simulated HPC host. Changes only in ``step()`` and the test helpers; thread-safe."""

    def __init__(
        self,
        schedulers: list[Scheduler] | None = None,
        users: tuple[str, ...] = DEFAULT_USERS,
        jobs: int = 200,
        arrival_rate: float = 0.5,
        seed: int = 1,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.schedulers = schedulers or [Scheduler("1638523853", "Cluster")]
        self.users = users
        self.arrival_rate = arrival_rate
        self.clock = clock
        self._rng = random.Random(seed)
        # Node counts, nodes, appType and host-list styles come from their own generator, so that the jobs,
        # their queues, users and statuses are the same under a seed as before the simulator had them.
        self._shape_rng = random.Random(f"shape-{seed}")
        self._pools = NodePools({s.id: s.queues for s in self.schedulers})
        self._lock = threading.Lock()
        self._jobs: dict[tuple[str, int], SimJob] = {}
        # Rendered rows per scheduler, kept until the population changes: rendering per request made paging quadratic.
        self._rendered: dict[str | None, list[dict[str, Any]]] = {}
        self._next_id = 1000
        # Churn while the list is read (see churn()): its own generator, so that a population without churn
        # draws the same jobs under a seed as before; and the record of what left and arrived.
        self._churn_rng = random.Random(f"churn-{seed}")
        self._churn_from: int | None = None  # the last job id listed when churn began
        self.departed: list[tuple[str, int]] = []
        self.arrived: list[tuple[str, int]] = []
        self._last_step = clock()
        self._shown_at = self._last_step  # the time the job list shows: its run times are as of then
        self.starts = 0
        self._seed_population(jobs)
        self.starts = 0  # queued → running transitions from now on (the seed population's do not count)

    def _new_job(self, now: float) -> SimJob:
        sched = self._rng.choice(self.schedulers)
        queue = self._rng.choice(list(sched.queues))
        self._next_id += 1
        job = SimJob(
            job_id=self._next_id,
            scheduler_id=sched.id,
            queue=queue,
            user=self._rng.choice(self.users),
            app=self._rng.choice(APPS),
            cpus=self._rng.choice((1, 2, 4, 8, 16, 32, 64)),
            submitted=now,
            runtime=self._rng.choice((60, 300, 900, 3600, 4 * 3600, 30 * 3600)) * self._rng.uniform(0.5, 1.5),
            reason=self._rng.choice(REASONS),
        )
        if self._rng.random() < 0.05:
            job.status, job.reason, job.release_at = "statH", "JobHeldUser", now + self._rng.uniform(60, 1800)
        job.width = self._shape_rng.choice(WIDTHS)
        draw = self._shape_rng.random()
        job.app_type = None if draw < 0.04 else "" if draw < 0.1 else job.app
        job.compressed = self._shape_rng.random() < 0.85
        return job

    def _start(self, job: SimJob, now: float) -> None:
        """The job runs from ``now`` on the nodes it is given."""
        job.status, job.reason, job.started = "statR", None, now
        width = min(job.width, max(job.cpus // 4, 1))
        job.nodes, job.node_used = self._pools.allocate(
            job.scheduler_id, job.queue, width, self._shape_rng, job.compressed
        )

    def _seed_population(self, count: int) -> None:
        now = self.clock()
        for _ in range(count):
            job = self._new_job(now - self._rng.uniform(0, 7200))
            self._jobs[(job.scheduler_id, job.job_id)] = job
        self._start_what_fits(now)
        # Let some of the started jobs have run for a while already.
        for job in self._jobs.values():
            if job.status == "statR" and job.started is not None:
                job.started = now - self._rng.uniform(0, job.runtime)

    def _start_what_fits(self, now: float) -> None:
        used: dict[tuple[str, str], int] = {}
        for job in self._jobs.values():
            if job.status in ("statR", "statE"):
                used[(job.scheduler_id, job.queue)] = used.get((job.scheduler_id, job.queue), 0) + job.cpus
        caps = {(s.id, q): cap for s in self.schedulers for q, cap in s.queues.items()}
        for job in sorted(self._jobs.values(), key=lambda j: j.submitted):
            if job.status != "statQ":
                continue
            key = (job.scheduler_id, job.queue)
            if used.get(key, 0) + job.cpus <= caps.get(key, 0):
                used[key] = used.get(key, 0) + job.cpus
                self._start(job, now)
                self.starts += 1

    def step(self, now: float | None = None) -> None:
        """Move the population on to ``now``: arrivals, releases, finishes, starts, and the 5-minute linger."""
        with self._lock:
            self._rendered.clear()
            now = self.clock() if now is None else now
            dt = max(now - self._last_step, 0.0)
            self._last_step = self._shown_at = now
            arrivals = int(self.arrival_rate * dt + self._rng.random())
            for _ in range(arrivals):
                job = self._new_job(now)
                self._jobs[(job.scheduler_id, job.job_id)] = job
            for key, job in list(self._jobs.items()):
                if job.status == "statH" and job.release_at is not None and now >= job.release_at:
                    job.status, job.reason = "statQ", "Priority"
                elif job.status == "statQ" and self._rng.random() < 0.0001 * dt:
                    job.status, job.ended = "statDE", now  # cancelled while waiting
                elif job.status == "statR" and job.started is not None and now - job.started >= job.runtime:
                    job.status, job.ended = "statE", now
                elif job.status == "statE" and job.ended is not None and now - job.ended >= 15:
                    job.status = "statD" if self._rng.random() < 0.05 else "statC"
                elif (
                    job.status in ("statC", "statD", "statDE")
                    and job.ended is not None
                    and now - job.ended >= LINGER_SECONDS
                ):
                    del self._jobs[key]
            self._start_what_fits(now)

    def churn(self, events: int, front: bool = False) -> None:
        """``events`` times: a waiting job leaves the list at once, never shown finished (cancelled and purged),
        and a new job arrives, at the front of the list or at its end. Each is recorded in ``departed`` and
        ``arrived`` by (scheduler id, job id). What the exporter must count exactly while it pages.

        Only jobs listed when churn began leave, so that a poll before it has seen every job that leaves."""
        if events <= 0:
            return
        with self._lock:
            self._rendered.clear()
            now = self._shown_at
            if self._churn_from is None:
                self._churn_from = self._next_id
            for _ in range(events):
                waiting = [
                    key
                    for key, job in self._jobs.items()
                    if job.status in ("statQ", "statH") and job.job_id <= self._churn_from
                ]
                if waiting:
                    gone = self._churn_rng.choice(waiting)
                    del self._jobs[gone]
                    self.departed.append(gone)
                job = self._new_job(now)
                key = (job.scheduler_id, job.job_id)
                self._jobs = {key: job, **self._jobs} if front else {**self._jobs, key: job}
                self.arrived.append(key)

    def add_jobs(
        self,
        count: int,
        queue: str | None = None,
        status: str = "statQ",
        cpus: int | None = None,
        user: str | None = None,
    ) -> None:
        """Add jobs now, e.g. to build a backlog (tests, demo)."""
        with self._lock:
            self._rendered.clear()
            now = self.clock()
            self._shown_at = max(self._shown_at, now)
            for _ in range(count):
                job = self._new_job(now)
                job.status = status
                job.queue = queue or job.queue
                job.user = user or job.user
                job.cpus = cpus if cpus is not None else job.cpus
                if status == "statR":
                    self._start(job, now)
                self._jobs[(job.scheduler_id, job.job_id)] = job

    def rows(self, scheduler_id: str | None = None) -> list[dict[str, Any]]:
        """The job list as the API would render it, in the scheduler's order (shared: do not modify it).

        Rendered once per change of the population: ``jobRunTime`` is as of the last change (``step``'s time,
        or the clock when jobs were added).
        """
        with self._lock:
            cached = self._rendered.get(scheduler_id)
            if cached is None:
                now = self._shown_at
                names = {s.id: s.name for s in self.schedulers}
                cached = [
                    self._row(j, now, names[j.scheduler_id])
                    for j in self._jobs.values()
                    if scheduler_id in (None, j.scheduler_id)
                ]
                self._rendered[scheduler_id] = cached
            return cached

    def truth(self, scheduler_id: str | None = None) -> list[JobTruth]:
        """Every job in the list, in the list's order, as of the time the list shows (see ``rows``)."""
        with self._lock:
            return [
                JobTruth(
                    j.scheduler_id,
                    str(j.job_id),
                    j.queue,
                    j.user,
                    j.status,
                    j.cpus,
                    self._run_seconds(j, self._shown_at),
                    j.nodes if self._started(j) else (),
                    j.app_type,
                )
                for j in self._jobs.values()
                if scheduler_id in (None, j.scheduler_id)
            ]

    @staticmethod
    def _started(job: SimJob) -> bool:
        return job.started is not None and job.status != "statQ"

    def _run_seconds(self, job: SimJob, now: float) -> int | None:
        """Whole seconds from the job's start to its end, or to ``now`` while it has not ended."""
        if job.started is None or not self._started(job):
            return None
        end = job.ended if job.ended is not None else now
        return max(int(end - job.started), 0)

    def _row(self, job: SimJob, now: float, scheduler_name: str) -> dict[str, Any]:
        started = self._started(job)
        seconds = self._run_seconds(job, now)
        stamp = datetime.fromtimestamp(job.submitted, CHINA).strftime("%m%d_%H%M%S")
        work = f"/public/home/{job.user}/{job.app.upper()}/{job.app.upper()}_{stamp}"
        return {
            "jobId": str(job.job_id),
            "jobName": f"{job.app}_{stamp}",
            "jobStatus": job.status,
            "queue": job.queue,
            "user": job.user,
            "nodeUsed": job.node_used if started else "",
            "procNumUsed": job.cpus,
            "jobStartTime": (
                datetime.fromtimestamp(job.started, CHINA).strftime("%Y-%m-%d %H:%M:%S")
                if started and job.started is not None
                else ""
            ),
            "jobRunTime": "" if seconds is None else _run_time(seconds),
            "jobVncSessionInfo": None,
            "jobmanagerId": job.scheduler_id,
            "jobmanagerName": scheduler_name,
            "jobmanagerType": "SLURM",
            "errorPath": f"{work}/std.err.{job.job_id}",
            "outputPath": f"{work}/std.out.{job.job_id}",
            "workDir": work,
            "reason": job.reason if job.status in ("statQ", "statH") else None,
            "appType": job.app_type,
        }

    def capacity(self, scheduler_id: str) -> list[dict[str, Any]]:
        """Each queue of a scheduler with its CPUs and nodes (64 CPUs a node), and what running jobs leave free."""
        with self._lock:
            sched = next((s for s in self.schedulers if s.id == scheduler_id), None)
            if sched is None:
                return []
            used: dict[str, int] = {}
            for job in self._jobs.values():
                if job.scheduler_id == scheduler_id and job.status in ("statR", "statE"):
                    used[job.queue] = used.get(job.queue, 0) + job.cpus
            out = []
            for queue, cpus in sched.queues.items():
                free = max(cpus - used.get(queue, 0), 0)
                out.append(
                    {
                        "queueName": queue,
                        "queNodes": -(-cpus // 64),
                        "queFreeNodes": free // 64,
                        "queNcpus": cpus,
                        "queFreeNcpus": free,
                        "queMaxNcpus": cpus,
                        "queMaxWalltime": "168:00:00",
                        "queMinNcpus": 1,
                    }
                )
            return out

    def set_runtime(self, scheduler_id: str, job_id: int, seconds: float) -> None:
        """Set how long one job runs (tests)."""
        with self._lock:
            self._jobs[(scheduler_id, job_id)].runtime = seconds
