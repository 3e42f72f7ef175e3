"""The optional state file: first-seen times and run times that survive a restart. Written atomically; never
fatal."""

from __future__ import annotations

import json
import logging
import math
import os
import re
import tempfile
from typing import Any

log = logging.getLogger(__name__)

VERSION = 1
TEMP_PREFIX = ".sugon-exporter-state."  # a temporary file while writing: .sugon-exporter-state.<name>.<random>
# Earlier versions named their temporary files without <name>: the prefix and 8 random characters.
_OLD_TEMP = re.compile(r"^\.sugon-exporter-state\.[a-z0-9_]{8}$")


def _times(value: Any) -> dict[str, float]:
    if not isinstance(value, dict):
        return {}
    return {
        k: float(v)
        for k, v in value.items()
        if isinstance(k, str) and isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    }


def _run_seconds(value: Any) -> dict[str, float]:
    """Run seconds by job key: whole and not negative, kept as ints (exact; an int is a float to mypy)."""
    return {k: int(v) for k, v in _times(value).items() if v >= 0}


class StateFile:
    """One JSON file holding a section per cluster: ``{"version": 1, "clusters": {name: {"waiting_since": ...,
    "queues_seen": ..., "run_seconds": ...}}}``. ``run_seconds`` (job key → its last run seconds) came later:
    a section without it loads with none.

    Several clusters may share one file; all writes happen on the pollers' single event-loop thread.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._clusters: dict[str, dict[str, dict[str, float]]] = {}
        self._failing = False
        self._folder = os.path.dirname(os.path.abspath(path))
        self._prefix = f"{TEMP_PREFIX}{os.path.basename(path)}."
        self._remove_stale_temporaries()
        self._load()

    def _remove_stale_temporaries(self) -> None:
        """Remove what a kill during a write left: temporary files of this state file (one process owns it)."""
        try:
            names = os.listdir(self._folder)
        except OSError:
            return  # reported when the file is read or written
        for name in names:
            if name.startswith(self._prefix) or _OLD_TEMP.match(name):
                try:
                    os.unlink(os.path.join(self._folder, name))
                except OSError as exc:
                    log.warning(
                        "state_file: cannot remove the stale temporary file %s (%s)",
                        name,
                        exc.strerror,
                        extra={"file": os.path.join(self._folder, name), "reason": exc.strerror},
                    )
                else:
                    log.info(
                        "state_file: removed %s, left by an interrupted write",
                        name,
                        extra={"file": os.path.join(self._folder, name)},
                    )

    def _load(self) -> None:
        try:
            with open(self.path, encoding="utf-8") as handle:
                data = json.load(handle)
        except FileNotFoundError:
            log.info(
                "state_file %s does not exist yet; starting with no memory of earlier runs",
                self.path,
                extra={"file": self.path},
            )
            return
        except (OSError, ValueError) as exc:
            reason = getattr(exc, "strerror", None) or str(exc)
            log.warning(
                "state_file %s cannot be read (%s); starting fresh",
                self.path,
                reason,
                extra={"file": self.path, "reason": reason},
            )
            return
        if not isinstance(data, dict) or data.get("version") != VERSION or not isinstance(data.get("clusters"), dict):
            log.warning(
                "state_file %s is not a sugon-exporter state file of version %d; starting fresh",
                self.path,
                VERSION,
                extra={"file": self.path},
            )
            return
        for name, section in data["clusters"].items():
            if isinstance(name, str) and isinstance(section, dict):
                self._clusters[name] = {
                    "waiting_since": _times(section.get("waiting_since")),
                    "queues_seen": _times(section.get("queues_seen")),
                    "run_seconds": _run_seconds(section.get("run_seconds")),
                }

    def waiting_since(self, cluster: str) -> dict[str, float]:
        """Saved first-waiting times of a cluster's jobs, by job key."""
        return dict(self._clusters.get(cluster, {}).get("waiting_since", {}))

    def queues_seen(self, cluster: str) -> dict[str, float]:
        """Saved last-seen times of a cluster's queues."""
        return dict(self._clusters.get(cluster, {}).get("queues_seen", {}))

    def run_seconds(self, cluster: str) -> dict[str, int]:
        """Saved run seconds of a cluster's started jobs, by job key."""
        return {k: int(v) for k, v in self._clusters.get(cluster, {}).get("run_seconds", {}).items()}

    def save(
        self,
        cluster: str,
        waiting_since: dict[str, float],
        queues_seen: dict[str, float],
        run_seconds: dict[str, int] | None = None,
    ) -> None:
        """Replace a cluster's section and rewrite the file atomically (temporary file, then rename)."""
        runs: dict[str, float] = dict(run_seconds or {})
        self._clusters[cluster] = {"waiting_since": waiting_since, "queues_seen": queues_seen, "run_seconds": runs}
        try:
            fd, tmp = tempfile.mkstemp(prefix=self._prefix, dir=self._folder)
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as handle:
                    json.dump({"version": VERSION, "clusters": self._clusters}, handle, separators=(",", ":"))
                    handle.flush()
                    os.fsync(handle.fileno())
                os.replace(tmp, self.path)
            except BaseException:
                os.unlink(tmp)
                raise
            _sync_folder(self._folder)  # the rename itself survives a crash only once the folder is on disk
        except OSError as exc:
            if not self._failing:
                log.warning(
                    "state_file %s cannot be written (%s); first-seen and run times will not survive a restart",
                    self.path,
                    exc.strerror or exc,
                    extra={"file": self.path, "reason": exc.strerror or str(exc)},
                )
            self._failing = True
            return
        if self._failing:
            log.info("state_file %s is writable again", self.path, extra={"file": self.path})
        self._failing = False


def _sync_folder(folder: str) -> None:
    """fsync a directory, so that a rename in it is durable."""
    fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
