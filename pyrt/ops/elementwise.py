"""Elementwise arithmetic and math functions.

Inputs broadcast like numpy; the engine sums each gradient back to its input's
shape (``pyrt.autograd.sum_to_shape``), so the backwards below are written as if
no broadcasting had happened.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pyrt.autograd import Function
from pyrt.backend import get_array_module
from pyrt.tensor import Tensor

__all__ = [
    "abs", "add", "cast", "clamp", "clone", "div", "exp", "log", "maximum", "minimum", "mul",
    "neg", "pow", "sqrt", "sub", "where",
]


class Add(Function):
    def forward(self, a: Any, b: Any) -> Any:
        return a + b

    def backward(self, grad: Any) -> tuple[Any, Any]:
        return grad, grad


class Sub(Function):
    def forward(self, a: Any, b: Any) -> Any:
        return a - b

    def backward(self, grad: Any) -> tuple[Any, Any]:
        return grad, -grad


class Mul(Function):
    def forward(self, a: Any, b: Any) -> Any:
        self.save_for_backward(a, b)
        return a * b

    def backward(self, grad: Any) -> tuple[Any, Any]:
        a, b = self.saved_tensors
        return grad * b, grad * a


class Div(Function):
    def forward(self, a: Any, b: Any) -> Any:
        self.save_for_backward(a, b)
        return a / b

    def backward(self, grad: Any) -> tuple[Any, Any]:
        a, b = self.saved_tensors
        grad_a = grad / b
        return grad_a, -grad_a * a / b


class Neg(Function):
    def forward(self, a: Any) -> Any:
        return -a

    def backward(self, grad: Any) -> tuple[Any]:
        return (-grad,)


class Pow(Function):
    """``a ** b`` for a tensor base and a tensor or scalar exponent."""

    def forward(self, a: Any, b: Any) -> Any:
        out = a**b
        self.save_for_backward(a, b, out)
        return out

    def backward(self, grad: Any) -> tuple[Any, Any]:
        a, b, out = self.saved_tensors
        xp = get_array_module(a)
        need_a, need_b = self.needs_input_grad
        grad_a = grad_b = None
        if need_a:
            # b * a^(b-1) is 0 * inf at a == 0, b == 0; the derivative of a^0 is 0 there.
            with np.errstate(divide="ignore", invalid="ignore"):
                grad_a = grad * xp.where(b == 0, 0, b * a ** (b - 1))
        if need_b:
            # d(a^b)/db = a^b * log(a); defined as 0 where a == 0 (the limit for b > 0).
            grad_b = grad * out * xp.log(xp.where(a > 0, a, 1))
        return grad_a, grad_b


class Exp(Function):
    def forward(self, a: Any) -> Any:
        out = get_array_module(a).exp(a)
        self.save_for_backward(out)
        return out

    def backward(self, grad: Any) -> tuple[Any]:
        (out,) = self.saved_tensors
        return (grad * out,)


class Log(Function):
    def forward(self, a: Any) -> Any:
        self.save_for_backward(a)
        return get_array_module(a).log(a)

    def backward(self, grad: Any) -> tuple[Any]:
        (a,) = self.saved_tensors
        return (grad / a,)


class Sqrt(Function):
    def forward(self, a: Any) -> Any:
        out = get_array_module(a).sqrt(a)
        self.save_for_backward(out)
        return out

    def backward(self, grad: Any) -> tuple[Any]:
        (out,) = self.saved_tensors
        return (grad / (2 * out),)


class Abs(Function):
    def forward(self, a: Any) -> Any:
        self.save_for_backward(a)
        return get_array_module(a).abs(a)

    def backward(self, grad: Any) -> tuple[Any]:
        (a,) = self.saved_tensors
        return (grad * get_array_module(a).sign(a),)


class Clamp(Function):
    def forward(self, a: Any, low: float | None, high: float | None) -> Any:
        xp = get_array_module(a)
        inside = xp.ones(a.shape, dtype=bool)
        if low is not None:
            inside &= a >= low
        if high is not None:
            inside &= a <= high
        self.save_for_backward(inside)
        return xp.clip(a, low, high)

    def backward(self, grad: Any) -> tuple[Any, None, None]:
        (inside,) = self.saved_tensors
        return grad * inside, None, None


class Maximum(Function):
    # Ties split the gradient evenly, as PyTorch does, so it stays symmetric.
    def forward(self, a: Any, b: Any) -> Any:
        self.save_for_backward(a, b)
        return get_array_module(a, b).maximum(a, b)

    def backward(self, grad: Any) -> tuple[Any, Any]:
        a, b = self.saved_tensors
        share_a = (a > b) + 0.5 * (a == b)
        return grad * share_a, grad * (1 - share_a)


class Minimum(Function):
    def forward(self, a: Any, b: Any) -> Any:
        self.save_for_backward(a, b)
        return get_array_module(a, b).minimum(a, b)

    def backward(self, grad: Any) -> tuple[Any, Any]:
        a, b = self.saved_tensors
        share_a = (a < b) + 0.5 * (a == b)
        return grad * share_a, grad * (1 - share_a)


class Where(Function):
    def forward(self, condition: Any, a: Any, b: Any) -> Any:
        self.save_for_backward(condition)
        return get_array_module(a, b).where(condition, a, b)

    def backward(self, grad: Any) -> tuple[None, Any, Any]:
        (condition,) = self.saved_tensors
        return None, grad * condition, grad * ~condition


class Cast(Function):
    def forward(self, a: Any, dtype: Any) -> Any:
        self.source_dtype = a.dtype
        return a.astype(dtype)

    def backward(self, grad: Any) -> tuple[Any, None]:
        return grad.astype(self.source_dtype), None


class Clone(Function):
    def forward(self, a: Any) -> Any:
        return a.copy()

    def backward(self, grad: Any) -> tuple[Any]:
        return (grad,)


def _scalar_like(value: Any, like: Tensor | Any) -> Any:
    """Python numbers stay Python numbers, so numpy keeps the tensor's dtype (NEP 50).

    numpy scalars (``np.float64(2)``, ``np.sqrt(d)``) count as numbers too, as
    they do in PyTorch: ``float32_tensor * np.float64(2)`` stays float32.
    """
    if isinstance(value, np.generic) or (isinstance(value, np.ndarray) and value.ndim == 0):
        return value.item()  # np.float64 is a float subclass: test it first
    if isinstance(value, Tensor | bool | int | float):
        return value
    return get_array_module(value).asarray(value)


def add(a: Tensor | Any, b: Tensor | Any) -> Tensor:
    """Elementwise ``a + b`` with broadcasting.

    >>> import pyrt
    >>> add(pyrt.tensor([1.0, 2.0]), 1.0).tolist()
    [2.0, 3.0]
    """
    return Add.apply(_scalar_like(a, b), _scalar_like(b, a))


def sub(a: Tensor | Any, b: Tensor | Any) -> Tensor:
    """Elementwise ``a - b``.

    >>> import pyrt
    >>> sub(pyrt.tensor([3.0]), pyrt.tensor([1.0])).item()
    2.0
    """
    return Sub.apply(_scalar_like(a, b), _scalar_like(b, a))


def mul(a: Tensor | Any, b: Tensor | Any) -> Tensor:
    """Elementwise ``a * b``.

    >>> import pyrt
    >>> mul(pyrt.tensor([3.0]), 2.0).item()
    6.0
    """
    return Mul.apply(_scalar_like(a, b), _scalar_like(b, a))


def div(a: Tensor | Any, b: Tensor | Any) -> Tensor:
    """Elementwise ``a / b``.

    >>> import pyrt
    >>> div(pyrt.tensor([3.0]), 2.0).item()
    1.5
    """
    return Div.apply(_scalar_like(a, b), _scalar_like(b, a))


def neg(a: Tensor) -> Tensor:
    """Elementwise ``-a``.

    >>> import pyrt
    >>> neg(pyrt.tensor([3.0])).item()
    -3.0
    """
    return Neg.apply(a)


def pow(a: Tensor | Any, exponent: Tensor | float) -> Tensor:
    """Elementwise ``a ** exponent``; the exponent may be a tensor.

    >>> import pyrt
    >>> pow(pyrt.tensor([3.0]), 2).item()
    9.0
    """
    return Pow.apply(_scalar_like(a, exponent), _scalar_like(exponent, a))


def exp(a: Tensor) -> Tensor:
    """Elementwise ``e ** a``.

    >>> import pyrt
    >>> exp(pyrt.tensor([0.0])).item()
    1.0
    """
    return Exp.apply(a)


def log(a: Tensor) -> Tensor:
    """Elementwise natural logarithm.

    >>> import pyrt
    >>> log(pyrt.tensor([1.0])).item()
    0.0
    """
    return Log.apply(a)


def sqrt(a: Tensor) -> Tensor:
    """Elementwise square root.

    >>> import pyrt
    >>> sqrt(pyrt.tensor([4.0])).item()
    2.0
    """
    return Sqrt.apply(a)


def abs(a: Tensor) -> Tensor:
    """Elementwise absolute value (gradient 0 at 0, as in PyTorch).

    >>> import pyrt
    >>> abs(pyrt.tensor([-2.0])).item()
    2.0
    """
    return Abs.apply(a)


def clamp(a: Tensor, min: float | None = None, max: float | None = None) -> Tensor:
    """Limit values to ``[min, max]``; the gradient is zero where a value was clipped.

    >>> import pyrt
    >>> clamp(pyrt.tensor([-1.0, 0.5, 2.0]), 0.0, 1.0).tolist()
    [0.0, 0.5, 1.0]
    """
    if min is None and max is None:
        raise ValueError("clamp: at least one of min and max must be given")
    return Clamp.apply(a, min, max)


def maximum(a: Tensor, b: Tensor | Any) -> Tensor:
    """Elementwise maximum; ties share the gradient equally.

    >>> import pyrt
    >>> maximum(pyrt.tensor([1.0, 5.0]), pyrt.tensor([3.0, 2.0])).tolist()
    [3.0, 5.0]
    """
    return Maximum.apply(a, _scalar_like(b, a))


def minimum(a: Tensor, b: Tensor | Any) -> Tensor:
    """Elementwise minimum; ties share the gradient equally.

    >>> import pyrt
    >>> minimum(pyrt.tensor([1.0, 5.0]), pyrt.tensor([3.0, 2.0])).tolist()
    [1.0, 2.0]
    """
    return Minimum.apply(a, _scalar_like(b, a))


def where(condition: Tensor | Any, a: Tensor | Any, b: Tensor | Any) -> Tensor:
    """Pick ``a`` where ``condition`` holds, else ``b`` (gradients flow to the picked side).

    >>> import pyrt
    >>> where(pyrt.tensor([True, False]), pyrt.tensor([1.0, 1.0]), 0.0).tolist()
    [1.0, 0.0]
    """
    cond = condition.data if isinstance(condition, Tensor) else condition
    return Where.apply(cond.astype(bool), a, _scalar_like(b, a))


def cast(a: Tensor, dtype: Any) -> Tensor:
    """Convert to ``dtype``; the gradient is converted back.

    >>> import pyrt
    >>> cast(pyrt.tensor([1.5]), "float64").dtype
    dtype('float64')
    """
    return Cast.apply(a, dtype)


def clone(a: Tensor) -> Tensor:
    """A copy of ``a`` that stays in the graph.

    >>> import pyrt
    >>> clone(pyrt.tensor([1.0])).item()
    1.0
    """
    return Clone.apply(a)
