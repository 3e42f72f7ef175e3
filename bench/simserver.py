"""Run the simulator as its own process for benchmarks and the soak: prints its URL and serves until SIGTERM.
SIGUSR1 stops injecting faults and writes what was injected (JSON) to --stats, and so does SIGTERM."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading

from exporter.simulator import Simulator
from exporter.simulator.faults import ALL


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--jobs", type=int, default=2000)
    p.add_argument("--max-page", type=int, default=100)
    p.add_argument("--latency", type=float, default=0.0, help="seconds added to every request")
    p.add_argument("--evolve", type=float, default=0.0, help="step the population every N seconds (0: never)")
    p.add_argument("--faults", default="", help="comma-separated fault kinds to inject at random")
    p.add_argument("--fault-probability", type=float, default=0.0)
    p.add_argument("--hang-seconds", type=float, default=5.0)
    p.add_argument("--stats", help="write {'injected': {...}, 'requests': N, 'max_in_flight': N} here on exit")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--queues", type=int, default=0, help="spread --jobs over this many queues (0: the usual four)")
    args = p.parse_args()
    kinds = tuple(k for k in args.faults.split(",") if k)
    unknown = set(kinds) - set(ALL)
    if unknown:
        print(f"unknown faults: {sorted(unknown)}", file=sys.stderr)
        return 2
    seeded = 0 if args.queues else args.jobs
    sim = Simulator(token="bench-token", jobs=seeded, max_page=args.max_page, latency=args.latency, seed=args.seed)
    for i in range(args.jobs if args.queues else 0):  # one queue name after another, running and queued
        sim.add_jobs(1, queue=f"q{i % args.queues:06d}", status="statR" if i % 2 else "statQ")
    sim.hang_seconds = args.hang_seconds
    sim.faults.at_random(kinds, args.fault_probability)
    print(sim.serve(), flush=True)
    if args.evolve:
        sim.start_evolving(args.evolve)

    def write_stats() -> None:
        if args.stats:
            with open(args.stats, "w") as handle:
                json.dump(
                    {
                        "injected": dict(sim.faults.injected),
                        "requests": sim.requests,
                        "max_in_flight": sim.max_in_flight,
                    },
                    handle,
                )

    def quiet(*_: object) -> None:
        sim.faults.clear()
        write_stats()

    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    signal.signal(signal.SIGUSR1, quiet)
    done.wait()
    sim.stop()
    write_stats()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
