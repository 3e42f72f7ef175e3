"""What the pollers publish and the collector and web pages read: one immutable ClusterState per cluster."""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from types import MappingProxyType

from exporter.model import ClusterState

# Called with the publishing cluster's name and every cluster's state as it will be, before readers see it.
BeforePublish = Callable[[str, Mapping[str, ClusterState]], None]


class StateStore:
    """Holds the latest ClusterState of every cluster; publishing swaps one reference, so readers never lock.

    ``before_publish`` runs in the publishing thread before the new state becomes visible: the cached
    exposition renders it there (CachedExposition.render_ahead), so that scrapes find it ready.
    """

    def __init__(self, names: list[str], *, before_publish: BeforePublish | None = None) -> None:
        self._states: Mapping[str, ClusterState] = MappingProxyType({n: ClusterState(n) for n in names})
        self._before_publish = before_publish

    def publish(self, state: ClusterState) -> None:
        """Replace one cluster's state (each cluster has a single writer, its poller)."""
        states = MappingProxyType({**self._states, state.name: state})
        if self._before_publish is not None:
            self._before_publish(state.name, states)
        self._states = states

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
