"""The simulator speaks the job-list API as documented, and its population moves realistically."""

from __future__ import annotations

import re
from collections.abc import Iterator

import hostlist
import httpx
import pytest

from exporter.simulator import LINGER_SECONDS, Scheduler, SimPlatform, Simulator
from exporter.simulator.nodes import host_list
from exporter.sugon.platform import aksk_signature

SID = "1638523853"


@pytest.fixture
def sim() -> Iterator[Simulator]:
    s = Simulator(token="good", jobs=120, max_page=25, seed=3)
    s.serve()
    yield s
    s.stop()


def get(sim: Simulator, token: str = "good", **params: object) -> dict:
    r = httpx.get(sim.url + "/hpc/openapi/v2/jobs", params=params, headers={"token": token})
    assert r.status_code == 200
    return r.json()


def test_a_bad_token_is_refused_with_10008(sim: Simulator) -> None:
    assert get(sim, token="bad", strClusterIDList=SID) == {
        "msg": "auth_fail",
        "code": "10008",
        "data": "token is invalid",
    }


def test_strclusteridlist_is_required_and_must_be_valid(sim: Simulator) -> None:
    assert get(sim)["code"] == "10003"
    assert get(sim, strClusterIDList=SID, start=-1)["code"] == "10004"
    assert get(sim, strClusterIDList="abc")["code"] == "10004"


def test_pages_are_capped_and_offsets_cover_the_list_once(sim: Simulator) -> None:
    first = get(sim, strClusterIDList=SID, start=0, limit=500)
    assert first["code"] == "0" and first["data"]["total"] == 120
    assert len(first["data"]["list"]) == 25  # the cap, not the limit
    seen = []
    for start in range(0, 120, 25):
        seen += [r["jobId"] for r in get(sim, strClusterIDList=SID, start=start, limit=25)["data"]["list"]]
    assert sorted(seen) == sorted(r["jobId"] for r in sim.rows())
    assert len(set(seen)) == 120


def test_filters_narrow_the_list(sim: Simulator) -> None:
    rows = sim.rows()
    user, queue = rows[0]["user"], rows[0]["queue"]
    data = get(sim, strClusterIDList=SID, strJobOwner=user, strQueueName=queue, strJobStat="statR", limit=1000)["data"]
    expected = [r for r in rows if r["user"] == user and r["queue"] == queue and r["jobStatus"] == "statR"]
    assert data["total"] == len(expected)
    one = get(sim, strClusterIDList=SID, strJobId=rows[5]["jobId"])["data"]
    assert one["total"] == 1 and one["list"][0]["jobId"] == rows[5]["jobId"]


def test_rows_have_the_seed_shape(sim: Simulator) -> None:
    seed_keys = {
        "jobId",
        "jobName",
        "jobStatus",
        "queue",
        "user",
        "nodeUsed",
        "procNumUsed",
        "jobStartTime",
        "jobRunTime",
        "jobVncSessionInfo",
        "jobmanagerId",
        "jobmanagerName",
        "jobmanagerType",
        "errorPath",
        "outputPath",
        "workDir",
        "reason",
        "appType",
    }
    for r in get(sim, strClusterIDList=SID)["data"]["list"]:
        assert set(r) == seed_keys
        assert isinstance(r["jobId"], str) and isinstance(r["procNumUsed"], int)
        assert r["jobmanagerId"] == SID


def test_the_cluster_endpoint_lists_the_schedulers() -> None:
    s = Simulator(token="t", schedulers=[Scheduler("1", "A"), Scheduler("2", "B")], jobs=5)
    status, body = s.handle("GET", "/hpc/openapi/v2/cluster", {}, {"token": "t"})
    assert status == 200 and [d["id"] for d in body["data"]] == [1, 2]


