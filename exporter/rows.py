"""A job-list row → a Job: labels cleaned, numbers checked, every value that cannot be read named. Pure."""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

from exporter.hostlists import MAX_LISTED, expand
from exporter.model import INVALID, NO_APP, NO_REASON, NOT_STARTED, STATUS_MAP, UNKNOWN, Job, Row

__all__ = [
    "INVALID",
    "MAX_LISTED",
    "MAX_NODES",
    "MAX_RUN_SECONDS",
    "NOT_STARTED",
    "node_count",
    "node_names",
    "run_seconds",
]

REASON_MAX_LENGTH = 64
LABEL_MAX_LENGTH = 256  # queue and user label values; longer ones are cut
MAX_CPUS = 10**7  # CPUs of one job; a bigger procNumUsed is not a count (left in, sums would overflow floats)
MAX_RUN_SECONDS = 100_000 * 86_400 - 1  # "99999-23:59:59"; a longer run time is not one
MAX_NODES = 100_000  # distinct nodes tracked per cluster (nodes in use)
_PARENTHESISED = re.compile(r"\([^)]*\)")
# The leading field of a run time takes any number of units (PBS writes "100:00:00" for 100 hours); the ones
# after it are bounded: hours below 24 after a day count, minutes and seconds below 60.
_RUN_TIME = re.compile(r"(?:([0-9]{1,9})-([0-9]{1,2}):|([0-9]{1,9}):)?([0-9]{1,9}):([0-9]{1,2})")
_CACHED = 20_000  # distinct raw values of each kind whose cleaning is remembered


def scalar_text(value: Any) -> str | None:
    """A non-empty string form of a scalar id or name, or None."""
    if isinstance(value, str):
        return value.strip() or None
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None


def clean_label(value: Any, limit: int = LABEL_MAX_LENGTH) -> str | None:
    """A label value: cut to ``limit`` characters, and encodable as UTF-8 (JSON may carry lone surrogates, which
    would make the whole exposition unencodable)."""
    text = scalar_text(value)
    if text is None:
        return None
    return text[:limit].encode("utf-8", "replace").decode("utf-8")


def normalise_reason(value: Any) -> str:
    """The scheduler's reason reduced to its kind: detail in parentheses, node lists and anything after a
    comma or colon dropped (``ReqNodeNotAvail, UnavailableNodes:n[1-3]`` → ``ReqNodeNotAvail``); none → ``none``."""
    if not isinstance(value, str):
        return NO_REASON
    text = _PARENTHESISED.sub("", value)
    text = text.split(",", 1)[0].split(":", 1)[0].strip()
    return clean_label(text, REASON_MAX_LENGTH) or NO_REASON


def cpu_count(value: Any) -> int | None:
    """``procNumUsed`` as a count from 0 to MAX_CPUS; missing or not a count (negative, a fraction, text)
    is 0. None: a count above MAX_CPUS (a row to report; its job counts with 0 CPUs)."""
    if isinstance(value, bool):
        return 0
    if isinstance(value, int):
        return None if value > MAX_CPUS else max(value, 0)
    if isinstance(value, float):
        if value > MAX_CPUS:  # inf too
            return None
        return int(value) if value >= 0 and value.is_integer() else 0
    if isinstance(value, str):
        text = value.strip()
        if not text.isascii() or not text.isdigit():
            return 0
        digits = text.lstrip("0")  # "0…0" of any length is 0; more digits than MAX_CPUS has are too many
        if len(digits) > len(str(MAX_CPUS)):
            return None
        n = int(digits or "0")
        return n if n <= MAX_CPUS else None
    return 0


def run_seconds(value: Any) -> int | None:
    """``D-HH:MM:SS``, ``HH:MM:SS`` or ``MM:SS`` as seconds; None (NOT_STARTED) for null or a blank string;
    INVALID for anything else (other types, other shapes, digits beyond ASCII, fields out of range)."""
    if value is None:
        return NOT_STARTED
    if not isinstance(value, str):
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


def node_names(value: Any, limit: int = MAX_NODES) -> list[str] | None:
    """The first ``limit`` distinct nodes a Slurm host list names, in its order ([] for null or blank); None when
    ``value`` is not one (see exporter.hostlists)."""
    if value is None:
        return []
    if not isinstance(value, str):
        return None
    names = expand(value.strip()) if value.strip() else []
    return None if names is None else names[:limit]


def node_count(value: Any) -> int | None:
    """How many distinct nodes a Slurm host list names (0 for null or blank); None when ``value`` is not one."""
    names = node_names(value, MAX_LISTED)
    return None if names is None else len(names)


@lru_cache(maxsize=_CACHED)
def _label(raw: str) -> str:
    return clean_label(raw) or UNKNOWN


@lru_cache(maxsize=_CACHED)
def _reason(raw: str) -> str:
    return normalise_reason(raw)


@lru_cache(maxsize=_CACHED)
def _app(raw: str) -> str:
    return clean_label(raw) or NO_APP


def label(value: Any) -> str:
    """A queue or user label (``unknown`` when there is none)."""
    return _label(value) if isinstance(value, str) else clean_label(value) or UNKNOWN


def job_key(row: Row, scheduler_id: str) -> str | None:
    """``jobmanagerId NUL jobId`` of a row (its scheduler id when it names none); None without a jobId."""
    job_id = scalar_text(row.jobId)
    if job_id is None:
        return None
    return (scalar_text(row.jobmanagerId) or scheduler_id) + "\x00" + job_id


def read_job(row: Row, key: str) -> tuple[Job, tuple[str, ...]]:
    """The Job of a row whose key is ``key``, and the fields of it that could not be read (each counted in
    sugon_invalid_fields_total; the job counts all the same, without them). Every row of every poll comes
    here: a well-formed value takes the first branch of each field."""
    unread: tuple[str, ...] = ()
    raw = row.jobStatus
    status = STATUS_MAP.get(raw) if type(raw) is str else None
    if status is None:
        status = STATUS_MAP.get(scalar_text(raw) or "", UNKNOWN)
        if status == UNKNOWN:
            unread += ("jobStatus",)
    cpus = row.procNumUsed
    if type(cpus) is not int or not 0 <= cpus <= MAX_CPUS:
        cpus = cpu_count(cpus)
        if cpus is None:
            cpus = 0
            unread += ("procNumUsed",)
    run = row.jobRunTime
    run = NOT_STARTED if run is None or run == "" else run_seconds(run)
    if run == INVALID:
        unread += ("jobRunTime",)
    nodes = row.nodeUsed if row.nodeUsed not in (None, "") else None
    count = None if nodes is None else node_count(nodes)
    if nodes is not None and count is None:
        count = INVALID
        unread += ("nodeUsed",)
    queue, user, app, reason, name = row.queue, row.user, row.appType, row.reason, row.jobName
    job = Job(
        key=key,
        queue=_label(queue) if type(queue) is str else clean_label(queue) or UNKNOWN,
        user=_label(user) if type(user) is str else clean_label(user) or UNKNOWN,
        status=status,
        cpus=cpus,
        run_seconds=run,
        node_count=count,
        nodes=nodes if status == "running" and isinstance(nodes, str) and count != INVALID else None,
        app=_app(app) if type(app) is str else clean_label(app) or NO_APP,
        reason=_reason(reason) if status == "queued" and type(reason) is str else NO_REASON,
        name=clean_label(name) or "",
    )
    return job, unread


def raw_status(row: Row) -> str:
    """A row's jobStatus as text (for the log of statuses that map to none)."""
    return scalar_text(row.jobStatus) or ""
