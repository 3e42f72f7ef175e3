"""Row values → label values: the status map, reasons reduced to their kind, bounded labels and CPU counts. Pure.

The per-poll tally (tally.py) reads each page's rows through these rules; RowParser remembers what it
has cleaned, since a row's queue, user, status and reason repeat across thousands of rows.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, TypeVar

from exporter.model import NO_APP, NO_REASON, STATUS_MAP, UNKNOWN

T = TypeVar("T")

REASON_MAX_LENGTH = 64
LABEL_MAX_LENGTH = 256  # queue and user label values; longer ones are cut
_PARENTHESISED = re.compile(r"\([^)]*\)")


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


def _clean_label(value: Any, limit: int = LABEL_MAX_LENGTH) -> str | None:
    """A label value: cut to ``limit`` characters, and encodable as UTF-8.

    JSON may carry lone surrogates ("\\ud800"); left in, they would make the whole exposition unencodable.
    """
    text = scalar_text(value)
    if text is None:
        return None
    return text[:limit].encode("utf-8", "replace").decode("utf-8")


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
    return _clean_label(text, REASON_MAX_LENGTH) or NO_REASON


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


def _label_of(value: Any) -> str:
    return _clean_label(value) or UNKNOWN


def app_label(value: Any) -> str:
    """The ``app`` label of a raw ``appType``: its text (cut and cleaned like a queue's); ``none`` when it is
    empty, null or not a string or a number."""
    return _clean_label(value) or NO_APP


def _status_of(raw: Any) -> tuple[str, str]:
    raw_status = scalar_text(raw) or ""
    return raw_status, map_status(raw_status)


class RowParser:
    """Cleans a row's queue, user, status, reason and application, remembering the distinct raw values it meets.

    Looking a raw value up is far cheaper than cleaning it again. The memory is bounded (hostile input
    could send endless distinct values) and simply starts over when full.
    """

    MAX_REMEMBERED = 20_000  # raw values of each kind

    def __init__(self) -> None:
        self._labels: dict[Any, str] = {}
        self._statuses: dict[Any, tuple[str, str]] = {}
        self._reasons: dict[Any, str] = {}
        self._apps: dict[Any, str] = {}

    def label(self, value: Any) -> str:
        """A queue or user label of a raw value (``unknown`` when there is none)."""
        return self._remembered(self._labels, value, _label_of)

    def status(self, raw: Any) -> tuple[str, str]:
        """(raw status as text, ``status`` label) of a raw ``jobStatus``."""
        return self._remembered(self._statuses, raw, _status_of)

    def reason(self, raw: Any) -> str:
        """The ``reason`` label of a raw ``reason`` (see normalise_reason)."""
        return self._remembered(self._reasons, raw, normalise_reason)

    def app(self, raw: Any) -> str:
        """The ``app`` label of a raw ``appType`` (see app_label)."""
        return self._remembered(self._apps, raw, app_label)

    def _remembered(self, memory: dict[Any, T], raw: Any, clean: Callable[[Any], T]) -> T:
        try:
            return memory[raw]
        except (KeyError, TypeError):  # TypeError: an unhashable value (a list, a dict)
            value = clean(raw)
            if isinstance(raw, str):  # strings only: 1, 1.0 and True are equal keys
                if len(memory) >= self.MAX_REMEMBERED:
                    memory.clear()
                memory[raw] = value
            return value
