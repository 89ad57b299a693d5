"""Collectives and point-to-point transfers on arrays and Tensors.

Every function takes ``group=`` (default: the world) and works in place on the
tensor's array, like PyTorch's. Source and destination ranks are global ranks.
``async_op=True`` returns a ``Work`` and runs the collective on the group's
communication thread; synchronous calls first let that thread finish what was
queued, so every rank issues collectives to MPI in the same order.

Sizes are checked across ranks before data moves: MPI itself would either
truncate, fail with a message naming no shapes, or hang.
"""

from __future__ import annotations

import enum
import functools
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from pyrt.backend import describe
from pyrt.distributed.process_group import ProcessGroup, resolve_group
from pyrt.distributed.work import Work
from pyrt.tensor import Tensor

__all__ = [
    "ReduceOp", "all_gather", "all_gather_into_tensor", "all_reduce", "barrier", "broadcast",
    "irecv", "isend", "recv", "reduce_scatter", "reduce_scatter_tensor", "send",
]


class ReduceOp(enum.Enum):
    SUM = "sum"
    AVG = "avg"
    MAX = "max"
    MIN = "min"


# Below this many bytes MPI_Allreduce's latency-optimised algorithms win; above
# it the ring's bandwidth-optimal schedule does. Measured here (docs/benchmarks.md):
# the ring leads from 64 KB at 2 ranks and from 256 KB at 4 (oversubscribed) ranks.
RING_THRESHOLD_BYTES = 256 * 1024

_DTYPE_CODES = {np.dtype(t): i for i, t in enumerate(
    ["float32", "float64", "float16", "int64", "int32", "int16", "int8", "uint8", "bool"])}


def _array(x: Tensor | np.ndarray, what: str) -> np.ndarray:
    array = x.data if isinstance(x, Tensor) else x
    if not isinstance(array, np.ndarray):
        raise TypeError(f"{what}: expected a Tensor or numpy array, got {type(x).__name__}")
    if array.dtype not in _DTYPE_CODES:
        raise TypeError(f"{what}: unsupported dtype {array.dtype}")
    return array


def _writable_array(x: Tensor | np.ndarray, what: str) -> np.ndarray:
    array = _array(x, what)
    if not array.flags.writeable:
        raise ValueError(f"{what}: the output array is read-only")
    return array


def check_same_buffer(pg: ProcessGroup, array: np.ndarray, what: str) -> None:
    """Raise on every rank (never hang) when ranks disagree on element count or dtype."""
    mine = np.array([array.size, _DTYPE_CODES[array.dtype]], dtype=np.int64)
    every = np.empty((pg.size(), 2), dtype=np.int64)
    pg.comm.Allgather(mine, every)
    if (every == every[0]).all():
        return
    names = {code: dtype.name for dtype, code in _DTYPE_CODES.items()}
    listing = ", ".join(
        f"rank {pg.global_ranks[r]} has {count} {names[code]}" for r, (count, code) in enumerate(every)
    )
    raise ValueError(f"{what}: ranks disagree on the buffer: {listing}")


def _mpi_op(op: ReduceOp) -> Any:
    from mpi4py import MPI

    return {ReduceOp.SUM: MPI.SUM, ReduceOp.AVG: MPI.SUM, ReduceOp.MAX: MPI.MAX,
            ReduceOp.MIN: MPI.MIN}[op]


def _as_op(op: ReduceOp | str) -> ReduceOp:
    try:
        return op if isinstance(op, ReduceOp) else ReduceOp(str(op).lower())
    except ValueError:
        raise ValueError(f"unknown reduce op {op!r}; use one of {[o.value for o in ReduceOp]}") from None


def _run(pg: ProcessGroup, fn: Callable[[], Any], async_op: bool) -> Work | None:
    if async_op:
        return Work(future=pg.executor().submit(fn))
    pg.drain()
    fn()
    return None


