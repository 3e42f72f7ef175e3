"""End to end behind a real nginx (Debian's) reverse proxy in front of the simulator, on 127.0.0.1.

nginx runs as one unprivileged-friendly process (``daemon off``, ``master_process off``) with its prefix,
configuration, pid file, temporary directories and logs in the test's own directory, and is stopped at
teardown. Its access log records, for every request, the connection it came on and how the answer went
out; the exporter's own request count, nginx's log and the simulator's count must agree exactly, as must
the jobs the exporter publishes and the simulator's list.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from exporter.config import build_config
from exporter.service import Exporter
from exporter.simulator import Scheduler, Simulator
from tests.test_integration import STATUS
from tests.tools import find_tool

PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy")
LOG_FORMAT = "$connection|$connection_requests|$status|$https|$sent_http_content_encoding|$sent_http_transfer_encoding"

# nginx passes the simulator's Content-Length on; a sub_filter, which cannot know the length of what it
# writes, makes it answer chunked, in pieces as they come with proxy_buffering off.
CASES = {
    "keepalive_requests 5": "keepalive_requests 5;",
    "keepalive_timeout 1s": "keepalive_timeout 1s;",
    "gzip": "gzip on; gzip_types application/json; gzip_min_length 20;",
    "chunked": "proxy_buffering off; sub_filter_types application/json; sub_filter '\"~none~\"' '\"~none~\"';",
    "TLS with a private CA": "",
}


def nginx_executable() -> str:
    """Debian's nginx lives in /usr/sbin, which an unprivileged user's PATH may lack."""
    return shutil.which("nginx", path="/usr/sbin:/usr/local/sbin") or find_tool("nginx", "apt-get install nginx")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Nginx:
    """An nginx process proxying to ``upstream`` with extra ``directives`` in its location."""

    def __init__(self, prefix: Path, upstream: str, directives: str, certs: Path | None) -> None:
        self.prefix = prefix
        self.upstream = upstream.removeprefix("http://")
        self.directives = directives
        self.certs = certs
        self.port = 0
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"{'https' if self.certs else 'http'}://127.0.0.1:{self.port}"

    def _config(self) -> str:
        p = self.prefix
        tls = ""
        if self.certs is not None:
            tls = f"ssl_certificate {self.certs / 'server.pem'}; ssl_certificate_key {self.certs / 'server.key'};"
        return f"""
daemon off;
master_process off;
pid {p / "nginx.pid"};
error_log {p / "error.log"} info;
events {{ worker_connections 256; }}
http {{
    log_format counts '{LOG_FORMAT}';
    access_log {p / "access.log"} counts;
    client_body_temp_path {p / "client"};
    proxy_temp_path {p / "proxy"};
    fastcgi_temp_path {p / "fastcgi"};
    uwsgi_temp_path {p / "uwsgi"};
    scgi_temp_path {p / "scgi"};
    upstream simulator {{ server {self.upstream}; keepalive 8; }}
    server {{
        listen 127.0.0.1:{self.port}{" ssl" if self.certs else ""};
        {tls}
        location / {{
            proxy_pass http://simulator;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            {self.directives}
        }}
    }}
}}
"""

    def __enter__(self) -> Nginx:  # noqa: PYI034  (typing.Self needs Python 3.11)
        exe = nginx_executable()
        for _ in range(3):  # a port taken between choosing and binding: choose again
            self.port = free_port()
            (self.prefix / "nginx.conf").write_text(self._config())
            error_log = self.prefix / "error.log"
            self._process = subprocess.Popen(
                [exe, "-p", str(self.prefix), "-c", str(self.prefix / "nginx.conf"), "-e", str(error_log)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
            deadline = time.monotonic() + 10
            while self._process.poll() is None and time.monotonic() < deadline:
                try:
                    socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                    return self
                except OSError:
                    time.sleep(0.02)
            self.__exit__()
        raise AssertionError(f"nginx did not start: {error_log.read_text(errors='replace')[-2000:]}")

    def __exit__(self, *exc: object) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()

    def log(self) -> list[list[str]]:
        """The access log's lines, split: connection, its request number, status, $https, encoding, framing."""
        path = self.prefix / "access.log"
        return [line.split("|") for line in path.read_text().splitlines()] if path.exists() else []


