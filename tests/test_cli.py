"""The command line as a user runs it: exit codes, messages without tracebacks or secrets, --once, signals, --demo."""

from __future__ import annotations

import gzip
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import bcrypt
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

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


def running_python() -> tuple[str, str, str]:
    """(version, implementation, OS/machine) of this interpreter and host, read otherwise than the code does."""
    v = sys.version_info
    uname = os.uname()
    return f"{v.major}.{v.minor}.{v.micro}", sys.implementation.name, f"{uname.sysname.lower()}/{uname.machine}"


def version_lines() -> tuple[str, str, str]:
    """What --version says, its first line checked: (the Python version, its implementation, the platform)."""
    r = run("--version")
    assert r.returncode == 0 and r.stderr == ""
    name, python, platform = r.stdout.splitlines()
    assert name == f"sugon-exporter, version {__version__}"
    found = re.fullmatch(r"  python version: (\S+) \((\w+)\)", python)
    assert found, python
    assert platform.startswith("  platform:       ")
    return found.group(1), found.group(2), platform.split()[-1]


def test_version_prints_the_version_the_python_and_the_platform() -> None:
    python, implementation, platform = version_lines()
    assert (python, implementation.lower(), platform) == running_python()


def test_build_info_carries_what_version_prints(tmp_path: Path, sim: Simulator) -> None:
    r = run("--config", str(write_config(tmp_path, sim.url)), "--once", env={"SIM_TOKEN": SECRET})
    python, implementation, platform = version_lines()
    (family,) = [f for f in text_string_to_metric_families(r.stdout) if f.name == "sugon_exporter_build_info"]
    assert [(sample.labels, sample.value) for sample in family.samples] == [
        (
            {
                "version": __version__,
                "python_version": python,
                "python_implementation": implementation,
                "platform": platform,
            },
            1.0,
        )
    ]


def help_entries(text: str) -> dict[str, str]:
    """Each option of a --help text (by its long flag): what follows the flag, whitespace folded."""
    entries: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in text.splitlines():
        found = re.match(r"  (?:-\w, )?(--[\w.-]+)(.*)", line)
        if found:
            current = entries[found.group(1)] = [found.group(2)]
        elif current is not None and line.startswith("    "):
            current.append(line)
        else:
            current = None
    return {flag: " ".join(" ".join(parts).split()) for flag, parts in entries.items()}


def test_help_shows_the_default_of_every_flag_that_has_one() -> None:
    r = run("--help")
    assert r.returncode == 0
    entries = help_entries(r.stdout)
    with_defaults = {
        "--web.listen-address": "(default: listen_address of the configuration, 0.0.0.0:10863)",
        "--web.telemetry-path": "(default: /metrics)",
        "--log.level": "(default: info)",
        "--log.format": "(default: logfmt)",
    }
    without = {"--help", "--config", "--web.config.file", "--check-config", "--once", "--demo", "--version"}
    assert set(entries) == set(with_defaults) | without  # a new flag must be placed in one or the other
    for flag, default in with_defaults.items():
        assert entries[flag].endswith(default), entries[flag]
    for flag in without:
        assert "default" not in entries[flag], entries[flag]


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