@functools.cache
def _ring_module() -> Any:
    """``pyrt._comm``, loaded after mpi4py's MPI and checked to be the same library."""
    from mpi4py import MPI

    try:
        from pyrt import _comm
    except ImportError as exc:
        raise RuntimeError(
            "all_reduce(algorithm='ring') needs pyrt._comm, which was not built or cannot find "
            f"its MPI library ({exc}). Install the mpich wheel (`pip install mpich`) and reinstall "
            "pyrt, or use algorithm='mpi'"
        ) from exc
    if _comm.mpi_library_version() != MPI.Get_library_version():
        raise RuntimeError(
            "pyrt._comm was built against a different MPI than mpi4py loaded:\n"
            f"  pyrt._comm: {_comm.mpi_library_version().splitlines()[0]}\n"
            f"  mpi4py:     {MPI.Get_library_version().splitlines()[0]}\n"
            "Reinstall pyrt in this environment so both use one MPI"
        )
    return _comm


def _ring_available() -> bool:
    try:
        _ring_module()
    except RuntimeError:
        return False
    return True


def _pick_algorithm(algorithm: str, array: np.ndarray, op: ReduceOp) -> str:
    if algorithm not in ("auto", "ring", "mpi"):
        raise ValueError(f"all_reduce: algorithm must be 'auto', 'ring' or 'mpi', got {algorithm!r}")
    if algorithm != "auto":
        return algorithm
    ring_ok = array.dtype in (np.float32, np.float64) and _ring_available()
    return "ring" if ring_ok and array.nbytes >= RING_THRESHOLD_BYTES else "mpi"


def all_reduce(tensor: Tensor | np.ndarray, op: ReduceOp | str = ReduceOp.SUM,
               group: ProcessGroup | None = None, async_op: bool = False,
               algorithm: str = "auto") -> Work | None:
    """Reduce ``tensor`` across the group, in place, on every rank.

    ``op`` is sum, avg, max or min. ``algorithm="ring"`` runs pyrt's C++ ring
    (reduce-scatter then all-gather over point-to-point, float32/float64),
    ``"mpi"`` calls ``MPI_Allreduce``, ``"auto"`` picks by message size.

    Example (under ``mpiexec -n 2``)::

        x = pyrt.ones(4) * (dist.get_rank() + 1)
        dist.all_reduce(x)            # x is now [3, 3, 3, 3] on both ranks
    """
    pg = resolve_group(group, "all_reduce")
    array = _writable_array(tensor, "all_reduce")
    reduce_op = _as_op(op)
    chosen = _pick_algorithm(algorithm, array, reduce_op)
    if chosen == "ring":
        if array.dtype not in (np.float32, np.float64):
            raise TypeError(f"all_reduce: the ring reduces float32/float64, got {describe(array)}")
        ring = _ring_module()

    def run() -> None:
        contiguous = np.ascontiguousarray(array)
        if chosen == "ring":
            # One call without the GIL: the size check (an MPI_Allgather, as in
            # check_same_buffer), then the ring, which averages in C++: each
            # chunk's owner scales it once, before the all-gather.
            ring.ring_allreduce(pg.comm.py2f(), contiguous, reduce_op.value)
        else:
            check_same_buffer(pg, array, "all_reduce")
            if pg.size() == 1 or array.size == 0:
                return
            from mpi4py import MPI

            pg.comm.Allreduce(MPI.IN_PLACE, contiguous, op=_mpi_op(reduce_op))
            if reduce_op is ReduceOp.AVG:
                if np.issubdtype(contiguous.dtype, np.integer):
                    contiguous //= pg.size()
                else:
                    contiguous *= contiguous.dtype.type(1.0 / pg.size())
        if contiguous is not array:
            array[...] = contiguous

    return _run(pg, run, async_op)


def broadcast(tensor: Tensor | np.ndarray, src: int, group: ProcessGroup | None = None,
              async_op: bool = False) -> Work | None:
    """Copy ``tensor`` from global rank ``src`` to every rank of the group, in place.

    Example: ``dist.broadcast(weights, src=0)`` makes every rank hold rank 0's values.
    """
    pg = resolve_group(group, "broadcast")
    array = _writable_array(tensor, "broadcast")
    root = pg.group_rank(src, "broadcast: src")

    def run() -> None:
        check_same_buffer(pg, array, "broadcast")
        contiguous = np.ascontiguousarray(array)
        pg.comm.Bcast(contiguous, root=root)
        if contiguous is not array:
            array[...] = contiguous

    return _run(pg, run, async_op)


