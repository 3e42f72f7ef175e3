"""The installed package, not the checkout: what `pip install .` puts on a machine must run on its own."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

SOURCE = Path(__file__).parent.parent / "exporter"
LICENSE = Path(__file__).parent.parent / "LICENSE"
# The MD5 of apache.org's LICENSE-2.0.txt, the figure licence scanners (Yocto's LIC_FILES_CHKSUM among them)
# record for the unmodified Apache License 2.0.
APACHE_2_0_MD5 = "3b83ef96387f14655fc854ddc3c6bd57"
# Prints the installed distribution's licence expression, then the licence file it carries.
LICENCE_PROBE = """
import importlib.metadata, sys
dist = importlib.metadata.distribution("sugon-exporter")
sys.stdout.write(f"{dist.metadata['License-Expression']}\\n{dist.read_text('licenses/LICENSE')}")
"""


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


def test_the_licence_is_the_apache_2_0_text_and_the_installed_metadata_says_so(tmp_path: Path) -> None:
    assert hashlib.md5(LICENSE.read_bytes(), usedforsecurity=False).hexdigest() == APACHE_2_0_MD5
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    probe = subprocess.run(
        [sys.executable, "-c", LICENCE_PROBE], cwd=tmp_path, env=env, capture_output=True, text=True, check=False
    )
    assert probe.returncode == 0, probe.stderr
    expression, _, text = probe.stdout.partition("\n")
    assert expression == "Apache-2.0"
    assert text == LICENSE.read_text()
