"""The usage fields of a job-list row: its run time (``jobRunTime``) in seconds and its nodes (``nodeUsed``, a
Slurm host list, read by hostlists.py). Pure."""

from __future__ import annotations

import re
from typing import Any

from exporter.counting.hostlists import MAX_COUNT, parse

NOT_STARTED = None  # run_seconds of an empty or null jobRunTime
INVALID = -1  # run_seconds of a value that is not a run time
MAX_NODES = 100_000  # distinct nodes tracked per cluster
__all__ = [
    "INVALID",
    "MAX_COUNT",
    "MAX_NODES",
    "MAX_RUN_SECONDS",
    "NOT_STARTED",
    "node_count",
    "node_names",
    "run_seconds",
]
MAX_RUN_SECONDS = 100_000 * 86_400 - 1  # "99999-23:59:59"; a longer run time is not one

# The leading field of a run time takes any number of units (PBS writes "100:00:00" for 100 hours); the ones
# after it are bounded: hours below 24 after a day count, minutes and seconds below 60.
_RUN_TIME = re.compile(r"(?:([0-9]{1,9})-([0-9]{1,2}):|([0-9]{1,9}):)?([0-9]{1,9}):([0-9]{1,2})")


def run_seconds(value: Any) -> int | None:
    """``D-HH:MM:SS``, ``HH:MM:SS`` or ``MM:SS`` as seconds; None (NOT_STARTED) for null or a blank string;
    INVALID for anything else (other types, other shapes, digits beyond ASCII, fields out of range)."""
    if value is None:
        return NOT_STARTED
    if value.__class__ is not str:
        return INVALID
    text = value.strip()
    if not text:
        return NOT_STARTED
    m = _RUN_TIME.fullmatch(text)
    if m is None:
        return INVALID
    days, day_hours, hours, minutes, seconds = m.groups()
    if days is not None:
        hours = day_hours
        if int(hours) > 23:
            return INVALID
    if int(seconds) > 59 or (hours is not None and (len(minutes) > 2 or int(minutes) > 59)):
        return INVALID
    total = ((int(days or 0) * 24 + int(hours or 0)) * 60 + int(minutes)) * 60 + int(seconds)
    return total if total <= MAX_RUN_SECONDS else INVALID


def node_count(value: Any) -> int | None:
    """How many distinct nodes a Slurm host list names, without listing them; None when ``value`` is not one
    (or names more than MAX_COUNT). Null or blank names none."""
    hosts = parse(value)
    return None if hosts is None else hosts.count()


def node_names(value: Any, limit: int = MAX_NODES) -> list[str] | None:
    """The first ``limit`` distinct nodes of a Slurm host list, in its order; None when ``value`` is not one (as
    node_count says), or names the same nodes over and over (a million names past ``limit``: built to cost, not
    a job's nodes). Null or blank names none."""
    hosts = parse(value)
    return None if hosts is None or hosts.count() is None else hosts.names(limit)
