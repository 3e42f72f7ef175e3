"""The poll's row loop kept from poll to poll: what it may remember, and for how long."""

from __future__ import annotations

import gc
from typing import Any

from exporter.counting.rows import RowParser
from exporter.counting.snapshot import SnapshotBuilder
from exporter.counting.tally import KEEP_FACTOR, SLACK, RowTally, next_tally

from tests.helpers import SCHEDULER, row, take_rows


def new_tally() -> RowTally:
    return RowTally(RowParser(), SnapshotBuilder(per_user=True), lambda _: False)


def poll(previous: RowTally | None, users: list[str]) -> RowTally:
    tally = next_tally(previous, new_tally)
    take_rows(tally, [row(i, user=u) for i, u in enumerate(users)], "1")
    tally.finish()
    return tally


def test_a_tally_is_kept_while_the_series_it_remembers_are_in_use_and_replaced_once_they_pile_up() -> None:
    assert KEEP_FACTOR == 2
    n = SLACK  # users a poll: n + 2 series in use (one queue, one application), so the limit is 2 × (n + 2) + n = 3n + 4

    def users(batch: int) -> list[str]:
        return [f"u{batch}-{i}" for i in range(n)]

    first = poll(None, users(0))
    assert poll(first, users(0)) is first  # the same series: n + 2 known
    assert first.builder.series_use() == (n + 2, n + 2)
    assert poll(first, users(1)) is first  # 2n + 2 known
    assert poll(first, users(2)) is first  # decided on 2n + 2 ≤ 3n + 4: kept; now 3n + 2
    assert poll(first, users(3)) is first  # 3n + 2 ≤ 3n + 4: kept; now 4n + 2
    assert first.builder.series_use() == (n + 2, 4 * n + 2)
    fresh = poll(first, users(4))
    assert fresh is not first  # 4n + 2 > 3n + 4: built afresh, remembering only what this poll used
    assert fresh.builder.series_use() == (n + 2, n + 2)


def test_a_tally_remembers_raw_values_at_most_twice_over_plus_slack() -> None:
    """Distinct raw spellings of one series (here the queue, padded with blanks) are remembered as well."""
    tally = new_tally()
    rows = [row(i, queue="debug" + " " * i) for i in range(3 * SLACK)]  # 3,072 spellings of one queue
    take_rows(tally, rows, "1")
    tally.finish()
    assert tally.builder.series_use() == (3, 3)  # one series by queue, by user, by application: "debug" stripped
    assert not tally.worth_keeping()
    assert next_tally(tally, new_tally) is not tally


def test_what_a_tally_keeps_per_series_adds_nothing_for_the_garbage_collector_to_walk() -> None:
    """A full collection pauses scrapes too, for as long as it takes to walk every tracked object: the
    thousands of series a tally keeps from poll to poll must not add to them."""
    rows = [{**row(i, "statQ" if i % 2 else "statR", f"q{i % 7}", f"u{i}"), "reason": "Priority"} for i in range(500)]
    gc.collect()
    before = len(gc.get_objects())
    tally = new_tally()
    take_rows(tally, rows, "1")
    tally.finish()
    tally.pop_counted()
    gc.collect()
    gc.collect()  # a target's (queue, status) may be let go only after the target was looked at
    # 7 queues × 2 statuses, 500 users, one application (BASE) × 2 statuses
    assert tally.builder.series_use() == (7 * 2 + 500 + 2, 7 * 2 + 500 + 2)
    assert len(gc.get_objects()) - before < 100


def test_a_poll_hands_its_job_keys_over_and_keeps_none_of_them() -> None:
    tally = new_tally()
    take_rows(tally, [row(1, queue="debug"), row(2, "statQ", queue="gpu")], "1")
    tally.finish()
    # Keyed by the row's own jobmanagerId (SCHEDULER), not the scheduler id the page was asked for.
    # (queue, status, user, CPUs, run seconds): the seed row's jobRunTime is 01:02:20, 3,740 s.
    assert tally.pop_counted() == {
        f"{SCHEDULER}\x001": ("debug", "running", "test", 1, 3740),
        f"{SCHEDULER}\x002": ("gpu", "queued", "test", 1, 3740),
    }
    assert tally.pop_counted() == {}  # one entry per job: not held until the next poll


def test_a_row_whose_cpu_count_is_too_big_is_counted_with_no_cpus_and_reported_as_invalid() -> None:
    """One such row used to make /metrics fail for every cluster (a sum no float holds)."""
    tally = new_tally()
    rows = [row(1, cpus="9" * 400), row(2, cpus=1e308), row(3, cpus=10**400), row(4, cpus=8), row(5, cpus=10**7)]
    rows.append(row(4, cpus="9" * 400))  # a duplicate of job 4: skipped as such, not reported
    take_rows(tally, rows, "1")
    tally.finish()
    snap = tally.builder.build("c", 0.0, 1.0, 5)
    assert snap.by_queue[("debug", "running")] == (5, 8 + 10**7)  # every job counted; 0 CPUs for three of them
    assert tally.invalid == 3
    assert snap.by_user[("debug", "test", "running")] == (5, 8 + 10**7)


