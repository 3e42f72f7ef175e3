"""Where a cluster's job list is: its HPC URL (from /center, when not configured) and its scheduler ids (from
/cluster, when not configured), each looked up again at most hourly and after a poll failed."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from exporter.sugon.joblist import SugonClient
from exporter.sugon.platform import PlatformClient
from exporter.sugon.tokens import with_token

log = logging.getLogger(__name__)

MAX_AGE = 3600  # a discovered HPC URL or scheduler id list is looked up again after this long
# Failures after which a discovered HPC URL is looked up again: the region may have moved.
URL_FAILURES = frozenset({"timeout", "connection", "http_status"})


class Endpoint:
    """A cluster's HPC URL and scheduler ids, discovered where not configured, one discovery at a time; the URL
    from ``platform`` (the AC host, with the client's tokens) when ``client`` has none."""

    def __init__(
        self,
        cluster: str,
        client: SugonClient,
        scheduler_ids: tuple[str, ...] = (),
        platform: PlatformClient | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._cluster = cluster
        self._client = client
        self._configured_ids = scheduler_ids
        self._platform = platform if not client.base_url else None
        self._monotonic = monotonic
        self._lock = asyncio.Lock()
        self._ids: tuple[list[str], float] | None = None  # discovered ids and when
        self._url_checked: float | None = None
        self._url_stale = False
        self.user_name: str | None = None  # the account /center names, if it was asked

    async def scheduler_ids(self) -> list[str]:
        """The scheduler ids to read the job list of, looking the URL and the ids up where due."""
        async with self._lock:
            now = self._monotonic()
            if self._platform is not None and (
                self._url_checked is None or self._url_stale or now - self._url_checked > MAX_AGE
            ):
                center = await with_token(self._client.tokens, self._platform.center)
                self.user_name = center.user_name
                if self._client.use_center(center):
                    log.info(
                        "cluster %s: HPC URL is %s",
                        self._cluster,
                        center.hpc_url,
                        extra={"cluster": self._cluster, "url": center.hpc_url},
                    )
                    self._ids = None
                self._url_checked, self._url_stale = now, False
            if self._configured_ids:
                return list(self._configured_ids)
            if self._ids is None or now - self._ids[1] > MAX_AGE:
                ids = await self._client.schedulers()
                log.info(
                    "cluster %s: discovered scheduler ids %s",
                    self._cluster,
                    ", ".join(ids),
                    extra={"cluster": self._cluster, "ids": ",".join(ids)},
                )
                self._ids = (ids, now)
            return self._ids[0]

    def failed(self, reason: str) -> None:
        """A poll failed: the scheduler ids are looked up again, and the URL too after a failure that may mean
        the region moved."""
        self._ids = None
        self._url_stale = self._url_stale or reason in URL_FAILURES
