"""Collectives and point-to-point transfers on arrays and Tensors.

Every function takes ``group=`` (default: the world) and works in place on the
tensor's array, like PyTorch's. Source and destination ranks are global ranks.
``async_op=True`` returns a ``Work`` and runs the collective on the group's
communication thread; synchronous calls first let that thread finish what was
queued, so every rank issues collectives to MPI in the same order.

Before data moves, every rank checks that the group's ranks made the same
call (kind, op, root, shape, dtype, transport; ``agreement.py``): MPI itself
would truncate, hang, or return a silently wrong result. Point-to-point
transfers send a header the receiver checks against its buffer.
"""

from __future__ import annotations

import contextlib
import enum
import functools
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from pyrt.backend import describe
from pyrt.distributed import agreement, native, shm, staging, watchdog
from pyrt.distributed.agreement import Call
from pyrt.distributed.averaging import divide_by_group_size
from pyrt.distributed.process_group import ProcessGroup, resolve_group
from pyrt.distributed.work import Work
from pyrt.profiler import recorder as _profiling
from pyrt.tensor import Tensor

__all__ = [
    "ReduceOp", "all_gather", "all_gather_into_tensor", "all_reduce", "barrier", "broadcast",
    "irecv", "isend", "recv", "reduce_scatter", "reduce_scatter_tensor", "select_algorithm", "send",
]


class ReduceOp(enum.Enum):
    SUM = "sum"
    AVG = "avg"
    MAX = "max"
    MIN = "min"
    PRODUCT = "product"


# "auto" (python -m pyrt.bench allreduce, docs/benchmarks.md): an array in the group's
# shared memory (SharedMemoryComm.allocate; DDP's buckets) takes the zero-copy "shm",
# 2.5-4.3x MPICH from 256 KB at 2 ranks. Any other array: below this many bytes
# MPI_Allreduce's latency-optimised algorithms win, above it the ring's
# bandwidth-optimal schedule does (it leads from 64 KB at 2 ranks and from 256 KB at 4
# oversubscribed ranks). The staged "shm" copies in and out of the window, about
# MPICH's speed at 2 ranks (0.9-1.05x), so "auto" leaves it to be asked for.
RING_THRESHOLD_BYTES = 256 * 1024

_DTYPE_CODES = {np.dtype(t): i for i, t in enumerate(
    ["float32", "float64", "float16", "int64", "int32", "int16", "int8", "uint8", "bool"])}


def _array(x: Tensor | np.ndarray, what: str) -> np.ndarray:
    array = x.data if isinstance(x, Tensor) else x
    if staging.device_array(array) is not None:
        raise TypeError(f"{what}: got a GPU (cupy) array; all_reduce and broadcast take GPU tensors "
                        "(staged through host memory), the other collectives host ones: use .cpu()")
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


class _Check:
    """The agreement check for one call: numbered when the call is made (in call order), run where the
    data moves (``check()``), or carried by the shared-memory all-reduce's first barrier (``record()``)."""

    def __init__(self, pg: ProcessGroup, call: Call) -> None:
        if (context := agreement.current()) is not None:
            call = call._replace(context=context)
        self.pg, self.call, self.seq = pg, call, pg.next_sequence()

    def __call__(self) -> int:
        agreement.check_call(self.pg, self.call, self.seq)
        return self.seq

    def record(self) -> np.ndarray:
        return self.call.encode(self.seq)

    def mismatch(self, every: np.ndarray) -> Exception:
        return agreement.mismatch_error(self.pg, self.call, self.seq, every)


@functools.cache
def _mpi_op(op: ReduceOp) -> Any:
    from mpi4py import MPI

    return {ReduceOp.SUM: MPI.SUM, ReduceOp.AVG: MPI.SUM, ReduceOp.MAX: MPI.MAX,
            ReduceOp.MIN: MPI.MIN, ReduceOp.PRODUCT: MPI.PROD}[op]


@functools.cache
def _in_place() -> Any:
    from mpi4py import MPI

    return MPI.IN_PLACE


