"""The nodes in use: the distinct nodes the host lists (nodeUsed) of running jobs name, e.g.::

    sugon_nodes_in_use{hpc_cluster="kunshan"} 212.0

A node shared by two jobs counts once; at most MAX_NODES are tracked per cluster.
"""

from __future__ import annotations

from exporter.groups.base import CACHED, Families, Group, PollEnd, Settings, gauge
from exporter.model import Seen
from exporter.rows import MAX_NODES, node_names


class Nodes(Group):
    """sugon_nodes_in_use."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self._nodes: set[str] = set()

    def observe(self, seen: Seen) -> None:
        nodes = seen.job.nodes  # only a running job's
        if nodes is None or len(self._nodes) >= MAX_NODES:
            return
        names = node_names(nodes) or []
        if len(self._nodes) + len(names) <= MAX_NODES:
            self._nodes.update(names)
            return
        for name in names:
            if len(self._nodes) >= MAX_NODES:
                break
            self._nodes.add(name)

    def finish(self, end: PollEnd) -> Families:
        in_use = gauge(
            "sugon_nodes_in_use", "Distinct nodes named by the nodeUsed of running jobs." + CACHED, ["hpc_cluster"]
        )
        in_use.add_metric([self.settings.cluster], len(self._nodes))
        self._nodes = set()
        return Families(gauges=[in_use])

    def abandon(self) -> None:
        self._nodes = set()
