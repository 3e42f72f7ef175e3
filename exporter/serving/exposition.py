"""/metrics rendered per cluster and per change, not per scrape.

The job families change only when a poller publishes (or data crosses max_staleness), and with per-user
families they are large and slow to render. So each part of a cluster's state (StatePart) is rendered once
per change, one text per family, in each format scraped so far, kept plain and deflated (PrecompressedText),
by the publishing thread before the state becomes visible (render_ahead, the store's before_publish hook).
Every family's texts, cluster after cluster, behind the family's HELP and TYPE, make the cached text: the
bytes prometheus-client renders for the whole registry, but a publish re-renders only its own cluster. Data
past max_staleness only leaves texts out.

After them come the live text (the exporter's own counters: small, re-rendered when they change) and the
runtime text (the process's CPU, memory, fds and GC, which change all the time: rendered afresh for a scrape
unless another scrape rendered it less than RUNTIME_MAX_AGE ago, so that a flood of scrapes costs no more
than before; see bench/RESULTS.md, issue 16).

gzip: each text is deflated on its own up to a sync flush, so deflated texts join into one deflate stream;
a scrape appends the runtime text with the final block and the gzip trailer. The result is one ordinary
gzip stream, sent in parts that are never joined: the header, the cached text deflated (one bytes object
while the job data stays the same), the live text deflated, and the end of the stream, so that neither a
new runtime rendering nor a change of the exporter's own counters copies the megabytes before it, and
scrapes that are slow to take their answer share them (bench/RESULTS.md, issues 16 and 23). Plain text goes
out in parts likewise.
"""

from __future__ import annotations

import logging
import struct
import threading
import time
import zlib
from collections.abc import Callable, Collection, Iterable, Mapping
from typing import Any, NamedTuple

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics
from prometheus_client.registry import Collector

from exporter.model import ClusterState
from exporter.serving.families import USER_FAMILIES, ClusterFamilies, StatePart, stale_families
from exporter.serving.runtime import RuntimeCollector

log = logging.getLogger(__name__)
EOF_LINE = b"# EOF\n"
# How long the runtime text may be reused: far below any scrape interval and the time a scrape of the job
# data takes, so never stale to Prometheus, yet a flood of scrapes renders it at most ten times a second.
RUNTIME_MAX_AGE = 0.1
GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"  # no name, no mtime, unknown OS
# What the cached text depends on: per cluster, its state (by identity) and the families it has gone stale in.
_Key = tuple[tuple[int, frozenset[str]], ...]
# The names of a job family's samples, after the family's name (families.py gives no _created samples).
_SAMPLE_SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum")}


class _FixedRegistry:
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


def _restricted(source: Collector, names: frozenset[str], openmetrics: bool) -> bytes:
    """What prometheus-client's own name[] filter renders of ``source``."""
    registry = CollectorRegistry(auto_describe=True)  # which names it has: from a collect(), as the daemon's
    registry.register(source)
    return _render(registry.restricted_registry(names), openmetrics)


def _samples_named(text: bytes, names: frozenset[str]) -> bytes:
    """The sample lines of ``text`` whose metric name is one of ``names``."""
    return b"".join(
        line for line in text.splitlines(keepends=True) if line.split(b"{", 1)[0].split(b" ", 1)[0].decode() in names
    )


def _split_header(text: bytes) -> tuple[bytes, bytes]:
    """(the leading comment lines, the samples) of one family's rendering."""
    pos = 0
    while text.startswith(b"#", pos):
        pos = text.index(b"\n", pos) + 1
    return text[:pos], text[pos:]


class PrecompressedText:
    """Some exposition text, and the same deflated up to a sync flush (so that it joins with others')."""

    __slots__ = ("deflated", "text")

    def __init__(self, text: bytes) -> None:
        self.text = text
        compressor = zlib.compressobj(1, zlib.DEFLATED, -zlib.MAX_WBITS)
        self.deflated = compressor.compress(text) + compressor.flush(zlib.Z_SYNC_FLUSH) if text else b""


