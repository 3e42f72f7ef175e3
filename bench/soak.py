"""Soak: the exporter against the simulator with a 1 s interval and random faults, for a long time.

Samples the exporter process's RSS, threads and open file descriptors every 10 s; at the end checks that
sugon_api_errors_total matches, reason by reason, the faults the simulator injected. Not part of the test
suite. Run from the repository root after `pip install .`:

    python bench/soak.py --minutes 20
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from bench import start_simulator  # bench/bench.py; this script runs from bench/

# Every fault here makes exactly one request fail, with this reason.
FAULTS = {
    "http_500": "http_status",
    "http_502": "http_status",
    "http_503": "http_status",
    "http_504": "http_status",
    "http_429": "http_status",
    "reset": "connection",
    "hang": "timeout",
    "truncated": "invalid_response",
    "html": "invalid_response",
    "data_null": "invalid_response",
    "total_missing": "invalid_response",
    "code_10001": "api_code",
    "code_10013": "api_code",
    "code_10008": "auth",
}


def sample(pid: int) -> tuple[int, int, int]:
    """(RSS in kB, threads, open file descriptors) of a process, from /proc."""
    status = Path(f"/proc/{pid}/status").read_text()
    rss = int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:")))
    threads = int(next(line.split()[1] for line in status.splitlines() if line.startswith("Threads:")))
    return rss, threads, len(os.listdir(f"/proc/{pid}/fd"))


def errors(url: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for fam in text_string_to_metric_families(httpx.get(url, timeout=10).text):
        for s in fam.samples:
            if s.name == "sugon_api_errors_total":
                out[s.labels["reason"]] = s.value
            if s.name in ("sugon_polls_total", "sugon_api_requests_total"):
                out[f"{s.name}{s.labels.get('result', '')}"] = s.value
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=20.0)
    p.add_argument("--fault-probability", type=float, default=0.05)
    p.add_argument("--warm-up", type=float, default=2.0, help="minutes before the flatness baseline")
    p.add_argument("--port", type=int, default=19863)
    args = p.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="sugon-soak-"))
    stats = tmp / "sim.json"
    sim, sim_url = start_simulator(
        "--jobs",
        "2000",
        "--max-page",
        "100",
        "--evolve",
        "1",
        "--faults",
        ",".join(FAULTS),
        "--fault-probability",
        str(args.fault_probability),
        "--hang-seconds",
        "1.5",
        "--stats",
        str(stats),
    )
    config = tmp / "config.yaml"
    config.write_text(
        f'listen_address: "127.0.0.1:{args.port}"\ninterval: 1s\ntimeout: 1s\npage_size: 500\nconcurrency: 1\n'
        f"queue_capacity: true\ncapacity_interval: 5s\nusername: soak\nstate_file: {tmp / 'state.json'}\n"
        f"clusters:\n  - name: soak\n    api_url: {sim_url}\n    token: bench-token\n    cluster_ids: [1638523853]\n"
    )
    log = (tmp / "exporter.log").open("w")
    exporter = subprocess.Popen([sys.executable, "-m", "exporter", "--config", str(config)], stderr=log)
    metrics = f"http://127.0.0.1:{args.port}/metrics"
    samples: list[tuple[float, int, int, int]] = []
    start = time.monotonic()
    try:
        while time.monotonic() - start < args.minutes * 60:
            time.sleep(10)
            assert exporter.poll() is None, "the exporter died"
            samples.append((time.monotonic() - start, *sample(exporter.pid)))
            httpx.get(metrics, timeout=10)  # scrape, as Prometheus would
        sim.send_signal(signal.SIGUSR1)  # stop injecting (the simulator keeps serving)
        time.sleep(5)  # a request already given a fault (a hang lasts 1.5 s) has failed by now
        seen = errors(metrics)
        injected = json.loads(stats.read_text())["injected"]
    finally:
        exporter.terminate()
        exporter.wait(timeout=30)
        log.close()
        if sim.poll() is None:
            sim.kill()
    expected: dict[str, int] = {}
    for kind, n in injected.items():
        expected[FAULTS[kind]] = expected.get(FAULTS[kind], 0) + n
    base = [s for s in samples if s[0] >= args.warm_up * 60]
    rss_growth_mb = (max(s[1] for s in base) - base[0][1]) / 1024
    print(f"## Soak run, {time.strftime('%Y-%m-%d %H:%M %Z')}\n")
    print(
        f"- {args.minutes:g} minutes, 1 s interval, fault probability {args.fault_probability} per job-list request,"
        f" {sum(injected.values())} faults injected, {int(seen.get('sugon_polls_totalsuccess', 0))} polls succeeded,"
        f" {int(seen.get('sugon_polls_totalfailure', 0))} failed, {int(seen.get('sugon_api_requests_total', 0))} requests"
    )
    print(
        f"- RSS after warm-up: {base[0][1] / 1024:.1f} MB → max {max(s[1] for s in base) / 1024:.1f} MB"
        f" (growth {rss_growth_mb:.1f} MB); threads {min(s[2] for s in base)}–{max(s[2] for s in base)};"
        f" open fds {min(s[3] for s in base)}–{max(s[3] for s in base)}"
    )
    print("\n| reason | faults injected | sugon_api_errors_total |\n|---|---|---|")
    ok = rss_growth_mb < 10
    for reason in sorted(set(expected) | {k for k in seen if not k.startswith("sugon_")}):
        got, want = int(seen.get(reason, 0)), expected.get(reason, 0)
        ok &= got == want
        print(f"| {reason} | {want} | {got} |")
    print(
        f"\nResult: {'PASS' if ok else 'FAIL'} (RSS growth < 10 MB after warm-up, every error counter = faults injected)"
    )
    print(f"\nSamples (s, RSS kB, threads, fds): {[s for s in samples[::6]]}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
