"""A stand-in Sugon platform on 127.0.0.1 for --demo, tests and benchmarks: the HPC job APIs and the AC host, over real HTTP."""

from __future__ import annotations

import base64
import json
import socket
import ssl
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from exporter.simulator.faults import HTML_PAGE, WIRE, Faults, spoil, with_duplicates
from exporter.simulator.logins import SimPlatform
from exporter.simulator.population import DEFAULT_USERS, LINGER_SECONDS, JobTruth, Population, Scheduler

__all__ = ["LINGER_SECONDS", "JobTruth", "Scheduler", "SimPlatform", "Simulator"]

AUTH_FAIL = {"msg": "auth_fail", "code": "10008", "data": "token is invalid"}


class _Server(ThreadingHTTPServer):
    # Many pollers at once (20 clusters × 8 requests) overflow the default listen backlog of 5.
    request_queue_size = 512


def _json(body: Any) -> bytes:
    """UTF-8 JSON as the platform sends it; text that UTF-8 cannot carry (a lone surrogate) goes as \\u escapes."""
    try:
        return json.dumps(body, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(body).encode("ascii")


def _envelope(code: str, msg: str, data: Any) -> dict[str, Any]:
    return {"code": code, "msg": msg, "data": data}


class Simulator:
    """One HPC host (job list, schedulers) and its AC host (logins, tokens, /center) on one port.

    The job APIs accept the static ``token`` (when not None) and any unexpired region token the
    simulated platform issued. The population changes only in ``step()`` (or on the demo's timer).
    """

    def __init__(
        self,
        token: str | None = "sim-token",
        schedulers: list[Scheduler] | None = None,
        users: tuple[str, ...] = DEFAULT_USERS,
        jobs: int = 200,
        max_page: int = 100,
        arrival_rate: float = 0.5,
        latency: float = 0.0,
        seed: int = 1,
        clock: Callable[[], float] = time.time,
        platform: SimPlatform | None = None,
        gateway_credentials: tuple[str, str] | None = None,
    ) -> None:
        self.token = token
        # A gateway in front that wants Basic auth: every request without these credentials gets 401.
        self.gateway = None
        if gateway_credentials is not None:
            pair = ":".join(gateway_credentials).encode("utf-8")
            self.gateway = "Basic " + base64.b64encode(pair).decode("ascii")
        self.gateway_refused = 0
        self.population = Population(schedulers, users, jobs, arrival_rate, seed, clock)
        self.platform = platform or SimPlatform(clock=clock)
        self.max_page = max_page
        self.latency = latency
        self.faults = Faults(seed)
        self.hang_seconds = 5.0  # how long a "hang" fault keeps the client waiting
        # The list changing while it is read: churn events per job-list request (see Population.churn), new
        # jobs at the front of the list or at its end.
        self.churn_per_request = 0.0
        self.churn_front = False
        self.ignore_job_id_filter = False  # a server that answers strJobId with the whole list
        self._churn_owed = 0.0
        self._lock = threading.Lock()
        self.requests = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.job_requests_refused = 0
        self._server: ThreadingHTTPServer | None = None
        self._scheme = "http"
        self._thread: threading.Thread | None = None
        self._evolver: threading.Thread | None = None
        self._stop_evolving = threading.Event()

    # The population, for tests and the demo.
    @property
    def schedulers(self) -> list[Scheduler]:
        """The simulated schedulers."""
        return self.population.schedulers

    def step(self, now: float | None = None) -> None:
        """Move the population on (see Population.step)."""
        self.population.step(now)

    def add_jobs(
        self,
        count: int,
        queue: str | None = None,
        status: str = "statQ",
        cpus: int | None = None,
        user: str | None = None,
    ) -> None:
        """Add jobs now (see Population.add_jobs)."""
        self.population.add_jobs(count, queue, status, cpus, user)

    def rows(self, scheduler_id: str | None = None) -> list[dict[str, Any]]:
        """The job list as the API renders it (see Population.rows)."""
        return self.population.rows(scheduler_id)

    def truth(self, scheduler_id: str | None = None) -> list[JobTruth]:
        """Each listed job's status, CPUs, run seconds and nodes, as the list shows them (see Population.truth)."""
        return self.population.truth(scheduler_id)

    def start_evolving(self, every: float = 5.0) -> None:
        """Step the population on a timer (for --demo)."""

        def loop() -> None:
            while not self._stop_evolving.wait(every):
                self.population.step()

        self._evolver = threading.Thread(target=loop, name="simulator-evolve", daemon=True)
        self._evolver.start()

    # The API.
    def _accepts(self, token: str | None) -> bool:
        return (self.token is not None and token == self.token) or self.platform.region_token_user(token) is not None

    def handle(
        self, method: str, path: str, query: dict[str, str], headers: dict[str, str], duplicates: bool = False
    ) -> tuple[int, dict[str, Any]]:
        """Answer one request: (HTTP status, JSON body). Header names are lower-case.

        With ``duplicates`` the job list holds some jobs twice (see faults.with_duplicates).
        """
        path = path.rstrip("/")
        answer = self.platform.handle(method, path, headers)
        if answer is not None:
            return answer
        if method == "GET" and path == "/ac/openapi/v2/center":
            return 200, self.platform.center(headers.get("token"), self.url)
        capacity = path.startswith("/hpc/openapi/v2/queuenames/users/")
        if method != "GET" or not (capacity or path in ("/hpc/openapi/v2/jobs", "/hpc/openapi/v2/cluster")):
            return 404, _envelope("404", "not found", None)
        if not self._accepts(headers.get("token")):
            with self._lock:
                self.job_requests_refused += 1
            return 200, dict(AUTH_FAIL)
        if capacity:
            sid = query.get("strJobManagerID", "").strip()
            if not sid.isdigit():
                return 200, _envelope("10003", "参数不全: strJobManagerID", None)
            return 200, _envelope("0", "success", self.population.capacity(sid))
        if path.endswith("/cluster"):
            data = [
                {
                    "id": int(s.id),
                    "text": s.name,
                    "JobManagerType": "SLURM",
                    "JobManagerAddr": "10.0.35.248",
                    "JobManagerPort": "6817",
                }
                for s in self.schedulers
            ]
            return 200, _envelope("0", "success", data)
        self._churn()
        sid = query.get("strClusterIDList", "").strip()
        if not sid:
            return 200, _envelope("10003", "参数不全: strClusterIDList", None)
        try:
            start = int(query.get("start", "0"))
            limit = int(query.get("limit", "25"))
            if start < 0 or limit < 1 or not sid.isdigit():
                raise ValueError
        except ValueError:
            return 200, _envelope("10004", "参数无效", None)
        filters = {
            "user": query.get("strJobOwner"),
            "jobName": query.get("strJobName"),
            "jobId": None if self.ignore_job_id_filter else query.get("strJobId"),
            "queue": query.get("strQueueName"),
            "jobStatus": query.get("strJobStat"),
        }
        rows = with_duplicates(self.rows(sid)) if duplicates else self.rows(sid)
        wanted = {k: v for k, v in filters.items() if v}
        if wanted:
            rows = [r for r in rows if all(str(r[k]) == v for k, v in wanted.items())]
        page = rows[start : start + min(limit, self.max_page)]
        return 200, _envelope("0", "success", {"total": len(rows), "list": page})

    def _churn(self) -> None:
        """The churn one job-list request sees: whole events as the fractions add up (deterministic)."""
        with self._lock:
            self._churn_owed += self.churn_per_request
            events = int(self._churn_owed)
            self._churn_owed -= events
        self.population.churn(events, self.churn_front)

    @property
    def departed(self) -> list[tuple[str, int]]:
        """Jobs that left the list by churn, never shown finished: (scheduler id, job id)."""
        return self.population.departed

    @property
    def arrived(self) -> list[tuple[str, int]]:
        """Jobs that arrived by churn: (scheduler id, job id)."""
        return self.population.arrived

    def serve(self, port: int = 0, tls: ssl.SSLContext | None = None) -> str:
        """Start serving on 127.0.0.1 (an ephemeral port by default), over TLS with ``tls``; returns the base URL."""
        sim = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Headers and body in one buffered write, sent at once: otherwise Nagle and delayed ACKs add
            # about 40 ms to every request on a kept-alive connection.
            wbufsize = 1 << 16
            disable_nagle_algorithm = True

            def _answer(self, method: str) -> None:
                if sim._server is None:
                    # Stopped: a kept-alive connection must not outlive the server, or an outage is no outage.
                    self.close_connection = True
                    return
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                if sim.gateway is not None and self.headers.get("Authorization") != sim.gateway:
                    with sim._lock:
                        sim.gateway_refused += 1
                    self._send(401, HTML_PAGE, "text/html", {"WWW-Authenticate": 'Basic realm="gateway"'})
                    return
                with sim._lock:
                    sim.requests += 1
                    sim.in_flight += 1
                    sim.max_in_flight = max(sim.max_in_flight, sim.in_flight)
                try:
                    if sim.latency:
                        time.sleep(sim.latency)
                    url = urlsplit(self.path)
                    query = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
                    headers = {k.lower(): v for k, v in self.headers.items()}
                    fault = sim.faults.take() if url.path.rstrip("/") == "/hpc/openapi/v2/jobs" else None
                    if fault == "hang":
                        time.sleep(sim.hang_seconds)
                    elif fault in WIRE:
                        self._wire_fault(str(fault))
                        return
                    elif fault == "ignore_offset":
                        query["start"] = "0"
                    elif fault == "total_drift":
                        sim.add_jobs(7)
                    status, body = sim.handle(method, url.path, query, headers, duplicates=fault == "duplicates")
                    if fault is not None:
                        body = spoil(fault, body)
                    self._send(status, _json(body))
                finally:
                    with sim._lock:
                        sim.in_flight -= 1

            def _send(
                self,
                status: int,
                payload: bytes,
                ctype: str = "application/json;charset=UTF-8",
                extra: dict[str, str] | None = None,
            ) -> None:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(payload)))
                for name, value in (extra or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(payload)

            def _wire_fault(self, kind: str) -> None:
                if kind.startswith("http_"):
                    code = int(kind[5:])
                    self._send(code, HTML_PAGE, "text/html", {"Retry-After": "1"} if code == 429 else None)
                elif kind == "html":
                    self._send(200, HTML_PAGE, "text/html")
                elif kind == "truncated":
                    body = json.dumps({"code": "0", "msg": "success", "data": {"total": 1, "list": []}}).encode()
                    self._send(200, body[: len(body) // 2])
                elif kind == "reset":
                    # Promise a body, send half of it, and drop the connection.
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json;charset=UTF-8")
                    self.send_header("Content-Length", "4096")
                    self.end_headers()
                    self.wfile.write(b'{"code": "0", "msg": "success", "data": {"total": 10, "li')
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)

            def do_GET(self) -> None:  # the stdlib's name
                self._answer("GET")

            def do_POST(self) -> None:  # the stdlib's name
                self._answer("POST")

            def log_message(self, format: str, *args: Any) -> None:  # the stdlib's signature
                pass

        self._server = _Server(("127.0.0.1", port), Handler)
        self._server.daemon_threads = True
        if tls is not None:  # handshakes in the accepting thread: a test stand-in, not a production server
            self._server.socket = tls.wrap_socket(self._server.socket, server_side=True)
        self._scheme = "https" if tls is not None else "http"
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), name="simulator", daemon=True)
        self._thread.start()
        return self.url

    @property
    def url(self) -> str:
        """Base URL of the running server."""
        if self._server is None:
            raise RuntimeError("the simulator is not serving")
        return f"{self._scheme}://127.0.0.1:{self._server.server_address[1]}"

    def stop(self) -> None:
        """Stop serving (connections are then refused) and stop evolving."""
        self._stop_evolving.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._evolver is not None:
            self._evolver.join(timeout=5)
