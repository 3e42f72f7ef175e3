"""Shared test helpers: fixtures on disk, synthetic job rows in the seed's shape, and promtool."""

from __future__ import annotations

import asyncio
import copy
import json
import os
import socket
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from exporter.counting.tally import RowTally
from exporter.model import Row
from exporter.serving.runtime import ProcessReader, RuntimeCollector
from tests.tools import find_tool

FIXTURES = Path(__file__).parent / "fixtures"
PROC = FIXTURES / "proc"  # a stand-in /proc of one process, 4242
SCHEDULER = "1638523853"


TICKS = os.sysconf("SC_CLK_TCK")
# What the stand-in /proc holds (tests/fixtures/proc/README), with the CPU time and the open-files limit that
# this process's system calls would give in its place.
PROC_CPU_SECONDS = (1234 + 566) / TICKS
PROC_MAX_FDS = 1024.0
FIXED_GC = [
    {"collections": 40, "collected": 613, "uncollectable": 0},
    {"collections": 3, "collected": 5, "uncollectable": 0},
    {"collections": 1, "collected": 0, "uncollectable": 2},
]


def fixed_runtime() -> RuntimeCollector:
    """The exporter's per-scrape part over the stand-in /proc and fixed GC figures: values that do not
    change, so that two renderings of /metrics are byte for byte equal."""
    reader = ProcessReader(str(PROC), "4242", cpu=lambda: PROC_CPU_SECONDS, limit=lambda: PROC_MAX_FDS)
    return RuntimeCollector(reader.read, gc_stats=lambda: FIXED_GC)


def fixture(name: str) -> Any:
    """A canned response body from tests/fixtures/."""
    return json.loads((FIXTURES / name).read_text(encoding="utf-8"))


def seed_row() -> dict[str, Any]:
    """The seed document's running-job row, as a template."""
    return copy.deepcopy(fixture("seed_jobs.json")["data"]["list"][1])


def row(
    job_id: int | str,
    status: str = "statR",
    queue: str = "debug",
    user: str = "test",
    cpus: Any = 1,
    scheduler: str = SCHEDULER,
) -> dict[str, Any]:
    """A seed-shaped row with the fields that matter set."""
    r = seed_row()
    r.update(jobId=str(job_id), jobStatus=status, queue=queue, user=user, procNumUsed=cpus, jobmanagerId=scheduler)
    return r


def envelope(data: Any, code: str = "0", msg: str = "success") -> dict[str, Any]:
    """The API's {code, msg, data} wrapper."""
    return {"code": code, "msg": msg, "data": data}


def promtool_check_metrics(text: str) -> subprocess.CompletedProcess[str]:
    """Run the real ``promtool check metrics`` on an exposition (CI installs Debian's prometheus package)."""
    exe = find_tool("promtool", "apt-get install prometheus")
    return subprocess.run(
        [exe, "check", "metrics"], check=False, input=text, capture_output=True, text=True, timeout=60
    )


class PagedList:
    """A job list served page by page the way the API does: offset paging, a row cap, and hooks to change it."""

    def __init__(self, rows: list[dict[str, Any]], cap: int = 100, delay: float = 0.0) -> None:
        self.rows = rows
        self.cap = cap
        self.delay = delay
        self.calls: list[tuple[int, int]] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.before_answer: Callable[[int], None] | None = None

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        start, limit = int(request.url.params["start"]), int(request.url.params["limit"])
        self.calls.append((start, limit))
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await asyncio.sleep(self.delay)
            if self.before_answer:
                self.before_answer(start)
            page = self.rows[start : start + min(limit, self.cap)]
            return httpx.Response(200, json=envelope({"total": len(self.rows), "list": page}))
        finally:
            self.in_flight -= 1


def read_answer(sock: socket.socket, buffered: bytearray | None = None) -> tuple[str, dict[str, str], bytes]:
    """One answer (status line, headers, Content-Length body) from ``sock``."""
    buffered = bytearray() if buffered is None else buffered
    while b"\r\n\r\n" not in buffered:
        data = sock.recv(65536)
        assert data, f"closed before an answer; got {bytes(buffered)!r}"
        buffered += data
    head, _, rest = bytes(buffered).partition(b"\r\n\r\n")
    status, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines)}
    size = int(headers["content-length"])
    while len(rest) < size:
        data = sock.recv(1 << 20)
        assert data, "closed in mid-body"
        rest += data
    buffered[:] = rest[size:]
    return status, headers, rest[:size]


def decoded(raw: Any) -> Row | None:
    """The Row a page's decoding makes of one row of the list: every field Row has, as the JSON has it (None
    where it has none); None for a row that is not an object."""
    if not isinstance(raw, dict):
        return None
    return Row(*(raw.get(name) for name in Row.__struct_fields__))


def take_rows(tally: RowTally, rows: list[Any], scheduler_id: str) -> None:
    """Count decoded rows (dicts, or anything else a list may hold) as the poll counts a page's Rows."""
    tally.add_page([decoded(r) for r in rows], scheduler_id)


class RowsReceived:
    """A page sink for SugonClient.fetch_jobs that keeps every row it is handed, in order (overlapping pages
    hand some rows twice)."""

    def __init__(self) -> None:
        self.rows: list[Row | None] = []

    def add_page(self, rows: list[Row | None], scheduler_id: str) -> int:
        self.rows.extend(rows)
        return 0
