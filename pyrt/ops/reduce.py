"""Reductions: sum, mean, max/min (with indices over a dim), var, logsumexp."""

from __future__ import annotations

import builtins
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

from pyrt.autograd import Function
from pyrt.backend import get_array_module
from pyrt.tensor import Tensor

__all__ = ["argmax", "argmin", "logsumexp", "max", "mean", "min", "sum", "var"]

Dim = int | Sequence[int] | None


def _normalize_dims(name: str, shape: tuple[int, ...], dim: Dim) -> tuple[int, ...]:
    """Non-negative, deduplicated axes; ``None`` means every axis."""
    ndim = len(shape)
    if dim is None:
        return tuple(range(ndim))
    dims = (dim,) if isinstance(dim, int) else tuple(dim)
    rank = builtins.max(ndim, 1)  # a 0-d tensor accepts dim 0 or -1, as in PyTorch
    for d in dims:
        if not -rank <= d < rank:
            raise IndexError(f"{name}: dim {d} is out of range for a tensor of shape {shape}")
    normalized = tuple(sorted({d % rank for d in dims}))
    return tuple(d for d in normalized if d < ndim)


def _expand_back(grad: Any, shape: tuple[int, ...], axes: tuple[int, ...], keepdim: bool) -> Any:
    """Broadcast a reduced gradient back over the reduced axes."""
    xp = get_array_module(grad)
    if not keepdim:
        grad = xp.expand_dims(grad, axes) if axes else grad
    return xp.broadcast_to(grad, shape)


class Sum(Function):
    def forward(self, x: Any, axes: tuple[int, ...], keepdim: bool) -> Any:
        self.shape, self.axes, self.keepdim = x.shape, axes, keepdim
        return x.sum(axis=axes, keepdims=keepdim)

    def backward(self, grad: Any) -> tuple[Any, None, None]:
        return _expand_back(grad, self.shape, self.axes, self.keepdim), None, None


class Mean(Function):
    def forward(self, x: Any, axes: tuple[int, ...], keepdim: bool) -> Any:
        self.shape, self.axes, self.keepdim = x.shape, axes, keepdim
        self.count = 1
        for a in axes:
            self.count *= x.shape[a]
        return x.mean(axis=axes, keepdims=keepdim)

    def backward(self, grad: Any) -> tuple[Any, None, None]:
        return _expand_back(grad / self.count, self.shape, self.axes, self.keepdim), None, None


class Extremum(Function):
    """Max or min over some axes; the gradient is shared evenly among ties."""

    def forward(self, x: Any, axes: tuple[int, ...], keepdim: bool, largest: bool) -> Any:
        self.shape, self.axes, self.keepdim = x.shape, axes, keepdim
        kept = x.max(axis=axes, keepdims=True) if largest else x.min(axis=axes, keepdims=True)
        hits = x == kept
        self.save_for_backward(hits / hits.sum(axis=axes, keepdims=True))
        return kept if keepdim else kept.reshape([n for i, n in enumerate(x.shape) if i not in axes])

    def backward(self, grad: Any) -> tuple[Any, None, None, None]:
        (share,) = self.saved_tensors
        return _expand_back(grad, self.shape, self.axes, self.keepdim) * share, None, None, None


class ExtremumAlongDim(Function):
    """Max or min along one dim with its indices; the gradient goes to that index."""

    def forward(self, x: Any, dim: int, keepdim: bool, largest: bool) -> Any:
        xp = get_array_module(x)
        indices = x.argmax(axis=dim) if largest else x.argmin(axis=dim)
        self.indices = xp.expand_dims(indices, dim)
        self.shape, self.dim, self.keepdim = x.shape, dim, keepdim
        values = xp.take_along_axis(x, self.indices, axis=dim)
        return values if keepdim else values.squeeze(dim)

    def backward(self, grad: Any) -> tuple[Any, None, None, None]:
        xp = get_array_module(grad)
        grad_x = xp.zeros(self.shape, dtype=grad.dtype)
        kept = grad if self.keepdim else xp.expand_dims(grad, self.dim)
        xp.put_along_axis(grad_x, self.indices, kept, axis=self.dim)
        return grad_x, None, None, None


class Var(Function):
    def forward(self, x: Any, axes: tuple[int, ...], correction: int, keepdim: bool) -> Any:
        count = 1
        for a in axes:
            count *= x.shape[a]
        self.shape, self.axes, self.keepdim = x.shape, axes, keepdim
        centered = x - x.mean(axis=axes, keepdims=True)
        # Fewer samples than the correction gives NaN, as in PyTorch.
        denominator = count - correction if count > correction else float("nan")
        self.scale = 2.0 / denominator
        self.save_for_backward(centered)
        return (centered * centered).sum(axis=axes, keepdims=keepdim) / denominator

    def backward(self, grad: Any) -> tuple[Any, None, None, None]:
        (centered,) = self.saved_tensors
        grad = _expand_back(grad, self.shape, self.axes, self.keepdim)
        return grad * centered * self.scale, None, None, None


class LogSumExp(Function):
    def forward(self, x: Any, axes: tuple[int, ...], keepdim: bool) -> Any:
        xp = get_array_module(x)
        shift = x.max(axis=axes, keepdims=True)
        shift = xp.where(xp.isfinite(shift), shift, 0)  # all -inf rows stay -inf, not NaN
        with np.errstate(divide="ignore"):  # log(0) = -inf is the right answer there
            out = xp.log(xp.exp(x - shift).sum(axis=axes, keepdims=True)) + shift
        self.shape, self.axes, self.keepdim = x.shape, axes, keepdim
        self.save_for_backward(x, out)
        return out if keepdim else out.reshape([n for i, n in enumerate(x.shape) if i not in axes])

    def backward(self, grad: Any) -> tuple[Any, None, None]:
        x, out = self.saved_tensors
        xp = get_array_module(x)
        grad = _expand_back(grad, self.shape, self.axes, self.keepdim)
        return grad * xp.exp(x - out), None, None