def all_gather_into_tensor(output: Tensor | np.ndarray, input: Tensor | np.ndarray,
                           group: ProcessGroup | None = None, async_op: bool = False) -> Work | None:
    """Concatenate every rank's ``input`` along dim 0 into ``output`` (world x input).

    Example: with 2 ranks, inputs of shape (3,) gather into an output of shape (6,).
    """
    pg = resolve_group(group, "all_gather")
    source, target = _array(input, "all_gather"), _writable_array(output, "all_gather")
    if target.size != source.size * pg.size() or target.dtype != source.dtype:
        raise ValueError(
            f"all_gather: output is {describe(target)} but {pg.size()} ranks x input "
            f"{describe(source)} need {source.size * pg.size()} {source.dtype}"
        )

    def run() -> None:
        check_same_buffer(pg, source, "all_gather")
        gathered = np.empty((pg.size(), source.size), dtype=source.dtype)
        pg.comm.Allgather(np.ascontiguousarray(source).reshape(-1), gathered)
        target[...] = gathered.reshape(target.shape)

    return _run(pg, run, async_op)


def all_gather(tensor_list: Sequence[Tensor | np.ndarray], tensor: Tensor | np.ndarray,
               group: ProcessGroup | None = None, async_op: bool = False) -> Work | None:
    """Fill ``tensor_list[r]`` with rank r's ``tensor`` on every rank.

    Example::

        parts = [pyrt.zeros(3) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, pyrt.ones(3) * dist.get_rank())
    """
    pg = resolve_group(group, "all_gather")
    source = _array(tensor, "all_gather")
    targets = [_writable_array(t, "all_gather") for t in tensor_list]
    if len(targets) != pg.size():
        raise ValueError(f"all_gather: tensor_list has {len(targets)} entries for {pg.size()} ranks")
    for i, t in enumerate(targets):
        if t.shape != source.shape or t.dtype != source.dtype:
            raise ValueError(f"all_gather: tensor_list[{i}] is {describe(t)}, input is {describe(source)}")
    gathered = np.empty((pg.size(), *source.shape), dtype=source.dtype)

    def run() -> None:
        check_same_buffer(pg, source, "all_gather")
        pg.comm.Allgather(np.ascontiguousarray(source), gathered)
        for t, part in zip(targets, gathered, strict=True):
            t[...] = part

    return _run(pg, run, async_op)


def reduce_scatter_tensor(output: Tensor | np.ndarray, input: Tensor | np.ndarray,
                          op: ReduceOp | str = ReduceOp.SUM, group: ProcessGroup | None = None,
                          async_op: bool = False) -> Work | None:
    """Reduce ``input`` (world x output elements) across ranks; rank r keeps block r.

    Example: with 2 ranks and inputs of shape (4,), each rank's output (2,) holds
    its half of the element-wise sum.
    """
    pg = resolve_group(group, "reduce_scatter")
    source, target = _array(input, "reduce_scatter"), _writable_array(output, "reduce_scatter")
    reduce_op = _as_op(op)
    if source.size != target.size * pg.size() or target.dtype != source.dtype:
        raise ValueError(
            f"reduce_scatter: input is {describe(source)} but {pg.size()} ranks x output "
            f"{describe(target)} need {target.size * pg.size()} {target.dtype}"
        )

    def run() -> None:
        check_same_buffer(pg, source, "reduce_scatter")
        block = np.empty(target.size, dtype=target.dtype)
        pg.comm.Reduce_scatter_block(np.ascontiguousarray(source).reshape(-1), block,
                                     op=_mpi_op(reduce_op))
        if reduce_op is ReduceOp.AVG:
            block = block / pg.size() if np.issubdtype(block.dtype, np.floating) else block // pg.size()
        target[...] = block.reshape(target.shape)

    return _run(pg, run, async_op)


def reduce_scatter(output: Tensor | np.ndarray, input_list: Sequence[Tensor | np.ndarray],
                   op: ReduceOp | str = ReduceOp.SUM, group: ProcessGroup | None = None,
                   async_op: bool = False) -> Work | None:
    """Reduce ``input_list[r]`` across ranks into rank r's ``output``.

    Example::

        out = pyrt.zeros(3)
        dist.reduce_scatter(out, [pyrt.ones(3) for _ in range(dist.get_world_size())])
        # out is [world, world, world]
    """
    pg = resolve_group(group, "reduce_scatter")
    parts = [_array(t, "reduce_scatter") for t in input_list]
    if len(parts) != pg.size():
        raise ValueError(f"reduce_scatter: input_list has {len(parts)} entries for {pg.size()} ranks")
    target = _array(output, "reduce_scatter")
    for i, p in enumerate(parts):
        if p.shape != target.shape or p.dtype != target.dtype:
            raise ValueError(
                f"reduce_scatter: input_list[{i}] is {describe(p)}, output is {describe(target)}"
            )
    stacked = np.stack(parts) if parts else np.empty((0,), target.dtype)
    return reduce_scatter_tensor(output, stacked, op=op, group=pg, async_op=async_op)


