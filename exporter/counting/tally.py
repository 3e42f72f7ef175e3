"""One poll's raw rows in, page by page: deduplicated, labelled and counted. The hot loop of a poll.

A centre's list is hundreds of thousands of rows a poll, and what a row adds depends on only a few of its
values: its queue, user and status, which repeat across thousands of rows. So a row costs one lookup of
those three raw values (their labels, whether the queue is excluded, and the counters they add to, found
once and remembered from poll to poll), a key for deduplication, and two additions; nothing else is built
per row. The result is the same as RowParser.parse then SnapshotBuilder.add for every new key (a test
holds the two equal).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from exporter.counting.rows import MAX_CPUS, RowParser, cpu_count, scalar_text
from exporter.counting.snapshot import SnapshotBuilder
from exporter.model import UNKNOWN, QueueStatus, Row

# What the rows with one (queue, user, status) add to: the tracker's (queue, status), the counters by queue
# and by user, and for queued jobs the index of their queue's raw reasons in ``RowTally._reason_counts``
# (-1 otherwise). None: the queue is excluded. Only strings and numbers, so that the garbage collector
# stops tracking an entry: a dict in it (even an empty one) would keep the thousands of entries of a
# poll in every full collection, which pauses scrapes too.
_Entry = tuple[QueueStatus, int, int, int] | None


# A tally is kept for the next poll while what it remembers is at most this many times what the last poll
# used, plus SLACK: series and raw values of jobs long gone would otherwise pile up for ever.
KEEP_FACTOR = 2
SLACK = 1024


class RowTally:
    """Takes the pages of a poll; ``current`` ends up mapping every counted job's key to (queue, status).

    One tally (and its builder) may serve poll after poll: ``begin`` starts the next. The raw values it met
    keep their labels and slots, so a poll of the same series as the last one builds no entry and no series,
    and has none to free afterwards (at a centre, tens of thousands of each, every poll).
    """

    def __init__(
        self,
        parser: RowParser,
        builder: SnapshotBuilder,
        is_excluded: Callable[[str], bool],
        on_unknown_status: Callable[[str], None],
    ) -> None:
        self._parser = parser
        self.builder = builder  # where the counts go
        self._is_excluded = is_excluded
        self._on_unknown = on_unknown_status
        self.current: dict[str, QueueStatus] = {}
        self.invalid = 0  # rows skipped as unusable, and counted rows whose procNumUsed was too big
        self._entries: dict[tuple[Any, Any, Any], _Entry] = {}
        self._pairs: dict[QueueStatus, QueueStatus] = {}  # one tuple per distinct (queue, status), not one per job
        # Raw reasons of queued jobs with counts, labelled in finish(): one dict per queue, shared by the
        # entries of its users (a dict per entry was thousands of dicts to build and free every poll).
        self._reason_queues: dict[str, int] = {}  # queue label → index in _reason_counts
        self._reason_counts: list[dict[Any, int]] = []

    def begin(self) -> None:
        """Start the next poll: nothing counted yet; what was learnt about raw values stays."""
        self.builder.reset()
        self.current = {}
        self.invalid = 0
        self._reason_counts = [{} for _ in self._reason_counts]

    def handover(self) -> dict[str, QueueStatus]:
        """This poll's job keys → (queue, status), for the tracker, and forgotten here: one entry per job is
        the biggest thing a poll holds, and the next poll builds its own."""
        current, self.current = self.current, {}
        return current

    def worth_keeping(self) -> bool:
        """Whether the last poll used enough of what this tally remembers to keep it for the next one."""
        used, known = self.builder.series
        limit = KEEP_FACTOR * used + SLACK
        return known <= limit and len(self._entries) <= limit

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
            slot, uslot = self.builder.cells(queue, parser.label(raw[1]), status)
            rslot = -1
            if status == "queued":  # only queued jobs are counted by reason
                rslot = self._reason_queues.get(queue, -1)
                if rslot < 0:
                    rslot = self._reason_queues[queue] = len(self._reason_counts)
                    self._reason_counts.append({})
            entry = (pair, slot, uslot, rslot)
        if all(v is None or v.__class__ is str for v in raw):  # 1, 1.0 and True are equal keys: not remembered
            self._entries[raw] = entry
        return entry

    def take(self, rows: list[Row | None], scheduler_id: str) -> None:
        """Count the rows of one page of ``scheduler_id``'s list; rows already counted this poll are skipped."""
        current = self.current
        entries = self._entries
        jobs, used = self.builder.jobs, self.builder.cpus  # the counters, by slot
        reason_counts = self._reason_counts
        max_cpus = MAX_CPUS
        prefixes: dict[Any, str] = {}  # raw jobmanagerId → "id NUL"; one or two per page
        for row in rows:
            if row is None:  # not an object
                self.invalid += 1
                continue
            job_id = row.jobId
            job_id = job_id.strip() if job_id.__class__ is str else scalar_text(job_id)
            if not job_id:
                self.invalid += 1
                continue
            manager = row.jobmanagerId
            try:
                prefix = prefixes[manager]
            except (KeyError, TypeError):
                prefix = (scalar_text(manager) or scheduler_id) + "\x00"
                if manager.__class__ is str:
                    prefixes[manager] = prefix
            key = prefix + job_id
            if key in current:
                continue
            raw = (row.queue, row.user, row.jobStatus)
            try:
                entry = entries[raw]
            except (KeyError, TypeError):
                entry = self._entry(raw)
            if entry is None:
                continue
            pair, slot, uslot, rslot = entry
            current[key] = pair
            n = row.procNumUsed
            if n.__class__ is not int or n < 0 or n > max_cpus:
                n = cpu_count(n)
                if n is None:  # a count too big to be true: the job counts, with 0 CPUs, and the row is reported
                    n = 0
                    self.invalid += 1
            jobs[slot] += 1
            used[slot] += n
            if uslot >= 0:
                jobs[uslot] += 1
                used[uslot] += n
            if rslot >= 0:
                reasons = reason_counts[rslot]
                reason = row.reason
                try:
                    reasons[reason] += 1
                except KeyError:
                    reasons[reason] = 1
                except TypeError:  # unhashable: labelled now (as "none", like every reason that is not a string)
                    self.builder.count_reason(pair[0], self._parser.reason(reason))

    def finish(self) -> None:
        """Count the queued jobs by reason: each distinct raw reason is labelled once, not once per job.

        Raw reasons are safe as keys: the only equal values of different types (1, 1.0, True) are not
        strings, and every non-string reason is labelled alike.
        """
        for queue, rslot in self._reason_queues.items():
            for raw, n in self._reason_counts[rslot].items():
                self.builder.count_reason(queue, self._parser.reason(raw), n)


def next_tally(previous: RowTally | None, new: Callable[[], RowTally]) -> RowTally:
    """A tally for the next poll: ``previous``, begun anew, if it is worth keeping; else ``new()``."""
    if previous is not None and previous.worth_keeping():
        previous.begin()
        return previous
    return new()
