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
from exporter.endpoints import make_app
from exporter.service import Exporter
from exporter.simulator import Simulator
from exporter.web import WebServer
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
        until(lambda: all(exporter.exposition.get(n).up for n in ("same", "changed", "gone")))
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
        assert exporter.pollers[0] is same and exporter.exposition.get("same").up  # its state and data stay
        assert exporter.exposition.get("changed").jobs is None  # another API, maybe: afresh
        assert list(exporter.exposition.states()) == ["same", "changed", "new"]
        until(lambda: bool(exporter.exposition.get("changed").up and exporter.exposition.get("new").up))
        after = exporter.registry.get_sample_value("sugon_polls_total", {"hpc_cluster": "same", "result": "success"})
        assert after is not None and after >= polls
        text = b"".join(exporter.exposition.body()).decode()
        assert 'hpc_cluster="gone"' not in text and 'sugon_up{hpc_cluster="new"} 1.0' in text
    finally:
        exporter.stop()


def test_after_a_reload_ready_waits_for_the_first_poll_of_every_added_or_changed_cluster(sim: Simulator) -> None:
    config = {"interval": "0.2s", "clusters": [cluster("same", sim.url), cluster("changed", sim.url)]}
    exporter = Exporter(build_config(config, environ={}))
    server = WebServer(make_app(exporter.exposition), "127.0.0.1", 0)
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
            assert exporter.exposition.get("same").up  # the unchanged cluster kept its state
        until(lambda: httpx.get(ready).status_code == 200)  # closed: the held polls failed, so they ended
        assert exporter.exposition.get("changed").up is False and exporter.exposition.get("new").up is False
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


def test_a_reload_that_turns_per_user_off_starts_afresh_and_a_new_listen_address_waits_for_a_restart(
    tmp_path: Path, sim: Simulator
) -> None:
    port = free_port()
    path = tmp_path / "config.yaml"
    entry = f"clusters:\n  - {{name: a, api_url: {sim.url}, token: {TOKEN}, cluster_ids: [1638523853]}}\n"
    path.write_text(f"interval: 1s\nlisten_address: 127.0.0.1:{port}\n" + entry)
    url = f"http://127.0.0.1:{port}/metrics"
    proc = subprocess.Popen(
        [sys.executable, "-m", "exporter", "--config", str(path)],
        stderr=subprocess.PIPE,
        text=True,
        env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"PYTHONPATH": str(Path.cwd())},
    )

    def scrape() -> str:
        try:
            return httpx.get(url, timeout=2).text
        except httpx.HTTPError:
            return ""

    try:
        until(lambda: "sugon_user_jobs{" in scrape())
        path.write_text(f"interval: 1s\nper_user: false\nlisten_address: 127.0.0.1:{free_port()}\n" + entry)
        proc.send_signal(signal.SIGHUP)
        until(lambda: 'sugon_up{hpc_cluster="a"} 1.0' in (text := scrape()) and "sugon_user_jobs{" not in text)
        assert metric(scrape(), "sugon_config_last_reload_successful") == 1
        assert "sugon_per_job_status{" not in scrape()
        path.write_text(f"interval: 1s\nper_user: false\nper_job: true\nlisten_address: 127.0.0.1:{port}\n" + entry)
        proc.send_signal(signal.SIGHUP)
        until(lambda: "sugon_per_job_status{" in scrape())
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert "configuration reloaded (per_user changed: every cluster starts afresh)" in err
    assert "configuration reloaded (per_job changed: every cluster starts afresh)" in err
    assert f"listen_address changed: it takes effect at the next start; still serving 127.0.0.1:{port}" in err
    assert "Traceback" not in err


def per_job_series(exporter: Exporter, name: str) -> tuple[int, float | None]:
    """How many jobs of cluster ``name`` have per-job series, and its sugon_per_job_folded."""
    families = {f.name: f for f in exporter.registry.collect()}
    jobs = [s for s in families["sugon_per_job_status"].samples if s.labels["hpc_cluster"] == name]
    return len(jobs), exporter.registry.get_sample_value("sugon_per_job_folded", {"hpc_cluster": name})