def barrier(group: ProcessGroup | None = None, async_op: bool = False) -> Work | None:
    """Wait until every rank of the group reaches this call.

    Example: ``dist.barrier()`` before rank 0 reads files the others wrote.
    """
    pg = resolve_group(group, "barrier")
    return _run(pg, pg.comm.Barrier, async_op)


# --- point to point -------------------------------------------------------------
# Transfers use the group's communicator directly (MPI orders messages between
# a pair of ranks per tag), so they never wait behind queued collectives.

def _peer(pg: ProcessGroup, rank: int | None, what: str) -> int:
    from mpi4py import MPI

    if rank is None:
        return MPI.ANY_SOURCE
    peer = pg.group_rank(rank, what)
    if peer == pg.rank():
        raise ValueError(f"{what}: rank {rank} cannot send to or receive from itself")
    return peer


def _contiguous(array: np.ndarray, what: str) -> np.ndarray:
    if not array.flags.c_contiguous:
        raise ValueError(f"{what}: the tensor must be contiguous, got strides {array.strides}")
    return array


def send(tensor: Tensor | np.ndarray, dst: int, group: ProcessGroup | None = None,
         tag: int = 0) -> None:
    """Send ``tensor`` to global rank ``dst`` (blocks until the buffer may be reused).

    Example: rank 0 calls ``dist.send(x, dst=1)`` while rank 1 calls ``dist.recv(x, src=0)``.
    """
    pg = resolve_group(group, "send")
    pg.comm.Send(_contiguous(_array(tensor, "send"), "send"), dest=_peer(pg, dst, "send: dst"), tag=tag)


def recv(tensor: Tensor | np.ndarray, src: int | None = None, group: ProcessGroup | None = None,
         tag: int = 0) -> int:
    """Receive into ``tensor`` from global rank ``src`` (any rank if None); returns the sender.

    Example: ``sender = dist.recv(x)`` accepts a message from whichever rank sends first.
    """
    from mpi4py import MPI

    pg = resolve_group(group, "recv")
    array = _contiguous(_writable_array(tensor, "recv"), "recv")
    status = MPI.Status()
    pg.comm.Recv(array, source=_peer(pg, src, "recv: src"), tag=tag, status=status)
    _check_received(status, array, "recv")
    return pg.global_ranks[status.Get_source()]


def _check_received(status: Any, array: np.ndarray, what: str) -> None:
    from mpi4py import MPI

    count = status.Get_count(MPI.BYTE)
    if count != array.nbytes:
        raise ValueError(f"{what}: received {count} bytes into {describe(array)} ({array.nbytes} bytes)")


def isend(tensor: Tensor | np.ndarray, dst: int, group: ProcessGroup | None = None,
          tag: int = 0) -> Work:
    """Start sending ``tensor`` to ``dst``; ``wait()`` on the result before reusing it.

    Example: ``work = dist.isend(x, dst=1); ...; work.wait()``
    """
    pg = resolve_group(group, "isend")
    array = _contiguous(_array(tensor, "isend"), "isend")
    return Work(request=pg.comm.Isend(array, dest=_peer(pg, dst, "isend: dst"), tag=tag))


def irecv(tensor: Tensor | np.ndarray, src: int | None = None, group: ProcessGroup | None = None,
          tag: int = 0) -> Work:
    """Start receiving into ``tensor``; ``wait()`` before reading it. ``result()`` is the sender.

    Example: ``work = dist.irecv(x, src=0); work.wait()``
    """
    pg = resolve_group(group, "irecv")
    array = _contiguous(_writable_array(tensor, "irecv"), "irecv")
    request = pg.comm.Irecv(array, source=_peer(pg, src, "irecv: src"), tag=tag)

    def finish(status: Any) -> int:
        _check_received(status, array, "irecv")
        return pg.global_ranks[status.Get_source()]

    return Work(request=request, on_complete=finish)


