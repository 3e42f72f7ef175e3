"""Hostile input, generated: whatever the API or the config file says, the answer is a typed error or a
correct count, never another exception."""

from __future__ import annotations

import asyncio
import json
import os
import re
import string
import tempfile
from typing import Any

import httpx
import pytest
import respx
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exporter.config import Config, ConfigError, build_config, load_config
from exporter.model import INVALID, ZERO_FILL_STATUSES, Budget, Job
from exporter.rows import cpu_count, job_key, read_job
from exporter.sugon.conversation import ApiError, decode_job_page, parse_envelope
from exporter.sugon.joblist import parse_capacity, parse_schedulers
from tests.helpers import decoded, promtool_check_metrics
from tests.helpers import row as seed_shaped_row
from tests.polls import Polls, Samples
from tests.polls import job as make_job
from tests.test_poller import CAPACITY, JOBS, Rig

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5),
    max_leaves=30,
)
# Numbers no job has, and that no float holds once summed: they must be bounded where they are read.
HUGE = st.sampled_from(["9" * 400, 10**400, 1e308, float("inf"), -1e308, 10**7 + 1, "10000001", 10**7]) | st.integers(
    10**6, 10**40
)
FIELD = (
    st.none()
    | st.booleans()
    | st.integers(-5, 10**6)
    | st.floats()
    | st.text(max_size=12)
    | st.lists(st.integers(), max_size=2)
    | HUGE
)
ROW = (
    st.fixed_dictionaries(
        {},
        optional={
            "jobId": FIELD,
            "jobStatus": st.sampled_from(["statR", "statQ", "statC", "statDE", "x", ""]) | FIELD,
            "queue": FIELD,
            "user": FIELD,
            "procNumUsed": FIELD,
            "jobmanagerId": FIELD,
            "reason": FIELD,
        },
    )
    | JSON
)
SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(body=JSON)
def test_any_json_body_is_data_or_a_typed_api_error(body: Any) -> None:
    response = httpx.Response(200, content=json.dumps(body).encode())
    try:
        decode_job_page(response)
    except ApiError:
        pass
    for parse in (parse_schedulers, parse_capacity):
        try:
            parse(parse_envelope(response))
        except ApiError:
            pass


@SETTINGS
@given(raw=st.binary(max_size=200), status=st.sampled_from([200, 201, 204, 302, 400, 401, 403, 404, 429, 500, 502]))
def test_any_bytes_and_status_are_data_or_a_typed_api_error(raw: bytes, status: int) -> None:
    try:
        parse_envelope(httpx.Response(status, content=raw))
    except ApiError:
        pass


def read_rows(rows: list[Any], exclude: set[str]) -> tuple[list[Job], int]:
    """The jobs a poll counts of raw rows, as the poller reads them (exporter.poller): rows without a jobId
    skipped, the first row of each key kept, excluded queues left out; and how many rows were skipped."""
    jobs: dict[str, Job] = {}
    skipped = 0
    for raw in rows:
        decoded_row = decoded(raw)
        key = job_key(decoded_row, "7") if decoded_row is not None else None
        if decoded_row is None or key is None:
            skipped += 1
            continue
        job, _ = read_job(decoded_row, key)
        if key not in jobs and job.queue not in exclude:
            jobs[key] = job
    return list(jobs.values()), skipped


def total(s: Samples, name: str, by: str | None = None) -> dict[str, float]:
    """The sum of a family's samples, per value of the label ``by`` (or all of them under "")."""
    out: dict[str, float] = {}
    for labels, value in s.of(name).items():
        key = dict(labels)[by] if by else ""
        out[key] = out.get(key, 0) + value
    return out


def nonzero(values: dict[str, float]) -> dict[str, float]:
    return {k: v for k, v in values.items() if v}


