"""What an upstream sends, bounded: parse failures are reasons, logged once per change, never tracebacks
every poll."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import httpx
import pytest
import respx

from exporter.poller import CapacitySettings
from tests.helpers import PagedList, envelope, row
from tests.test_poller import BASE, JOBS, Rig

CAPACITY = BASE + "/hpc/openapi/v2/queuenames/users/alice"


def capacity_of(queues: dict[str, int]) -> httpx.Response:
    return httpx.Response(200, json=envelope([{"queueName": q, "queNcpus": n} for q, n in queues.items()]))


# ---- failures are reasons ---------------------------------------------------------------------------


def deep(depth: int) -> bytes:
    return b'{"code":"0","msg":"","data":{"total":1,"list":[' + b"[" * depth + b"]" * depth + b"]}}"


@respx.mock
def test_json_nested_100000_deep_is_an_invalid_response_logged_once_without_a_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    respx.get(JOBS).mock(return_value=httpx.Response(200, content=deep(100_000)))
    rig = Rig()
    for _ in range(5):
        assert not rig.poll()
    assert rig.value("sugon_api_errors_total", reason="invalid_response") == 5
    assert rig.store.get("kunshan").last_error == "invalid_response"
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert [r.getMessage() for r in warnings] == [
        f"cluster kunshan: poll failed (invalid_response): body is JSON nested too deeply ({len(deep(100_000))} bytes)"
    ]
    assert not any(r.exc_info for r in caplog.records)


@pytest.mark.parametrize("depth", [900, 960, 975, 1000, 100_000])
@pytest.mark.parametrize("total", [3, 6])  # 6: a second page, the same as the first, is compared with it
@respx.mock
def test_a_row_nested_about_as_deep_as_json_allows_is_counted_or_an_invalid_response(depth: int, total: int) -> None:
    """The decoder's limit is the interpreter's recursion limit, less the frames above it: near it, a body
    is decoded or not depending on where it is decoded. Never a crash (it was reason "internal")."""
    nested = b'{"jobId":"3","jobStatus":"statR","queue":' + b"[" * depth + b"]" * depth + b"}"
    rows = b",".join([nested, httpx.Response(200, json=row(1)).content])
    body = b'{"code":"0","msg":"","data":{"total":%d,"list":[%s]}}' % (total, rows)
    respx.get(JOBS).mock(side_effect=lambda _: httpx.Response(200, content=body))
    rig = Rig(page_size=2)
    if rig.poll():
        assert total == 3 and rig.value("sugon_jobs", queue="unknown", status="running") == 1  # job 3
    else:
        assert rig.store.get("kunshan").last_error == "invalid_response"
        assert rig.value("sugon_api_errors_total", reason="invalid_response") == 1


@respx.mock
def test_an_unexpected_error_logs_its_traceback_once_then_only_at_debug(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="exporter.poller")
    respx.get(JOBS).mock(side_effect=PagedList([row(1)]))
    rig = Rig()

    async def broken(*args: Any) -> int:
        raise RuntimeError("a bug")

    rig.client.fetch_jobs = broken  # type: ignore[method-assign]
    for _ in range(4):
        assert not rig.poll()
    tracebacks = [r for r in caplog.records if r.exc_info]
    assert [r.levelno for r in tracebacks] == [logging.ERROR, logging.DEBUG, logging.DEBUG, logging.DEBUG]
    assert sum("poll failed (internal)" in r.getMessage() for r in caplog.records) == 1
    assert rig.value("sugon_polls_total", result="failure") == 4


@respx.mock
def test_an_unexpected_error_in_the_capacity_poll_logs_its_traceback_once(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="exporter.poller")
    respx.get(CAPACITY).mock(return_value=capacity_of({"a": 8}))
    rig = Rig(capacity=CapacitySettings(username="alice"))

    async def broken(*args: Any) -> dict[str, Any]:
        raise RuntimeError("a bug")

    rig.client.queue_capacity = broken  # type: ignore[method-assign]
    for _ in range(3):
        assert not asyncio.run(rig.poller.poll_capacity_once())
    assert [r.levelno for r in caplog.records if r.exc_info] == [logging.ERROR, logging.DEBUG, logging.DEBUG]
