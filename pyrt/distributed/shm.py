"""All-reduce and call agreement through node shared memory, for ranks on one machine.

MPICH moves an intra-node all-reduce through small shared-memory cells, a
pipeline of copies between processes. Here every rank of the group maps every
other rank's segment of an MPI-3 shared window (``Win.Allocate_shared`` on a
``COMM_TYPE_SHARED`` communicator), and the collective runs in C++
(``csrc/comm/shm.cpp``, ``pyrt._comm.SharedMemoryComm``) with the GIL
released: two flag barriers and the copies, no MPI call at all.

- **Agreement.** The first barrier of every collective carries the call's
  record (``agreement.py``): after it, every rank compares every record with
  its own. On one node this *is* the agreement check of every collective,
  whatever carries its data, so it costs about a microsecond instead of an
  ``Iallgather``.
- **Staged all-reduce** (any contiguous array): copy into my slot, barrier,
  reduce my slice across every slot, barrier, copy every slice out.
- **Symmetric all-reduce** (zero-copy): when the array lives in a buffer from
  ``allocate`` (DDP's gradient buckets do), each rank reduces its slice of
  every rank's copy and writes the result into every copy: each byte is read
  and written once per rank, with no staging.

Each element is reduced by one rank, in rank order, so every rank receives the
same bits, and they do not depend on the path (staged or symmetric) or on
where the element falls in the array.
Barrier waits spin for ``SPIN_SECONDS`` in C++, then sleep between polls in
C++ until ``SLEEP_SECONDS`` (without the GIL, driving MPI's progress each poll), and
only then wait in the watchdog (``watchdog.wait_for``), which ends the job,
naming the rank, if one never arrives.
"""

from __future__ import annotations

import dataclasses
import sys
from typing import Any

import numpy as np

from pyrt.distributed import agreement, native, watchdog
from pyrt.distributed.averaging import divide_by_group_size

__all__ = ["ALIGN", "SLOT_BYTES", "HierarchicalAllreduce", "SharedMemoryComm", "SymmetricBuffer",
           "node_layout"]

# Per rank and slot (two slots): large enough that a chunk's two barriers are a
# small share of its copying, small enough that the window is a few MB per rank.
SLOT_BYTES = 4 << 20
# How long a barrier spins (pause, then sched_yield) before the watchdog's
# sleeping wait takes over. The others arrive within a copy's time when ranks
# are in step; a longer wait is a computation away, and the sleep gives the
# core to it when ranks share cores.
SPIN_SECONDS = 2e-4
# Then how long a barrier sleeps between polls in C++, without the GIL, before the
# watchdog's wait (Python, polling under the GIL) takes over (see wait() in shm.cpp).
SLEEP_SECONDS = 0.02
DTYPES = (np.dtype(np.float32), np.dtype(np.float64), np.dtype(np.int32), np.dtype(np.int64))
ALIGN = 64  # every segment and shared buffer starts on a cache line


def node_layout(comm: Any) -> tuple[bool, int]:
    """(every rank of ``comm`` on this node, the most ranks of ``comm`` on any one node); collective."""
    from mpi4py import MPI

    node = comm.Split_type(MPI.COMM_TYPE_SHARED)
    size = node.Get_size()
    node.Free()
    most = comm.allreduce(size, op=MPI.MAX)
    return most == comm.Get_size(), most


def _shared_window(comm: Any, nbytes: int) -> tuple[Any, list[int], np.ndarray]:
    """A shared window of ``nbytes`` per rank; collective over ``comm`` (one node).

    Returns the window, the 64-byte-aligned start of each rank's segment as
    mapped here, and this rank's segment from its start (uint8, ``nbytes``).
    """
    from mpi4py import MPI

    info = MPI.Info.Create()
    info.Set("alloc_shared_noncontig", "true")  # each segment on its own pages
    window = MPI.Win.Allocate_shared(nbytes + ALIGN, 1, info=info, comm=comm)
    info.Free()
    starts = []
    for q in range(comm.Get_size()):
        memory, _ = window.Shared_query(q)
        starts.append(memory.address + (-memory.address) % ALIGN)
    local = np.frombuffer(window.tomemory(), np.uint8)
    offset = starts[comm.Get_rank()] - _address(local)
    return window, starts, local[offset:offset + nbytes]


