"""Process groups: sets of MPI ranks, each with its own communicator.

The default group wraps ``MPI.COMM_WORLD`` (or a communicator the embedding
application passes in); ``new_group`` carves subgroups out of it with
``Comm.Split``, which every rank of the default group must enter, as in
PyTorch. Ranks given to the public functions are global (default-group) ranks;
each group translates them to its own.

Thread level: mpi4py initialises MPI with ``MPI_THREAD_MULTIPLE`` (its
default), which the communication threads in ``executor.py`` need. If the
application initialised MPI itself with a lower level, ``init_process_group``
says so instead of risking undefined behaviour.
"""

from __future__ import annotations

import itertools
import os
import sys
import threading
import traceback
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from pyrt.distributed import native, shm, watchdog
from pyrt.distributed.executor import CollectiveExecutor

__all__ = [
    "ProcessGroup",
    "destroy_process_group",
    "get_rank",
    "get_world_size",
    "init_process_group",
    "is_initialized",
    "new_group",
]


class ProcessGroup:
    """A group of ranks and the communicator connecting them.

    ``rank()`` and ``size()`` are this process's rank in the group and the
    group's size; ``comm`` is the mpi4py communicator, for code that wants to
    call MPI directly.
    """

    def __init__(self, comm: Any, global_ranks: Sequence[int], name: str) -> None:
        self.comm = comm
        # Point-to-point transfers send a header (dtype, shape) here before the data,
        # so headers never match a user's receive on ``comm``, whatever its tag.
        self.header_comm = comm.Dup() if comm is not None else None
        self.global_ranks = list(global_ranks)
        self.name = name
        self._executor: CollectiveExecutor | None = None
        self._executor_lock = threading.Lock()
        self._sequence = itertools.count(1)
        #: Whether every rank of the group shares this node's memory (``algorithm="shm"``), and
        #: the most ranks of the group on any one node (above 1, ``"hierarchical"`` pays).
        self.on_one_node, self.most_ranks_per_node = (
            shm.node_layout(comm) if comm is not None else (False, 0))
        # Created now, on the thread creating the group (collective already), not on first use:
        # the first use may be on the communication thread while this one calls MPI on comm.
        self._shm: shm.SharedMemoryComm | shm.HierarchicalAllreduce | None = None
        if comm is not None and self.on_one_node and len(self.global_ranks) > 1 and native.comm_available():
            self._shm = shm.SharedMemoryComm(comm, name, self.global_ranks)

    def shared_memory(self) -> shm.SharedMemoryComm | shm.HierarchicalAllreduce:
        """The group's collectives through node shared memory: one shared window on one node (made
        with the group), or windows per node joined by their leaders (made, collectively, on the first
        ``algorithm="hierarchical"`` call)."""
        if self._shm is None:
            kind = shm.SharedMemoryComm if self.on_one_node else shm.HierarchicalAllreduce
            self._shm = kind(self.comm, self.name, self.global_ranks)
        return self._shm

    def node_shared_memory(self) -> shm.SharedMemoryComm | None:
        """``shared_memory()`` when every rank of the group shares this node; None for one rank,
        across nodes, or without ``pyrt._comm``. Every collective's agreement check goes through it."""
        if self.size() == 1 or not isinstance(self._shm, shm.SharedMemoryComm):
            return None
        return self._shm

    def next_sequence(self) -> int:
        """The number of this group's next collective: equal on every rank for the same call."""
        return next(self._sequence)

    @property
    def is_member(self) -> bool:
        return self.comm is not None

    def rank(self) -> int:
        return self.comm.Get_rank() if self.comm is not None else -1

    def size(self) -> int:
        return len(self.global_ranks)

    def group_rank(self, global_rank: int, what: str = "rank") -> int:
        """This group's rank for a global rank, with an error naming the members."""
        try:
            return self.global_ranks.index(global_rank)
        except ValueError:
            raise ValueError(
                f"{what} {global_rank} is not in process group {self.name} "
                f"(global ranks {self.global_ranks})"
            ) from None

    def executor(self) -> CollectiveExecutor:
        with self._executor_lock:
            if self._executor is None:
                self._executor = CollectiveExecutor(self.name)
            return self._executor

    def drain(self) -> None:
        """Wait for this group's queued asynchronous collectives (keeps MPI's ordering)."""
        if self._executor is not None:
            self._executor.drain()

    def shutdown(self) -> None:
        if self._executor is not None:
            self._executor.shutdown()
            self._executor = None
        if self._shm is not None:
            self._shm.free()
            self._shm = None

    def __repr__(self) -> str:
        return f"ProcessGroup({self.name}, ranks={self.global_ranks})"


