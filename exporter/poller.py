"""One loop per cluster: fetch every page → aggregate → publish a ClusterState; and the exporter's self-metrics."""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

from prometheus_client import CollectorRegistry, Counter

from exporter.api import REASONS, ApiError, SugonClient
from exporter.jobs import UNKNOWN, parse_job
from exporter.snapshot import SnapshotBuilder
from exporter.state import ClusterState, StateStore

log = logging.getLogger(__name__)

QUEUE_MEMORY_SECONDS = 24 * 3600  # a queue seen within this long keeps its zero-filled series
DISCOVERY_MAX_AGE = 3600  # scheduler ids found via /cluster are looked up again after this long


class PollMetrics:
    """The exporter's own counters (direct instrumentation), registered on an explicit registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.polls = Counter(
            "sugon_polls", "Polls of the job list by result.", ["hpc_cluster", "result"], registry=registry
        )
        self.requests = Counter(
            "sugon_api_requests", "HTTP requests sent to the Sugon API.", ["hpc_cluster"], registry=registry
        )
        self.errors = Counter(
            "sugon_api_errors",
            "Failed Sugon API requests by reason (timeout, connection, http_status, invalid_response, auth, api_code).",
            ["hpc_cluster", "reason"],
            registry=registry,
        )
        self.invalid_records = Counter(
            "sugon_invalid_records",
            "Job-list rows skipped as unusable (not an object, or no jobId).",
            ["hpc_cluster"],
            registry=registry,
        )

    def observer(self, cluster: str) -> ClusterObserver:
        """A per-cluster RequestObserver; creates every label set so each series starts at 0."""
        for result in ("success", "failure"):
            self.polls.labels(cluster, result)
        for reason in REASONS:
            self.errors.labels(cluster, reason)
        self.invalid_records.labels(cluster)
        return ClusterObserver(self, cluster)


class ClusterObserver:
    """Counts one cluster's requests and failed attempts."""

    def __init__(self, metrics: PollMetrics, cluster: str) -> None:
        self._requests = metrics.requests.labels(cluster)
        self._metrics = metrics
        self._cluster = cluster

    def request_sent(self) -> None:
        """One more HTTP request."""
        self._requests.inc()

    def request_failed(self, reason: str) -> None:
        """One more failed attempt, by reason."""
        self._metrics.errors.labels(self._cluster, reason).inc()


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
        interval: float,
        page_size: int,
        concurrency: int,
        max_staleness: float,
        per_user: bool,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.name = name
        self.client = client
        self._store = store
        self._metrics = metrics
        self._configured_ids = scheduler_ids
        self._discovered: tuple[list[str], float] | None = None
        self.interval = interval
        self._page_size = page_size
        self._concurrency = concurrency
        self._max_staleness = max_staleness
        self._per_user = per_user
        self._clock = clock
        self._monotonic = monotonic
        self._sleep = sleep
        self._queue_seen: dict[str, float] = {}
        self._unknown_statuses: set[str] = set()
        self._failures = 0
        self._stale_logged = False

    async def _scheduler_ids(self) -> list[str]:
        if self._configured_ids:
            return list(self._configured_ids)
        now = self._monotonic()
        if self._discovered is None or now - self._discovered[1] > DISCOVERY_MAX_AGE:
            ids = await self.client.schedulers()
            log.info("cluster %s: discovered scheduler ids %s", self.name, ", ".join(ids))
            self._discovered = (ids, now)
        return self._discovered[0]

    async def poll_once(self) -> bool:
        """Fetch every page of every scheduler, then publish a new state; True if the poll succeeded."""
        started = self._monotonic()
        builder = SnapshotBuilder(self._per_user)
        seen: set[str] = set()
        invalid = 0
        reported = 0

        def take(rows: list[Any], scheduler_id: str) -> None:
            nonlocal invalid
            for row in rows:
                job = parse_job(row, scheduler_id)
                if job is None:
                    invalid += 1
                elif job.key not in seen:
                    seen.add(job.key)
                    if job.status == UNKNOWN and job.raw_status not in self._unknown_statuses:
                        self._unknown_statuses.add(job.raw_status)
                        log.warning("cluster %s: unknown jobStatus %r counted as unknown", self.name, job.raw_status)
                    builder.add(job)

        try:
            for sid in await self._scheduler_ids():
                reported += await self.client.fetch_jobs(
                    sid, self._page_size, self._concurrency, functools.partial(take, scheduler_id=sid)
                )
        except ApiError as exc:
            self._failed(exc.reason, str(exc), self._monotonic() - started)
            return False
        except Exception:  # a bug must not kill the loop; the poll counts as failed and the traceback is logged
            log.exception("cluster %s: unexpected error during poll", self.name)
            self._failed("internal", "unexpected error (see the traceback above)", self._monotonic() - started)
            return False
        now = self._clock()
        for queue in builder.queues:
            self._queue_seen[queue] = now
        self._queue_seen = {q: t for q, t in self._queue_seen.items() if now - t <= QUEUE_MEMORY_SECONDS}
        snapshot = builder.build(
            cluster=self.name,
            taken_at=now,
            expires_at=now + self._max_staleness,
            reported_total=reported,
            zero_fill_queues=self._queue_seen,
        )
        duration = self._monotonic() - started
        if self._failures:
            log.info("cluster %s: recovered after %d failed poll(s)", self.name, self._failures)
        self._failures = 0
        self._stale_logged = False
        self._store.publish(ClusterState(self.name, True, now, duration, None, snapshot))
        self._metrics.polls.labels(self.name, "success").inc()
        if invalid:
            self._metrics.invalid_records.labels(self.name).inc(invalid)
            log.debug("cluster %s: skipped %d unusable rows", self.name, invalid)
        log.debug("cluster %s: %d jobs (API total %d) in %.2fs", self.name, builder.job_count, reported, duration)
        return True

    def _failed(self, reason: str, message: str, duration: float) -> None:
        previous = self._store.get(self.name)
        self._failures += 1
        self._discovered = None  # the URL may have moved on; look the schedulers up again
        self._metrics.polls.labels(self.name, "failure").inc()
        self._store.publish(replace(previous, up=False, poll_duration=duration, last_error=reason))
        snapshot = previous.snapshot
        if snapshot is not None and not self._stale_logged and self._clock() >= snapshot.expires_at:
            self._stale_logged = True
            log.warning(
                "cluster %s: last good job data is older than max_staleness (%gs); no longer served",
                self.name,
                self._max_staleness,
            )
        if previous.up is False and previous.last_error == reason:
            log.debug("cluster %s: poll failed again (%s): %s", self.name, reason, message)
            return
        if reason == "auth":
            log.error(
                "cluster %s: the API rejected the token (%s); renew the token (a token_file is re-read when it changes)",
                self.name,
                message,
            )
        else:
            log.warning("cluster %s: poll failed (%s): %s", self.name, reason, message)
        if snapshot is not None and not self._stale_logged:
            log.warning(
                "cluster %s: serving job data of %s until it is %gs old",
                self.name,
                time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(snapshot.taken_at)),
                self._max_staleness,
            )

    async def run(self) -> None:
        """Poll forever; a poll that outlives the interval delays the next one. Cancel the task to stop."""
        while True:
            started = self._monotonic()
            await self.poll_once()
            delay = self.interval - (self._monotonic() - started)
            if delay > 0:
                await self._sleep(delay)