def test_a_reload_restarts_a_cluster_whose_per_job_budget_or_users_changed_and_per_job_itself_needs_a_new_exporter(
    sim: Simulator,
) -> None:
    config: dict[str, object] = {
        "interval": "0.2s",
        "per_job": True,
        "max_job_series": 5,
        "clusters": [cluster("a", sim.url), cluster("b", sim.url)],
    }
    exporter = Exporter(build_config(config, environ={}))
    assert not exporter.can_reload(build_config({**config, "per_job": False}, environ={}))
    assert exporter.can_reload(build_config({**config, "max_job_series": 6}, environ={}))
    listed = len(sim.rows())
    assert listed == 90
    exporter.start()
    try:
        until(lambda: exporter.exposition.get("a").up and exporter.exposition.get("b").up)
        assert per_job_series(exporter, "a") == per_job_series(exporter, "b") == (5, listed - 5)
        config["clusters"] = [cluster("a", sim.url, max_job_series=7), cluster("b", sim.url)]
        summary = exporter.reload(build_config(config, environ={}))
        assert summary == "unchanged: b; changed: a; added: none; removed: none"
        until(lambda: per_job_series(exporter, "a") == (7, listed - 7))
        config["clusters"] = [cluster("a", sim.url, max_job_series=7), cluster("b", sim.url, job_series_users=["x"])]
        summary = exporter.reload(build_config(config, environ={}))
        assert summary == "unchanged: a; changed: b; added: none; removed: none"
        until(lambda: per_job_series(exporter, "b") == (0, listed))  # no job of user "x": every job folded
        assert per_job_series(exporter, "a") == (7, listed - 7)
    finally:
        exporter.stop()


def counters(exporter: Exporter, name: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of every counter and histogram of cluster ``name`` (not the _created ones)."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in exporter.registry.collect()
        if family.type in ("counter", "histogram")
        for s in family.samples
        if s.labels.get("hpc_cluster") == name and not s.name.endswith("_created")
    }


def counted(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float]) -> set[str]:
    """The families (sample names) with a value above 0."""
    return {name for (name, _), value in samples.items() if value}


def test_a_reload_that_changes_a_cluster_restarts_every_counter_of_it_from_zero_and_no_other(sim: Simulator) -> None:
    old_api, new_api = Simulator(token=TOKEN, jobs=90, max_page=40), Simulator(token=TOKEN, jobs=90, max_page=40)
    old_api.serve()
    new_api.serve()
    config = {"interval": "0.2s", "clusters": [cluster("same", sim.url), cluster("changed", old_api.url)]}
    exporter = Exporter(build_config(config, environ={}))
    exporter.start()
    try:

        def polls(name: str) -> float:
            labels = {"hpc_cluster": name, "result": "success"}
            return exporter.registry.get_sample_value("sugon_polls_total", labels) or 0.0

        def a_poll_of_each_after_this() -> None:
            changed, same = polls("changed") + 1, polls("same") + 1  # a poll may be under way: the one after it
            until(lambda: polls("changed") > changed and polls("same") > same)

        # Jobs submitted, started and ended, and a failed attempt, so that the cluster to change counts
        # something in every family the simulator can make count.
        old_api.faults.inject("http_500")
        now = time.time()
        for step in range(1, 12):
            for api in (sim, old_api):
                api.add_jobs(2)
                api.step(now + 1800 * step)
            a_poll_of_each_after_this()
        every = {
            "sugon_polls_total",
            "sugon_api_requests_total",
            "sugon_api_errors_total",
            "sugon_jobs_submitted_total",
            "sugon_jobs_started_total",
            "sugon_jobs_ended_total",
            "sugon_job_wait_seconds_count",
            "sugon_job_run_seconds_count",
            "sugon_job_cpu_seconds_total",
            "sugon_user_job_cpu_seconds_total",
        }
        assert every <= counted(counters(exporter, "changed")), counted(counters(exporter, "changed"))
        assert every - {"sugon_api_errors_total"} <= counted(counters(exporter, "same"))

        same = counters(exporter, "same")
        config["clusters"] = [cluster("same", sim.url), cluster("changed", new_api.url, interval="1h")]
        assert exporter.reload(build_config(config, environ={})) == (
            "unchanged: same; changed: changed; added: none; removed: none"
        )
        until(lambda: polls("changed") > 0)  # the new poller's first poll has ended, and no other will come

        # As at a restart: every counter of the changed cluster counts from 0, here its one poll and the
        # requests the new API has seen, and nothing else.
        changed = counters(exporter, "changed")
        assert changed.pop(("sugon_polls_total", (("hpc_cluster", "changed"), ("result", "success")))) == 1
        assert changed.pop(("sugon_api_requests_total", (("hpc_cluster", "changed"),))) == new_api.requests > 0
        assert {key: value for key, value in changed.items() if value} == {}
        assert ("sugon_job_cpu_seconds_total", (("hpc_cluster", "changed"), ("queue", "debug"))) in changed

        # The unchanged cluster's counters go on from where they were.
        after = counters(exporter, "same")
        assert all(after[key] >= value for key, value in same.items())
    finally:
        exporter.stop()
        old_api.stop()
        new_api.stop()
