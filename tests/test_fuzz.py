"""Hostile input, generated: whatever the API or the config file says, the answer is a typed error or a
correct count, never another exception."""

from __future__ import annotations

import asyncio
import json
import os
import string
import tempfile
from typing import Any

import httpx
import pytest
import respx
import yaml
from exporter.counting.rows import RowParser, cpu_count
from exporter.counting.snapshot import SnapshotBuilder
from exporter.counting.tally import RowTally, next_tally
from exporter.counting.tracker import JobTracker, Seen
from exporter.counting.usernames import UserNames
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import generate_latest

from exporter.config import Config, ConfigError, build_config, load_config
from exporter.service import Exporter
from exporter.sugon.conversation import ApiError, decode_job_page, parse_envelope
from exporter.sugon.joblist import parse_capacity, parse_schedulers
from tests.helpers import fixed_runtime, promtool_check_metrics, take_rows
from tests.helpers import row as seed_shaped_row  # `row` names the loop variable of the tests above
from tests.reference import Job, add_job, nodes_in_use, parse_job, seen, usage_of

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


@SETTINGS
@given(rows=st.lists(ROW, max_size=40))
def test_any_rows_aggregate_into_consistent_counts(rows: list[Any]) -> None:
    builder = SnapshotBuilder(per_user=True, max_users=3)
    keys: set[str] = set()
    cpus = 0
    for row in rows:
        job = parse_job(row, "1")
        if job is None:
            assert (
                not isinstance(row, dict)
                or row.get("jobId") in (None, "", True, False)
                or not isinstance(row.get("jobId"), (str, int))
                or (isinstance(row.get("jobId"), str) and not row["jobId"].strip())
            )
            continue
        assert job.cpus >= 0 and job.queue and job.user and job.status
        if job.key not in keys:
            keys.add(job.key)
            cpus += job.cpus
            add_job(builder, job)
    snap = builder.build("c", 0.0, 1.0, len(rows), zero_fill_queues=["z"])
    assert snap.job_count == len(keys)
    assert sum(jobs for jobs, _ in snap.by_queue.values()) == len(keys)
    assert sum(used for _, used in snap.by_queue.values()) == cpus
    assert sum(jobs for jobs, _ in snap.by_user.values()) == len(keys)
    assert len({u for _, u, _ in snap.by_user}) <= 4  # three users by name, plus "other"


# Rows that mix value types which compare equal (1, 1.0, True) and keys padded with blanks: the cases a
# fast path that remembers raw values could get wrong.
TRICKY = st.sampled_from([1, 1.0, True, "1", " 1 ", "1\t", "", " ", None, 0, False, "statQ", "q", "q "])
TALLY_ROW = (
    st.fixed_dictionaries(
        {},
        optional={
            "jobId": TRICKY | FIELD,
            "jobStatus": st.sampled_from(["statR", "statQ", "statC", "bogus"]) | TRICKY,
            "queue": TRICKY | FIELD,
            "user": TRICKY | FIELD,
            "procNumUsed": st.sampled_from([-1, 2, 2.0, "3", True]) | FIELD,
            "jobmanagerId": TRICKY,
            "reason": st.sampled_from(["Priority", "Resources (x)"]) | FIELD,
            "jobRunTime": st.sampled_from(["01:02:03", "2-00:00:58", "05:09", "1-02:03", "x", 5]) | TRICKY | FIELD,
            "nodeUsed": st.sampled_from(["n1", "n[01-04,07]", "a,b", "n[03-05]", "n[1-", "x[3-1]", 7]) | TRICKY | FIELD,
            "appType": st.sampled_from(["fluent", " fluent", "none", "other", "BASE"]) | TRICKY | FIELD,
        },
    )
    | JSON
)


