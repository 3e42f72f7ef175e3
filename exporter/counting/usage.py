"""The usage fields of a job-list row: its run time (``jobRunTime``) in seconds and its nodes (``nodeUsed``, a
Slurm host list). Pure."""

from __future__ import annotations

import re
from typing import Any

import hostlist

NOT_STARTED = None  # run_seconds of an empty or null jobRunTime
INVALID = -1  # run_seconds of a value that is not a run time
MAX_NODES = 100_000  # distinct nodes tracked per cluster
_RUN_TIME = re.compile(r"(?:(\d{1,5})-)?(?:(\d{1,3}):)?(\d{1,2}):(\d{1,2})")


def run_seconds(value: Any) -> int | None:
    """``D-HH:MM:SS``, ``HH:MM:SS`` or ``MM:SS`` as seconds; None (NOT_STARTED) for an empty string or null;
    INVALID for anything else."""
    if value is None or value == "":
        return NOT_STARTED
    if value.__class__ is not str:
        return INVALID
    m = _RUN_TIME.fullmatch(value.strip())
    if m is None:
        return INVALID
    days, hours, minutes, seconds = m.groups()
    if days is not None and hours is None:  # "D-MM:SS" is not a format
        return INVALID
    return ((int(days or 0) * 24 + int(hours or 0)) * 60 + int(minutes)) * 60 + int(seconds)


def node_names(value: Any, limit: int = MAX_NODES) -> list[str] | None:
    """The nodes of a Slurm host list (at most ``limit`` of them), or None when ``value`` is not one (an empty
    one has no nodes)."""
    if value is None or value == "":
        return []
    if value.__class__ is not str:
        return None
    try:
        return list(hostlist.expand_hostlist(value.strip()))[:limit]
    except hostlist.BadHostlist:
        return None


def node_count(value: Any) -> int | None:
    """How many nodes a Slurm host list names, without listing them; None when ``value`` is not one."""
    names = node_names(value)
    return None if names is None else len(names)
