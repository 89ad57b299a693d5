"""Indexing ops that pick by position: gather, diagonal, tril, triu.

Each backward writes the gradient back to the positions the forward read
(``gather`` with ``add.at``, since an index may repeat).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pyrt.autograd import Function, runs_on_input_device
from pyrt.backend import get_array_module
from pyrt.errors import ShapeError
from pyrt.ops.shape import _axis
from pyrt.tensor import Tensor

__all__ = ["diagonal", "gather", "tril", "triu"]


class Gather(Function):
    """``out[i][j][k] = x[i][index[i][j][k]][k]`` for dim 1: ``take_along_axis`` on the part of ``x``
    that ``index`` covers (PyTorch lets index be smaller than x in the other dims)."""

    def forward(self, x: Any, index: Any, axis: int) -> Any:
        xp = get_array_module(x)
        self.shape, self.axis = x.shape, axis
        self.save_for_backward(index)
        covered = tuple(slice(None) if d == axis else slice(0, n) for d, n in enumerate(index.shape))
        return xp.take_along_axis(x[covered], index, axis=axis)

    def backward(self, grad: Any) -> tuple[Any, None, None]:
        (index,) = self.saved_tensors
        xp = get_array_module(grad)
        grad_x = xp.zeros(self.shape, dtype=grad.dtype)
        positions = list(xp.ix_(*(xp.arange(size) for size in index.shape)))  # cupy's indices has no sparse=
        positions[self.axis] = index
        xp.add.at(grad_x, tuple(positions), grad)  # a repeated index collects every gradient sent to it
        return grad_x, None, None


class Diagonal(Function):
    def forward(self, x: Any, offset: int, axis1: int, axis2: int) -> Any:
        self.shape, self.offset, self.axes = x.shape, offset, (axis1, axis2)
        return get_array_module(x).diagonal(x, offset, axis1, axis2)

    def backward(self, grad: Any) -> tuple[Any, None, None, None]:
        xp = get_array_module(grad)
        grad_x = xp.zeros(self.shape, dtype=grad.dtype)
        # With the two axes moved last, the diagonal is [..., i, i + offset] (or [..., i - offset, i]).
        plane = xp.moveaxis(grad_x, self.axes, (-2, -1))  # a view: writing it writes grad_x
        steps = xp.arange(grad.shape[-1])
        rows, cols = (steps, steps + self.offset) if self.offset >= 0 else (steps - self.offset, steps)
        plane[..., rows, cols] = grad
        return grad_x, None, None, None


class Triangle(Function):
    """Keep the lower (``upper=False``) or upper triangle of the last two dims; zero the rest."""

    def forward(self, x: Any, diagonal: int, upper: bool) -> Any:
        self.diagonal, self.upper = diagonal, upper
        xp = get_array_module(x)
        return xp.triu(x, diagonal) if upper else xp.tril(x, diagonal)

    def backward(self, grad: Any) -> tuple[Any, None, None]:
        xp = get_array_module(grad)
        return (xp.triu(grad, self.diagonal) if self.upper else xp.tril(grad, self.diagonal)), None, None


@runs_on_input_device
def gather(x: Tensor, dim: int, index: Tensor) -> Tensor:
    """Pick along ``dim`` by ``index`` (int64, same number of dims as ``x``, no larger elsewhere).

    >>> import pyrt
    >>> gather(pyrt.tensor([[1, 2], [3, 4]]), 1, pyrt.tensor([[0, 0], [1, 0]])).tolist()
    [[1, 1], [4, 3]]
    """
    idx = index.data if isinstance(index, Tensor) else get_array_module(index).asarray(index)
    if idx.dtype != np.int64:
        raise RuntimeError(f"gather(): Expected dtype int64 for index, got {idx.dtype}")
    axis = _axis("gather", dim, x.ndim, x.shape)
    if idx.ndim != x.ndim:
        raise RuntimeError(f"Index tensor must have the same number of dimensions as input tensor; got "
                           f"index {idx.shape} and input {x.shape}")
    if x.ndim == 0:
        return Gather.apply(x.reshape(1), idx.reshape(1), 0).reshape(())
    for d, (n_index, n_x) in enumerate(zip(idx.shape, x.shape, strict=True)):
        if d != axis and n_index > n_x:
            raise RuntimeError(f"Size does not match at dimension {d} expected index {idx.shape} to be "
                               f"smaller than self {x.shape} apart from dimension {axis}")
    if idx.size and (idx.min() < 0 or idx.max() >= x.shape[axis]):
        bad = int(idx.min()) if idx.min() < 0 else int(idx.max())
        raise RuntimeError(f"gather: index {bad} is out of bounds for dimension {dim} with size "
                           f"{x.shape[axis]}")
    return Gather.apply(x, idx, axis)


def diagonal(x: Tensor, offset: int = 0, dim1: int = 0, dim2: int = 1) -> Tensor:
    """The diagonal of the (``dim1``, ``dim2``) planes, as a new last dim; ``offset`` > 0 is above it.

    >>> import pyrt
    >>> diagonal(pyrt.tensor([[1, 2, 3], [4, 5, 6]]), offset=1).tolist()
    [2, 6]
    """
    if x.ndim < 2:
        raise ShapeError(f"diagonal: expected a tensor with at least 2 dims, got shape {x.shape}")
    axis1, axis2 = _axis("diagonal", dim1, x.ndim, x.shape), _axis("diagonal", dim2, x.ndim, x.shape)
    if axis1 == axis2:
        raise RuntimeError(f"diagonal dimensions cannot be identical {dim1}, {dim2}")
    return Diagonal.apply(x, offset, axis1, axis2)


def tril(x: Tensor, diagonal: int = 0) -> Tensor:
    """The lower triangle of the last two dims (``diagonal`` > 0 keeps more above it), the rest zero.

    >>> import pyrt
    >>> tril(pyrt.ones(2, 2)).tolist()
    [[1.0, 0.0], [1.0, 1.0]]
    """
    if x.ndim < 2:
        raise ShapeError(f"tril: input tensor must have at least 2 dimensions, got shape {x.shape}")
    return Triangle.apply(x, diagonal, False)


def triu(x: Tensor, diagonal: int = 0) -> Tensor:
    """The upper triangle of the last two dims (``diagonal`` > 0 drops more of it), the rest zero.

    >>> import pyrt
    >>> triu(pyrt.ones(2, 2)).tolist()
    [[1.0, 1.0], [0.0, 1.0]]
    """
    if x.ndim < 2:
        raise ShapeError(f"triu: input tensor must have at least 2 dimensions, got shape {x.shape}")
    return Triangle.apply(x, diagonal, True)
