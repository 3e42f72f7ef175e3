"""The state file's writes: what a kill in the middle leaves is removed at start, and renames are made durable."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from prometheus_client.core import GaugeMetricFamily

from exporter.groups.users import SavedUsers
from exporter.model import Served
from exporter.simulator import Simulator
from exporter.statefile import StateFile

# A child that writes the state file and is killed while it writes: os.replace never comes.
KILLED_WRITER = """
import os, sys, time
from exporter.statefile import StateFile
state = StateFile(sys.argv[1])
def hang(*args):
    print("writing", flush=True)
    time.sleep(60)
os.replace = hang
state.save("kunshan", {"k": 1.0}, {"debug": 2.0})
"""


def test_temporary_files_left_by_a_kill_during_a_write_are_removed_at_start(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    StateFile(str(path)).save("kunshan", {"k": 1.0}, {})
    child = subprocess.Popen(
        [sys.executable, "-c", KILLED_WRITER, str(path)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).parent.parent,
    )
    try:
        assert child.stdout is not None and child.stdout.readline() == "writing\n"
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=10)
    left = [p.name for p in tmp_path.iterdir() if p.name != "state.json"]
    assert len(left) == 1 and left[0].startswith(".sugon-exporter-state.state.json.")
    # Left by an older version (no file name in it), by another state file in the same folder, and not ours.
    (tmp_path / ".sugon-exporter-state.k3j_9xq2").write_text("{")
    (tmp_path / ".sugon-exporter-state.other.json.abc123").write_text("{")
    (tmp_path / "notes.txt").write_text("keep")
    state = StateFile(str(path))
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        ".sugon-exporter-state.other.json.abc123",
        "notes.txt",
        "state.json",
    ]
    assert state.waiting_since("kunshan") == {"k": 1.0}  # the last complete write is what counts


def test_the_folder_is_synced_after_the_rename(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    events: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        events.append("fsync folder" if stat.S_ISDIR(os.fstat(fd).st_mode) else "fsync file")
        real_fsync(fd)

    def replace(src: str, dst: str) -> None:
        events.append("rename")
        real_replace(src, dst)

    state = StateFile(str(tmp_path / "state.json"))
    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    state.save("kunshan", {}, {"debug": time.time()})
    assert events == ["fsync file", "rename", "fsync folder"]
    assert json.loads((tmp_path / "state.json").read_text())["clusters"]["kunshan"]["waiting_since"] == {}


def test_run_seconds_are_kept_per_cluster_and_a_file_written_before_them_still_loads(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    StateFile(str(path)).save("kunshan", {"w": 1.0}, {"debug": 2.0}, {"r": 3600, "s": 5})
    again = StateFile(str(path))
    assert again.run_seconds("kunshan") == {"r": 3600, "s": 5}
    assert again.run_seconds("wuxi") == {}
    # An earlier version's file: no run_seconds.
    path.write_text(
        json.dumps({"version": 1, "clusters": {"kunshan": {"waiting_since": {"w": 1.0}, "queues_seen": {}}}})
    )
    old = StateFile(str(path))
    assert (old.run_seconds("kunshan"), old.waiting_since("kunshan")) == ({}, {"w": 1.0})
    assert (old.queues_seen("kunshan"), old.queues_seen("wuxi")) == ({}, {})


def test_the_named_users_and_their_daily_cpu_seconds_are_kept_as_plain_json(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    users = SavedUsers(19_676, ("alice", "bob"), {19_675: {"alice": 3600}, 19_676: {"bob": 60}})
    StateFile(str(path)).save("kunshan", {}, {}, {}, users=users)
    assert json.loads(path.read_text())["clusters"]["kunshan"]["users"] == {
        "day": "2023-11-15",
        "named": ["alice", "bob"],
        "cpu_seconds": {"2023-11-14": {"alice": 3600}, "2023-11-15": {"bob": 60}},
    }
    again = StateFile(str(path))
    assert (again.users("kunshan"), again.users("wuxi")) == (users, None)


def test_the_last_polls_job_gauges_are_kept_and_come_back_served_until_max_staleness_later(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    jobs = GaugeMetricFamily("sugon_jobs", "Jobs.", labels=["hpc_cluster", "queue", "status"])
    jobs.add_metric(["kunshan", "debug", "running"], 3)
    jobs.add_metric(["kunshan", 'd"e\nb', "queued"], 4)
    nodes = GaugeMetricFamily("sugon_nodes_in_use", "Nodes.", labels=["hpc_cluster"])
    nodes.add_metric(["kunshan"], 2)
    served = Served(taken_at=1_700_000_000.5, expires_at=1_700_000_300.5, families=(jobs, nodes))
    StateFile(str(path)).save("kunshan", {}, {}, {}, gauges=served)
    saved = json.loads(path.read_text())["clusters"]["kunshan"]["gauges"]
    assert saved["taken_at"] == 1_700_000_000.5
    assert saved["families"][0] == [
        "sugon_jobs",
        "Jobs.",
        [
            [{"hpc_cluster": "kunshan", "queue": "debug", "status": "running"}, 3.0],
            [{"hpc_cluster": "kunshan", "queue": 'd"e\nb', "status": "queued"}, 4.0],
        ],
    ]
    again = StateFile(str(path)).gauges("kunshan", 60)
    assert again is not None and (again.taken_at, again.expires_at) == (1_700_000_000.5, 1_700_000_060.5)
    assert [(f.name, f.documentation, f.type, f.samples) for f in again.families] == [
        (f.name, f.documentation, f.type, f.samples) for f in (jobs, nodes)
    ]
    assert StateFile(str(path)).gauges("wuxi", 60) is None


@pytest.mark.parametrize(
    "content",
    [b"[" * 100_000, b'{"version": 1, "clusters": {"sim": {"queues_seen": {"\xff": 1}}}}'],
    ids=["nested", "not-utf8"],
)
def test_a_real_start_with_a_state_file_nested_100000_deep_or_not_utf8_warns_and_works(
    tmp_path: Path, content: bytes
) -> None:
    """It used to raise RecursionError at every start: exit 1, a crash loop under systemd."""
    state = tmp_path / "state.json"
    state.write_bytes(content)
    config = tmp_path / "config.yaml"
    sim = Simulator(token="t", jobs=30)
    sim.serve()
    try:
        config.write_text(
            f"state_file: {state}\nclusters:\n  - name: sim\n    api_url: {sim.url}\n    token: t\n"
            "    cluster_ids: [1638523853]\n"
        )
        done = subprocess.run(
            [sys.executable, "-m", "exporter", "--config", str(config), "--once"],
            check=False,
            capture_output=True,
            text=True,
            timeout=120,
            cwd=Path(__file__).parent.parent,
        )
    finally:
        sim.stop()
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    assert f"state_file {state} cannot be read (" in done.stderr and "); starting fresh" in done.stderr
    assert 'sugon_up{hpc_cluster="sim"} 1.0' in done.stdout
    assert json.loads(state.read_text())["clusters"]["sim"]["queues_seen"] != {}  # written afresh by the poll
