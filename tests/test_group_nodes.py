"""The nodes group, as a table: jobs in, samples out (the distinct nodes of running jobs' host lists). Jobs are
made from rows as a poll reads them (rows.read_job), so that only a running job names its nodes. Every expected
value is worked out by hand."""

from __future__ import annotations

from typing import Any

from exporter.model import Job, Row
from exporter.rows import MAX_NODES, read_job
from tests.polls import Polls, Samples

T = 1_700_000_000.0


def read(job_id: int, status: str, nodes: Any, queue: str = "debug") -> Job:
    """The Job of a row with this status and nodeUsed."""
    return read_job(Row(jobId=job_id, jobStatus=status, queue=queue, procNumUsed=1, nodeUsed=nodes), f"1\x00{job_id}")[
        0
    ]


def in_use(s: Samples) -> float:
    return s.by("sugon_nodes_in_use", nonzero=False)[()]


def test_nodes_in_use_are_the_distinct_nodes_of_running_jobs() -> None:
    s = Polls().poll(
        [
            read(1, "statR", "n[01-04]"),
            read(2, "statR", "n[03-05]", queue="gpu"),  # n03 and n04 again: counted once, whatever the queue
            read(3, "statQ", ""),
            read(4, "statC", "g1,g2"),  # not running: not in use
            read(5, "statS", "g3"),  # suspended: not running either
            read(6, "statR", "g[1-"),  # not a host list: no node
            read(7, "statR", "g4"),
        ],
        T,
    )
    assert in_use(s) == 6  # n01-n05 and g4
    # sugon_job_nodes counts every job's host list by queue and status, shared nodes as often as named.
    nodes = s.by("sugon_job_nodes", "queue", "status")
    assert nodes == {
        ("debug", "running"): 4 + 1,
        ("gpu", "running"): 3,
        ("debug", "completed"): 2,
        ("debug", "suspended"): 1,
    }


def test_each_poll_counts_the_nodes_in_use_afresh() -> None:
    p = Polls()
    p.poll([read(1, "statR", "n[1-8]")], T)
    s = p.poll([read(1, "statC", "n[1-8]"), read(2, "statR", "n[7-9]")], T + 60)
    assert in_use(s) == 3
    s = p.poll([], T + 120)
    assert in_use(s) == 0


def test_a_failed_poll_leaves_no_node_behind() -> None:
    p = Polls()
    p.poll([read(1, "statR", "n1")], T)
    p.failed([read(2, "statR", "m[1-50]")], T + 60)
    assert in_use(p.poll([read(1, "statR", "n1")], T + 120)) == 1


def test_a_running_job_whose_host_list_writes_more_than_max_listed_names_counts_no_node() -> None:
    """The same 50,000 names over and over, 5,000,000 written: not a host list (sugon_invalid_fields_total
    counts it), so its job names and counts no node."""
    repeated = ",".join(f"n[{i}-{i + 49_999}]" for i in range(1, 101))
    s = Polls().poll([read(1, "statR", repeated), read(2, "statR", "m1")], T)
    assert in_use(s) == 1  # m1; none of the repeated list
    assert s.by("sugon_job_nodes", "queue", "status") == {("debug", "running"): 1}


def test_at_most_max_nodes_are_tracked_the_last_job_filling_what_room_is_left() -> None:
    assert MAX_NODES == 100_000
    jobs = [read(1, "statR", "n[1-99998]"), read(2, "statR", "m[1-5]"), read(3, "statR", "x[1-5]")]
    assert in_use(Polls().poll(jobs, T)) == 100_000  # 99,998, then m1 and m2; m3-m5 and x1-x5 find no room
    jobs = [read(1, "statR", "n[1-99995]"), read(2, "statR", "m[1-5]"), read(3, "statR", "n1")]
    assert in_use(Polls().poll(jobs, T)) == 100_000  # exactly full, then a node already counted