class _Reached:
    """Quacks like an MPI request for the watchdog: done once every rank arrived at ``barrier``.

    Each poll also drives MPI's progress engine (an ``Iprobe`` on ``idle``, a
    communicator nobody sends on): a rank still finishing an earlier MPI
    transfer (the ring's last large messages) needs its peer's MPI to answer,
    and a peer waiting here makes no MPI call otherwise. Without it, 4 ranks
    deadlocked within a few hundred 64 MB all-reduces alternating ring and shm.
    """

    def __init__(self, native: Any, barrier: int, idle: Any) -> None:
        self.native, self.barrier, self.idle = native, barrier, idle

    def Test(self, status: Any = None) -> bool:
        self.idle.Iprobe()
        return self.native.reached(self.barrier)


@dataclasses.dataclass
class SymmetricBuffer:
    """``nbytes`` at the same offset of every rank's segment of a shared window (see ``allocate``).

    ``array`` is this rank's copy (uint8); ``starts[q]`` is where rank q's copy is mapped here.
    """

    array: np.ndarray
    starts: list[int]
    window: Any

    def __post_init__(self) -> None:
        self.address = _address(self.array)
        # numpy points every view of ``array`` at this one object (its .base), so its
        # reference count says whether any array still uses the memory (see free()).
        self.memory = self.array.base

    def in_use(self) -> bool:
        """Whether an array other than ``self.array`` still views this memory (DDP's gradients)."""
        return sys.getrefcount(self.memory) > 3  # self.memory, self.array's .base, getrefcount's argument

    def offset_of(self, address: int, nbytes: int) -> int | None:
        """Where ``nbytes`` at ``address`` start in this buffer, or None when they are not inside it."""
        begin = address - self.address
        return begin if 0 <= begin and begin + nbytes <= self.array.nbytes else None


def _address(array: np.ndarray) -> int:
    return native.comm_module().address(array)


