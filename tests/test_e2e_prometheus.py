"""End to end against a real Prometheus server on 127.0.0.1: the shipped scrape config, rules and alerts
(with `for:` shortened to seconds), the exporter polling the simulator, and the dashboard's queries."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import bcrypt
import httpx
import pytest
import yaml

from exporter.basicauth import BasicAuth
from exporter.config import build_config
from exporter.config.webconfig import load_web_config
from exporter.endpoints import make_app
from exporter.service import Exporter
from exporter.simulator import Scheduler, Simulator
from exporter.web import WebServer
from tests.helpers import promtool_check_metrics
from tests.tools import find_tool

ROOT = Path(__file__).parent.parent
DEPLOY = ROOT / "deploy" / "prometheus"
DASHBOARD = json.loads((ROOT / "deploy" / "grafana" / "sugon-exporter.json").read_text())
PASSWORD = "scrape-pa55"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def eventually(check: Callable[[], Any], seconds: float = 30, what: str = "") -> Any:
    deadline = time.monotonic() + seconds
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
            if last:
                return last
        except (httpx.HTTPError, KeyError, IndexError, ValueError) as exc:  # ValueError: a non-JSON answer
            last = exc
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}: last saw {last!r}")


class Stack:
    """Simulator → exporter → Prometheus, all on 127.0.0.1, torn down by the fixture."""

    def __init__(self, tmp: Path, secure: bool, certs: Path | None) -> None:
        self.sim = Simulator(
            token="e2e-token",
            jobs=60,
            max_page=50,
            seed=4,
            schedulers=[Scheduler("1638523853", "Cluster", {"debug": 64, "normal": 512})],
        )
        self.sim.serve()
        config = build_config(
            {
                "interval": "1s",
                "timeout": "2s",
                "max_staleness": "5m",
                "queue_capacity": True,
                "capacity_interval": "1s",
                "username": "e2e",
                "per_user": True,  # the per-user recording rule has data only then
                "per_job": True,  # the dashboard's Jobs table has data only then
                "clusters": [
                    {"name": "e2e", "api_url": self.sim.url, "token": "e2e-token", "cluster_ids": [1638523853]}
                ],
            },
            environ={},
        )
        self.exporter = Exporter(config, retry_backoff=0.1)
        web = None
        self.web_config = None
        if secure:
            assert certs is not None
            hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()
            (tmp / "web.yml").write_text(
                f"tls_server_config:\n  cert_file: {certs}/server.pem\n  key_file: {certs}/server.key\n"
                f"basic_auth_users:\n  prometheus: '{hashed}'\n"
            )
            web = self.web_config = load_web_config(str(tmp / "web.yml"))
        self.web = WebServer(
            make_app(self.exporter.exposition, BasicAuth(web.users) if web else None),
            "127.0.0.1",
            0,
            web.tls.context if web and web.tls else None,
        )
        self.web.start()
        self.exporter.start()
        self.prometheus = self._prometheus(tmp, secure, certs)

    def _prometheus(self, tmp: Path, secure: bool, certs: Path | None) -> subprocess.Popen[bytes]:
        exe = find_tool("prometheus", "apt-get install prometheus")
        # The shipped files, with their waiting times shortened from minutes to seconds.
        (tmp / "rules.yml").write_text((DEPLOY / "rules.yml").read_text())
        (tmp / "alerts.yml").write_text(re.sub(r"for: \S+", "for: 2s", (DEPLOY / "alerts.yml").read_text()))
        config = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
        config["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
        config["rule_files"] = [str(tmp / "rules.yml"), str(tmp / "alerts.yml")]
        job = config["scrape_configs"][0]
        job.update(scrape_interval="1s", scrape_timeout="1s")
        job["static_configs"] = [{"targets": [f"127.0.0.1:{self.web.port}"]}]
        if secure:
            assert certs is not None
            (tmp / "password").write_text(PASSWORD)
            job.update(
                scheme="https",
                tls_config={"ca_file": str(certs / "ca.pem")},
                basic_auth={"username": "prometheus", "password_file": str(tmp / "password")},
            )
        (tmp / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.port = free_port()
        self.api = f"http://127.0.0.1:{self.port}/api/v1"
        self.log = (tmp / "prometheus.log").open("wb")
        return subprocess.Popen(
            [
                exe,
                f"--config.file={tmp / 'prometheus.yml'}",
                f"--storage.tsdb.path={tmp / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    def get(self, path: str, **params: str) -> Any:
        """A Prometheus API answer; a busy server's odd answer (not JSON, a 503) is asked again."""
        for attempt in range(5):
            try:
                body = httpx.get(f"{self.api}/{path}", params=params, timeout=10).json()
                if body.get("status") == "success":
                    return body["data"]
            except (httpx.HTTPError, ValueError):
                if attempt == 4:
                    raise
            time.sleep(0.5)
        raise AssertionError(f"Prometheus API {path} kept failing: {body}")

    def query(self, expr: str) -> list[dict[str, Any]]:
        return self.get("query", query=expr)["result"]  # type: ignore[no-any-return]

    def alerts(self, name: str) -> set[str]:
        return {a["state"] for a in self.get("alerts")["alerts"] if a["labels"]["alertname"] == name}

    def close(self) -> None:
        self.prometheus.terminate()
        try:
            self.prometheus.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.prometheus.kill()
            self.prometheus.wait()
        self.log.close()
        self.exporter.stop()
        self.web.stop()
        self.sim.stop()


