"""The command line as a user runs it: exit codes, messages without tracebacks or secrets, --once, signals, --demo."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from exporter import __version__
from exporter.simulator import Simulator
from tests.helpers import promtool_check_metrics

SECRET = "s3cr3t-t0ken-do-not-print"


def run(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "exporter", *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def sim() -> Iterator[Simulator]:
    s = Simulator(token=SECRET, jobs=150, max_page=40)
    s.serve()
    yield s
    s.stop()


def write_config(tmp_path: Path, api_url: str, extra: str = "") -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(
        "interval: 1s\npage_size: 100\n" + extra + "clusters:\n"
        f"  - name: sim\n    api_url: {api_url}\n    token: ${{SIM_TOKEN}}\n    cluster_ids: [1638523853]\n"
    )
    return path


def test_version() -> None:
    r = run("--version")
    assert r.returncode == 0 and r.stdout.strip() == f"sugon-exporter {__version__}"


def test_no_config_is_a_usage_error() -> None:
    r = run()
    assert r.returncode == 2 and "--config FILE is required" in r.stderr


def test_check_config_accepts_a_good_file(tmp_path: Path) -> None:
    path = write_config(tmp_path, "https://h:1")
    r = run("--config", str(path), "--check-config", env={"SIM_TOKEN": SECRET})
    assert r.returncode == 0 and "OK, 1 cluster(s): sim" in r.stdout
    assert SECRET not in r.stdout + r.stderr


def test_check_config_names_every_problem_without_traceback_or_secret(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(
        f"interval: fast\nclusters:\n  - name: a\n    api_url: https://h:1\n    token: {SECRET}\n"
        "  - name: b\n    api_url: https://h:1\n    token_file: /nonexistent/token\n"
    )
    r = run("--config", str(path), "--check-config")
    assert r.returncode == 1
    assert r.stderr.splitlines() == [
        'config error: interval: expected a duration like 30s, got "fast"',
        "config error: clusters[1].token_file: no such file",
    ]
    assert "Traceback" not in r.stderr and SECRET not in r.stderr + r.stdout


def test_a_bad_listen_address_on_the_command_line_is_a_config_error(tmp_path: Path) -> None:
    path = write_config(tmp_path, "https://h:1")
    r = run("--config", str(path), "--web.listen-address", "nonsense", "--check-config", env={"SIM_TOKEN": "x"})
    assert r.returncode == 1
    assert 'config error: --web.listen-address: expected host:port like 0.0.0.0:10863, got "nonsense"' in r.stderr


def test_once_prints_a_valid_exposition_of_the_simulators_jobs(tmp_path: Path, sim: Simulator) -> None:
    path = write_config(tmp_path, sim.url)
    r = run("--config", str(path), "--once", env={"SIM_TOKEN": SECRET})
    assert r.returncode == 0, r.stderr
    running = sum(1 for row in sim.rows() if row["jobStatus"] == "statR")
    total = sum(
        float(line.rsplit(" ", 1)[1])
        for line in r.stdout.splitlines()
        if line.startswith("sugon_jobs{") and 'status="running"' in line
    )
    assert total == running
    assert 'sugon_up{hpc_cluster="sim"} 1.0' in r.stdout
    assert promtool_check_metrics(r.stdout).returncode == 0
    assert SECRET not in r.stdout + r.stderr


def test_debug_logging_never_prints_the_token(tmp_path: Path, sim: Simulator) -> None:
    path = write_config(tmp_path, sim.url)
    r = run("--config", str(path), "--once", "--log-level", "debug", env={"SIM_TOKEN": SECRET})
    assert r.returncode == 0
    assert "HTTP Request: GET" in r.stderr  # debug really was on, httpx included
    assert SECRET not in r.stderr + r.stdout


def test_once_exits_non_zero_when_a_cluster_fails(tmp_path: Path, sim: Simulator) -> None:
    path = write_config(tmp_path, sim.url)
    r = run("--config", str(path), "--once", env={"SIM_TOKEN": "wrong-token"})
    assert r.returncode == 1
    assert 'sugon_up{hpc_cluster="sim"} 0.0' in r.stdout
    assert "renew the token" in r.stderr and "Traceback" not in r.stderr


def wait_for(url: str, text: str, proc: subprocess.Popen[str], seconds: float = 15) -> str:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()[1]
        try:
            body = httpx.get(url, timeout=2).text
            if text in body:
                return body
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"{text!r} did not appear at {url}")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_the_daemon_serves_metrics_and_stops_cleanly_on_a_signal(tmp_path: Path, sim: Simulator, sig: int) -> None:
    port = free_port()
    path = write_config(tmp_path, sim.url, extra=f'listen_address: "127.0.0.1:{port}"\n')
    proc = subprocess.Popen(
        [sys.executable, "-m", "exporter", "--config", str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "SIM_TOKEN": SECRET},
    )
    try:
        wait_for(f"http://127.0.0.1:{port}/metrics", 'sugon_up{hpc_cluster="sim"} 1.0', proc)
        assert httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200
        started = time.monotonic()
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=10)
        assert proc.returncode == 0, err
        assert time.monotonic() - started < 5
        assert "Traceback" not in err and SECRET not in err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def test_a_port_in_use_is_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        path = write_config(tmp_path, "https://h:1", extra=f'listen_address: "127.0.0.1:{port}"\n')
        r = run("--config", str(path), env={"SIM_TOKEN": "x"}, timeout=20)
    assert r.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}: Address already in use" in r.stderr
    assert "Traceback" not in r.stderr


def test_demo_serves_real_metrics_with_no_config() -> None:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "exporter", "--demo", "--web.listen-address", f"127.0.0.1:{port}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        body = wait_for(f"http://127.0.0.1:{port}/metrics", 'sugon_up{hpc_cluster="demo-wuxi"} 1.0', proc)
        wait_for(f"http://127.0.0.1:{port}/metrics", 'sugon_up{hpc_cluster="demo-kunshan"} 1.0', proc)
        assert 'sugon_jobs{hpc_cluster="demo-wuxi",queue=' in body
        running = [
            float(line.rsplit(" ", 1)[1])
            for line in body.splitlines()
            if line.startswith('sugon_job_cpus{hpc_cluster="demo-wuxi"') and 'status="running"' in line
        ]
        assert sum(running) > 0
        body = httpx.get(f"http://127.0.0.1:{port}/metrics").text
        assert 'sugon_token_refreshes_total{hpc_cluster="demo-kunshan",method="login",result="success"} 1.0' in body
        assert 'sugon_token_expiry_timestamp_seconds{hpc_cluster="demo-kunshan"}' in body
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=10)
        assert proc.returncode == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def test_a_bad_web_config_is_a_start_up_error_naming_the_key(tmp_path: Path) -> None:
    path = write_config(tmp_path, "https://h:1")
    web = tmp_path / "web.yml"
    web.write_text("basic_auth_users:\n  prometheus: plain-s3cr3t\n")
    r = run("--config", str(path), "--web.config.file", str(web), "--check-config", env={"SIM_TOKEN": "x"})
    assert r.returncode == 1
    assert f"config error: web_config_file {web}: basic_auth_users.prometheus: expected a bcrypt hash" in r.stderr
    assert "s3cr3t" not in r.stderr and "Traceback" not in r.stderr
