"""Reductions: sum, prod, mean, max/min (with indices over a dim), var/std, logsumexp, any/all,
and the scan cumsum.

Integer and bool inputs sum (and multiply, and accumulate) in int64, as in
PyTorch; ``dtype=`` casts the input first, so the sum itself runs in that dtype.
"""

from __future__ import annotations

import builtins
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

from pyrt.autograd import Function, runs_on_input_device
from pyrt.backend import get_array_module
from pyrt.ops.elementwise import Cast
from pyrt.ops.promotion import FLOATING, category
from pyrt.ops.unary import sqrt
from pyrt.tensor import Tensor

__all__ = ["all", "any", "argmax", "argmin", "cumsum", "logsumexp", "max", "mean", "min", "prod", "std",
           "sum", "var"]

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


class Prod(Function):
    """Product along one axis. The gradient of each element is the product of the others, taken as
    (product of those before it) * (product of those after it): exact with zeros, no division."""

    def forward(self, x: Any, axis: int, keepdim: bool) -> Any:
        self.shape, self.axis, self.keepdim = x.shape, axis, keepdim
        self.save_for_backward(x)
        return x.prod(axis=axis, keepdims=keepdim)

    def backward(self, grad: Any) -> tuple[Any, None, None]:
        (x,) = self.saved_tensors
        xp = get_array_module(x)
        ones = xp.ones((*x.shape[:self.axis], 1, *x.shape[self.axis + 1:]), dtype=x.dtype)
        before = xp.cumprod(xp.concatenate([ones, x], axis=self.axis), axis=self.axis)
        after = xp.flip(xp.cumprod(xp.flip(xp.concatenate([x, ones], axis=self.axis), self.axis),
                                   axis=self.axis), self.axis)
        n = x.shape[self.axis]
        others = (xp.take(before, range(n), axis=self.axis) * xp.take(after, range(1, n + 1), axis=self.axis))
        return _expand_back(grad, self.shape, (self.axis,), self.keepdim) * others, None, None


class CumSum(Function):
    def forward(self, x: Any, axis: int) -> Any:
        self.axis = axis
        return get_array_module(x).cumsum(x, axis=axis)

    def backward(self, grad: Any) -> tuple[Any, None]:
        # Element i feeds outputs i..n-1: its gradient is the reversed running sum of grad.
        xp = get_array_module(grad)
        return xp.flip(xp.cumsum(xp.flip(grad, self.axis), axis=self.axis), self.axis), None


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


def _accumulation_input(x: Tensor, dtype: Any) -> Tensor:
    """``x`` cast to ``dtype``, or for integers and bools to int64 (PyTorch's accumulation dtype)."""
    if dtype is None:
        dtype = x.dtype if category(x.dtype) == FLOATING else np.int64
    return x if x.dtype == dtype else Cast.apply(x, np.dtype(dtype))


def sum(x: Tensor, dim: Dim = None, keepdim: bool = False, *, dtype: Any = None) -> Tensor:
    """Sum over ``dim`` (an int, a tuple, or all dims); ``dtype`` casts the input before summing.

    >>> import pyrt
    >>> sum(pyrt.tensor([[1.0, 2.0], [3.0, 4.0]]), dim=0).tolist()
    [4.0, 6.0]
    >>> sum(pyrt.tensor([True, True, False])).item(), sum(pyrt.tensor([0.5]), dtype=pyrt.float64).dtype
    (2, dtype('float64'))
    """
    axes = _normalize_dims("sum", x.shape, dim)
    return Sum.apply(_accumulation_input(x, dtype), axes, keepdim)


def prod(x: Tensor, dim: int | None = None, keepdim: bool = False, *, dtype: Any = None) -> Tensor:
    """Product of all elements, or along one ``dim``; integers multiply in int64.

    >>> import pyrt
    >>> prod(pyrt.tensor([[1.0, 2.0], [3.0, 4.0]]), dim=1).tolist()
    [2.0, 12.0]
    >>> prod(pyrt.tensor([2, 3, 4])).item()
    24
    """
    x = _accumulation_input(x, dtype)
    if dim is None:
        return Prod.apply(x.reshape(-1), 0, False)
    (axis,) = _normalize_dims("prod", x.shape, dim) or (None,)
    if axis is None:  # a 0-d tensor: the product of one element
        return x.reshape(()) if not keepdim else x
    return Prod.apply(x, axis, keepdim)


