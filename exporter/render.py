"""/metrics: every cluster's state, rendered by prometheus-client once per publish, and the process's own
metrics (client_python's collectors), read for each scrape.

Families of one name from several clusters are merged into one, in the order their names first appear:
build information, each cluster's health, job gauges, kept families, capacity and own counters, then the
exporter's reload gauges. A cluster's job gauges (and its capacity) are left out once past max_staleness.
"""

from __future__ import annotations

import gzip
import struct
import threading
import time
import zlib
from collections.abc import Callable, Container, Iterable, Iterator, Mapping
from types import MappingProxyType

from prometheus_client import CollectorRegistry, GCCollector, Info, PlatformCollector, ProcessCollector
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics
from prometheus_client.registry import Collector

from exporter import build_facts
from exporter.model import ClusterState

EOF_LINE = b"# EOF\n"
GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"  # deflate, no name, no time, unknown OS


class _Fixed(Collector):
    """Given families, as a collector (prometheus-client's renderers ask only for collect())."""

    def __init__(self, families: Iterable[Metric]) -> None:
        self._families = list(families)

    def collect(self) -> Iterator[Metric]:
        return iter(self._families)


def _render(families: Iterable[Metric], openmetrics: bool) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Fixed(families))
    if openmetrics:
        text: bytes = generate_openmetrics(registry)  # type: ignore[no-untyped-call]
        return text.removesuffix(EOF_LINE)
    return generate_latest(registry)


def runtime_registry() -> CollectorRegistry:
    """client_python's process and garbage-collector metrics, as every client_python exporter has them."""
    registry = CollectorRegistry(auto_describe=False)
    ProcessCollector(registry=registry)
    GCCollector(registry=registry)
    return registry


def _static_families() -> list[Metric]:
    registry = CollectorRegistry(auto_describe=False)
    Info("sugon_exporter_build", "Version of sugon-exporter; always 1.", registry=registry).info(build_facts())
    PlatformCollector(registry=registry)  # python_info
    return list(registry.collect())


def _health(state: ClusterState) -> list[Metric]:
    name = state.name
    up = GaugeMetricFamily(
        "sugon_up", "1 if the most recent poll of the cluster succeeded, else 0.", labels=["hpc_cluster"]
    )
    last = GaugeMetricFamily(
        "sugon_last_success_timestamp_seconds", "Unix time of the last successful poll.", labels=["hpc_cluster"]
    )
    duration = GaugeMetricFamily(
        "sugon_poll_duration_seconds", "Wall time of the most recent poll, in seconds.", labels=["hpc_cluster"]
    )
    if state.up is not None:
        up.add_metric([name], 1.0 if state.up else 0.0)
    if state.last_success is not None:
        last.add_metric([name], state.last_success)
    if state.poll_duration is not None:
        duration.add_metric([name], state.poll_duration)
    return [up, last, duration]


def cluster_families(state: ClusterState, now: float) -> list[Metric]:
    """One cluster's families as /metrics serves them at ``now``."""
    families = _health(state)
    if state.jobs is not None and not state.jobs.stale(now):
        families += state.jobs.families
    families += state.kept
    if state.capacity is not None and not state.capacity.stale(now):
        families += state.capacity.families
    return families + list(state.own)


def merged(families: Iterable[Metric]) -> list[Metric]:
    """Families of one name merged into one, in the order their names first appear; empty ones left out."""
    by_name: dict[str, Metric] = {}
    for family in families:
        into = by_name.get(family.name)
        if into is None:
            into = by_name[family.name] = Metric(family.name, family.documentation, family.type)
        into.samples.extend(family.samples)
    return [family for family in by_name.values() if family.samples]


class _All:
    """Every name."""

    def __contains__(self, name: object) -> bool:
        return True


ALL: Container[str] = _All()


class _Prefixes:
    """The family names that samples named ``wanted`` may belong to (a sample's name starts with its family's)."""

    def __init__(self, wanted: Iterable[str]) -> None:
        self._wanted = tuple(wanted)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and any(w.startswith(name) for w in self._wanted)


def _filtered(families: Iterable[Metric], wanted: set[str], openmetrics: bool) -> list[bytes]:
    """The samples of ``families`` named in ``wanted``, rendered; families none of whose samples can be named are
    skipped without looking at their samples."""
    candidates = _Prefixes(wanted)
    selected = []
    for family in families:
        if family.name in candidates:
            samples = [s for s in family.samples if s.name in wanted]
            if samples:
                restricted = Metric(family.name, family.documentation, family.type)
                restricted.samples = samples
                selected.append(restricted)
    return [_render(selected, openmetrics)] if selected else []


class _Text:
    """The families of one rendering, each family's text (a part of every answer, shared by all), and the whole
    deflated up to a sync flush with its CRC and length, as a gzip stream's start."""

    def __init__(self, shown: tuple[object, ...], families: list[Metric], openmetrics: bool) -> None:
        self.shown = shown
        self.families = families
        self.parts = [_render([family], openmetrics) for family in families]
        compressor = zlib.compressobj(1, zlib.DEFLATED, -zlib.MAX_WBITS)
        deflated = [compressor.compress(part) for part in self.parts]
        self.deflated = b"".join([*deflated, compressor.flush(zlib.Z_SYNC_FLUSH)])
        self.crc = 0
        for part in self.parts:
            self.crc = zlib.crc32(part, self.crc)
        self.size = sum(map(len, self.parts))

    def only(self, wanted: set[str], openmetrics: bool) -> list[bytes]:
        """The samples named in ``wanted``: a family's cached text when every sample of it is wanted."""
        candidates = _Prefixes(wanted)
        out: list[bytes] = []
        for family, part in zip(self.families, self.parts):
            if family.name in candidates:
                if {s.name for s in family.samples} <= wanted:
                    out.append(part)
                else:
                    out += _filtered([family], wanted, openmetrics)
        return out


