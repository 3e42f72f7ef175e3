"""Issue 25: what decoding job pages with msgspec alone would save against stdlib json, as the exporter decodes them
(bench/RESULTS.md).

Two measures, each alternately in one run:
- decoding alone: the 2,000 pages of a 200k-job poll (100 rows each, as the simulator writes them) through
  msgspec straight into Rows and through ``decode_job_page`` (``json.loads``, then each row into a Row: what the
  exporter does);
- reading alone: a later read of the whole 200k-job list by the exporter's client (httpx over its transport,
  concurrency 8, no counting) against the leanest stdlib pager (8 threads, kept-alive ``http.client``
  connections, ``json.loads``, a Counter by queue and status), the simulator in its own process.

    PYTHONPATH=. python bench/decoding.py [--rounds 7]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx
import msgspec

from bench import lean_pager  # bench/bench.py; this script runs from bench/
from exporter.model import Row
from exporter.simulator import Simulator
from exporter.sugon.conversation import Conversation, Reply, decode_job_page
from exporter.sugon.joblist import SugonClient
from exporter.sugon.tokens import StaticToken
from exporter.sugon.transport import LeanTransport

SID = "1638523853"
JOBS = 200_000
PAGE = 100


class _Data(msgspec.Struct, rename={"rows": "list"}):
    rows: list[Row]


class _Page(msgspec.Struct):
    data: _Data


def msgspec_rows(body: bytes) -> list[Row | None]:
    """A page decoded by msgspec alone, straight into Rows (every row an object here)."""
    return list(msgspec.json.decode(body, type=_Page).data.rows)


def json_rows(body: bytes) -> list[Row | None]:
    """A page as the exporter reads it: json.loads, then each row into a Row."""
    return decode_job_page(Reply(status_code=200, headers=httpx.Headers(), content=body))[1]


def bodies() -> list[bytes]:
    """The job list's pages of one poll, as the simulator serves them."""
    sim = Simulator(token="t", jobs=JOBS, max_page=PAGE, seed=1)
    url = sim.serve()
    try:
        with httpx.Client(headers={"token": "t"}) as client:
            jobs = url + "/hpc/openapi/v2/jobs"
            return [
                client.get(jobs, params={"strClusterIDList": SID, "start": s, "limit": 500}).content
                for s in range(0, JOBS, PAGE)
            ]
    finally:
        sim.stop()


def decoding(rounds: int) -> None:
    pages = bodies()
    assert json_rows(pages[7]) == msgspec_rows(pages[7])  # the same rows either way
    seconds: dict[str, list[float]] = {"json.loads, then Rows": [], "msgspec into Rows": []}
    for _ in range(rounds):
        for name, decode in zip(seconds, (json_rows, msgspec_rows)):
            started = time.process_time()
            for body in pages:
                decode(body)
            seconds[name].append(time.process_time() - started)
    print(f"decoding alone: {len(pages)} pages, {sum(map(len, pages)) / len(pages) / 1000:.1f} kB each on average")
    show(seconds)


async def client_read(url: str) -> float:
    """CPU seconds of a later read of the whole list by the exporter's client (the first read warms it up)."""
    async with httpx.AsyncClient(transport=LeanTransport(max_connections=8), timeout=60) as http:
        client = SugonClient(url, StaticToken("bench-token"), Conversation(http, 60))
        for _ in range(2):
            started, rows = time.process_time(), 0
            async for page, _ in client.job_list(SID, 500, 8).pages():
                rows += len(page)
            spent = time.process_time() - started
        assert rows >= JOBS
        return spent


def reading(rounds: int) -> None:
    server = Path(__file__).with_name("simserver.py")
    args = [sys.executable, str(server), "--jobs", str(JOBS), "--max-page", str(PAGE)]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    url = proc.stdout.readline().strip()
    try:
        seconds: dict[str, list[float]] = {"the exporter's client": [], "the leanest stdlib pager": []}
        for _ in range(rounds):
            seconds["the exporter's client"].append(asyncio.run(client_read(url)))
            seconds["the leanest stdlib pager"].append(lean_pager(url, JOBS, PAGE)[0])
    finally:
        proc.terminate()
        proc.wait()
    print(f"reading alone: a later read of {JOBS} jobs, {JOBS // PAGE} pages")
    show(seconds)
    ratios = [a / b for a, b in zip(*seconds.values())]
    print(f"  client / pager, round by round: {', '.join(f'{r:.2f}' for r in ratios)}")


def show(seconds: dict[str, list[float]]) -> None:
    for name, spent in seconds.items():
        rounds = ", ".join(f"{s:.3f}" for s in spent)
        print(f"  {name}: median {statistics.median(spent):.3f} s CPU ({rounds})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    decoding(args.rounds)
    reading(args.rounds)


if __name__ == "__main__":
    main()
