"""The process and runtime metrics every client_python exporter shows, on a real /metrics of the running web
app (text, OpenMetrics, gzip or not, name[] filters), current at each scrape with no poll in between."""

from __future__ import annotations

import os
import resource
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack

import httpx
import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families as openmetrics_families
from prometheus_client.parser import text_string_to_metric_families

from exporter.config import build_config
from exporter.endpoints import make_app
from exporter.service import Exporter
from exporter.web import WebServer
from tests.helpers import promtool_check_metrics

PROCESS = {
    "process_cpu_seconds_total",
    "process_resident_memory_bytes",
    "process_open_fds",
    "process_max_fds",
    "process_start_time_seconds",
    "process_virtual_memory_bytes",
}
OPENMETRICS = {"Accept": "application/openmetrics-text; version=1.0.0"}


@pytest.fixture
def url() -> Iterator[str]:
    """/metrics of a running exporter (its default per-scrape part: the real process and GC collectors)."""
    config = build_config({"clusters": [{"name": "a", "api_url": "https://h:1", "token": "t"}]}, environ={})
    ex = Exporter(config)
    server = WebServer(make_app(ex.exposition), "127.0.0.1", 0)
    server.start()
    try:
        yield f"http://127.0.0.1:{server.port}/metrics"
    finally:
        server.stop()


def samples(client: httpx.Client, url: str, openmetrics: bool = False, gzip: bool = False) -> dict[str, float]:
    """Every unlabelled sample of one scrape (httpx inflates a gzipped answer)."""
    headers = {"Accept-Encoding": "gzip" if gzip else "identity", **(OPENMETRICS if openmetrics else {})}
    answer = client.get(url, headers=headers)
    assert answer.status_code == 200
    assert answer.headers.get("content-encoding") == ("gzip" if gzip else None)
    parse = openmetrics_families if openmetrics else text_string_to_metric_families
    return {s.name: s.value for f in parse(answer.text) for s in f.samples if not s.labels}


def until(condition: Callable[[], bool], deadline: float = 10.0) -> bool:
    """Ask again until ``condition()`` holds or the deadline passes."""
    stop = time.monotonic() + deadline
    while time.monotonic() < stop:
        if condition():
            return True
        time.sleep(0.02)
    return False


def burn_cpu_until(changed: Callable[[], bool], deadline: float = 30.0) -> bool:
    """Spend CPU in short bursts until ``changed()`` is true or the deadline passes."""
    stop = time.monotonic() + deadline
    while time.monotonic() < stop:
        end = time.process_time() + 0.05
        while time.process_time() < end:
            pass
        if changed():
            return True
    return False


@pytest.mark.parametrize(("openmetrics", "gzip"), [(False, False), (False, True), (True, False), (True, True)])
def test_metrics_carries_the_process_metrics_and_python_info_and_they_change_without_a_poll(
    url: str, openmetrics: bool, gzip: bool
) -> None:
    with httpx.Client() as client:  # one kept-alive connection: the scrapes themselves open no descriptors
        first = samples(client, url, openmetrics, gzip)
        assert PROCESS <= first.keys()
        assert first["process_max_fds"] == resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        assert 0 < first["process_start_time_seconds"] <= time.time()
        assert first["process_resident_memory_bytes"] > 1e6
        python = client.get(url, headers=OPENMETRICS if openmetrics else {}).text
        assert f'python_info{{implementation="CPython",major="{sys.version_info.major}"' in python
        assert "python_gc_collections_total{generation=" in python
        with ExitStack() as files:
            for _ in range(50):
                files.enter_context(open(os.devnull, "rb"))
            # a few may close in other threads meanwhile; the figures may be up to RUNTIME_MAX_AGE old
            fds = first["process_open_fds"]
            assert until(lambda: samples(client, url, openmetrics, gzip)["process_open_fds"] >= fds + 50 - 5)
        cpu = first["process_cpu_seconds_total"]
        assert burn_cpu_until(lambda: samples(client, url, openmetrics, gzip)["process_cpu_seconds_total"] > cpu)


def test_a_name_filter_and_the_registry_have_the_process_metrics_too(url: str) -> None:
    """name[] scrapes and --once render from exporter.registry, not from the cached exposition."""
    only = httpx.get(url, params={"name[]": ["process_resident_memory_bytes", "python_info"]}).text
    names = {f.name for f in text_string_to_metric_families(only)}
    assert names == {"process_resident_memory_bytes", "python_info"}


def test_the_registry_that_once_prints_has_the_process_metrics() -> None:
    config = build_config({"clusters": [{"name": "a", "api_url": "https://h:1", "token": "t"}]}, environ={})
    registry = Exporter(config).registry
    assert all(registry.get_sample_value(name) is not None for name in PROCESS)
    assert registry.get_sample_value("python_gc_collections_total", {"generation": "0"}) is not None


def test_the_whole_exposition_with_the_process_metrics_passes_promtool(url: str) -> None:
    """promtool reads the text format (not OpenMetrics); the OpenMetrics answer is read by client_python's
    strict OpenMetrics parser in the test above."""
    text = httpx.get(url).text
    assert "process_cpu_seconds_total" in text and "python_gc_objects_collected_total" in text
    result = promtool_check_metrics(text)
    assert result.returncode == 0, result.stdout + result.stderr
