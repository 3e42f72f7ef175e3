"""Shared test helpers: fixtures on disk, synthetic job rows in the seed's shape, and promtool."""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

FIXTURES = Path(__file__).parent / "fixtures"
SCHEDULER = "1638523853"


def fixture(name: str) -> Any:
    """A canned response body from tests/fixtures/."""
    return json.loads((FIXTURES / name).read_text(encoding="utf-8"))


def seed_row() -> dict[str, Any]:
    """The seed document's running-job row, as a template."""
    return copy.deepcopy(fixture("seed_jobs.json")["data"]["list"][1])


def row(job_id: int | str, status: str = "statR", queue: str = "debug", user: str = "test", cpus: Any = 1,
        scheduler: str = SCHEDULER) -> dict[str, Any]:
    """A seed-shaped row with the fields that matter set."""
    r = seed_row()
    r.update(jobId=str(job_id), jobStatus=status, queue=queue, user=user, procNumUsed=cpus, jobmanagerId=scheduler)
    return r


def envelope(data: Any, code: str = "0", msg: str = "success") -> dict[str, Any]:
    """The API's {code, msg, data} wrapper."""
    return {"code": code, "msg": msg, "data": data}


def promtool_check_metrics(text: str) -> subprocess.CompletedProcess[str]:
    """Run the real ``promtool check metrics`` on an exposition (CI installs Debian's prometheus package)."""
    exe = shutil.which("promtool")
    assert exe, "promtool is not installed: apt-get install prometheus (see .ci/run)"
    return subprocess.run([exe, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60)
