"""The optional state file: first-seen times that survive a restart. Written atomically; never fatal."""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
from typing import Any

log = logging.getLogger(__name__)

VERSION = 1


def _times(value: Any) -> dict[str, float]:
    if not isinstance(value, dict):
        return {}
    return {
        k: float(v)
        for k, v in value.items()
        if isinstance(k, str) and isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    }


class StateFile:
    """One JSON file holding a section per cluster: ``{"version": 1, "clusters": {name: {"waiting_since": ..., "queues_seen": ...}}}``.

    Several clusters may share one file; all writes happen on the pollers' single event-loop thread.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._clusters: dict[str, dict[str, dict[str, float]]] = {}
        self._failing = False
        self._load()

    def _load(self) -> None:
        try:
            with open(self.path, encoding="utf-8") as handle:
                data = json.load(handle)
        except FileNotFoundError:
            log.info("state_file %s does not exist yet; starting with no memory of earlier runs", self.path)
            return
        except (OSError, ValueError) as exc:
            log.warning(
                "state_file %s cannot be read (%s); starting fresh", self.path, getattr(exc, "strerror", None) or exc
            )
            return
        if not isinstance(data, dict) or data.get("version") != VERSION or not isinstance(data.get("clusters"), dict):
            log.warning(
                "state_file %s is not a sugon-exporter state file of version %d; starting fresh", self.path, VERSION
            )
            return
        for name, section in data["clusters"].items():
            if isinstance(name, str) and isinstance(section, dict):
                self._clusters[name] = {
                    "waiting_since": _times(section.get("waiting_since")),
                    "queues_seen": _times(section.get("queues_seen")),
                }

    def waiting_since(self, cluster: str) -> dict[str, float]:
        """Saved first-waiting times of a cluster's jobs, by job key."""
        return dict(self._clusters.get(cluster, {}).get("waiting_since", {}))

    def queues_seen(self, cluster: str) -> dict[str, float]:
        """Saved last-seen times of a cluster's queues."""
        return dict(self._clusters.get(cluster, {}).get("queues_seen", {}))

    def save(self, cluster: str, waiting_since: dict[str, float], queues_seen: dict[str, float]) -> None:
        """Replace a cluster's section and rewrite the file atomically (temporary file, then rename)."""
        self._clusters[cluster] = {"waiting_since": waiting_since, "queues_seen": queues_seen}
        folder = os.path.dirname(os.path.abspath(self.path))
        try:
            fd, tmp = tempfile.mkstemp(prefix=".sugon-exporter-state.", dir=folder)
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as handle:
                    json.dump({"version": VERSION, "clusters": self._clusters}, handle, separators=(",", ":"))
                    handle.flush()
                    os.fsync(handle.fileno())
                os.replace(tmp, self.path)
            except BaseException:
                os.unlink(tmp)
                raise
        except OSError as exc:
            if not self._failing:
                log.warning(
                    "state_file %s cannot be written (%s); first-seen times will not survive a restart",
                    self.path,
                    exc.strerror or exc,
                )
            self._failing = True
            return
        if self._failing:
            log.info("state_file %s is writable again", self.path)
        self._failing = False
