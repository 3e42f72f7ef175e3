"""Clients that misbehave on purpose by the hundred, against the /metrics server in a child process with its
threads and descriptors counted (read from /proc): half-sent requests, idle connections past the open-files
limit, an exhausted descriptor table, attackers that leave. test_hostile_requests.py has the cases one client
at a time. Every client is on 127.0.0.1.
"""

from __future__ import annotations

import os
import resource
import select
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from exporter.web import Limits
from tests.helpers import read_answer

ROOT = Path(__file__).resolve().parent.parent
GET = b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"
# The server in a child process: argv[1] is the open-files limit to set (soft and hard; 0: leave it).
# Commands on stdin: "hog" opens files until none can be opened, "release" closes them; EOF stops it.
CHILD = r"""
import logging, os, resource, sys
if int(sys.argv[1]):
    resource.setrlimit(resource.RLIMIT_NOFILE, (int(sys.argv[1]), int(sys.argv[1])))
logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(name)s %(message)s")
from exporter.render import Exposition
from exporter.endpoints import make_app
from exporter.web import WebServer
server = WebServer(make_app(Exposition(["kunshan"])), "127.0.0.1", 0)
server.start()
print(server.port, flush=True)
hog = []
for line in sys.stdin:
    if line.strip() == "hog":
        try:
            while True:
                hog.append(open(os.devnull))
        except OSError:
            print(len(hog), flush=True)
    elif line.strip() == "release":
        for f in hog:
            f.close()
        hog.clear()
        print("released", flush=True)
server.stop()
"""


def wait_until(condition: Callable[[], bool], seconds: float = 10.0, what: str = "") -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"not within {seconds} s: {what}"
        time.sleep(0.02)


class Child:
    """The server in a child process, and what it holds (from /proc)."""

    def __init__(self, log: Path, limit: int = 0, script: str = CHILD, args: tuple[str, ...] = ()) -> None:
        self.log = log
        self.proc = subprocess.Popen(
            [sys.executable, "-c", script, str(limit), *args],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log.open("w"),
            text=True,
        )
        assert self.proc.stdout is not None and self.proc.stdin is not None
        self.stdin, self.stdout = self.proc.stdin, self.proc.stdout
        self.port = int(self.stdout.readline())

    def threads(self) -> int:
        return len(os.listdir(f"/proc/{self.proc.pid}/task"))

    def fds(self) -> int:
        return len(os.listdir(f"/proc/{self.proc.pid}/fd"))

    def rss(self) -> int:
        """Resident memory of the child, in bytes."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise AssertionError("no VmRSS line")

    def cpu(self) -> float:
        """Seconds of CPU the child has used (user + system)."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def command(self, line: str) -> str:
        self.stdin.write(line + "\n")
        self.stdin.flush()
        return self.stdout.readline().strip()

    def stop(self) -> str:
        """Stop the child; its log."""
        if self.proc.poll() is None:
            self.stdin.close()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.log.read_text()


@pytest.fixture
def child(tmp_path: Path) -> Iterator[Callable[..., Child]]:
    started: list[Child] = []

    def start(limit: int = 0) -> Child:
        started.append(Child(tmp_path / f"server{len(started)}.log", limit))
        return started[-1]

    # The clients of these tests need more descriptors than the usual soft limit of 1,024.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 4096 <= hard or (soft < hard < 4096):
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 4096), hard))
    yield start
    for c in started:
        c.stop()


def connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=5)


def scrape(port: int, request: bytes = GET) -> str:
    """The status line of one request on a new connection (5 s at most)."""
    with connect(port) as sock:
        sock.sendall(request)
        return read_answer(sock)[0]


def closed_by_server(sock: socket.socket, seconds: float = 5.0) -> bool:
    """True when the server ends the connection within ``seconds`` without sending anything."""
    sock.settimeout(seconds)
    try:
        return sock.recv(65536) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def still_open(sock: socket.socket) -> bool:
    """True when the connection is open and nothing has arrived (asked without waiting)."""
    poller = select.poll()  # select() cannot take descriptors above 1,023
    poller.register(sock, select.POLLIN)
    return not poller.poll(0)


