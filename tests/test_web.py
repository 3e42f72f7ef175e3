"""The HTTP endpoints over a real socket: /metrics (text, OpenMetrics, gzip), /, /healthz, 404, parallel scrapes."""

from __future__ import annotations

import gzip
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from exporter.state import ClusterState, StateStore
from exporter.web import WebServer, make_app


@pytest.fixture
def store() -> StateStore:
    s = StateStore(["kunshan", "<wuxi>"])
    s.publish(ClusterState("kunshan", True, 1_700_000_000.0, 1.0, None, None))
    s.publish(ClusterState("<wuxi>", False, None, 2.0, "timeout", None))
    return s


@pytest.fixture
def served(store: StateStore) -> Iterator[tuple[str, CollectorRegistry]]:
    registry = CollectorRegistry()
    server = WebServer(make_app(registry, store), "127.0.0.1", 0)
    server.start()
    try:
        yield f"http://127.0.0.1:{server.port}", registry
    finally:
        server.stop()


class Fixed(Collector):
    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily("sugon_test_value", "A test gauge.", value=42)


def test_metrics_is_served_as_text(served: tuple[str, CollectorRegistry]) -> None:
    url, registry = served
    registry.register(Fixed())
    r = httpx.get(url + "/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    assert "sugon_test_value 42.0" in r.text


def test_metrics_speaks_openmetrics_when_asked(served: tuple[str, CollectorRegistry]) -> None:
    url, registry = served
    registry.register(Fixed())
    r = httpx.get(url + "/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"})
    assert r.headers["content-type"].startswith("application/openmetrics-text")
    assert r.text.rstrip().endswith("# EOF")


def test_metrics_is_gzipped_when_accepted(served: tuple[str, CollectorRegistry]) -> None:
    url, registry = served
    registry.register(Fixed())
    with httpx.Client() as c:
        r = c.get(url + "/metrics", headers={"Accept-Encoding": "gzip"})
        raw = c.send(c.build_request("GET", url + "/metrics", headers={"Accept-Encoding": "gzip"}), stream=True)
        body = b"".join(raw.iter_raw())
    assert r.headers["content-encoding"] == "gzip"
    assert b"sugon_test_value 42.0" in gzip.decompress(body)


def test_healthz_index_and_404(served: tuple[str, CollectorRegistry]) -> None:
    url, _ = served
    assert httpx.get(url + "/healthz").status_code == 200
    index = httpx.get(url + "/")
    assert index.status_code == 200 and "text/html" in index.headers["content-type"]
    assert "kunshan" in index.text and "up" in index.text
    assert "&lt;wuxi&gt;" in index.text and "down (timeout)" in index.text and "<wuxi>" not in index.text
    assert 'href="metrics"' in index.text
    assert httpx.get(url + "/nope").status_code == 404


def test_concurrent_scrapes_are_served_in_parallel(served: tuple[str, CollectorRegistry]) -> None:
    """Each scrape waits in collect() for the other: a server that answers one at a time would time out."""
    url, registry = served
    barrier = threading.Barrier(2, timeout=5)

    class Rendezvous(Collector):
        def collect(self) -> Iterator[Metric]:
            barrier.wait()
            yield GaugeMetricFamily("sugon_test_value", "A test gauge.", value=1)

    registry.register(Rendezvous())
    with ThreadPoolExecutor(2) as pool:
        codes = list(pool.map(lambda _: httpx.get(url + "/metrics", timeout=10).status_code, range(2)))
    assert codes == [200, 200]
