"""The per-job group, as a table: jobs in, samples out (one series set per job within max_job_series, the
budget's choice and its stability, the user filter, odd values, hostile names). Every expected value is worked
out by hand."""

from __future__ import annotations

import random
import re
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import Metric
from prometheus_client.parser import text_string_to_metric_families

from exporter.groups.perjob import PerJob
from exporter.model import Budget, Job, Row
from exporter.rows import job_key, read_job
from tests.helpers import promtool_check_metrics
from tests.polls import Polls, Samples

T = 1_700_000_000.0
Table = dict[tuple[str, str], tuple[Any, ...]]


def read(job_id: Any, status: str = "statQ", *, scheduler: str = "1", user: str = "u", **fields: Any) -> Job:
    """The Job of a row as the API would list it (queue "q" unless given)."""
    row = Row(jobId=job_id, jobmanagerId=scheduler, jobStatus=status, user=user, **{"queue": "q", **fields})
    key = job_key(row, scheduler)
    assert key is not None
    return read_job(row, key)[0]


def table(s: Samples) -> Table:
    """Each job with series: (scheduler, job_id) → (job_name, user, queue, app, status, CPUs, nodes, run seconds)."""
    info = {(d["scheduler"], d["job_id"]): d for d in map(dict, s.of("sugon_per_job_info"))}
    status = {(d["scheduler"], d["job_id"]): d["status"] for d in map(dict, s.of("sugon_per_job_status"))}
    assert set(s.of("sugon_per_job_info").values()) <= {1.0} and set(s.of("sugon_per_job_status").values()) <= {1.0}
    assert len(status) == len(s.of("sugon_per_job_status")), "a job with two statuses"
    numbers = {
        name: {(d["scheduler"], d["job_id"]): v for k, v in s.of(f"sugon_per_job_{name}").items() for d in [dict(k)]}
        for name in ("cpus", "nodes", "run_seconds")
    }
    assert set(info) == set(status) == set(numbers["cpus"]) == set(numbers["nodes"]) == set(numbers["run_seconds"])
    return {
        ids: (
            d["job_name"],
            d["user"],
            d["queue"],
            d["app"],
            status[ids],
            numbers["cpus"][ids],
            numbers["nodes"][ids],
            numbers["run_seconds"][ids],
        )
        for ids, d in info.items()
    }


def ids(s: Samples) -> set[str]:
    """The job ids with series."""
    return {job_id for _, job_id in table(s)}


def folded(s: Samples) -> float:
    (value,) = s.of("sugon_per_job_folded").values()
    return value


def per_job(max_job_series: int = 500, **kwargs: Any) -> Polls:
    return Polls(groups=[PerJob], per_job=True, max_job_series=max_job_series, **kwargs)


def test_without_per_job_the_group_gives_no_family_at_all() -> None:
    s = Polls(groups=[PerJob]).poll([read(1, "statR", procNumUsed=4), read(2)], T)
    assert s.names() == []


def test_each_job_has_its_name_user_queue_app_status_cpus_nodes_and_run_time() -> None:
    s = per_job().poll(
        [
            read(
                4242,
                "statR",
                user="alice",
                queue="debug",
                appType="vasp",
                jobName="relax",
                procNumUsed=64,
                nodeUsed="h04r3n[01-04]",
                jobRunTime="1-02:03:04",
            ),
            read("4243", jobName=None, appType=None, procNumUsed=8, nodeUsed="", jobRunTime=""),
            read(
                "4244",
                "statC",
                user="bob",
                appType="",
                jobName="post",
                procNumUsed=2,
                nodeUsed="h01r1n01,h01r1n02",
                jobRunTime="00:10:00",
            ),
        ],
        T,
    )
    assert table(s) == {
        ("1", "4242"): ("relax", "alice", "debug", "vasp", "running", 64, 4, 86_400 + 2 * 3600 + 3 * 60 + 4),
        ("1", "4243"): ("", "u", "q", "none", "queued", 8, 0, 0),
        ("1", "4244"): ("post", "bob", "q", "none", "completed", 2, 2, 600),
    }
    assert folded(s) == 0
    assert s.names() == [
        "sugon_per_job_info",
        "sugon_per_job_status",
        "sugon_per_job_cpus",
        "sugon_per_job_nodes",
        "sugon_per_job_run_seconds",
        "sugon_per_job_folded",
    ]


