"""/metrics rendered once per change: identical to a fresh rendering, one gzip stream, re-rendered exactly
when a poll publishes or data goes stale, and the exporter's own counters always current."""

from __future__ import annotations

import gzip
import logging
import zlib
from dataclasses import replace

import httpx
import pytest
from prometheus_client import generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics

from exporter.config import build_config
from exporter.counting.snapshot import SnapshotBuilder
from exporter.model import CapacitySnapshot, ClusterState, QueueCapacity
from exporter.service import Exporter
from exporter.serving.web import WebServer, make_app
from tests.reference import Job, add_job

NOW = 1_700_000_000.0
CAPACITY = {"q0": QueueCapacity(64, 8, 2, None), "q1": QueueCapacity(None, None, 4, 1)}


def rig() -> tuple[Exporter, list[float]]:
    clock = [NOW]
    config = build_config({"clusters": [{"name": "a", "api_url": "https://h:1", "token": "t"}]}, environ={})
    ex = Exporter(config, clock=lambda: clock[0])
    publish(ex, NOW, jobs=3)
    return ex, clock


def publish(ex: Exporter, t: float, jobs: int) -> None:
    b = SnapshotBuilder(per_user=True)
    for i in range(jobs):
        add_job(b, Job(str(i), "debug", f"u{i}", "running", "statR", 2))
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
    observer = ex.metrics.observer("a")
    for _ in range(7):
        observer.request_sent()  # the exporter's own counters change between polls
    assert b'sugon_api_requests_total{hpc_cluster="a"} 7.0' in ex.exposition.render(False, False)
    assert ex.exposition.renders == 1
    publish(ex, NOW + 60, jobs=5)  # a poll publishes
    assert b'status="running"} 5.0' in ex.exposition.render(False, False)
    assert ex.exposition.renders == 2
    clock[0] = NOW + 60 + 300  # the data crosses max_staleness: its pieces are left out, nothing is re-rendered
    assert b"sugon_jobs{" not in ex.exposition.render(False, False)
    assert ex.exposition.render(False, False) == generate_latest(ex.registry)
    assert ex.exposition.renders == 2


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


def test_a_publish_re_renders_only_its_own_cluster_and_every_assembly_equals_a_fresh_rendering() -> None:
    clock = [NOW]
    clusters = [{"name": n, "api_url": "https://h:1", "token": "t"} for n in ("a", "b", "c")]
    ex = Exporter(build_config({"clusters": clusters, "per_user": True}, environ={}), clock=lambda: clock[0])

    def poll(name: str, t: float, jobs: int, up: bool = True) -> None:
        b = SnapshotBuilder(per_user=True)
        for i in range(jobs):
            add_job(b, Job(str(i), f"q{i % 2}", f"u{i % 3}", "queued" if i % 2 else "running", "statR", i, "Priority"))
        snap = b.build(name, t, t + 300, jobs, ["q0", "q1", "idle"])
        ex.store.publish(ClusterState(name, up, t, 1.5, None, snap, CapacitySnapshot(t, t + 100, CAPACITY)))

    def same() -> None:
        for om, fresh in ((False, generate_latest), (True, generate_openmetrics)):
            plain = ex.exposition.render(om, False)
            assert plain == fresh(ex.registry)
            inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
            assert inflate.decompress(ex.exposition.render(om, True)) == plain and inflate.eof
            assert inflate.unused_data == b""

    for i, name in enumerate(("a", "b", "c")):
        poll(name, NOW, 3 + i)
    same()
    assert ex.exposition.renders == 6  # three clusters, two formats
    poll("b", NOW + 30, 7)
    same()
    assert ex.exposition.renders == 8  # b again, in two formats; a and c were not touched
    previous = ex.store.get("c")  # a failed poll: new health, the same snapshot
    ex.store.publish(replace(previous, up=False, last_error="timeout"))
    same()
    assert ex.exposition.renders == 8 and b'sugon_up{hpc_cluster="c"} 0.0' in ex.exposition.render(False, False)
    clock[0] = NOW + 120  # capacity of a and c is stale, b's is not
    same()
    assert b'sugon_queue_cpus{hpc_cluster="b"' in ex.exposition.render(False, False)
    assert b'sugon_queue_cpus{hpc_cluster="a"' not in ex.exposition.render(False, False)
    clock[0] = NOW + 310  # the job data of a and c is stale too
    same()
    assert b'sugon_jobs{hpc_cluster="a"' not in ex.exposition.render(False, False)
    assert b'sugon_jobs{hpc_cluster="b"' in ex.exposition.render(False, False)
    assert ex.exposition.renders == 8


def test_a_publish_renders_ahead_in_the_formats_scraped_so_far() -> None:
    ex, _ = rig()
    assert ex.exposition.renders == 0  # nothing scraped yet: nothing rendered ahead
    ex.exposition.render(True, True)  # OpenMetrics has been asked for
    assert ex.exposition.renders == 1
    assembled = ex.exposition.assemblies
    publish(ex, NOW + 60, jobs=4)
    assert ex.exposition.renders == 2  # rendered by the publishing thread, in OpenMetrics only
    assert ex.exposition.assemblies == assembled + 1  # and put together there too
    assert ex.exposition.render(True, False) == generate_openmetrics(ex.registry)  # type: ignore[no-untyped-call]
    assert (ex.exposition.renders, ex.exposition.assemblies) == (2, assembled + 1)  # the scrape found it ready


