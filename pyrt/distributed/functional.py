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

The ops in ``pyrt.ops`` never import MPI; these functions live here, beside
the rest of the distributed package.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pyrt.autograd import Function, is_grad_enabled
from pyrt.distributed.collectives import _DTYPE_CODES
from pyrt.distributed.collectives import recv as recv_array
from pyrt.distributed.collectives import send as send_array
from pyrt.distributed.process_group import ProcessGroup, resolve_group
from pyrt.tensor import Tensor

__all__ = ["TensorMeta", "recv", "send"]

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