def test_finished_jobs_linger_five_minutes_and_queued_jobs_start_when_cpus_free() -> None:
    t0 = 1_700_000_000.0
    s = Simulator(token="t", schedulers=[Scheduler(SID, "C", {"q": 8})], jobs=0, arrival_rate=0, clock=lambda: t0)
    s.add_jobs(1, queue="q", status="statR", cpus=8)
    s.add_jobs(1, queue="q", status="statQ", cpus=8)
    (run_id,), (wait_id,) = ([int(r["jobId"]) for r in s.rows() if r["jobStatus"] == st] for st in ("statR", "statQ"))
    s.population.set_runtime(SID, run_id, 100)
    s.step(t0 + 100)  # ends → exiting
    s.step(t0 + 116)  # → completed (or failed); the queued job gets the CPUs
    status = {int(r["jobId"]): r["jobStatus"] for r in s.rows()}
    assert status[run_id] in ("statC", "statD") and status[wait_id] == "statR"
    s.step(t0 + 100 + LINGER_SECONDS - 1)
    assert run_id in {int(r["jobId"]) for r in s.rows()}
    s.step(t0 + 100 + LINGER_SECONDS + 1)
    assert run_id not in {int(r["jobId"]) for r in s.rows()}


def test_the_population_evolves_with_arrivals() -> None:
    t0 = 1_700_000_000.0
    s = Simulator(token="t", jobs=50, arrival_rate=1.0, clock=lambda: t0)
    before = {r["jobId"] for r in s.rows()}
    s.step(t0 + 120)
    after = {r["jobId"] for r in s.rows()}
    assert len(after - before) >= 60  # about 120 arrivals at 1/s


def platform_sim(**kwargs: object) -> tuple[Simulator, list[float]]:
    now = [1_700_000_000.0]
    sim = Simulator(
        token=None,
        jobs=10,
        clock=lambda: now[0],
        platform=SimPlatform(token_lifetime=60, clock=lambda: now[0], **kwargs),
    )  # type: ignore[arg-type]
    return sim, now


def login(sim: Simulator, password: str = "alice-password") -> tuple[str, str]:
    """(platform token, region token) of a password login."""
    status, body = sim.handle(
        "POST", "/ac/openapi/v2/tokens", {}, {"user": "alice", "password": password, "orgid": "sim-org"}
    )
    assert status == 200 and body["code"] == "0"
    by_id = {str(e["clusterId"]): e["token"] for e in body["data"]}
    assert by_id["11251"] is None  # the suspended region
    return by_id["0"], by_id["11250"]


def test_the_platform_logs_in_with_a_password_and_refuses_a_wrong_one() -> None:
    sim, _ = platform_sim()
    assert (
        sim.handle("POST", "/ac/openapi/v2/tokens", {}, {"user": "alice", "password": "x", "orgid": "sim-org"})[1][
            "code"
        ]
        == "10004"
    )
    _, region = login(sim)
    assert sim.handle("GET", "/hpc/openapi/v2/jobs", {"strClusterIDList": SID}, {"token": region})[1]["code"] == "0"
    assert (sim.platform.logins, sim.platform.failed_logins) == (2, 1)


def test_the_aksk_login_checks_the_signature_and_the_timestamp() -> None:
    sim, now = platform_sim()
    stamp = str(int(now[0]))
    headers = {
        "user": "bob",
        "accesskey": "sim-ak",
        "timestamp": stamp,
        "signature": aksk_signature("sim-ak", "sim-sk", "bob", stamp),
    }
    assert sim.handle("POST", "/api/user/v3/tokens", {}, headers)[1]["code"] == "0"
    assert sim.handle("POST", "/api/user/v3/tokens", {}, {**headers, "signature": "0" * 64})[1]["code"] == "10004"
    old = str(int(now[0]) - 600)
    stale = {**headers, "timestamp": old, "signature": aksk_signature("sim-ak", "sim-sk", "bob", old)}
    assert sim.handle("POST", "/api/user/v3/tokens", {}, stale)[1]["code"] == "10004"


