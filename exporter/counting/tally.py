"""One poll's rows in, page by page: deduplicated, labelled and counted. The hot loop of a poll.

What a row adds depends mostly on a few of its values: its queue, user and status, which repeat across
thousands of rows. So a row costs one lookup of those three raw values (their labels, whether the queue is
excluded, and the counters they add to, found once and remembered from poll to poll), a key for
deduplication, one lookup of its application, its run time and host list read only when it has them (a
run time or a running job's host list that repeats within a poll is read once), a few additions, and the
one tuple per job that the tracker is handed. tests/reference.py counts the same rows one Job at a time,
and a test holds the two equal.
"""

from __future__ import annotations

from collections.abc import Callable, Container
from typing import Any

from exporter.counting.rows import MAX_CPUS, RowParser, cpu_count, scalar_text
from exporter.counting.snapshot import SnapshotBuilder
from exporter.counting.tracker import Seen
from exporter.counting.usage import INVALID, MAX_NODES, node_count, node_names, run_seconds
from exporter.model import UNKNOWN, Row

# Where the rows with one raw (queue, user, status) are counted: their queue, status and user labels (what the
# tracker gets), the builder's slots by queue and by user (-1: none), for queued jobs the index of their
# queue's raw reasons in ``RowTally._raw_reasons`` (-1 otherwise), the index of their status's applications in
# ``RowTally._apps``, and whether they run. None: the queue is excluded. Only strings, ints and a bool, no
# dict: the garbage collector stops tracking such a tuple, and a tally keeps thousands of them.
_Target = tuple[str, str, str, int, int, int, int, bool] | None


# Raw jobRunTime values a poll remembers with their seconds: enough for those that repeat (00:00:00, final
# run times of ended jobs); a running job's grows from one poll to the next.
RUN_TIMES_REMEMBERED = 4096
UNREAD = -2  # neither a run time nor a node count: not read yet

# Raw jobStatus values that map to no status: how many of them a poll keeps, as examples for its log line, and
# how many characters of each (the rows themselves are only counted).
STATUS_EXAMPLES = 5
STATUS_SHOWN_LENGTH = 64

# A tally is kept for the next poll while what it remembers is at most this many times what the last poll
# used, plus SLACK: series and raw values of jobs long gone would otherwise pile up for ever.
KEEP_FACTOR = 2
SLACK = 1024


