"""One cluster's /metrics after a hand-made sequence of polls, against the hand-written golden file
(tests/fixtures/golden.prom): every family of every group, with its HELP, type, labels and values, in the order
/metrics serves them, as promtool accepts them. Every value in the file is worked out by hand below."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import respx
from prometheus_client import CollectorRegistry, generate_latest

from exporter.render import _Fixed
from tests.helpers import FIXTURES, PagedList, envelope, promtool_check_metrics, row
from tests.test_poller import CAPACITY, JOBS, Rig

T = 1_700_000_000.0
# Job gauges: left out once the job data is older than max_staleness (capacity too), where the rest stays.
GAUGES = (
    "sugon_jobs",
    "sugon_job_cpus",
    "sugon_job_nodes",
    "sugon_queues_folded",
    "sugon_nodes_in_use",
    "sugon_queued_jobs_by_reason",
    "sugon_oldest_queued_job_age_seconds",
    "sugon_running_job_max_seconds",
    "sugon_app_jobs",
    "sugon_app_job_cpus",
    "sugon_user_jobs",
    "sugon_user_job_cpus",
    "sugon_users_folded",
    "sugon_queue_cpus",
    "sugon_queue_free_cpus",
    "sugon_queue_nodes",
    "sugon_queue_free_nodes",
)


def job(job_id: int, status: str, user: str, cpus: int, run: str, nodes: str, app: Any, reason: Any) -> dict[str, Any]:
    return {
        **row(job_id, status, "debug", user, cpus),
        "jobRunTime": run,
        "nodeUsed": nodes,
        "appType": app,
        "reason": reason,
    }


def b(status: str, run: str) -> dict[str, Any]:  # bob, 1 CPU, running before the exporter started
    return job(1, status, "bob", 1, run, "h1", None, None)


def j1(status: str = "statQ", run: str = "", nodes: str = "") -> dict[str, Any]:  # alice, 4 CPUs, vasp
    return job(2, status, "alice", 4, run, nodes, "vasp", "Priority")


def j2(status: str = "statQ", run: str = "", nodes: str = "") -> dict[str, Any]:  # alice, 8 CPUs, fluent
    return job(4, status, "alice", 8, run, nodes, "fluent", "Resources")


def c(status: str = "statQ", run: str = "", nodes: str = "") -> dict[str, Any]:  # bob, no CPU, no application
    return job(5, status, "bob", 0, run, nodes, None, None)


G = job(3, "statQ", "bob", 2, "", "", None, "Priority")
J3 = job(6, "statQ", "bob", 16, "", "", "", "Resources (n1)")
# (seconds after T, the list): six polls, each one page (one request).
POLLS = [
    (0, [b("statR", "03:30:00"), j1(), G]),  # seeds: nothing counted; j1 and G waiting since T
    (60, [b("statR", "03:31:00"), j1(), j2()]),  # G left, never started: gone; j2 submitted; bob +60 s
    (85, [b("statR", "03:31:25"), j1(), j2(), c()]),  # c submitted; bob +25 s
    # b completes after 12,700 s (bob +15 s); j2 starts after waiting 45 s, 20 s run on 8 CPUs (alice +160);
    # c is seen completed after waiting 20 s, having run 15 s on no CPU.
    (105, [b("statC", "03:31:40"), j1(), j2("statR", "00:20", "n[01-02]"), c("statC", "00:15", "h2")]),
    # b and c left, completed: not gone. j1 starts after 20,000 s, 100 s run on 4 CPUs (alice +400); j2 ran
    # 19,915 - 20 s more (alice +159,160); J3 submitted.
    (20_000, [j1("statR", "01:40", "n01"), j2("statR", "05:31:55", "n[01-02]"), J3]),
    (20_120, [j1("statR", "03:40", "n01"), j2("statR", "05:33:55", "n[01-02]"), J3]),  # alice +480 +960
]
# At T+20,120 s, so: submitted 3 (j2, c, J3); started 3, waits 20 s (≤ 30 s), 45 s (≤ 1 m) and 20,000 s
# (≤ 8 h), 20,065 s in all; ended: completed 2 (b, c), gone 1 (G); run times 15 s (≤ 1 m) and 12,700 s
# (≤ 4 h), 12,715 s in all; CPU-seconds bob 60 + 25 + 15 = 100, alice 160 + 159,160 + 960 + 400 + 480 =
# 161,160, the queue 161,260. Listed: j1 and j2 running (12 CPUs; nodes n01 and n01-n02: 3 in the host lists,
# 2 distinct), the longest 20,035 s; J3 queued (16 CPUs, reason Resources) for 120 s. Capacity: one poll of its
# own after the last job poll. Own counters: 6 polls; 8 requests: a page a poll, the capacity, and a lookup of G
# (strJobId) when the second poll did not read it, which had not ended (one not listed); 3 departures (G; b, c).


def polled() -> Rig:
    rig = Rig(capacity="alice")
    server = PagedList([])

    async def answer(request: httpx.Request) -> httpx.Response:
        wanted = request.url.params.get("strJobId")
        if wanted is None:
            return await server(request)
        found = [r for r in server.rows if r["jobId"] == wanted]
        return httpx.Response(200, json=envelope({"total": len(found), "list": found}))

    with respx.mock:
        respx.get(JOBS).mock(side_effect=answer)
        capacity = [{"queueName": "debug", "queNcpus": 256, "queFreeNcpus": 64, "queNodes": 4, "queFreeNodes": 1}]
        respx.get(CAPACITY + "alice").mock(return_value=httpx.Response(200, json=envelope(capacity)))
        for at, rows in POLLS:
            rig.clock.now = T + at
            server.rows = rows
            assert rig.poll()
        assert asyncio.run(rig.poller.capacity.poll_once())
    return rig


def metrics(rig: Rig, now: float) -> str:
    """The cluster's part of /metrics at ``now`` (without the build, platform, reload and process metrics)."""
    families = [f for f in rig.exposition.families(now) if f.name.startswith("sugon_")]
    families = [f for f in families if f.name not in ("sugon_exporter_build", "sugon_config_last_reload_successful")]
    families = [f for f in families if f.name != "sugon_config_last_reload_success_timestamp_seconds"]
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Fixed(families))
    return generate_latest(registry).decode()


def blocks(text: str) -> dict[str, str]:
    """The text of each family, by name (its HELP line names it)."""
    out: dict[str, str] = {}
    for block in text.split("# HELP ")[1:]:
        name = block.split(" ", 1)[0]
        out[name.removesuffix("_total")] = "# HELP " + block
    return out


def test_the_metrics_of_a_hand_made_sequence_of_polls_match_the_golden_file_and_pass_promtool() -> None:
    rig = polled()
    text = metrics(rig, T + 20_120)
    assert text == (FIXTURES / "golden.prom").read_text(encoding="utf-8")
    result = promtool_check_metrics(text)
    assert result.returncode == 0, result.stdout + result.stderr


def test_past_max_staleness_the_job_gauges_go_and_the_counters_stay_as_they_were() -> None:
    rig = polled()
    golden = blocks((FIXTURES / "golden.prom").read_text(encoding="utf-8"))
    stale = blocks(metrics(rig, T + 20_120 + 300))  # max_staleness: 300 s
    assert stale == {name: text for name, text in golden.items() if name not in GAUGES}
    assert {"sugon_jobs_ended", "sugon_job_cpu_seconds", "sugon_user_job_cpu_seconds"} <= set(stale)
