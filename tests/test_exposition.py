"""/metrics rendered once per change: identical to a fresh rendering, one gzip stream, rendered by the
publisher in the formats scraped so far, stale data left out, and the exporter's own counters always current."""

from __future__ import annotations

import gzip
import logging
import os
import resource
import zlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import replace

import httpx
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics
from prometheus_client.openmetrics.parser import text_string_to_metric_families as openmetrics_families
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from exporter.config import build_config
from exporter.counting.snapshot import SnapshotBuilder
from exporter.endpoints import make_app
from exporter.model import Activity, CapacitySnapshot, ClusterSnapshot, ClusterState, QueueCapacity, RunTimeHistogram
from exporter.service import Exporter
from exporter.serving.collector import JobCollector
from exporter.serving.exposition import CachedExposition
from exporter.serving.families import ClusterFamilies, Families, StatePart
from exporter.serving.runtime import RuntimeCollector
from exporter.serving.store import StateStore
from exporter.web import WebServer
from tests.helpers import fixed_runtime
from tests.reference import Job, add_job

NOW = 1_700_000_000.0
CAPACITY = {"q0": QueueCapacity(64, 8, 2, None), "q1": QueueCapacity(None, None, 4, 1)}


def rig() -> tuple[Exporter, list[float]]:
    clock = [NOW]
    config = build_config({"clusters": [{"name": "a", "api_url": "https://h:1", "token": "t"}]}, environ={})
    ex = Exporter(config, clock=lambda: clock[0], runtime=fixed_runtime)
    publish(ex, NOW, jobs=3)
    return ex, clock


def render_registry(registry: CollectorRegistry, openmetrics: bool) -> bytes:
    """What client_python renders of ``registry``, without OpenMetrics' EOF line."""
    if openmetrics:
        text: bytes = generate_openmetrics(registry)  # type: ignore[no-untyped-call]
        return text.removesuffix(b"# EOF\n")
    return generate_latest(registry)


def scrape(ex: Exporter, openmetrics: bool = False, compressed: bool = False) -> bytes:
    """What /metrics answers (the body as sent)."""
    return ex.exposition.render(ex.store.states(), openmetrics, compressed)


def publish(ex: Exporter, t: float, jobs: int) -> None:
    b = SnapshotBuilder(per_user=True)
    for i in range(jobs):
        add_job(b, Job(str(i), "debug", f"u{i}", "running", "statR", 2))
    ex.store.publish(ClusterState("a", True, t, 1.0, None, b.build("a", t, t + 300, jobs, ["debug"])))


def with_usage(snap: ClusterSnapshot, jobs: int, apps: list[str], users: list[str]) -> ClusterSnapshot:
    """``snap`` with every usage field filled: CPU-seconds and run times in the activity, nodes, applications."""
    activity = replace(
        snap.activity,
        cpu_seconds={"q0": 3600.0 * jobs, "q1": 0.5},
        user_cpu_seconds={("q0", u): 60.0 * (i + jobs) for i, u in enumerate(users)},
        run_time={"q0": RunTimeHistogram((1, 0, 2, 0, 0, 0, 0, 0, 0, jobs), 1e6 + jobs, 3 + jobs)},
    )
    return replace(
        snap,
        activity=activity,
        nodes_by_queue={("q0", "running"): 2 * jobs, ("q1", "queued"): 0},
        nodes_in_use=jobs,
        by_app={(app, "running" if i % 2 else "queued"): (i + 1, 10 * i + jobs) for i, app in enumerate(apps)},
        running_max_seconds={"q0": 86400.0 * jobs},
    )


def test_the_cached_rendering_is_byte_for_byte_a_fresh_rendering() -> None:
    ex, _ = rig()
    assert scrape(ex) == generate_latest(ex.registry)
    assert scrape(ex, True, False) == generate_openmetrics(ex.registry)  # type: ignore[no-untyped-call]


def test_gzip_is_one_stream_that_decompresses_to_the_plain_rendering() -> None:
    ex, _ = rig()
    body = scrape(ex, False, True)
    inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
    assert inflate.decompress(body) == scrape(ex)
    assert inflate.eof and inflate.unused_data == b""  # a single member: every gzip client reads it whole
    assert gzip.decompress(scrape(ex, True, True)) == scrape(ex, True, False)