@SETTINGS
@given(pages=st.lists(st.lists(TALLY_ROW, max_size=15), max_size=4), per_user=st.booleans())
def test_the_fast_tally_counts_exactly_what_parsing_row_by_row_counts(pages: list[list[Any]], per_user: bool) -> None:
    """The poll's fast path against the plain one (tests/reference.py): parse_job, first key wins, add_job."""
    exclude = {"q"}
    fast = SnapshotBuilder(per_user=per_user, max_users=1000, max_apps=3)
    shown = {"bogus"}  # an unknown status the log has shown already
    tally = RowTally(RowParser(), fast, exclude.__contains__, shown)
    slow = SnapshotBuilder(per_user=per_user, max_users=1000, max_apps=3)
    current: dict[str, Seen] = {}
    jobs: list[Job] = []
    unknown_slow: set[str] = set()
    invalid = 0
    invalid_fields = {"jobRunTime": 0, "jobStatus": 0, "nodeUsed": 0, "procNumUsed": 0}
    for page in pages:
        take_rows(tally, page, "7")
        for row in page:
            job = parse_job(row, "7")
            if job is None:
                invalid += 1
            elif job.key not in current and job.queue not in exclude:
                current[job.key] = seen(job)
                jobs.append(job)
                add_job(slow, job)
                too_many = cpu_count(row.get("procNumUsed")) is None  # counted with 0 CPUs, and reported
                invalid += too_many
                invalid_fields["procNumUsed"] += too_many
                invalid_fields["jobRunTime"] += job.run is not None and job.run < 0
                invalid_fields["nodeUsed"] += job.nodes is None
                if job.status == "unknown":
                    unknown_slow.add(job.raw_status[:64])
                    invalid_fields["jobStatus"] += 1
    tally.finish()
    slow.nodes_in_use = nodes_in_use(jobs)
    a = fast.build("c", 0.0, 1.0, 0, zero_fill_queues=["z"])
    b = slow.build("c", 0.0, 1.0, 0, zero_fill_queues=["z"])
    assert (tally.pop_counted(), tally.invalid) == (current, invalid)
    assert tally.invalid_fields() == {k: n for k, n in invalid_fields.items() if n}
    assert (a.by_queue, a.by_user, a.by_reason, a.job_count) == (b.by_queue, b.by_user, b.by_reason, b.job_count)
    assert (a.nodes_by_queue, a.nodes_in_use, a.by_app, a.running_max_seconds) == (
        b.nodes_by_queue,
        b.nodes_in_use,
        b.by_app,
        b.running_max_seconds,
    )
    # The examples the poller logs: distinct, at most 5, values not shown before if there are any.
    new = unknown_slow - shown
    pool = new or unknown_slow
    assert tally.new_status_seen == bool(new)
    assert len(set(tally.status_examples)) == len(tally.status_examples) == min(5, len(pool))
    assert set(tally.status_examples) <= pool


@SETTINGS
@given(
    polls=st.lists(st.lists(st.lists(TALLY_ROW, max_size=10), max_size=3), min_size=2, max_size=4),
    per_user=st.booleans(),
)
def test_a_tally_kept_from_poll_to_poll_counts_each_poll_as_a_new_one_does(
    polls: list[list[list[Any]]], per_user: bool
) -> None:
    """What a tally remembers from earlier polls (raw values, series, slots) never shows in a later poll's
    counts, folded users or reasons: each poll's snapshot equals that of a tally built for it alone."""
    exclude = {"q"}

    def new() -> RowTally:
        builder = SnapshotBuilder(per_user, max_users=2, max_apps=2)
        return RowTally(RowParser(), builder, exclude.__contains__)

    kept: RowTally | None = None
    for pages in polls:
        previous = kept
        kept = next_tally(kept, new)
        assert previous is None or kept is previous  # far below the limit: always kept
        fresh = new()
        for tally in (kept, fresh):
            for page in pages:
                take_rows(tally, page, "7")
            tally.finish()
        a = kept.builder.build("c", 0.0, 1.0, 0, zero_fill_queues=["z"])
        b = fresh.builder.build("c", 0.0, 1.0, 0, zero_fill_queues=["z"])
        assert (kept.invalid, kept.builder.queues) == (fresh.invalid, fresh.builder.queues)
        assert kept.pop_counted() == fresh.pop_counted()
        assert (a.by_queue, a.by_user, a.by_reason, a.job_count, a.users_folded) == (
            b.by_queue,
            b.by_user,
            b.by_reason,
            b.job_count,
            b.users_folded,
        )
        assert (a.nodes_by_queue, a.nodes_in_use, a.by_app, a.running_max_seconds) == (
            b.nodes_by_queue,
            b.nodes_in_use,
            b.by_app,
            b.running_max_seconds,
        )
        assert kept.invalid_fields() == fresh.invalid_fields()


@SETTINGS
@given(
    polls=st.lists(
        st.dictionaries(
            st.sampled_from("abcdefgh"),
            st.tuples(
                st.sampled_from(["q1", "q2"]),
                st.sampled_from(
                    ["queued", "held", "running", "completed", "cancelled", "failed", "requeued", "exiting"]
                ),
            ),
            max_size=8,
        ),
        min_size=1,
        max_size=12,
    )
)
def test_tracker_counters_never_go_backwards(polls: list[dict[str, tuple[str, str]]]) -> None:
    tracker = JobTracker()
    previous: dict[str, float] = {}
    for i, current in enumerate(polls):
        act = tracker.commit({k: (q, s, "u", 0, None) for k, (q, s) in current.items()}, 1000.0 + 60 * i)
        now = {f"s{k}": float(v) for k, v in act.submitted.items()} | {
            f"t{k}": float(v) for k, v in act.started.items()
        }
        now |= {f"e{k}": float(v) for k, v in act.ended.items()}
        assert all(now.get(k, 0) >= v for k, v in previous.items())
        assert sum(h.count for h in act.wait.values()) == sum(act.started.values())
        previous = now


