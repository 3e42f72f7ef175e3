"""/metrics rendered once per change: identical to a fresh rendering, one gzip stream, re-rendered exactly
when a poll publishes or data goes stale, and the exporter's own counters always current."""

from __future__ import annotations

import gzip
import zlib

import httpx
from prometheus_client import generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics

from exporter.config import build_config
from exporter.jobs import Job
from exporter.service import Exporter
from exporter.snapshot import SnapshotBuilder
from exporter.state import ClusterState
from exporter.web import WebServer, make_app

NOW = 1_700_000_000.0


def rig() -> tuple[Exporter, list[float]]:
    clock = [NOW]
    config = build_config({"clusters": [{"name": "a", "api_url": "https://h:1", "token": "t"}]}, environ={})
    ex = Exporter(config, clock=lambda: clock[0])
    publish(ex, NOW, jobs=3)
    return ex, clock


def publish(ex: Exporter, t: float, jobs: int) -> None:
    b = SnapshotBuilder(per_user=True)
    for i in range(jobs):
        b.add(Job(str(i), "debug", f"u{i}", "running", "statR", 2))
    ex.store.publish(ClusterState("a", True, t, 1.0, None, b.build("a", t, t + 300, jobs, ["debug"])))


def test_the_cached_rendering_is_byte_for_byte_a_fresh_rendering() -> None:
    ex, _ = rig()
    assert ex.exposition.render(False, False) == generate_latest(ex.registry)
    assert ex.exposition.render(True, False) == generate_openmetrics(ex.registry)  # type: ignore[no-untyped-call]


def test_gzip_is_one_stream_that_decompresses_to_the_plain_rendering() -> None:
    ex, _ = rig()
    body = ex.exposition.render(False, True)
    inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
    assert inflate.decompress(body) == ex.exposition.render(False, False)
    assert inflate.eof and inflate.unused_data == b""  # a single member: every gzip client reads it whole
    assert gzip.decompress(ex.exposition.render(True, True)) == ex.exposition.render(True, False)


def test_the_job_part_is_rendered_once_per_change_and_the_counters_stay_live() -> None:
    ex, clock = rig()
    for _ in range(5):
        ex.exposition.render(False, False)
        ex.exposition.render(False, True)
    assert ex.exposition.renders == 1
    ex.metrics.requests.labels("a").inc(7)  # the exporter's own counters change between polls
    assert b'sugon_api_requests_total{hpc_cluster="a"} 7.0' in ex.exposition.render(False, False)
    assert ex.exposition.renders == 1
    publish(ex, NOW + 60, jobs=5)  # a poll publishes
    assert b'status="running"} 5.0' in ex.exposition.render(False, False)
    assert ex.exposition.renders == 2
    clock[0] = NOW + 60 + 300  # the data crosses max_staleness
    assert b"sugon_jobs{" not in ex.exposition.render(False, False)
    assert ex.exposition.renders == 3


def test_the_server_uses_the_cache_and_a_name_filter_falls_back() -> None:
    ex, _ = rig()
    server = WebServer(make_app(ex.registry, ex.store, None, ex.exposition), "127.0.0.1", 0)
    server.start()
    try:
        url = f"http://127.0.0.1:{server.port}/metrics"
        plain = httpx.get(url, headers={"Accept-Encoding": "identity"})
        assert plain.content == generate_latest(ex.registry)
        assert plain.headers["content-type"].startswith("text/plain")
        zipped = httpx.get(url, headers={"Accept-Encoding": "gzip"})
        assert zipped.headers["content-encoding"] == "gzip" and zipped.content == plain.content
        om = httpx.get(url, headers={"Accept": "application/openmetrics-text; version=1.0.0"})
        assert om.headers["content-type"].startswith("application/openmetrics-text") and om.text.endswith("# EOF\n")
        only = httpx.get(url, params={"name[]": "sugon_up"})
        assert "sugon_up{" in only.text and "sugon_jobs" not in only.text
        assert ex.exposition.renders == 2  # text and OpenMetrics, once each
    finally:
        server.stop()
