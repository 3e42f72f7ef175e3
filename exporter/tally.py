"""One poll's raw rows in, page by page: deduplicated, labelled and counted. The hot loop of a poll.

A centre's list is hundreds of thousands of rows a poll, and what a row adds depends on only a few of its
values: its queue, user and status, which repeat across thousands of rows. So a row costs one lookup of
those three raw values (their labels, whether the queue is excluded, and the counters they add to, found
once per poll), a key for deduplication, and two additions; nothing else is built per row. The result is
the same as RowParser.parse then SnapshotBuilder.add for every new key (a test holds the two equal).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from exporter.jobs import UNKNOWN, RowParser, cpus, scalar_text
from exporter.snapshot import SnapshotBuilder

QueueStatus = tuple[str, str]
# What the rows with one (queue, user, status) add to: the tracker's (queue, status), the counters by queue
# and by user, and for queued jobs their raw reasons with counts (None otherwise). None: the queue is excluded.
_Entry = tuple[QueueStatus, int, int, dict[Any, int] | None] | None


class RowTally:
    """Takes the pages of one poll; ``current`` ends up mapping every counted job's key to (queue, status)."""

    def __init__(
        self,
        parser: RowParser,
        builder: SnapshotBuilder,
        is_excluded: Callable[[str], bool],
        on_unknown_status: Callable[[str], None],
    ) -> None:
        self._parser = parser
        self._builder = builder
        self._is_excluded = is_excluded
        self._on_unknown = on_unknown_status
        self.current: dict[str, QueueStatus] = {}
        self.invalid = 0
        self._entries: dict[tuple[Any, Any, Any], _Entry] = {}
        self._pairs: dict[QueueStatus, QueueStatus] = {}  # one tuple per distinct (queue, status), not one per job
        # Raw reasons of queued jobs by queue label, labelled in finish(): one dict per queue, shared by the
        # entries of its users (a dict per entry was thousands of dicts to build and free every poll).
        self._reasons: dict[str, dict[Any, int]] = {}

    def _entry(self, raw: tuple[Any, Any, Any]) -> _Entry:
        parser = self._parser
        queue = parser.label(raw[0])
        if self._is_excluded(queue):
            entry: _Entry = None
        else:
            raw_status, status = parser.status(raw[2])
            if status == UNKNOWN:
                self._on_unknown(raw_status)
            pair = self._pairs.setdefault((queue, status), (queue, status))
            slot, uslot = self._builder.cells(queue, parser.label(raw[1]), status)
            reasons: dict[Any, int] | None = None
            if status == "queued":  # only queued jobs are counted by reason
                reasons = self._reasons.setdefault(queue, {})
            entry = (pair, slot, uslot, reasons)
        if all(v is None or v.__class__ is str for v in raw):  # 1, 1.0 and True are equal keys: not remembered
            self._entries[raw] = entry
        return entry

    def take(self, rows: list[Any], scheduler_id: str) -> None:
        """Count the rows of one page of ``scheduler_id``'s list; rows already counted this poll are skipped."""
        current = self.current
        entries = self._entries
        jobs, used = self._builder.jobs, self._builder.cpus  # the counters, by slot
        prefixes: dict[Any, str] = {}  # raw jobmanagerId → "id NUL"; one or two per page
        for row in rows:
            if row.__class__ is not dict:
                self.invalid += 1
                continue
            get = row.get
            job_id = get("jobId")
            job_id = job_id.strip() if job_id.__class__ is str else scalar_text(job_id)
            if not job_id:
                self.invalid += 1
                continue
            manager = get("jobmanagerId")
            try:
                prefix = prefixes[manager]
            except (KeyError, TypeError):
                prefix = (scalar_text(manager) or scheduler_id) + "\x00"
                if manager.__class__ is str:
                    prefixes[manager] = prefix
            key = prefix + job_id
            if key in current:
                continue
            raw = (get("queue"), get("user"), get("jobStatus"))
            try:
                entry = entries[raw]
            except (KeyError, TypeError):
                entry = self._entry(raw)
            if entry is None:
                continue
            pair, slot, uslot, reasons = entry
            current[key] = pair
            n = get("procNumUsed")
            if n.__class__ is not int or n < 0:
                n = cpus(n)
            jobs[slot] += 1
            used[slot] += n
            if uslot >= 0:
                jobs[uslot] += 1
                used[uslot] += n
            if reasons is not None:
                reason = get("reason")
                try:
                    reasons[reason] += 1
                except KeyError:
                    reasons[reason] = 1
                except TypeError:  # unhashable: labelled now (as "none", like every reason that is not a string)
                    self._builder.count_reason(pair[0], self._parser.reason(reason))

    def finish(self) -> None:
        """Count the queued jobs by reason: each distinct raw reason is labelled once, not once per job.

        Raw reasons are safe as keys: the only equal values of different types (1, 1.0, True) are not
        strings, and every non-string reason is labelled alike.
        """
        for queue, reasons in self._reasons.items():
            for raw, n in reasons.items():
                self._builder.count_reason(queue, self._parser.reason(raw), n)
        self._reasons.clear()
