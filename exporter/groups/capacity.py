"""Queue capacity, from the capacity poll (``queue_capacity: true``), e.g.::

    sugon_queue_free_cpus{hpc_cluster="kunshan",queue="debug"} 128.0

A figure the answer lacks is left out, never invented. Queues are named as the job data names them.
"""

from __future__ import annotations

from collections.abc import Mapping

from prometheus_client.core import Metric

from exporter.groups.base import gauge
from exporter.model import QueueCapacity

QUEUE = ("hpc_cluster", "queue")


def capacity_families(cluster: str, queues: Mapping[str, QueueCapacity]) -> list[Metric]:
    """The capacity families of one cluster's queues."""
    families: list[Metric] = [
        gauge("sugon_queue_cpus", "CPUs of the queue (queue capacity poll).", QUEUE),
        gauge("sugon_queue_free_cpus", "Free CPUs of the queue (queue capacity poll).", QUEUE),
        gauge("sugon_queue_nodes", "Nodes of the queue (queue capacity poll).", QUEUE),
        gauge("sugon_queue_free_nodes", "Free nodes of the queue (queue capacity poll).", QUEUE),
    ]
    for queue, cap in queues.items():
        for family, value in zip(families, (cap.cpus, cap.free_cpus, cap.nodes, cap.free_nodes)):
            if value is not None:
                family.add_sample(family.name, {"hpc_cluster": cluster, "queue": queue}, value)
    return families