@SETTINGS
@given(rows=st.lists(ROW, max_size=40))
def test_any_rows_aggregate_into_consistent_counts(rows: list[Any]) -> None:
    """Whatever the rows, every family adds up to the jobs read: by queue, by user, by application."""
    budget = Budget(max_users=3, max_queues=3, max_apps=2, queues_exclude=(re.compile("q"),))
    jobs, skipped = read_rows(rows, {"q"})
    assert skipped == sum(
        not isinstance(r, dict)
        or not isinstance(r.get("jobId"), (str, int))
        or isinstance(r.get("jobId"), bool)
        or (isinstance(r["jobId"], str) and not r["jobId"].strip())
        for r in rows
    )
    assert all(j.cpus >= 0 and j.queue and j.user and j.status for j in jobs)
    s = Polls(budget=budget).poll(jobs, 0.0)
    cpus = sum(j.cpus for j in jobs)
    assert total(s, "sugon_jobs").get("", 0) == len(jobs)
    assert total(s, "sugon_job_cpus").get("", 0) == cpus
    for per_queue, per_user in (("sugon_jobs", "sugon_user_jobs"), ("sugon_job_cpus", "sugon_user_job_cpus")):
        assert nonzero(total(s, per_queue, "queue")) == nonzero(total(s, per_user, "queue"))
    assert total(s, "sugon_app_jobs").get("", 0) == len(jobs) and total(s, "sugon_app_job_cpus").get("", 0) == cpus
    assert total(s, "sugon_queued_jobs_by_reason").get("", 0) == sum(j.status == "queued" for j in jobs)
    assert len(set(total(s, "sugon_user_jobs", "user")) - {"other"}) <= 3
    assert len(set(total(s, "sugon_app_jobs", "app")) - {"other"}) <= 2
    queues = set(total(s, "sugon_jobs", "queue"))
    assert len(queues - {"other"}) <= 3 and "q" not in queues
    for queue in queues:  # every queue with series is zero-filled with the eight documented statuses
        assert {st for (q, st) in s.by("sugon_jobs", "queue", "status", nonzero=False) if q == queue} >= set(
            ZERO_FILL_STATUSES
        )


STATUSES = ["queued", "held", "running", "suspended", "completed", "cancelled", "failed", "requeued", "exiting"]
READING = st.tuples(
    st.sampled_from(["q1", "q2", "q3"]),
    st.sampled_from(STATUSES),
    st.sampled_from(["alice", "bob", "other"]),
    st.sampled_from([0, 1, 4]),
    st.none() | st.sampled_from([INVALID, 0]) | st.integers(0, 10**6),
)
POLLS = st.lists(st.dictionaries(st.sampled_from("abcdefgh"), READING, max_size=8), min_size=1, max_size=8)


def as_jobs(poll: dict[str, tuple[str, str, str, int, int | None]]) -> list[Job]:
    return [
        make_job(key, queue=q, status=status, user=user, cpus=cpus, run=run)
        for key, (q, status, user, cpus, run) in poll.items()
    ]


def counted(s: Samples) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of every counter and histogram: they only grow."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in s.families
        if family.type in ("counter", "histogram")
        for sample in family.samples
    }


def cpu_ledger(polls: list[dict[str, tuple[str, str, str, int, int | None]]]) -> dict[str, int]:
    """CPU-seconds by queue, job by job, by the README's rule: each job's CPUs times how much its run time grew
    since the last one read. A job new since the last poll grows from 0; at the first poll, a job's run time so
    far is where it grows from (0 if not started, unknown if unreadable). A run time that cannot be read, or a
    null one, changes nothing; one that goes backwards adds nothing and is where it grows from. Every poll reads
    the whole list: a job not listed has left."""
    last: dict[str, int | None] = {}  # each listed job's run time to grow from (None: unknown)
    spent: dict[str, int] = {}
    for i, poll in enumerate(polls):
        now: dict[str, int | None] = {}
        for key, (queue, _, _, cpus, run) in poll.items():
            readable = run if run is not None and run >= 0 else None
            if key in last:
                before = last[key]
            elif i > 0:
                before = 0
            else:
                before = readable if readable is not None else 0 if run is None else None
            grew = readable - before if readable is not None and before is not None and readable > before else 0
            spent[queue] = spent.get(queue, 0) + grew * cpus
            now[key] = readable if readable is not None else before
        last = now
    return spent