def test_scrapes_show_the_latest_publish_and_the_exporters_own_counters_as_they_are_now() -> None:
    ex, clock = rig()
    first = scrape(ex)
    assert all(scrape(ex) == first and gzip.decompress(scrape(ex, False, True)) == first for _ in range(3))
    observer = ex.metrics.observer("a")
    for _ in range(7):
        observer.request_sent()  # the exporter's own counters change between polls
    assert b'sugon_api_requests_total{hpc_cluster="a"} 7.0' in scrape(ex)
    assert b'status="running"} 3.0' in scrape(ex)
    publish(ex, NOW + 60, jobs=5)  # a poll publishes
    assert b'status="running"} 5.0' in scrape(ex) and b'status="running"} 3.0' not in scrape(ex)
    assert scrape(ex) == generate_latest(ex.registry)
    clock[0] = NOW + 60 + 300  # the data crosses max_staleness: its job gauges are left out
    assert b"sugon_jobs{" not in scrape(ex) and b'sugon_up{hpc_cluster="a"} 1.0' in scrape(ex)
    assert scrape(ex) == generate_latest(ex.registry)


def test_the_server_answers_from_the_cache_and_a_name_filter_falls_back() -> None:
    ex, _ = rig()
    server = WebServer(make_app(ex.registry, ex.store, None, ex.exposition), "127.0.0.1", 0)
    server.start()
    try:
        url = f"http://127.0.0.1:{server.port}/metrics"
        plain = httpx.get(url, headers={"Accept-Encoding": "identity"})
        assert plain.content == generate_latest(ex.registry)
        assert plain.headers["content-type"].startswith("text/plain")
        with httpx.stream("GET", url, headers={"Accept-Encoding": "gzip"}) as zipped:
            assert zipped.headers["content-encoding"] == "gzip"
            assert b"".join(zipped.iter_raw()) == scrape(ex, False, True)  # the cached gzip stream, as sent
        assert gzip.decompress(scrape(ex, False, True)) == plain.content
        om = httpx.get(url, headers={"Accept": "application/openmetrics-text; version=1.0.0"})
        assert om.headers["content-type"].startswith("application/openmetrics-text") and om.text.endswith("# EOF\n")
        assert om.content == scrape(ex, True, False)
        only = httpx.get(url, params={"name[]": "sugon_up"})
        assert "sugon_up{" in only.text and "sugon_jobs" not in only.text
    finally:
        server.stop()


def lines_of(cluster: str, text: bytes) -> list[bytes]:
    return [line for line in text.splitlines() if f'hpc_cluster="{cluster}"'.encode() in line]


