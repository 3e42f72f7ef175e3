"""The optional state file: what a restart keeps of each cluster. Written atomically; never fatal.

A file that cannot be read or decoded, or that holds anything of another shape anywhere, is ignored whole
with a warning: the exporter starts fresh, as it does without one.
"""

from __future__ import annotations

import datetime
import json
import logging
import math
import os
import re
import tempfile
from typing import Any

from prometheus_client.core import Metric

from exporter.groups.users import SavedUsers
from exporter.model import Served

log = logging.getLogger(__name__)

VERSION = 1
TEMP_PREFIX = ".sugon-exporter-state."  # a temporary file while writing: .sugon-exporter-state.<name>.<random>
# Earlier versions named their temporary files without <name>: the prefix and 8 random characters.
_OLD_TEMP = re.compile(r"^\.sugon-exporter-state\.[a-z0-9_]{8}$")
_EXACT = 2**53  # a number above this is not kept: a float no longer holds every integer
_EPOCH = datetime.date(1970, 1, 1)


class BadShape(ValueError):
    """A value of the file is not what the exporter writes there; the message names where."""


def _number(value: Any, where: str, key: str | None = None) -> float:
    """A finite JSON number (not a boolean) within ±2**53; ``where`` and ``key`` name it in the error."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise BadShape(f"{_at(where, key)}: expected a number")
    if isinstance(value, int) and abs(value) > _EXACT or isinstance(value, float) and not math.isfinite(value):
        raise BadShape(f"{_at(where, key)}: {value!r:.40} is out of range")
    return float(value)


def _count(value: Any, where: str, key: str | None = None) -> int:
    """A whole number, not negative (3600.0 is 3600)."""
    number = _number(value, where, key)
    if number < 0 or number != int(number):
        raise BadShape(f"{_at(where, key)}: expected a whole number not below 0")
    return int(number)


def _at(where: str, key: str | None) -> str:
    return where if key is None else f"{where}.{key}"


def _object(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise BadShape(f"{where}: expected an object")
    return value


def _times(value: Any, where: str) -> dict[str, float]:
    return {k: _number(v, where, k) for k, v in _object(value, where).items()}


def _counts(value: Any, where: str) -> dict[str, int]:
    return {k: _count(v, where, k) for k, v in _object(value, where).items()}


def _day(value: Any, where: str) -> int:
    """A UTC day written as 2024-05-01, as days since 1970-01-01."""
    try:
        return (datetime.date.fromisoformat(value) - _EPOCH).days
    except (TypeError, ValueError):
        raise BadShape(f"{where}: expected a date like 2024-05-01") from None


def _day_text(day: int) -> str:
    return (_EPOCH + datetime.timedelta(days=day)).isoformat()


def _users(value: Any, where: str) -> SavedUsers:
    section = _object(value, where)
    named = section.get("named")
    if not isinstance(named, list) or not all(isinstance(user, str) for user in named):
        raise BadShape(f"{where}.named: expected a list of names")
    days = _object(section.get("cpu_seconds"), f"{where}.cpu_seconds")
    return SavedUsers(
        _day(section.get("day"), f"{where}.day"),
        tuple(named),
        {
            _day(day, f"{where}.cpu_seconds"): _counts(by_user, f"{where}.cpu_seconds.{day}")
            for day, by_user in days.items()
        },
    )


def _users_json(users: SavedUsers) -> dict[str, Any]:
    return {
        "day": _day_text(users.day),
        "named": list(users.named),
        "cpu_seconds": {_day_text(day): dict(by_user) for day, by_user in users.cpu_seconds.items()},
    }


def _name(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise BadShape(f"{where}: expected a name")
    return value


def _gauges(value: Any, where: str) -> Served:
    """The saved job gauges of a poll: families of gauges, expiring when they were taken."""
    saved = _object(value, where)
    taken_at = _number(saved.get("taken_at"), where, "taken_at")
    families = saved.get("families")
    if not isinstance(families, list):
        raise BadShape(f"{where}.families: expected a list")
    out = []
    for i, item in enumerate(families):
        at = f"{where}.families[{i}]"
        if not (isinstance(item, list) and len(item) == 3 and isinstance(item[2], list)):
            raise BadShape(f"{at}: expected [name, help, samples]")
        name, documentation = _name(item[0], at), _name(item[1], at)
        family = Metric(name, documentation, "gauge")
        for sample in item[2]:
            if not (isinstance(sample, list) and len(sample) == 2):
                raise BadShape(f"{at}: expected samples as [labels, value]")
            labels = _object(sample[0], at)
            family.add_sample(name, {k: _name(v, at) for k, v in labels.items()}, _number(sample[1], at))
        out.append(family)
    return Served(taken_at=taken_at, expires_at=taken_at, families=tuple(out))


def _gauges_json(served: Served) -> dict[str, Any]:
    return {
        "taken_at": served.taken_at,
        "families": [
            [family.name, family.documentation, [[dict(s.labels), s.value] for s in family.samples]]
            for family in served.families
            if family.type == "gauge"
        ],
    }


def _section(value: Any, where: str) -> dict[str, Any]:
    """A cluster's section, checked whole (BadShape otherwise); the keys an earlier version did not write
    may be missing."""
    section = _object(value, where)
    checked = {
        "waiting_since": _times(section.get("waiting_since", {}), f"{where}.waiting_since"),
        "queues_seen": _times(section.get("queues_seen", {}), f"{where}.queues_seen"),
        "run_seconds": _counts(section.get("run_seconds", {}), f"{where}.run_seconds"),
    }
    if "users" in section:
        checked["users"] = _users_json(_users(section["users"], f"{where}.users"))
    if "gauges" in section:
        checked["gauges"] = _gauges_json(_gauges(section["gauges"], f"{where}.gauges"))
    return checked


def _sections(data: Any) -> dict[str, dict[str, Any]]:
    """Every cluster's section of a decoded file, checked (BadShape otherwise)."""
    if not isinstance(data, dict) or data.get("version") != VERSION:
        raise BadShape(f"not a sugon-exporter state file of version {VERSION}")
    clusters = _object(data.get("clusters"), "clusters")
    return {name: _section(section, f"clusters.{name}") for name, section in clusters.items()}


