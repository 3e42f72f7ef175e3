"""What connections cost the /metrics server in memory, measured from outside: the exporter's large, cached
/metrics served over TLS by a child process, its resident memory read from /proc/<pid>/status and the
kernel's send queues from /proc/net/tcp. Clients that never read their answer and TLS handshakes that never
finish hold no more than the README says under "The HTTP server" (figures in bench/RESULTS.md, issue 23).
Every client is on 127.0.0.1.
"""

from __future__ import annotations

import fcntl
import socket
import ssl
import struct
import termios
import time
from collections.abc import Callable
from pathlib import Path

from tests.helpers import read_answer
from tests.test_hostile_clients import Child, wait_until

# The exporter with one cluster of 40,000 running jobs (40 queues × 1,000 users): megabytes of /metrics, more
# than the kernel buffers of a connection, rendered once and served from the cache like every scrape. argv[1]
# is the open-files limit (0: leave it), argv[2] the directory with server.pem and server.key.
CHILD = r"""
import ssl, sys, time
from exporter.config import build_config
from exporter.model import Budget, ClusterState, Served
from exporter.service import Exporter
from exporter.endpoints import make_app
from exporter.web import WebServer
from tests.polls import Polls, job

config = build_config(
    {"clusters": [{"name": "a", "api_url": "https://h:1", "token": "t"}], "max_users": 1000}, environ={}
)
exporter = Exporter(config)
now = time.time()
jobs = [job(str(i), f"q{i % 40}", "running", user=f"user{i // 40 % 1000}", cpus=2) for i in range(40000)]
families = Polls(Budget(max_users=1000), cluster="a").poll(jobs, now).families
exporter.exposition.publish(ClusterState("a", True, now, 1.0, None, 1, jobs=Served(now, now + 3600, tuple(families))))
tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
tls.load_cert_chain(sys.argv[2] + "/server.pem", sys.argv[2] + "/server.key")
server = WebServer(make_app(exporter.exposition), "127.0.0.1", 0, lambda: tls)
server.start()
print(server.port, flush=True)
sys.stdin.read()
server.stop()
"""

# The README's figures: at most 128 connections, each holding at most about 450 kB of the process's memory
# (a TLS one whose client does not read, on Python 3.11 and later; 500 kB here, for what else the process
# allocates meanwhile) and 192 KiB of kernel send buffer, and all of them, flood after flood, at most 100 MB.
MAX_CONNECTIONS = 128
PROCESS_BYTES = 500_000
PROCESS_TOTAL = 100_000_000
KERNEL_BYTES = 192 * 1024
SLOW_READERS = 60
STALLED = 200  # with the slow readers, more connections than the cap: the stalled ones make room
# What the slow readers ask for: the whole text, gzipped, and the largest family alone (3.2 MB).
SLOW_GETS = [
    f"GET /metrics{query} HTTP/1.1\r\nHost: x\r\nAccept-Encoding: {encoding}\r\n\r\n".encode()
    for query, encoding in (("", "identity"), ("", "gzip"), ("?name[]=sugon_user_jobs", "identity"))
]


def send_queues(port: int) -> list[int]:
    """Bytes the kernel holds to send on each of the server's established connections on ``port``."""
    queued = []
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "01":  # 01: ESTABLISHED
            queued.append(int(fields[4].split(":")[0], 16))
    return queued


def waiting_to_be_read(sock: socket.socket) -> int:
    """Bytes that have arrived on ``sock`` and are not read yet (as sent: TLS records)."""
    return int(struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.FIONREAD, b"\0\0\0\0"))[0])


def settled(measure: Callable[[], int], within: float = 20.0) -> int:
    """``measure`` once it has stopped changing by more than 1 MB over half a second."""
    deadline = time.monotonic() + within
    last = measure()
    while True:
        time.sleep(0.5)
        now = measure()
        if abs(now - last) < 1_000_000 or time.monotonic() > deadline:
            return now
        last = now


def test_slow_readers_and_stalled_tls_handshakes_hold_at_most_the_documented_memory(
    tmp_path: Path, certs: Path
) -> None:
    server = Child(tmp_path / "server.log", script=CHILD, args=(str(certs),))
    try:
        client_tls = ssl.create_default_context(cafile=str(certs / "ca.pem"))

        def tls_connect() -> ssl.SSLSocket:
            return client_tls.wrap_socket(
                socket.create_connection(("127.0.0.1", server.port), timeout=10), server_hostname="127.0.0.1"
            )

        def scrape(encoding: str = "gzip") -> str:
            with tls_connect() as sock:
                sock.sendall(f"GET /metrics HTTP/1.1\r\nHost: x\r\nAccept-Encoding: {encoding}\r\n\r\n".encode())
                status, headers, body = read_answer(sock)
                return status if len(body) == int(headers["content-length"]) > 100_000 else "short answer"

        def wave() -> tuple[int, int]:
            """Open the slow readers and the stalled handshakes; RSS with the slow readers alone, and with all."""
            readers = [tls_connect() for _ in range(SLOW_READERS)]
            for i, sock in enumerate(readers):
                sock.sendall(SLOW_GETS[i % len(SLOW_GETS)])  # and never read
            wait_until(
                lambda: (
                    all(waiting_to_be_read(s) > 0 for s in readers) and len(send_queues(server.port)) >= SLOW_READERS
                ),
                what="every slow reader's answer under way",
            )
            with_readers = settled(server.rss)
            queued = send_queues(server.port)
            assert max(queued) <= KERNEL_BYTES, f"{max(queued)} bytes queued in the kernel for one connection"
            stalled = [socket.create_connection(("127.0.0.1", server.port), timeout=10) for _ in range(STALLED)]
            assert scrape() == "HTTP/1.1 200 OK"  # accepted after every connection above: a scrape gets in
            wait_until(lambda: server.fds() <= fds + MAX_CONNECTIONS, what="at most the cap held")
            with_all = settled(server.rss)
            for connection in [*readers, *stalled]:
                connection.close()
            wait_until(lambda: server.fds() <= fds, what="every connection closed")
            return with_readers, with_all

        assert scrape() == scrape("identity") == "HTTP/1.1 200 OK"  # both texts rendered and kept
        fds, idle = server.fds(), settled(server.rss)
        with_readers, with_all = wave()
        per_reader = (with_readers - idle) / SLOW_READERS
        assert per_reader <= PROCESS_BYTES, f"{per_reader / 1000:.0f} kB for each slow reader"
        assert with_all - idle <= PROCESS_TOTAL, f"{(with_all - idle) / 1e6:.0f} MB for {MAX_CONNECTIONS} connections"
        # What a flood leaves behind is kept by the C allocator and used again: the next flood stays within it.
        again = wave()[1]
        assert again - idle <= PROCESS_TOTAL, f"{(again - idle) / 1e6:.0f} MB in a second flood"
    finally:
        server.stop()
