"""Finding the real tools the tests use: on PATH, or beside the interpreter running the tests.

A virtualenv's console scripts (sugon-exporter, hadolint) sit beside ``sys.executable``; when that interpreter
is run directly, without activating the venv, they are not on PATH.
"""

from __future__ import annotations

import os
import shutil
import sys


def find_tool(name: str, hint: str) -> str:
    """The path of ``name``; fails the test with ``hint`` (how to install it) when it is nowhere."""
    beside = shutil.which(name, path=os.path.dirname(sys.executable))
    exe = beside or shutil.which(name)
    assert exe, f"{name} is not installed: {hint} (see .ci/run)"
    return exe
