"""``init``: split an MPI job into parameter servers and workers.

The last ``num_servers`` ranks serve; ranks ``0 .. W-1`` are the workers, so
rank 0, which examples print and evaluate on, is always a worker and a worker's
index is its global rank. Parameter-server traffic runs on a duplicate of the
world communicator: its messages can never match a receive or a collective of
the application's, whatever tags either side uses. The workers and the servers
each also get a process group of their own for collectives among themselves
(say, the workers agreeing on an evaluation).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from pyrt.distributed.process_group import (
    ProcessGroup,
    default_group,
    init_process_group,
    is_initialized,
    new_group,
)

__all__ = ["Cluster", "init"]


@dataclasses.dataclass
class Cluster:
    """Who serves and who works in this job, and the communicator they talk over.

    ``staleness`` is SSP's bound s: a worker at clock c reads parameters holding
    every worker's updates of clocks below c - s (``0``: bulk synchronous,
    ``None``: fully asynchronous). ``timeout`` is how long a server lets a worker
    stay silent before declaring it dead; it must exceed the longest step. A
    worker gives up on the servers after waiting ``2 * timeout``, which must
    exceed a server's longest backlog: up to two pushes per worker, so about
    ``2 * num_workers`` optimizer updates.

    Example (under ``mpiexec -n 4``)::

        cluster = ps.init(num_servers=1, staleness=1)
        cluster.is_server, cluster.server_ranks, cluster.worker_ranks   # rank 3: True, [3], [0, 1, 2]
    """

    comm: Any
    server_ranks: list[int]
    worker_ranks: list[int]
    staleness: int | None
    timeout: float
    workers: ProcessGroup
    servers: ProcessGroup

    @property
    def rank(self) -> int:
        return self.comm.Get_rank()

    @property
    def is_server(self) -> bool:
        return self.rank in self.server_ranks

    @property
    def num_workers(self) -> int:
        return len(self.worker_ranks)

    def destroy(self) -> None:
        """Free the cluster's communicator (every rank calls it, after training).

        Example: ``cluster.destroy()`` before ``dist.destroy_process_group()``.
        """
        if self.comm is not None:
            self.comm.Free()
            self.comm = None


def init(num_servers: int = 1, staleness: int | None = None, timeout: float = 60.0) -> Cluster:
    """Split the world into ``num_servers`` parameter servers and the remaining workers.

    Every rank must call it (it creates communicators). Initialises the default
    process group first if the script has not.

    Example (under ``mpiexec -n 4``)::

        from pyrt.distributed import ps
        cluster = ps.init(num_servers=1, staleness=1)
        if cluster.is_server:
            ps.ParameterServer(cluster, model, lambda params: optim.Adam(params, lr=1e-3)).run()
        else:
            worker = ps.Worker(cluster, model)
    """
    if not is_initialized():
        init_process_group()
    world = default_group()
    size = world.size()
    if not 1 <= num_servers < size:
        raise ValueError(
            f"ps.init: num_servers={num_servers} must leave at least one worker among the "
            f"{size} ranks (need 1 <= num_servers < {size})"
        )
    if staleness is not None and staleness < 0:
        raise ValueError(f"ps.init: staleness must be >= 0 or None, got {staleness}")
    if timeout <= 0:
        raise ValueError(f"ps.init: timeout must be positive, got {timeout}")
    worker_ranks = list(range(size - num_servers))
    server_ranks = list(range(size - num_servers, size))
    workers = new_group(worker_ranks)
    servers = new_group(server_ranks)
    world.drain()
    return Cluster(world.comm.Dup(), server_ranks, worker_ranks, staleness, float(timeout), workers, servers)
