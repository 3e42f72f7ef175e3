"""SIGHUP reloads the configuration and the web config, as Prometheus and its exporters do."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import bcrypt
import httpx
import pytest

from exporter.config import build_config
from exporter.service import Exporter
from exporter.serving.web import WebServer, make_app
from exporter.simulator import Simulator
from tests.test_cli import free_port

TOKEN = "reload-token"


@pytest.fixture
def sim() -> Iterator[Simulator]:
    s = Simulator(token=TOKEN, jobs=90, max_page=40)
    s.serve()
    yield s
    s.stop()


def cluster(name: str, url: str, **extra: object) -> dict[str, object]:
    return {"name": name, "api_url": url, "token": TOKEN, "cluster_ids": [1638523853], **extra}


def until(check: Callable[[], bool], seconds: float = 20.0) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "the condition did not come true in time"
        time.sleep(0.05)


def test_a_reload_keeps_unchanged_clusters_restarts_changed_ones_and_drops_removed_ones(sim: Simulator) -> None:
    config = {
        "interval": "0.2s",
        "clusters": [cluster("same", sim.url), cluster("changed", sim.url), cluster("gone", sim.url)],
    }
    exporter = Exporter(build_config(config, environ={}))
    exporter.start()
    try:
        until(lambda: all(exporter.store.get(n).up for n in ("same", "changed", "gone")))
        same = exporter.pollers[0]
        polls = exporter.registry.get_sample_value("sugon_polls_total", {"hpc_cluster": "same", "result": "success"})
        assert polls
        config["clusters"] = [
            cluster("same", sim.url),
            cluster("changed", sim.url, page_size=30),
            cluster("new", sim.url),
        ]
        summary = exporter.reload(build_config(config, environ={}))
        assert summary == "unchanged: same; changed: changed; added: new; removed: gone"
        assert exporter.pollers[0] is same and exporter.store.get("same").up  # its state and data stay
        assert exporter.store.get("changed").snapshot is None  # another API, maybe: afresh
        assert list(exporter.store.states()) == ["same", "changed", "new"]
        until(lambda: bool(exporter.store.get("changed").up and exporter.store.get("new").up))
        after = exporter.registry.get_sample_value("sugon_polls_total", {"hpc_cluster": "same", "result": "success"})
        assert after is not None and after >= polls
        text = exporter.exposition.render(exporter.store.states(), False, False).decode()
        assert 'hpc_cluster="gone"' not in text and 'sugon_up{hpc_cluster="new"} 1.0' in text
    finally:
        exporter.stop()


def test_after_a_reload_ready_waits_for_the_first_poll_of_every_added_or_changed_cluster(sim: Simulator) -> None:
    config = {"interval": "0.2s", "clusters": [cluster("same", sim.url), cluster("changed", sim.url)]}
    exporter = Exporter(build_config(config, environ={}))
    server = WebServer(make_app(exporter.registry, exporter.store, None, exporter.exposition), "127.0.0.1", 0)
    server.start()
    exporter.start()
    ready = f"http://127.0.0.1:{server.port}/-/ready"
    try:
        until(lambda: httpx.get(ready).status_code == 200)
        with socket.socket() as held:  # an API that never answers: the first poll waits for its timeout
            held.bind(("127.0.0.1", 0))
            held.listen(8)
            api = f"http://127.0.0.1:{held.getsockname()[1]}"
            config["clusters"] = [
                cluster("same", sim.url),
                cluster("changed", api, timeout="120s"),
                cluster("new", api, timeout="120s"),
            ]
            exporter.reload(build_config(config, environ={}))
            answer = httpx.get(ready)
            assert (answer.status_code, answer.text) == (503, "not ready: 2 of 3 clusters not polled yet\n")
            assert exporter.store.get("same").up  # the unchanged cluster kept its state
        until(lambda: httpx.get(ready).status_code == 200)  # closed: the held polls failed, so they ended
        assert exporter.store.get("changed").up is False and exporter.store.get("new").up is False
    finally:
        exporter.stop()
        server.stop()


def metric(text: str, name: str) -> float | None:
    found = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
    return float(found.group(1)) if found else None


def test_sighup_reloads_the_config_and_the_web_config_and_an_invalid_one_changes_nothing(
    tmp_path: Path, sim: Simulator
) -> None:
    port = free_port()
    path = tmp_path / "config.yaml"
    web = tmp_path / "web.yml"
    base = f"interval: 1s\nweb_config_file: {web}\nclusters:\n"
    entry = "  - {{name: {name}, api_url: {url}, token: {token}, cluster_ids: [1638523853]}}\n"
    web.write_text("")
    path.write_text(base + entry.format(name="a", url=sim.url, token=TOKEN))
    url = f"http://127.0.0.1:{port}/metrics"
    proc = subprocess.Popen(
        [sys.executable, "-m", "exporter", "--config", str(path), "--web.listen-address", f"127.0.0.1:{port}"],
        stderr=subprocess.PIPE,
        text=True,
        env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"PYTHONPATH": str(Path.cwd())},
    )

    def scrape(auth: tuple[str, str] | None = None) -> str:
        try:
            return httpx.get(url, timeout=2, auth=auth).text
        except httpx.HTTPError:
            return ""

    try:
        until(lambda: 'sugon_up{hpc_cluster="a"} 1.0' in scrape())
        started = metric(scrape(), "sugon_config_last_reload_success_timestamp_seconds")
        assert metric(scrape(), "sugon_config_last_reload_successful") == 1 and started

        # A second cluster, and basic auth on /metrics.
        hashed = bcrypt.hashpw(b"pw", bcrypt.gensalt(rounds=4)).decode()
        web.write_text(f"basic_auth_users:\n  prom: {hashed}\n")
        path.write_text(
            base + entry.format(name="a", url=sim.url, token=TOKEN) + entry.format(name="b", url=sim.url, token=TOKEN)
        )
        proc.send_signal(signal.SIGHUP)
        until(lambda: 'sugon_up{hpc_cluster="b"} 1.0' in scrape(("prom", "pw")))
        assert httpx.get(url, timeout=2).status_code == 401
        text = scrape(("prom", "pw"))
        assert 'sugon_up{hpc_cluster="a"} 1.0' in text
        reloaded = metric(text, "sugon_config_last_reload_success_timestamp_seconds")
        assert metric(text, "sugon_config_last_reload_successful") == 1 and reloaded and reloaded > started

        # An invalid config: every problem logged, the running one stays.
        path.write_text(base + "  - {name: a, api_url: nowhere, token: t, page_size: 0}\n")
        proc.send_signal(signal.SIGHUP)
        until(lambda: metric(scrape(("prom", "pw")), "sugon_config_last_reload_successful") == 0)
        text = scrape(("prom", "pw"))
        assert 'sugon_up{hpc_cluster="b"} 1.0' in text
        assert metric(text, "sugon_config_last_reload_success_timestamp_seconds") == reloaded
        assert proc.poll() is None
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert "configuration reloaded (unchanged: a; changed: none; added: b; removed: none)" in err
    assert "config error: clusters[0].api_url: expected an http:// or https:// URL" in err
    assert "config error: clusters[0].page_size: expected a whole number from 1 to 100000, got 0" in err
    assert "Traceback" not in err