def _as_op(op: ReduceOp | str) -> ReduceOp:
    try:
        return op if isinstance(op, ReduceOp) else ReduceOp(str(op).lower())
    except ValueError:
        raise ValueError(f"unknown reduce op {op!r}; use one of {[o.value for o in ReduceOp]}") from None


def _run(pg: ProcessGroup, fn: Callable[[], Any], async_op: bool, call: Call) -> Work | None:
    if _profiling.active is not None:
        fn = _profiling.active.deferred(fn, call.kind, "collective", _trace_args(pg, call, async_op))
    if async_op:
        return Work(future=pg.executor().submit(fn))
    pg.drain()
    fn()
    return None


def _trace_args(pg: ProcessGroup, call: Call, async_op: bool) -> dict[str, Any]:
    """What the profiler records about a collective: this rank's buffer, op, root, transport."""
    shape = () if call.shape is None else tuple(int(d) for d in call.shape)
    nbytes = 0 if call.dtype is None else int(np.prod(shape)) * np.dtype(call.dtype).itemsize
    args: dict[str, Any] = {"shapes": [list(shape)] if call.shape is not None else [], "bytes": nbytes,
                            "dtypes": [] if call.dtype is None else [np.dtype(call.dtype).name],
                            "group": pg.name, "async": async_op}
    args.update({k: v for k, v in (("op", call.op), ("root", call.root), ("transport", call.transport)) if v})
    if (context := agreement.current()) is not None:
        args["context"] = f"{context[0]} {context[1]}"
    return args


def _p2p_range(kind: str, tensor: Any, peer: int | None, tag: int) -> contextlib.AbstractContextManager[None]:
    """A profiler range for a point-to-point call, with its bytes and peer (a no-op when not profiling)."""
    if _profiling.active is None:
        return contextlib.nullcontext()
    args = {**_profiling.describe_arrays([tensor]), "peer": "any" if peer is None else peer, "tag": tag}
    return _profiling.active.span(kind, "p2p", args)


_ALGORITHMS = ("auto", "shm", "hierarchical", "ring", "mpi")


def _pick_algorithm(algorithm: str, array: np.ndarray, op: ReduceOp, pg: ProcessGroup) -> tuple[str, int]:
    """The algorithm to run, and where ``array`` sits in the group's shared memory
    (``SharedMemoryComm.symmetric_offset``) when it runs zero-copy through it, else -1."""
    if algorithm not in _ALGORITHMS:
        raise ValueError(f"all_reduce: algorithm must be one of {_ALGORITHMS}, got {algorithm!r}")
    if algorithm == "shm" and not pg.on_one_node:
        raise ValueError(f"all_reduce: algorithm='shm' needs every rank of {pg.name} on one node; "
                         "use 'hierarchical' across nodes")
    if algorithm == "hierarchical" and pg.on_one_node:
        algorithm = "shm"  # one node: the hierarchy is its first level
    if algorithm in ("shm", "hierarchical") and array.dtype not in shm.DTYPES:
        raise TypeError(f"all_reduce: algorithm={algorithm!r} reduces float32, float64, int32 and int64, got "
                        f"{describe(array)}; use algorithm='mpi'")
    if algorithm == "shm":
        # A C-contiguous array inside a buffer every rank maps (DDP's buckets) is reduced in place,
        # zero-copy; every rank must pass it at the same place, so the place is part of the agreement.
        # (node_shared_memory: choosing must not create a group's shared memory; a 1-rank group
        # makes it when it first runs a staged shm call)
        node = pg.node_shared_memory()
        return "shm", -1 if node is None else node.symmetric_offset(array)
    if algorithm != "auto":
        return algorithm, -1
    if (pg.size() > 1 and array.dtype in shm.DTYPES and (node := pg.node_shared_memory()) is not None
            and (offset := node.symmetric_offset(array)) >= 0):
        return "shm", offset  # an array in the group's shared memory (DDP's buckets): zero-copy
    ring_ok = (array.dtype in (np.float32, np.float64) and op is not ReduceOp.PRODUCT
               and native.comm_available())
    return "ring" if ring_ok and array.nbytes >= RING_THRESHOLD_BYTES else "mpi", -1