STATUSES = ["queued", "held", "running", "suspended", "completed", "cancelled", "failed", "requeued", "exiting"]
SEEN = st.tuples(
    st.sampled_from(["q1", "q2"]),
    st.sampled_from(STATUSES),
    st.sampled_from(["alice", "bob", "other"]),
    st.sampled_from([0, 1, 4]),
    st.none() | st.sampled_from([-1, 0]) | st.integers(0, 10**6),
)


@SETTINGS
@given(
    polls=st.lists(st.dictionaries(st.sampled_from("abcdefgh"), SEEN, max_size=8), min_size=1, max_size=8),
    restored=st.dictionaries(st.sampled_from("abcd"), st.integers(0, 10**6), max_size=3),
)
def test_the_tracker_counts_cpu_seconds_and_run_times_as_the_job_by_job_reference_does(
    polls: list[dict[str, Seen]], restored: dict[str, int]
) -> None:
    """JobTracker against tests/reference.py's usage_of, and counters that never go down."""
    tracker = JobTracker(restored_runs=restored, users=UserNames(max_users=1000))
    before: dict[Any, float] = {}
    for i in range(len(polls)):
        act = tracker.commit(polls[i], 1000.0 + 60 * i)
        expected = usage_of(polls[: i + 1], restored)
        assert dict(act.cpu_seconds) == expected.cpu_seconds
        assert dict(act.user_cpu_seconds) == expected.user_cpu_seconds
        assert {q: (h.count, h.total) for q, h in act.run_time.items()} == {
            q: (len(runs), sum(runs)) for q, runs in expected.run_times.items()
        }
        assert all(sum(h.counts) == h.count for h in act.run_time.values())
        now = {**act.cpu_seconds, **act.user_cpu_seconds}
        assert all(now[k] >= v for k, v in before.items())  # no series vanishes, none goes down
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


BASE = "https://hpc.example.com:65106"
CAPACITY_FIELDS = ("queNcpus", "queFreeNcpus", "queNodes", "queFreeNodes")
CAPACITY_FAMILIES = ("sugon_queue_cpus", "sugon_queue_free_cpus", "sugon_queue_nodes", "sugon_queue_free_nodes")


def polled(job_pages: list[bytes], capacity: bytes) -> Exporter:
    """An exporter whose one cluster was polled for jobs and capacity by its real poller, with respx in place of
    the transport, after a first scrape (so that publishing renders ahead, as in the daemon)."""
    cluster = {"name": "kunshan", "api_url": BASE, "token": "t", "cluster_ids": ["1"], "page_size": 100}
    config = {"clusters": [cluster], "queue_capacity": True, "username": "alice"}
    ex = Exporter(build_config(config, environ={}), retry_backoff=0, runtime=fixed_runtime)
    ex.exposition.render(ex.store.states(), False, False)
    answers = iter(job_pages)
    with respx.mock(using="httpx") as api:  # in place of any transport the client has
        api.get(BASE + "/hpc/openapi/v2/jobs").mock(side_effect=lambda _: httpx.Response(200, content=next(answers)))
        api.get(BASE + "/hpc/openapi/v2/queuenames/users/alice").mock(
            return_value=httpx.Response(200, content=capacity)
        )

        async def go() -> None:
            await ex.pollers[0].poll_once()
            await ex.pollers[0].poll_capacity_once()
            await ex.aclose()

        asyncio.run(go())
    return ex


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
    ex = polled([json.dumps(page).encode()], json.dumps(capacity).encode())
    text = ex.exposition.render(ex.store.states(), False, False)
    assert text == generate_latest(ex.registry)  # and the other render path (--once, name[] scrapes) agrees
    result = promtool_check_metrics(text.decode())
    assert result.returncode == 0, result.stdout + result.stderr

    def value(name: str, **labels: str) -> float | None:
        return ex.registry.get_sample_value(name, {"hpc_cluster": "kunshan", **labels})

    if total is None:
        assert value("sugon_up") == 1
        assert value("sugon_invalid_records_total") == sum(cpu_count(c) is None for c in cpus)
        jobs = [s.value for fam in ex.registry.collect() if fam.name == "sugon_jobs" for s in fam.samples]
        assert sum(jobs) == len(rows)
    else:  # above max_jobs
        assert value("sugon_up") == 0
        assert value("sugon_api_errors_total", reason="invalid_response") == 1
    for family, size in zip(CAPACITY_FAMILIES, sizes):
        assert value(family, queue="q0") == queue_size(size)
