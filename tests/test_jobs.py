"""Parsing one row: the status map, defaults for missing fields, and what makes a row unusable."""

from __future__ import annotations

import tracemalloc
from typing import Any

import pytest

from exporter.model import Job
from exporter.rows import MAX_CPUS, cpu_count, job_key, label, raw_status, read_job
from tests.helpers import SCHEDULER, decoded, fixture, row


def parse_job(raw: Any, scheduler_id: str) -> Job | None:
    """The Job of one raw row as a poll reads it, or None when the row is unusable (not an object, no jobId)."""
    decoded_row = decoded(raw)
    key = job_key(decoded_row, scheduler_id) if decoded_row is not None else None
    return None if decoded_row is None or key is None else read_job(decoded_row, key)[0]


def cpus(value: Any) -> int:
    """A job's CPUs: procNumUsed as a count, and 0 when missing, malformed or too big."""
    return cpu_count(value) or 0


# The mapping as written in the issue and sugon-api.md, typed out by hand.
DOCUMENTED = [
    ("statR", "running"),
    ("statQ", "queued"),
    ("statH", "held"),
    ("statS", "suspended"),
    ("statE", "exiting"),
    ("statC", "completed"),
    ("statW", "waiting"),
    ("statX", "other"),
    ("statDE", "cancelled"),
    ("statD", "failed"),
    ("statT", "timeout"),
    ("statN", "node_fail"),
    ("statRQ", "requeued"),
]


@pytest.mark.parametrize(("raw", "label"), DOCUMENTED)
def test_every_known_status_code_maps_to_its_label(raw: str, label: str) -> None:
    job = parse_job(row(1, status=raw), SCHEDULER)
    assert job is not None and job.status == label


@pytest.mark.parametrize("raw", ["statZZ", "", "STATR", "running"])
def test_any_other_status_is_unknown(raw: str) -> None:
    job = parse_job(row(1, status=raw), SCHEDULER)
    assert job is not None and job.status == "unknown" and raw_status(decoded(row(1, status=raw))) == raw


def test_the_seed_example_parses_into_one_completed_and_one_running_job() -> None:
    rows = fixture("seed_jobs.json")["data"]["list"]
    jobs = [parse_job(r, SCHEDULER) for r in rows]
    assert [(j.key, j.queue, j.user, j.status, j.cpus) for j in jobs if j] == [
        ("1638523853\x0027", "debug", "test", "completed", 1),
        ("1638523853\x0023", "debug", "test", "running", 1),
    ]


def test_odd_rows_are_unusable_or_get_safe_defaults() -> None:
    rows = fixture("odd_rows.json")["data"]["list"]
    jobs = [parse_job(r, "999") for r in rows]
    assert jobs[:4] == [None, None, None, None]  # not an object, null, no jobId, empty jobId
    got = [(j.key, j.queue, j.user, j.status, j.cpus) for j in jobs[4:] if j]
    assert got == [
        ("1638523853\x00101", "debug", "test", "running", 8),  # int id, CPUs as a digit string
        ("1638523853\x00102", "unknown", "unknown", "queued", 0),  # null queue, empty user, null CPUs
        ("1638523853\x00103", "debug", "test", "unknown", 0),  # unknown status, negative CPUs
        ("1638523853\x00104", "debug", "test", "running", 0),  # CPUs not a number
        ("999\x00105", "7", "unknown", "unknown", 0),  # no jobmanagerId: the scheduler asked
    ]


def test_the_same_job_id_under_two_schedulers_gives_two_keys() -> None:
    a = parse_job(row(5, scheduler="1"), "1")
    b = parse_job(row(5, scheduler="2"), "2")
    assert a is not None and b is not None and a.key != b.key


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("ReqNodeNotAvail, UnavailableNodes:n[1-3]", "ReqNodeNotAvail"),
        ("Resources", "Resources"),
        ("Priority", "Priority"),
        ("Dependency (job 12 not finished)", "Dependency"),
        ("AssocGrpCpuLimit:cpu=256", "AssocGrpCpuLimit"),
        ("  QOSMaxJobsPerUserLimit  ", "QOSMaxJobsPerUserLimit"),
        ("(null)", "none"),
        ("", "none"),
        (None, "none"),
        (42, "none"),
        ("x" * 100, "x" * 64),
    ],
)
def test_reasons_are_reduced_to_their_kind(raw: object, reason: str) -> None:
    r = row(1, status="statQ")
    r["reason"] = raw
    job = parse_job(r, SCHEDULER)
    assert job is not None and job.reason == reason


def test_hostile_label_values_are_kept_encodable_and_bounded() -> None:
    r = row(1, "statQ", queue="q\ud800x", user="u" * 1000)
    r["reason"] = "Bad\udfffReason"
    job = parse_job(r, SCHEDULER)
    assert job is not None
    assert job.queue == "q?x" and job.user == "u" * 256 and job.reason == "Bad?Reason"
    job.queue.encode("utf-8")  # would raise for a lone surrogate


def test_quotes_backslashes_newlines_and_unicode_pass_through_unchanged() -> None:
    nasty = 'a"b\\c\nd 队列 🚀 \u202e'
    job = parse_job(row(1, queue=nasty, user=nasty), SCHEDULER)
    assert job is not None and job.queue == nasty.strip() and job.user == nasty.strip()


def test_the_labels_remembered_are_bounded() -> None:
    """Endless distinct queue names (hostile input) must not grow the memory without end."""
    assert label(["not", "hashable"]) == "unknown"
    names = 100_000
    tracemalloc.start()
    try:
        for i in range(names):
            name = f"{i:0200d}"  # about 250 bytes, and as much again for its label: 50 MB were all kept
            assert label(name) == name
        held, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert held < 20_000_000  # 20,000 of them at the most: about 10 MB


@pytest.mark.parametrize(
    ("raw", "expected"),
    [(8, 8), ("16", 16), (" 4 ", 4), (2.0, 2), (-3, 0), (True, 0), (None, 0), ("x", 0), (2.5, 0)]
    # Strings str.isdigit() calls digits but int() refuses, and more digits than int() takes: 0, not a crash.
    + [("²", 0), ("①", 0), pytest.param("9" * 5000, 0, id="5000 digits")],
)
def test_procnumused_is_a_non_negative_int_and_anything_else_counts_as_zero(raw: object, expected: int) -> None:
    assert cpus(raw) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [(10**7, 10**7), ("10000000", 10**7), (" 0010000000 ", 10**7), ("0" * 5000, 0), (1e7, 10**7)]
    # Present but too big to be one job's CPUs: told apart from a missing or malformed count (0).
    + [(10**7 + 1, None), ("10000001", None), (10**400, None), (1e308, None), (float("inf"), None)]
    + [pytest.param("9" * 400, None, id="400 digits"), pytest.param("9" * 5000, None, id="5000 digits")]
    + [(-1, 0), (-1e308, 0), (float("nan"), 0), ("1e308", 0), (None, 0), (True, 0)],
)
def test_a_cpu_count_above_ten_million_is_not_a_count_and_is_told_apart_from_a_missing_one(
    raw: object, expected: int | None
) -> None:
    assert MAX_CPUS == 10_000_000
    assert cpu_count(raw) == expected
    assert cpus(raw) == (expected or 0)