_default_group: ProcessGroup | None = None
_groups: list[ProcessGroup] = []


def _mpi() -> Any:
    from mpi4py import MPI

    return MPI


def is_initialized() -> bool:
    """True after ``init_process_group`` and before ``destroy_process_group``.

    >>> is_initialized()
    False
    """
    return _default_group is not None


def init_process_group(backend: str | None = None, init_method: str | None = None,
                       timeout: timedelta | None = None, world_size: int = -1, rank: int = -1, *,
                       comm: Any = None) -> ProcessGroup:
    """Create the default process group over ``MPI.COMM_WORLD`` (or ``comm``).

    Launch the script under ``mpiexec`` (or ``python -m pyrt.run``). MPI is
    the transport: ``backend`` may be ``"mpi"`` or PyTorch's ``"gloo"`` /
    ``"nccl"``, which run over MPI (with a one-line notice), so PyTorch
    scripts port unchanged. ``comm``
    lets code that already uses mpi4py hand pyrt a communicator of its own;
    ``world_size`` and ``rank``, when given, are checked against MPI's. Unless
    ``OMP_NUM_THREADS`` is set, each rank's kernels get an equal share of the
    node's cores (``pyrt.set_num_threads`` changes it afterwards). After
    this call an exception on any rank aborts the whole job (it prints the
    rank and the traceback, then calls ``MPI_Abort``) instead of leaving the
    other ranks waiting forever, and so does a rank that leaves (its script
    ends, or calls ``sys.exit``) before ``destroy_process_group``. A wait
    longer than ``timeout`` (10 minutes by default, as in PyTorch) ends the
    job with a report of where every rank is (``pyrt.distributed.watchdog``).

    Example (under ``mpiexec -n 2``)::

        import pyrt.distributed as dist
        dist.init_process_group("mpi")
        print(dist.get_rank(), dist.get_world_size())
    """
    global _default_group
    _check_backend("init_process_group", backend)
    if init_method not in (None, "env://", "mpi://"):
        raise ValueError(f"init_process_group: MPI needs no init_method, got {init_method!r}")
    timeout = watchdog.DEFAULT_TIMEOUT if timeout is None else timeout
    if _default_group is not None:
        raise RuntimeError("init_process_group: the default process group is already initialised")
    MPI = _mpi()
    provided = MPI.Query_thread()
    if provided < MPI.THREAD_MULTIPLE:
        raise RuntimeError(
            f"init_process_group: MPI was initialised with thread level {provided}; pyrt's "
            "communication threads need MPI_THREAD_MULTIPLE (mpi4py's default)"
        )
    comm = MPI.COMM_WORLD if comm is None else comm
    if world_size not in (-1, comm.Get_size()) or rank not in (-1, comm.Get_rank()):
        raise ValueError(
            f"init_process_group: world_size={world_size}, rank={rank} but MPI reports "
            f"size {comm.Get_size()}, rank {comm.Get_rank()}"
        )
    if not isinstance(timeout, timedelta) or timeout.total_seconds() <= 0:
        raise ValueError(f"init_process_group: timeout must be a positive datetime.timedelta, "
                         f"got {timeout!r}")
    from pyrt.distributed.agreement import KINDS

    _default_group = ProcessGroup(comm, range(comm.Get_size()), "WORLD")
    _groups.append(_default_group)
    watchdog.start(comm, timeout, KINDS)
    _install_abort_on_error(comm)
    _share_cores_among_local_ranks(comm)
    return _default_group


_TORCH_BACKENDS = ("gloo", "nccl", "cpu:gloo,cuda:nccl")
_noticed_backends: set[str] = set()


def _check_backend(where: str, backend: str | None) -> None:
    """MPI is pyrt's transport; PyTorch's backend names map to it (with a notice), others are refused."""
    if backend in (None, "mpi"):
        return
    if backend in _TORCH_BACKENDS:
        if backend not in _noticed_backends:
            _noticed_backends.add(backend)
            print(f"pyrt: {where}(backend={backend!r}) runs over MPI, pyrt's transport", file=sys.stderr)
        return
    raise ValueError(f"{where}: unknown backend {backend!r}; pyrt runs over MPI ('mpi', or PyTorch's "
                     f"'gloo'/'nccl', which map to it)")


