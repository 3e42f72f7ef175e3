"""The Grafana dashboard: it loads, has the variables and panels promised, every query is valid PromQL,
and every metric it names is one the exporter emits."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import promql_parser
import pytest
import yaml
from prometheus_client.samples import Sample

from tests.helpers import polled_families
from tests.tools import find_tool

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
        "Jobs",
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


def series(sample: Sample) -> str:
    """A sample's series as promtool's test files write it (label values escaped as in PromQL strings)."""
    labels = ",".join(
        f'{k}="' + v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
        for k, v in sorted(sample.labels.items())
    )
    return f"{sample.name}{{{labels}}}"


def test_each_query_of_the_jobs_table_gives_every_job_of_a_real_exposition_once(tmp_path: Path) -> None:
    """The Jobs table's queries, evaluated by promtool over the per-job series of the demo's polled clusters:
    each gives one row per job with the value of the family it queries, and all of them the same jobs, so that
    Grafana's merge joins them on (hpc_cluster, scheduler, job_id) into one line per job."""
    (panel,) = [p for p in PANELS if p["title"] == "Jobs"]
    samples = [s for f in polled_families() if f.name.startswith("sugon_per_job_") for s in f.samples]
    jobs = {
        (s.labels["hpc_cluster"], s.labels["scheduler"], s.labels["job_id"]) for s in samples if "job_id" in s.labels
    }
    assert len(jobs) > 100 and {c for c, _, _ in jobs} == {"demo-kunshan", "demo-wuxi"}
    cases = []
    for target in panel["targets"]:
        assert target["format"] == "table" and target["instant"] is True, target["refId"]
        expr = concrete(target["expr"])
        (name,) = set(re.findall(r"sugon_per_job_[a-z_]+", expr.split(" and ")[0]))
        rows = [s for s in samples if s.name == name]
        assert {(s.labels["hpc_cluster"], s.labels["scheduler"], s.labels["job_id"]) for s in rows} == jobs, name
        cases.append(
            {"expr": expr, "eval_time": "0m", "exp_samples": [{"labels": series(s), "value": s.value} for s in rows]}
        )
    assert len(cases) == 5
    tests = {
        "rule_files": [],
        "tests": [
            {
                "interval": "1m",
                "input_series": [{"series": series(s), "values": repr(s.value)} for s in samples],
                "promql_expr_test": cases,
            }
        ],
    }
    path = tmp_path / "jobs_table_test.yml"
    path.write_text(yaml.safe_dump(tests, allow_unicode=True))
    exe = find_tool("promtool", "apt-get install prometheus")
    result = subprocess.run([exe, "test", "rules", str(path)], capture_output=True, text=True, check=False, timeout=120)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
