"""/metrics as exporter.render.Exposition serves it: the text of every cluster's published state, merged by family,
the staleness rule applied at the time of the scrape, gzip, OpenMetrics and name[] filtering."""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics
from prometheus_client.openmetrics.parser import text_string_to_metric_families as openmetrics_families
from prometheus_client.parser import text_string_to_metric_families

from exporter.model import ClusterState, Served
from exporter.render import Exposition
from tests.helpers import promtool_check_metrics
from tests.polls import Polls, job

NOW = 1_700_000_000.0
RUNTIME = ("process_", "python_gc_")  # read for each scrape: they change between two renderings


def polled(name: str, taken_at: float, jobs: int) -> ClusterState:
    """A cluster after two polls of ``jobs`` jobs (a running and a queued one by turns), the second at ``taken_at``."""
    polls = Polls(cluster=name)
    listed = [
        job(
            f"1\x00{i}",
            f"q{i % 2}",
            "running" if i % 2 else "queued",
            user=f"u{i % 3}",
            cpus=i,
            run=60 if i % 2 else None,
        )
        for i in range(jobs)
    ]
    polls.poll(listed, taken_at - 60)
    samples = polls.poll(listed, taken_at)
    gauges = [f for f in samples.families if f.type == "gauge"]
    kept = [f for f in samples.families if f.type != "gauge"]
    return ClusterState(
        name=name,
        up=True,
        last_success=taken_at,
        poll_duration=1.5,
        jobs=Served(taken_at=taken_at, expires_at=taken_at + 300, families=tuple(gauges)),
        kept=tuple(kept),
    )


@pytest.fixture
def exposition() -> Iterator[Exposition]:
    clock = [NOW]
    ex = Exposition(["a", "b"], clock=lambda: clock[0])
    ex.publish(polled("a", NOW - 200, 5))
    ex.publish(polled("b", NOW, 6))
    yield ex


def whole(ex: Exposition, **options: Any) -> bytes:
    """The /metrics answer's parts joined."""
    return b"".join(ex.body(**options))


def lines(text: bytes) -> list[str]:
    """The lines of an exposition but those of the families read for each scrape."""
    return [line for line in text.decode().splitlines() if not any(name in line for name in RUNTIME)]


class _Now:
    """The families an exposition serves at this instant, as a collector of fixed families."""

    def __init__(self, ex: Exposition) -> None:
        self.families = list(ex.collect())

    def collect(self) -> list[Metric]:
        return self.families


def registry_of(ex: Exposition) -> CollectorRegistry:
    """A registry of what ``ex`` serves now, for prometheus-client's own rendering and name filter."""
    registry = CollectorRegistry(auto_describe=True)
    registry.register(_Now(ex))  # type: ignore[arg-type]
    return registry


def test_the_cached_text_is_what_prometheus_client_renders_of_the_same_families_and_promtool_passes_it(
    exposition: Exposition,
) -> None:
    body = whole(exposition)
    assert lines(body) == lines(generate_latest(registry_of(exposition)))
    checked = promtool_check_metrics(body.decode())
    assert checked.returncode == 0, checked.stdout + checked.stderr
    # One HELP and TYPE for a family both clusters have, their samples under it.
    text = body.decode()
    assert text.count("# TYPE sugon_jobs gauge") == 1
    assert 'sugon_jobs{hpc_cluster="a",queue="q1",status="running"} 2.0' in text
    assert 'sugon_jobs{hpc_cluster="b",queue="q1",status="running"} 3.0' in text
    assert "process_cpu_seconds_total" in text and "python_gc_objects_collected_total" in text
    assert "_created" not in text


def test_gzip_is_the_plain_text_compressed_and_openmetrics_ends_with_one_eof(exposition: Exposition) -> None:
    assert lines(gzip.decompress(whole(exposition, compressed=True))) == lines(whole(exposition))
    text = whole(exposition, openmetrics=True).decode()
    assert text.endswith("# EOF\n") and text.count("# EOF") == 1
    assert {f.name for f in openmetrics_families(text)} >= {"sugon_jobs", "sugon_jobs_submitted", "process_cpu_seconds"}


def test_job_gauges_go_once_stale_and_the_counters_stay_without_a_publish() -> None:
    clock = [NOW]
    ex = Exposition(["a"], clock=lambda: clock[0])
    ex.publish(polled("a", NOW, 2))
    assert "sugon_jobs{" in whole(ex).decode()
    clock[0] = NOW + 299.9
    assert "sugon_jobs{" in whole(ex).decode()
    clock[0] = NOW + 300  # max_staleness after the poll: the job data goes, not to zero
    text = whole(ex).decode()
    assert "sugon_jobs{" not in text and "sugon_job_cpus{" not in text and "sugon_users_folded{" not in text
    assert 'sugon_jobs_submitted_total{hpc_cluster="a",queue="q0"} 0.0' in text
    assert 'sugon_last_success_timestamp_seconds{hpc_cluster="a"}' in text