def select_algorithm(tensor: Tensor | np.ndarray, op: ReduceOp | str = ReduceOp.SUM,
                     group: ProcessGroup | None = None, algorithm: str = "auto") -> str:
    """The algorithm ``all_reduce(tensor, op, group, algorithm=algorithm)`` runs (no communication).

    Example: ``select_algorithm(np.zeros(1 << 20, np.float32))`` is ``"ring"`` (``"mpi"``
    without pyrt's ring module).
    """
    pg = resolve_group(group, "select_algorithm")
    array = staging.device_array(tensor)  # a GPU array's host copy takes the same algorithm
    return _pick_algorithm(algorithm, _array(tensor, "select_algorithm") if array is None else array,
                           _as_op(op), pg)[0]


def all_reduce(tensor: Tensor | np.ndarray, op: ReduceOp | str = ReduceOp.SUM,
               group: ProcessGroup | None = None, async_op: bool = False,
               algorithm: str = "auto") -> Work | None:
    """Reduce ``tensor`` across the group, in place, on every rank.

    ``op`` is sum, avg, max, min or product. ``algorithm="shm"`` reduces
    through node shared memory (every rank of the group on one machine;
    ``shm.py``), ``"hierarchical"`` through shared memory inside each node
    and MPI between node leaders, ``"ring"`` runs pyrt's C++ ring
    (reduce-scatter then all-gather over point-to-point, float32/float64),
    ``"mpi"`` calls ``MPI_Allreduce``. ``"auto"`` takes ``"shm"`` for an array
    in the group's shared memory (zero-copy; DDP's buckets live there), else the
    ring from 256 KB, else MPI.
    Every algorithm computes ``avg`` as its ``sum`` divided once by the group
    size (``averaging.py``); the sums themselves may differ in the last bits
    between algorithms at more than 2 ranks, since each adds in its own order.

    A GPU tensor is reduced through a pinned host copy (``staging.py``): the
    current stream is synchronised before MPI reads it, the result is copied
    back (for ``async_op``, when the returned ``Work`` is waited for). With a
    CUDA-aware MPI and ``"mpi"`` chosen, MPI reduces the device buffer itself.

    Example (under ``mpiexec -n 2``)::

        x = pyrt.ones(4) * (dist.get_rank() + 1)
        dist.all_reduce(x)            # x is now [3, 3, 3, 3] on both ranks
    """
    pg = resolve_group(group, "all_reduce")
    reduce_op = _as_op(op)
    # The hot case, a repeated call on an array in the group's shared memory (a training loop's),
    # reduced now: its checks and call are worked out once, and what remains is the agreement
    # stamp and the C++ call. At 256 KB that C++ call takes ~17 us, so Python's share decides
    # the ratio to MPI_Allreduce. Everything else takes the general path below.
    array = tensor.data if isinstance(tensor, Tensor) else tensor
    if (not async_op and _profiling.active is None and type(array) is np.ndarray
            and (node := pg.node_shared_memory()) is not None
            and (plan := _zero_copy_plan(node, array, reduce_op, algorithm)) is not None):
        _zero_copy_all_reduce(pg, node, array, plan)
        return None
    if (on_gpu := staging.device_array(tensor)) is not None:
        if _pick_algorithm(algorithm, on_gpu, reduce_op, pg)[0] != "mpi" or not staging.direct(on_gpu):
            return staging.through_host(
                on_gpu, lambda host: all_reduce(host, op, group, async_op, algorithm), async_op)
        staging.synchronize(on_gpu)  # a CUDA-aware MPI reads the device buffer itself
        array, chosen, shared_offset = on_gpu, "mpi", -1
    else:
        array = _writable_array(tensor, "all_reduce")
        chosen, shared_offset = _pick_algorithm(algorithm, array, reduce_op, pg)
    if chosen == "ring":
        if array.dtype not in (np.float32, np.float64) or reduce_op is ReduceOp.PRODUCT:
            raise TypeError(f"all_reduce: the ring reduces float32/float64 by sum, avg, max or min, got "
                            f"{describe(array)} by {reduce_op.value}")
        ring = native.comm_module()
    # positional: a NamedTuple's keyword defaults cost a microsecond per call
    call = Call("all_reduce", array.dtype, array.shape, reduce_op.value, None, chosen, None, shared_offset)
    check = _Check(pg, call)

    def run() -> None:
        if chosen == "shm":
            contiguous = np.ascontiguousarray(array)
            every = pg.shared_memory().all_reduce(contiguous, reduce_op.value, check.record(), check.seq,
                                                  shared_offset)
            if every is not None:
                raise check.mismatch(every)
            if contiguous is not array:
                array[...] = contiguous
            return
        seq = check()
        if on_gpu is not None:
            if pg.size() > 1 and array.size:
                staging.all_reduce_on_device(pg.comm, array, _mpi_op(reduce_op), reduce_op is ReduceOp.AVG)
            return
        contiguous = np.ascontiguousarray(array)
        if chosen == "hierarchical":
            pg.shared_memory().all_reduce(contiguous, reduce_op.value, seq)
        elif chosen == "ring":
            # The ring averages in C++, by the same rule (divide_by_group_size): each chunk's
            # owner divides its sum once, before the all-gather.
            ring.ring_allreduce(pg.comm.py2f(), contiguous, reduce_op.value)
        else:
            if pg.size() == 1 or array.size == 0:
                return
            pg.comm.Allreduce(_in_place(), contiguous, op=_mpi_op(reduce_op))
            if reduce_op is ReduceOp.AVG:
                divide_by_group_size(contiguous, pg.size())
        if contiguous is not array:
            array[...] = contiguous

    return _run(pg, run, async_op, call)


