"""Job-list pages: the envelope checked, ``data.total`` and ``data.list`` checked for shape, each row read into the
eleven fields the exporter counts it by (bench/RESULTS.md, issue 25: why stdlib json alone)."""

from __future__ import annotations

from typing import Any

from exporter.model import Row
from exporter.sugon.conversation import ApiInvalidResponse, Reply, clip, parse_envelope
from exporter.values import count

Page = tuple[int, list["Row | None"]]  # (data.total, the rows; None for a row that is not an object)


def _show(value: Any) -> str:
    """A short repr of a scalar, the type of anything else (a nested value's repr could be huge or too deep)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return clip(repr(value), 40)
    return type(value).__name__


def parse_job_page(data: Any) -> tuple[int, list[Any]]:
    """``(data.total, data.list)`` of a decoded job-list answer, checked for shape; rows are left raw."""
    if not isinstance(data, dict):
        raise ApiInvalidResponse(f"job list data is {type(data).__name__}, not an object")
    total = count(data.get("total"))
    if total is None:
        raise ApiInvalidResponse(f"job list total is missing or not a count ({_show(data.get('total'))})")
    rows = data.get("list")
    if rows is None and total == 0:
        return 0, []
    if not isinstance(rows, list):
        raise ApiInvalidResponse(f"job list 'list' is {type(rows).__name__}, not a list")
    return total, rows


def row_of(raw: Any) -> Row | None:
    """The Row of a decoded row (a dict), or None when it is not an object."""
    if not isinstance(raw, dict):
        return None
    return Row(
        jobId=raw.get("jobId"),
        jobmanagerId=raw.get("jobmanagerId"),
        queue=raw.get("queue"),
        user=raw.get("user"),
        jobStatus=raw.get("jobStatus"),
        procNumUsed=raw.get("procNumUsed"),
        reason=raw.get("reason"),
        jobRunTime=raw.get("jobRunTime"),
        nodeUsed=raw.get("nodeUsed"),
        appType=raw.get("appType"),
        jobName=raw.get("jobName"),
    )


def decode_job_page(answer: Reply) -> Page:
    """``(data.total, rows)`` of a job-list answer; every failure is an ApiError (see parse_envelope)."""
    total, rows = parse_job_page(parse_envelope(answer))
    return total, [row_of(raw) for raw in rows]
