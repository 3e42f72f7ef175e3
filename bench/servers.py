"""Two HTTP servers of the exporter side by side, alternately in one run (issue 25): the one in this tree and
one in another tree (the hand-made server before aiohttp: ``git archive 52c543d exporter | tar -x -C DIR``).

Each serves, in a child process, the cached /metrics of one cluster of 40,000 running jobs (40 queues × 1,000
users, per user: 6.6 MB of text) while its own counters change, as during a poll, over plain HTTP and TLS.
Measured: scrape latency of two scrapers each scraping every second (as two Prometheus servers do, gzip,
kept-alive connections) and of 20 scraping as fast as answers come; resident memory with 60 TLS clients that
never read their answer, then with 200 more connections that never finish a TLS handshake; threads.

    python bench/servers.py --old DIR [--rounds 3] [--seconds 30]
"""

from __future__ import annotations

import argparse
import json
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from tests.conftest import make_pki
from tests.helpers import read_answer
from tests.test_connection_memory import SLOW_GETS, send_queues, settled, waiting_to_be_read
from tests.test_hostile_clients import Child, wait_until

# argv[1] is the open-files limit (unused), argv[2] the tree whose exporter serves, argv[3] the certificates.
CHILD = r"""
import ssl, sys, threading, time
sys.path.insert(0, sys.argv[2])
from exporter.config import build_config
from exporter.counting.snapshot import SnapshotBuilder
from exporter.model import ClusterState
from exporter.service import Exporter
try:
    from exporter.endpoints import make_app
    from exporter.web import WebServer
except ImportError:
    from exporter.serving.web import WebServer, make_app
from tests.reference import Job, add_job

config = build_config(
    {"clusters": [{"name": "a", "api_url": "https://h:1", "token": "t"}], "max_users": 1000}, environ={}
)
exporter = Exporter(config)
builder = SnapshotBuilder(per_user=True, max_users=1000)
for i in range(40000):
    add_job(builder, Job(str(i), f"q{i % 40}", f"user{i // 40 % 1000}", "running", "statR", 2))
now = time.time()
exporter.store.publish(ClusterState("a", True, now, 1.0, None, builder.build("a", now, now + 3600, 40000, ["q0"])))
tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
tls.load_cert_chain(sys.argv[3] + "/server.pem", sys.argv[3] + "/server.key")
app = make_app(exporter.exposition)
plain, secure = WebServer(app, "127.0.0.1", 0), WebServer(app, "127.0.0.1", 0, tls)
plain.start()
secure.start()
observer = exporter.metrics.observer("a")


def requests():
    while True:
        observer.request_sent()
        time.sleep(0.005)


threading.Thread(target=requests, daemon=True).start()
print(secure.port, flush=True)
print(plain.port, flush=True)
sys.stdin.read()
plain.stop()
secure.stop()
"""


def scrapers_child(port: int, seconds: float, concurrency: int, pace: float) -> None:
    """Run in a separate process: ``concurrency`` scrapers for ``seconds``, each on a kept-alive connection,
    asking for gzip and taking the body as sent (not inflated: the server is measured), each ``pace`` seconds
    after its last answer; print the latencies (JSON)."""
    latencies: list[float] = []
    stop = time.monotonic() + seconds

    def scraper() -> None:
        with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
            buffered = bytearray()
            while time.monotonic() < stop:
                started = time.perf_counter()
                sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nAccept-Encoding: gzip\r\n\r\n")
                assert read_answer(sock, buffered)[0] == "HTTP/1.1 200 OK"
                latencies.append(time.perf_counter() - started)
                time.sleep(pace)

    threads = [threading.Thread(target=scraper) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    print(json.dumps(latencies))


def scrapes(port: int, seconds: float, concurrency: int, pace: float) -> list[float]:
    """Latencies (s) of scrapers_child, run in a process of its own."""
    args = [str(port), str(seconds), str(concurrency), str(pace)]
    out = subprocess.run([sys.executable, __file__, "_scrapers", *args], capture_output=True, text=True, check=True)
    return list(json.loads(out.stdout))


def floods(server: Child, certs: Path) -> tuple[int, int, int, int]:
    """RSS idle, with 60 slow TLS readers, with 200 stalled handshakes more; threads meanwhile."""
    client_tls = ssl.create_default_context(cafile=str(certs / "ca.pem"))

    def tls_connect() -> ssl.SSLSocket:
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        return client_tls.wrap_socket(sock, server_hostname="127.0.0.1")

    for encoding in ("gzip", "identity"):  # both texts rendered and kept
        with tls_connect() as sock:
            sock.sendall(f"GET /metrics HTTP/1.1\r\nHost: x\r\nAccept-Encoding: {encoding}\r\n\r\n".encode())
            read_answer(sock)
    idle = settled(server.rss)
    readers = [tls_connect() for _ in range(60)]
    for i, sock in enumerate(readers):
        sock.sendall(SLOW_GETS[i % len(SLOW_GETS)])
    wait_until(
        lambda: all(waiting_to_be_read(s) > 0 for s in readers) and len(send_queues(server.port)) >= 60,
        what="every slow reader's answer under way",
    )
    with_readers = settled(server.rss)
    stalled = [socket.create_connection(("127.0.0.1", server.port), timeout=10) for _ in range(200)]
    with_all = settled(server.rss)
    threads = server.threads()
    for connection in [*readers, *stalled]:
        connection.close()
    return idle, with_readers, with_all, threads


def main() -> int:
    if len(sys.argv) == 6 and sys.argv[1] == "_scrapers":
        scrapers_child(int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5]))
        return 0
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--old", required=True, help="a tree with the other server's exporter package")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seconds", type=float, default=30.0)
    args = p.parse_args()
    trees = {"old": str(Path(args.old).resolve()), "new": str(HERE.parent)}
    results: dict[str, dict[str, list[float]]] = {name: {} for name in trees}
    with tempfile.TemporaryDirectory() as tmp:
        certs = make_pki(Path(tmp))
        for _ in range(args.rounds):
            for name, tree in trees.items():
                server = Child(Path(tmp) / f"{name}.log", 0, CHILD, (tree, str(certs)))
                try:
                    plain = int(server.stdout.readline())
                    scrapes(plain, 1.0, 1, 0.0)  # the gzipped text rendered once, as by the first scrape
                    two = scrapes(plain, args.seconds, 2, 1.0)
                    twenty = scrapes(plain, args.seconds / 3, 20, 0.0)
                    idle, with_readers, with_all, threads = floods(server, certs)
                finally:
                    server.stop()
                r = results[name]
                for key, value in (
                    ("two p50", statistics.median(two)),
                    ("two p99", sorted(two)[int(0.99 * (len(two) - 1))]),
                    ("twenty p50", statistics.median(twenty)),
                    ("twenty p99", sorted(twenty)[int(0.99 * (len(twenty) - 1))]),
                    ("twenty scrapes/s", len(twenty) / (args.seconds / 3)),
                    ("MB per slow reader", (with_readers - idle) / 60 / 1e6),
                    ("MB with all", (with_all - idle) / 1e6),
                    ("threads", threads),
                ):
                    r.setdefault(key, []).append(value)
                print(name, {k: round(v[-1] * (1000 if "p" in k[-3:] else 1), 2) for k, v in r.items()}, flush=True)
    print("| | " + " | ".join(trees) + " |\n|---|" + "---|" * len(trees))
    for key in results["new"]:
        scale, unit = (1000, " ms") if key.endswith(("p50", "p99")) else (1, "")
        cells = [", ".join(f"{v * scale:.1f}" for v in results[name][key]) + unit for name in trees]
        print(f"| {key} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