class _CachedText:
    """What a scrape sends before the live text, in one format: deflated, with the CRC and length the gzip
    trailer needs, and plain, joined when first asked for (Prometheus asks for gzip)."""

    def __init__(self, texts: list[PrecompressedText]) -> None:
        self._texts = texts  # references only: the texts themselves are the cache's
        self._plain: bytes | None = None
        self.deflated = b"".join(t.deflated for t in texts)
        self.size = sum(len(t.text) for t in texts)
        crc = 0
        for t in texts:
            crc = zlib.crc32(t.text, crc)
        self.crc = crc

    @property
    def plain(self) -> bytes:
        plain = self._plain
        if plain is None:  # two scrapes may both join: the same bytes, and no harm
            plain = self._plain = b"".join(t.text for t in self._texts)
        return plain


class _Gzipped(NamedTuple):
    """A gzipped answer in its two parts, and what they were made of."""

    cached: _CachedText
    version: int  # of the live text
    live: PrecompressedText
    prefix: tuple[bytes, bytes, bytes]  # gzip header, the cached text and the live text deflated
    end: bytes  # the runtime text (and EOF)
    last: bytes  # that deflated with the final block, and the gzip trailer


class CachedExposition:
    """The /metrics body of given states: ``static`` (families that never change: build info), the job
    families (cached per cluster and per change), then ``live`` (cached while ``live_version`` stays the
    same; without it, rendered every time), then ``runtime`` (its text in a format, OpenMetrics or not:
    asked again once ``runtime_max_age`` old), as text or OpenMetrics, optionally gzipped; or only the
    samples a scrape names (``render_filtered``)."""

    def __init__(
        self,
        static: CollectorRegistry,
        families: ClusterFamilies,
        live: CollectorRegistry,
        clock: Callable[[], float] = time.time,
        live_version: Callable[[], int] | None = None,
        runtime: RuntimeCollector | None = None,
        runtime_max_age: float = RUNTIME_MAX_AGE,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._static = static
        self._families = families
        self._live = live
        self._clock = clock
        self._live_version = live_version
        self._runtime = runtime
        self._runtime_max_age = runtime_max_age
        self._monotonic = monotonic
        self._ends: dict[bool, tuple[float, bytes]] = {}  # per format: when the runtime text (and EOF) was rendered
        self._order = list(families.empty())  # the families' names, in the exposition's order
        self._lock = threading.Lock()
        # (cluster, part, openmetrics) → (what the part was rendered from, family name → its samples' text)
        self._parts: dict[tuple[str, StatePart, bool], tuple[object, dict[str, PrecompressedText]]] = {}
        self._headers: dict[bool, tuple[PrecompressedText, dict[str, PrecompressedText]]] = {}  # static, HELP/TYPE
        self._cached_texts: dict[bool, dict[_Key, tuple[Mapping[str, ClusterState], _CachedText]]] = {}
        # With live_version: the live text as of a version, and whole gzipped answers, per format.
        self._live_texts: dict[bool, tuple[int, PrecompressedText]] = {}
        self._gzipped: dict[bool, _Gzipped] = {}
        self._formats_scraped: set[bool] = set()  # OpenMetrics or not: rendered ahead in these
        self._failing_ahead: set[str] = set()  # clusters whose last rendering ahead failed (logged once)

    def render(self, states: Mapping[str, ClusterState], openmetrics: bool, compressed: bool) -> bytes:
        """The whole exposition of ``states`` in one piece (see ``render_parts``)."""
        return b"".join(self.render_parts(states, openmetrics, compressed))

    def render_parts(self, states: Mapping[str, ClusterState], openmetrics: bool, compressed: bool) -> list[bytes]:
        """The whole exposition of ``states``: the cached text, the live text, then the runtime text, in parts
        to send one after another. Gzipped, the parts are the gzip header, the cached and the live text
        deflated, and the small end of the stream, so that nothing copies the megabytes of the cached text."""
        version = self._live_version() if self._live_version is not None else None
        kept = None
        with self._lock:  # one rendering per change, however many scrapes arrive at once
            self._formats_scraped.add(openmetrics)
            cached = self._cached_text(states, openmetrics)
            end = self._end_text(openmetrics)
            if compressed and version is not None:
                kept = self._gzipped.get(openmetrics)
                if kept is not None and kept.cached is cached and kept.version == version:
                    if kept.end is end:
                        return [*kept.prefix, kept.last]
                else:
                    kept = None
        if kept is not None:  # the same stream up to the runtime text, live text included
            live, prefix = kept.live, kept.prefix
        else:
            live = self._live_text(openmetrics, version)
            if not compressed:
                return [cached.plain, live.text, end]
            prefix = (GZIP_HEADER, cached.deflated, live.deflated)
        tail = zlib.compressobj(1, zlib.DEFLATED, -zlib.MAX_WBITS)
        size = (cached.size + len(live.text) + len(end)) & 0xFFFFFFFF
        trailer = struct.pack("<II", zlib.crc32(end, zlib.crc32(live.text, cached.crc)), size)
        last = b"".join((tail.compress(end), tail.flush(), trailer))
        if version is not None:
            with self._lock:
                self._gzipped[openmetrics] = _Gzipped(cached, version, live, prefix, end, last)
        return [*prefix, last]

    def _end_text(self, openmetrics: bool) -> bytes:
        """The runtime text and, in OpenMetrics, the EOF line: the same bytes while younger than the max age."""
        now = self._monotonic()
        found = self._ends.get(openmetrics)
        if found is not None and (self._runtime is None or now - found[0] < self._runtime_max_age):
            return found[1]
        runtime = self._runtime.text(openmetrics) if self._runtime is not None else b""
        end = runtime + (EOF_LINE if openmetrics else b"")
        self._ends[openmetrics] = (now, end)
        return end

    def render_filtered(
        self, states: Mapping[str, ClusterState], names: Collection[str], openmetrics: bool
    ) -> list[bytes]:
        """What prometheus-client's name[] filter gives of the whole exposition of ``states``: only the samples
        named in ``names``, each family that has any behind its HELP and TYPE, in parts to send one after
        another. A job family whose every sample is named is sent as cached, never copied; the other parts
        are small and rendered afresh."""
        wanted = frozenset(names)
        with self._lock:
            self._formats_scraped.add(openmetrics)
            key = self._key(states)
            clusters = self._cluster_texts(states, key, openmetrics)
            headers = self._static_and_headers(openmetrics)[1]
        parts = [_restricted(self._static, wanted, openmetrics)]
        for name, empty in self._families.empty().items():
            samples = {empty.name + suffix for suffix in _SAMPLE_SUFFIXES.get(empty.type, ("",))}
            if not samples & wanted:
                continue
            texts = [cluster[name].text for cluster in clusters if name in cluster]
            if not samples <= wanted:
                texts = [text for text in (_samples_named(t, wanted) for t in texts) if text]
            if texts:
                parts += [headers[name].text, *texts]
        parts.append(_restricted(self._live, wanted, openmetrics))
        if self._runtime is not None:
            parts.append(_restricted(self._runtime, wanted, openmetrics))
        if openmetrics:
            parts.append(EOF_LINE)
        return parts

    def render_ahead(self, name: str, states: Mapping[str, ClusterState]) -> None:
        """Before cluster ``name`` publishes ``states``: render what changed, in the formats scraped so far,
        and build the cached text as it will be; scrapes go on with the previous states meanwhile and find
        the new ones ready. Never raises (a failure is logged, with its traceback the first time only, and
        the first scrape renders what is missing)."""
        try:
            for openmetrics in tuple(self._formats_scraped):
                key = self._key(states)
                cached = self._build(states, key, openmetrics)
                with self._lock:
                    self._remember(openmetrics, key, states, cached)
        except Exception:
            if name in self._failing_ahead:
                log.debug(
                    "cluster %s: rendering ahead of the scrapes failed again",
                    name,
                    exc_info=True,
                    extra={"cluster": name},
                )
            else:
                self._failing_ahead.add(name)
                log.exception(
                    "cluster %s: rendering for /metrics ahead of the scrapes failed", name, extra={"cluster": name}
                )
        else:
            self._failing_ahead.discard(name)

    def _cached_text(self, states: Mapping[str, ClusterState], openmetrics: bool) -> _CachedText:
        key = self._key(states)
        found = self._cached_texts.get(openmetrics, {}).get(key)
        if found is not None:
            return found[1]
        cached = self._build(states, key, openmetrics)
        self._remember(openmetrics, key, states, cached)
        return cached

    def _key(self, states: Mapping[str, ClusterState]) -> _Key:
        now = self._clock()
        return tuple((id(state), stale_families(state, now)) for state in states.values())

    def _build(self, states: Mapping[str, ClusterState], key: _Key, openmetrics: bool) -> _CachedText:
        """The cached text of ``states``, from each cluster's parts (rendered now if they changed)."""
        static, headers = self._static_and_headers(openmetrics)
        clusters = self._cluster_texts(states, key, openmetrics)
        ordered = [static]
        for family in self._order:
            ordered.append(headers[family])
            ordered.extend(cluster[family] for cluster in clusters if family in cluster)
        return _CachedText(ordered)

    def _cluster_texts(
        self, states: Mapping[str, ClusterState], key: _Key, openmetrics: bool
    ) -> list[dict[str, PrecompressedText]]:
        """Per cluster: family name → its samples' text, without the families gone stale."""
        clusters = []
        for (_, stale), (name, state) in zip(key, states.items()):
            texts: dict[str, PrecompressedText] = {}
            for part in StatePart:
                texts.update(self._part(name, state, part, openmetrics))
            clusters.append({family: text for family, text in texts.items() if family not in stale})
        return clusters

    def _remember(self, openmetrics: bool, key: _Key, states: Mapping[str, ClusterState], cached: _CachedText) -> None:
        """Keep a cached text (the newest two per format; the states keep the ids in the key valid)."""
        kept = self._cached_texts.setdefault(openmetrics, {})
        kept[key] = (states, cached)
        while len(kept) > 2:
            del kept[next(iter(kept))]
        for gone in [k for k in list(self._parts) if k[0] not in states]:  # list(): one step, safe from render_ahead
            self._parts.pop(gone, None)

    def _part(self, name: str, state: ClusterState, part: StatePart, openmetrics: bool) -> dict[str, PrecompressedText]:
        """One part of a cluster, as one text per family: from the cache while its source is the same."""
        source = part.source(state)
        cached = self._parts.get((name, part, openmetrics))
        if cached is not None and (cached[0] is source or (part is StatePart.HEALTH and cached[0] == source)):
            return cached[1]
        texts = self._render_part(name, state, part, openmetrics) if source is not None else {}
        self._parts[(name, part, openmetrics)] = (source, texts)
        return texts

    def _render_part(
        self, name: str, state: ClusterState, part: StatePart, openmetrics: bool
    ) -> dict[str, PrecompressedText]:
        """One part of a cluster rendered now; none when it cannot be rendered (it is left out, and logged once)."""
        direct = part is StatePart.SNAPSHOT and self._families.per_user  # the user families written directly
        texts = {}
        try:
            for family, fam in self._families.of(name, state, part, users=not direct).items():
                if fam.samples:
                    texts[family] = PrecompressedText(_split_header(_render(_FixedRegistry([fam]), openmetrics))[1])
            if direct and state.snapshot is not None:
                for family, text in zip(USER_FAMILIES, self._families.user_lines(name, state.snapshot)):
                    if text:
                        texts[family] = PrecompressedText(text)
        except Exception as exc:  # noqa: BLE001 - logged by note_failure; one cluster must not fail /metrics
            self._families.note_failure(name, part, exc)
            return {}
        self._families.note_success(name, part)
        return texts

    def _static_and_headers(self, openmetrics: bool) -> tuple[PrecompressedText, dict[str, PrecompressedText]]:
        """The static families' text, and each job family's HELP and TYPE lines."""
        found = self._headers.get(openmetrics)
        if found is None:
            headers = {
                name: PrecompressedText(_split_header(_render(_FixedRegistry([fam]), openmetrics))[0])
                for name, fam in self._families.empty().items()
            }
            found = self._headers[openmetrics] = (PrecompressedText(_render(self._static, openmetrics)), headers)
        return found

    def _live_text(self, openmetrics: bool, version: int | None) -> PrecompressedText:
        if version is not None:
            cached = self._live_texts.get(openmetrics)
            if cached is not None and cached[0] == version:
                return cached[1]
        live = PrecompressedText(_render(self._live, openmetrics))
        if version is not None:
            self._live_texts[openmetrics] = (version, live)  # as of ``version`` or later: read before rendering
        return live