# Ten jobs, by id: running 5; ending (terminal or exiting) 2, 3, 4; the rest 10, 11, 12 (queued), 20 (held),
# 21 (suspended), 22 (waiting).
TEN = [
    read(10),
    read(11),
    read(12),
    read(20, "statH"),
    read(21, "statS"),
    read(22, "statW"),
    read(5, "statR"),
    read(3, "statC"),
    read(4, "statE"),
    read(2, "statD"),
]


def test_the_budget_prefers_running_then_ending_jobs_then_the_newest_others() -> None:
    for budget, kept in (
        (1, {"5"}),
        (3, {"5", "4", "3"}),  # the ending ones newest first: 4, 3, 2
        (4, {"5", "4", "3", "2"}),
        (6, {"5", "4", "3", "2", "22", "21"}),  # the others newest first: 22, 21, 20, 12, 11, 10
        (10, {"5", "4", "3", "2", "22", "21", "20", "12", "11", "10"}),
        (11, {"5", "4", "3", "2", "22", "21", "20", "12", "11", "10"}),
    ):
        for order in (TEN, TEN[::-1]):
            s = per_job(budget).poll(order, T)
            assert ids(s) == kept, budget
            assert folded(s) == 10 - len(kept), budget


def test_a_budget_of_zero_gives_every_job_to_the_folded_count() -> None:
    s = per_job(0).poll(TEN, T)
    assert table(s) == {} and folded(s) == 10


def test_a_job_with_series_keeps_them_while_listed_and_freed_room_goes_by_preference() -> None:
    p = per_job(2)
    s = p.poll([read(10), read(11)], T)
    assert ids(s) == {"10", "11"} and folded(s) == 0
    s = p.poll([read(10), read(11), read(30, "statR"), read(31, "statR")], T + 60)  # better jobs, no room
    assert ids(s) == {"10", "11"} and folded(s) == 2
    s = p.poll([read(11), read(30, "statR"), read(31, "statR"), read(40)], T + 120)  # 10 left: room for one
    assert ids(s) == {"11", "31"} and folded(s) == 2
    s = p.poll([read(11, "statR"), read(31, "statC"), read(30, "statR"), read(40)], T + 180)  # status changes
    assert table(s) == {
        ("1", "11"): ("", "u", "q", "none", "running", 0, 0, 0),
        ("1", "31"): ("", "u", "q", "none", "completed", 0, 0, 0),
    }
    s = p.poll([read(30, "statR"), read(40)], T + 240)  # both left
    assert ids(s) == {"30", "40"} and folded(s) == 0


def test_a_failed_poll_changes_neither_the_jobs_with_series_nor_their_values() -> None:
    p = per_job(2)
    assert ids(p.poll([read(10, procNumUsed=2)], T)) == {"10"}
    p.failed([read(20, "statR"), read(21, "statR")], T + 60)  # 10 not read: it would have left
    s = p.poll([read(10, procNumUsed=2), read(30)], T + 120)
    assert table(s) == {
        ("1", "10"): ("", "u", "q", "none", "queued", 2, 0, 0),
        ("1", "30"): ("", "u", "q", "none", "queued", 0, 0, 0),
    }
    assert folded(s) == 0


def test_the_choice_among_thousands_of_jobs_is_the_same_in_any_order() -> None:
    jobs = [read(n) for n in range(1, 3001)] + [read(9000, "statQ"), read(8000, "statR"), read(7000, "statC")]
    expected = {"8000", "7000", "9000", "3000", "2999"}
    for seed in (1, 2):
        shuffled = list(jobs)
        random.Random(seed).shuffle(shuffled)
        s = per_job(5).poll(shuffled, T)
        assert ids(s) == expected and folded(s) == 3003 - 5


def test_only_the_users_job_series_users_names_and_never_an_excluded_one() -> None:
    jobs = [
        read(1, user="alice"),
        read(2, user="bob"),
        read(3, "statR", user="chen"),
        read(4, "statR", user="bob"),
        read(5, user="svc-backup"),
    ]
    p = per_job(job_series_users=("alice", "chen", "svc-backup"), budget=Budget(users_exclude=(re.compile("svc-.*"),)))
    result = p.poll(jobs, T)
    assert {(job_id, row[1]) for (_, job_id), row in table(result).items()} == {("1", "alice"), ("3", "chen")}
    assert folded(result) == 3
    everyone = per_job(2).poll(jobs, T)  # no filter: the budget alone, running jobs first
    assert ids(everyone) == {"3", "4"} and folded(everyone) == 3
    # the budget counts only the jobs the filter lets through: alice's one job fits in a budget of one
    assert ids(per_job(1, job_series_users=("alice",)).poll(jobs, T)) == {"1"}


