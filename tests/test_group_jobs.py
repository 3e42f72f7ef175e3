"""The jobs group and the queue budget, as a table: jobs in, samples out (jobs, CPUs and nodes by queue and status,
queues folded). Every expected value is worked out by hand; a comment says how where it is not obvious."""

from __future__ import annotations

import re
from typing import Any

import httpx
import respx

from exporter.model import INVALID, Budget, Row
from exporter.rows import clean_label, job_key, label, read_job
from tests.helpers import envelope, row
from tests.polls import Polls, Samples, job
from tests.test_poller import JOBS, Rig

T = 1_700_000_000.0
EIGHT = ("running", "queued", "held", "suspended", "exiting", "completed", "waiting", "other")


def table(s: Samples, name: str) -> dict[tuple[str, str], float]:
    """Every sample of a (queue, status) family, zeros included."""
    return s.by(name, "queue", "status", nonzero=False)


def filled(queue: str, **values: int) -> dict[tuple[str, str], float]:
    """A queue's zero-filled series: the eight documented statuses (0 unless given), and any other status given."""
    return {(queue, status): values.get(status, 0) for status in (*EIGHT, *(s for s in values if s not in EIGHT))}


def folded(s: Samples) -> float:
    return s.by("sugon_queues_folded", nonzero=False)[()]


def test_jobs_and_cpus_by_queue_and_status_with_every_seen_queue_zero_filled() -> None:
    s = Polls().poll(
        [
            job("1", queue="debug", status="running", cpus=4),
            job("2", queue="debug", status="running", cpus=8),
            job("3", queue="debug", status="queued", cpus=16),
            job("4", queue="gpu", status="running", cpus=2),
            job("5", queue="gpu", status="cancelled", cpus=3),  # not documented: a series only when non-zero
            job("6", queue="gpu", status="unknown"),
        ],
        T,
    )
    assert table(s, "sugon_jobs") == {
        **filled("debug", running=2, queued=1),
        **filled("gpu", running=1, cancelled=1, unknown=1),
    }
    assert table(s, "sugon_job_cpus") == {
        **filled("debug", running=12, queued=16),
        **filled("gpu", running=2, cancelled=3, unknown=0),
    }
    assert table(s, "sugon_job_nodes") == {**filled("debug"), **filled("gpu", cancelled=0, unknown=0)}
    assert folded(s) == 0


def test_nodes_add_up_the_host_lists_of_each_queue_and_status() -> None:
    s = Polls().poll(
        [
            job("1", queue="debug", status="running", node_count=4),
            job("2", queue="debug", status="running", node_count=3),
            job("3", queue="debug", status="queued"),  # no host list: no node
            job("4", queue="gpu", status="completed", node_count=2),
            job("5", queue="gpu", status="running", node_count=INVALID),  # unreadable: no node
            job("6", queue="gpu", status="running", node_count=1),
            job("7", queue="gpu", status="running", node_count=0),
        ],
        T,
    )
    assert table(s, "sugon_job_nodes") == {**filled("debug", running=7), **filled("gpu", running=1, completed=2)}


def test_a_row_becomes_the_job_the_tables_count() -> None:
    """The jobs of these tables as rows read them (rows.read_job): a running job's host list, a queued job's
    reason, an unreadable value left out and named."""
    fields: dict[str, Any] = {"jobmanagerId": "1", "queue": " debug ", "user": "alice", "appType": "fluent"}
    running = Row(jobId="7", jobStatus="statR", procNumUsed="8", jobRunTime="1-00:00:05", nodeUsed="n[01-04]", **fields)
    job_, unread = read_job(running, "1\x007")
    assert job_ == job(
        "1\x007",
        queue="debug",
        user="alice",
        status="running",
        cpus=8,
        run=86_405,
        nodes="n[01-04]",
        node_count=4,
        app="fluent",
    )
    assert unread == ()
    queued = Row(jobId=8, jobStatus="statQ", procNumUsed=2, reason="Resources (n1)", nodeUsed="n[1-", jobRunTime=" ")
    job_, unread = read_job(queued, "1\x008")
    assert job_ == job("1\x008", queue="unknown", user="unknown", cpus=2, node_count=INVALID, reason="Resources")
    assert unread == ("nodeUsed",)
    for nodes in ("", None):  # no host list: no node, none listed
        bare = Row(jobId=10, jobStatus="statR", queue="q", user="u", jobRunTime="01:00", nodeUsed=nodes)
        assert read_job(bare, "1\x0010") == (job("1\x0010", status="running", run=60), ())
    odd = Row(jobId="9", jobStatus="statZZ", procNumUsed=10**8, jobRunTime="x", nodeUsed="n1", reason="Priority")
    job_, unread = read_job(odd, "1\x009")
    assert job_ == job("1\x009", queue="unknown", user="unknown", status="unknown", run=INVALID, node_count=1)
    assert unread == ("jobStatus", "procNumUsed", "jobRunTime")