def test_ready_is_503_until_the_first_poll_ends_and_the_probes_need_no_credentials(tmp_path: Path) -> None:
    """The API holds the first poll (a socket that never accepts); closing it fails the poll: a poll ended."""
    hashed = bcrypt.hashpw(b"pw", bcrypt.gensalt(rounds=4)).decode()
    (tmp_path / "web.yml").write_text(f"basic_auth_users:\n  prom: {hashed}\n")
    port = free_port()
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen(8)
        path = write_config(
            tmp_path,
            f"http://127.0.0.1:{held.getsockname()[1]}",
            extra=f'timeout: 120s\nlisten_address: "127.0.0.1:{port}"\nweb_config_file: {tmp_path / "web.yml"}\n',
        )
        proc = subprocess.Popen(
            [sys.executable, "-m", "exporter", "--config", str(path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "SIM_TOKEN": SECRET},
        )
        try:
            url = f"http://127.0.0.1:{port}"
            wait_for(url + "/-/healthy", "healthy", proc)
            ready = httpx.get(url + "/-/ready")
            assert (ready.status_code, ready.text) == (503, "not ready: 1 of 1 clusters not polled yet\n")
            assert httpx.get(url + "/metrics").status_code == 401
            assert httpx.get(url + "/metrics", auth=("prom", "pw")).status_code == 200
            held.close()  # the held request is reset: the first poll fails, and so ends
            assert wait_for(url + "/-/ready", "ready\n", proc, seconds=30) == "ready\n"
            assert httpx.get(url + "/-/healthy").status_code == 200
            assert httpx.get(url + "/metrics").status_code == 401
        finally:
            proc.send_signal(signal.SIGTERM)
            _, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    assert "Traceback" not in err and SECRET not in err


OPENMETRICS = "application/openmetrics-text; version=1.0.0"


def created_samples(text: str) -> list[str]:
    """The lines of an exposition that name a _created series (samples or HELP and TYPE lines)."""
    return [line for line in text.splitlines() if re.search(r"_created\b", line)]


def test_no_created_series_in_any_scrape_or_in_once(tmp_path: Path, sim: Simulator) -> None:
    """Text and OpenMetrics, gzip and not, from the cached rendering and the name[] one, and --once."""
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
        url = f"http://127.0.0.1:{port}/metrics"
        wait_for(url, 'sugon_polls_total{hpc_cluster="sim",result="success"} 1.0', proc)
        filtered = "?name[]=sugon_polls_total&name[]=sugon_api_requests_total&name[]=sugon_up"
        counted = 'sugon_polls_total{hpc_cluster="sim",result="success"} '
        for query in ("", filtered):
            for accept in ("", OPENMETRICS):
                for encoding in ("identity", "gzip"):
                    headers = {"Accept": accept, "Accept-Encoding": encoding}
                    with httpx.Client() as client:
                        answer = client.send(client.build_request("GET", url + query, headers=headers), stream=True)
                        raw = b"".join(answer.iter_raw())
                    assert answer.status_code == 200
                    assert answer.headers.get("content-encoding", "identity") == encoding
                    text = (gzip.decompress(raw) if encoding == "gzip" else raw).decode()
                    assert any(line.startswith(counted) for line in text.splitlines()), text
                    assert created_samples(text) == [], (query, accept, encoding)
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    once = run("--config", str(path), "--once", env={"SIM_TOKEN": SECRET})
    assert once.returncode == 0 and "sugon_polls_total{" in once.stdout
    assert created_samples(once.stdout) == []


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


def test_every_listen_address_given_serves_and_the_configs_is_then_unused(tmp_path: Path, sim: Simulator) -> None:
    first, second, configured = free_port(), free_port(), free_port()
    path = write_config(tmp_path, sim.url, extra=f'listen_address: "127.0.0.1:{configured}"\n')
    flags = ["--web.listen-address", f"127.0.0.1:{first}", "--web.listen-address", f"127.0.0.1:{second}"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "exporter", "--config", str(path), *flags],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "SIM_TOKEN": SECRET},
    )
    try:
        for port in (first, second):
            wait_for(f"http://127.0.0.1:{port}/metrics", 'sugon_up{hpc_cluster="sim"} 1.0', proc)
            assert httpx.get(f"http://127.0.0.1:{port}/-/healthy").status_code == 200
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"http://127.0.0.1:{configured}/metrics")
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=10)
        assert proc.returncode == 0, err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    started = next(logfmt_pairs(line) for line in err.splitlines() if "serving" in line)
    urls = f"http://127.0.0.1:{first}/metrics, http://127.0.0.1:{second}/metrics"
    assert started["url"] == urls and f"serving {urls} for sim" in started["msg"]


def test_a_listen_address_that_cannot_be_bound_fails_the_start_and_is_named(tmp_path: Path) -> None:
    free, other = free_port(), free_port()
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        path = write_config(tmp_path, "https://h:1")
        flags = [f"--web.listen-address=127.0.0.1:{port}" for port in (free, taken, other)]
        r = run("--config", str(path), *flags, env={"SIM_TOKEN": "x"}, timeout=20)
    assert r.returncode == 1
    (line,) = [logfmt_pairs(line) for line in r.stderr.splitlines() if "cannot listen" in line]
    assert line["msg"] == f"cannot listen on 127.0.0.1:{taken}: Address already in use"
    assert line["listen_address"] == f"127.0.0.1:{taken}" and "Traceback" not in r.stderr