class StateFile:
    """One JSON file holding a section per cluster::

        {"version": 1, "clusters": {name: {"waiting_since": {job key: first seen waiting},
                                           "queues_seen": {queue: last seen},
                                           "run_seconds": {job key: its last run seconds},
                                           "users": {"day": "2024-05-01", "named": [user, ...],
                                                     "cpu_seconds": {"2024-04-30": {user: CPU-seconds}}},
                                           "gauges": {"taken_at": Unix time, "families": [[name, help,
                                                      [[labels, value], ...]], ...]}}}}

    ``run_seconds``, ``users`` (the named users and each user's CPU-seconds by UTC day, see UserNames) and
    ``gauges`` (the job gauges of the last successful poll) came later: a section without them loads with
    none. A section's ``jobs`` (the job gauges as an earlier version wrote them) is not read.

    Several clusters may share one file; all writes happen on the pollers' single event-loop thread.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._clusters: dict[str, dict[str, Any]] = {}
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
            with open(self.path, "rb") as handle:
                self._clusters = _sections(json.loads(handle.read().decode("utf-8")))
        except FileNotFoundError:
            log.info(
                "state_file %s does not exist yet; starting with no memory of earlier runs",
                self.path,
                extra={"file": self.path},
            )
        # Whatever the file holds: JSON nested deeper than the decoder goes (RecursionError), bytes that are not
        # UTF-8, a wrong shape anywhere. A start must never fail on it.
        except Exception as exc:  # noqa: BLE001 - the reason is logged; the file is ignored whole
            if isinstance(exc, OSError):
                reason = exc.strerror or str(exc)
            else:
                reason = str(exc) if isinstance(exc, BadShape) else f"{type(exc).__name__}: {exc}"
            log.warning(
                "state_file %s cannot be read (%.200s); starting fresh",
                self.path,
                reason,
                extra={"file": self.path, "reason": reason[:200]},
            )
            self._clusters = {}

    def waiting_since(self, cluster: str) -> dict[str, float]:
        """Saved first-waiting times of a cluster's jobs, by job key."""
        return dict(self._clusters.get(cluster, {}).get("waiting_since", {}))

    def queues_seen(self, cluster: str) -> dict[str, float]:
        """Saved last-seen times of a cluster's queues."""
        return dict(self._clusters.get(cluster, {}).get("queues_seen", {}))

    def run_seconds(self, cluster: str) -> dict[str, int]:
        """Saved run seconds of a cluster's started jobs, by job key."""
        return dict(self._clusters.get(cluster, {}).get("run_seconds", {}))

    def users(self, cluster: str) -> SavedUsers | None:
        """Saved named users and daily CPU-seconds by user of a cluster, if any."""
        users = self._clusters.get(cluster, {}).get("users")
        return None if users is None else _users(users, "users")

    def gauges(self, cluster: str, max_staleness: float) -> Served | None:
        """The job gauges of a cluster's last successful poll, if saved: served until ``max_staleness`` after
        they were taken."""
        gauges = self._clusters.get(cluster, {}).get("gauges")
        if gauges is None:
            return None
        served = _gauges(gauges, "gauges")
        return Served(taken_at=served.taken_at, expires_at=served.taken_at + max_staleness, families=served.families)

    def save(
        self,
        cluster: str,
        waiting_since: dict[str, float],
        queues_seen: dict[str, float],
        run_seconds: dict[str, int] | None = None,
        *,
        users: SavedUsers | None = None,
        gauges: Served | None = None,
    ) -> None:
        """Replace a cluster's section and rewrite the file atomically (temporary file, then rename)."""
        section: dict[str, Any] = {
            "waiting_since": waiting_since,
            "queues_seen": queues_seen,
            "run_seconds": dict(run_seconds or {}),
        }
        if users is not None:
            section["users"] = _users_json(users)
        if gauges is not None:
            section["gauges"] = _gauges_json(gauges)
        self._clusters[cluster] = section
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
                    "state_file %s cannot be written (%s); what it keeps will not survive a restart",
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