def cumsum(x: Tensor, dim: int, *, dtype: Any = None) -> Tensor:
    """Running sum along ``dim``; integers accumulate in int64.

    >>> import pyrt
    >>> cumsum(pyrt.tensor([[1, 2, 3]]), dim=-1).tolist()
    [[1, 3, 6]]
    """
    x = _accumulation_input(x, dtype)
    (axis,) = _normalize_dims("cumsum", x.shape, dim) or (None,)
    if axis is None:  # 0-d: the running sum of one element is itself
        return CumSum.apply(x.reshape(1), 0).reshape(())
    return CumSum.apply(x, axis)


def _logical_reduce(name: str, x: Tensor, dim: Dim, keepdim: bool) -> Tensor:
    axes = _normalize_dims(name, x.shape, dim)
    truth = x.data.astype(bool, copy=False)
    reduce = truth.any if name == "any" else truth.all
    reduced = reduce(axis=axes, keepdims=keepdim)
    return Tensor(get_array_module(reduced).asarray(reduced))


@runs_on_input_device
def any(x: Tensor, dim: Dim = None, keepdim: bool = False) -> Tensor:
    """True where some element (over ``dim``, or all) is nonzero; a bool tensor, not differentiable.

    >>> import pyrt
    >>> any(pyrt.tensor([[0.0, 1.0], [0.0, 0.0]]), dim=1).tolist()
    [True, False]
    """
    return _logical_reduce("any", x, dim, keepdim)


@runs_on_input_device
def all(x: Tensor, dim: Dim = None, keepdim: bool = False) -> Tensor:
    """True where every element (over ``dim``, or all) is nonzero; a bool tensor, not differentiable.

    >>> import pyrt
    >>> all(pyrt.tensor([[1, 2], [0, 3]]), dim=1).tolist()
    [True, False]
    """
    return _logical_reduce("all", x, dim, keepdim)


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


@runs_on_input_device
def max(x: Tensor, dim: int | None = None, keepdim: bool = False) -> Tensor | ValuesIndices:
    """Maximum of all elements, or ``(values, indices)`` along ``dim``.

    >>> import pyrt
    >>> max(pyrt.tensor([[1.0, 5.0], [7.0, 2.0]]), dim=1).indices.tolist()
    [1, 0]
    """
    return _extremum("max", x, dim, keepdim, largest=True)


@runs_on_input_device
def min(x: Tensor, dim: int | None = None, keepdim: bool = False) -> Tensor | ValuesIndices:
    """Minimum of all elements, or ``(values, indices)`` along ``dim``.

    >>> import pyrt
    >>> min(pyrt.tensor([[1.0, 5.0], [7.0, 2.0]])).item()
    1.0
    """
    return _extremum("min", x, dim, keepdim, largest=False)


@runs_on_input_device
def argmax(x: Tensor, dim: int | None = None, keepdim: bool = False) -> Tensor:
    """Index of the maximum (over the flattened tensor when ``dim`` is None).

    >>> import pyrt
    >>> argmax(pyrt.tensor([[1.0, 5.0], [7.0, 2.0]]), dim=1).tolist()
    [1, 0]
    """
    if dim is None:
        return Tensor(x.data.argmax().astype("int64"))
    return _extremum("argmax", x.detach(), dim, keepdim, largest=True).indices


@runs_on_input_device
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
    if category(x.dtype) != FLOATING:
        raise RuntimeError(f"std and var only support floating point and complex dtypes, got {x.dtype}")
    if correction is None:
        correction = 0 if unbiased is False else 1
    return Var.apply(x, _normalize_dims("var", x.shape, dim), correction, keepdim)


def std(x: Tensor, dim: Dim = None, unbiased: bool | None = None, keepdim: bool = False,
        *, correction: int | None = None) -> Tensor:
    """Standard deviation, ``sqrt(var)``, with Bessel's correction by default (``correction=1``).

    >>> import pyrt
    >>> std(pyrt.tensor([1.0, 3.0])).item()
    1.4142135381698608
    >>> std(pyrt.tensor([1.0, 3.0]), correction=0).item()
    1.0
    """
    return sqrt(var(x, dim, unbiased, keepdim, correction=correction))


@runs_on_input_device
def logsumexp(x: Tensor, dim: Dim, keepdim: bool = False) -> Tensor:
    """``log(sum(exp(x)))`` over ``dim``, stable for large inputs.

    >>> import pyrt
    >>> round(logsumexp(pyrt.tensor([1000.0, 1000.0]), dim=0).item(), 3)
    1000.693
    """
    return LogSumExp.apply(x, _normalize_dims("logsumexp", x.shape, dim), keepdim)