_MAX_PLANS = 1024


def _zero_copy_plan(node: shm.SharedMemoryComm, array: np.ndarray, op: ReduceOp,
                    algorithm: str) -> Call | None:
    """The call ``all_reduce`` makes for ``array`` when it runs zero-copy through ``node`` (the general
    path's checks and choice, made once per array and kept until the shared buffers change), else None."""
    if algorithm not in ("auto", "shm", "hierarchical") or not array.flags.writeable or not node.symmetric:
        return None
    key = (shm._address(array), array.shape, array.strides, array.dtype, op)
    call = node.plans.get(key)
    if call is None:
        if array.dtype not in shm.DTYPES or (offset := node.symmetric_offset(array)) < 0:
            return None  # not kept: arrays outside shared memory come and go at any address
        if len(node.plans) >= _MAX_PLANS:  # views sliding over a buffer must not grow it without end
            node.plans.clear()
        call = node.plans[key] = Call("all_reduce", array.dtype, array.shape, op.value, None, "shm", None,
                                      offset)
    return call


def _zero_copy_all_reduce(pg: ProcessGroup, node: shm.SharedMemoryComm, array: np.ndarray,
                          call: Call) -> None:
    """What the general path does for ``call`` (``_zero_copy_plan``) when it runs now, unprofiled."""
    if (context := agreement.current()) is not None:
        call = call._replace(context=context)
    seq = pg.next_sequence()
    pg.drain()
    every = node.all_reduce(array, call.op, call.encode(seq), seq, call.shared_offset)
    if every is not None:
        raise agreement.mismatch_error(pg, call, seq, every)


