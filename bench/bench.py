"""Benchmarks of the exporter at realistic settings, against the simulator in its own process on 127.0.0.1.
Every figure is taken alternately in one run (this machine is shared and its speed moves within seconds), and
goes to bench/RESULTS.md. From the repository root, after `pip install .`:

    python bench/bench.py cpu [--old DIR]       # a later 200k-job poll against the leanest stdlib pager
    python bench/bench.py memory [--old DIR]    # peak RSS over polls of 200k and 1M jobs
    python bench/bench.py scrapes --old DIR     # two scrapers every second while 200k-job polls run
    python bench/bench.py gzip                  # a gzipped /metrics body: stitched onto the cached deflate or not

DIR is another tree's exporter package, for comparison: ``git archive REV exporter | tar -x -C DIR``. Each
exporter runs in a child process with its tree first on the path.
"""

from __future__ import annotations

import argparse
import collections
import http.client
import json
import os
import queue
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import httpx

HERE = Path(__file__).resolve().parent
TREE = str(HERE.parent)
SID = "1638523853"
TOKEN = "bench-token"

# A child: one exporter of one cluster, polled POLLS times; prints the (wall, CPU) seconds of each poll and the
# process's peak RSS in MB. argv: URL POLLS.
POLLER = r"""
import asyncio, json, re, sys, time
from exporter.config import build_config
from exporter.service import Exporter
config = {"page_size": 500, "concurrency": 8, "timeout": "120s",
          "clusters": [{"name": "c0", "api_url": sys.argv[1], "token": "bench-token", "cluster_ids": [1638523853]}]}
exporter = Exporter(build_config(config, environ={}))
async def polls():
    out = []
    for _ in range(int(sys.argv[2])):
        wall, cpu = time.perf_counter(), time.process_time()
        assert await exporter.pollers[0].poll_once()
        out.append((time.perf_counter() - wall, time.process_time() - cpu))
    await exporter.aclose()
    return out
polls = asyncio.run(polls())
peak = int(re.search(r"VmHWM:\s+(\d+)", open("/proc/self/status").read()).group(1)) / 1024
print(json.dumps({"polls": polls, "peak_mb": peak}))
"""

# A child: one poll of a 200k-job cluster, then ROUNDS gzipped /metrics bodies built alternately as the exporter
# builds them (the cached text's deflate and a per-scrape tail) and by gzip of the whole text, level 1. argv: URL ROUNDS.
GZIPPER = r"""
import asyncio, gzip, json, sys, time
from exporter.config import build_config
from exporter.service import Exporter
config = {"page_size": 500, "concurrency": 8, "timeout": "120s",
          "clusters": [{"name": "c0", "api_url": sys.argv[1], "token": "bench-token", "cluster_ids": [1638523853]}]}
exporter = Exporter(build_config(config, environ={}))
async def poll():
    assert await exporter.pollers[0].poll_once()
    await exporter.aclose()
asyncio.run(poll())
ex = exporter.exposition
stitched, whole = [], []
for _ in range(int(sys.argv[2])):
    t = time.perf_counter()
    body = b"".join(ex.body(compressed=True))
    stitched.append(time.perf_counter() - t)
    t = time.perf_counter()
    gzip.compress(b"".join(ex.body()), compresslevel=1, mtime=0)
    whole.append(time.perf_counter() - t)
print(json.dumps({"text": len(b"".join(ex.body())), "gzipped": len(body), "stitched": stitched, "whole": whole}))
"""


def start_simulator(*args: str) -> tuple[subprocess.Popen[str], str]:
    """A simulator process (bench/simserver.py) with these arguments, and its URL."""
    proc = subprocess.Popen(
        [sys.executable, str(HERE / "simserver.py"), *args],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": TREE},
    )
    assert proc.stdout is not None
    return proc, proc.stdout.readline().strip()


@contextmanager
def simulator(jobs: int) -> Iterator[str]:
    """A simulator process of ``jobs`` jobs (pages of at most 100 rows) for the block; yields its URL."""
    proc, url = start_simulator("--jobs", str(jobs), "--max-page", "100")
    params: dict[str, str | int] = {"strClusterIDList": SID, "limit": 1}
    httpx.get(url + "/hpc/openapi/v2/jobs", params=params, headers={"token": TOKEN}, timeout=300)  # renders the list
    try:
        yield url
    finally:
        proc.terminate()
        proc.wait()