class RowTally:
    """Counts the pages of a poll into its SnapshotBuilder, and hands each counted job over for the tracker
    (key → Seen: queue, status, user, CPUs, run seconds).

    One tally (and its builder) may serve poll after poll: ``begin`` starts the next. The raw values it met
    keep their labels and slots, so a poll of the same series as the last one builds no target and no series.
    """

    def __init__(
        self,
        parser: RowParser,
        builder: SnapshotBuilder,
        is_excluded: Callable[[str], bool],
        shown_statuses: Container[str] = (),
    ) -> None:
        """``shown_statuses``: unknown jobStatus values (cut to STATUS_SHOWN_LENGTH) that the log has shown
        already; the examples of a poll are values not among them when it has any."""
        self._parser = parser
        self.builder = builder  # where the counts go
        self._is_excluded = is_excluded
        self._shown_statuses = shown_statuses
        self._counted: dict[str, Seen] = {}
        self.invalid = 0  # rows skipped as unusable, and counted rows whose procNumUsed was too big
        self.invalid_cpus = 0  # counted rows whose procNumUsed was too big (also in ``invalid``)
        self.invalid_run_times = 0  # counted rows whose jobRunTime could not be read
        self.invalid_node_lists = 0  # counted rows whose nodeUsed could not be read
        self.unknown_statuses = 0  # counted rows whose jobStatus maps to no status (they count as unknown)
        self.status_examples: list[str] = []  # a few of their values, cut short
        self.new_status_seen = False  # whether one of them is not among shown_statuses
        self._targets: dict[tuple[Any, Any, Any], _Target] = {}
        # Raw reasons of queued jobs with their counts, labelled in finish(): one dict per queue, shared by
        # the targets of its users.
        self._raw_reasons_index: dict[str, int] = {}  # queue label → index in _raw_reasons
        self._raw_reasons: list[dict[Any, int]] = []
        # Raw appType → the builder's slot of (application, status): one dict per status, shared by targets.
        self._apps_index: dict[str, int] = {}  # status label → index in _apps
        self._apps: list[dict[Any, int]] = []
        # Nodes named by this poll's running jobs (at most MAX_NODES), and their raw host lists already read;
        # raw run times already read.
        self._nodes: set[str] = set()
        self._running_lists: dict[str, int] = {}
        self._run_times: dict[str, int | None] = {}
        # What this poll hands over of the jobs that have not run (no run time, or one that cannot be read):
        # the same for many jobs, so kept once each.
        self._idle: dict[Seen, Seen] = {}

    def begin(self) -> None:
        """Start the next poll: nothing counted yet; what was learnt about raw values stays."""
        self.builder.reset()
        self._counted = {}
        self.invalid = self.invalid_cpus = self.invalid_run_times = self.invalid_node_lists = 0
        self.unknown_statuses, self.status_examples, self.new_status_seen = 0, [], False
        self._raw_reasons = [{} for _ in self._raw_reasons]
        self._nodes, self._running_lists, self._run_times, self._idle = set(), {}, {}, {}

    def pop_counted(self) -> dict[str, Seen]:
        """This poll's jobs (key → Seen), for the tracker, and forgotten here: one entry per job is the biggest
        thing a poll holds, and the next poll builds its own."""
        counted, self._counted = self._counted, {}
        self._nodes, self._running_lists, self._run_times, self._idle = set(), {}, {}, {}
        return counted

    def counted_keys(self) -> Container[str]:
        """The keys of the jobs counted so far in this poll."""
        return self._counted.keys()

    def invalid_fields(self) -> dict[str, int]:
        """This poll's values that could not be read, by field (only the fields with some)."""
        counts = {
            "jobRunTime": self.invalid_run_times,
            "jobStatus": self.unknown_statuses,
            "nodeUsed": self.invalid_node_lists,
            "procNumUsed": self.invalid_cpus,
        }
        return {name: n for name, n in counts.items() if n}

    def worth_keeping(self) -> bool:
        """Whether the last poll used enough of what this tally remembers to keep it for the next one."""
        used, known = self.builder.series_use()
        limit = KEEP_FACTOR * used + SLACK
        apps = sum(map(len, self._apps))
        return known <= limit and len(self._targets) <= limit and apps <= limit

    def _target_of(self, raw: tuple[Any, Any, Any]) -> _Target:
        parser = self._parser
        queue = parser.label(raw[0])
        if self._is_excluded(queue):
            target: _Target = None
        else:
            status = parser.status(raw[2])[1]
            user = parser.label(raw[1])
            queue_slot, user_slot = self.builder.slots_of(queue, user, status)
            reasons_index = -1
            if status == "queued":  # only queued jobs are counted by reason
                reasons_index = self._raw_reasons_index.get(queue, -1)
                if reasons_index < 0:
                    reasons_index = self._raw_reasons_index[queue] = len(self._raw_reasons)
                    self._raw_reasons.append({})
            apps_index = self._apps_index.get(status, -1)
            if apps_index < 0:
                apps_index = self._apps_index[status] = len(self._apps)
                self._apps.append({})
            target = (queue, status, user, queue_slot, user_slot, reasons_index, apps_index, status == "running")
        if all(v is None or v.__class__ is str for v in raw):  # 1, 1.0 and True are equal keys: not remembered
            self._targets[raw] = target
        return target

    def _unknown_status(self, raw: Any) -> None:
        """One more counted row whose jobStatus maps to no status; its value may become an example."""
        self.unknown_statuses += 1
        examples = self.status_examples
        if self.new_status_seen and len(examples) >= STATUS_EXAMPLES:
            return
        shown = self._parser.status(raw)[0][:STATUS_SHOWN_LENGTH]
        new = shown not in self._shown_statuses
        if new and not self.new_status_seen:  # the examples show new values when there are any
            self.new_status_seen, examples[:] = True, []
        if new == self.new_status_seen and len(examples) < STATUS_EXAMPLES and shown not in examples:
            examples.append(shown)

    def _app_slot(self, raw: Any, status: str, apps: dict[Any, int]) -> int:
        slot = self.builder.app_slot(self._parser.app(raw), status)
        if raw is None or raw.__class__ is str:  # 1, 1.0 and True are equal keys: not remembered
            apps[raw] = slot
        return slot

    def _run_seconds(self, raw: Any) -> int | None:
        seconds = run_seconds(raw)
        if raw.__class__ is str and len(self._run_times) < RUN_TIMES_REMEMBERED:
            self._run_times[raw] = seconds
        return seconds

    def _running_nodes(self, raw: Any) -> int | None:
        """How many nodes a running job's host list names (None: not a host list); its nodes join the poll's."""
        names = node_names(raw)
        if names is None:  # not a host list, or one too costly to list: counted all the same when it can be
            count = node_count(raw)
            if count is not None and raw.__class__ is str:
                self._running_lists[raw] = count
            return count
        nodes = self._nodes
        if len(nodes) + len(names) <= MAX_NODES:
            nodes.update(names)
        else:
            for name in names:
                if len(nodes) >= MAX_NODES:
                    break
                nodes.add(name)
        count = len(names) if len(names) < MAX_NODES else node_count(raw)
        if count is not None and raw.__class__ is str:
            self._running_lists[raw] = count
        return count

    def add_page(self, rows: list[Row | None], scheduler_id: str) -> int:
        """Count the rows of one page of ``scheduler_id``'s list; rows already counted this poll are skipped.
        Returns how many jobs the page added."""
        counted = self._counted
        before = len(counted)
        targets = self._targets
        builder = self.builder
        job_counts, cpu_sums, node_sums, run_max = (
            builder.job_counts,
            builder.cpu_sums,
            builder.node_sums,
            builder.run_max,
        )
        raw_reasons = self._raw_reasons
        all_apps = self._apps
        running_lists, run_times, idle = self._running_lists, self._run_times, self._idle
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
            queue, status, user, queue_slot, user_slot, reasons_index, apps_index, running = target
            if status == UNKNOWN:
                self._unknown_status(row.jobStatus)
            cpus = row.procNumUsed
            if cpus.__class__ is not int or cpus < 0 or cpus > max_cpus:
                cpus = cpu_count(cpus)
                if cpus is None:  # a count too big to be true: the job counts, with 0 CPUs, and the row is reported
                    cpus = 0
                    self.invalid += 1
                    self.invalid_cpus += 1
            job_counts[queue_slot] += 1
            cpu_sums[queue_slot] += cpus
            if user_slot >= 0:
                job_counts[user_slot] += 1
                cpu_sums[user_slot] += cpus
            apps = all_apps[apps_index]
            app = row.appType
            try:
                app_slot = apps[app]
            except (KeyError, TypeError):
                app_slot = self._app_slot(app, status, apps)
            job_counts[app_slot] += 1
            cpu_sums[app_slot] += cpus
            seconds = row.jobRunTime
            if seconds is not None and seconds != "":  # parsed only when there is one
                try:
                    seconds = run_times.get(seconds, UNREAD)
                except TypeError:  # unhashable
                    pass
                if seconds == UNREAD or seconds.__class__ is not int:
                    seconds = self._run_seconds(row.jobRunTime)
                if seconds == INVALID:
                    self.invalid_run_times += 1
                elif running and seconds is not None and seconds > run_max[queue_slot]:
                    run_max[queue_slot] = seconds
            else:
                seconds = None
            nodes = row.nodeUsed
            if nodes is not None and nodes != "":  # parsed only when there is one
                if running:
                    try:
                        nodes = running_lists.get(nodes, UNREAD)
                    except TypeError:  # unhashable
                        pass
                    if nodes == UNREAD or nodes.__class__ is not int:
                        nodes = self._running_nodes(row.nodeUsed)
                else:
                    nodes = node_count(nodes)
                if nodes is None:
                    self.invalid_node_lists += 1
                else:
                    node_sums[queue_slot] += nodes
            seen = (queue, status, user, cpus, seconds)
            if seconds is None or seconds <= 0:
                seen = idle.setdefault(seen, seen)
            counted[key] = seen
            if reasons_index >= 0:
                reasons = raw_reasons[reasons_index]
                reason = row.reason
                try:
                    reasons[reason] += 1
                except KeyError:
                    reasons[reason] = 1
                except TypeError:  # unhashable: labelled now (as "none", like every reason that is not a string)
                    self.builder.count_reason(queue, self._parser.reason(reason))
        return len(counted) - before

    def finish(self) -> None:
        """Count the queued jobs by reason: each distinct raw reason is labelled once, not once per job; and
        the nodes in use, whose names are then let go.

        Raw reasons are safe as keys: the only equal values of different types (1, 1.0, True) are not
        strings, and every non-string reason is labelled alike.
        """
        for queue, reasons_index in self._raw_reasons_index.items():
            for raw, n in self._raw_reasons[reasons_index].items():
                self.builder.count_reason(queue, self._parser.reason(raw), n)
        self.builder.nodes_in_use = len(self._nodes)
        self._nodes, self._running_lists, self._run_times, self._idle = set(), {}, {}, {}


def next_tally(previous: RowTally | None, new: Callable[[], RowTally]) -> RowTally:
    """A tally for the next poll: ``previous``, begun anew, if it is worth keeping; else ``new()``."""
    if previous is not None and previous.worth_keeping():
        previous.begin()
        return previous
    return new()