def test_after_each_publish_a_scrape_equals_a_fresh_rendering_and_other_clusters_lines_stay_the_same() -> None:
    clock = [NOW]
    clusters = [{"name": n, "api_url": "https://h:1", "token": "t"} for n in ("a", "b", "c")]
    ex = Exporter(
        build_config({"clusters": clusters, "per_user": True}, environ={}),
        clock=lambda: clock[0],
        runtime=fixed_runtime,
    )

    def poll(name: str, t: float, jobs: int, up: bool = True) -> None:
        b = SnapshotBuilder(per_user=True)
        for i in range(jobs):
            add_job(b, Job(str(i), f"q{i % 2}", f"u{i % 3}", "queued" if i % 2 else "running", "statR", i, "Priority"))
        snap = b.build(name, t, t + 300, jobs, ["q0", "q1", "idle"], Activity(submitted={"q0": jobs}))
        snap = with_usage(snap, jobs, ["fluent", "vasp", "none"], ["u0", "u1"])
        ex.store.publish(ClusterState(name, up, t, 1.5, None, snap, CapacitySnapshot(t, t + 100, CAPACITY)))

    def same() -> None:
        for om, fresh in ((False, generate_latest), (True, generate_openmetrics)):
            plain = scrape(ex, om, False)
            assert plain == fresh(ex.registry)
            inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
            assert inflate.decompress(scrape(ex, om, True)) == plain and inflate.eof
            assert inflate.unused_data == b""

    for i, name in enumerate(("a", "b", "c")):
        poll(name, NOW, 3 + i)
    same()
    before = scrape(ex)
    assert b'sugon_api_reported_jobs{hpc_cluster="b"} 4.0' in before
    poll("b", NOW + 30, 7)
    same()
    after = scrape(ex)
    assert b'sugon_api_reported_jobs{hpc_cluster="b"} 7.0' in after
    assert lines_of("a", after) == lines_of("a", before) and lines_of("c", after) == lines_of("c", before)
    previous = ex.store.get("c")  # a failed poll: new health, the same snapshot
    ex.store.publish(replace(previous, up=False, last_error="timeout"))
    same()
    assert b'sugon_up{hpc_cluster="c"} 0.0' in scrape(ex)
    assert [line for line in lines_of("c", scrape(ex)) if b"sugon_up" not in line] == [
        line for line in lines_of("c", after) if b"sugon_up" not in line
    ]
    clock[0] = NOW + 120  # capacity of a and c is stale, b's is not
    same()
    assert b'sugon_queue_cpus{hpc_cluster="b"' in scrape(ex)
    assert b'sugon_queue_cpus{hpc_cluster="a"' not in scrape(ex)
    assert b'sugon_app_jobs{app="vasp",hpc_cluster="a",status="running"} 2.0' in scrape(ex)
    clock[0] = NOW + 310  # the job data of a and c is stale too: its gauges leave, its counters and histograms stay
    same()
    assert b'sugon_jobs{hpc_cluster="a"' not in scrape(ex)
    assert b'sugon_jobs{hpc_cluster="b"' in scrape(ex)
    for family in (b"sugon_job_nodes{", b"sugon_nodes_in_use{", b"sugon_app_jobs{", b"sugon_running_job_max_seconds{"):
        assert not any(line.startswith(family) for line in lines_of("a", scrape(ex))), family
        assert any(line.startswith(family) for line in lines_of("b", scrape(ex))), family
    assert b'sugon_job_cpu_seconds_total{hpc_cluster="a",queue="q0"} 10800.0' in scrape(ex)
    assert b'sugon_user_job_cpu_seconds_total{hpc_cluster="a",queue="q0",user="u1"} 240.0' in scrape(ex)
    assert b'sugon_job_run_seconds_count{hpc_cluster="a",queue="q0"} 6.0' in scrape(ex)


class CountingFamilies(ClusterFamilies):
    """ClusterFamilies that counts how often each cluster's job data is rendered, through its public method."""

    def __init__(self) -> None:
        super().__init__(per_user=True)
        self.renders: Counter[str] = Counter()

    def of(self, name: str, state: ClusterState, part: StatePart, users: bool = True) -> Families:
        if part is StatePart.SNAPSHOT:
            self.renders[name] += 1
        return super().of(name, state, part, users)


def test_each_change_is_rendered_once_by_the_publisher_in_the_formats_scraped_so_far() -> None:
    clock = [NOW]
    families = CountingFamilies()
    exposition = CachedExposition(CollectorRegistry(), families, CollectorRegistry(), lambda: clock[0])
    store = StateStore(["a", "b"], before_publish=exposition.render_ahead)
    fresh = CollectorRegistry()  # what prometheus-client renders of the same states
    fresh.register(JobCollector(store, ClusterFamilies(per_user=True), lambda: clock[0]))

    def poll(name: str, t: float, jobs: int) -> None:
        b = SnapshotBuilder(per_user=True)
        for i in range(jobs):
            add_job(b, Job(str(i), "debug", f"u{i}", "running", "statR", 2))
        store.publish(ClusterState(name, True, t, 1.0, None, b.build(name, t, t + 300, jobs, ["debug"])))

    poll("a", NOW, 3)
    poll("b", NOW, 4)
    assert families.renders == {}  # nothing scraped yet: nothing rendered ahead
    for _ in range(3):
        assert exposition.render(store.states(), True, True)  # OpenMetrics is asked for
        assert exposition.render(store.states(), True, False) == generate_openmetrics(fresh)  # type: ignore[no-untyped-call]
    assert families.renders == {"a": 1, "b": 1}  # once each, whatever the scrapes
    poll("b", NOW + 30, 5)
    assert families.renders == {"a": 1, "b": 2}  # by the publisher, before any scrape, in OpenMetrics only
    assert exposition.render(store.states(), True, False) == generate_openmetrics(fresh)  # type: ignore[no-untyped-call]
    assert families.renders == {"a": 1, "b": 2}  # the scrape found it ready
    assert exposition.render(store.states(), False, False) == generate_latest(fresh)
    assert families.renders == {"a": 2, "b": 3}  # the text format, on its first scrape
    store.publish(replace(store.get("a"), up=False, last_error="timeout"))  # new health, the same job data
    clock[0] = NOW + 400  # and all of it stale
    assert exposition.render(store.states(), False, False) == generate_latest(fresh)
    assert families.renders == {"a": 2, "b": 3}


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
            before = [scrape(ex, om, False), gzip.decompress(scrape(ex, om, True))]
            assert before[0] == before[1]
        change()
        for om, fresh in ((False, generate_latest), (True, generate_openmetrics)):
            plain = scrape(ex, om, False)
            assert plain == fresh(ex.registry)  # type: ignore[operator]
            assert gzip.decompress(scrape(ex, om, True)) == plain
    assert scrape(ex, True, True) == scrape(ex, True, True)  # unchanged: the same bytes
    config = build_config({"clusters": [{"name": "a", "api_url": "https://h:1", "token": "t"}]}, environ={})
    bare = Exporter(config, clock=lambda: NOW, runtime=lambda: None)  # nothing rendered at every scrape
    states = bare.store.states()
    sent = bare.exposition.render_parts(states, True, True)
    again = bare.exposition.render_parts(states, True, True)
    assert all(a is b for a, b in zip(sent, again, strict=True))  # unchanged: the same answer, sent again


