"""The simulated schedulers' compute nodes: a pool per queue, the nodes a starting job is given, and the
Slurm host list (``nodeUsed``) that names them."""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence

CPUS_PER_NODE = 64  # as the capacity answer counts nodes
RACK_SIZE = 16  # nodes per rack: a job across a rack boundary has a host list of several bracket groups
OVERFLOW_NODES = 16  # the pool of queues a scheduler does not define (jobs added to a new queue by a test)


def node_name(hall: int, index: int) -> str:
    """The name of a scheduler's ``index``-th node, zero padded as Sugon's are: ``h01r2n07``."""
    return f"h{hall:02d}r{index // RACK_SIZE + 1}n{index % RACK_SIZE + 1:02d}"


def _ranges(numbers: list[int]) -> str:
    """Sorted node numbers of one rack as the inside of a bracket: ``01-04,07``."""
    out: list[str] = []
    first = last = numbers[0]
    for n in numbers[1:] + [-1]:
        if n == last + 1:
            last = n
            continue
        out.append(f"{first:02d}" if first == last else f"{first:02d}-{last:02d}")
        first = last = n
    return ",".join(out)


def host_list(hall: int, indexes: Sequence[int], compressed: bool = True) -> str:
    """The Slurm host list of some nodes of one scheduler: ``h01r1n[15-16],h01r2n[01-02]`` (a bracket group
    per rack, a plain name for a group of one), or with ``compressed`` False the names separated by commas."""
    ordered = sorted(set(indexes))
    if not compressed:
        return ",".join(node_name(hall, i) for i in ordered)
    racks: dict[int, list[int]] = {}
    for i in ordered:
        racks.setdefault(i // RACK_SIZE, []).append(i % RACK_SIZE + 1)
    groups = []
    for rack, numbers in racks.items():
        prefix = f"h{hall:02d}r{rack + 1}n"
        groups.append(f"{prefix}{numbers[0]:02d}" if len(numbers) == 1 else f"{prefix}[{_ranges(numbers)}]")
    return ",".join(groups)


class NodePools:
    """Where each queue of each scheduler runs its jobs: consecutive node indexes per queue (a node per 64
    CPUs, at least one), then an overflow pool for queues the scheduler does not define. Schedulers are
    halls ``h01``, ``h02``, ... so that two schedulers never name the same node."""

    def __init__(self, schedulers: Mapping[str, Mapping[str, int]]) -> None:
        self._hall: dict[str, int] = {}
        self._pools: dict[tuple[str, str], tuple[int, int]] = {}
        self._overflow: dict[str, tuple[int, int]] = {}
        for hall, (scheduler_id, queues) in enumerate(schedulers.items(), start=1):
            self._hall[scheduler_id] = hall
            offset = 0
            for queue, cpus in queues.items():
                size = max(-(-cpus // CPUS_PER_NODE), 1)
                self._pools[(scheduler_id, queue)] = (offset, size)
                offset += size
            self._overflow[scheduler_id] = (offset, OVERFLOW_NODES)

    def allocate(
        self, scheduler_id: str, queue: str, width: int, rng: random.Random, compressed: bool = True
    ) -> tuple[tuple[str, ...], str]:
        """``width`` neighbouring nodes (fewer if the pool is smaller) from a random place in the queue's pool,
        wrapping round its end: their names in order and their host list."""
        offset, size = self._pools.get((scheduler_id, queue), self._overflow[scheduler_id])
        width = max(min(width, size), 1)
        first = rng.randrange(size)
        indexes = sorted(offset + (first + k) % size for k in range(width))
        hall = self._hall[scheduler_id]
        return tuple(node_name(hall, i) for i in indexes), host_list(hall, indexes, compressed)
