"""Shape and indexing ops: reshape, transpose/permute, getitem, cat, stack,
squeeze/unsqueeze, expand, flatten. Their backwards move gradients, never compute."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

from pyrt.autograd import Function
from pyrt.backend import get_array_module
from pyrt.tensor import Tensor

__all__ = [
    "cat", "expand", "flatten", "getitem", "permute", "reshape", "squeeze", "stack",
    "transpose", "unsqueeze",
]


class Reshape(Function):
    def forward(self, x: Any, shape: tuple[int, ...]) -> Any:
        self.input_shape = x.shape
        return x.reshape(shape)

    def backward(self, grad: Any) -> tuple[Any, None]:
        return grad.reshape(self.input_shape), None


class Permute(Function):
    def forward(self, x: Any, axes: tuple[int, ...]) -> Any:
        self.axes = axes
        return x.transpose(axes)

    def backward(self, grad: Any) -> tuple[Any, None]:
        xp = get_array_module(grad)
        return grad.transpose(xp.argsort(xp.asarray(self.axes)).tolist()), None


class GetItem(Function):
    def forward(self, x: Any, index: Any) -> Any:
        self.shape, self.dtype, self.index = x.shape, x.dtype, index
        return x[index]

    def backward(self, grad: Any) -> tuple[Any, None]:
        xp = get_array_module(grad)
        grad_x = xp.zeros(self.shape, dtype=grad.dtype)
        # add.at accumulates repeated indices (x[[0, 0]]), which plain assignment would drop.
        xp.add.at(grad_x, self.index, grad)
        return grad_x, None


class Concatenate(Function):
    def forward(self, *arrays_and_dim: Any) -> Any:
        *arrays, dim = arrays_and_dim
        xp = get_array_module(*arrays)
        self.dim = dim
        self.splits = [a.shape[dim] for a in arrays]
        return xp.concatenate(arrays, axis=dim)

    def backward(self, grad: Any) -> tuple[Any, ...]:
        bounds = [0]
        for n in self.splits:
            bounds.append(bounds[-1] + n)
        parts = []
        for lo, hi in itertools.pairwise(bounds):
            index = [slice(None)] * grad.ndim
            index[self.dim] = slice(lo, hi)
            parts.append(grad[tuple(index)])
        return (*parts, None)


class Expand(Function):
    def forward(self, x: Any, shape: tuple[int, ...]) -> Any:
        return get_array_module(x).broadcast_to(x, shape)

    def backward(self, grad: Any) -> tuple[Any, None]:
        return grad, None  # the engine sums it back to the input's shape


def _axis(name: str, dim: int, ndim: int, shape: tuple[int, ...]) -> int:
    """``dim`` as an index into ``ndim`` axes, or PyTorch's IndexError."""
    rank = max(ndim, 1)  # a 0-d tensor accepts dim 0 and -1
    if not -rank <= dim < rank:
        raise IndexError(f"{name}: dim {dim} is out of range for a tensor of shape {shape}")
    return dim % rank


def _resolve_shape(shape: tuple[Any, ...]) -> tuple[int, ...]:
    if len(shape) == 1 and isinstance(shape[0], Sequence):
        shape = tuple(shape[0])
    return tuple(int(n) for n in shape)


def reshape(x: Tensor, *shape: int | Sequence[int]) -> Tensor:
    """Same data in a new shape (one dimension may be -1).

    >>> import pyrt
    >>> reshape(pyrt.tensor([1.0, 2.0, 3.0, 4.0]), 2, -1).shape
    (2, 2)
    """
    target = _resolve_shape(shape)
    try:
        return Reshape.apply(x, target)
    except ValueError as exc:
        raise ValueError(f"reshape: cannot reshape a tensor of shape {x.shape} into {target}") from exc


def flatten(x: Tensor, start_dim: int = 0, end_dim: int = -1) -> Tensor:
    """Merge dims ``start_dim..end_dim`` into one.

    >>> import pyrt
    >>> flatten(pyrt.zeros(2, 3, 4), 1).shape
    (2, 12)
    """
    if x.ndim == 0:
        return reshape(x, 1)
    start = _axis("flatten", start_dim, x.ndim, x.shape)
    end = _axis("flatten", end_dim, x.ndim, x.shape)
    if start > end:
        raise ValueError(f"flatten: start_dim {start_dim} comes after end_dim {end_dim}")
    merged = 1
    for n in x.shape[start:end + 1]:
        merged *= n
    return reshape(x, (*x.shape[:start], merged, *x.shape[end + 1:]))


def permute(x: Tensor, *dims: int | Sequence[int]) -> Tensor:
    """Reorder dimensions.

    >>> import pyrt
    >>> permute(pyrt.zeros(2, 3, 4), 2, 0, 1).shape
    (4, 2, 3)
    """
    axes = _resolve_shape(dims)
    if sorted(a % max(x.ndim, 1) for a in axes) != list(range(x.ndim)):
        raise ValueError(f"permute: {axes} is not a permutation of the dims of a {x.ndim}-D tensor")
    return Permute.apply(x, tuple(a % x.ndim for a in axes))


