"""/metrics rendered per cluster and per change, not per scrape.

The job families change only when a poller publishes (or data crosses max_staleness); with per-user
families at centre scale they are megabytes that take seconds to render. So each cluster's samples are
rendered once per published snapshot, capacity or health, as one piece per family, in each format asked
for, plain and raw-deflated, by the publishing thread before the state becomes visible (prepare). The
pieces of every family, cluster after cluster, behind the family's HELP and TYPE, make the job part: the
bytes are exactly what prometheus-client renders for the whole registry, but a publish re-renders only its
own cluster. Data that crosses max_staleness only leaves pieces out.

gzip: each piece is deflated on its own up to a sync flush, so deflated pieces join into one deflate
stream; a scrape appends the live part (the exporter's own counters: small, re-rendered when they change)
with the final block and the gzip trailer. The result is one ordinary gzip stream.
"""

from __future__ import annotations

import logging
import struct
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics

from exporter.model import ClusterState
from exporter.serving.collector import CAPACITY_FAMILIES, JOB_DATA_FAMILIES, PARTS, USER_FAMILIES, JobCollector
from exporter.serving.store import StateStore

log = logging.getLogger(__name__)
EOF_LINE = b"# EOF\n"
GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"  # no name, no mtime, unknown OS


class _Families:
    """A registry stand-in that yields given families (prometheus-client only calls collect())."""

    def __init__(self, families: Iterable[Any]) -> None:
        self._families = list(families)

    def collect(self) -> list[Any]:
        return self._families


def _render(source: Any, openmetrics: bool) -> bytes:
    if openmetrics:
        text: bytes = generate_openmetrics(source)  # type: ignore[no-untyped-call]
        return text.removesuffix(EOF_LINE)
    return generate_latest(source)


def _split_header(text: bytes) -> tuple[bytes, bytes]:
    """(the leading comment lines, the samples) of one family's rendering."""
    pos = 0
    while text.startswith(b"#", pos):
        pos = text.index(b"\n", pos) + 1
    return text[:pos], text[pos:]


class Piece:
    """Some exposition bytes, and the same deflated up to a sync flush (joinable with other pieces)."""

    __slots__ = ("deflated", "text")

    def __init__(self, text: bytes) -> None:
        self.text = text
        compressor = zlib.compressobj(1, zlib.DEFLATED, -zlib.MAX_WBITS)
        self.deflated = compressor.compress(text) + compressor.flush(zlib.Z_SYNC_FLUSH) if text else b""


class _Assembly:
    """The job part of one exposition format, as pieces in order; the plain bytes joined when first asked
    for (Prometheus asks for gzip, and 36 MB joined under the lock would hold up every scrape)."""

    def __init__(self, pieces: list[Piece]) -> None:
        self._pieces = pieces  # references only: the pieces themselves are the cache's
        self._plain: bytes | None = None
        self.deflated = b"".join(p.deflated for p in pieces)
        self.size = sum(len(p.text) for p in pieces)
        crc = 0
        for p in pieces:
            crc = zlib.crc32(p.text, crc)
        self.crc = crc

    @property
    def plain(self) -> bytes:
        plain = self._plain
        if plain is None:  # two scrapes may both join: the same bytes, and no harm
            plain = self._plain = b"".join(p.text for p in self._pieces)
        return plain