def test_each_bad_listen_address_flag_is_a_config_error(tmp_path: Path) -> None:
    path = write_config(tmp_path, "https://h:1")
    flags = ["--web.listen-address", "127.0.0.1:1", "--web.listen-address", "x", "--web.listen-address", "::1:80"]
    r = run("--config", str(path), *flags, "--check-config", env={"SIM_TOKEN": "x"})
    assert r.returncode == 1
    assert r.stderr.splitlines() == [
        'config error: --web.listen-address: expected host:port like 0.0.0.0:10863, got "x"',
        'config error: --web.listen-address: IPv6 addresses need brackets, like [::]:10863, got "::1:80"',
    ]


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
        assert 'sugon_per_job_status{hpc_cluster="demo-wuxi",job_id=' in body  # the demo has per_job on
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


def test_a_web_config_the_toolkit_loads_with_a_caveat_is_checked_with_a_warning(tmp_path: Path, certs: Path) -> None:
    path = write_config(tmp_path, "https://h:1")
    web = tmp_path / "web.yml"
    web.write_text(
        f"tls_server_config:\n  cert_file: {certs}/server.pem\n  key_file: {certs}/server.key\n"
        "  client_auth_type: VerifyClientCertIfGiven\nrate_limit:\n  interval: 1s\n"
    )
    r = run("--config", str(path), "--web.config.file", str(web), "--check-config", env={"SIM_TOKEN": "x"})
    assert r.returncode == 0, r.stderr
    assert (
        f"web_config_file {web}: tls_server_config.client_auth_type: VerifyClientCertIfGiven without client_ca_file"
        in r.stderr
    )
    assert "rate_limit.burst: 0 refuses every request (429)" in r.stderr
    assert "Traceback" not in r.stderr


# ---- --log.level, --log.format, --web.telemetry-path ---------------------------------------------


def test_help_documents_the_promslog_flags_and_hides_the_old_spelling() -> None:
    r = run("--help")
    assert r.returncode == 0
    assert "--log.level {debug,info,warn,error}" in r.stdout and "--log.format {logfmt,json}" in r.stdout
    assert "--web.telemetry-path PATH" in r.stdout
    assert "--log-level" not in r.stdout


@pytest.mark.parametrize(
    ("args", "complaint"),
    [
        (["--log.level", "verbose"], "argument --log.level: invalid choice: 'verbose'"),
        (["--log.level", "warning"], "argument --log.level: invalid choice: 'warning'"),  # promslog's names only
        (["--log-level", "trace"], "argument --log-level: invalid choice: 'trace'"),
        (["--log.format", "text"], "argument --log.format: invalid choice: 'text'"),
        (["--web.telemetry-path", "metrics"], "argument --web.telemetry-path: expected a URL path like /metrics"),
        (["--web.telemetry-path", "/a b"], "argument --web.telemetry-path: expected a URL path like /metrics"),
        (["--web.telemetry-path", "/m?x=1"], "argument --web.telemetry-path: expected a URL path like /metrics"),
        (["--web.telemetry-path", "/"], "argument --web.telemetry-path: / is the exporter's own page"),
        (["--web.telemetry-path", "/healthz"], "argument --web.telemetry-path: /healthz is the exporter's own page"),
        (["--web.telemetry-path", "/-/healthy"], "argument --web.telemetry-path: /-/healthy is the exporter's own"),
        (["--web.telemetry-path", "/-/ready"], "argument --web.telemetry-path: /-/ready is the exporter's own page"),
    ],
)
def test_a_bad_log_or_path_flag_is_a_usage_error(args: list[str], complaint: str) -> None:
    r = run("--demo", "--check-config", *args)
    assert r.returncode == 2 and complaint in r.stderr, r.stderr
    assert r.stderr.startswith("usage: sugon-exporter") and "Traceback" not in r.stderr


