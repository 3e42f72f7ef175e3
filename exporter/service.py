"""Wiring: one Config in, the exposition and a poller per cluster out; runs the pollers on an asyncio loop."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import re
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx
from prometheus_client import CollectorRegistry

from exporter import __version__
from exporter.config import ClusterConfig, Config
from exporter.groups.base import Settings
from exporter.groups.own import Own
from exporter.model import Budget, PollSettings
from exporter.poller import ClusterPoller
from exporter.render import Exposition
from exporter.statefile import StateFile
from exporter.sugon.conversation import Conversation
from exporter.sugon.discovery import Endpoint
from exporter.sugon.joblist import SugonClient
from exporter.sugon.platform import PlatformClient
from exporter.sugon.settings import LoginSettings, TokenSettings
from exporter.sugon.tokens import token_provider
from exporter.sugon.transport import LeanTransport

log = logging.getLogger(__name__)


def tls_context(cluster: ClusterConfig) -> ssl.SSLContext:
    """The one TLS context of a cluster's connections: the system's trust store (OpenSSL's default paths, which
    SSL_CERT_FILE and SSL_CERT_DIR override) with ``ca_file`` added to it, or no verification at all with
    ``verify_tls: false``."""
    context = ssl.create_default_context()
    if cluster.ca_file is not None:
        context.load_verify_locations(cafile=cluster.ca_file)  # adds to the system's CAs, for the AC host too
    if not cluster.verify_tls:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def token_settings(cluster: ClusterConfig) -> TokenSettings:
    """What the API client needs to know of a cluster's token source, from its configuration."""
    auth = cluster.auth
    login = None
    if auth is not None:
        login = LoginSettings(
            kind=auth.kind,
            url=auth.url,
            user=auth.user,
            region=auth.region,
            password=auth.password,
            password_file=auth.password_file,
            org_id=auth.org_id,
            access_key=auth.access_key,
            secret_key=auth.secret_key,
            secret_key_file=auth.secret_key_file,
        )
    return TokenSettings(
        cluster=cluster.name,
        token=cluster.token,
        token_file=cluster.token_file,
        login=login,
        login_gap=cluster.interval,
    )


@dataclass
class _Cluster:
    """A cluster's poller, the HTTP client it alone uses, and its poll loop once running."""

    config: ClusterConfig
    poller: ClusterPoller
    http: httpx.AsyncClient
    task: asyncio.Task[None] | None = None


