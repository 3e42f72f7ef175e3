"""/metrics?name[]=…: only the samples named, exactly as prometheus-client's own name[] filter gives them, in
both formats and gzipped, served from the texts cached per family: a burst of filtered scrapes renders no
job data, and the large families go out as cached, never copied (issue 23, D14)."""

from __future__ import annotations

import gzip
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import Metric
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics
from prometheus_client.openmetrics.parser import text_string_to_metric_families as openmetrics_families
from prometheus_client.parser import text_string_to_metric_families

from exporter.config import build_config
from exporter.counting.snapshot import SnapshotBuilder
from exporter.endpoints import make_app
from exporter.model import Activity, CapacitySnapshot, ClusterState
from exporter.service import Exporter
from exporter.serving.collector import JobCollector
from exporter.serving.exposition import CachedExposition
from exporter.serving.store import StateStore
from exporter.web import WebServer
from tests.helpers import fixed_runtime
from tests.reference import Job, add_job
from tests.test_exposition import CAPACITY, NOW, CountingFamilies, with_usage

OPENMETRICS = {"Accept": "application/openmetrics-text; version=1.0.0"}

# Filters, and the families each must give (checked by hand against the exporter's families): a gauge, a
# counter by its sample name, a name of each part of /metrics (job data, the exporter's own counters,
# process, Python), a histogram's buckets only, the large per-user families, base names
# that name no sample, and names of nothing.
NAME_FILTERS = [
    (["sugon_up"], {"sugon_up"}),
    (
        ["sugon_jobs", "sugon_api_requests_total", "process_open_fds", "python_info", "sugon_nope"],
        {"sugon_jobs", "sugon_api_requests", "process_open_fds", "python_info"},
    ),
    (
        ["sugon_job_run_seconds_bucket", "sugon_user_jobs"],
        {"sugon_job_run_seconds", "sugon_user_jobs"},
    ),
    (["sugon_user_job_cpu_seconds_total", "sugon_queue_cpus"], {"sugon_user_job_cpu_seconds", "sugon_queue_cpus"}),
    (["sugon_job_run_seconds", "sugon_api_requests", "sugon_user_job_cpu_seconds"], set()),
    (["sugon_nope", "nothing_at_all"], set()),
]


def families(text: bytes, openmetrics: bool) -> list[Metric]:
    parse = openmetrics_families if openmetrics else text_string_to_metric_families
    return sorted(parse(text.decode()), key=lambda family: family.name)


def two_clusters() -> Exporter:
    """Clusters a and b with jobs, usage (histograms, per-user CPU-seconds) and capacity; a's job data and
    capacity gone stale (left out of /metrics)."""
    clock = [NOW]
    clusters = [{"name": n, "api_url": "https://h:1", "token": "t"} for n in ("a", "b")]
    ex = Exporter(build_config({"clusters": clusters}, environ={}), clock=lambda: clock[0], runtime=fixed_runtime)
    for name, t in (("a", NOW - 400), ("b", NOW)):
        b = SnapshotBuilder(per_user=True)
        for i in range(6):
            add_job(b, Job(str(i), f"q{i % 2}", f"u{i % 3}", "queued" if i % 2 else "running", "statR", i))
        snap = b.build(name, t, t + 300, 6, ["q0", "q1"], Activity(submitted={"q0": 6}))
        snap = with_usage(snap, 6, ["vasp"], ["u0", "u1"])
        ex.store.publish(ClusterState(name, True, t, 1.5, None, snap, CapacitySnapshot(t, t + 100, CAPACITY)))
    return ex


@pytest.mark.parametrize("openmetrics", [False, True])
@pytest.mark.parametrize("compressed", [False, True])
def test_a_name_filtered_scrape_gives_what_prometheus_clients_own_filtering_gives(
    openmetrics: bool, compressed: bool
) -> None:
    ex = two_clusters()
    server = WebServer(make_app(ex.registry, ex.store, None, ex.exposition), "127.0.0.1", 0)
    server.start()
    try:
        headers = {"Accept-Encoding": "gzip" if compressed else "identity", **(OPENMETRICS if openmetrics else {})}
        for names, expected in NAME_FILTERS:
            url = f"http://127.0.0.1:{server.port}/metrics"
            with httpx.stream("GET", url, params={"name[]": names}, headers=headers) as r:
                raw = b"".join(r.iter_raw())
            assert r.status_code == 200 and (r.headers.get("content-encoding") == "gzip") is compressed
            got = families(gzip.decompress(raw) if compressed else raw, openmetrics)
            restricted = ex.registry.restricted_registry(names)
            own = generate_openmetrics(restricted) if openmetrics else generate_latest(restricted)  # type: ignore[no-untyped-call]
            assert got == families(own, openmetrics), names
            assert {family.name for family in got} == expected
            if "sugon_user_jobs" in names:  # cluster a's are stale, and left out
                assert {s.labels["hpc_cluster"] for f in got if f.name == "sugon_user_jobs" for s in f.samples} == {"b"}
            if "sugon_job_run_seconds_bucket" in names:
                assert {s.name for f in got for s in f.samples if s.name.startswith("sugon_job_run")} == {
                    "sugon_job_run_seconds_bucket"
                }
    finally:
        server.stop()


def test_a_burst_of_name_filtered_scrapes_renders_no_job_data() -> None:
    """Each cluster's job data is rendered once per change and format, whatever the filtered scrapes ask."""
    families_ = CountingFamilies()
    exposition = CachedExposition(CollectorRegistry(), families_, CollectorRegistry(), lambda: NOW)
    store = StateStore(["a", "b"], before_publish=exposition.render_ahead)
    registry = CollectorRegistry()  # the same families, collected afresh: what prometheus-client's handler renders
    registry.register(JobCollector(store, families_, lambda: NOW))
    for name, jobs in (("a", 3), ("b", 4)):
        b = SnapshotBuilder(per_user=True)
        for i in range(jobs):
            add_job(b, Job(str(i), "debug", f"u{i}", "running", "statR", 2))
        store.publish(ClusterState(name, True, NOW, 1.0, None, b.build(name, NOW, NOW + 300, jobs, ["debug"])))
    server = WebServer(make_app(registry, store, None, exposition), "127.0.0.1", 0)
    server.start()
    try:
        url = f"http://127.0.0.1:{server.port}/metrics"

        def scrape(headers: dict[str, str]) -> str:
            return httpx.get(url, params={"name[]": ["sugon_jobs", "sugon_up"]}, headers=headers, timeout=20).text

        for headers, renders in (({}, {"a": 1, "b": 1}), (OPENMETRICS, {"a": 2, "b": 2})):
            assert 'sugon_jobs{hpc_cluster="b",queue="debug",status="running"} 4.0' in scrape(headers)
            assert families_.renders == renders  # the first scrape in a format renders each cluster once
            with ThreadPoolExecutor(8) as pool:
                answers = list(pool.map(scrape, [headers] * 24))
            assert all('sugon_jobs{hpc_cluster="a",queue="debug",status="running"} 3.0' in a for a in answers)
            assert families_.renders == renders  # and 24 more, eight at a time, none
    finally:
        server.stop()
