"""Queue capacity, polled in a loop of its own (every capacity_interval), so that it never delays the job data;
a failure never touches the job data either."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import replace

from exporter.groups.capacity import capacity_families
from exporter.groups.own import Own
from exporter.logs import Fields
from exporter.model import QueueCapacity, Served
from exporter.queues import QueueBudget, add_capacity
from exporter.render import Exposition
from exporter.sugon.conversation import ApiError
from exporter.sugon.discovery import Endpoint
from exporter.sugon.joblist import SugonClient
from exporter.values import jwt_payload

log = logging.getLogger(__name__)


class CapacityPoller:
    """Polls one cluster's queue capacity as ``username`` (empty: the account /center or the token names)."""

    def __init__(
        self,
        name: str,
        client: SugonClient,
        endpoint: Endpoint,
        exposition: Exposition,
        own: Own,
        queues: QueueBudget,
        max_staleness: float,
        username: str = "",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.name = name
        self._log = Fields(log, {"cluster": name})
        self.client = client
        self._endpoint = endpoint
        self._exposition = exposition
        self._own = own
        self._queues = queues
        self._username = username
        self._clock = clock
        self.max_staleness = max_staleness
        self.raw: dict[str, QueueCapacity] | None = None  # the last capacity poll's queues, before naming
        self._failing: str | None = None

    def named(self, previous: Served | None) -> Served | None:
        """The capacity families, named as the job data now is (new families only when the names changed)."""
        if previous is None or self.raw is None:
            return previous
        families = tuple(capacity_families(self.name, self._queues.capacity_view(self.raw)))
        if [f.samples for f in families] == [f.samples for f in previous.families]:
            return previous
        return replace(previous, families=families)

    async def _account(self) -> str | None:
        if self._username:
            return self._username
        if self._endpoint.user_name:
            return self._endpoint.user_name
        claims = jwt_payload(await self.client.tokens.get())
        for claim in ("computeUser", "user"):
            value = claims.get(claim)
            if isinstance(value, str) and value.strip():
                return value.strip()
        return None

    async def poll_once(self) -> bool:
        """Read the queue capacity of every scheduler and publish it; a failure never touches the job data."""
        try:
            sids = await self._endpoint.scheduler_ids()
            username = await self._account()
            if username is None:
                self._failed("no username", "set username: neither /center nor the token names the account")
                return False
            queues: dict[str, QueueCapacity] = {}
            for sid in sids:
                for queue, cap in (await self.client.queue_capacity(username, sid)).items():
                    if not self._queues.is_excluded(queue):
                        queues[queue] = add_capacity(queues.get(queue), cap)
        except ApiError as exc:
            self._failed(exc.reason, str(exc))
            return False
        except Exception:  # a bug must not kill the loop; its traceback is logged once, not every poll
            internal = {"cluster": self.name, "reason": "internal"}
            if self._failing != "internal":
                log.exception("cluster %s: unexpected error during the capacity poll", self.name, extra=internal)
            else:
                self._log.debug(
                    "cluster %s: unexpected error during the capacity poll, again",
                    self.name,
                    exc_info=True,
                    extra=internal,
                )
            self._failing = "internal"
            return False
        now = self._clock()
        if self._failing:
            self._log.info("cluster %s: queue capacity available again", self.name)
        self._failing = None
        self.raw = queues
        families = tuple(capacity_families(self.name, self._queues.capacity_view(queues)))
        capacity = Served(taken_at=now, expires_at=now + self.max_staleness, families=families)
        self._exposition.publish(
            replace(self._exposition.get(self.name), capacity=capacity, own=tuple(self._own.families()))
        )
        return True

    def _failed(self, reason: str, message: str) -> None:
        self._exposition.publish(replace(self._exposition.get(self.name), own=tuple(self._own.families())))
        if self._failing != reason:
            self._log.warning(
                "cluster %s: queue capacity poll failed (%s): %s", self.name, reason, message, extra={"reason": reason}
            )
        self._failing = reason