def broadcast(tensor: Tensor | np.ndarray, src: int, group: ProcessGroup | None = None,
              async_op: bool = False) -> Work | None:
    """Copy ``tensor`` from global rank ``src`` to every rank of the group, in place.

    A GPU tensor goes through a pinned host copy, as in ``all_reduce``.

    Example: ``dist.broadcast(weights, src=0)`` makes every rank hold rank 0's values.
    """
    if (on_gpu := staging.device_array(tensor)) is not None:
        if not staging.direct(on_gpu):
            return staging.through_host(on_gpu, lambda host: broadcast(host, src, group, async_op), async_op)
        staging.synchronize(on_gpu)
    pg = resolve_group(group, "broadcast")
    array = on_gpu if on_gpu is not None else _writable_array(tensor, "broadcast")
    root = pg.group_rank(src, "broadcast: src")
    call = Call("broadcast", array.dtype, array.shape, root=src)
    check = _Check(pg, call)

    def run() -> None:
        check()
        if on_gpu is not None:
            staging.broadcast_on_device(pg.comm, array, root)
            return
        contiguous = np.ascontiguousarray(array)
        pg.comm.Bcast(contiguous, root=root)
        if contiguous is not array:
            array[...] = contiguous

    return _run(pg, run, async_op, call)


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

    call = Call("all_gather", source.dtype, source.shape)
    check = _Check(pg, call)

    def run() -> None:
        check()
        gathered = np.empty((pg.size(), source.size), dtype=source.dtype)
        pg.comm.Allgather(np.ascontiguousarray(source).reshape(-1), gathered)
        target[...] = gathered.reshape(target.shape)

    return _run(pg, run, async_op, call)


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
    call = Call("all_gather", source.dtype, source.shape)
    check = _Check(pg, call)

    def run() -> None:
        check()
        pg.comm.Allgather(np.ascontiguousarray(source), gathered)
        for t, part in zip(targets, gathered, strict=True):
            t[...] = part

    return _run(pg, run, async_op, call)


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

    call = Call("reduce_scatter", source.dtype, source.shape, reduce_op.value)
    check = _Check(pg, call)

    def run() -> None:
        check()
        block = np.empty(target.size, dtype=target.dtype)
        pg.comm.Reduce_scatter_block(np.ascontiguousarray(source).reshape(-1), block,
                                     op=_mpi_op(reduce_op))
        if reduce_op is ReduceOp.AVG:
            divide_by_group_size(block, pg.size())
        target[...] = block.reshape(target.shape)

    return _run(pg, run, async_op, call)


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
    # The agreement exchange is itself a barrier: every rank's record arrives before any returns.
    call = Call("barrier")
    return _run(pg, _Check(pg, call), async_op, call)


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


def _header(array: np.ndarray) -> np.ndarray:
    return Call("send", array.dtype, array.shape).encode(0)


def _header_matches(header: np.ndarray, array: np.ndarray) -> bool:
    return np.array_equal(header[4:], _header(array)[4:])  # dtype, shape (seq, kind, op, root unused)


def _mismatch(header: np.ndarray, array: np.ndarray, sender: int, receiver: int, what: str) -> Exception:
    sent = Call.describe(header).removeprefix("send(").rsplit(")", 1)[0]
    return agreement.CollectiveMismatchError(
        f"{what}: rank {sender} sent {sent} but rank {receiver} receives into "
        f"{array.dtype.name} {tuple(array.shape)}")


