"""Rows of the job list: the Row a page is decoded into, the Job record and the status map. Pure."""

from __future__ import annotations

import re
from typing import Any, NamedTuple

from exporter.model import NO_REASON, STATUS_MAP, UNKNOWN

REASON_MAX_LENGTH = 64
LABEL_MAX_LENGTH = 256  # queue and user label values; longer ones are cut
_PARENTHESISED = re.compile(r"\([^)]*\)")


class Job(NamedTuple):
    """What the exporter keeps of one row: enough to count it, nothing more (a tuple: cheap to make)."""

    key: str
    queue: str
    user: str
    status: str
    raw_status: str
    cpus: int
    reason: str = NO_REASON


def scalar_text(value: Any) -> str | None:
    """A non-empty string form of a scalar id or name, or None."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        value = value.strip()
        return value or None
    return None


def _label(value: Any, limit: int = LABEL_MAX_LENGTH) -> str | None:
    """A label value: cut to ``limit`` characters, and encodable as UTF-8.

    JSON may carry lone surrogates ("\\ud800"); left in, they would make the whole exposition unencodable.
    """
    text = scalar_text(value)
    if text is None:
        return None
    return text[:limit].encode("utf-8", "replace").decode("utf-8")


def job_key(row: Any, scheduler_id: str) -> str | None:
    """The dedupe key ``jobmanagerId NUL jobId`` of a raw row, or None when the row has no usable jobId.

    One string rather than a tuple: the poller keeps a key per job for a whole poll, and a
    single str costs about half the memory of a 2-tuple of strs.
    """
    if not isinstance(row, dict):
        return None
    job_id = scalar_text(row.get("jobId"))
    if job_id is None:
        return None
    manager = scalar_text(row.get("jobmanagerId")) or scheduler_id
    return f"{manager}\x00{job_id}"


def map_status(raw: str) -> str:
    """The ``status`` label value for a raw ``jobStatus`` (``statR`` → ``running``; anything else → ``unknown``)."""
    return STATUS_MAP.get(raw, UNKNOWN)


def normalise_reason(value: Any) -> str:
    """The scheduler's reason reduced to its kind: detail in parentheses, node lists and anything after a
    comma or colon dropped (``ReqNodeNotAvail, UnavailableNodes:n[1-3]`` → ``ReqNodeNotAvail``); none → ``none``.
    """
    if not isinstance(value, str):
        return NO_REASON
    text = _PARENTHESISED.sub("", value)
    text = text.split(",", 1)[0].split(":", 1)[0].strip()
    return _label(text, REASON_MAX_LENGTH) or NO_REASON


MAX_CPUS = 10**7  # CPUs of one job; a bigger procNumUsed is not a count (left in, sums would overflow floats)
_MAX_CPUS_DIGITS = len(str(MAX_CPUS))


def cpu_count(value: Any) -> int | None:
    """``procNumUsed`` as a count from 0 to MAX_CPUS; missing or not a count (negative, a fraction, text)
    is 0. None: a count above MAX_CPUS (a row to count as invalid; its job counts with 0 CPUs)."""
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
        if len(digits) > _MAX_CPUS_DIGITS:
            return None
        n = int(digits or "0")
        return n if n <= MAX_CPUS else None
    return 0


def cpus(value: Any) -> int:
    """``procNumUsed`` as a non-negative int up to MAX_CPUS; missing, invalid or too big counts as 0."""
    return cpu_count(value) or 0


class RowParser:
    """Parses rows into Jobs, remembering the few distinct queue, user, status and reason values it meets.

    A poll parses every row of the list, and a row's labels repeat across thousands of rows: looking the
    raw value up is far cheaper than cleaning it again. The memory is bounded (hostile input could send
    endless distinct values) and simply starts over when full.
    """

    MAX_REMEMBERED = 20_000

    def __init__(self) -> None:
        self._labels: dict[Any, str] = {}
        self._statuses: dict[Any, tuple[str, str]] = {}
        self._reasons: dict[Any, str] = {}

    def label(self, value: Any) -> str:
        """A queue or user label of a raw value (``unknown`` when there is none)."""
        try:
            return self._labels[value]
        except (KeyError, TypeError):  # TypeError: an unhashable value (a list, a dict)
            label = _label(value) or UNKNOWN
            if isinstance(value, str):
                if len(self._labels) >= self.MAX_REMEMBERED:
                    self._labels.clear()
                self._labels[value] = label
            return label

    def status(self, raw: Any) -> tuple[str, str]:
        """(raw status as text, ``status`` label) of a raw ``jobStatus``."""
        try:
            return self._statuses[raw]
        except (KeyError, TypeError):
            raw_status = scalar_text(raw) or ""
            found = (raw_status, map_status(raw_status))
            if isinstance(raw, str) and len(self._statuses) < self.MAX_REMEMBERED:
                self._statuses[raw] = found
            return found

    def reason(self, raw: Any) -> str:
        """The ``reason`` label of a raw ``reason`` (see normalise_reason)."""
        try:
            return self._reasons[raw]
        except (KeyError, TypeError):
            reason = normalise_reason(raw)
            if isinstance(raw, str) and len(self._reasons) < self.MAX_REMEMBERED:
                self._reasons[raw] = reason
            return reason

    def parse(self, row: Any, scheduler_id: str) -> Job | None:
        """A Job from one raw row, or None when the row is unusable (not an object, or no jobId)."""
        key = job_key(row, scheduler_id)
        if key is None:
            return None
        raw_status, status = self.status(row.get("jobStatus"))
        reason = self.reason(row.get("reason")) if status == "queued" else NO_REASON  # only queued jobs by reason
        return Job(
            key,
            self.label(row.get("queue")),
            self.label(row.get("user")),
            status,
            raw_status,
            cpus(row.get("procNumUsed")),
            reason,
        )


def parse_job(row: Any, scheduler_id: str) -> Job | None:
    """A Job from one raw row, or None when the row is unusable (not an object, or no jobId)."""
    return RowParser().parse(row, scheduler_id)