def test_tokens_expire_can_be_renewed_for_a_day_and_the_platform_token_is_not_for_jobs() -> None:
    sim, now = platform_sim(renew_shape="string")
    platform, region = login(sim)
    jobs = {"strClusterIDList": SID}
    assert sim.handle("GET", "/hpc/openapi/v2/jobs", jobs, {"token": platform})[1]["code"] == "10008"
    assert sim.handle("GET", "/ac/openapi/v2/tokens/state", {}, {"token": region})[1]["data"] == "token is valid"
    now[0] += 61
    assert sim.handle("GET", "/hpc/openapi/v2/jobs", jobs, {"token": region})[1]["code"] == "10008"
    assert sim.handle("GET", "/ac/openapi/v2/tokens/state", {}, {"token": region})[1]["code"] == "10008"
    renewed = sim.handle("POST", "/ac/openapi/v2/tokens/next", {}, {"token": region})[1]
    assert renewed["code"] == "0" and isinstance(renewed["data"], str)
    assert sim.handle("GET", "/hpc/openapi/v2/jobs", jobs, {"token": renewed["data"]})[1]["code"] == "0"
    now[0] += 25 * 3600
    assert sim.handle("POST", "/ac/openapi/v2/tokens/next", {}, {"token": region})[1]["code"] == "10008"


def test_center_lists_a_disabled_url_first_and_refuses_the_platform_token() -> None:
    sim, _ = platform_sim()
    sim.serve()
    try:
        platform, region = login(sim)
        body = sim.handle("GET", "/ac/openapi/v2/center", {}, {"token": region})[1]
        urls = body["data"]["hpcUrls"]
        assert [u["enable"] for u in urls] == ["false", "true"]
        assert urls[1]["url"] == sim.url + "/hpc"
        assert body["data"]["clusterUserInfo"]["userName"] == "alice"
        assert sim.handle("GET", "/ac/openapi/v2/center", {}, {"token": platform})[1]["code"] == "10001"
    finally:
        sim.stop()


def run_time_seconds(text: str) -> int:
    """``D-HH:MM:SS`` or ``HH:MM:SS`` as seconds, parsed here independently of the exporter."""
    days, _, hms = text.rpartition("-")
    hours, minutes, seconds = (int(part) for part in hms.split(":"))
    return ((int(days or 0) * 24 + hours) * 60 + minutes) * 60 + seconds


def test_a_running_jobs_run_time_grows_with_the_clock_in_the_apis_formats_and_a_finished_job_keeps_its_own() -> None:
    now = [1_700_000_000.0]
    t0 = now[0]
    s = Simulator(token="t", schedulers=[Scheduler(SID, "C", {"q": 8})], jobs=0, arrival_rate=0, clock=lambda: now[0])
    s.add_jobs(1, queue="q", status="statR", cpus=8)
    (first,) = s.rows()
    s.population.set_runtime(SID, int(first["jobId"]), 10 * 86400)

    def listed() -> dict[str, dict]:
        return {r["jobStatus"]: r for r in s.rows()}

    assert listed()["statR"]["jobRunTime"] == "00:00:00"
    s.step(t0 + 59)
    assert listed()["statR"]["jobRunTime"] == "00:00:59"
    s.step(t0 + 3600 + 61)
    assert listed()["statR"]["jobRunTime"] == "01:01:01"
    s.step(t0 + 86400 + 58)
    assert listed()["statR"]["jobRunTime"] == "1-00:00:58"
    s.population.set_runtime(SID, int(first["jobId"]), 2 * 86400)
    now[0] = t0 + 2 * 86400 + 58
    s.step(now[0])  # past its run time: it ends now
    assert listed()["statE"]["jobRunTime"] == "2-00:00:58"
    s.add_jobs(1, queue="q", status="statQ", cpus=8)  # waits for the queue's only node
    assert listed()["statQ"]["jobRunTime"] == "" and listed()["statQ"]["nodeUsed"] == ""
    s.step(now[0] + 20)  # the first completes (or fails) and lingers; the second starts
    s.step(now[0] + 20 + 105)
    ended = next(r for r in s.rows() if r["jobId"] == first["jobId"])
    assert ended["jobStatus"] in ("statC", "statD") and ended["jobRunTime"] == "2-00:00:58"
    assert listed()["statR"]["jobRunTime"] == "00:01:45"
    assert listed()["statR"]["nodeUsed"] == ended["nodeUsed"] == "h01r1n01"


