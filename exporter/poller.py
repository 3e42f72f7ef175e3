"""One loop per cluster: the job list's pages → jobs (each read once) → every metric group → a published state.

A poll publishes all of its data or none: groups and the book of known jobs count a poll's jobs only when it
succeeds. Queue capacity, when enabled, is polled in a loop of its own, so it never delays the job data.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from contextlib import aclosing
from dataclasses import dataclass, field, replace

from prometheus_client.core import GaugeMetricFamily, Metric

from exporter.book import JobBook
from exporter.capacity import CapacityPoller
from exporter.groups import GROUPS
from exporter.groups.base import Group, PollEnd, Settings
from exporter.groups.own import Own
from exporter.logs import Fields
from exporter.model import INVALID_FIELDS, PollFailure, PollSettings, Row, Served
from exporter.queues import QueueBudget
from exporter.render import Exposition
from exporter.rows import job_key, label, raw_status, read_job
from exporter.statefile import StateFile
from exporter.sugon.conversation import ApiError, ApiInvalidResponse
from exporter.sugon.discovery import MAX_AGE, Endpoint
from exporter.sugon.joblist import JobListRead, SugonClient
from exporter.values import without_secrets

log = logging.getLogger(__name__)


@dataclass
class _Reading:
    """What one poll read, beyond the jobs the book and the groups take."""

    by_queue: dict[str, int] = field(default_factory=dict)  # jobs by queue, for the queue budget
    invalid_records: int = 0
    invalid_fields: dict[str, int] = field(default_factory=lambda: dict.fromkeys(INVALID_FIELDS, 0))
    unknown: dict[str, None] = field(default_factory=dict)  # the unknown jobStatus values met, in order
    recovered: int = 0  # jobs that only pages read again, or lookups, showed


class ClusterPoller:
    """Polls one cluster: never two polls at once, and each poll publishes all of its data or none."""

    def __init__(
        self,
        name: str,
        client: SugonClient,
        endpoint: Endpoint,
        exposition: Exposition,
        own: Own,
        settings: PollSettings,
        groups: Settings,
        state_file: StateFile | None = None,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.name = name
        self._log = Fields(log, {"cluster": name})
        self.client = client
        self._endpoint = endpoint
        self._exposition = exposition
        self._own = own
        self.settings = settings
        self._clock, self._monotonic, self._sleep = clock, monotonic, sleep
        self._state_file = state_file
        saved = {"users": state_file.users(name)} if state_file is not None else {}
        self._groups: list[Group] = [group(replace(groups, cluster=name, saved=saved)) for group in GROUPS]
        self._book = JobBook(
            state_file.waiting_since(name) if state_file else None, state_file.run_seconds(name) if state_file else None
        )
        budget = groups.budget
        self._queues = QueueBudget(
            budget.max_queues, budget.queues_exclude, state_file.queues_seen(name) if state_file else None
        )
        self.capacity = CapacityPoller(
            name, client, endpoint, exposition, own, self._queues, settings.max_staleness, settings.username, clock
        )
        self._find_ignored: float | None = None  # when (monotonic) a strJobId lookup was answered with other jobs
        self._gaps_logged = False
        self._failures = 0
        self._stale_logged = False
        self._due: float | None = None  # when (monotonic) run() polls the job list next; None outside run()
        self._start(state_file)

    def _start(self, state_file: StateFile | None) -> None:
        """The state before any poll: the job gauges a state file kept (served as during an outage, until
        max_staleness), and a 0-valued series of every counter of every queue known."""
        saved = state_file.gauges(self.name, self.settings.max_staleness) if state_file else None
        if saved is not None and saved.taken_at > self._clock():
            saved = None
        end = PollEnd(now=self._clock(), zero_fill=frozenset(self._queues.seen), series=frozenset(self._queues.seen))
        kept = [f for group in self._groups for f in group.kept(end)]
        self._exposition.publish(
            replace(
                self._exposition.get(self.name),
                last_success=saved.taken_at if saved else None,
                jobs=saved,
                kept=tuple(kept),
                own=tuple(self._own.families()),
            )
        )
        if saved is not None and not saved.stale(self._clock()):
            self._log.info(
                "cluster %s: serving the job data saved in the state file, of %s, until it is %gs old",
                self.name,
                time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(saved.taken_at)),
                self.settings.max_staleness,
            )

    async def poll_once(self) -> bool:
        """Read every page of every scheduler, then publish a new state; True if the poll succeeded."""
        started, now = self._monotonic(), self._clock()
        reading = _Reading()
        self._book.begin()
        try:
            sids = await self._endpoint.scheduler_ids()
            reads: list[JobListRead] = []
            for sid in sids:
                reader = self.client.job_list(
                    sid, self.settings.page_size, self.settings.concurrency, self.settings.max_jobs
                )
                async with aclosing(reader.pages()) as pages:
                    async for rows, again in pages:
                        await asyncio.sleep(0)  # the web server may share this loop: it answers between pages
                        new = self._take(rows, sid, now, reading)
                        reading.recovered += new if again else 0
                assert reader.read is not None
                reads.append(reader.read)
            left = await self._settle(reads, sids, now, reading)
        except ApiError as exc:
            self._abandon()
            self._failed(exc.reason, str(exc), self._monotonic() - started)
            return False
        except Exception:  # a bug must not kill the loop; the poll counts as failed
            self._abandon()
            internal = {"cluster": self.name, "reason": "internal"}
            if self._exposition.get(self.name).last_error != "internal":  # the traceback once, not every poll
                log.exception("cluster %s: unexpected error during poll", self.name, extra=internal)
            else:
                self._log.debug(
                    "cluster %s: unexpected error during poll, again", self.name, exc_info=True, extra=internal
                )
            self._failed("internal", "unexpected error (see the traceback above)", self._monotonic() - started)
            return False
        self._publish(reads, left, reading, self._clock(), self._monotonic() - started)
        return True

    def _take(self, rows: list[Row | None], sid: str, now: float, reading: _Reading) -> int:
        """Count one page's rows into the book and the groups; returns how many jobs it added to the poll."""
        book, groups, queues, by_queue = self._book, self._groups, self._queues, reading.by_queue
        new = 0
        for row in rows:
            key = job_key(row, sid) if row is not None else None
            if row is None or key is None:  # not an object, or no jobId
                reading.invalid_records += 1
                continue
            if book.has(key) or queues.is_excluded(label(row.queue)):
                continue
            job, unread = read_job(row, key)
            if unread:
                for name in unread:
                    reading.invalid_fields[name] += 1
                if "procNumUsed" in unread:  # counted with 0 CPUs: the row is reported too
                    reading.invalid_records += 1
                if "jobStatus" in unread:
                    reading.unknown[raw_status(row)] = None
            seen = book.take(job, now)
            for group in groups:
                group.observe(seen)
            by_queue[job.queue] = by_queue.get(job.queue, 0) + 1
            new += 1
        return new

    async def _settle(
        self, reads: list[JobListRead], sids: list[str], now: float, reading: _Reading
    ) -> frozenset[str] | None:
        """Settle the known jobs this poll did not read; returns which of them have left (None: all of them, the
        reads being complete). Those that had not ended are looked up (``strJobId``) within what is left of the
        reads' allowance: a job still listed is counted into this poll, one not listed has left; the rest wait
        for a later poll (JobBook.commit). An incomplete read must still account for every job its pages
        promised (the least ``data.total``): read now, or known and not read; else ApiInvalidResponse."""
        complete = all(r.complete for r in reads)
        active, ended = self._book.missing()
        ignored = self._find_ignored is not None and self._monotonic() - self._find_ignored < MAX_AGE
        wanted = [] if ignored else [k for k in active if k.partition("\x00")[0] in sids][: sum(r.spare for r in reads)]
        found = await self.client.find_jobs(wanted, self.settings.concurrency) if wanted else ({}, set())
        if found is None:
            if self._find_ignored is None:
                self._log.warning(
                    "cluster %s: the API ignores strJobId (it answered other jobs); for an hour, jobs that a "
                    "poll's pages missed wait for a later poll instead of being looked up",
                    self.name,
                )
            self._find_ignored = self._monotonic()
            found = ({}, set())
        listed, left = found
        for key, rows in listed.items():
            reading.recovered += self._take(rows, key.partition("\x00")[0], now, reading)
        if complete:
            if self._gaps_logged:
                self._log.info("cluster %s: every page of the job list is linked again", self.name)
                self._gaps_logged = False
            return None
        active, ended = self._book.missing()
        promised, accounted = sum(r.least_total for r in reads), sum(r.distinct for r in reads) + len(listed)
        if accounted + len(active) + len(ended) - len(left) < promised:
            raise ApiInvalidResponse(
                f"the pages promised {promised} jobs and {accounted} were read while the list moved, with "
                f"{len(active) + len(ended)} known ones not read: a stretch of the list was skipped"
            )
        unread = len(active) - len(left)
        if unread > 0 and not self._gaps_logged:
            self._log.warning(
                "cluster %s: the job list moved faster than its pages could be read again; %d jobs not read wait "
                "for a later poll, uncounted (logged once until a poll links every page)",
                self.name,
                unread,
                extra={"jobs": unread},
            )
            self._gaps_logged = True
        return frozenset(left)

    def _abandon(self) -> None:
        self._book.abandon()
        for group in self._groups:
            group.abandon()

    def _publish(
        self, reads: list[JobListRead], left: frozenset[str] | None, reading: _Reading, now: float, duration: float
    ) -> None:
        """The poll succeeded: commit it everywhere, publish its families, keep what a restart needs."""
        departures = self._book.departures
        for gone in self._book.commit(left):
            for group in self._groups:
                group.depart(gone)
        with_series = {*(q for g in self._groups for q in g.queues()), *(self.capacity.raw or ())}
        named, folded = self._queues.name(reading.by_queue, now, with_series)
        zero_fill = frozenset(self._queues.seen)
        end = PollEnd(now=now, named=named, folded=folded, zero_fill=zero_fill, series=zero_fill)
        end = replace(end, series=zero_fill | {end.queue(q) for q in with_series})
        gauges: list[Metric] = []
        kept: list[Metric] = [self._reported(sum(r.total for r in reads))]
        for group in self._groups:
            families = group.finish(end)
            gauges += families.gauges
            kept += families.kept
        jobs = Served(taken_at=now, expires_at=now + self.settings.max_staleness, families=tuple(gauges))
        own = self._own
        own.polls["success"] += 1
        own.invalid_records += reading.invalid_records
        for name, n in reading.invalid_fields.items():
            own.invalid_fields[name] += n
        own.recovered += reading.recovered
        own.departures += self._book.departures - departures
        if self._state_file is not None:
            users = next((g.saved()["users"] for g in self._groups if "users" in g.saved()), None)
            self._state_file.save(
                self.name,
                self._book.waiting_since(),
                dict(self._queues.seen),
                self._book.run_seconds(),
                users=users,
                gauges=jobs,
            )
        if self._failures:
            self._log.info(
                "cluster %s: recovered after %d failed poll(s)",
                self.name,
                self._failures,
                extra={"failures": self._failures},
            )
        self._failures, self._stale_logged = 0, False
        previous = self._exposition.get(self.name)
        self._exposition.publish(
            replace(
                previous,
                up=True,
                last_success=now,
                poll_duration=duration,
                last_error=None,
                pages=sum(r.pages for r in reads),
                next_poll_at=self._next_poll_at(),
                token_expiry=own.expiry,
                jobs=jobs,
                kept=tuple(kept),
                capacity=self.capacity.named(previous.capacity),
                own=tuple(own.families()),
            )
        )
        if reading.unknown:
            own.unknown_statuses(list(reading.unknown), reading.invalid_fields["jobStatus"])
        self._log.debug(
            "cluster %s: %d jobs (API total %d) in %.2fs",
            self.name,
            sum(reading.by_queue.values()),
            sum(r.total for r in reads),
            duration,
            extra={"jobs": sum(reading.by_queue.values()), "duration_seconds": round(duration, 3)},
        )

    def _reported(self, total: int) -> Metric:
        family = GaugeMetricFamily(
            "sugon_api_reported_jobs",
            "data.total reported by the API in the last successful poll.",
            labels=["hpc_cluster"],
        )
        family.add_metric([self.name], total)
        return family

    def _failed(self, reason: str, message: str, duration: float) -> None:
        previous = self._exposition.get(self.name)
        self._failures += 1
        self._endpoint.failed(reason)
        self._own.polls["failure"] += 1
        self._exposition.publish(
            replace(
                previous,
                up=False,
                poll_duration=duration,
                last_error=reason,
                pages=None,
                last_failure=PollFailure(reason=reason, message=without_secrets(message), at=self._clock()),
                next_poll_at=self._next_poll_at(),
                token_expiry=self._own.expiry,
                own=tuple(self._own.families()),
            )
        )
        jobs = previous.jobs
        if jobs is not None and not self._stale_logged and jobs.stale(self._clock()):
            self._stale_logged = True
            self._log.warning(
                "cluster %s: last good job data is older than max_staleness (%gs); no longer served",
                self.name,
                self.settings.max_staleness,
            )
        if previous.up is False and previous.last_error == reason:
            self._log.debug(
                "cluster %s: poll failed again (%s): %s", self.name, reason, message, extra={"reason": reason}
            )
            return
        if reason == "auth":
            hint = self.client.tokens.hint
            self._log.error(
                "cluster %s: no accepted token (%s); %s", self.name, message, hint, extra={"reason": reason}
            )
        else:
            self._log.warning("cluster %s: poll failed (%s): %s", self.name, reason, message, extra={"reason": reason})
        if jobs is not None and not self._stale_logged:
            self._log.warning(
                "cluster %s: serving job data of %s until it is %gs old",
                self.name,
                time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(jobs.taken_at)),
                self.settings.max_staleness,
            )

    def _next_poll_at(self) -> float | None:
        """When run() polls the job list next, in Unix seconds (now, if that poll is overdue); published with
        each poll's outcome, so that it never costs a publish of its own."""
        if self._due is None:
            return None
        return self._clock() + max(0.0, self._due - self._monotonic())

    async def _every(self, interval: float, poll: Callable[[], Awaitable[bool]], job_list: bool = False) -> None:
        while True:
            started = self._monotonic()
            if job_list:
                self._due = started + interval
            await poll()
            delay = interval - (self._monotonic() - started)
            if delay > 0:
                await self._sleep(delay)

    async def run(self) -> None:
        """Poll forever; a poll that outlives the interval delays the next one. Cancel the task to stop."""
        loops: Iterable[Awaitable[None]] = [self._every(self.settings.interval, self.poll_once, job_list=True)]
        if self.settings.capacity_interval is not None:
            loops = [*loops, self._every(self.settings.capacity_interval, self.capacity.poll_once)]
        await asyncio.gather(*loops)
