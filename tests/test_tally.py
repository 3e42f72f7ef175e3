"""The poll's row loop kept from poll to poll: what it may remember, and for how long."""

from __future__ import annotations

import gc

import pytest

import exporter.counting.tally
from exporter.counting.rows import RowParser
from exporter.counting.snapshot import SnapshotBuilder
from exporter.counting.tally import RowTally, next_tally
from tests.helpers import SCHEDULER, row, take_rows


def new_tally() -> RowTally:
    return RowTally(RowParser(), SnapshotBuilder(per_user=True), lambda _: False, lambda _: None)


def poll(previous: RowTally | None, users: list[str]) -> RowTally:
    tally = next_tally(previous, new_tally)
    take_rows(tally, [row(i, user=u) for i, u in enumerate(users)], "1")
    tally.finish()
    return tally


def test_a_tally_is_kept_while_the_series_it_remembers_are_in_use_and_replaced_once_they_pile_up(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(exporter.counting.tally, "SLACK", 0)  # KEEP_FACTOR 2: up to twice the series of the last poll
    first = poll(None, ["a", "b", "c"])  # 1 queue series + 3 user series
    assert poll(first, ["a", "b", "c"]) is first
    assert first.builder.series == (4, 4)
    assert poll(first, ["d", "e", "f"]) is first  # a, b, c no longer listed: 4 of 7 in use, within 2 × 4
    assert first.builder.series == (4, 7)
    third = poll(first, ["g", "h", "i"])
    assert third is first  # decided on the last poll's use (4 of 7): kept; now 4 of 10
    assert first.builder.series == (4, 10)
    fresh = poll(first, ["g", "h", "i"])
    assert fresh is not first  # 10 > 2 × 4: built afresh, remembering only what this poll used
    assert fresh.builder.series == (4, 4)


def test_a_tally_remembers_raw_values_at_most_twice_over_plus_slack() -> None:
    """Distinct raw spellings of one series (here the queue, padded with blanks) are remembered as well."""
    slack = exporter.counting.tally.SLACK
    tally = new_tally()
    rows = [row(i, queue="debug" + " " * i) for i in range(3 * slack)]  # 3,072 spellings of one queue
    take_rows(tally, rows, "1")
    tally.finish()
    assert tally.builder.series == (2, 2)  # one queue series, one user series: "debug" stripped
    assert not tally.worth_keeping()
    assert next_tally(tally, new_tally) is not tally


def test_what_a_tally_keeps_per_series_is_out_of_the_garbage_collectors_sight() -> None:
    """A full collection pauses scrapes too, for as long as it takes to walk every tracked object: the
    thousands of entries a tally keeps from poll to poll must not be among them."""
    tally = new_tally()
    take_rows(
        tally,
        [{**row(i, "statQ" if i % 2 else "statR", f"q{i % 7}", f"u{i}"), "reason": "Priority"} for i in range(500)],
        "1",
    )
    tally.finish()
    gc.collect()
    gc.collect()  # an entry's (queue, status) pair may be let go only after the entry was looked at
    entries = list(tally._entries.items())
    assert len(entries) == 500
    assert not [e for e in entries if gc.is_tracked(e[0]) or gc.is_tracked(e[1])]


def test_a_poll_hands_its_job_keys_over_and_keeps_none_of_them() -> None:
    tally = new_tally()
    take_rows(tally, [row(1, queue="debug"), row(2, "statQ", queue="gpu")], "1")
    tally.finish()
    # Keyed by the row's own jobmanagerId (SCHEDULER), not the scheduler id the page was asked for.
    assert tally.handover() == {f"{SCHEDULER}\x001": ("debug", "running"), f"{SCHEDULER}\x002": ("gpu", "queued")}
    assert tally.current == {}  # one entry per job: not held until the next poll


def test_a_row_whose_cpu_count_is_too_big_is_counted_with_no_cpus_and_reported_as_invalid() -> None:
    """One such row used to make /metrics fail for every cluster (a sum no float holds)."""
    tally = new_tally()
    rows = [row(1, cpus="9" * 400), row(2, cpus=1e308), row(3, cpus=10**400), row(4, cpus=8), row(5, cpus=10**7)]
    rows.append(row(4, cpus="9" * 400))  # a duplicate of job 4: skipped as such, not reported
    take_rows(tally, rows, "1")
    tally.finish()
    snap = tally.builder.build("c", 0.0, 1.0, 5)
    assert snap.by_queue[("debug", "running")] == (5, 8 + 10**7)  # every job counted; 0 CPUs for three of them
    assert snap.by_user[("debug", "test", "running")] == (5, 8 + 10**7)
    assert tally.invalid == 3