class Exposition:
    """The states of every cluster, and what /metrics serves of them. ``publish`` swaps one cluster's state
    and renders the text ahead (in the publishing thread), so that scrapes find it ready."""

    def __init__(self, clusters: Iterable[str], clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._states: Mapping[str, ClusterState] = MappingProxyType({n: ClusterState(n) for n in clusters})
        self._static = _static_families()
        self._runtime = runtime_registry()
        self._reload = (1.0, clock())
        # Per format (OpenMetrics or not): the states it was rendered from, the rest of what it shows, the text.
        self._texts: dict[bool, _Text] = {}

    def states(self) -> Mapping[str, ClusterState]:
        """A consistent view of every cluster's state at this instant."""
        return self._states

    def get(self, name: str) -> ClusterState:
        """One cluster's current state."""
        return self._states[name]

    def publish(self, state: ClusterState) -> None:
        """Replace one cluster's state (each cluster has a single writer, its poller) and render ahead."""
        with self._lock:
            self._states = MappingProxyType({**self._states, state.name: state})
        self._ahead()

    def set_clusters(self, names: list[str], keep: Iterable[str]) -> None:
        """Make ``names`` the clusters, in that order: those in ``keep`` keep their state, others start afresh (a
        configuration reload); clusters not named leave."""
        keep = set(keep)
        with self._lock:
            states = self._states
            self._states = MappingProxyType(
                {n: states[n] if n in keep and n in states else ClusterState(n) for n in names}
            )
        self._ahead()

    def reload_result(self, ok: bool, now: float) -> None:
        """A configuration reload (or the start) succeeded or failed."""
        with self._lock:
            self._reload = (1.0 if ok else 0.0, now if ok else self._reload[1])
        self._ahead()

    def _ahead(self) -> None:
        for openmetrics in list(self._texts):
            self._text(openmetrics)

    def families(
        self, now: float | None = None, states: Mapping[str, ClusterState] | None = None, names: Container[str] = ALL
    ) -> list[Metric]:
        """Every family /metrics serves of ``states`` (the current ones) but the process's own, as at ``now``;
        only those whose names are in ``names``."""
        now = self._clock() if now is None else now
        states = self._states if states is None else states
        clusters = [f for state in states.values() for f in cluster_families(state, now) if f.name in names]
        ok = GaugeMetricFamily(
            "sugon_config_last_reload_successful",
            "1 if the last configuration reload (SIGHUP) succeeded, else 0; 1 from the start.",
            value=self._reload[0],
        )
        at = GaugeMetricFamily(
            "sugon_config_last_reload_success_timestamp_seconds",
            "Unix time of the last successful configuration reload, or of the start.",
            value=self._reload[1],
        )
        return [f for f in (*self._static, *merged(clusters), ok, at) if f.name in names]

    def _shown(
        self, now: float
    ) -> tuple[Mapping[str, ClusterState], tuple[float, float], tuple[tuple[bool, bool], ...]]:
        """What the text shows: the states (a new mapping at each publish), the reload gauges, and what is stale."""
        states = self._states
        stale = tuple(
            (s.jobs is not None and s.jobs.stale(now), s.capacity is not None and s.capacity.stale(now))
            for s in states.values()
        )
        return states, self._reload, stale

    def ready(self, openmetrics: bool = False) -> bool:
        """Whether the text of this format is rendered for what /metrics shows now (a scrape then renders
        only the process's own metrics)."""
        found, shown = self._texts.get(openmetrics), self._shown(self._clock())
        return found is not None and found.shown[0] is shown[0] and found.shown[1:] == shown[1:]

    def _text(self, openmetrics: bool) -> _Text:
        """The text of everything but the process's own metrics, rendered again only when what it shows changed."""
        now = self._clock()
        shown = self._shown(now)
        found = self._texts.get(openmetrics)
        if found is not None and found.shown[0] is shown[0] and found.shown[1:] == shown[1:]:
            return found
        text = self._texts[openmetrics] = _Text(shown, self.families(now, shown[0]), openmetrics)
        return text

    def body(self, openmetrics: bool = False, compressed: bool = False, names: Iterable[str] = ()) -> list[bytes]:
        """The /metrics answer, in parts to send one after another: the cached text, then the process's own
        metrics read now (and the EOF line in OpenMetrics); gzipped when ``compressed``. With ``names``
        (``name[]``) only the samples named, as prometheus-client's own filter gives them."""
        cached = self._text(openmetrics)
        live = _render(self._runtime.collect(), openmetrics) + (EOF_LINE if openmetrics else b"")
        if names:
            parts = [
                *cached.only(set(names), openmetrics),
                *_filtered(self._runtime.collect(), set(names), openmetrics),
            ]
            text = b"".join(parts) + (EOF_LINE if openmetrics else b"")
            return [gzip.compress(text, compresslevel=1, mtime=0) if compressed else text]
        if not compressed:
            return [*cached.parts, live]
        # The cached text deflated up to a sync flush, the live text deflated to the end: one deflate stream.
        tail = zlib.compressobj(1, zlib.DEFLATED, -zlib.MAX_WBITS)
        end = tail.compress(live) + tail.flush()
        trailer = struct.pack("<II", zlib.crc32(live, cached.crc), (cached.size + len(live)) & 0xFFFFFFFF)
        return [GZIP_HEADER, cached.deflated, end, trailer]

    def collect(self) -> Iterator[Metric]:
        """Everything /metrics serves, for a registry (``--once``)."""
        yield from self.families()
        yield from self._runtime.collect()