class _Receive:
    """An MPI receive in two steps: the header, checked against the buffer, then the data.

    Quacks like an MPI request (``Test(status)``), so ``Work`` and
    ``watchdog.wait_for`` wait on it like on any other. With a known source
    the data receive is posted at once (a large message need not wait for the
    header's round trip); from any source it is posted once the header names
    the sender.
    """

    def __init__(self, pg: ProcessGroup, array: np.ndarray, source: int, tag: int, what: str) -> None:
        from mpi4py import MPI

        self.pg, self.array, self.tag, self.what = pg, array, tag, what
        self.header = np.empty(agreement.RECORD, dtype=np.int64)
        self.header_status = MPI.Status()
        self.header_request = pg.header_comm.Irecv(self.header, source=source, tag=tag)
        self.data = None if source == MPI.ANY_SOURCE else pg.comm.Irecv(array, source=source, tag=tag)
        self.checked = False

    def Test(self, status: Any) -> bool:
        if not self.checked:
            if not self.header_request.Test(self.header_status):
                return False
            sender = self.header_status.Get_source()
            if not _header_matches(self.header, self.array):
                self._discard_data(sender)
                raise _mismatch(self.header, self.array, self.pg.global_ranks[sender],
                                self.pg.global_ranks[self.pg.rank()], self.what)
            self.checked = True
            if self.data is None:
                self.data = self.pg.comm.Irecv(self.array, source=sender, tag=self.tag)
        return self.data.Test(status)

    def _discard_data(self, sender: int) -> None:
        """Take the refused message off the wire, so the next receive gets the next header's data."""
        from mpi4py import MPI

        status = MPI.Status()
        if self.data is not None:
            self.data.Cancel()
            try:
                self.data.Wait(status)
            except MPI.Exception:  # matched and truncated: consumed
                return
            if not status.Is_cancelled():
                return  # matched: consumed (into the buffer, which the error then disowns)
        self.pg.comm.Probe(source=sender, tag=self.tag, status=status)
        self.pg.comm.Recv(bytearray(status.Get_count(MPI.BYTE)), source=sender, tag=self.tag)


def _wait(pg: ProcessGroup, request: Any, status: Any, kind: str, timeout: float | None) -> None:
    with _profiling.range_if_active(f"wait {kind}", "p2p"):
        watchdog.wait_for(request, status, group=pg.name, global_ranks=pg.global_ranks, seq=0, kind=kind,
                          timeout=timeout)


def send(tensor: Tensor | np.ndarray, dst: int, group: ProcessGroup | None = None,
         tag: int = 0) -> None:
    """Send ``tensor`` to global rank ``dst`` (blocks until the buffer may be reused).

    Example: rank 0 calls ``dist.send(x, dst=1)`` while rank 1 calls ``dist.recv(x, src=0)``.
    """
    with _p2p_range("send", tensor, dst, tag):
        isend(tensor, dst, group=group, tag=tag).wait()


def recv(tensor: Tensor | np.ndarray, src: int | None = None, group: ProcessGroup | None = None,
         tag: int = 0) -> int:
    """Receive into ``tensor`` from global rank ``src`` (any rank if None); returns the sender.

    Example: ``sender = dist.recv(x)`` accepts a message from whichever rank sends first.
    """
    with _p2p_range("recv", tensor, src, tag):
        return irecv(tensor, src, group=group, tag=tag).result()


def isend(tensor: Tensor | np.ndarray, dst: int, group: ProcessGroup | None = None,
          tag: int = 0) -> Work:
    """Start sending ``tensor`` to ``dst``; ``wait()`` on the result before reusing it.

    Example: ``work = dist.isend(x, dst=1); ...; work.wait()``
    """
    pg = resolve_group(group, "isend")
    array = _contiguous(_array(tensor, "isend"), "isend")
    peer = _peer(pg, dst, "isend: dst")
    with _p2p_range("isend", array, dst, tag):
        # A few dozen bytes: MPI sends them eagerly, so this returns without waiting for the receiver.
        pg.header_comm.Send(_header(array), dest=peer, tag=tag)
        return Work(request=pg.comm.Isend(array, dest=peer, tag=tag),
                    wait=lambda request, status, timeout: _wait(pg, request, status, "send", timeout))


def irecv(tensor: Tensor | np.ndarray, src: int | None = None, group: ProcessGroup | None = None,
          tag: int = 0) -> Work:
    """Start receiving into ``tensor``; ``wait()`` before reading it. ``result()`` is the sender.

    Example: ``work = dist.irecv(x, src=0); work.wait()``
    """
    pg = resolve_group(group, "irecv")
    array = _contiguous(_writable_array(tensor, "irecv"), "irecv")
    with _p2p_range("irecv", array, src, tag):
        request = _Receive(pg, array, _peer(pg, src, "irecv: src"), tag, "recv")
    return Work(request=request, on_complete=lambda status: pg.global_ranks[status.Get_source()],
                wait=lambda request, status, timeout: _wait(pg, request, status, "recv", timeout))