class Exporter:
    """Everything between a validated Config and the /metrics registry."""

    def __init__(self, config: Config, *, clock: Callable[[], float] = time.time, retry_backoff: float = 0.5) -> None:
        self.config = config
        self._clock = clock
        self._retry_backoff = retry_backoff
        self.exposition = Exposition([c.name for c in config.clusters], clock)
        # Everything /metrics serves, as a registry (--once; reading single values).
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self.exposition)
        self._state_files: dict[str, StateFile] = {}
        self._clusters = {c.name: self._cluster(c) for c in config.clusters}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._thread: threading.Thread | None = None

    @property
    def pollers(self) -> list[ClusterPoller]:
        """The clusters' pollers, in the config's order."""
        return [c.poller for c in self._clusters.values()]

    def _cluster(self, cluster: ClusterConfig) -> _Cluster:
        http = httpx.AsyncClient(
            timeout=httpx.Timeout(cluster.timeout),
            transport=LeanTransport(tls_context(cluster), cluster.concurrency),
            headers={"User-Agent": f"sugon-exporter/{__version__}"},
        )
        own = Own(cluster.name, logs_in=cluster.auth is not None)
        conversation = Conversation(http, cluster.timeout, own, self._retry_backoff)
        platform = None
        if cluster.auth is not None:
            platform = PlatformClient(cluster.auth.url, conversation, cluster.auth.url_authorization)
        tokens = token_provider(token_settings(cluster), platform, own, self._clock)
        client = SugonClient(cluster.api_url or "", tokens, conversation, cluster.api_authorization)
        poller = ClusterPoller(
            cluster.name,
            client,
            Endpoint(cluster.name, client, cluster.cluster_ids, platform),
            self.exposition,
            own,
            PollSettings(
                interval=cluster.interval,
                page_size=cluster.page_size,
                concurrency=cluster.concurrency,
                max_staleness=self.config.max_staleness,
                max_jobs=cluster.max_jobs,
                capacity_interval=cluster.capacity_interval if cluster.queue_capacity else None,
                username=cluster.username,
            ),
            Settings(
                cluster=cluster.name,
                budget=Budget(
                    max_users=cluster.max_users,
                    users_exclude=tuple(re.compile(p) for p in cluster.users_exclude),
                    queues_exclude=tuple(re.compile(p) for p in cluster.queues_exclude),
                    max_queues=cluster.max_queues,
                    max_apps=cluster.max_apps,
                ),
                per_user=self.config.per_user,
                per_job=self.config.per_job,
                max_job_series=cluster.max_job_series,
                job_series_users=cluster.job_series_users,
            ),
            state_file=self._state_file(cluster.state_file),
            clock=self._clock,
        )
        return _Cluster(cluster, poller, http)

    def _state_file(self, path: str | None) -> StateFile | None:
        """One StateFile per path, shared by the clusters that name it."""
        if path is None:
            return None
        if path not in self._state_files:
            self._state_files[path] = StateFile(path)
        return self._state_files[path]

    async def aclose(self) -> None:
        """Close the HTTP connection pools."""
        await asyncio.gather(*(c.http.aclose() for c in self._clusters.values()), return_exceptions=True)

    async def poll_all_once(self) -> bool:
        """Poll every cluster once, concurrently; True if all succeeded."""
        try:
            results = await asyncio.gather(*(p.poll_once() for p in self.pollers))
        finally:
            await self.aclose()
        return all(results)

    async def run(self) -> None:
        """Run every cluster's poll loop until cancelled; the loops are independent of each other."""
        try:
            for cluster in self._clusters.values():
                self._start(cluster)
            await asyncio.Event().wait()  # until cancelled
        finally:
            await self._stop(list(self._clusters.values()))

    def _start(self, cluster: _Cluster) -> None:
        task = cluster.task = asyncio.ensure_future(cluster.poller.run())
        task.add_done_callback(self._ended)

    @staticmethod
    def _ended(task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:  # a poll loop never ends on its own
            log.error("a poll loop ended unexpectedly", exc_info=task.exception(), extra={"reason": "internal"})

    @staticmethod
    async def _stop(clusters: list[_Cluster]) -> None:
        """Cancel the poll loops (a poll in flight is abandoned) and close their HTTP clients."""
        tasks = [c.task for c in clusters if c.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.gather(*(c.http.aclose() for c in clusters), return_exceptions=True)

    def can_reload(self, config: Config) -> bool:
        """Whether ``reload`` can apply ``config`` in place. per_user and per_job decide which families /metrics
        has, so a change of either needs a new Exporter."""
        return config.per_user == self.config.per_user and config.per_job == self.config.per_job

    def reload(self, config: Config, timeout: float = 30.0) -> str:
        """Apply a new config to the running poll loops (see ``start``); returns what changed, for the log.

        A cluster whose settings are the same keeps its poller, state and data; a changed one starts afresh, as
        at a restart (it may be another API now): every counter of it, the exporter's own too, from 0; a removed
        one stops and leaves /metrics.
        """
        if self._loop is None or self._loop.is_closed():
            raise RuntimeError("the poll loops are not running")
        return asyncio.run_coroutine_threadsafe(self._apply(config), self._loop).result(timeout)

    async def _apply(self, config: Config) -> str:
        same = config.max_staleness == self.config.max_staleness
        old = self._clusters
        kept = {c.name for c in config.clusters if same and c.name in old and old[c.name].config == c}
        await self._stop([c for name, c in old.items() if name not in kept])
        self.config = config
        self.exposition.set_clusters([c.name for c in config.clusters], kept)  # changed: a new poller, from 0
        clusters = {c.name: old[c.name] if c.name in kept else self._cluster(c) for c in config.clusters}
        for name, cluster in clusters.items():
            if name not in kept:
                self._start(cluster)
        self._clusters = clusters
        added = [n for n in clusters if n not in old]
        changed = [n for n in clusters if n in old and n not in kept]
        removed = [n for n in old if n not in clusters]
        return "; ".join(
            f"{what}: {', '.join(names) or 'none'}"
            for what, names in (
                ("unchanged", sorted(kept)),
                ("changed", changed),
                ("added", added),
                ("removed", removed),
            )
        )

    def start(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """Run the poll loops on ``loop``, the web server's (one thread then does all the Python work, and a scrape
        never waits for another thread to give up the interpreter), or on a loop of their own in a thread."""
        if loop is None:
            loop = asyncio.new_event_loop()
            self._thread = threading.Thread(target=loop.run_forever, name="pollers", daemon=True)
            self._thread.start()
        self._loop = loop
        asyncio.run_coroutine_threadsafe(self._begin(), loop).result()

    async def _begin(self) -> None:
        self._task = asyncio.create_task(self.run())

    async def _end(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def stop(self, timeout: float = 5.0) -> None:
        """Cancel the poll loops (a poll in flight is abandoned), close their HTTP clients, and end their own
        thread if they have one."""
        loop = self._loop
        if loop is None or loop.is_closed() or not loop.is_running():
            return
        try:
            asyncio.run_coroutine_threadsafe(self._end(), loop).result(timeout)
        except (TimeoutError, concurrent.futures.TimeoutError):
            log.warning("the poll loops did not stop within %gs", timeout)
        if self._thread is not None:
            loop.call_soon_threadsafe(loop.stop)
            self._thread.join(timeout)
            if not self._thread.is_alive():
                loop.close()
