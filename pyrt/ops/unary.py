"""Elementwise math on one tensor: exp, log, sqrt, rsqrt, sin, cos, log2, exp2, abs, and the
step functions sign, floor, ceil, round.

The smooth functions are float-valued: an integer or bool input is first cast
to the default float dtype (float32), as PyTorch does, so ``int_tensor.exp()``
is float32, never float64. The step functions keep the input's dtype and have
a zero gradient (PyTorch records them and sends zeros back, too).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from pyrt.autograd import Function, runs_on_input_device
from pyrt.backend import get_array_module
from pyrt.ops.elementwise import Cast
from pyrt.ops.promotion import FLOATING, category, float_type
from pyrt.tensor import Tensor

__all__ = ["abs", "ceil", "cos", "exp", "exp2", "floor", "log", "log2", "round", "rsqrt", "sign", "sin",
           "sqrt"]


class Exp(Function):
    def forward(self, a: Any) -> Any:
        out = get_array_module(a).exp(a)
        self.save_for_backward(out)
        return out

    def backward(self, grad: Any) -> tuple[Any]:
        (out,) = self.saved_tensors
        return (grad * out,)


class Exp2(Function):
    def forward(self, a: Any) -> Any:
        out = get_array_module(a).exp2(a)
        self.save_for_backward(out)
        return out

    def backward(self, grad: Any) -> tuple[Any]:
        (out,) = self.saved_tensors
        return (grad * out * math.log(2.0),)


class Log(Function):
    def forward(self, a: Any) -> Any:
        self.save_for_backward(a)
        with np.errstate(divide="ignore", invalid="ignore"):  # log(0) = -inf, log(-1) = nan: silent
            return get_array_module(a).log(a)

    def backward(self, grad: Any) -> tuple[Any]:
        (a,) = self.saved_tensors
        return (grad / a,)


class Log2(Function):
    def forward(self, a: Any) -> Any:
        self.save_for_backward(a)
        with np.errstate(divide="ignore", invalid="ignore"):  # log(0) = -inf, log(-1) = nan: silent
            return get_array_module(a).log2(a)

    def backward(self, grad: Any) -> tuple[Any]:
        (a,) = self.saved_tensors
        return (grad / (a * math.log(2.0)),)


class Sqrt(Function):
    def forward(self, a: Any) -> Any:
        with np.errstate(invalid="ignore"):  # sqrt(-1) = nan without a warning, as in PyTorch
            out = get_array_module(a).sqrt(a)
        self.save_for_backward(out)
        return out

    def backward(self, grad: Any) -> tuple[Any]:
        (out,) = self.saved_tensors
        return (grad / (2 * out),)


class Rsqrt(Function):
    def forward(self, a: Any) -> Any:
        with np.errstate(divide="ignore", invalid="ignore"):  # rsqrt(0) = inf, rsqrt(-1) = nan, as in PyTorch
            out = 1 / get_array_module(a).sqrt(a)
        self.save_for_backward(out)
        return out

    def backward(self, grad: Any) -> tuple[Any]:
        (out,) = self.saved_tensors
        return (grad * -0.5 * out * out * out,)  # d(a^-1/2)/da = -1/2 a^-3/2


class Sin(Function):
    def forward(self, a: Any) -> Any:
        self.save_for_backward(a)
        return get_array_module(a).sin(a)

    def backward(self, grad: Any) -> tuple[Any]:
        (a,) = self.saved_tensors
        return (grad * get_array_module(a).cos(a),)


class Cos(Function):
    def forward(self, a: Any) -> Any:
        self.save_for_backward(a)
        return get_array_module(a).cos(a)

    def backward(self, grad: Any) -> tuple[Any]:
        (a,) = self.saved_tensors
        return (grad * -get_array_module(a).sin(a),)


class Abs(Function):
    def forward(self, a: Any) -> Any:
        self.save_for_backward(a)
        return get_array_module(a).abs(a)

    def backward(self, grad: Any) -> tuple[Any]:
        (a,) = self.saved_tensors
        return (grad * get_array_module(a).sign(a),)


class Step(Function):
    """A piecewise-constant function (sign, floor, ceil, round): its gradient is zero everywhere."""

    def forward(self, a: Any, step: Callable[[Any], Any]) -> Any:
        return step(a)

    def backward(self, grad: Any) -> tuple[Any, None]:
        return get_array_module(grad).zeros_like(grad), None


def _floating(a: Tensor) -> Tensor:
    """``a`` itself if floating point, else cast to the default float (differentiably; ints have no grad)."""
    target = float_type(a.dtype)
    return a if a.dtype == target else Cast.apply(a, target)


@runs_on_input_device
def exp(a: Tensor) -> Tensor:
    """Elementwise ``e ** a``.

    >>> import pyrt
    >>> exp(pyrt.tensor([0.0])).item()
    1.0
    """
    return Exp.apply(_floating(a))


def exp2(a: Tensor) -> Tensor:
    """Elementwise ``2 ** a``.

    >>> import pyrt
    >>> exp2(pyrt.tensor([3])).tolist()
    [8.0]
    """
    return Exp2.apply(_floating(a))


def log(a: Tensor) -> Tensor:
    """Elementwise natural logarithm.

    >>> import pyrt
    >>> log(pyrt.tensor([1.0])).item()
    0.0
    """
    return Log.apply(_floating(a))


def log2(a: Tensor) -> Tensor:
    """Elementwise base-2 logarithm.

    >>> import pyrt
    >>> log2(pyrt.tensor([8.0])).item()
    3.0
    """
    return Log2.apply(_floating(a))


def sqrt(a: Tensor) -> Tensor:
    """Elementwise square root.

    >>> import pyrt
    >>> sqrt(pyrt.tensor([4.0])).item()
    2.0
    """
    return Sqrt.apply(_floating(a))


def rsqrt(a: Tensor) -> Tensor:
    """Elementwise ``1 / sqrt(a)``.

    >>> import pyrt
    >>> rsqrt(pyrt.tensor([4.0])).item()
    0.5
    """
    return Rsqrt.apply(_floating(a))


def sin(a: Tensor) -> Tensor:
    """Elementwise sine (radians).

    >>> import pyrt
    >>> sin(pyrt.tensor([0.0])).item()
    0.0
    """
    return Sin.apply(_floating(a))


def cos(a: Tensor) -> Tensor:
    """Elementwise cosine (radians).

    >>> import pyrt
    >>> cos(pyrt.tensor([0.0])).item()
    1.0
    """
    return Cos.apply(_floating(a))


def abs(a: Tensor) -> Tensor:
    """Elementwise absolute value (gradient 0 at 0, as in PyTorch); integers stay integers.

    >>> import pyrt
    >>> abs(pyrt.tensor([-2.0])).item()
    2.0
    """
    return Abs.apply(a)


@runs_on_input_device
def sign(a: Tensor) -> Tensor:
    """-1, 0 or 1 by the sign of each element, in ``a``'s dtype; zero gradient.

    >>> import pyrt
    >>> sign(pyrt.tensor([-2.0, 0.0, 3.0])).tolist()
    [-1.0, 0.0, 1.0]
    """
    if a.dtype == np.bool_:
        return Step.apply(a, lambda x: x.copy())  # sign of a bool is itself, as in PyTorch
    return Step.apply(a, get_array_module(a.data).sign)


@runs_on_input_device
def floor(a: Tensor) -> Tensor:
    """Round down to an integer value (integer tensors are returned unchanged, as a copy).

    >>> import pyrt
    >>> floor(pyrt.tensor([-1.5, 1.5])).tolist()
    [-2.0, 1.0]
    """
    if category(a.dtype) != FLOATING:
        return Step.apply(a, lambda x: x.copy())
    return Step.apply(a, get_array_module(a.data).floor)


@runs_on_input_device
def ceil(a: Tensor) -> Tensor:
    """Round up to an integer value (integer tensors are returned unchanged, as a copy).

    >>> import pyrt
    >>> ceil(pyrt.tensor([-1.5, 1.5])).tolist()
    [-1.0, 2.0]
    """
    if category(a.dtype) != FLOATING:
        return Step.apply(a, lambda x: x.copy())
    return Step.apply(a, get_array_module(a.data).ceil)


@runs_on_input_device
def round(a: Tensor, *, decimals: int = 0) -> Tensor:
    """Round half to even (``2.5 -> 2``), to ``decimals`` places; zero gradient.

    >>> import pyrt
    >>> round(pyrt.tensor([0.5, 1.5, 2.5, -2.5])).tolist()
    [0.0, 2.0, 2.0, -2.0]
    >>> round(pyrt.tensor([1.25, 3.14159], dtype=pyrt.float64), decimals=2).tolist()
    [1.25, 3.14]
    """
    if category(a.dtype) != FLOATING:
        if decimals != 0:
            raise NotImplementedError(f"round: decimals={decimals} is only implemented for floating point "
                                      f"tensors, got {a.dtype}")
        return Step.apply(a, lambda x: x.copy())
    xp = get_array_module(a.data)
    # numpy's round scales by 10**decimals and rounds half to even, the algorithm PyTorch uses.
    return Step.apply(a, lambda x: xp.round(x, decimals))
