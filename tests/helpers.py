"""Shared test helpers: fixtures on disk, synthetic job rows in the seed's shape, and promtool."""

from __future__ import annotations

import asyncio
import copy
import json
import socket
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.core import Metric

from exporter.model import ClusterState, Row
from exporter.sugon.joblist import SugonClient
from tests.tools import find_tool

FIXTURES = Path(__file__).parent / "fixtures"
SCHEDULER = "1638523853"


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
    return Row(**{name: raw.get(name) for name in Row.__struct_fields__})


async def read_list(
    client: SugonClient, scheduler_id: str, page_size: int, concurrency: int, max_jobs: int | None = None
) -> tuple[int, list[Row | None]]:
    """Read one scheduler's job list through ``client``: (the first page's data.total, every row of every page, in
    the order the pages came; overlapping pages give some rows twice)."""
    reader = client.job_list(scheduler_id, page_size, concurrency, **({"max_jobs": max_jobs} if max_jobs else {}))
    rows: list[Row | None] = []
    async for page, _ in reader.pages():
        rows.extend(page)
    assert reader.read is not None
    return reader.read.total, rows


def job_counts(state: ClusterState) -> dict[tuple[str, str], int]:
    """A cluster's published jobs by (queue, status), as its sugon_jobs family has them (zeros included)."""
    assert state.jobs is not None, f"cluster {state.name} has no job data"
    return {
        (s.labels["queue"], s.labels["status"]): int(s.value)
        for family in state.jobs.families
        if family.name == "sugon_jobs"
        for s in family.samples
    }


def job_count(state: ClusterState) -> int:
    """How many jobs a cluster's published job data counts."""
    return sum(job_counts(state).values())


def polled_families() -> list[Metric]:
    """Every family /metrics has once the demo's two clusters have been polled (job list and queue capacity); the
    demo has per-job series on."""
    from exporter.service import Exporter
    from exporter.simulator.demo import start_demo

    config, simulators = start_demo()
    try:
        exporter = Exporter(config)

        async def polls() -> None:
            for poller in exporter.pollers:
                assert await poller.poll_once() and await poller.capacity.poll_once()
            await exporter.aclose()

        asyncio.run(polls())
        return list(exporter.registry.collect())
    finally:
        for simulator in simulators:
            simulator.stop()