def _share_cores_among_local_ranks(comm: Any) -> None:
    """Unless OMP_NUM_THREADS says otherwise, give each rank its share of this node's cores.

    Ranks started by plain ``mpiexec`` would otherwise each run one kernel
    thread per core: 2 ranks on 2 cores ran the README's job at 1,100
    samples/s instead of 13,000.
    """
    if "OMP_NUM_THREADS" in os.environ:
        return
    from pyrt import kernels

    node = comm.Split_type(_mpi().COMM_TYPE_SHARED)
    local_ranks = node.Get_size()
    node.Free()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    kernels.set_num_threads(max(1, cores // local_ranks))


def _install_abort_on_error(comm: Any) -> None:
    """An uncaught exception on one rank ends every rank, instead of a hang."""
    rank = comm.Get_rank()

    def abort(kind: str, exc_type: Any, exc: Any, tb: Any) -> None:
        message = "".join(traceback.format_exception(exc_type, exc, tb))
        watchdog.abort(f"pyrt: rank {rank} raised {kind}; aborting the job\n{message}")

    sys.excepthook = lambda t, e, tb: abort("an exception", t, e, tb)
    threading.excepthook = lambda args: abort(
        f"an exception in thread {args.thread.name if args.thread else '?'}",
        args.exc_type, args.exc_value, args.exc_traceback,
    )


def default_group() -> ProcessGroup:
    if _default_group is None:
        raise RuntimeError(
            "the default process group is not initialised: call "
            "pyrt.distributed.init_process_group() first (and launch with mpiexec)"
        )
    return _default_group


def resolve_group(group: ProcessGroup | None, what: str) -> ProcessGroup:
    """The group a collective runs on, checking this rank belongs to it."""
    pg = default_group() if group is None else group
    if not pg.is_member:
        raise ValueError(
            f"{what}: rank {default_group().rank()} is not a member of {pg.name} "
            f"(global ranks {pg.global_ranks})"
        )
    return pg


def get_rank(group: ProcessGroup | None = None) -> int:
    """This process's rank in ``group`` (default: the world); -1 if not a member.

    Example: ``dist.get_rank()`` is 0..N-1 under ``mpiexec -n N``.
    """
    pg = default_group() if group is None else group
    return pg.rank()


def get_world_size(group: ProcessGroup | None = None) -> int:
    """Number of ranks in ``group`` (default: the world).

    Example: ``dist.get_world_size()`` is N under ``mpiexec -n N``.
    """
    pg = default_group() if group is None else group
    return pg.size()


def new_group(ranks: Sequence[int] | None = None, backend: str | None = None) -> ProcessGroup:
    """A process group of the given global ranks; every rank of the world must call it.

    Ranks outside ``ranks`` get a non-member group, which collectives reject.
    Group ranks follow the sorted global ranks, as in PyTorch.

    Example (under ``mpiexec -n 4``)::

        evens = dist.new_group([0, 2])
        if dist.get_rank() % 2 == 0:
            dist.all_reduce(x, group=evens)
    """
    world = default_group()
    _check_backend("new_group", backend)
    members = sorted(range(world.size()) if ranks is None else {int(r) for r in ranks})
    if ranks is not None and len(members) != len(list(ranks)):
        raise ValueError(f"new_group: ranks {list(ranks)} contain duplicates")
    for r in members:
        if not 0 <= r < world.size():
            raise ValueError(f"new_group: rank {r} is outside the world of {world.size()} ranks")
    world.drain()
    MPI = _mpi()
    me = world.rank()
    color = 0 if me in members else MPI.UNDEFINED
    comm = world.comm.Split(color, key=me)
    name = f"group{len(_groups)}"
    group = ProcessGroup(comm if comm != MPI.COMM_NULL else None, members, name)
    _groups.append(group)
    return group


def destroy_process_group(group: ProcessGroup | None = None) -> None:
    """Stop the communication threads and free the communicators of ``group`` (or all).

    Example: call ``dist.destroy_process_group()`` at the end of a script.
    """
    global _default_group
    targets = list(_groups) if group is None else [group]
    if group is None or group is _default_group:
        # Leave together first: freeing the groups' windows below is collective.
        watchdog.stop()
    for pg in targets:
        pg.shutdown()
        if pg.comm is not None:
            pg.header_comm.Free()
            if pg is not _default_group:
                pg.comm.Free()
        pg.comm = pg.header_comm = None
        _groups.remove(pg)
    if group is None or group is _default_group:
        _default_group = None
        sys.excepthook = sys.__excepthook__
        threading.excepthook = threading.__excepthook__