def test_a_row_is_keyed_by_its_scheduler_and_job_id_and_a_row_without_a_job_id_has_no_key() -> None:
    assert job_key(Row(jobId=" 42 ", jobmanagerId=7), "1") == "7\x0042"
    assert job_key(Row(jobId=42, jobmanagerId=True), "1") == "1\x0042"  # not an id: the scheduler asked
    for no_id in (None, "", "  ", True, False, 4.0, ["1"]):
        assert job_key(Row(jobId=no_id), "1") is None, no_id


def test_labels_are_text_cut_and_encodable_and_unknown_when_there_is_none() -> None:
    assert [label(v) for v in (" debug ", 7, True, None, "", ["q"])] == [
        "debug",
        "7",
        "unknown",
        "unknown",
        "unknown",
        "unknown",
    ]
    assert clean_label("q\ud800x" + "u" * 300) == "q?x" + "u" * 253
    assert clean_label("abcdef", limit=3) == "abc"


def test_queues_beyond_max_queues_fold_into_other_ranked_by_jobs_with_ties_by_name() -> None:
    jobs = [job(f"a{i}", queue="a", status="running", cpus=1) for i in range(3)]
    jobs += [job(f"c{i}", queue="c", cpus=2) for i in range(2)] + [job(f"b{i}", queue="b", cpus=4) for i in range(2)]
    jobs += [job("d", queue="d", status="held", cpus=8), job("o", queue="other", status="held", cpus=16)]
    s = Polls(budget=Budget(max_queues=2)).poll(jobs, T)
    # a (3 jobs) and b (2, before c by name) keep their names; c and d fold, and add up with a queue really
    # called other (never a candidate for a name, nor counted as folded).
    assert table(s, "sugon_jobs") == {
        **filled("a", running=3),
        **filled("b", queued=2),
        **filled("other", queued=2, held=2),
    }
    assert table(s, "sugon_job_cpus") == {
        **filled("a", running=3),
        **filled("b", queued=8),
        **filled("other", queued=4, held=8 + 16),
    }
    assert folded(s) == 2


def test_when_every_queue_fits_nothing_folds_not_even_beside_a_queue_called_other() -> None:
    s = Polls(budget=Budget(max_queues=1)).poll([job("1", queue="a"), job("2", queue="other")], T)
    assert table(s, "sugon_jobs") == {**filled("a", queued=1), **filled("other", queued=1)} and folded(s) == 0


def test_queues_known_without_jobs_compete_for_a_name_with_zero_jobs_ties_by_name() -> None:
    seen = {"zzz": T - 60, "mmm": T - 60, "aaa": T - 86_401}  # aaa was last seen more than a day ago
    p = Polls(budget=Budget(max_queues=2), queues_seen=seen)
    s = p.poll([job(str(i), queue="busy") for i in range(5)], T)
    # busy (5 jobs), then mmm and zzz with 0: mmm by name. zzz folds (its series go: it has no job to show
    # under other); aaa is forgotten.
    assert table(s, "sugon_jobs") == {**filled("busy", queued=5), **filled("mmm")}
    assert folded(s) == 1
    assert p.queues.seen == {"busy": T, "mmm": T - 60}


