"""What the pollers publish and the collector and web pages read: one immutable ClusterState per cluster."""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from types import MappingProxyType

from exporter.model import ClusterState


class StateStore:
    """Holds the latest ClusterState of every cluster; publishing swaps one reference, so readers never lock."""

    def __init__(self, names: list[str]) -> None:
        self._states: Mapping[str, ClusterState] = MappingProxyType({n: ClusterState(n) for n in names})
        # Called with each state before it is published (the exposition renders it ahead of scrapes).
        self.prepare: Callable[[ClusterState], None] | None = None

    def publish(self, state: ClusterState) -> None:
        """Replace one cluster's state (each cluster has a single writer, its poller)."""
        if self.prepare is not None:
            self.prepare(state)
        self._states = MappingProxyType({**self._states, state.name: state})

    def set_clusters(self, names: list[str], keep: Collection[str]) -> None:
        """Make ``names`` the clusters, in that order: those in ``keep`` keep their state, others start afresh
        (a configuration reload); clusters not named leave."""
        states = self._states
        self._states = MappingProxyType({n: states[n] if n in keep and n in states else ClusterState(n) for n in names})

    def get(self, name: str) -> ClusterState:
        """One cluster's current state."""
        return self._states[name]

    def states(self) -> Mapping[str, ClusterState]:
        """A consistent view of every cluster's state at this instant."""
        return self._states
