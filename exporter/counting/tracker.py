"""Memory of jobs across successful polls, turned into counters, histograms and first-queued times. Pure.

The exporter only ever sees the job list, every interval: a job is "submitted" when first seen, "started"
when first seen in a status that means it ran, "ended" when first seen terminal (or ``gone`` when it left
the list without that). Every time is when the exporter saw it, so waits and ages are lower bounds with
the resolution of the poll interval. The first poll after start only seeds the memory.

CPU-seconds follow each job's run time: a poll adds ``procNumUsed`` × how much it grew since the last poll
(the whole run time for a job new since then). A run time that goes backwards (a requeued job running
again) adds nothing and becomes the base; a job that vanishes adds nothing more: the counters are a lower
bound.
"""

from __future__ import annotations

from collections.abc import Container, Mapping
from types import MappingProxyType

from exporter.counting.usernames import UserNames
from exporter.model import (
    GONE,
    OTHER,
    RAN,
    RUN_BUCKETS,
    TERMINAL,
    WAIT_BUCKETS,
    WAITING,
    Activity,
    QueueStatus,
    RunTimeHistogram,
    WaitHistogram,
)

Seen = tuple[str, str, str, int, int | None]
"""What a poll saw of one job: (queue, status, user, CPUs, run seconds). Run seconds are None before the job
started, negative when the value could not be read (neither moves the job's base)."""

UNKNOWN_RUN = -1  # the run base of a job whose run time is not known (seen first with one that was unreadable)
MAX_MISSED = 10  # polls a job may go unread, unconfirmed, before it is taken to have left the list

# What the tracker remembers of one job: (queue, status, first seen waiting in the current wait or None,
# started, ended, run base: its last known run seconds). A plain tuple of strings, numbers and bools, which
# the garbage collector stops tracking: one per job adds nothing to the full collections that pause
# scrapes. A change of a job replaces its tuple.
_Memory = tuple[str, str, float | None, bool, bool, int]


def _bucket_index(seconds: float, buckets: tuple[float, ...] = WAIT_BUCKETS) -> int:
    for i, bound in enumerate(buckets):
        if seconds <= bound:
            return i
    return len(buckets)


