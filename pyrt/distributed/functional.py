"""Differentiable communication: autograd functions whose backward is the conjugate transfer.

Chainer's pattern for model parallelism: ``send`` ships a tensor to another
rank and returns a 0-d *delegate* tensor; calling ``backward`` on the delegate
receives the gradient that the other rank sends back. ``recv`` returns the
tensor another rank sent, recorded in the graph so that its backward sends the
gradient home. A model split by hand over ranks then trains with ordinary
``backward`` calls on each rank::

    # rank 0                                  # rank 1
    h = stage0(x)                             h = recv(src=0)
    send(h, dst=1).backward()                 loss_fn(stage1(h), y).backward()

The contract is the delegate pattern's: every ``recv`` output must be on the
path of the receiving rank's ``backward`` (and every delegate be
differentiated), or the sender waits for a gradient that is never sent.

Each message carries a small header (shape and dtype) before the data, so the
receiver needs to know nothing in advance. The pipeline schedules
(``pyrt.distributed.pipelining``) move activations with non-blocking requests of
their own; they use the header from here to learn shapes on their first step.

Tensor parallelism (Megatron-LM's intra-layer split) needs four more
functions in conjugate pairs, defined below: ``copy_to_parallel`` /
``reduce_from_parallel`` and ``scatter_to_parallel`` / ``gather_from_parallel``.
``CommCounter`` counts the collectives they issue.

The ops in ``pyrt.ops`` never import MPI; these functions live here, beside
the rest of the distributed package.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

from pyrt.autograd import Function, is_grad_enabled
from pyrt.backend import describe
from pyrt.distributed.collectives import _DTYPE_CODES, ReduceOp, all_gather_into_tensor, all_reduce
from pyrt.distributed.collectives import recv as recv_array
from pyrt.distributed.collectives import send as send_array
from pyrt.distributed.process_group import ProcessGroup, resolve_group
from pyrt.tensor import Tensor

__all__ = [
    "CommCounter", "TensorMeta", "copy_to_parallel", "gather_from_parallel", "recv",
    "reduce_from_parallel", "scatter_to_parallel", "send",
]

_MAX_DIMS = 8
_DTYPES = {code: dtype for dtype, code in _DTYPE_CODES.items()}


class TensorMeta:
    """Shape and dtype of a tensor in flight, packed into a fixed-size int64 header.

    >>> meta = TensorMeta((8, 3), np.dtype("float32"))
    >>> TensorMeta.unpack(meta.pack()) == meta
    True
    """

    HEADER_SIZE = 2 + _MAX_DIMS

    def __init__(self, shape: tuple[int, ...], dtype: np.dtype) -> None:
        self.shape = tuple(int(n) for n in shape)
        self.dtype = np.dtype(dtype)

    @classmethod
    def of(cls, array: Any) -> TensorMeta:
        return cls(array.shape, array.dtype)

    def pack(self) -> np.ndarray:
        if len(self.shape) > _MAX_DIMS:
            raise ValueError(f"cannot send a tensor of {len(self.shape)} dims (at most {_MAX_DIMS})")
        if self.dtype not in _DTYPE_CODES:
            raise TypeError(f"cannot send a tensor of dtype {self.dtype}")
        header = np.zeros(self.HEADER_SIZE, dtype=np.int64)
        header[0], header[1] = len(self.shape), _DTYPE_CODES[self.dtype]
        header[2:2 + len(self.shape)] = self.shape
        return header

    @classmethod
    def unpack(cls, header: np.ndarray) -> TensorMeta:
        ndim = int(header[0])
        return cls(tuple(int(n) for n in header[2:2 + ndim]), _DTYPES[int(header[1])])

    def empty(self) -> np.ndarray:
        return np.empty(self.shape, dtype=self.dtype)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, TensorMeta) and (self.shape, self.dtype) == (other.shape, other.dtype)

    def __hash__(self) -> int:
        return hash((self.shape, self.dtype))

    def __repr__(self) -> str:
        return f"{self.shape} {self.dtype}"


def _send_with_header(array: np.ndarray, dst: int, pg: ProcessGroup, tag: int) -> None:
    send_array(TensorMeta.of(array).pack(), dst, group=pg, tag=tag)
    send_array(np.ascontiguousarray(array), dst, group=pg, tag=tag)


def _recv_with_header(src: int, pg: ProcessGroup, tag: int) -> np.ndarray:
    header = np.empty(TensorMeta.HEADER_SIZE, dtype=np.int64)
    recv_array(header, src, group=pg, tag=tag)
    array = TensorMeta.unpack(header).empty()
    recv_array(array, src, group=pg, tag=tag)
    return array


class _Send(Function):
    def forward(self, x: Any, dst: int, pg: ProcessGroup, tag: int) -> Any:
        self.peer, self.pg, self.tag, self.meta = dst, pg, tag, TensorMeta.of(x)
        _send_with_header(x, dst, pg, tag)
        return np.zeros((), dtype=x.dtype)

    def backward(self, grad: Any) -> tuple[Any, None, None, None]:
        # The delegate's own gradient is meaningless; the input's comes from the peer.
        grad_x = _recv_with_header(self.peer, self.pg, self.tag)
        if TensorMeta.of(grad_x) != self.meta:
            raise RuntimeError(
                f"send: rank {self.peer} sent back a gradient of {TensorMeta.of(grad_x)} for a "
                f"tensor of {self.meta}"
            )
        return grad_x, None, None, None


class _Recv(Function):
    def forward(self, src: int, pg: ProcessGroup, tag: int) -> Any:
        self.peer, self.pg, self.tag = src, pg, tag
        return _recv_with_header(src, pg, tag)

    def backward(self, grad: Any) -> tuple[()]:
        _send_with_header(grad, self.peer, self.pg, self.tag)
        return ()


def send(tensor: Tensor, dst: int, group: ProcessGroup | None = None, tag: int = 0) -> Tensor:
    """Send ``tensor`` to global rank ``dst``; ``backward`` on the result receives its gradient.

    Returns a 0-d delegate tensor. Its backward (alone, or as one of several
    roots of ``pyrt.autograd.backward``) receives the gradient of ``tensor``
    from ``dst``, which ``dst`` sends when its ``recv``'s output is
    differentiated, and carries it on through this rank's graph.

    Example (under ``mpiexec -n 2``)::

        if dist.get_rank() == 0:
            send(layer(x), dst=1).backward()    # layer's gradients arrive from rank 1
        else:
            (recv(src=0) ** 2).sum().backward()
    """
    pg = resolve_group(group, "send")
    if not isinstance(tensor, Tensor):
        raise TypeError(f"send: expected a Tensor, got {type(tensor).__name__}")
    return _Send.apply(tensor, dst, pg, tag)


def recv(src: int, group: ProcessGroup | None = None, tag: int = 0) -> Tensor:
    """Receive the tensor rank ``src`` sends with ``send``; its backward sends the gradient back.

    The shape and dtype come with the message. Under grad mode the result
    requires grad, so the sender's delegate can wait for its gradient.

    Example (under ``mpiexec -n 2``, rank 1)::

        h = recv(src=0)
        loss = loss_fn(stage1(h), y)
        loss.backward()                          # h's gradient goes back to rank 0
    """
    pg = resolve_group(group, "recv")
    fn = _Recv()
    array = fn.forward(src, pg, tag)
    if not is_grad_enabled() or not np.issubdtype(array.dtype, np.floating):
        fn.release()
        return Tensor(array)
    return Tensor._from_function(array, fn)


# --- tensor parallelism: the conjugate functions ----------------------------------
# Megatron-LM's intra-layer split needs four autograd functions, in conjugate
# pairs: what one does forward, its partner does backward.
#
#   copy_to_parallel      forward: identity          backward: all-reduce (sum)
#   reduce_from_parallel  forward: all-reduce (sum)  backward: identity
#   scatter_to_parallel   forward: keep my slice     backward: all-gather
#   gather_from_parallel  forward: all-gather        backward: keep my slice
#
# (slices and gathers along the last dimension). A column-parallel layer
# starts with copy_to_parallel (its input's gradient is the sum of every
# rank's partial gradient); a row-parallel layer ends with reduce_from_parallel
# (its output is the sum of every rank's partial product). On a group of one
# rank all four are the identity and move nothing.

class CommCounter:
    """Calls and payload bytes of the collectives the tensor-parallel code issues, per kind.

    While a counter is active (``with``), every collective issued by the
    conjugate functions, the vocab-parallel layers and ``ZeroRedundancyOptimizer``
    adds one call and the bytes of its message (what one rank contributes: the
    reduced array for an all-reduce, the full input for a reduce-scatter, the
    full output for an all-gather) under its kind. Nothing is counted on a
    group of one rank, since nothing moves.

    Example (under ``mpiexec -n 2``)::

        with CommCounter() as counter:
            reduce_from_parallel(x).sum().backward()
        counter.calls["all_reduce"], counter.bytes["all_reduce"]   # 1, x.data.nbytes
    """

    def __init__(self) -> None:
        self.calls: dict[str, int] = {}
        self.bytes: dict[str, int] = {}

    def record(self, kind: str, nbytes: int) -> None:
        self.calls[kind] = self.calls.get(kind, 0) + 1
        self.bytes[kind] = self.bytes.get(kind, 0) + int(nbytes)

    def reset(self) -> None:
        self.calls.clear()
        self.bytes.clear()

    def __enter__(self) -> CommCounter:
        _active.counters.append(self)
        return self

    def __exit__(self, *exc: object) -> None:
        _active.counters.remove(self)

    def __repr__(self) -> str:
        kinds = ", ".join(f"{k}: {self.calls[k]} calls, {self.bytes[k]} bytes" for k in sorted(self.calls))
        return f"CommCounter({kinds})"


class _ActiveCounters(threading.local):
    # Per thread, like grad mode: a counter sees the collectives of the thread
    # that entered it. A list rather than one slot so nested measurements (a
    # step inside an epoch) both count. Empty unless someone measures.
    counters: list[CommCounter]

    def __init__(self) -> None:
        self.counters = []


_active = _ActiveCounters()


def record_communication(kind: str, nbytes: int) -> None:
    """Add one collective of ``kind`` moving ``nbytes`` to every active ``CommCounter``.

    >>> with CommCounter() as counter:
    ...     record_communication("all_reduce", 64)
    >>> counter.bytes
    {'all_reduce': 64}
    """
    for counter in _active.counters:
        counter.record(kind, nbytes)


def parallel_all_reduce(array: Any, pg: ProcessGroup, op: ReduceOp = ReduceOp.SUM) -> Any:
    """A reduced copy of ``array`` over ``pg``, counted; the caller's array is left alone.

    The copy matters: an array handed to a ``Function`` may be saved by
    another node for its backward, or be one gradient passed to two inputs.

    Example (under ``mpiexec -n 2``): ``parallel_all_reduce(np.ones(3), pg)`` is ``[2, 2, 2]``.
    """
    out = np.array(array, copy=True, order="C")
    if pg.size() > 1:
        all_reduce(out, op=op, group=pg)
        record_communication("all_reduce", out.nbytes)
    return out


def _shard_width(array: Any, pg: ProcessGroup, what: str) -> int:
    size = array.shape[-1] if array.ndim else 0
    if array.ndim == 0 or size % pg.size():
        raise ValueError(
            f"{what}: the last dimension of a {describe(array)} tensor does not split evenly over "
            f"the {pg.size()} ranks of {pg.name} (global ranks {pg.global_ranks})")
    return size // pg.size()


def _my_slice_of_last_dim(array: Any, pg: ProcessGroup, what: str) -> Any:
    width = _shard_width(array, pg, what)
    start = pg.rank() * width
    return np.ascontiguousarray(array[..., start:start + width])


def _gather_last_dim(array: Any, pg: ProcessGroup) -> Any:
    if array.ndim == 0:
        raise ValueError("gather_from_parallel: cannot gather a 0-d tensor along its last dimension")
    parts = np.empty((pg.size(), *array.shape), dtype=array.dtype)
    # all_gather checks that every rank contributes as many elements, so ranks
    # with different shard widths get an error instead of a garbled gather.
    all_gather_into_tensor(parts, np.ascontiguousarray(array), group=pg)
    record_communication("all_gather", parts.nbytes)
    return np.concatenate(list(parts), axis=-1)


class _CopyToParallel(Function):
    def forward(self, x: Any, pg: ProcessGroup) -> Any:
        self.pg = pg
        return x

    def backward(self, grad: Any) -> tuple[Any, None]:
        # Every rank's branch used the same x, so x's gradient is their sum.
        return parallel_all_reduce(grad, self.pg), None


class _ReduceFromParallel(Function):
    def forward(self, x: Any, pg: ProcessGroup) -> Any:
        return parallel_all_reduce(x, pg)

    def backward(self, grad: Any) -> tuple[Any, None]:
        # d(sum_r x_r)/d x_r is the identity: each rank's partial gets the full gradient.
        return grad, None


class _ScatterToParallel(Function):
    def forward(self, x: Any, pg: ProcessGroup) -> Any:
        self.pg = pg
        return _my_slice_of_last_dim(x, pg, "scatter_to_parallel")

    def backward(self, grad: Any) -> tuple[Any, None]:
        return _gather_last_dim(grad, self.pg), None


class _GatherFromParallel(Function):
    def forward(self, x: Any, pg: ProcessGroup) -> Any:
        self.pg = pg
        return _gather_last_dim(x, pg)

    def backward(self, grad: Any) -> tuple[Any, None]:
        return _my_slice_of_last_dim(grad, self.pg, "gather_from_parallel (backward)"), None


def _conjugate(cls: type[Function], x: Tensor, group: ProcessGroup | None, what: str) -> Tensor:
    pg = resolve_group(group, what)
    if not isinstance(x, Tensor):
        raise TypeError(f"{what}: expected a Tensor, got {type(x).__name__}")
    if pg.size() == 1:
        return x
    return cls.apply(x, pg)


def copy_to_parallel(x: Tensor, group: ProcessGroup | None = None) -> Tensor:
    """Identity forward; backward all-reduces (sums) the gradient over ``group``.

    The entry of a column-parallel region: every rank computes its own branch
    from the same ``x``, so ``x``'s gradient is the sum of the branches'.

    Example (under ``mpiexec -n 2``)::

        h = copy_to_parallel(x, tp_group)        # x as is; its gradient summed over tp ranks
        y = F.linear(h, w_shard)                 # this rank's output columns
    """
    return _conjugate(_CopyToParallel, x, group, "copy_to_parallel")


def reduce_from_parallel(x: Tensor, group: ProcessGroup | None = None) -> Tensor:
    """All-reduce (sum) forward over ``group``; identity backward.

    The exit of a row-parallel region: each rank holds a partial product and
    the output is their sum; each partial's gradient is the output's.

    Example (under ``mpiexec -n 2``)::

        partial = F.linear(x_shard, w_shard)     # this rank's input columns only
        y = reduce_from_parallel(partial, tp_group)
    """
    return _conjugate(_ReduceFromParallel, x, group, "reduce_from_parallel")


def scatter_to_parallel(x: Tensor, group: ProcessGroup | None = None) -> Tensor:
    """Keep this rank's slice of the last dimension; backward all-gathers the gradient.

    The last dimension must divide evenly over the group; rank r keeps the
    r-th block.

    Example (under ``mpiexec -n 2``)::

        x = pyrt.ones(4, 6)
        scatter_to_parallel(x, tp_group).shape   # (4, 3): columns 0-2 on rank 0, 3-5 on rank 1
    """
    return _conjugate(_ScatterToParallel, x, group, "scatter_to_parallel")


def gather_from_parallel(x: Tensor, group: ProcessGroup | None = None) -> Tensor:
    """Concatenate every rank's ``x`` along the last dimension; backward keeps this rank's slice.

    Example (under ``mpiexec -n 2``)::

        y_shard = pyrt.ones(4, 3)
        gather_from_parallel(y_shard, tp_group).shape   # (4, 6), rank 0's columns first
    """
    return _conjugate(_GatherFromParallel, x, group, "gather_from_parallel")