# 600 half-sent requests, idle connections past the descriptor limit, an exhausted descriptor table,
# an attacker who leaves (section C, item 12)


def test_600_half_sent_requests_hold_no_thread_and_a_scrape_is_answered_meanwhile(child: Callable[..., Child]) -> None:
    server = child()
    fds, threads = server.fds(), server.threads()
    attackers = [connect(server.port) for _ in range(600)]
    for sock in attackers:
        sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")  # and never the empty line
    held = min(600, Limits().max_connections)  # beyond the cap, the oldest make room
    wait_until(lambda: server.fds() >= fds + held, what="the server holds the connections it may")
    assert server.threads() == threads <= 64
    # Half a head deadline at most: a server that answers only when the attackers' heads time out fails.
    with connect(server.port) as sock:
        sock.settimeout(5)
        sock.sendall(GET)
        assert read_answer(sock)[0] == "HTTP/1.1 200 OK"
    assert server.threads() <= threads + Limits().workers  # the workers start as requests come
    for sock in attackers:
        sock.close()


def test_1100_idle_connections_at_a_limit_of_1024_descriptors_neither_stop_scrapes_nor_spin(
    child: Callable[..., Child],
) -> None:
    server = child(limit=1024)
    idle = [connect(server.port) for _ in range(1100)]
    assert scrape(server.port) == "HTTP/1.1 200 OK"  # after the 1,100 in the accept queue
    cpu = server.cpu()
    time.sleep(1.0)  # a window in which the idle connections do nothing: the server should not either
    assert server.cpu() - cpu < 0.25
    assert server.fds() < 1024
    # The least recently active made room: the first connections were ended, the last are open.
    assert closed_by_server(idle[0]) and still_open(idle[-1])
    assert scrape(server.port) == "HTTP/1.1 200 OK"
    for sock in idle:
        sock.close()


def test_accepting_with_no_descriptor_left_backs_off_logs_once_and_recovers(child: Callable[..., Child]) -> None:
    server = child(limit=128)
    assert int(server.command("hog")) > 0  # every descriptor the child may have is now taken
    waiting = [connect(server.port) for _ in range(3)]  # queued by the kernel; accept() fails with EMFILE
    cpu = server.cpu()
    time.sleep(1.5)
    assert server.cpu() - cpu < 0.3  # backing off, not spinning on a readable socket
    assert server.command("release") == "released"
    assert scrape(server.port) == "HTTP/1.1 200 OK"
    log = server.stop()
    assert log.count("cannot accept connections: Too many open files") == 1, log
    assert log.count("accepting connections again") == 1, log
    for sock in waiting:
        sock.close()


def test_with_no_descriptor_left_an_idle_connection_makes_room_for_a_scrape(child: Callable[..., Child]) -> None:
    server = child(limit=128)
    fds = server.fds()
    first, second = connect(server.port), connect(server.port)
    wait_until(lambda: server.fds() == fds + 2, what="both idle connections accepted")
    assert int(server.command("hog")) > 0
    assert scrape(server.port) == "HTTP/1.1 200 OK"
    assert closed_by_server(first) and still_open(second)
    first.close()
    second.close()


def test_a_scrape_is_answered_as_soon_as_2000_attackers_leave(child: Callable[..., Child]) -> None:
    server = child()
    fds, threads = server.fds(), server.threads()
    attackers = [connect(server.port) for _ in range(2000)]
    for sock in attackers:
        sock.sendall(b"GET /metrics HTTP/1.1\r\n")
    held = min(2000, Limits().max_connections, resource.getrlimit(resource.RLIMIT_NOFILE)[1] * 3 // 4)
    wait_until(lambda: server.fds() >= fds + held, what="the server holds the connections it may")
    assert server.threads() == threads <= 64
    for sock in attackers:
        sock.close()
    assert scrape(server.port) == "HTTP/1.1 200 OK"
    wait_until(lambda: server.fds() <= fds, what="the server closes the 2,000 connections")
    assert server.threads() <= threads + Limits().workers
