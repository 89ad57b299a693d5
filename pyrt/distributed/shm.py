"""All-reduce through node shared memory (``algorithm="shm"``), for ranks on one machine.

MPICH moves an intra-node all-reduce through small shared-memory cells, a
pipeline of copies between processes. Here every rank of the group maps every
other rank's buffer (an MPI-3 shared window, ``Win.Allocate_shared`` on a
``COMM_TYPE_SHARED`` communicator), so a chunk of the message costs:

1. each rank copies its chunk into its own slot;
2. flag barrier;
3. rank r reduces slice r of the chunk across all slots, in place in its own
   slot (with pyrt's vectorized reduction kernel for float32/float64), and
   divides it by the group size for an average (``averaging.py``);
4. flag barrier;
5. each rank copies every slice from its owner's slot into its output.

Every byte crosses the memory bus about three times per rank instead of being
staged through cells. Slots are double-buffered, so chunk k+1 may be written
while a slow rank still reads chunk k; the barrier of step 2 for chunk k+1
cannot pass before every rank finished step 5 of chunk k-1, which is what
would reuse its buffer. Each slice is reduced once, by one rank, in rank
order, so every rank receives bit-identical results.

Barriers are per-rank counters in the same window: each rank publishes its
own count (no atomics needed), ``Win.Sync`` orders the data before the
flag (MPI's memory model for shared windows), and waiters poll through the
watchdog, yielding the core instead of spinning.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pyrt import kernels
from pyrt.distributed import watchdog
from pyrt.distributed.averaging import divide_by_group_size

__all__ = ["SLOT_BYTES", "HierarchicalAllreduce", "SharedMemoryAllreduce", "node_layout"]

# Per rank and buffer. Large enough that a chunk's two barriers are a small
# share of its copying (4 MB moves in ~0.5 ms here), small enough that the
# window is a few MB per rank.
SLOT_BYTES = 4 << 20
_FLAG_BYTES = 64  # one cache line per rank for its barrier counter
# The other ranks reach a barrier within a chunk's copy time, so a waiter keeps
# yielding (not sleeping) that long: a sleep costs ~0.1 ms of wake-up latency twice
# per chunk. Yielding still hands the core to a runnable rank when ranks share cores.
BARRIER_SPIN_SECONDS = 2e-3

_UFUNCS = {"sum": np.add, "max": np.maximum, "min": np.minimum, "product": np.multiply}
_KERNEL_OPS = ("sum", "max", "min")  # what kernels.reduce_inplace computes


def node_layout(comm: Any) -> tuple[bool, int]:
    """(every rank of ``comm`` on this node, the most ranks of ``comm`` on any one node); collective."""
    from mpi4py import MPI

    node = comm.Split_type(MPI.COMM_TYPE_SHARED)
    size = node.Get_size()
    node.Free()
    most = comm.allreduce(size, op=MPI.MAX)
    return most == comm.Get_size(), most


class _FlagsReached:
    """Quacks like an MPI request: done once every rank's counter has reached ``target``."""

    def __init__(self, flags: list[np.ndarray], target: int, window: Any) -> None:
        self.flags, self.target, self.window = flags, target, window

    def Test(self, status: Any = None) -> bool:
        self.window.Sync()  # see the other ranks' latest stores
        return all(int(flag[0]) >= self.target for flag in self.flags)


