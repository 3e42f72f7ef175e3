"""One poll's rows in, page by page: deduplicated, labelled and counted. The hot loop of a poll.

What a row adds depends on only a few of its values: its queue, user and status, which repeat across
thousands of rows. So a row costs one lookup of those three raw values (their labels, whether the queue is
excluded, and the counters they add to, found once and remembered from poll to poll), a key for
deduplication, and a few additions; nothing else is built per row. tests/reference.py counts the same rows
one Job at a time, and a test holds the two equal.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from exporter.counting.rows import MAX_CPUS, RowParser, cpu_count, scalar_text
from exporter.counting.snapshot import SnapshotBuilder
from exporter.model import UNKNOWN, QueueStatus, Row

# Where the rows with one raw (queue, user, status) are counted: the (queue, status) the tracker gets, the
# builder's slots by queue and by user (-1: none), and for queued jobs the index of their queue's raw reasons
# in ``RowTally._raw_reasons`` (-1 otherwise). None: the queue is excluded. Only strings and ints, no dict:
# the garbage collector stops tracking such a tuple, and a tally keeps thousands of them.
_Target = tuple[QueueStatus, int, int, int] | None


# A tally is kept for the next poll while what it remembers is at most this many times what the last poll
# used, plus SLACK: series and raw values of jobs long gone would otherwise pile up for ever.
KEEP_FACTOR = 2
SLACK = 1024


class RowTally:
    """Counts the pages of a poll into its SnapshotBuilder, and each counted job's key → (queue, status).

    One tally (and its builder) may serve poll after poll: ``begin`` starts the next. The raw values it met
    keep their labels and slots, so a poll of the same series as the last one builds no target and no series.
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
        self._on_unknown_status = on_unknown_status
        self._counted: dict[str, QueueStatus] = {}
        self.invalid = 0  # rows skipped as unusable, and counted rows whose procNumUsed was too big
        self._targets: dict[tuple[Any, Any, Any], _Target] = {}
        self._queue_statuses: dict[QueueStatus, QueueStatus] = {}  # one tuple per (queue, status), not per job
        # Raw reasons of queued jobs with their counts, labelled in finish(): one dict per queue, shared by
        # the targets of its users.
        self._raw_reasons_index: dict[str, int] = {}  # queue label → index in _raw_reasons
        self._raw_reasons: list[dict[Any, int]] = []

    def begin(self) -> None:
        """Start the next poll: nothing counted yet; what was learnt about raw values stays."""
        self.builder.reset()
        self._counted = {}
        self.invalid = 0
        self._raw_reasons = [{} for _ in self._raw_reasons]

    def pop_counted(self) -> dict[str, QueueStatus]:
        """This poll's job keys → (queue, status), for the tracker, and forgotten here: one entry per job is
        the biggest thing a poll holds, and the next poll builds its own."""
        counted, self._counted = self._counted, {}
        return counted

    def worth_keeping(self) -> bool:
        """Whether the last poll used enough of what this tally remembers to keep it for the next one."""
        used, known = self.builder.series_use()
        limit = KEEP_FACTOR * used + SLACK
        return known <= limit and len(self._targets) <= limit

    def _target_of(self, raw: tuple[Any, Any, Any]) -> _Target:
        parser = self._parser
        queue = parser.label(raw[0])
        if self._is_excluded(queue):
            target: _Target = None
        else:
            raw_status, status = parser.status(raw[2])
            if status == UNKNOWN:
                self._on_unknown_status(raw_status)
            queue_status = self._queue_statuses.setdefault((queue, status), (queue, status))
            queue_slot, user_slot = self.builder.slots_of(queue, parser.label(raw[1]), status)
            reasons_index = -1
            if status == "queued":  # only queued jobs are counted by reason
                reasons_index = self._raw_reasons_index.get(queue, -1)
                if reasons_index < 0:
                    reasons_index = self._raw_reasons_index[queue] = len(self._raw_reasons)
                    self._raw_reasons.append({})
            target = (queue_status, queue_slot, user_slot, reasons_index)
        if all(v is None or v.__class__ is str for v in raw):  # 1, 1.0 and True are equal keys: not remembered
            self._targets[raw] = target
        return target

    def add_page(self, rows: list[Row | None], scheduler_id: str) -> None:
        """Count the rows of one page of ``scheduler_id``'s list; rows already counted this poll are skipped."""
        counted = self._counted
        targets = self._targets
        job_counts, cpu_sums = self.builder.job_counts, self.builder.cpu_sums
        raw_reasons = self._raw_reasons
        max_cpus = MAX_CPUS
        key_prefixes: dict[Any, str] = {}  # raw jobmanagerId → "id NUL"; one or two per page
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
                prefix = key_prefixes[manager]
            except (KeyError, TypeError):
                prefix = (scalar_text(manager) or scheduler_id) + "\x00"
                if manager.__class__ is str:
                    key_prefixes[manager] = prefix
            key = prefix + job_id
            if key in counted:
                continue
            raw = (row.queue, row.user, row.jobStatus)
            try:
                target = targets[raw]
            except (KeyError, TypeError):
                target = self._target_of(raw)
            if target is None:
                continue
            queue_status, queue_slot, user_slot, reasons_index = target
            counted[key] = queue_status
            cpus = row.procNumUsed
            if cpus.__class__ is not int or cpus < 0 or cpus > max_cpus:
                cpus = cpu_count(cpus)
                if cpus is None:  # a count too big to be true: the job counts, with 0 CPUs, and the row is reported
                    cpus = 0
                    self.invalid += 1
            job_counts[queue_slot] += 1
            cpu_sums[queue_slot] += cpus
            if user_slot >= 0:
                job_counts[user_slot] += 1
                cpu_sums[user_slot] += cpus
            if reasons_index >= 0:
                reasons = raw_reasons[reasons_index]
                reason = row.reason
                try:
                    reasons[reason] += 1
                except KeyError:
                    reasons[reason] = 1
                except TypeError:  # unhashable: labelled now (as "none", like every reason that is not a string)
                    self.builder.count_reason(queue_status[0], self._parser.reason(reason))

    def finish(self) -> None:
        """Count the queued jobs by reason: each distinct raw reason is labelled once, not once per job.

        Raw reasons are safe as keys: the only equal values of different types (1, 1.0, True) are not
        strings, and every non-string reason is labelled alike.
        """
        for queue, reasons_index in self._raw_reasons_index.items():
            for raw, n in self._raw_reasons[reasons_index].items():
                self.builder.count_reason(queue, self._parser.reason(raw), n)


def next_tally(previous: RowTally | None, new: Callable[[], RowTally]) -> RowTally:
    """A tally for the next poll: ``previous``, begun anew, if it is worth keeping; else ``new()``."""
    if previous is not None and previous.worth_keeping():
        previous.begin()
        return previous
    return new()