class CachedExposition:
    """Renders the job families (cached per cluster) followed by ``live`` (cached while ``live_version``
    stays the same; without it, rendered every time), as text or OpenMetrics, optionally gzipped.
    ``static`` holds families that never change (build info)."""

    def __init__(
        self,
        static: CollectorRegistry,
        collector: JobCollector,
        live: CollectorRegistry,
        store: StateStore,
        clock: Callable[[], float] = time.time,
        live_version: Callable[[], int] | None = None,
    ) -> None:
        self._static = static
        self._live_version = live_version
        self._collector = collector
        self._live = live
        self._store = store
        self._clock = clock
        self._names = list(collector.empty_families())
        self._per_user = all(name in self._names for name in USER_FAMILIES)
        self._lock = threading.Lock()
        # (cluster, part, openmetrics) → (the object it was rendered from, family name → piece)
        self._pieces: dict[tuple[str, str, bool], tuple[object, dict[str, Piece]]] = {}
        self._headers: dict[bool, tuple[Piece, dict[str, Piece]]] = {}  # static part, and each family's header
        self._assembled: dict[bool, dict[tuple[Any, ...], tuple[Mapping[str, ClusterState], _Assembly]]] = {}
        # With live_version: the live part as of a version, and whole gzipped answers, per format.
        self._live_cache: dict[bool, tuple[int, bytes]] = {}
        self._gzipped: dict[bool, tuple[_Assembly, int, bytes]] = {}
        self._formats: set[bool] = set()  # the formats scraped so far (OpenMetrics or not): prepared ahead
        self.renders = 0  # how often a cluster's snapshot was rendered (tests, benchmarks)
        self.assemblies = 0  # how often the job part was put together from pieces
        self._prepare_failing: set[str] = set()  # clusters whose last rendering ahead failed (logged once)

    def _heads(self, openmetrics: bool) -> tuple[Piece, dict[str, Piece]]:
        found = self._headers.get(openmetrics)
        if found is None:
            empty = self._collector.empty_families()
            heads = {
                name: Piece(_split_header(_render(_Families([fam]), openmetrics))[0]) for name, fam in empty.items()
            }
            found = self._headers[openmetrics] = (Piece(_render(self._static, openmetrics)), heads)
        return found

    def _source(self, state: ClusterState, part: str) -> object:
        return (state.up, state.last_success, state.poll_duration) if part == "health" else getattr(state, part)

    def _cached(self, name: str, state: ClusterState, part: str, openmetrics: bool) -> dict[str, Piece] | None:
        cached = self._pieces.get((name, part, openmetrics))
        source = self._source(state, part)
        if cached is not None and (cached[0] is source or (part == "health" and cached[0] == source)):
            return cached[1]
        return None

    def _rendered(self, name: str, state: ClusterState, part: str, openmetrics: bool) -> dict[str, Piece]:
        """The pieces of one part of one cluster, rendered now (touches no shared state but a counter);
        none when the part cannot be rendered (it is left out, and the collector logs it once)."""
        if self._source(state, part) is None:
            return {}
        if part == "snapshot":
            self.renders += 1
        pieces = {}
        fast = part == "snapshot" and self._per_user
        try:
            for family, fam in self._collector.part(name, state, part, users=not fast).items():
                if fam.samples:
                    pieces[family] = Piece(_split_header(_render(_Families([fam]), openmetrics))[1])
            if fast and state.snapshot is not None and state.snapshot.by_user:
                for family, text in zip(USER_FAMILIES, self._collector.user_samples(name, state.snapshot)):
                    pieces[family] = Piece(text)
        except Exception as exc:  # noqa: BLE001 - logged by render_failed; one cluster must not fail /metrics
            self._collector.render_failed(name, part, exc)
            return {}
        self._collector.rendered(name, part)
        return pieces

    def _part(self, name: str, state: ClusterState, part: str, openmetrics: bool) -> dict[str, Piece]:
        pieces = self._cached(name, state, part, openmetrics)
        if pieces is None:
            pieces = self._rendered(name, state, part, openmetrics)
            self._pieces[(name, part, openmetrics)] = (self._source(state, part), pieces)
        return pieces

    def prepare(self, state: ClusterState) -> None:
        """Render a state's changed pieces, in the formats scraped so far, and assemble the job part as it
        will be once the state is published: scrapes go on with the previous state meanwhile and find the
        new one ready. Called by the publishing thread, just before it publishes ``state``; never raises
        (a failure here is logged, with its traceback the first time only, and the first scrape renders what
        is missing)."""
        try:
            self._prepare(state)
        except Exception:
            if state.name in self._prepare_failing:
                log.debug("cluster %s: rendering ahead of the scrapes failed again", state.name, exc_info=True)
            else:
                self._prepare_failing.add(state.name)
                log.exception("cluster %s: rendering for /metrics ahead of the scrapes failed", state.name)
        else:
            self._prepare_failing.discard(state.name)

    def _prepare(self, state: ClusterState) -> None:
        for openmetrics in tuple(self._formats):
            for part in PARTS:
                if self._cached(state.name, state, part, openmetrics) is None:
                    pieces = self._rendered(state.name, state, part, openmetrics)
                    with self._lock:
                        self._pieces[(state.name, part, openmetrics)] = (self._source(state, part), pieces)
            states = {**self._store.states(), state.name: state}
            key = self._key(states)
            assembly = self._assemble(states, key, openmetrics)
            with self._lock:
                self._remember(openmetrics, key, states, assembly)

    def _key(self, states: Mapping[str, ClusterState]) -> tuple[tuple[int, bool, bool], ...]:
        """What the job part depends on: each state (by identity) and whether its data and capacity are stale."""
        now = self._clock()
        return tuple(
            (
                id(state),
                state.snapshot is not None and now >= state.snapshot.expires_at,
                state.capacity is not None and now >= state.capacity.expires_at,
            )
            for state in states.values()
        )

    def _assemble(self, states: Mapping[str, ClusterState], key: tuple[Any, ...], openmetrics: bool) -> _Assembly:
        self.assemblies += 1
        static, heads = self._heads(openmetrics)
        parts = []
        for (_, job_data_stale, capacity_stale), (name, state) in zip(key, states.items()):
            pieces = {}
            for part in PARTS:
                pieces.update(self._part(name, state, part, openmetrics))
            if job_data_stale:
                pieces = {f: p for f, p in pieces.items() if f not in JOB_DATA_FAMILIES}
            if capacity_stale:
                pieces = {f: p for f, p in pieces.items() if f not in CAPACITY_FAMILIES}
            parts.append(pieces)
        ordered = [static]
        for family in self._names:
            ordered.append(heads[family])
            ordered.extend(p[family] for p in parts if family in p)
        return _Assembly(ordered)

    def _remember(
        self, openmetrics: bool, key: tuple[Any, ...], states: Mapping[str, ClusterState], assembly: _Assembly
    ) -> None:
        """Keep an assembly (the newest two per format; the states keep the ids in the key valid)."""
        kept = self._assembled.setdefault(openmetrics, {})
        kept[key] = (states, assembly)
        while len(kept) > 2:
            del kept[next(iter(kept))]
        for gone in [k for k in list(self._pieces) if k[0] not in states]:  # list(): one step, safe from prepare
            self._pieces.pop(gone, None)

    def _job_part(self, openmetrics: bool) -> _Assembly:
        states = self._store.states()
        key = self._key(states)
        found = self._assembled.get(openmetrics, {}).get(key)
        if found is not None:
            return found[1]
        assembly = self._assemble(states, key, openmetrics)
        self._remember(openmetrics, key, states, assembly)
        return assembly

    def _live_text(self, openmetrics: bool, version: int | None) -> bytes:
        if version is not None:
            cached = self._live_cache.get(openmetrics)
            if cached is not None and cached[0] == version:
                return cached[1]
        live = _render(self._live, openmetrics) + (EOF_LINE if openmetrics else b"")  # the live part ends it all
        if version is not None:
            self._live_cache[openmetrics] = (version, live)  # as of ``version`` or later: read before rendering
        return live

    def render(self, openmetrics: bool, compressed: bool) -> bytes:
        """The whole exposition: the cached job part, then the live part (cached while it does not change)."""
        version = self._live_version() if self._live_version is not None else None
        with self._lock:  # one render per change, however many scrapes arrive at once
            self._formats.add(openmetrics)
            job = self._job_part(openmetrics)
            if compressed and version is not None:
                done = self._gzipped.get(openmetrics)
                if done is not None and done[0] is job and done[1] == version:
                    return done[2]
        live = self._live_text(openmetrics, version)
        if not compressed:
            return job.plain + live
        tail = zlib.compressobj(1, zlib.DEFLATED, -zlib.MAX_WBITS)
        size = (job.size + len(live)) & 0xFFFFFFFF
        trailer = struct.pack("<II", zlib.crc32(live, job.crc), size)
        body = GZIP_HEADER + job.deflated + tail.compress(live) + tail.flush() + trailer
        if version is not None:
            with self._lock:
                self._gzipped[openmetrics] = (job, version, body)
        return body
