"""Fault injection for the simulated job list: what a gateway, a network or a confused server may answer."""

from __future__ import annotations

import random
import threading
from collections import Counter
from typing import Any

# Broken at the HTTP level: written by the server front, never reach the API logic.
WIRE = ("http_500", "http_502", "http_503", "http_504", "http_429", "reset", "hang", "truncated", "html")
# Documented error codes, answered in a well-formed envelope.
CODES = ("10001", "10003", "10004", "10007", "10008", "10009", "10010", "10011", "10012", "10013", "815005", "815007")
# A well-formed HTTP answer whose JSON is wrong.
BODY = ("data_null", "list_not_list", "total_string", "total_missing", *(f"code_{c}" for c in CODES))
# Odd but legitimate: the exporter must cope and still count right.
QUIRKS = ("ignore_offset", "duplicates", "total_drift")
ALL = WIRE + BODY + QUIRKS
HTML_PAGE = (
    b"<html><head><title>502 Bad Gateway</title></head><body><center><h1>502 Bad Gateway</h1></center></body></html>"
)


class Faults:
    """Which job-list requests go wrong: queued faults first (each for a number of requests), else random ones."""

    def __init__(self, seed: int = 0) -> None:
        self._lock = threading.Lock()
        self._queue: list[str | None] = []
        self._random: tuple[tuple[str, ...], float] | None = None
        self._rng = random.Random(seed)
        self.injected: Counter[str] = Counter()

    def inject(self, kind: str, times: int = 1, after: int = 0) -> None:
        """The next ``times`` job-list requests answer with ``kind``, once ``after`` more have been answered well."""
        if kind not in ALL:
            raise ValueError(f"unknown fault {kind!r}")
        with self._lock:
            self._queue.extend([None] * after + [kind] * times)

    def at_random(self, kinds: tuple[str, ...], probability: float) -> None:
        """From now on each request answers with a random one of ``kinds`` with this probability."""
        with self._lock:
            self._random = (kinds, probability) if kinds and probability > 0 else None

    def clear(self) -> None:
        """No more faults."""
        with self._lock:
            self._queue.clear()
            self._random = None

    def take(self) -> str | None:
        """The fault for the next request, if any (and count it)."""
        with self._lock:
            kind = None
            if self._queue:
                kind = self._queue.pop(0)
                if kind is None:  # a request answered well before an injected fault
                    return None
            elif self._random is not None and self._rng.random() < self._random[1]:
                kind = self._rng.choice(self._random[0])
            if kind is not None:
                self.injected[kind] += 1
            return kind


def spoil(kind: str, body: dict[str, Any]) -> dict[str, Any]:
    """A well-formed answer turned into the ``kind`` of wrong answer."""
    if kind.startswith("code_"):
        return {"code": kind[5:], "msg": "simulated failure", "data": None}
    data = body.get("data")
    if not isinstance(data, dict):
        return body
    if kind == "data_null":
        return {**body, "data": None}
    if kind == "list_not_list":
        return {**body, "data": {**data, "list": {"jobId": "1"}}}
    if kind == "total_string":
        return {**body, "data": {**data, "total": "lots"}}
    if kind == "total_missing":
        return {**body, "data": {k: v for k, v in data.items() if k != "total"}}
    return body


def with_duplicates(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The listing with every 10th job listed twice, as a confused scheduler view might (total counts both)."""
    out = []
    for i, row in enumerate(rows):
        out.append(row)
        if i % 10 == 0:
            out.append(row)
    return out
