"""The process and GC figures of client_python's ProcessCollector and GCCollector, rendered cheaply for every
scrape: the same families, HELP, TYPE and values, read with a few system calls instead of parsing /proc.

Why not the library's collectors at each scrape: under a flood of scrapes each of their renderings (three
/proc files read and parsed, a directory listed entry by entry, generate_latest) held up the other scrapes
enough to raise the paced p99 by about half (bench/RESULTS.md, issue 16). Here the CPU time comes from
times(2), the memory from /proc/self/statm on a descriptor kept open, the descriptor limit from
getrlimit(2), the start time once, and the text from two templates filled in with the values.

    process_resident_memory_bytes 2.3523328e+07
    python_gc_collections_total{generation="0"} 40.0
"""

from __future__ import annotations

import gc
import io
import os
import resource
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

_PAGESIZE = resource.getpagesize()
_go_float: Callable[[float], str] = floatToGoString  # the number format of generate_latest


@dataclass(frozen=True)
class ProcessFigures:
    """One reading of the process: what ProcessCollector reports, in its units."""

    virtual_memory_bytes: float
    resident_memory_bytes: float
    start_time_seconds: float
    cpu_seconds_total: float
    open_fds: float
    max_fds: float


# (family, HELP, TYPE) in ProcessCollector's order; counters' OpenMetrics family names lose "_total".
_PROCESS = (
    ("process_virtual_memory_bytes", "Virtual memory size in bytes.", "gauge"),
    ("process_resident_memory_bytes", "Resident memory size in bytes.", "gauge"),
    ("process_start_time_seconds", "Start time of the process since unix epoch in seconds.", "gauge"),
    ("process_cpu_seconds_total", "Total user and system CPU time spent in seconds.", "counter"),
    ("process_open_fds", "Number of open file descriptors.", "gauge"),
    ("process_max_fds", "Maximum number of open file descriptors.", "gauge"),
)
_GC = (
    ("python_gc_objects_collected_total", "Objects collected during gc", "collected"),
    ("python_gc_objects_uncollectable_total", "Uncollectable objects found during GC", "uncollectable"),
    ("python_gc_collections_total", "Number of times this generation was collected", "collections"),
)


def _header(name: str, help_text: str, kind: str, openmetrics: bool) -> str:
    family = name.removesuffix("_total") if openmetrics and kind == "counter" else name
    return f"# HELP {family} {help_text}\n# TYPE {family} {kind}\n"


def cpu_seconds() -> float:
    """User and system CPU seconds of the whole process (all threads), from the same clock-tick counts as
    /proc/self/stat's utime and stime."""
    times = os.times()
    return times.user + times.system


def max_fds() -> float:
    """The soft limit on open files, as /proc/self/limits shows it ("Max open files")."""
    limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return float("inf") if limit == resource.RLIM_INFINITY else float(limit)


class ProcessReader:
    """Reads ProcessFigures of a process from ``proc`` (Linux); ``read()`` returns None where it cannot.
    The CPU time and the descriptor limit are this process's own (``cpu`` and ``limit``): system calls that
    need no file."""

    def __init__(
        self,
        proc: str = "/proc",
        pid: str = "self",
        cpu: Callable[[], float] = cpu_seconds,
        limit: Callable[[], float] = max_fds,
    ) -> None:
        self._fd_dir = os.path.join(proc, pid, "fd")
        self._cpu = cpu
        self._limit = limit
        self._statm: io.FileIO | None = None  # closed with the reader
        self._start = 0.0
        try:
            ticks = os.sysconf("SC_CLK_TCK")
            with open(os.path.join(proc, "stat"), "rb") as stat:
                btime = next(float(line.split()[1]) for line in stat if line.startswith(b"btime "))
            with open(os.path.join(proc, pid, "stat"), "rb") as own:
                fields = own.read().rpartition(b")")[2].split()
            self._start = float(fields[19]) / ticks + btime
            self._statm = io.FileIO(os.path.join(proc, pid, "statm"))
        except (OSError, ValueError, StopIteration, IndexError):
            self._statm = None  # no /proc here: no process figures, as ProcessCollector has none

    def read(self) -> ProcessFigures | None:
        """The figures now: one pread of statm (kept open) and one listing of the fd directory."""
        if self._statm is None:
            return None
        try:
            size, resident = os.pread(self._statm.fileno(), 256, 0).split()[:2]
            open_fds = len(os.listdir(self._fd_dir))
            return ProcessFigures(
                float(int(size) * _PAGESIZE),
                float(int(resident) * _PAGESIZE),
                self._start,
                self._cpu(),
                float(open_fds),
                self._limit(),
            )
        except (OSError, ValueError):
            return None


class RuntimeCollector(Collector):
    """process_* and python_gc_*, as a collector (for name[] filters and --once) and as exposition text in
    either format (``text``, for each scrape of the cached exposition)."""

    def __init__(
        self,
        process: Callable[[], ProcessFigures | None] | None = None,
        gc_stats: Callable[[], list[dict[str, Any]]] = gc.get_stats,
    ) -> None:
        self._process = process if process is not None else ProcessReader().read
        self._gc_stats = gc_stats
        # (openmetrics, generations) → the GC part as a format string; the process part per format
        self._gc_templates: dict[tuple[bool, int], str] = {}
        self._process_templates = {
            openmetrics: "".join(_header(*family, openmetrics) + family[0] + " {}\n" for family in _PROCESS)
            for openmetrics in (False, True)
        }

    def text(self, openmetrics: bool) -> bytes:
        """The exposition text of the figures now: byte for byte what generate_latest makes of collect()."""
        figures = self._process()
        stats = self._gc_stats()
        parts = []
        if figures is not None:
            values = map(_go_float, _values(figures))
            parts.append(self._process_templates[openmetrics].format(*values))
        key = (openmetrics, len(stats))
        template = self._gc_templates.get(key)
        if template is None:
            template = self._gc_templates[key] = _gc_template(openmetrics, len(stats))
        parts.append(template.format(*({k: _go_float(v) for k, v in stat.items()} for stat in stats)))
        return "".join(parts).encode()

    def collect(self) -> Iterator[Metric]:
        figures = self._process()
        if figures is not None:
            for (name, help_text, kind), value in zip(_PROCESS, _values(figures)):
                family = CounterMetricFamily if kind == "counter" else GaugeMetricFamily
                yield family(name, help_text, value=value)
        stats = self._gc_stats()
        for name, help_text, key in _GC:
            counter = CounterMetricFamily(name, help_text, labels=["generation"])
            for generation, stat in enumerate(stats):
                counter.add_metric([str(generation)], stat[key])
            yield counter


def _gc_template(openmetrics: bool, generations: int) -> str:
    """The GC families as a format string over one mapping per generation."""
    return "".join(
        _header(name, help_text, "counter", openmetrics)
        + "".join(f'{name}{{{{generation="{g}"}}}} {{{g}[{key}]}}\n' for g in range(generations))
        for name, help_text, key in _GC
    )


def _values(figures: ProcessFigures) -> tuple[float, ...]:
    return (
        figures.virtual_memory_bytes,
        figures.resident_memory_bytes,
        figures.start_time_seconds,
        figures.cpu_seconds_total,
        figures.open_fds,
        figures.max_fds,
    )