def test_every_change_of_the_exporters_own_counters_reaches_the_next_scrape() -> None:
    ex, _ = rig()
    observer = ex.metrics.observer("a", logs_in=True)
    changes = [
        lambda: observer.request_sent(),
        lambda: observer.request_failed("timeout"),
        lambda: observer.token_expiry(NOW + 3600),
        lambda: observer.token_expiry(None),
        lambda: observer.token_refresh("login", "success"),
        lambda: ex.metrics.poll_result("a", "failure"),
        lambda: ex.metrics.invalid_rows("a", 3),
    ]
    for change in changes:
        for om in (False, True):
            before = [ex.exposition.render(om, False), gzip.decompress(ex.exposition.render(om, True))]
            assert before[0] == before[1]
        change()
        for om, fresh in ((False, generate_latest), (True, generate_openmetrics)):
            plain = ex.exposition.render(om, False)
            assert plain == fresh(ex.registry)  # type: ignore[operator]
            assert gzip.decompress(ex.exposition.render(om, True)) == plain
    assert ex.exposition.render(True, True) is ex.exposition.render(True, True)  # unchanged: the same answer


HOSTILE = ['q"1', "back\\slash", "new\nline", "ünï 队列", "\\n", 'end\\"', "x" * 256, "sp ace", "=,{}"]


def test_the_per_user_families_written_directly_equal_prometheus_clients_even_with_hostile_labels() -> None:
    ex, _ = rig()
    b = SnapshotBuilder(per_user=True)
    for i, (queue, user) in enumerate((q, u) for q in HOSTILE for u in HOSTILE):
        add_job(b, Job(str(i), queue, user, "running" if i % 3 else "queued", "statR", i * 1_000_003 % 10**7))
    snap = b.build('we"ird\\c', NOW, NOW + 300, 81, ["debug"])
    ex.store.publish(ClusterState("a", True, NOW, 1.0, None, snap))
    assert ex.exposition.render(False, False) == generate_latest(ex.registry)
    assert ex.exposition.render(True, False) == generate_openmetrics(ex.registry)  # type: ignore[no-untyped-call]
    assert b"e+06" in ex.exposition.render(False, False)  # large values are written as Go writes them


def test_a_failure_rendering_ahead_never_stops_a_publish(caplog: pytest.LogCaptureFixture) -> None:
    ex, _ = rig()
    ex.exposition.render(False, False)

    def broken(*args: object) -> None:
        raise RuntimeError("a bug while rendering")

    ex.exposition._rendered = broken  # type: ignore[assignment,method-assign]
    publish(ex, NOW + 60, jobs=4)  # the poller's publish goes through
    assert ex.store.get("a").snapshot is not None and ex.store.get("a").snapshot.job_count == 4  # type: ignore[union-attr]
    assert "rendering for /metrics ahead of the scrapes failed" in caplog.text
    publish(ex, NOW + 120, jobs=5)  # and again: no second traceback
    assert [r.exc_info is not None for r in caplog.records if r.levelno >= logging.WARNING] == [True]


def test_a_cluster_that_cannot_be_rendered_is_left_out_and_logged_once_while_every_other_is_served(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A value no float holds (here a CPU sum that slipped past the bounds on parsing) used to fail /metrics
    with a 500 for every cluster, on every scrape."""
    caplog.set_level(logging.INFO, logger="exporter.serving.collector")
    config = build_config({"clusters": [{"name": n, "api_url": "https://h:1", "token": "t"} for n in "ab"]}, {})
    ex = Exporter(config, clock=lambda: NOW)

    def poll(name: str, cpus: int, t: float = NOW) -> None:
        b = SnapshotBuilder(per_user=True)
        add_job(b, Job("1", "debug", "alice", "running", "statR", cpus))
        ex.store.publish(ClusterState(name, True, t, 1.0, None, b.build(name, t, t + 300, 1, ["debug"])))

    poll("a", 10**400)
    poll("b", 8)
    server = WebServer(make_app(ex.registry, ex.store, None, ex.exposition), "127.0.0.1", 0)
    server.start()
    try:
        url = f"http://127.0.0.1:{server.port}/metrics"
        for params in ({}, {"name[]": "sugon_job_cpus"}):  # the cached pieces, and collect() behind a name filter
            for _ in range(3):
                answer = httpx.get(url, params=params, headers={"Accept-Encoding": "identity"})
                assert answer.status_code == 200
                assert 'sugon_job_cpus{hpc_cluster="b",queue="debug",status="running"} 8.0' in answer.text
                assert 'sugon_job_cpus{hpc_cluster="a"' not in answer.text
        assert 'sugon_up{hpc_cluster="a"} 1.0' in httpx.get(url).text  # its health is its own part: still there
        poll("a", 10**400, NOW + 60)  # the next poll is no better: nothing new in the log
        assert httpx.get(url).status_code == 200
        assert generate_latest(ex.registry) == ex.exposition.render(False, False)
        assert caplog.text.count("cannot be rendered") == 1
        assert "cluster a: its job data cannot be rendered (OverflowError" in caplog.text
        poll("a", 4, NOW + 120)  # a poll that renders again
        assert 'sugon_job_cpus{hpc_cluster="a",queue="debug",status="running"} 4.0' in httpx.get(url).text
        assert "cluster a: its job data render again" in caplog.text
    finally:
        server.stop()