def polls(tree: str, url: str, count: int) -> dict[str, object]:
    """``count`` polls by the exporter of ``tree`` in a fresh process."""
    done = subprocess.run(
        [sys.executable, "-c", POLLER, url, str(count)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": tree},
        cwd=tempfile.gettempdir(),
        check=False,
    )
    if done.returncode:
        raise RuntimeError(done.stderr[-3000:])
    result: dict[str, object] = json.loads(done.stdout)
    return result


def lean_pager(url: str, jobs: int, page: int = 100, threads: int = 8) -> tuple[float, float]:
    """(CPU, wall) seconds of the leanest stdlib pager: ``threads`` threads on kept-alive http.client connections,
    json.loads, and a Counter by (queue, status)."""
    parts = urlsplit(url)
    offsets: queue.SimpleQueue[int] = queue.SimpleQueue()
    for start in range(0, jobs, page):
        offsets.put(start)
    counts: collections.Counter[tuple[str, str]] = collections.Counter()
    lock = threading.Lock()

    def work() -> None:
        conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port)
        mine: collections.Counter[tuple[str, str]] = collections.Counter()
        while True:
            try:
                start = offsets.get_nowait()
            except queue.Empty:
                break
            conn.request(
                "GET",
                f"/hpc/openapi/v2/jobs?strClusterIDList={SID}&start={start}&limit={page}",
                headers={"token": TOKEN},
            )
            rows = json.loads(conn.getresponse().read())["data"]["list"]
            mine.update((r["queue"], r["jobStatus"]) for r in rows)
        conn.close()
        with lock:
            counts.update(mine)

    cpu, wall = time.process_time(), time.perf_counter()
    pool = [threading.Thread(target=work) for _ in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    assert sum(counts.values()) == jobs
    return time.process_time() - cpu, time.perf_counter() - wall


def bench_cpu(trees: dict[str, str], rounds: int) -> None:
    """Later polls (the 2nd and 3rd of a fresh process) of each tree, then the pager, round after round."""
    later: dict[str, list[tuple[float, float]]] = {name: [] for name in trees}
    ratios: dict[str, list[float]] = {name: [] for name in trees}
    pager: list[float] = []
    pager_wall: list[float] = []
    with simulator(200_000) as url:
        for _ in range(rounds):
            cpus = {}
            for name, tree in trees.items():
                got = polls(tree, url, 3)["polls"]
                assert isinstance(got, list)
                later[name] += [tuple(p) for p in got[1:]]
                cpus[name] = statistics.median(p[1] for p in got[1:])
            pager_cpu, pager_seconds = lean_pager(url, 200_000)
            pager.append(pager_cpu)
            pager_wall.append(pager_seconds)
            for name in trees:
                ratios[name].append(cpus[name] / pager[-1])
    print(
        f"pager CPU: median {statistics.median(pager):.2f} s ({min(pager):.2f}-{max(pager):.2f}), wall median "
        f"{statistics.median(pager_wall):.2f} s ({min(pager_wall):.2f}-{max(pager_wall):.2f}), {rounds} rounds"
    )
    for name in trees:
        cpu = [c for _, c in later[name]]
        wall = [w for w, _ in later[name]]
        print(
            f"{name}: later poll CPU median {statistics.median(cpu):.2f} s ({min(cpu):.2f}-{max(cpu):.2f}), "
            f"wall median {statistics.median(wall):.2f} s ({min(wall):.2f}-{max(wall):.2f}); "
            f"CPU / pager per round: median {statistics.median(ratios[name]):.2f} "
            f"({min(ratios[name]):.2f}-{max(ratios[name]):.2f})"
        )


def bench_memory(trees: dict[str, str], rounds: int) -> None:
    """Peak RSS of a fresh process over three polls of 200k and of 1M jobs."""
    for jobs in (200_000, 1_000_000):
        peaks: dict[str, list[float]] = {name: [] for name in trees}
        with simulator(jobs) as url:
            for _ in range(rounds):
                for name, tree in trees.items():
                    peak = polls(tree, url, 3)["peak_mb"]
                    assert isinstance(peak, float)
                    peaks[name].append(peak)
        for name, values in peaks.items():
            print(f"{name}: {jobs:,} jobs, peak RSS over 3 polls: " + ", ".join(f"{v:.0f}" for v in values) + " MB")


def scrape_latencies(url: str, seconds: float, scrapers: int = 2) -> list[float]:
    """Latencies of ``scrapers`` scrapers, each every second (gzip, kept-alive), for ``seconds``."""
    latencies: list[float] = []
    stop = time.monotonic() + seconds

    def scraper() -> None:
        with httpx.Client(timeout=60) as client:
            while time.monotonic() < stop:
                started = time.perf_counter()
                assert client.get(url).status_code == 200
                latencies.append(time.perf_counter() - started)
                time.sleep(max(0.0, 1.0 - (time.perf_counter() - started)))

    pool = [threading.Thread(target=scraper) for _ in range(scrapers)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    return latencies


def bench_scrapes(trees: dict[str, str], rounds: int, seconds: float) -> None:
    """Each tree's daemon polls a 200k-job cluster back to back (interval 1 s) while two scrapers scrape
    every second; tree after tree, round after round."""
    results: dict[str, list[float]] = {name: [] for name in trees}
    with simulator(200_000) as sim, tempfile.TemporaryDirectory() as folder:
        config = Path(folder) / "config.yaml"
        config.write_text(
            f"listen_address: 127.0.0.1:{19_863}\ninterval: 1s\ntimeout: 120s\nconcurrency: 8\n"
            f"clusters:\n  - name: c0\n    api_url: {sim}\n    token: {TOKEN}\n    cluster_ids: [{SID}]\n"
        )
        for _ in range(rounds):
            for name, tree in trees.items():
                daemon = subprocess.Popen(
                    [sys.executable, "-m", "exporter", "--config", str(config), "--log.level", "warn"],
                    env={**os.environ, "PYTHONPATH": tree},
                    cwd=folder,
                )
                try:
                    url = "http://127.0.0.1:19863/metrics"
                    deadline = time.monotonic() + 300
                    while 'sugon_up{hpc_cluster="c0"} 1.0' not in _get(url):  # the first poll has ended
                        assert time.monotonic() < deadline and daemon.poll() is None
                        time.sleep(1)
                    results[name] += scrape_latencies(url, seconds)
                finally:
                    daemon.terminate()
                    daemon.wait()
    for name, values in results.items():
        ordered = sorted(values)
        p50, p99 = ordered[len(ordered) // 2], ordered[int(0.99 * (len(ordered) - 1))]
        print(
            f"{name}: {len(values)} scrapes, p50 {p50 * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms, max {ordered[-1] * 1000:.1f} ms"
        )


def bench_gzip(rounds: int) -> None:
    """The CPU a gzipped scrape costs at 200k jobs: built on the cached deflate against gzip of the whole text."""
    with simulator(200_000) as url:
        done = subprocess.run(
            [sys.executable, "-c", GZIPPER, url, str(rounds)],
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONPATH": TREE},
            cwd=tempfile.gettempdir(),
            check=True,
        )
    got = json.loads(done.stdout)
    print(f"/metrics: {got['text']:,} bytes, {got['gzipped']:,} gzipped")
    for name in ("stitched", "whole"):
        ordered = sorted(got[name])
        p50, p99 = ordered[len(ordered) // 2], ordered[int(0.99 * (len(ordered) - 1))]
        print(f"{name}: p50 {p50 * 1000:.2f} ms, p99 {p99 * 1000:.2f} ms over {len(ordered)} bodies")


def _get(url: str) -> str:
    try:
        return httpx.get(url, timeout=30).text
    except httpx.HTTPError:
        return ""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["cpu", "memory", "scrapes", "gzip"])
    parser.add_argument("--old", metavar="DIR", help="another tree to compare with (holding its exporter/)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=60.0, help="scrapes: seconds of scraping per round")
    args = parser.parse_args()
    trees = {"this tree": TREE, **({"old tree": args.old} if args.old else {})}
    if args.what == "cpu":
        bench_cpu(trees, args.rounds)
    elif args.what == "memory":
        bench_memory(trees, args.rounds)
    elif args.what == "gzip":
        bench_gzip(args.rounds * 40)
    else:
        bench_scrapes(trees, args.rounds, args.seconds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
