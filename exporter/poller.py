"""One loop per cluster: fetch every page (sugon) → count (counting) → publish a ClusterState (serving)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace

from exporter.counting.queues import QueueBudget, add_capacity, fold_jobs
from exporter.counting.rows import RowParser
from exporter.counting.snapshot import SnapshotBuilder
from exporter.counting.statefile import StateFile
from exporter.counting.tally import RowTally, next_tally
from exporter.counting.tracker import JobTracker
from exporter.counting.usernames import UserNames
from exporter.logs import Fields
from exporter.model import OTHER, CapacitySettings, CapacitySnapshot, LabelBudget, PollFailure, QueueCapacity
from exporter.serving.selfmetrics import PollMetrics
from exporter.serving.store import StateStore
from exporter.sugon.conversation import ApiError, ApiInvalidResponse
from exporter.sugon.joblist import MAX_JOBS, JobListRead, SugonClient
from exporter.sugon.platform import Center
from exporter.values import jwt_payload, without_secrets

log = logging.getLogger(__name__)

DISCOVERY_MAX_AGE = 3600  # a discovered HPC URL or scheduler id list is looked up again after this long
# Failures after which a discovered HPC URL is looked up again: the region may have moved.
URL_FAILURES = frozenset({"timeout", "connection", "http_status"})
DEFAULT_BUDGET = LabelBudget()
SHOWN_STATUSES = 100  # unknown jobStatus values the log remembers having shown: the first ones, no more


class ClusterPoller:
    """Polls one cluster: never two polls at once, and each poll publishes all of its data or none."""

    def __init__(
        self,
        name: str,
        client: SugonClient,
        store: StateStore,
        metrics: PollMetrics,
        *,
        scheduler_ids: tuple[str, ...],
        url_source: Callable[[], Awaitable[Center]] | None = None,
        interval: float,
        page_size: int,
        concurrency: int,
        max_staleness: float,
        per_user: bool,
        budget: LabelBudget = DEFAULT_BUDGET,
        max_jobs: int = MAX_JOBS,
        capacity: CapacitySettings | None = None,
        state_file: StateFile | None = None,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.name = name
        self._log = Fields(log, {"cluster": name})
        self._internal = {"cluster": name, "reason": "internal"}  # the fields of a bug's traceback
        self.client = client
        self._store = store
        self._metrics = metrics
        self._configured_ids = scheduler_ids
        self._discovered_ids: tuple[list[str], float] | None = None
        self._url_source = url_source
        self._url_checked: float | None = None
        self._url_stale = False
        self.interval = interval
        self._page_size = page_size
        self._concurrency = concurrency
        self._max_staleness = max_staleness
        self._per_user = per_user
        self._clock = clock
        self._monotonic = monotonic
        self._sleep = sleep
        self._budget = budget
        self._max_jobs = max_jobs
        self._discovery_lock = asyncio.Lock()
        self._capacity = capacity
        self._capacity_failing: str | None = None
        self._capacity_raw: dict[str, QueueCapacity] | None = None  # the last capacity poll's, before folding
        self._center_user: str | None = None
        self._state_file = state_file
        saved_users = state_file.users(name) if state_file and per_user else None
        self._users = UserNames(budget.max_users, budget.users_exclude, saved_users) if per_user else None
        self._tracker = JobTracker(
            state_file.waiting_since(name) if state_file else None,
            state_file.run_seconds(name) if state_file else None,
            self._users,
        )
        self._queues = QueueBudget(
            budget.max_queues, budget.queues_exclude, state_file.queues_seen(name) if state_file else None
        )
        self._shown_statuses: set[str] = set()  # unknown jobStatus values the log has shown (cut short)
        self._find_ignored: float | None = None  # when (monotonic) a strJobId lookup was answered with other jobs
        self._gaps_logged = False  # a poll's pages could not all be linked (logged once until one can)
        self._parser = RowParser()
        self._tally: RowTally | None = None
        self._failures = 0
        self._stale_logged = False
        self._due: float | None = None  # when (monotonic) run() polls the job list next; None outside run()
        if state_file is not None:
            self._serve_saved(state_file)

    def _serve_saved(self, state_file: StateFile) -> None:
        """Publish the job data of the last successful poll before a restart, as during an outage: the job gauges
        until it is max_staleness old, the 0-valued counters of its queues, its time as the last success."""
        saved = state_file.jobs(self.name, self._max_staleness)
        if saved is None or saved.taken_at > self._clock():
            return
        self._store.publish(replace(self._store.get(self.name), last_success=saved.taken_at, snapshot=saved))
        if not saved.stale(self._clock()):
            self._log.info(
                "cluster %s: serving the job data saved in the state file, of %s, until it is %gs old",
                self.name,
                time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(saved.taken_at)),
                self._max_staleness,
            )

    async def _endpoint(self) -> list[str]:
        """The HPC URL and scheduler ids, discovered where not configured; one discovery at a time."""
        async with self._discovery_lock:
            await self._resolve_url()
            return await self._scheduler_ids()

    async def _resolve_url(self) -> None:
        if self._url_source is None:
            return
        now = self._monotonic()
        if self._url_checked is not None and not self._url_stale and now - self._url_checked <= DISCOVERY_MAX_AGE:
            return
        center = await self._url_source()
        self._center_user = center.user_name
        if self.client.use_center(center):
            self._log.info("cluster %s: HPC URL is %s", self.name, center.hpc_url, extra={"url": center.hpc_url})
            self._discovered_ids = None
        self._url_checked, self._url_stale = now, False

    async def _scheduler_ids(self) -> list[str]:
        if self._configured_ids:
            return list(self._configured_ids)
        now = self._monotonic()
        if self._discovered_ids is None or now - self._discovered_ids[1] > DISCOVERY_MAX_AGE:
            ids = await self.client.schedulers()
            self._log.info(
                "cluster %s: discovered scheduler ids %s", self.name, ", ".join(ids), extra={"ids": ",".join(ids)}
            )
            self._discovered_ids = (ids, now)
        return self._discovered_ids[0]

    async def poll_once(self) -> bool:
        """Fetch every page of every scheduler, then publish a new state; True if the poll succeeded."""
        started = self._monotonic()
        tally = self._tally_for_poll()
        builder = tally.builder
        try:
            sids = await self._endpoint()
            reads = [
                await self.client.fetch_jobs(sid, self._page_size, self._concurrency, tally, self._max_jobs)
                for sid in sids
            ]
            left, checks = await self._confirm_missing(tally, reads, sids)
        except ApiError as exc:
            tally.pop_counted()  # the keys counted so far are dropped, not kept until the next poll
            self._failed(exc.reason, str(exc), self._monotonic() - started)
            return False
        except Exception:  # a bug must not kill the loop; the poll counts as failed
            self._tally = None  # whatever it holds, the next poll starts afresh
            if self._store.get(self.name).last_error != "internal":  # the traceback once, not every poll
                log.exception("cluster %s: unexpected error during poll", self.name, extra=self._internal)
            else:
                self._log.debug(
                    "cluster %s: unexpected error during poll, again", self.name, exc_info=True, extra=self._internal
                )
            self._failed("internal", "unexpected error (see the traceback above)", self._monotonic() - started)
            return False
        reported, pages = sum(r.total for r in reads), sum(r.pages for r in reads) + checks
        tally.finish()
        now = self._clock()
        with_series = (*self._tracker.known_queues(), *(self._capacity_raw or ()))
        named, folded = self._queues.name(builder.queue_jobs(), now, with_series)
        counted = tally.pop_counted()
        if named is not None:
            fold_jobs(counted, named)
        departures = self._tracker.departures
        activity = self._tracker.commit(counted, now, None if named is None else {*named, OTHER}, left)
        self._metrics.departures(self.name, self._tracker.departures - departures)
        snapshot = builder.build(
            cluster=self.name,
            taken_at=now,
            expires_at=now + self._max_staleness,
            reported_total=reported,
            zero_fill_queues=self._queues.seen,
            activity=activity,
            named=named,
            queues_folded=folded,
        )
        if self._state_file is not None:
            self._state_file.save(
                self.name,
                self._tracker.waiting_since(),
                dict(self._queues.seen),
                self._tracker.run_seconds(),
                users=self._users.saved() if self._users is not None else None,
                jobs=snapshot,
            )
        duration = self._monotonic() - started
        if self._failures:
            self._log.info(
                "cluster %s: recovered after %d failed poll(s)",
                self.name,
                self._failures,
                extra={"failures": self._failures},
            )
        self._failures = 0
        self._stale_logged = False
        previous = self._store.get(self.name)
        capacity = previous.capacity
        if capacity is not None and self._capacity_raw is not None:
            queues = self._queues.capacity_view(self._capacity_raw)  # named as the job data now is
            if queues != capacity.queues:
                capacity = replace(capacity, queues=queues)
        self._store.publish(
            replace(
                previous,
                up=True,
                last_success=now,
                poll_duration=duration,
                last_error=None,
                snapshot=snapshot,
                capacity=capacity,
                pages=pages,
                next_poll_at=self._next_poll_at(),
            )
        )
        self._metrics.poll_result(self.name, "success")
        if tally.invalid:
            self._metrics.invalid_rows(self.name, tally.invalid)
            self._log.debug("cluster %s: skipped %d unusable rows", self.name, tally.invalid)
        for field, n in tally.invalid_fields().items():
            self._metrics.invalid_values(self.name, field, n)
            if field != "jobStatus":  # its own line follows
                self._log.debug(
                    "cluster %s: %d values of %s could not be read", self.name, n, field, extra={"field": field}
                )
        if tally.unknown_statuses:
            self._log_unknown_statuses(tally)
        fields = {"jobs": builder.job_count, "api_total": reported, "duration_seconds": round(duration, 3)}
        self._log.debug(
            "cluster %s: %d jobs (API total %d) in %.2fs",
            self.name,
            builder.job_count,
            reported,
            duration,
            extra=fields,
        )
        return True

    def _log_unknown_statuses(self, tally: RowTally) -> None:
        """One line a poll for its rows whose jobStatus maps to no status: a warning if it shows a value the log
        has not shown before (of the first SHOWN_STATUSES), else a debug line."""
        for shown in tally.status_examples:
            if len(self._shown_statuses) < SHOWN_STATUSES:
                self._shown_statuses.add(shown)
        self._log.log(
            logging.WARNING if tally.new_status_seen else logging.DEBUG,
            "cluster %s: %d rows with an unknown jobStatus counted as unknown, such as %s",
            self.name,
            tally.unknown_statuses,
            ", ".join(map(repr, tally.status_examples)),
            extra={"rows": tally.unknown_statuses},
        )

    async def _confirm_missing(
        self, tally: RowTally, reads: list[JobListRead], sids: list[str]
    ) -> tuple[frozenset[str] | None, int]:
        """Settle the jobs known from the last poll that this one did not read: (which of them have left, the
        lookups made). All of them have left when every read was complete (None). Those that had not ended
        are looked up (``strJobId``) within what is left of the poll's extra requests: a job still listed is
        counted into this poll, one not listed has left; the rest wait for a later poll (JobTracker.commit).

        An incomplete read must still account for every job its pages promised (the least ``data.total``):
        read now, or known and not read. Raises ApiInvalidResponse when it does not: a stretch was skipped.
        """
        complete = all(r.complete for r in reads)
        recovered = sum(r.recovered for r in reads)
        active, ended = self._tracker.missing(tally.counted_keys())
        budget = sum(r.spare for r in reads)
        left: set[str] = set()
        lookups = 0
        sids_known = set(sids)
        ignored = self._find_ignored is not None and self._monotonic() - self._find_ignored < DISCOVERY_MAX_AGE
        wanted = [] if ignored else [k for k in active if k.partition("\x00")[0] in sids_known][: max(budget, 0)]
        found = 0
        for start in range(0, len(wanted), self._concurrency):
            batch = wanted[start : start + self._concurrency]
            answers = await asyncio.gather(*(self.client.find_job(*key.split("\x00", 1)) for key in batch))
            lookups += len(batch)
            if any(rows is None for rows in answers):
                if self._find_ignored is None:
                    self._log.warning(
                        "cluster %s: the API ignores strJobId (it answered other jobs); for an hour, jobs that a "
                        "poll's pages missed wait for a later poll instead of being looked up",
                        self.name,
                    )
                self._find_ignored = self._monotonic()
                break
            for key, rows in zip(batch, answers):
                if rows:
                    found += 1
                    recovered += tally.add_page(rows, key.partition("\x00")[0])
                else:
                    left.add(key)
        if not complete:
            active, ended = self._tracker.missing(tally.counted_keys())
            promised, accounted = sum(r.least_total for r in reads), sum(r.distinct for r in reads)
            if accounted + found + len(active) + len(ended) - len(left) < promised:
                raise ApiInvalidResponse(
                    f"the pages promised {promised} jobs and {accounted} were read while the list moved, with "
                    f"{len(active) + len(ended)} known ones not read: a stretch of the list was skipped"
                )
        self._metrics.rows_recovered(self.name, recovered)
        if not complete:
            unread = len(self._tracker.missing(tally.counted_keys())[0]) - len(left)
            if unread > 0 and not self._gaps_logged:
                self._log.warning(
                    "cluster %s: the job list moved faster than its pages could be read again; %d jobs not read "
                    "wait for a later poll, uncounted (logged once until a poll links every page)",
                    self.name,
                    unread,
                    extra={"jobs": unread},
                )
                self._gaps_logged = True
        elif self._gaps_logged:
            self._log.info("cluster %s: every page of the job list is linked again", self.name)
            self._gaps_logged = False
        return (None if complete else frozenset(left)), lookups

    def _tally_for_poll(self) -> RowTally:
        """The last poll's tally and builder, begun anew; fresh ones when none or it remembers too much.

        Each counted job's key → what the tracker needs of it (``tally.pop_counted``) is the one entry per job
        that a poll holds; the rest is per distinct (queue, user, status), kept from poll to poll.
        """

        def new() -> RowTally:
            budget = self._budget
            builder = SnapshotBuilder(self._per_user, budget.max_users, budget.users_exclude, budget.max_apps)
            return RowTally(self._parser, builder, self._queues.is_excluded, self._shown_statuses)

        self._tally = next_tally(self._tally, new)
        return self._tally

    def _failed(self, reason: str, message: str, duration: float) -> None:
        previous = self._store.get(self.name)
        self._failures += 1
        self._discovered_ids = None  # the URL may have moved on; look the schedulers up again
        self._url_stale = self._url_stale or reason in URL_FAILURES
        self._metrics.poll_result(self.name, "failure")
        failure = PollFailure(reason, without_secrets(message), self._clock())
        self._store.publish(
            replace(
                previous,
                up=False,
                poll_duration=duration,
                last_error=reason,
                pages=None,
                last_failure=failure,
                next_poll_at=self._next_poll_at(),
            )
        )
        snapshot = previous.snapshot
        if snapshot is not None and not self._stale_logged and snapshot.stale(self._clock()):
            self._stale_logged = True
            self._log.warning(
                "cluster %s: last good job data is older than max_staleness (%gs); no longer served",
                self.name,
                self._max_staleness,
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
        if snapshot is not None and not self._stale_logged:
            self._log.warning(
                "cluster %s: serving job data of %s until it is %gs old",
                self.name,
                time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(snapshot.taken_at)),
                self._max_staleness,
            )

    async def _username(self) -> str | None:
        if self._capacity is not None and self._capacity.username:
            return self._capacity.username
        if self._center_user:
            return self._center_user
        claims = jwt_payload(await self.client.tokens.get())
        for claim in ("computeUser", "user"):
            value = claims.get(claim)
            if isinstance(value, str) and value.strip():
                return value.strip()
        return None

    async def poll_capacity_once(self) -> bool:
        """Fetch the queue capacity of every scheduler and publish it; a failure never touches the job data."""
        if self._capacity is None:
            return False
        try:
            ids = await self._endpoint()
            username = await self._username()
            if username is None:
                self._capacity_failed("no username", "set username: neither /center nor the token names the account")
                return False
            queues: dict[str, QueueCapacity] = {}
            for sid in ids:
                for queue, cap in (await self.client.queue_capacity(username, sid)).items():
                    if not self._queues.is_excluded(queue):
                        queues[queue] = add_capacity(queues.get(queue), cap)
        except ApiError as exc:
            self._capacity_failed(exc.reason, str(exc))
            return False
        except Exception:  # a bug must not kill the loop; its traceback is logged once, not every poll
            if self._capacity_failing != "internal":
                log.exception("cluster %s: unexpected error during the capacity poll", self.name, extra=self._internal)
            else:
                self._log.debug(
                    "cluster %s: unexpected error during the capacity poll, again",
                    self.name,
                    exc_info=True,
                    extra=self._internal,
                )
            self._capacity_failing = "internal"
            return False
        now = self._clock()
        if self._capacity_failing:
            self._log.info("cluster %s: queue capacity available again", self.name)
        self._capacity_failing = None
        self._capacity_raw = queues
        capacity = CapacitySnapshot(now, now + self._max_staleness, self._queues.capacity_view(queues))
        self._store.publish(replace(self._store.get(self.name), capacity=capacity))
        return True

    def _capacity_failed(self, reason: str, message: str) -> None:
        if self._capacity_failing != reason:
            self._log.warning(
                "cluster %s: queue capacity poll failed (%s): %s", self.name, reason, message, extra={"reason": reason}
            )
        self._capacity_failing = reason

    def _next_poll_at(self) -> float | None:
        """When run() polls the job list next, in Unix seconds (now, if that poll is overdue); published with
        each poll's outcome, so that it never costs a publish (and a /metrics rendering) of its own."""
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
        """Poll forever; a poll that outlives the interval delays the next one. Cancel the task to stop.

        Queue capacity, when enabled, is polled in a loop of its own, so it never delays the job data.
        """
        if self._capacity is None:
            await self._every(self.interval, self.poll_once, job_list=True)
            return
        await asyncio.gather(
            self._every(self.interval, self.poll_once, job_list=True),
            self._every(self._capacity.interval, self.poll_capacity_once),
        )