HOSTILE = ['q"1', "back\\slash", "new\nline", "ünï 队列", "\\n", 'end\\"', "x" * 256, "sp ace", "=,{}"]


def test_the_per_user_families_written_directly_equal_prometheus_clients_even_with_hostile_labels() -> None:
    """And the families of applications and of users' CPU-seconds, rendered by prometheus-client, beside them."""
    ex, _ = rig()
    b = SnapshotBuilder(per_user=True)
    for i, (queue, user) in enumerate((q, u) for q in HOSTILE for u in HOSTILE):
        add_job(b, Job(str(i), queue, user, "running" if i % 3 else "queued", "statR", i * 1_000_003 % 10**7))
    snap = b.build('we"ird\\c', NOW, NOW + 300, 81, ["debug"])
    ex.store.publish(ClusterState("a", True, NOW, 1.0, None, with_usage(snap, 10**7, HOSTILE, HOSTILE)))
    assert scrape(ex) == generate_latest(ex.registry)
    assert scrape(ex, True, False) == generate_openmetrics(ex.registry)  # type: ignore[no-untyped-call]
    assert b"e+06" in scrape(ex)  # large values are written as Go writes them


def test_a_failure_rendering_ahead_never_stops_a_publish(caplog: pytest.LogCaptureFixture) -> None:
    """A bug while rendering ahead (here the clock the exposition reads fails) is logged, with its traceback
    once; the poller's publish goes through, and a later scrape renders what is missing."""
    clock_fails = [False]

    def clock() -> float:
        if clock_fails[0]:
            raise RuntimeError("a bug while rendering")
        return NOW

    config = build_config({"clusters": [{"name": "a", "api_url": "https://h:1", "token": "t"}]}, environ={})
    ex = Exporter(config, clock=clock, runtime=fixed_runtime)
    publish(ex, NOW, jobs=3)
    scrape(ex)  # the text format is rendered ahead from now on
    clock_fails[0] = True
    publish(ex, NOW + 60, jobs=4)
    assert ex.store.get("a").snapshot is not None and ex.store.get("a").snapshot.job_count == 4  # type: ignore[union-attr]
    assert "rendering for /metrics ahead of the scrapes failed" in caplog.text
    publish(ex, NOW + 120, jobs=5)  # and again: no second traceback
    assert [r.exc_info is not None for r in caplog.records if r.levelno >= logging.WARNING] == [True]
    clock_fails[0] = False
    assert b'status="running"} 5.0' in scrape(ex) and scrape(ex) == generate_latest(ex.registry)


