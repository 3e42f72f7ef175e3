"""Job-list pages, decoded straight into the ten fields a row is counted by; today's JSON path is the fallback.

A poll is thousands of pages, and decoding them was most of its CPU. msgspec decodes a page into ``Row``
structs that hold only ``jobId``, ``jobmanagerId``, ``queue``, ``user``, ``jobStatus``, ``procNumUsed``,
``reason``, ``jobRunTime``, ``nodeUsed`` and ``appType`` (as ``Any``: the values json gives), and skips every
other field without building it. Any page
that path cannot take as it is (a decode or validation error, an envelope that is not success, a row that is
not an object, a body stdlib json would read differently) goes through ``parse_envelope`` and
``parse_job_page`` on the same bytes, which alone decide what an odd page means.
"""

from __future__ import annotations

import sys
from typing import Any

import msgspec

from exporter.model import Row
from exporter.sugon.conversation import ApiInvalidResponse, Reply, clip, parse_envelope
from exporter.values import count

Page = tuple[int, list["Row | None"]]  # (data.total, the rows; None for a row that is not an object)


class _Data(msgspec.Struct, gc=False):
    total: Any
    rows: list[Row | None] = msgspec.field(name="list")  # a null row is one that is not an object, as in the fallback


class _Envelope(msgspec.Struct, gc=False):
    code: Any
    data: _Data


_DECODER = msgspec.json.Decoder(_Envelope)
_DIGITS = b"0123456789"


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
    if raw.__class__ is not dict:
        return None
    get = raw.get
    return Row(
        get("jobId"),
        get("jobmanagerId"),
        get("queue"),
        get("user"),
        get("jobStatus"),
        get("procNumUsed"),
        get("reason"),
        get("jobRunTime"),
        get("nodeUsed"),
        get("appType"),
    )


def _as_json_reads(body: bytes) -> bool:
    """Whether msgspec, skipping fields, reads ``body`` as stdlib json would, so far as can be told cheaply.

    Where they part: bytes that are not UTF-8 in a skipped field (json refuses the whole body), and an integer
    of more digits than int() takes in a skipped field (json refuses it). Such a body, or one that may be
    such, takes the fallback. (Nesting is the third: see _decode.)
    """
    if not body.isascii():
        try:
            body.decode("utf-8")
        except UnicodeDecodeError:
            return False
    limit = sys.get_int_max_str_digits() if hasattr(sys, "get_int_max_str_digits") else 0
    if limit and len(body) > limit:
        # A run of more than ``limit`` digits holds one of every ``limit``-th byte: look around those.
        for at in range(limit, len(body), limit):
            if body[at] in _DIGITS:
                before = body[max(0, at - limit) : at]
                after = body[at : at + limit + 1]
                run = len(before) - len(before.rstrip(_DIGITS)) + len(after) - len(after.lstrip(_DIGITS))
                if run > limit:
                    return False
    return True


def _decode(body: bytes, levels: int = 10) -> _Envelope:
    """msgspec's decoding of ``body``, ``levels`` Python frames further down the stack.

    Both decoders refuse nesting beyond the interpreter's recursion limit, less the frames above them. From
    the same frame msgspec goes a few levels deeper than json, and the fallback's json runs a few frames
    further down (parse_envelope, json.loads, its decoder): decoded from this far down, msgspec gives up
    first, so that nesting near the limit is left to the fallback. (Python 3.12 and later count C levels
    instead of frames; there the two are within a level of each other.)
    """
    return _DECODER.decode(body) if levels == 0 else _decode(body, levels - 1)


def decode_job_page(answer: Reply) -> Page:
    """``(data.total, rows)`` of a job-list answer; every failure is the ApiError parse_envelope would raise."""
    body = answer.content
    if 200 <= answer.status_code < 300 and _as_json_reads(body):
        try:
            page = _decode(body)
        except (msgspec.DecodeError, msgspec.ValidationError, RecursionError):
            pass
        else:
            code, total = page.code, count(page.data.total)
            if code.__class__ is str and code == "0" and total is not None:
                return total, page.data.rows
    total, rows = parse_job_page(parse_envelope(answer))
    return total, [row_of(r) for r in rows]