class JobTracker:
    """Compares each successful poll's job list with the previous one; holds one small record per listed job.

    ``restored_waits`` and ``restored_runs`` (first-waiting times and run seconds by job key, from a state
    file) carry a job's wait and its CPU-seconds across a restart; ``users`` turns on CPU-seconds per user.
    """

    def __init__(
        self,
        restored_waits: Mapping[str, float] | None = None,
        restored_runs: Mapping[str, int] | None = None,
        users: UserNames | None = None,
    ) -> None:
        self._memory: dict[str, _Memory] = {}
        self._missed: dict[str, int] = {}  # jobs not read in the last polls, not yet confirmed gone: polls missed
        self.departures = 0  # jobs confirmed to have left the list, so far
        self._seeded = False
        self._restored = dict(restored_waits or {})
        self._restored_runs = dict(restored_runs or {})
        self._users = users
        self._submitted: dict[str, int] = {}
        self._started: dict[str, int] = {}
        self._ended: dict[QueueStatus, int] = {}
        self._waits: dict[str, list[float]] = {}  # queue → jobs by wait bucket..., then the sum of waits
        self._runs: dict[str, list[float]] = {}  # queue → jobs by run-time bucket..., then the sum of run times
        self._cpu: dict[str, int] = {}  # queue → CPU-seconds
        self._user_cpu: dict[str, dict[str, int]] = {}  # queue → user → CPU-seconds
        self._spent: dict[str, int] = {}  # user → CPU-seconds of the poll being taken (for the daily choice)
        self._leaving: set[str] = set()  # users the last poll's daily choice left out: their series go next poll

    def _count_end(self, queue: str, status: str) -> None:
        self._ended[(queue, status)] = self._ended.get((queue, status), 0) + 1

    def _count_start(self, queue: str, waited: float) -> None:
        self._started[queue] = self._started.get(queue, 0) + 1
        histogram = self._waits.get(queue)
        if histogram is None:
            histogram = self._waits[queue] = [0.0] * (len(WAIT_BUCKETS) + 2)
        histogram[_bucket_index(waited)] += 1
        histogram[-1] += waited

    def _observe_run(self, queue: str, started: bool, run: int) -> None:
        """A job seen ending: its last known run time, if it ran and that is known."""
        if run < 0 or not (started or run > 0):
            return
        histogram = self._runs.get(queue)
        if histogram is None:
            histogram = self._runs[queue] = [0.0] * (len(RUN_BUCKETS) + 2)
        histogram[_bucket_index(run, RUN_BUCKETS)] += 1
        histogram[-1] += run

    def _count_cpu(self, queue: str, user: str, cpu_seconds: int) -> None:
        self._cpu[queue] = self._cpu.get(queue, 0) + cpu_seconds
        if self._users is not None:
            self._spent[user] = self._spent.get(user, 0) + cpu_seconds
            name = self._users.name(user)
            by_user = self._user_cpu.get(queue)
            if by_user is None:
                by_user = self._user_cpu[queue] = {}
            by_user[name] = by_user.get(name, 0) + cpu_seconds

    def _first_base(self, key: str, run: int | None, seed: bool) -> tuple[int, int]:
        """(run base, growth) of a job not in the memory: counted whole if new since the last poll; on the
        seeding poll counted from the state file's run seconds, or not at all."""
        if not seed:
            return (0, 0) if run is None or run < 0 else (run, run)
        restored = self._restored_runs.get(key)
        if restored is None:
            return 0 if run is None else max(run, UNKNOWN_RUN), 0
        if run is None or run < 0:
            return restored, 0
        return run, max(run - restored, 0)

    def missing(self, current: Container[str]) -> tuple[list[str], list[str]]:
        """The jobs known from earlier polls that ``current`` (this poll's keys so far) lacks: (those that had
        not ended, those that had), each in the order they were first seen."""
        active: list[str] = []
        ended: list[str] = []
        for key, memory in self._memory.items():
            if key not in current:
                (ended if memory[4] else active).append(key)
        return active, ended

    def commit(
        self,
        current: Mapping[str, Seen],
        now: float,
        queues: Container[str] | None = None,
        left: Container[str] | None = None,
    ) -> Activity:
        """Take one successful poll: ``current`` maps every listed job's key to what the poll saw of it.

        A known job that ``current`` lacks has left the list when ``left`` is None (the poll read the whole
        list) or holds its key (its departure was confirmed otherwise); else it may have been skipped by
        paging, and is kept as it was, uncounted, until it is read again or confirmed gone, or has been
        missed MAX_MISSED polls in a row. With ``queues`` (the queue budget's names), ``current`` names every
        other queue "other": a job that left the list from one of them ends as "other" too, and their counts
        by name are forgotten."""
        seed = not self._seeded
        if self._leaving:
            for series in self._user_cpu.values():
                for user in self._leaving:
                    series.pop(user, None)
            self._leaving = set()
        # Updated in place, not rebuilt: a second dict of every job would be the biggest thing a poll holds.
        memory = self._memory
        cpu, user_cpu, users, spent = self._cpu, self._user_cpu, self._users, self._spent
        named = users.named if users is not None else set()
        first: dict[_Memory, _Memory] = {}  # records of jobs first seen in this poll, that have not run
        for key, (queue, status, user, cpus, run) in current.items():
            old = memory.get(key)
            if old is None:
                since = None
                if status in WAITING:
                    restored = self._restored.get(key)
                    since = restored if restored is not None and restored <= now else now
                started, ended = status in RAN, status in TERMINAL
                base, growth = self._first_base(key, run, seed)
                entry = (queue, status, since, started, ended, base)
                if base <= 0:  # not started: the jobs first seen waiting in one queue together share one record
                    entry = first.setdefault(entry, entry)
                memory[key] = entry
                if growth and cpus:
                    self._count_cpu(queue, user, growth * cpus)
                elif started and users is not None:  # its user's series starts at 0, so increase() sees all it adds
                    user_cpu.setdefault(queue, {}).setdefault(users.name(user), 0)
                if not seed:
                    self._submitted[queue] = self._submitted.get(queue, 0) + 1
                    if started:
                        self._count_start(queue, 0.0)  # started between two polls: it waited less than one interval
                    if ended:
                        self._count_end(queue, status)
                        self._observe_run(queue, started, base)
                continue
            base = old[5]
            if run is not None and run >= 0 and run != base:  # only a readable run time moves the base
                if run > base >= 0 and cpus:  # as _count_cpu does, inline: most running jobs come here every poll
                    amount = (run - base) * cpus
                    cpu[queue] = cpu.get(queue, 0) + amount
                    if users is not None:
                        spent[user] = spent.get(user, 0) + amount
                        name = user if user in named else users.name(user)
                        by_user = user_cpu.get(queue)
                        if by_user is None:
                            by_user = user_cpu[queue] = {}
                        by_user[name] = by_user.get(name, 0) + amount
                base = run
            elif old[1] == status and old[0] == queue:  # (queue, status, ...)
                continue  # unchanged, as most jobs are from one poll to the next: nothing to update
            if old[1] == status and old[0] == queue:
                memory[key] = (queue, status, old[2], old[3], old[4], base)  # a running job: only its run time
                continue
            _, old_status, since, started, ended, _ = old
            if status in WAITING:
                if old_status not in WAITING:  # waiting again (requeued): a new wait and a new start
                    since, started = now, False
                elif since is None:
                    since = now
            if status in RAN and not started:
                started = True
                self._count_start(queue, now - (since if since is not None else now))
            if status not in WAITING:
                since = None
            if status in TERMINAL and not ended:
                ended = True
                self._count_end(queue, status)
                self._observe_run(queue, started, base)
            memory[key] = (queue, status, since, started, ended, base)
        missed = self._missed
        for key in [k for k in missed if k in current]:  # read again after being missed: it never left
            del missed[key]
        if len(memory) > len(current):  # some jobs were not read: those that have left are forgotten
            for key in [k for k in memory if k not in current]:
                if left is not None and key not in left:
                    missed[key] = times = missed.get(key, 0) + 1
                    if times < MAX_MISSED:
                        continue  # perhaps skipped by paging: kept as it was, not counted as gone
                missed.pop(key, None)
                self.departures += 1
                gone_queue, _, _, started, ended, base = memory.pop(key)
                if not seed and not ended:
                    gone_queue = gone_queue if queues is None or gone_queue in queues else OTHER
                    self._count_end(gone_queue, GONE)
                    self._observe_run(gone_queue, started, base)
        left = users.take(spent, now) if users is not None else None
        if users is not None and left is not None:
            self._rename_users(users, left, current)
        self._spent = {}
        self._seeded = True
        self._restored.clear()
        self._restored_runs.clear()
        if queues is not None:
            self._forget_queues_but(queues)
        return self.activity()

    def _rename_users(self, users: UserNames, left: set[str], current: Mapping[str, Seen]) -> None:
        """After a daily choice of the named users: the series of those ``left`` out go at the next poll (this
        one has counted into them; what they counted stays in Prometheus, and increase() over a range still
        counts it). Every job that may still add CPU-seconds has the series it adds to from now on, at 0 if
        new, so that increase() sees its first growth too."""
        self._leaving = left
        for queue, status, user, cpus, _ in current.values():
            if cpus and status in RAN and status not in TERMINAL:
                self._user_cpu.setdefault(queue, {}).setdefault(users.name(user), 0)

    def _forget_queues_but(self, queues: Container[str]) -> None:
        for table in (self._submitted, self._started, self._waits, self._runs, self._cpu, self._user_cpu):
            for queue in [q for q in table if q not in queues]:
                del table[queue]
        for key in [k for k in self._ended if k[0] not in queues]:
            del self._ended[key]

    def known_queues(self) -> set[str]:
        """The queues with counts (each has series, 0-valued or not, in the activity families)."""
        return {
            *self._submitted,
            *self._started,
            *self._waits,
            *self._runs,
            *self._cpu,
            *(q for q, _ in self._ended),
        }

    def activity(self) -> Activity:
        """An immutable copy of the counts, and the earliest first-waiting time of the jobs now queued."""
        oldest: dict[str, float] = {}
        for queue, status, since, _, _, _ in self._memory.values():
            if status == "queued" and since is not None and since < oldest.get(queue, float("inf")):
                oldest[queue] = since
        wait = {
            q: WaitHistogram(tuple(int(n) for n in histogram[:-1]), histogram[-1], int(sum(histogram[:-1])))
            for q, histogram in self._waits.items()
        }
        run_time = {
            q: RunTimeHistogram(tuple(int(n) for n in histogram[:-1]), histogram[-1], int(sum(histogram[:-1])))
            for q, histogram in self._runs.items()
        }
        user_cpu = {(q, u): n for q, by_user in self._user_cpu.items() for u, n in by_user.items()}
        return Activity(
            MappingProxyType(dict(self._submitted)),
            MappingProxyType(dict(self._started)),
            MappingProxyType(dict(self._ended)),
            MappingProxyType(wait),
            MappingProxyType(oldest),
            cpu_seconds=MappingProxyType(dict(self._cpu)),
            user_cpu_seconds=MappingProxyType(user_cpu),
            run_time=MappingProxyType(run_time),
        )

    def waiting_since(self) -> dict[str, float]:
        """First-waiting times of the jobs now waiting (what a state file keeps across a restart)."""
        return {k: since for k, (_, _, since, _, _, _) in self._memory.items() if since is not None}

    def run_seconds(self) -> dict[str, int]:
        """The last known run seconds of the jobs that have started and not ended (what a state file keeps, so
        that a restart loses none of their CPU-seconds)."""
        return {
            k: run
            for k, (_, _, _, started, ended, run) in self._memory.items()
            if run >= 0 and not ended and (started or run > 0)
        }
