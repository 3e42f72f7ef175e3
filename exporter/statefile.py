"""The optional state file: what a restart keeps of each cluster. Written atomically; never fatal.

A file that cannot be read or decoded, or that holds anything of another shape anywhere, is ignored whole
with a warning: the exporter starts fresh, as it does without one.
"""

from __future__ import annotations

import datetime
import logging
import os
import re
import tempfile
from typing import Annotated, Literal

import msgspec
from prometheus_client.core import Metric

from exporter.groups.users import SavedUsers
from exporter.model import Served

log = logging.getLogger(__name__)

TEMP_PREFIX = ".sugon-exporter-state."  # a temporary file while writing: .sugon-exporter-state.<name>.<random>
# Earlier versions named their temporary files without <name>: the prefix and 8 random characters.
_OLD_TEMP = re.compile(r"^\.sugon-exporter-state\.[a-z0-9_]{8}$")
_EPOCH = datetime.date(1970, 1, 1)
# Numbers a double holds exactly; NaN and the infinities are not JSON, so the decoder refuses them.
Time = Annotated[float, msgspec.Meta(ge=-(2**53), le=2**53)]
Count = Annotated[int, msgspec.Meta(ge=0, le=2**53)]


class _Users(msgspec.Struct):
    day: datetime.date
    named: list[str]
    cpu_seconds: dict[datetime.date, dict[str, Count]]


class _Gauges(msgspec.Struct):
    taken_at: Time
    families: list[tuple[str, str, list[tuple[dict[str, str], Time]]]]  # [name, help, [[labels, value], ...]]


class _Section(msgspec.Struct):
    waiting_since: dict[str, Time] = {}
    queues_seen: dict[str, Time] = {}
    run_seconds: dict[str, Count] = {}  # these and the later keys may be missing from an earlier version's file
    users: _Users | None = None
    gauges: _Gauges | None = None


class _File(msgspec.Struct):
    version: Literal[1]
    clusters: dict[str, _Section]


def _date(days: int) -> datetime.date:
    return _EPOCH + datetime.timedelta(days=days)


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
        self._clusters: dict[str, _Section] = {}
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
                self._clusters = msgspec.json.decode(handle.read(), type=_File).clusters
        except FileNotFoundError:
            log.info(
                "state_file %s does not exist yet; starting with no memory of earlier runs",
                self.path,
                extra={"file": self.path},
            )
        # Whatever the file holds (a wrong shape anywhere, bytes that are not UTF-8, JSON nested deeper than the
        # decoder goes), a start must never fail on it.
        except Exception as exc:  # noqa: BLE001 - the reason is logged; the file is ignored whole
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else f"{type(exc).__name__}: {exc}"
            log.warning(
                "state_file %s cannot be read (%.200s); starting fresh",
                self.path,
                reason,
                extra={"file": self.path, "reason": reason[:200]},
            )

    def _section(self, cluster: str) -> _Section:
        return self._clusters.get(cluster) or _Section()

    def waiting_since(self, cluster: str) -> dict[str, float]:
        """Saved first-waiting times of a cluster's jobs, by job key."""
        return dict(self._section(cluster).waiting_since)

    def queues_seen(self, cluster: str) -> dict[str, float]:
        """Saved last-seen times of a cluster's queues."""
        return dict(self._section(cluster).queues_seen)

    def run_seconds(self, cluster: str) -> dict[str, int]:
        """Saved run seconds of a cluster's started jobs, by job key."""
        return dict(self._section(cluster).run_seconds)

    def users(self, cluster: str) -> SavedUsers | None:
        """Saved named users and daily CPU-seconds by user of a cluster, if any."""
        users = self._section(cluster).users
        if users is None:
            return None
        days = {(day - _EPOCH).days: by_user for day, by_user in users.cpu_seconds.items()}
        return SavedUsers((users.day - _EPOCH).days, tuple(users.named), days)

    def gauges(self, cluster: str, max_staleness: float) -> Served | None:
        """The job gauges of a cluster's last successful poll, if saved: served until ``max_staleness`` after
        they were taken."""
        gauges = self._section(cluster).gauges
        if gauges is None:
            return None
        families = []
        for name, documentation, samples in gauges.families:
            family = Metric(name, documentation, "gauge")
            for labels, value in samples:
                family.add_sample(name, labels, value)
            families.append(family)
        return Served(gauges.taken_at, gauges.taken_at + max_staleness, tuple(families))

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
        self._clusters[cluster] = _Section(
            waiting_since,
            queues_seen,
            dict(run_seconds or {}),
            users=None
            if users is None
            else _Users(
                _date(users.day),
                list(users.named),
                {_date(d): dict(by_user) for d, by_user in users.cpu_seconds.items()},
            ),
            gauges=None
            if gauges is None
            else _Gauges(
                gauges.taken_at,
                [
                    (f.name, f.documentation, [(dict(s.labels), s.value) for s in f.samples])
                    for f in gauges.families
                    if f.type == "gauge"
                ],
            ),
        )
        try:
            fd, tmp = tempfile.mkstemp(prefix=self._prefix, dir=self._folder)
            try:
                with os.fdopen(fd, "wb") as handle:
                    handle.write(msgspec.json.encode(_File(1, self._clusters)))
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