def test_the_truth_is_what_the_rows_say_run_times_nodes_and_apps() -> None:
    t0 = 1_700_000_000.0
    s = Simulator(
        token="t",
        schedulers=[Scheduler("11", "A"), Scheduler("12", "B", {"gpu": 512, "a100": 256})],
        jobs=400,
        arrival_rate=0.5,
        seed=4,
        clock=lambda: t0,
    )
    s.step(t0 + 600)
    rows, truth = s.rows(), s.truth()
    assert [r["jobId"] for r in rows] == [t.job_id for t in truth]
    for r, t in zip(rows, truth):
        assert (r["jobmanagerId"], r["queue"], r["user"], r["jobStatus"]) == (t.scheduler_id, t.queue, t.user, t.status)
        assert r["procNumUsed"] == t.cpus and r["appType"] == t.app
        if t.run_seconds is None:
            assert r["jobRunTime"] == "" and r["nodeUsed"] == "" and t.nodes == ()
            assert t.status in ("statQ", "statH", "statDE")
        else:
            assert run_time_seconds(r["jobRunTime"]) == t.run_seconds
            assert hostlist.expand_hostlist(r["nodeUsed"]) == list(t.nodes)
            assert 1 <= len(t.nodes) <= max(t.cpus // 4, 1)
    started = [t for t in truth if t.run_seconds is not None]
    assert any(t.run_seconds > 86400 for t in started)  # some show days: "1-07:38:46"
    assert s.truth("12") == [t for t in truth if t.scheduler_id == "12"]


def test_host_lists_are_zero_padded_slurm_syntax_in_every_shape_and_schedulers_never_share_a_node() -> None:
    s = Simulator(token="t", schedulers=[Scheduler("11", "A"), Scheduler("12", "B")], jobs=600, seed=2)
    lists = {r["jobmanagerId"]: [] for r in s.rows()}
    for r in s.rows():
        if r["nodeUsed"]:
            lists[r["jobmanagerId"]].append(r["nodeUsed"])
    every = lists["11"] + lists["12"]
    rack = r"h\d\dr\d"
    name = rf"{rack}n\d\d"
    assert any(re.fullmatch(name, x) for x in every)  # one node: a plain name
    assert any(re.fullmatch(rf"{rack}n\[\d\d-\d\d\]", x) for x in every)  # h01r2n[05-08]
    assert any(re.fullmatch(rf"{rack}n\[[\d,-]+\],{rack}n(\[[\d,-]+\]|\d\d)", x) for x in every)  # racks
    assert any(re.fullmatch(rf"{name}(,{name})+", x) for x in every)  # names with commas
    for x in every:
        assert all(re.fullmatch(name, n) for n in hostlist.expand_hostlist(x))
    halls = [{n[:3] for x in lists[sid] for n in hostlist.expand_hostlist(x)} for sid in ("11", "12")]
    assert halls == [{"h01"}, {"h02"}]


def test_host_list_brackets_ranges_per_rack_or_lists_the_names() -> None:
    assert host_list(1, [0]) == "h01r1n01"
    assert host_list(1, [0, 1, 2, 3, 6]) == "h01r1n[01-04,07]"
    assert host_list(3, [14, 15, 16, 17]) == "h03r1n[15-16],h03r2n[01-02]"
    assert host_list(2, [15, 16]) == "h02r1n16,h02r2n01"
    assert host_list(1, [3, 1, 2], compressed=False) == "h01r1n02,h01r1n03,h01r1n04"


def test_app_types_mix_the_applications_with_empty_and_null_ones() -> None:
    apps = {r["appType"] for r in Simulator(token="t", jobs=300, seed=6).rows()}
    assert {"fluent", "vasp", "abaqus", "gromacs", "lammps", "BASE", "", None} <= apps


def test_the_same_seed_gives_the_same_jobs_run_times_and_nodes() -> None:
    t0 = 1_700_000_000.0

    def listing() -> list[list[dict]]:
        s = Simulator(token="t", jobs=200, seed=8, clock=lambda: t0)
        out = [s.rows()]
        for k in range(1, 6):
            s.step(t0 + 60 * k)
            out.append(s.rows())
        return out

    assert listing() == listing()
