"""What the exporter knows of each job from one poll to the next, and what a poll's reading of it means. Pure.

The exporter only ever sees the job list, every interval: a job is "submitted" when first seen, "started"
when first seen in a status that means it ran, "ended" when first seen terminal (or ``gone`` when it left the
list without that). Every time is when the exporter saw it, so waits and ages are lower bounds with the
resolution of the poll interval. The first poll after start only learns the list: it counts no event.

CPU-seconds follow each job's run time: a poll adds how much it grew since the last poll (the whole run time
for a job new since then). A run time that goes backwards (a requeued job running again) adds nothing and
becomes the base; a job that vanishes adds nothing more: the counters are a lower bound.

A poll's readings are staged and applied only when the poll succeeds (``commit``); a failed poll changes
nothing (``abandon``). A known job that a poll did not read has left the list only when that is confirmed
(see ``commit``): paging may have skipped it while the list moved.
"""

from __future__ import annotations

from collections.abc import Container, Mapping

from exporter.model import INVALID, RAN, TERMINAL, WAITING, Gone, Job, Known, Seen

MAX_MISSED = 10  # polls a job may go unread, unconfirmed, before it is taken to have left the list


class JobBook:
    """The known jobs of one cluster. ``restored_waits`` and ``restored_runs`` (first-waiting times and run
    seconds by job key, from a state file) carry a job's wait and its CPU-seconds across a restart."""

    def __init__(
        self, restored_waits: Mapping[str, float] | None = None, restored_runs: Mapping[str, int] | None = None
    ) -> None:
        self._known: dict[str, Known] = {}
        self._poll = 0  # polls begun: a job's record says which of them last read it (Known.read)
        self._count = 0  # the jobs this poll has read
        self._changed: dict[str, Known] = {}  # what this poll learnt of them, applied by commit()
        self._missed: dict[str, int] = {}  # jobs not read in the last polls, not yet confirmed gone: polls missed
        self._seeded = False
        self._restored_waits = dict(restored_waits or {})
        self._restored_runs = dict(restored_runs or {})
        self.departures = 0  # jobs confirmed to have left the list, so far

    @property
    def seeding(self) -> bool:
        """Whether this is the first successful poll since start, which counts no event."""
        return not self._seeded

    def begin(self) -> None:
        """A poll starts: nothing read yet."""
        self._poll += 1
        self._count = 0
        self._changed = {}

    def has(self, key: str) -> bool:
        """Whether this poll has read the job already (the list moved and showed it twice)."""
        known = self._known.get(key)
        return (known is not None and known.read == self._poll) or key in self._changed

    def take(self, job: Job, now: float) -> Seen:
        """A job this poll read (not read before in it): what it means against what was known."""
        self._count += 1
        before = self._known.get(job.key)
        seen, after = self._first(job, now) if before is None else self._again(job, before, now)
        after.read = self._poll
        if before is not None:
            before.read = self._poll
        if after is not before:
            self._changed[job.key] = after
        return seen

    def _first(self, job: Job, now: float) -> tuple[Seen, Known]:
        seed, run = not self._seeded, job.run_seconds
        since = None
        if job.status in WAITING:
            restored = self._restored_waits.get(job.key) if seed else None
            since = restored if restored is not None and restored <= now else now
        started, ended = job.status in RAN, job.status in TERMINAL
        # Its run base, and what it ran: all of it if new since the last poll; on the first poll after start,
        # what it ran since the state file's run seconds, or nothing.
        restored_run = self._restored_runs.get(job.key) if seed else None
        if not seed:
            base, ran = (0, 0) if run is None or run < 0 else (run, run)
        elif restored_run is None:
            base, ran = (0 if run is None else max(run, INVALID)), 0
        elif run is None or run < 0:
            base, ran = restored_run, 0
        else:
            base, ran = run, max(run - restored_run, 0)
        after = Known(queue=job.queue, status=job.status, run=base, since=since, started=started, ended=ended)
        seen = Seen(
            job=job,
            new=True,
            submitted=not seed,
            starts=started and not seed,
            waited=0.0,  # started between two polls: it waited less than one interval
            ends=ended and not seed,
            started=started,
            ran=ran,
            run=base,
            since=since,
        )
        return seen, after

    @staticmethod
    def _again(job: Job, before: Known, now: float) -> tuple[Seen, Known]:
        run, base, ran = job.run_seconds, before.run, 0
        if run is not None and run >= 0 and run != base:  # only a readable run time moves the base
            if run > base >= 0:
                ran = run - base
            base = run
        since, started, ended, waited, starts = before.since, before.started, before.ended, 0.0, False
        if job.status in WAITING and before.status not in WAITING:  # waiting again (requeued): a new wait, a new start
            since, started = now, False
        if job.status in RAN and not started:
            started = starts = True
            waited = now - since if since is not None else 0.0
        if job.status not in WAITING:
            since = None
        ends = job.status in TERMINAL and not ended
        after = before
        if (job.status, job.queue, base, since, started, ends) != (
            before.status,
            before.queue,
            before.run,
            before.since,
            before.started,
            False,
        ):
            after = Known(
                queue=job.queue, status=job.status, run=base, since=since, started=started, ended=ended or ends
            )
        seen = Seen(
            job=job,
            new=False,
            submitted=False,
            starts=starts,
            waited=waited,
            ends=ends,
            started=started,
            ran=ran,
            run=base,
            since=since,
        )
        return seen, after

    def missing(self) -> tuple[list[str], list[str]]:
        """The known jobs this poll has not read: (those that had not ended, those that had), in the order they
        were first seen."""
        active: list[str] = []
        ended: list[str] = []
        for key, known in self._known.items():
            if known.read != self._poll:
                (ended if known.ended else active).append(key)
        return active, ended

    def commit(self, left: Container[str] | None) -> list[Gone]:
        """The poll succeeded: keep what it learnt; returns the jobs confirmed to have left the list.

        A known job this poll did not read has left when ``left`` is None (the poll read the whole list) or
        holds its key (confirmed otherwise); else paging may have skipped it, and it is kept as it was until it
        is read again, confirmed gone, or has been missed MAX_MISSED polls in a row."""
        if self._known:
            self._known.update(self._changed)
        else:  # the first poll: what it learnt is all there is (no second table of every job)
            self._known = self._changed
        known, poll, missed = self._known, self._poll, self._missed
        for key in [k for k in missed if known[k].read == poll]:  # read again after being missed: it never left
            del missed[key]
        gone: list[Gone] = []
        if len(known) > self._count:
            for key in [k for k, record in known.items() if record.read != poll]:
                if left is not None and key not in left:
                    missed[key] = times = missed.get(key, 0) + 1
                    if times < MAX_MISSED:
                        continue
                missed.pop(key, None)
                last = known.pop(key)
                gone.append(
                    Gone(queue=last.queue, status=last.status, run=last.run, started=last.started, ended=last.ended)
                )
        self.departures += len(gone)
        self._seeded = True
        self._restored_waits.clear()
        self._restored_runs.clear()
        self.begin()
        return gone

    def abandon(self) -> None:
        """The poll failed: what it read is forgotten, the known jobs stay as they were."""
        self.begin()

    def waiting_since(self) -> dict[str, float]:
        """First-waiting times of the jobs now waiting (what a state file keeps across a restart)."""
        return {k: known.since for k, known in self._known.items() if known.since is not None}

    def run_seconds(self) -> dict[str, int]:
        """The last known run seconds of the jobs that have started and not ended (what a state file keeps, so
        that a restart loses none of their CPU-seconds)."""
        return {
            k: known.run
            for k, known in self._known.items()
            if known.run >= 0 and not known.ended and (known.started or known.run > 0)
        }