@SETTINGS
@given(polls=POLLS)
def test_counters_never_go_backwards_and_cpu_seconds_are_the_ledger_of_run_time_growth(
    polls: list[dict[str, tuple[str, str, str, int, int | None]]],
) -> None:
    p = Polls()
    before: dict[Any, float] = {}
    for i, poll in enumerate(polls):
        s = p.poll(as_jobs(poll), 1000.0 + 60 * i)
        assert total(s, "sugon_jobs").get("", 0) == len(poll)
        now = counted(s)
        assert all(now[k] >= v for k, v in before.items())  # no series vanishes, none goes down
        before = now
        assert total(s, "sugon_job_wait_seconds_count") == total(s, "sugon_jobs_started_total")
        for name in ("sugon_job_wait_seconds", "sugon_job_run_seconds"):  # +Inf holds every observation
            inf = {dict(k)["queue"]: v for k, v in s.of(name + "_bucket").items() if dict(k)["le"] == "+Inf"}
            assert inf == s.by(name + "_count", "queue", nonzero=False)
        cpu = s.by("sugon_job_cpu_seconds_total", "queue")
        assert cpu == nonzero(cpu_ledger(polls[: i + 1]))
        assert nonzero(total(s, "sugon_user_job_cpu_seconds_total", "queue")) == cpu


@SETTINGS
@given(polls=POLLS, missed=st.lists(st.booleans(), min_size=8, max_size=8))
def test_with_queues_folding_and_pages_missing_jobs_a_series_never_goes_down(
    polls: list[dict[str, tuple[str, str, str, int, int | None]]], missed: list[bool]
) -> None:
    """One queue's name for three queues: a queue's series may go with its name, but none that stays goes down,
    other only grows, and every job is counted under exactly one name."""
    p = Polls(budget=Budget(max_queues=1, max_users=1))
    before: dict[Any, float] = {}
    for i, poll in enumerate(polls):
        s = p.poll(as_jobs(poll), 1000.0 + 60 * i, left=frozenset() if missed[i] else None)
        assert total(s, "sugon_jobs").get("", 0) == len(poll)
        assert len(set(total(s, "sugon_jobs", "queue")) - {"other"}) <= 1
        now = counted(s)
        assert all(now[k] >= v for k, v in before.items() if k in now)
        assert all(k in now for k in before if ("queue", "other") in k[1])  # other's series never go
        before = now


SCALARS = st.none() | st.booleans() | st.integers() | st.floats() | st.text(alphabet=string.printable, max_size=15)
CONFIG_VALUES = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(
            st.sampled_from(
                [
                    "name",
                    "api_url",
                    "token",
                    "token_file",
                    "auth",
                    "kind",
                    "url",
                    "user",
                    "password",
                    "interval",
                    "clusters",
                    "page_size",
                    "cluster_ids",
                    "max_users",
                    "users_exclude",
                    "x",
                ]
            ),
            inner,
            max_size=6,
        )
    ),
    max_leaves=25,
)


@SETTINGS
@given(data=CONFIG_VALUES)
def test_any_yaml_value_is_a_config_or_a_config_error(data: Any) -> None:
    try:
        assert isinstance(build_config(data, environ={}), Config)
    except ConfigError as exc:
        assert exc.errors and all(isinstance(e, str) and ": " in e for e in exc.errors)


@SETTINGS
@given(text=st.text(max_size=300))
def test_any_text_as_a_config_file_is_a_config_or_a_config_error(text: str) -> None:
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False, encoding="utf-8") as handle:
        handle.write(text)
    try:
        load_config(handle.name, environ={})
    except ConfigError:
        pass
    finally:
        os.unlink(handle.name)