class SharedMemoryComm:
    """Collectives through node shared memory among the ranks of ``comm`` (all on one node).

    Created collectively (``ProcessGroup`` keeps one per group on one node).
    ``name`` and ``global_ranks`` label the watchdog's reports.

    Example (under ``mpiexec -n 2``, every rank)::

        shm = SharedMemoryComm(comm, "WORLD", [0, 1])
        x = np.ones(10, np.float32)
        shm.all_reduce(x, "sum", record, seq=1)   # x == 2 (record: agreement.Call(...).encode(1))
    """

    def __init__(self, comm: Any, name: str, global_ranks: list[int]) -> None:
        from mpi4py import MPI

        _comm = native.comm_module()
        self.comm = comm.Split_type(MPI.COMM_TYPE_SHARED)
        if self.comm.Get_size() != comm.Get_size():
            self.comm.Free()
            raise ValueError(f"shared-memory collectives: group {name} spans several nodes")
        self.name, self.global_ranks = name, global_ranks
        self.rank, self.size = self.comm.Get_rank(), self.comm.Get_size()
        control = _comm.SHM_CONTROL_BYTES
        self.window, starts, mine = _shared_window(self.comm, control + 2 * SLOT_BYTES)
        mine[:control] = 0  # counters and records
        self.comm.Barrier()  # every counter zeroed before anyone polls one
        self.native = _comm.SharedMemoryComm(self.rank, starts, SLOT_BYTES, SPIN_SECONDS, agreement.RECORD,
                                             SLEEP_SECONDS, self.comm.py2f())
        self.symmetric: list[SymmetricBuffer] = []
        # What callers worked out about arrays in the buffers above (collectives' zero-copy plans,
        # every rank's address of each shared offset): valid until the buffers change.
        self.plans: dict[Any, Any] = {}
        self._copies: dict[int, list[int]] = {}

    def _wait(self, seq: int, kind: str) -> Any:
        def wait(barrier: int) -> None:
            watchdog.wait_for(_Reached(self.native, barrier, self.comm), None, group=self.name,
                              global_ranks=self.global_ranks, seq=seq, kind=kind)
        return wait

    def agree(self, record: np.ndarray, seq: int, kind: str) -> np.ndarray | None:
        """Barrier carrying ``record``: None when every rank's equals it, else every rank's (one row each)."""
        watchdog.reached(self.name, seq, kind)
        if self.native.agree(record, self._wait(seq, kind)):
            return None
        return self.records(len(record))

    def records(self, words: int) -> np.ndarray:
        """Every rank's record of the latest barrier, one row per rank."""
        return np.stack([self.native.record(q, words) for q in range(self.size)])

    def all_reduce(self, array: np.ndarray, op: str, record: np.ndarray, seq: int,
                   shared_offset: int = -1) -> np.ndarray | None:
        """Reduce ``array`` (C-contiguous; float32/64, int32/64) in place: sum, avg, max, min or product.

        ``shared_offset`` is ``symmetric_offset(array)``: from 0, the array is
        reduced in place in every rank's copy (zero-copy), else staged. The first
        barrier carries ``record``: when any rank's differs, nothing is reduced
        and every rank's record is returned (one row each), else None.
        """
        watchdog.reached(self.name, seq, "all_reduce")
        wait = self._wait(seq, "all_reduce")
        if shared_offset >= 0:
            copies = self._copies.get(shared_offset)
            if copies is None:
                index, offset = agreement.split_shared_offset(shared_offset)
                starts = self.symmetric[index].starts
                copies = self._copies[shared_offset] = [start + offset for start in starts]
            agreed = self.native.all_reduce_symmetric(array, copies, op, record, wait)
        else:
            agreed = self.native.all_reduce(array, op, record, wait)
        return None if agreed else self.records(len(record))

    def symmetric_offset(self, array: np.ndarray) -> int:
        """Which buffer from ``allocate`` holds ``array`` and where (``agreement.shared_offset``), or -1
        (also for an array that is not one C-contiguous block, which is reduced staged)."""
        if not isinstance(array, np.ndarray) or not self.symmetric or not array.flags.c_contiguous:
            return -1  # GPU arrays are staged by the caller
        address = _address(array)
        for index, buffer in enumerate(self.symmetric):
            offset = buffer.offset_of(address, array.nbytes)
            if offset is not None:
                return agreement.shared_offset(index, offset)
        return -1

    def allocate(self, nbytes: int) -> np.ndarray:
        """``nbytes`` (uint8, 64-byte aligned) that every rank of the group maps; collective.

        ``all_reduce`` of an array inside it runs zero-copy, provided every rank
        passes the array at the same offset (the agreement check compares them).
        The memory lives until the group is destroyed.
        """
        window, starts, array = _shared_window(self.comm, nbytes)
        self.symmetric.append(SymmetricBuffer(array, starts, window))
        self.plans.clear()
        self._copies.clear()
        return array

    def free(self) -> None:
        """Free the windows (collective). A buffer from ``allocate`` that any rank still views (a
        DDP model's averaged gradients outlive ``destroy_process_group``) stays mapped until
        MPI_Finalize: unmapping it would turn those arrays into dangling pointers."""
        from mpi4py import MPI

        in_use = np.array([b.in_use() for b in self.symmetric], np.uint8)
        self.comm.Allreduce(MPI.IN_PLACE, in_use, op=MPI.MAX)  # Win.Free is collective: all or none
        for buffer, used in zip(self.symmetric, in_use, strict=True):
            if not used:
                buffer.window.Free()
        self.symmetric = []
        self.plans.clear()
        self._copies.clear()
        self.window.Free()
        self.comm.Free()


class HierarchicalAllreduce:
    """All-reduce across nodes: shared memory inside each node, then MPI between node leaders.

    1. every node reduces through shared memory (``SharedMemoryComm``);
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
        self.shm = SharedMemoryComm(self.node, f"{name} (this node)", node_members)

    def all_reduce(self, array: np.ndarray, op: str, seq: int = 0) -> None:
        """Reduce ``array`` (C-contiguous; float32/64, int32/64) in place: sum, avg, max, min or product.

        The group's ranks have agreed on the call already (across nodes, by
        ``agreement.check_call``), so the node's barrier carries just ``seq``.
        """
        from mpi4py import MPI

        if array.size == 0:
            return
        total = "sum" if op == "avg" else op
        record = np.zeros(agreement.RECORD, np.int64)
        record[0] = seq
        if self.shm.all_reduce(array, total, record, seq) is not None:
            raise RuntimeError(f"all_reduce #{seq} on {self.name}: the ranks of this node are at different "
                               "collectives although they agreed across nodes (the group used from two "
                               "threads?)")
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