def test_a_queue_known_without_jobs_ranks_below_one_with_a_job_whatever_their_names() -> None:
    p = Polls(budget=Budget(max_queues=1), queues_seen={"a": T - 60})
    s = p.poll([job("1", queue="b")], T)
    assert table(s, "sugon_jobs") == filled("b", queued=1) and folded(s) == 1


def test_a_queue_stays_zero_filled_for_a_day_after_it_was_last_seen() -> None:
    p = Polls()
    p.poll([job("1", queue="short", status="running", cpus=2)], T)
    s = p.poll([job("2", queue="long")], T + 86_400)
    assert table(s, "sugon_jobs") == {**filled("short"), **filled("long", queued=1)}
    assert table(s, "sugon_job_cpus") == {**filled("short"), **filled("long")}
    s = p.poll([job("2", queue="long")], T + 86_401)
    assert table(s, "sugon_jobs") == filled("long", queued=1)


def test_a_named_queue_that_folds_loses_its_zero_filled_series_and_other_keeps_its_own() -> None:
    p = Polls(budget=Budget(max_queues=1))
    p.poll([job("1", queue="a")], T)
    s = p.poll([job("1", queue="a"), *(job(f"b{i}", queue="b") for i in range(2))], T + 60)
    assert table(s, "sugon_jobs") == {**filled("b", queued=2), **filled("other", queued=1)}
    s = p.poll([job(f"b{i}", queue="b") for i in range(2)], T + 120)  # a has no job: it is forgotten
    assert table(s, "sugon_jobs") == {**filled("b", queued=2), **filled("other")}
    assert folded(s) == 0


def test_excluded_queues_count_nowhere_and_are_not_remembered() -> None:
    budget = Budget(queues_exclude=(re.compile("test-.*"),), max_queues=1)
    p = Polls(budget=budget, queues_seen={"test-old": T - 60, "debug": T - 60})
    jobs = [job("1", queue="test-a", status="running", cpus=4), job("2", queue="debug", cpus=1)]
    s = p.poll([*jobs, job("3", queue="test-b"), job("4", queue="debug")], T)
    assert table(s, "sugon_jobs") == filled("debug", queued=2) and folded(s) == 0  # test-* take no name either
    assert table(s, "sugon_job_cpus") == filled("debug", queued=1)
    assert p.queues.seen == {"debug": T}


def test_a_failed_poll_counts_nothing_and_the_next_counts_only_its_own_jobs() -> None:
    p = Polls()
    p.poll([job("1", queue="a", status="running", cpus=2)], T)
    p.failed([job(str(i), queue="b", status="running", cpus=2) for i in range(5)], T + 60)
    s = p.poll([job("1", queue="a", status="running", cpus=2)], T + 120)
    assert table(s, "sugon_jobs") == filled("a", running=1)
    assert table(s, "sugon_job_cpus") == filled("a", running=2)


@respx.mock
def test_rows_of_an_excluded_queue_are_skipped_and_every_row_after_them_still_counts() -> None:
    """Through the poller (exporter.poller): one page, excluded rows first, between and last."""
    rows = [
        row(1, "statQ", "test-a"),
        row(2, "statR", "debug", cpus=2),
        row(3, "statQ", "test-b"),
        row(4, "statR", "debug", cpus=3),
        row(2, "statR", "debug", cpus=2),  # job 2 again (the list moved): counted once
        row(5, "statQ", "gpu", cpus=4),
        row(6, "statQ", "test-c"),
    ]
    respx.get(JOBS).mock(return_value=httpx.Response(200, json=envelope({"total": 7, "list": rows})))
    rig = Rig(budget=Budget(queues_exclude=(re.compile("test-.*"),)))
    assert rig.poll()
    assert rig.value("sugon_jobs", queue="debug", status="running") == 2
    assert rig.value("sugon_job_cpus", queue="debug", status="running") == 5
    assert rig.value("sugon_jobs", queue="gpu", status="queued") == 1
    assert sum(rig.values("sugon_jobs").values()) == 3
    assert rig.value("sugon_api_reported_jobs") == 7  # the API's own figure is not filtered
