"""The Grafana dashboard: it loads, has the variables and panels promised, every query is valid PromQL,
and every metric it names is one the exporter emits."""

from __future__ import annotations

import json
import re
from pathlib import Path

import promql_parser
import pytest

from tests.helpers import polled_families

DASHBOARD = json.loads((Path(__file__).parent.parent / "deploy" / "grafana" / "sugon-exporter.json").read_text())
PANELS = [p for p in DASHBOARD["panels"] if p["type"] != "row"]
QUERIES = [t["expr"] for p in PANELS for t in p["targets"]]
GRAFANA_VARS = {"$__rate_interval": "5m", "$hpc_cluster": ".*", "$queue": ".*", "$user": ".*"}


def concrete(expr: str) -> str:
    """The query as Grafana sends it, with its variables filled in."""
    for var, value in GRAFANA_VARS.items():
        expr = expr.replace(var, value)
    return expr


def emitted_series_names() -> set[str]:
    names = set()
    for fam in polled_families():
        if fam.type == "counter":
            names.add(fam.name + "_total")
        elif fam.type == "histogram":
            names |= {fam.name + suffix for suffix in ("_bucket", "_sum", "_count")}
        elif fam.type == "info":
            names.add(fam.name + "_info")
        else:
            names.add(fam.name)
    return names


def test_the_dashboard_has_its_variables_and_a_stable_uid() -> None:
    assert DASHBOARD["uid"] == "sugon-exporter"
    variables = {v["name"] for v in DASHBOARD["templating"]["list"]}
    assert {"datasource", "hpc_cluster", "queue", "user"} <= variables


def test_the_dashboard_has_the_promised_panels() -> None:
    titles = {p["title"] for p in PANELS}
    assert {
        "Jobs by status",
        "Queued backlog per queue",
        "Oldest queued job per queue",
        "CPUs in use vs queued per queue",
        "Top users by running CPUs",
        "Job starts and ends per hour",
        "Wait time quantiles (last hour)",
        "Queue CPUs: total and free",
        "Queue CPU utilisation",
        "Cluster up",
        "Last successful poll",
        "Poll duration",
        "API errors by reason",
        "Token expires in",
        "Why jobs wait",
        "Core-hours per day by queue",
        "Top users by core-hours per day",
        "Nodes in use",
        "Longest running job per queue",
        "Running jobs by application",
        "Running CPUs by application",
        "Run time quantiles (last day)",
        "Exporter memory (RSS)",
        "Exporter CPU",
        "Exporter open file descriptors",
    } <= titles


@pytest.mark.parametrize("expr", QUERIES)
def test_every_query_is_valid_promql(expr: str) -> None:
    promql_parser.parse(concrete(expr))


def test_a_broken_query_would_be_caught() -> None:
    with pytest.raises(Exception):  # noqa: B017 - the parser's error type is not part of its API
        promql_parser.parse(concrete('sum by (queue (sugon_jobs{queue=~"$queue"})'))


def test_every_metric_the_dashboard_names_is_emitted() -> None:
    named = {m for expr in QUERIES for m in re.findall(r"\b((?:sugon|process|python)_[a-z_]+)\b", expr)}
    assert named, "the dashboard names no metric"
    assert {
        "process_resident_memory_bytes",
        "process_cpu_seconds_total",
        "process_open_fds",
        "process_max_fds",
    } <= named
    missing = named - emitted_series_names()
    assert not missing, f"the dashboard queries metrics the exporter does not emit: {sorted(missing)}"


def test_every_panel_uses_the_datasource_variable() -> None:
    for p in PANELS:
        assert p["datasource"]["uid"] == "${datasource}", p["title"]


def test_the_exporter_row_shows_only_the_exporters_own_processes() -> None:
    """process_* comes from every exporter a Prometheus scrapes: each query keeps the targets that also export
    sugon_up for the chosen clusters."""
    rows = [p for p in DASHBOARD["panels"] if p["type"] == "row"]
    assert "Exporter" in [r["title"] for r in rows]
    process_queries = [q for q in QUERIES if "process_" in q]
    assert len(process_queries) == 4
    for expr in process_queries:
        assert expr.endswith(' and on (job, instance) group by (job, instance) (sugon_up{hpc_cluster=~"$hpc_cluster"})')