def usage_row(job_id: int, status: str, queue: str, cpus: Any, run_time: Any, nodes: Any, app: Any) -> dict[str, Any]:
    return {**row(job_id, status, queue, "test", cpus), "jobRunTime": run_time, "nodeUsed": nodes, "appType": app}


def test_nodes_applications_and_the_longest_run_are_counted_and_unreadable_values_reported_by_field() -> None:
    tally = new_tally()
    rows = [
        usage_row(1, "statR", "debug", 4, "01:00:00", "n[01-04]", "fluent"),
        usage_row(2, "statR", "debug", 2, "2-00:00:58", "n[03-05]", "vasp"),  # n03 and n04 again
        usage_row(3, "statQ", "debug", 8, "", "", None),
        usage_row(4, "statC", "gpu", 1, "10:00", "g1,g2", "fluent"),  # not running: no nodes in use
        usage_row(5, "statR", "gpu", 16, "bogus", "g[1-", ""),  # run time and host list unreadable
        usage_row(6, "statR", "gpu", 10**8, "00:05:00", "g3", "fluent"),  # CPUs too many: 0
    ]
    take_rows(tally, rows, "1")
    tally.finish()
    snap = tally.builder.build("c", 0.0, 1.0, 6, zero_fill_queues=["debug", "gpu"])
    assert snap.nodes_by_queue[("debug", "running")] == 4 + 3
    assert snap.nodes_by_queue[("gpu", "running")] == 1  # job 5's host list counts no node
    assert snap.nodes_by_queue[("gpu", "completed")] == 2
    assert snap.nodes_by_queue[("debug", "queued")] == 0 and snap.nodes_by_queue[("gpu", "held")] == 0
    assert set(snap.nodes_by_queue) == set(snap.by_queue)  # zero-filled alike
    assert snap.nodes_in_use == 6  # n01-n05 and g3
    assert dict(snap.by_app) == {
        ("fluent", "running"): (2, 4),
        ("vasp", "running"): (1, 2),
        ("none", "queued"): (1, 8),
        ("fluent", "completed"): (1, 1),
        ("none", "running"): (1, 16),
    }
    assert dict(snap.running_max_seconds) == {"debug": 2 * 86400 + 58, "gpu": 300}
    assert tally.invalid_fields() == {"jobRunTime": 1, "nodeUsed": 1, "procNumUsed": 1}
    assert tally.invalid == 1  # the row with too many CPUs, as before
    counted = tally.pop_counted()
    assert counted[f"{SCHEDULER}\x005"] == ("gpu", "running", "test", 16, -1)  # unreadable: below 0
    assert counted[f"{SCHEDULER}\x003"] == ("debug", "queued", "test", 8, None)  # not started


def test_a_tally_kept_for_the_next_poll_counts_its_nodes_in_use_again() -> None:
    rows = [usage_row(i, "statR", "debug", 1, "00:01:00", f"n{i % 3}", "BASE") for i in range(10)]
    tally = poll_rows(None, rows)
    assert tally.builder.build("c", 0.0, 1.0, 10).nodes_in_use == 3
    again = poll_rows(tally, rows)
    assert again is tally
    snap = again.builder.build("c", 0.0, 1.0, 10)
    assert (snap.nodes_in_use, snap.nodes_by_queue[("debug", "running")]) == (3, 10)


def poll_rows(previous: RowTally | None, rows: list[dict[str, Any]]) -> RowTally:
    tally = next_tally(previous, new_tally)
    take_rows(tally, rows, "1")
    tally.finish()
    return tally


def test_a_running_job_whose_host_list_is_too_costly_to_list_still_counts_its_nodes() -> None:
    """The same 50,000 names over and over: node_names gives up on listing them, node_count still counts
    50,099 nodes, and the value is a host list, not an unreadable field."""
    repeated = ",".join(f"n[{i}-{i + 49_999}]" for i in range(1, 101))
    tally = poll_rows(None, [usage_row(1, "statR", "debug", 1, "00:01:00", repeated, "BASE")])
    snap = tally.builder.build("c", 0.0, 1.0, 1)
    assert snap.nodes_by_queue[("debug", "running")] == 50_099
    assert snap.nodes_in_use == 0  # none listed
    assert tally.invalid_fields().get("nodeUsed", 0) == 0