def logfmt_pairs(line: str) -> dict[str, str]:
    """The keys and (unquoted) values of one logfmt line; the whole line must be key=value pairs."""
    pair = r'([A-Za-z0-9_.-]+)=("(?:[^"\\]|\\.)*"|[^ "=]*)'
    assert re.fullmatch(rf"{pair}(?: {pair})*", line), line
    return {k: json.loads(v) if v.startswith('"') else v for k, v in re.findall(pair, line)}


@pytest.mark.parametrize("fmt", ["logfmt", "json", None])
def test_once_writes_every_stderr_line_in_the_chosen_format_and_no_secret(
    tmp_path: Path, sim: Simulator, fmt: str | None
) -> None:
    path = write_config(tmp_path, sim.url)
    chosen = ["--log.format", fmt] if fmt else []  # logfmt is the default
    r = run("--config", str(path), "--once", "--log.level", "debug", *chosen, env={"SIM_TOKEN": SECRET})
    assert r.returncode == 0, r.stderr
    lines = r.stderr.splitlines()
    read = [json.loads(line) for line in lines] if fmt == "json" else [logfmt_pairs(line) for line in lines]
    assert all(list(line)[:4] == ["time", "level", "source", "msg"] for line in read)
    assert any(line["msg"].startswith("HTTP Request: GET") for line in read)  # debug really was on
    assert any(line.get("cluster") == "sim" and line["level"] == "debug" for line in read)
    assert SECRET not in r.stderr + r.stdout


def test_the_old_log_level_flag_still_works_and_takes_warning(tmp_path: Path, sim: Simulator) -> None:
    path = write_config(tmp_path, sim.url)
    quiet = run("--config", str(path), "--once", "--log-level", "WARNING", env={"SIM_TOKEN": "wrong-token"})
    assert quiet.returncode == 1
    levels = [logfmt_pairs(line)["level"] for line in quiet.stderr.splitlines()]
    assert levels and set(levels) <= {"warn", "error"} and "error" in levels
    deprecated = [logfmt_pairs(line) for line in quiet.stderr.splitlines() if "deprecated" in line]
    assert [(d["level"], d["flag"]) for d in deprecated] == [("warn", "--log-level")]
    assert "use --log.level" in deprecated[0]["msg"]
    assert (
        "deprecated" not in run("--config", str(path), "--once", "--log.level", "warn", env={"SIM_TOKEN": "x"}).stderr
    )
    chatty = run("--config", str(path), "--once", "--log-level", "debug", env={"SIM_TOKEN": "wrong-token"})
    assert "level=debug" in chatty.stderr


def test_the_metrics_are_served_on_the_telemetry_path_and_not_on_metrics(tmp_path: Path, sim: Simulator) -> None:
    port = free_port()
    path = write_config(tmp_path, sim.url, extra=f'listen_address: "127.0.0.1:{port}"\n')
    proc = subprocess.Popen(
        [sys.executable, "-m", "exporter", "--config", str(path), "--web.telemetry-path", "/sugon/metrics"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "SIM_TOKEN": SECRET},
    )
    try:
        wait_for(f"http://127.0.0.1:{port}/sugon/metrics", 'sugon_up{hpc_cluster="sim"} 1.0', proc)
        assert httpx.get(f"http://127.0.0.1:{port}/metrics").status_code == 404
        assert httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200
        # the status page links to where the metrics are, and says so in its JSON
        page = httpx.get(f"http://127.0.0.1:{port}/")
        assert '<a href="./sugon/metrics">Metrics</a>' in page.text
        as_json = httpx.get(f"http://127.0.0.1:{port}/", headers={"Accept": "application/json"}).json()
        assert as_json["metrics_path"] == "/sugon/metrics"
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=10)
        assert proc.returncode == 0, err
        started = next(logfmt_pairs(line) for line in err.splitlines() if "serving" in line)
        assert started["url"] == f"http://127.0.0.1:{port}/sugon/metrics"
        assert f"serving http://127.0.0.1:{port}/sugon/metrics for sim" in started["msg"]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