class SharedMemoryAllreduce:
    """In-place all-reduce of contiguous arrays among the ranks of ``comm``, all on one node.

    Created collectively (every rank of the group, once; ``ProcessGroup``
    keeps one). ``name`` and ``global_ranks`` label the watchdog's reports.

    Example (under ``mpiexec -n 2``, every rank)::

        shm = SharedMemoryAllreduce(comm, "WORLD", [0, 1])
        x = np.ones(10, np.float32); shm.all_reduce(x, "sum")   # x == 2
    """

    def __init__(self, comm: Any, name: str, global_ranks: list[int]) -> None:
        from mpi4py import MPI

        self.comm = comm.Split_type(MPI.COMM_TYPE_SHARED)
        if self.comm.Get_size() != comm.Get_size():
            self.comm.Free()
            raise ValueError(f"shared-memory all-reduce: group {name} spans several nodes")
        self.name, self.global_ranks = name, global_ranks
        self.rank, self.size = self.comm.Get_rank(), self.comm.Get_size()
        self.window = MPI.Win.Allocate_shared(_FLAG_BYTES + 2 * SLOT_BYTES, 1, comm=self.comm)
        self.window.Lock_all()  # one passive epoch for the window's life: Sync needs it
        self.flags: list[np.ndarray] = []
        self.slots: list[tuple[np.ndarray, np.ndarray]] = []
        for q in range(self.size):
            memory, _ = self.window.Shared_query(q)
            raw = np.frombuffer(memory, dtype=np.uint8)
            self.flags.append(raw[:8].view(np.int64))
            self.slots.append((raw[_FLAG_BYTES:_FLAG_BYTES + SLOT_BYTES],
                               raw[_FLAG_BYTES + SLOT_BYTES:_FLAG_BYTES + 2 * SLOT_BYTES]))
        self.flags[self.rank][0] = 0
        self.barriers = 0
        self.buffer = 0  # which of the two slot buffers the next chunk uses
        self.comm.Barrier()  # every flag zeroed before anyone polls one

    def _barrier(self, seq: int) -> None:
        self.barriers += 1
        self.window.Sync()  # this rank's data stores before its flag store
        self.flags[self.rank][0] = self.barriers
        self.window.Sync()
        watchdog.wait_for(_FlagsReached(self.flags, self.barriers, self.window), None, group=self.name,
                          global_ranks=self.global_ranks, seq=seq, kind="all_reduce",
                          spin_seconds=BARRIER_SPIN_SECONDS)

    def all_reduce(self, array: np.ndarray, op: str, seq: int = 0) -> None:
        """Reduce ``array`` (contiguous, any numeric dtype) in place; ``op``: sum, avg, max, min, product.

        ``seq`` is the collective's sequence number, for the watchdog's report.
        """
        flat = array.reshape(-1)
        if self.size == 1 or flat.size == 0:
            return
        average = op == "avg"
        reduce_op = "sum" if average else op
        per_chunk = SLOT_BYTES // flat.itemsize
        for start in range(0, flat.size, per_chunk):
            chunk = flat[start:start + per_chunk]
            slots = [s[self.buffer][:chunk.nbytes].view(chunk.dtype) for s in self.slots]
            self.buffer ^= 1
            np.copyto(slots[self.rank], chunk)
            self._barrier(seq)
            lo, hi = self._bounds(chunk.size, self.rank)
            mine = slots[self.rank][lo:hi]
            for q in range(self.size):
                if q != self.rank:
                    self._reduce(mine, slots[q][lo:hi], reduce_op)
            if average:
                divide_by_group_size(mine, self.size)  # AVG's one rule, as in every algorithm
            self._barrier(seq)
            for q in range(self.size):
                lo, hi = self._bounds(chunk.size, q)
                np.copyto(chunk[lo:hi], slots[q][lo:hi])

    def _bounds(self, count: int, q: int) -> tuple[int, int]:
        base, extra = divmod(count, self.size)
        lo = q * base + min(q, extra)
        return lo, lo + base + (q < extra)

    @staticmethod
    def _reduce(dst: np.ndarray, src: np.ndarray, op: str) -> None:
        if dst.dtype in (np.float32, np.float64) and op in _KERNEL_OPS:
            kernels.reduce_inplace(dst, src, op)
        else:
            _UFUNCS[op](dst, src, out=dst)

    def free(self) -> None:
        self.window.Unlock_all()
        self.window.Free()
        self.comm.Free()


class HierarchicalAllreduce:
    """All-reduce across nodes: shared memory inside each node, then MPI between node leaders.

    1. every node reduces through shared memory (``SharedMemoryAllreduce``);
    2. one leader per node all-reduces the node sums with the other leaders;
    3. each leader broadcasts the total inside its node.

    Only the leaders' messages leave a node: one per node instead of one per
    rank. Averages are summed throughout and divided once at the end, by the
    rule every algorithm shares (``averaging.py``). Tested on one machine by making MPICH treat ranks as
    separate nodes (``MPIR_CVAR_NUM_CLIQUES``).

    Example (under ``mpiexec -n 4``, every rank)::

        tree = HierarchicalAllreduce(comm, "WORLD", [0, 1, 2, 3])
        x = np.ones(10); tree.all_reduce(x, "sum")   # x == 4
    """

    def __init__(self, comm: Any, name: str, global_ranks: list[int]) -> None:
        from mpi4py import MPI

        self.name, self.global_ranks, self.size = name, global_ranks, comm.Get_size()
        self.node = comm.Split_type(MPI.COMM_TYPE_SHARED)
        node_members = self.node.allgather(global_ranks[comm.Get_rank()])
        self.leader = self.node.Get_rank() == 0
        self.leaders = comm.Split(0 if self.leader else MPI.UNDEFINED, key=comm.Get_rank())
        self.shm = SharedMemoryAllreduce(self.node, f"{name} (this node)", node_members)

    def all_reduce(self, array: np.ndarray, op: str, seq: int = 0) -> None:
        """Reduce ``array`` (contiguous) in place; ``op``: sum, avg, max, min, product."""
        from mpi4py import MPI

        if array.size == 0:
            return
        total = "sum" if op == "avg" else op
        self.shm.all_reduce(array, total, seq)
        if self.leader and self.leaders.Get_size() > 1:
            mpi_op = {"sum": MPI.SUM, "max": MPI.MAX, "min": MPI.MIN, "product": MPI.PROD}[total]
            self._wait(self.leaders.Iallreduce(MPI.IN_PLACE, array, op=mpi_op), seq)
        if self.node.Get_size() > 1:
            self._wait(self.node.Ibcast(array, root=0), seq)
        if op == "avg":
            divide_by_group_size(array, self.size)

    def _wait(self, request: Any, seq: int) -> None:
        from mpi4py import MPI

        watchdog.wait_for(request, MPI.Status(), group=self.name, global_ranks=self.global_ranks,
                          seq=seq, kind="all_reduce")

    def free(self) -> None:
        self.shm.free()
        if self.leader:  # the others hold MPI_COMM_NULL
            self.leaders.Free()
        self.node.Free()