def test_odd_and_huge_values_are_read_as_in_the_aggregate_families() -> None:
    jobs = [
        read(1, "statR", procNumUsed=10**8, jobRunTime="25:00:00", nodeUsed="h[01-"),  # too many CPUs: 0
        read(2, "statR", procNumUsed="16", jobRunTime="1-25:00:00", nodeUsed=12),  # hours past 23 after a day
        read(3, "statR", procNumUsed=-4, jobRunTime=3600, nodeUsed=None),
        read(4, "statZZ", procNumUsed=1.5, jobRunTime="00:00:07", nodeUsed="n1,n1,n2"),
        read(2**70, "statR", procNumUsed=2.0, jobRunTime=" 05:30 ", nodeUsed="n[1-3],n5"),
        read(" 6 ", "statR", procNumUsed=True, jobRunTime="100000-00:00:00"),
    ]
    s = Polls(per_job=True).poll(jobs, T)
    assert table(s) == {
        ("1", "1"): ("", "u", "q", "none", "running", 0, 0, 25 * 3600),  # PBS writes hours past 24
        ("1", "2"): ("", "u", "q", "none", "running", 16, 0, 0),
        ("1", "3"): ("", "u", "q", "none", "running", 0, 0, 0),
        ("1", "4"): ("", "u", "q", "none", "unknown", 0, 2, 7),
        ("1", str(2**70)): ("", "u", "q", "none", "running", 2, 4, 330),
        ("1", "6"): ("", "u", "q", "none", "running", 0, 0, 0),
    }
    # the same CPUs and nodes as the aggregate families count, status by status
    cpus: dict[str, float] = {}
    nodes: dict[str, float] = {}
    for row in table(s).values():
        cpus[row[4]] = cpus.get(row[4], 0) + row[5]
        nodes[row[4]] = nodes.get(row[4], 0) + row[6]
    assert {st: n for st, n in cpus.items() if n} == s.by("sugon_job_cpus", "status") == {"running": 18}
    assert {st: n for st, n in nodes.items() if n} == s.by("sugon_job_nodes", "status") == {"running": 4, "unknown": 2}


def collect(families: list[Metric]) -> str:
    """The families as /metrics text, rendered by prometheus_client."""

    class Families:
        def collect(self) -> list[Metric]:
            return families

    registry = CollectorRegistry(auto_describe=False)
    registry.register(Families())
    return generate_latest(registry).decode()


def test_job_names_with_quotes_newlines_and_any_text_are_cut_and_come_through_the_exposition_intact() -> None:
    hostile = ' a "b" \\ c\nd 作业 🚀 \ud800 ' + "x" * 300
    names = {
        "1": ("relax", "relax"),
        "2": (hostile, 'a "b" \\ c\nd 作业 🚀 ? ' + "x" * (256 - len('a "b" \\ c\nd 作业 🚀 ? '))),
        "3": ("  ", ""),
        "4": (42, "42"),
        "5": (["a"], ""),
        "6": ("ëé\u202e", "ëé\u202e"),
    }
    s = per_job().poll([read(job_id, jobName=raw) for job_id, (raw, _) in names.items()], T)
    expected = {("1", job_id): name for job_id, (_, name) in names.items()}
    assert {ids: row[0] for ids, row in table(s).items()} == expected
    assert len(expected[("1", "2")]) == 256
    text = collect(s.families)
    result = promtool_check_metrics(text)
    assert result.returncode == 0, result.stdout + result.stderr
    parsed = {
        (sample.labels["scheduler"], sample.labels["job_id"]): sample.labels["job_name"]
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "sugon_per_job_info"
    }
    assert parsed == expected


def test_two_schedulers_jobs_of_one_id_have_a_series_each_and_ids_the_same_once_cut_have_one() -> None:
    long = "7" * 300
    s = per_job().poll(
        [
            read(7, "statR", scheduler="11", procNumUsed=1),
            read(7, "statR", scheduler="12", procNumUsed=2),
            read(long + "a", scheduler="11"),
            read(long + "b", scheduler="11"),  # the same label as the one before, once cut to 256 characters
        ],
        T,
    )
    assert {ids: row[5] for ids, row in table(s).items()} == {("11", "7"): 1, ("12", "7"): 2, ("11", "7" * 256): 0}
    assert folded(s) == 1