def transpose(x: Tensor, dim0: int, dim1: int) -> Tensor:
    """Swap two dimensions.

    >>> import pyrt
    >>> transpose(pyrt.zeros(2, 3), 0, 1).shape
    (3, 2)
    """
    axes = list(range(x.ndim))
    dim0, dim1 = _axis("transpose", dim0, x.ndim, x.shape), _axis("transpose", dim1, x.ndim, x.shape)
    axes[dim0], axes[dim1] = axes[dim1], axes[dim0]
    return Permute.apply(x, tuple(axes))


def getitem(x: Tensor, index: Any) -> Tensor:
    """``x[index]`` with numpy indexing; the gradient is scattered back (repeats add up).

    >>> import pyrt
    >>> getitem(pyrt.tensor([1.0, 2.0, 3.0]), slice(1, None)).tolist()
    [2.0, 3.0]
    """
    if isinstance(index, Tensor):
        index = index.data
    elif isinstance(index, tuple):
        index = tuple(i.data if isinstance(i, Tensor) else i for i in index)
    return GetItem.apply(x, index)


def cat(tensors: Sequence[Tensor], dim: int = 0) -> Tensor:
    """Join tensors along an existing dimension.

    >>> import pyrt
    >>> cat([pyrt.ones(2, 1), pyrt.zeros(2, 3)], dim=1).shape
    (2, 4)
    """
    if len(tensors) == 0:
        raise ValueError("cat: expected a non-empty list of tensors")
    first = tensors[0]
    axis = _axis("cat", dim, first.ndim, first.shape)
    for i, t in enumerate(tensors):
        if t.ndim != first.ndim or any(
            a != b for d, (a, b) in enumerate(zip(t.shape, first.shape, strict=True)) if d != axis
        ):
            raise ValueError(
                f"cat: tensor {i} has shape {t.shape} but tensor 0 has shape {first.shape}; "
                f"all dims except dim {dim} must match"
            )
    return Concatenate.apply(*tensors, axis)


def stack(tensors: Sequence[Tensor], dim: int = 0) -> Tensor:
    """Join same-shaped tensors along a new dimension.

    >>> import pyrt
    >>> stack([pyrt.ones(3), pyrt.zeros(3)]).shape
    (2, 3)
    """
    if len(tensors) == 0:
        raise ValueError("stack: expected a non-empty list of tensors")
    for i, t in enumerate(tensors):
        if t.shape != tensors[0].shape:
            raise ValueError(f"stack: tensor {i} has shape {t.shape} but tensor 0 has {tensors[0].shape}")
    axis = _axis("stack", dim, tensors[0].ndim + 1, tensors[0].shape)
    return cat([unsqueeze(t, axis) for t in tensors], dim=axis)


def squeeze(x: Tensor, dim: int | None = None) -> Tensor:
    """Drop size-1 dimensions (only ``dim`` if given and of size 1).

    >>> import pyrt
    >>> squeeze(pyrt.zeros(1, 3, 1)).shape
    (3,)
    """
    if dim is None:
        shape = tuple(n for n in x.shape if n != 1)
    else:
        axis = _axis("squeeze", dim, x.ndim, x.shape)
        shape = x.shape if x.ndim == 0 or x.shape[axis] != 1 else x.shape[:axis] + x.shape[axis + 1:]
    return Reshape.apply(x, shape)


def unsqueeze(x: Tensor, dim: int) -> Tensor:
    """Insert a size-1 dimension at ``dim``.

    >>> import pyrt
    >>> unsqueeze(pyrt.zeros(3), 0).shape
    (1, 3)
    """
    if not -x.ndim - 1 <= dim <= x.ndim:
        raise IndexError(f"unsqueeze: dim {dim} is out of range for a tensor of shape {x.shape}")
    axis = dim % (x.ndim + 1)
    return Reshape.apply(x, (*x.shape[:axis], 1, *x.shape[axis:]))


def expand(x: Tensor, *shape: int | Sequence[int]) -> Tensor:
    """Broadcast to a larger shape without copying (-1 keeps a dimension).

    >>> import pyrt
    >>> expand(pyrt.zeros(3, 1), 3, 4).shape
    (3, 4)
    """
    target = list(_resolve_shape(shape))
    offset = len(target) - x.ndim
    if offset < 0:
        raise ValueError(f"expand: cannot expand shape {x.shape} to {tuple(target)}")
    for i, n in enumerate(x.shape):
        if target[i + offset] == -1:
            target[i + offset] = n
        elif n != 1 and n != target[i + offset]:
            raise ValueError(f"expand: cannot expand shape {x.shape} to {tuple(target)}")
    return Expand.apply(x, tuple(target))