def test_a_cluster_that_cannot_be_rendered_is_left_out_and_logged_once_while_every_other_is_served(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A value no float holds (here a CPU sum that slipped past the bounds on parsing) used to fail /metrics
    with a 500 for every cluster, on every scrape."""
    caplog.set_level(logging.INFO, logger="exporter.serving.families")
    config = build_config({"clusters": [{"name": n, "api_url": "https://h:1", "token": "t"} for n in "ab"]}, {})
    ex = Exporter(config, clock=lambda: NOW, runtime=fixed_runtime)

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
        for params in ({}, {"name[]": "sugon_job_cpus"}):  # the cached texts, and collect() behind a name filter
            for _ in range(3):
                answer = httpx.get(url, params=params, headers={"Accept-Encoding": "identity"})
                assert answer.status_code == 200
                assert 'sugon_job_cpus{hpc_cluster="b",queue="debug",status="running"} 8.0' in answer.text
                assert 'sugon_job_cpus{hpc_cluster="a"' not in answer.text
        assert 'sugon_up{hpc_cluster="a"} 1.0' in httpx.get(url).text  # its health is its own part: still there
        poll("a", 10**400, NOW + 60)  # the next poll is no better: nothing new in the log
        assert httpx.get(url).status_code == 200
        assert generate_latest(ex.registry) == scrape(ex)
        assert caplog.text.count("cannot be rendered") == 1
        assert "cluster a: its job data cannot be rendered (OverflowError" in caplog.text
        poll("a", 4, NOW + 120)  # a poll that renders again
        assert 'sugon_job_cpus{hpc_cluster="a",queue="debug",status="running"} 4.0' in httpx.get(url).text
        assert "cluster a: its job data render again" in caplog.text
    finally:
        server.stop()


def test_users_cpu_seconds_stay_in_the_cached_text_when_no_job_is_left_in_the_list() -> None:
    ex, _ = rig()
    empty = SnapshotBuilder(per_user=True).build("a", NOW + 60, NOW + 360, 0, ["debug"])
    activity = Activity(cpu_seconds={"debug": 900.0}, user_cpu_seconds={("debug", "alice"): 900.0})
    ex.store.publish(ClusterState("a", True, NOW + 60, 1.0, None, replace(empty, activity=activity)))
    assert b'sugon_user_job_cpu_seconds_total{hpc_cluster="a",queue="debug",user="alice"} 900.0' in scrape(ex)
    assert b"sugon_user_jobs{" not in scrape(ex)
    assert scrape(ex) == generate_latest(ex.registry)
    assert scrape(ex, True, False) == generate_openmetrics(ex.registry)  # type: ignore[no-untyped-call]


def test_the_process_metrics_follow_the_exporters_own_counters_with_the_values_proc_holds() -> None:
    """The stand-in /proc (tests/fixtures/proc/4242) holds utime 1234 + stime 566 ticks (given as the CPU
    time), start time 50000 ticks after boot (btime 1700000000), 128000 pages of virtual memory and 25600
    resident, a soft limit of 1024 open files (given as the limit) and four entries in fd/."""
    ex, _ = rig()
    ticks, page = os.sysconf("SC_CLK_TCK"), resource.getpagesize()
    expected = {
        "process_cpu_seconds_total": 1800 / ticks,
        "process_start_time_seconds": 1_700_000_000 + 50000 / ticks,
        "process_virtual_memory_bytes": 128000.0 * page,  # statm's 128000 pages (524288000 bytes with 4 KiB pages)
        "process_resident_memory_bytes": 25600.0 * page,
        "process_max_fds": 1024.0,
        "process_open_fds": 4.0,
    }
    for openmetrics in (False, True):
        text = scrape(ex, openmetrics).decode()
        assert gzip.decompress(scrape(ex, openmetrics, True)).decode() == text
        families = parsed(text, openmetrics)
        read = {s.name: s.value for f in families for s in f.samples if s.name.startswith("process_")}
        assert read == expected
        names = [f.name for f in families]
        assert names[1] == "python_info"  # fixed for the process's life: beside the build info
        # then process_* (6 families) and python_gc_* (3)
        assert names.index("sugon_config_last_reload_success_timestamp_seconds") == len(names) - 10
    assert ex.registry.get_sample_value("process_open_fds") == 4.0  # --once and name[] scrapes have them too


def parsed(text: str, openmetrics: bool) -> list[Metric]:
    if openmetrics:
        return list(openmetrics_families(text))
    return list(text_string_to_metric_families(text))


class Ticking(Collector):
    """A counter that counts its own collections: any cached rendering of it shows an old count."""

    def __init__(self) -> None:
        self.count = 0

    def collect(self) -> Iterator[Metric]:
        self.count += 1
        yield CounterMetricFamily("ticks", "Collections so far.", value=self.count)


class TickingRuntime(RuntimeCollector):
    """A runtime part that is ``ticking``, as text and as a collector."""

    def __init__(self, ticking: Ticking) -> None:
        self._registry = CollectorRegistry()
        self._registry.register(ticking)

    def text(self, openmetrics: bool) -> bytes:
        return render_registry(self._registry, openmetrics)

    def collect(self) -> Iterator[Metric]:
        return iter(self._registry.collect())


def ticking_exposition(ticking: Ticking, now: list[float]) -> CachedExposition:
    """An exposition whose runtime part is ``ticking``, 0.1 s max age on the clock ``now[0]``."""
    return CachedExposition(
        CollectorRegistry(),
        ClusterFamilies(False),
        CollectorRegistry(),
        lambda: NOW,
        live_version=lambda: 0,
        runtime=TickingRuntime(ticking),
        runtime_max_age=0.1,
        monotonic=lambda: now[0],
    )


def test_the_runtime_part_is_rendered_afresh_once_older_than_its_max_age_in_every_format() -> None:
    """Scrapes within the max age share one rendering (a flood of scrapes costs no more than before); the
    first scrape after it, in each format and with or without gzip, collects afresh."""
    ticking = Ticking()
    now = [100.0]
    store = StateStore(["a"])
    exposition = ticking_exposition(ticking, now)

    def ticks(openmetrics: bool, compressed: bool) -> bytes:
        body = exposition.render(store.states(), openmetrics, compressed)
        text = gzip.decompress(body) if compressed else body
        assert text.endswith(b"# EOF\n" if openmetrics else b"\n")
        return text.removesuffix(b"# EOF\n").splitlines()[-1]  # ticks_total's sample: the very last line

    first = ticking.count
    for step in range(1, 4):
        for openmetrics in (False, True):
            seen = {ticks(openmetrics, compressed) for compressed in (False, True) for _ in range(3)}
            assert seen == {f"ticks_total {ticking.count}.0".encode()}  # six scrapes, one rendering
        assert ticking.count == first + 2 * step  # one per format
        now[0] += 0.05
        assert ticks(False, True) == f"ticks_total {ticking.count - 1}.0".encode()  # the text format's, still young
        assert ticking.count == first + 2 * step
        now[0] += 0.06  # 0.11 s after the rendering: too old


@pytest.mark.parametrize("openmetrics", [False, True])
def test_a_new_runtime_text_sends_the_cached_megabytes_as_they_were_never_copied(openmetrics: bool) -> None:
    """Gzipped, an answer is in parts: the deflated cached text is the same bytes object from scrape to scrape
    while the job data stays the same, and a new runtime rendering changes only the end of the stream (the
    runtime text, the final block, the trailer). Joined, they are one gzip stream of the whole text."""
    now = [100.0]
    ex, _ = rig()
    exposition = ticking_exposition(Ticking(), now)
    states = ex.store.states()  # three jobs of cluster a

    def whole() -> bytes:
        return b"".join(exposition.render_parts(states, openmetrics, False))

    first = exposition.render_parts(states, openmetrics, True)
    assert b"sugon_jobs" in whole()
    assert gzip.decompress(b"".join(first)) == whole()
    plain = exposition.render_parts(states, openmetrics, False)
    assert exposition.render_parts(states, openmetrics, False)[0] is plain[0]  # the cached text, not a copy
    again = exposition.render_parts(states, openmetrics, True)  # within the max age: the same answer
    assert len(again) == len(first) and all(a is b for a, b in zip(again, first))
    now[0] += 1.0
    later = exposition.render_parts(states, openmetrics, True)
    assert all(a is b for a, b in zip(later[:-1], first[:-1])) and later[-1] != first[-1]  # a new runtime text
    assert gzip.decompress(b"".join(later)) == whole()
    assert whole().removesuffix(b"# EOF\n").endswith(b"ticks_total 2.0\n")  # rendered at the first scrape and now


def test_a_change_of_the_exporters_own_counters_sends_the_cached_megabytes_as_they_were() -> None:
    """A gzip scrape after the exporter's own counters changed sends the deflated cached text it sent before,
    not a copy: scrapes slow to take their answers share it (issue 23)."""
    ex, _ = rig()
    first = ex.exposition.render_parts(ex.store.states(), False, True)
    ex.metrics.observer("a").request_sent()
    later = ex.exposition.render_parts(ex.store.states(), False, True)
    cached = max(first, key=len)  # the job families, deflated: most of the answer
    assert len(cached) > len(b"".join(first)) / 2
    assert any(part is cached for part in later)
    assert gzip.decompress(b"".join(later)) == scrape(ex)
    assert b'sugon_api_requests_total{hpc_cluster="a"} 1.0' in scrape(ex)