@pytest.fixture
def sim() -> Iterator[Simulator]:
    s = Simulator(token="t", schedulers=[Scheduler("11", "A"), Scheduler("12", "B")], jobs=500, max_page=20, seed=9)
    s.serve()
    yield s
    s.stop()


def published(exporter: Exporter, sim: Simulator) -> tuple[dict[tuple[str, str], float], dict[tuple[str, str], int]]:
    """Jobs per (queue, status) as the exporter publishes them, and as the simulator lists them."""
    got: dict[tuple[str, str], float] = {}
    for family in exporter.registry.collect():
        for sample in family.samples:
            if sample.name == "sugon_jobs" and sample.value:
                got[(sample.labels["queue"], sample.labels["status"])] = sample.value
    want: dict[tuple[str, str], int] = {}
    for row in sim.rows():
        key = (row["queue"], STATUS[row["jobStatus"]])
        want[key] = want.get(key, 0) + 1
    return got, want


async def until(condition: Callable[[], bool], seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "nginx did not log every request"
        await asyncio.sleep(0.01)


def value(exporter: Exporter, name: str, **labels: str) -> float:
    found = exporter.registry.get_sample_value(name, {"hpc_cluster": "gw", **labels})
    return 0.0 if found is None else found


@pytest.mark.parametrize("case", list(CASES))
def test_polls_through_nginx_publish_exactly_the_simulators_jobs_with_no_api_error(
    case: str, sim: Simulator, tmp_path: Path, certs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    tls = certs if case.startswith("TLS") else None
    with Nginx(tmp_path, sim.url, CASES[case], tls) as nginx:
        cluster = {"name": "gw", "api_url": nginx.url + "/hpc/", "token": "t"}
        if tls is not None:
            cluster["ca_file"] = str(certs / "ca.pem")
        config = build_config({"page_size": 100, "concurrency": 4, "clusters": [cluster]}, environ={})
        exporter = Exporter(config, retry_backoff=0)
        poller = exporter.pollers[0]

        def logged_all() -> bool:  # nginx writes a request's line once it has sent the answer
            return len(nginx.log()) == value(exporter, "sugon_api_requests_total")

        async def polls() -> tuple[list[bool], int]:
            first = await poller.poll_once()
            await until(logged_all)
            boundary = len(nginx.log())
            if case == "keepalive_timeout 1s":
                await asyncio.sleep(1.2)  # the poll interval just above nginx's keep-alive timeout
            second = await poller.poll_once()
            await exporter.aclose()
            await until(logged_all)
            return [first, second], boundary

        succeeded, boundary = asyncio.run(polls())
        assert succeeded == [True, True]
        log = nginx.log()

    got, want = published(exporter, sim)
    assert got == {key: float(n) for key, n in want.items()} and sum(want.values()) == 500
    assert value(exporter, "sugon_polls_total", result="success") == 2
    assert value(exporter, "sugon_polls_total", result="failure") == 0
    errors = {
        r: value(exporter, "sugon_api_errors_total", reason=r) for r in ("timeout", "connection", "invalid_response")
    }
    assert errors == {"timeout": 0, "connection": 0, "invalid_response": 0}
    requests = value(exporter, "sugon_api_requests_total")
    assert requests == len(log) == sim.requests and requests >= 2 * 25  # 500 jobs at 20 a page, in two polls
    assert {line[2] for line in log} == {"200"}

    connections = {line[0] for line in log}
    per_connection = [int(line[1]) for line in log]
    if case == "keepalive_requests 5":
        assert max(per_connection) == 5 and len(connections) >= len(log) / 5
    else:
        assert max(per_connection) > 5  # connections were kept alive and reused
    if case == "keepalive_timeout 1s":
        before, after = log[:boundary], log[boundary:]
        assert not {line[0] for line in before} & {line[0] for line in after}  # nginx had closed every one
    if case == "gzip":
        assert {line[4] for line in log} == {"gzip"}
    if case == "chunked":
        assert {line[5] for line in log} == {"chunked"}
    if tls is not None:
        assert {line[3] for line in log} == {"on"}
