"""exporter.serving.runtime against what it replaces: client_python's ProcessCollector and GCCollector, over the
stand-in /proc and over this very process, and its own text against generate_latest of its own families."""

from __future__ import annotations

import gc
import math
import os
import resource
import shutil
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, GCCollector, ProcessCollector, generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics
from prometheus_client.parser import text_string_to_metric_families

from exporter.serving.runtime import ProcessFigures, ProcessReader, RuntimeCollector
from tests.helpers import FIXED_GC, PROC, PROC_CPU_SECONDS, PROC_MAX_FDS

EOF_LINE = b"# EOF\n"


def library_text(*collectors: Any, openmetrics: bool) -> bytes:
    """What client_python renders of ``collectors``, without OpenMetrics' EOF line."""
    registry = CollectorRegistry()
    for collector in collectors:
        registry.register(collector)
    if openmetrics:
        text: bytes = generate_openmetrics(registry)  # type: ignore[no-untyped-call]
        return text.removesuffix(EOF_LINE)
    return generate_latest(registry)


@pytest.fixture
def proc(tmp_path: Path) -> Path:
    """The stand-in /proc, its statm written for this machine's page size (statm counts pages)."""
    root = tmp_path / "proc"
    shutil.copytree(PROC, root)
    (root / "4242" / "statm").write_text(f"{524_288_000 // resource.getpagesize()} 25600 1687 1 0 2019 0\n")
    return root


@pytest.mark.parametrize("openmetrics", [False, True])
def test_over_the_stand_in_proc_the_text_is_byte_for_byte_the_library_collectors(
    proc: Path, openmetrics: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same families, HELP, TYPE, order and values as ProcessCollector and GCCollector, given the same
    process: the fixture's stat and limits for the library, its statm and fd/ (and the CPU time and limit
    that stat and limits hold) for ours."""
    monkeypatch.setattr(gc, "get_stats", lambda: FIXED_GC)
    library = library_text(
        ProcessCollector(pid=lambda: 4242, proc=str(proc), registry=None),
        GCCollector(registry=CollectorRegistry()),
        openmetrics=openmetrics,
    )
    reader = ProcessReader(str(proc), "4242", cpu=lambda: PROC_CPU_SECONDS, limit=lambda: PROC_MAX_FDS)
    ours = RuntimeCollector(reader.read, gc_stats=lambda: FIXED_GC)
    assert ours.text(openmetrics) == library
    assert library_text(ours, openmetrics=openmetrics) == library  # collect() too, for name[] and --once
    ticks, page = os.sysconf("SC_CLK_TCK"), resource.getpagesize()
    text = library_text(ProcessCollector(pid=lambda: 4242, proc=str(proc), registry=None), openmetrics=False)
    assert live_values(text) == {  # checked by hand against the fixture (tests/fixtures/proc/README)
        "process_virtual_memory_bytes": 524_288_000.0,
        "process_resident_memory_bytes": 25600.0 * page,
        "process_start_time_seconds": 1_700_000_000 + 50000 / ticks,
        "process_cpu_seconds_total": 1800 / ticks,
        "process_open_fds": 4.0,
        "process_max_fds": 1024.0,
    }
    assert b'python_gc_objects_uncollectable_total{generation="2"} 2.0\n' in library


def live_values(text: bytes) -> dict[str, float]:
    """Every unlabelled sample of a text-format rendering."""
    return {s.name: s.value for f in text_string_to_metric_families(text.decode()) for s in f.samples if not s.labels}


def test_on_this_process_the_figures_are_the_library_collectors() -> None:
    """Read one after the other, ours bracket the library's CPU time, and memory and fds agree closely (other
    threads of the test run may allocate or open files in between)."""
    ours = RuntimeCollector()
    before = live_values(ours.text(False))
    library = live_values(library_text(ProcessCollector(registry=None), openmetrics=False))
    after = live_values(ours.text(False))
    assert before.keys() == library.keys() == after.keys()
    assert before["process_cpu_seconds_total"] <= library["process_cpu_seconds_total"]
    assert library["process_cpu_seconds_total"] <= after["process_cpu_seconds_total"]
    assert before["process_start_time_seconds"] == library["process_start_time_seconds"]
    assert before["process_max_fds"] == library["process_max_fds"] == resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    for name in ("process_virtual_memory_bytes", "process_resident_memory_bytes"):
        assert math.isclose(before[name], library[name], rel_tol=0.05)
    assert abs(before["process_open_fds"] - library["process_open_fds"]) <= 2


def test_without_proc_only_the_gc_figures_are_shown_as_the_library_does(tmp_path: Path) -> None:
    missing = str(tmp_path / "no-proc")
    assert library_text(ProcessCollector(proc=missing, registry=None), openmetrics=False) == b""
    ours = RuntimeCollector(ProcessReader(missing).read, gc_stats=lambda: FIXED_GC)
    assert ours.text(False).startswith(b"# HELP python_gc_objects_collected_total ")
    assert b"process_" not in ours.text(True)
    assert [f.name for f in ours.collect()] == [
        "python_gc_objects_collected",
        "python_gc_objects_uncollectable",
        "python_gc_collections",
    ]


@pytest.mark.parametrize("statm", ["", "garbage here\n", "12\n"])
def test_an_unreadable_statm_leaves_the_process_figures_out_never_invents_them(proc: Path, statm: str) -> None:
    reader = ProcessReader(str(proc), "4242")
    assert reader.read() is not None
    (proc / "4242" / "statm").write_text(statm)  # read again through the descriptor kept open
    assert reader.read() is None
    assert b"process_" not in RuntimeCollector(reader.read, gc_stats=lambda: FIXED_GC).text(False)


finite = st.floats(allow_nan=False, allow_infinity=False, min_value=0)
figures = st.builds(ProcessFigures, finite, finite, finite, finite, finite, st.one_of(finite, st.just(math.inf)))
generation = st.fixed_dictionaries(
    {key: st.integers(0, 2**62) for key in ("collections", "collected", "uncollectable")}
)


@given(figures, st.lists(generation, min_size=0, max_size=4), st.booleans())
def test_the_text_is_what_generate_latest_makes_of_the_collectors_own_families(
    values: ProcessFigures, stats: list[dict[str, int]], openmetrics: bool
) -> None:
    """The templates against the library's rendering of collect(), for any figures and any number of GC
    generations."""
    ours = RuntimeCollector(lambda: values, gc_stats=lambda: stats)
    assert ours.text(openmetrics) == library_text(ours, openmetrics=openmetrics)
