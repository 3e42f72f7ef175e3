"""/metrics rendered once per change of the job data, not once per scrape.

The job families (everything the JobCollector yields) change only when a poller publishes or when a
cluster's data crosses max_staleness; with per-user families at centre scale they are megabytes that
take seconds to render. They are rendered once per such change, in each format asked for, plain and
gzipped, and shared by every scrape. The exporter's own counters change all the time but are small:
they are rendered on each scrape and appended (the two parts share no metric family).
"""

from __future__ import annotations

import threading
import time
import zlib
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics

from exporter.state import StateStore

EOF_LINE = b"# EOF\n"


def _openmetrics(registry: CollectorRegistry) -> bytes:
    return generate_openmetrics(registry)  # type: ignore[no-untyped-call, no-any-return]


Key = tuple[int, frozenset[str]]


class CachedExposition:
    """Renders ``jobs`` (cached) followed by ``live`` (every time), as text or OpenMetrics, optionally gzipped."""

    def __init__(
        self,
        jobs: CollectorRegistry,
        live: CollectorRegistry,
        store: StateStore,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._jobs = jobs
        self._live = live
        self._store = store
        self._clock = clock
        self._lock = threading.Lock()
        self._key: Key | None = None
        self._plain: dict[bool, bytes] = {}
        # gzip: the job part compressed up to a sync flush, and the compressor as it stood then. Each scrape
        # continues a copy of it with the live part, which makes one ordinary gzip stream (some clients
        # stop reading after the first of several gzip members).
        self._gzip: dict[bool, tuple[bytes, Any]] = {}
        self.renders = 0  # how often the job part was rendered (tests, benchmarks)

    def _current_key(self) -> Key:
        now = self._clock()
        stale = frozenset(
            name
            for name, s in self._store.states().items()
            if (s.snapshot is not None and now >= s.snapshot.expires_at)
            or (s.capacity is not None and now >= s.capacity.expires_at)
        )
        return self._store.version, stale

    def _job_text(self, openmetrics: bool) -> bytes:
        text = self._plain.get(openmetrics)
        if text is None:
            self.renders += 1
            text = _openmetrics(self._jobs) if openmetrics else generate_latest(self._jobs)
            if openmetrics and text.endswith(EOF_LINE):
                text = text[: -len(EOF_LINE)]  # the live part ends the whole exposition
            self._plain[openmetrics] = text
        return text

    def render(self, openmetrics: bool, compressed: bool) -> bytes:
        """The whole exposition: the cached job part, then the live part."""
        live = _openmetrics(self._live) if openmetrics else generate_latest(self._live)
        key = self._current_key()
        with self._lock:  # one render per change, however many scrapes arrive at once
            if key != self._key:
                self._key, self._plain, self._gzip = key, {}, {}
            if not compressed:
                return self._job_text(openmetrics) + live
            cached = self._gzip.get(openmetrics)
            if cached is None:
                compressor = zlib.compressobj(1, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
                prefix = compressor.compress(self._job_text(openmetrics)) + compressor.flush(zlib.Z_SYNC_FLUSH)
                cached = self._gzip[openmetrics] = (prefix, compressor)
            prefix, compressor = cached
            tail = compressor.copy()
        return prefix + tail.compress(live) + tail.flush()