def test_a_publish_reaches_the_next_scrape_and_a_cluster_that_left_leaves_it(exposition: Exposition) -> None:
    before = whole(exposition).decode()
    assert 'sugon_jobs{hpc_cluster="b",queue="q0",status="queued"} 3.0' in before
    exposition.publish(polled("b", NOW, 2))
    assert 'sugon_jobs{hpc_cluster="b",queue="q0",status="queued"} 1.0' in whole(exposition).decode()
    exposition.set_clusters(["a"], keep=["a"])
    assert 'hpc_cluster="b"' not in whole(exposition).decode()


def test_the_reload_gauges_follow_the_last_reload() -> None:
    ex = Exposition(["a"], clock=lambda: NOW)

    def reload_gauges() -> dict[str, float]:
        text = whole(ex).decode()
        return {s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples if "reload" in s.name}

    ok, at = "sugon_config_last_reload_successful", "sugon_config_last_reload_success_timestamp_seconds"
    assert reload_gauges() == {ok: 1.0, at: NOW}
    ex.reload_result(False, NOW + 10)
    assert reload_gauges() == {ok: 0.0, at: NOW}  # the last success stays
    ex.reload_result(True, NOW + 20)
    assert reload_gauges() == {ok: 1.0, at: NOW + 20}


NAME_FILTERS = [
    (["sugon_up"], {"sugon_up"}),
    (["sugon_jobs", "sugon_user_jobs"], {"sugon_jobs", "sugon_user_jobs"}),
    (["sugon_jobs_submitted_total"], {"sugon_jobs_submitted"}),
    (["sugon_job_wait_seconds_bucket"], {"sugon_job_wait_seconds"}),
    (["process_cpu_seconds_total", "sugon_exporter_build_info"], {"process_cpu_seconds", "sugon_exporter_build_info"}),
    (["no_such_metric"], set()),
]


@pytest.mark.parametrize("openmetrics", [False, True])
@pytest.mark.parametrize(("names", "expected"), NAME_FILTERS)
def test_a_name_filter_gives_what_prometheus_clients_own_filtering_gives(
    exposition: Exposition, openmetrics: bool, names: list[str], expected: set[str]
) -> None:
    got = whole(exposition, names=names, openmetrics=openmetrics)
    restricted = registry_of(exposition).restricted_registry(names)
    own = generate_openmetrics(restricted) if openmetrics else generate_latest(restricted)  # type: ignore[no-untyped-call]
    parse = openmetrics_families if openmetrics else text_string_to_metric_families

    def without_runtime_values(text: bytes) -> list[tuple[str, list[tuple[str, dict[str, str]]]]]:
        return [(f.name, [(s.name, s.labels) for s in f.samples]) for f in parse(text.decode())]

    assert without_runtime_values(got) == without_runtime_values(own)
    if openmetrics:  # an info family is named without its _info there
        expected = {name.removesuffix("_info") for name in expected}
    assert {f.name for f in parse(got.decode())} == expected


class Untouchable(list):  # type: ignore[type-arg]
    """Samples that fail the test if anything looks at them."""

    def __iter__(self) -> Iterator[object]:
        raise AssertionError("the samples of a family no name asked for were looked at")


def test_a_name_filter_never_looks_at_the_samples_of_a_family_no_name_can_select() -> None:
    """A name[] scrape costs what the families it asks for hold, not the whole exposition's size: the text is
    rendered once per publish, and a family no name can select is not looked at again."""
    big = GaugeMetricFamily("sugon_user_jobs", "Jobs per user.", labels=["hpc_cluster"])
    big.add_metric(["a"], 1)
    state = ClusterState(name="a", up=True, jobs=Served(taken_at=NOW, expires_at=NOW + 300, families=(big,)))
    ex = Exposition(["a"], clock=lambda: NOW)
    ex.publish(state)
    assert "sugon_user_jobs" in whole(ex).decode()
    big.samples = Untouchable(big.samples)
    assert whole(ex, names=["sugon_up"]).decode().splitlines() == [
        "# HELP sugon_up 1 if the most recent poll of the cluster succeeded, else 0.",
        "# TYPE sugon_up gauge",
        'sugon_up{hpc_cluster="a"} 1.0',
    ]


def test_a_gzipped_answer_is_one_gzip_member_that_a_single_stream_reader_reads_whole(exposition: Exposition) -> None:
    """curl and httpx read only the first member of a gzip body: the answer must be one member."""
    for openmetrics in (False, True):
        reader = zlib.decompressobj(16 + zlib.MAX_WBITS)
        text = reader.decompress(whole(exposition, openmetrics=openmetrics, compressed=True))
        assert reader.eof and not reader.unused_data
        assert lines(text) == lines(whole(exposition, openmetrics=openmetrics))


def test_merged_families_keep_one_type_and_one_help(exposition: Exposition) -> None:
    families: list[Metric] = list(registry_of(exposition).collect())
    names = [f.name for f in families]
    assert len(names) == len(set(names))