@pytest.fixture(params=[False, True], ids=["plain", "tls+basic-auth"])
def stack(request: pytest.FixtureRequest, tmp_path: Path, certs: Path) -> Iterator[Stack]:
    s = Stack(tmp_path, request.param, certs)
    try:
        yield s
    finally:
        s.close()


def dashboard_queries() -> list[str]:
    out = []
    for panel in DASHBOARD["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"]
            for var, value in {"$__rate_interval": "1m", "$hpc_cluster": ".*", "$queue": ".*", "$user": ".*"}.items():
                expr = expr.replace(var, value)
            out.append(expr)
    return out


def test_prometheus_scrapes_records_alerts_and_keeps_the_backlog_alert_through_an_outage(stack: Stack) -> None:
    def target_up() -> bool:
        targets = stack.get("targets")["activeTargets"]
        return bool(targets) and targets[0]["health"] == "up"

    eventually(target_up, 60, "the exporter target to be up")
    eventually(lambda: stack.query('sugon_up{hpc_cluster="e2e"} == 1'), 30, "sugon_up == 1")
    eventually(lambda: stack.query("sugon_queue_cpus"), 30, "queue capacity")
    time.sleep(3)  # a few scrapes, so that rate() over the counters has two points

    records = [r["record"] for g in yaml.safe_load((DEPLOY / "rules.yml").read_text())["groups"] for r in g["rules"]]
    for record in records:
        eventually(lambda record=record: stack.query(record), 20, f"recording rule {record}")
    for expr in dashboard_queries():
        assert stack.query(expr), f"dashboard query returned no data: {expr}"

    # Hostile label values from the API: quotes, backslashes, newlines, wide and odd unicode, a lone surrogate,
    # a very long name. Prometheus must keep scraping, and the series must arrive with the (sanitised) value.
    hostile = 'q"ue\\ue\nline 队列 🚀 \u202e \ud800 ' + "x" * 300
    stack.sim.add_jobs(2, queue=hostile, user='u"s\\er\n队', status="statR", cpus=1)
    expected = hostile[:256].encode("utf-8", "replace").decode("utf-8")

    def hostile_series() -> bool:
        return any(r["metric"].get("queue") == expected for r in stack.query('sugon_jobs{status="running"}'))

    eventually(hostile_series, 30, "the series with the hostile queue name")
    eventually(target_up, 30, "the target to stay up after the hostile labels")
    if stack.web_config is None:
        text = httpx.get(f"http://127.0.0.1:{stack.web.port}/metrics").text
        result = promtool_check_metrics(text)
        assert result.returncode == 0, result.stdout + result.stderr

    assert "firing" not in stack.alerts("SugonQueueBacklog")
    stack.sim.add_jobs(150, queue="debug", status="statQ", cpus=4)  # over the threshold of 100
    eventually(lambda: "firing" in stack.alerts("SugonQueueBacklog"), 30, "SugonQueueBacklog firing")

    stack.sim.stop()
    eventually(lambda: "firing" in stack.alerts("SugonClusterDown"), 30, "SugonClusterDown firing")
    assert "firing" in stack.alerts("SugonQueueBacklog")  # the outage did not resolve it
    assert stack.query('sugon_jobs{hpc_cluster="e2e",queue="debug",status="queued"} > 100')
