"""The installed package, not the checkout: what `pip install .` puts on a machine must run on its own."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SOURCE = Path(__file__).parent.parent / "exporter"


def test_the_installed_package_runs_the_demo_once_from_outside_the_checkout(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    probe = subprocess.run(
        [sys.executable, "-c", "import exporter, sys; sys.stdout.write(exporter.__file__)"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert probe.returncode == 0, "exporter is not installed: run the README's test command (pip install '.[test]')"
    installed = Path(probe.stdout).parent
    assert installed != SOURCE, "the checkout itself is on sys.path; this test needs the installed package"
    missing = sorted(
        str(p.relative_to(SOURCE)) for p in SOURCE.rglob("*.py") if not (installed / p.relative_to(SOURCE)).exists()
    )
    assert not missing, f"not installed (is the package list in pyproject.toml complete?): {missing}"
    r = subprocess.run(
        [sys.executable, "-m", "exporter", "--demo", "--once"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert r.returncode == 0, r.stderr
    assert 'sugon_up{hpc_cluster="demo-kunshan"} 1.0' in r.stdout