def test_a_typical_hostile_config_is_still_just_errors() -> None:
    data = yaml.safe_load("clusters: [{name: '', api_url: 7, token: {}, interval: -1, cluster_ids: [true, 1.5]}]")
    with pytest.raises(ConfigError) as err:
        build_config(data, environ={})
    assert err.value.errors == [
        'clusters[0].name: expected letters, digits, _ . or -, got ""',
        "clusters[0].api_url: expected an http:// or https:// URL, got 7",
        "clusters[0].cluster_ids[0]: expected a numeric scheduler id, got true",
        "clusters[0].cluster_ids[1]: expected a numeric scheduler id, got 1.5",
        "clusters[0].token: expected a non-empty string, got a value that is not shown",
        "clusters[0].interval: expected a duration like 30s, got -1",
    ]


CAPACITY_FIELDS = ("queNcpus", "queFreeNcpus", "queNodes", "queFreeNodes")
CAPACITY_FAMILIES = ("sugon_queue_cpus", "sugon_queue_free_cpus", "sugon_queue_nodes", "sugon_queue_free_nodes")


def polled(job_page: bytes, capacity: bytes) -> Rig:
    """A cluster polled for jobs and capacity by its real poller, over httpx (respx behind it)."""
    rig = Rig(capacity="alice")
    with respx.mock:
        respx.get(JOBS).mock(return_value=httpx.Response(200, content=job_page))
        respx.get(CAPACITY + "alice").mock(return_value=httpx.Response(200, content=capacity))

        async def go() -> None:
            await rig.poller.poll_once()
            await rig.poller.capacity.poll_once()
            await rig.http.aclose()

        asyncio.run(go())
    return rig


def queue_size(value: Any) -> int | None:
    """What a capacity figure should read as: a whole number of at most 10**9, written as a number or in
    ASCII digits; anything else is left out."""
    if isinstance(value, str) and value.strip().isascii() and value.strip().isdigit():
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 10**9:
        return value
    return None


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    cpus=st.lists(HUGE | st.integers(0, 64), min_size=1, max_size=12),
    total=st.none() | st.sampled_from([10**12, 10**400, "9" * 4000]),
    sizes=st.lists(HUGE | st.none(), min_size=4, max_size=4),
)
def test_huge_numbers_go_through_poll_publish_and_render_and_promtool_accepts_the_result(
    cpus: list[Any], total: Any, sizes: list[Any]
) -> None:
    """A number that does not fit is bounded where it is read, whatever it is: CPUs, data.total, capacity."""
    rows = [seed_shaped_row(i, "statR" if i % 2 else "statQ", f"q{i % 3}", f"u{i % 2}", c) for i, c in enumerate(cpus)]
    # json.dumps writes inf as Infinity, which Python's json reads back: a server may send it as well.
    page = {"code": "0", "msg": "", "data": {"total": len(rows) if total is None else total, "list": rows}}
    capacity = {"code": "0", "msg": "", "data": [{"queueName": "q0", **dict(zip(CAPACITY_FIELDS, sizes))}]}
    rig = polled(json.dumps(page).encode(), json.dumps(capacity).encode())
    result = promtool_check_metrics(b"".join(rig.exposition.body()).decode())
    assert result.returncode == 0, result.stdout + result.stderr
    value = rig.value

    if total is None:
        assert value("sugon_up") == 1
        assert value("sugon_invalid_records_total") == sum(cpu_count(c) is None for c in cpus)
        assert sum(rig.values("sugon_jobs").values()) == len(rows)
    else:  # above max_jobs
        assert value("sugon_up") == 0
        assert value("sugon_api_errors_total", reason="invalid_response") == 1
    for family, size in zip(CAPACITY_FAMILIES, sizes):
        assert value(family, queue="q0") == queue_size(size)