def sum(x: Tensor, dim: Dim = None, keepdim: bool = False) -> Tensor:
    """Sum over ``dim`` (an int, a tuple, or all dims).

    >>> import pyrt
    >>> sum(pyrt.tensor([[1.0, 2.0], [3.0, 4.0]]), dim=0).tolist()
    [4.0, 6.0]
    """
    return Sum.apply(x, _normalize_dims("sum", x.shape, dim), keepdim)


def mean(x: Tensor, dim: Dim = None, keepdim: bool = False) -> Tensor:
    """Mean over ``dim`` (an int, a tuple, or all dims).

    >>> import pyrt
    >>> mean(pyrt.tensor([[1.0, 2.0], [3.0, 4.0]]), dim=1).tolist()
    [1.5, 3.5]
    """
    if not np.issubdtype(x.dtype, np.floating):
        raise TypeError(f"mean: input dtype must be floating point, got {x.dtype}")
    return Mean.apply(x, _normalize_dims("mean", x.shape, dim), keepdim)


class ValuesIndices(NamedTuple):
    """``(values, indices)`` returned by ``max``/``min`` along a dim, like PyTorch's."""

    values: Tensor
    indices: Tensor


def _extremum(name: str, x: Tensor, dim: int | None, keepdim: bool,
              largest: bool) -> Tensor | ValuesIndices:
    if x.numel() == 0:
        raise RuntimeError(f"{name}: cannot reduce an empty tensor of shape {x.shape}")
    if dim is None:
        return Extremum.apply(x, tuple(range(x.ndim)), False, largest)
    (axis,) = _normalize_dims(name, x.shape, dim) or (0,)
    if x.ndim == 0:
        return ValuesIndices(x, Tensor(get_array_module(x.data).zeros((), dtype="int64")))
    values = ExtremumAlongDim.apply(x, axis, keepdim, largest)
    fn = values.grad_fn
    xp = get_array_module(x.data)
    # Recover the indices without a second pass when the op was recorded.
    if fn is not None:
        indices = fn.indices if keepdim else fn.indices.squeeze(axis)
    else:
        indices = x.data.argmax(axis=axis) if largest else x.data.argmin(axis=axis)
        indices = xp.expand_dims(indices, axis) if keepdim else indices
    return ValuesIndices(values, Tensor(indices.astype("int64")))


def max(x: Tensor, dim: int | None = None, keepdim: bool = False) -> Tensor | ValuesIndices:
    """Maximum of all elements, or ``(values, indices)`` along ``dim``.

    >>> import pyrt
    >>> max(pyrt.tensor([[1.0, 5.0], [7.0, 2.0]]), dim=1).indices.tolist()
    [1, 0]
    """
    return _extremum("max", x, dim, keepdim, largest=True)


def min(x: Tensor, dim: int | None = None, keepdim: bool = False) -> Tensor | ValuesIndices:
    """Minimum of all elements, or ``(values, indices)`` along ``dim``.

    >>> import pyrt
    >>> min(pyrt.tensor([[1.0, 5.0], [7.0, 2.0]])).item()
    1.0
    """
    return _extremum("min", x, dim, keepdim, largest=False)


def argmax(x: Tensor, dim: int | None = None, keepdim: bool = False) -> Tensor:
    """Index of the maximum (over the flattened tensor when ``dim`` is None).

    >>> import pyrt
    >>> argmax(pyrt.tensor([[1.0, 5.0], [7.0, 2.0]]), dim=1).tolist()
    [1, 0]
    """
    if dim is None:
        return Tensor(x.data.argmax().astype("int64"))
    return _extremum("argmax", x.detach(), dim, keepdim, largest=True).indices


def argmin(x: Tensor, dim: int | None = None, keepdim: bool = False) -> Tensor:
    """Index of the minimum (over the flattened tensor when ``dim`` is None).

    >>> import pyrt
    >>> argmin(pyrt.tensor([3.0, 1.0, 2.0])).item()
    1
    """
    if dim is None:
        return Tensor(x.data.argmin().astype("int64"))
    return _extremum("argmin", x.detach(), dim, keepdim, largest=False).indices


def var(x: Tensor, dim: Dim = None, unbiased: bool | None = None, keepdim: bool = False,
        *, correction: int | None = None) -> Tensor:
    """Variance over ``dim`` with Bessel's correction by default (``correction=1``).

    >>> import pyrt
    >>> var(pyrt.tensor([1.0, 2.0, 3.0, 4.0])).item()
    1.6666666269302368
    """
    if correction is None:
        correction = 0 if unbiased is False else 1
    return Var.apply(x, _normalize_dims("var", x.shape, dim), correction, keepdim)


def logsumexp(x: Tensor, dim: Dim, keepdim: bool = False) -> Tensor:
    """``log(sum(exp(x)))`` over ``dim``, stable for large inputs.

    >>> import pyrt
    >>> round(logsumexp(pyrt.tensor([1000.0, 1000.0]), dim=0).item(), 3)
    1000.693
    """
    return LogSumExp.apply(x, _normalize_dims("logsumexp", x.shape, dim), keepdim)
