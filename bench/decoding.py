"""Issue 25: decoding a 200k-job poll's pages (2,000 pages of 100 rows, as the simulator writes them) with stdlib
json alone, as the exporter does, against msgspec alone (the pages straight into Row structs, the fields a row is
not counted by skipped), alternately in one run (bench/RESULTS.md).

    python bench/decoding.py [--rounds 7]
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import httpx
import msgspec

from exporter.model import Row
from exporter.simulator import Simulator
from exporter.sugon.conversation import Reply
from exporter.sugon.pages import decode_job_page

SID = "1638523853"


class _Data(msgspec.Struct):
    total: Any
    rows: list[Row | None] = msgspec.field(name="list")


class _Envelope(msgspec.Struct):
    code: Any
    data: _Data


_DECODER = msgspec.json.Decoder(_Envelope)


def msgspec_only(body: bytes) -> list[Row | None]:
    return _DECODER.decode(body).data.rows


def json_only(body: bytes) -> list[Row | None]:
    return decode_job_page(Reply(status_code=200, headers=httpx.Headers(), content=body))[1]


def bodies(jobs: int) -> list[bytes]:
    """The job list's pages of one poll, as the simulator serves them."""
    sim = Simulator(token="t", jobs=jobs, max_page=100, seed=1)
    url = sim.serve()
    try:
        with httpx.Client(headers={"token": "t"}) as client:
            return [
                client.get(
                    url + "/hpc/openapi/v2/jobs", params={"strClusterIDList": SID, "start": s, "limit": 500}
                ).content
                for s in range(0, jobs, 100)
            ]
    finally:
        sim.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    pages = bodies(200_000)
    assert json_only(pages[7]) == msgspec_only(pages[7])  # the same rows either way
    seconds: dict[str, list[float]] = {"json only": [], "msgspec only": []}
    for _ in range(args.rounds):
        for name, decode in (("json only", json_only), ("msgspec only", msgspec_only)):
            started = time.process_time()
            for body in pages:
                decode(body)
            seconds[name].append(time.process_time() - started)
    print(f"{len(pages)} pages, {sum(map(len, pages)) / len(pages) / 1000:.1f} kB each on average")
    for name, spent in seconds.items():
        rounds = ", ".join(f"{s:.3f}" for s in spent)
        print(f"{name}: median {statistics.median(spent):.3f} s CPU a poll ({rounds})")
    saved = statistics.median(a - b for a, b in zip(seconds["json only"], seconds["msgspec only"]))
    print(f"msgspec saves {saved:.3f} s a poll: {saved / 60 * 100:.2f} % of a core at one poll a minute")


if __name__ == "__main__":
    main()
