"""Elementwise arithmetic on two or more operands: add, sub, mul, div, pow, clamp, where, lerp, ...

Inputs broadcast like numpy; the engine sums each gradient back to its input's
shape (``pyrt.autograd.sum_to_shape``), so the backwards below are written as if
no broadcasting had happened.

Mixed dtypes follow PyTorch (``pyrt.ops.promotion``): ``promoted`` converts
every operand to the result dtype *before* the Function runs, tensors through a
differentiable ``Cast`` (whose backward casts the gradient back), so each
Function below computes on operands of one dtype and each gradient arrives in
its input's dtype.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pyrt.autograd import Function, runs_on_input_device
from pyrt.backend import get_array_module
from pyrt.ops.promotion import BOOL, FLOATING, INTEGER, category, float_type, result_type
from pyrt.tensor import Tensor

__all__ = [
    "add", "cast", "clamp", "clip", "clone", "div", "floor_divide", "lerp", "masked_fill", "maximum",
    "minimum", "mul", "neg", "pow", "promoted", "sub", "where",
]

Operand = Tensor | bool | int | float | Any


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
    # x / 0 is inf or nan without a warning, as in PyTorch (and IEEE 754).
    def forward(self, a: Any, b: Any) -> Any:
        self.save_for_backward(a, b)
        with np.errstate(divide="ignore", invalid="ignore"):
            return a / b

    def backward(self, grad: Any) -> tuple[Any, Any]:
        a, b = self.saved_tensors
        with np.errstate(divide="ignore", invalid="ignore"):
            grad_a = grad / b
            return grad_a, -grad_a * a / b


class RoundedDiv(Function):
    """``a / b`` rounded toward zero ('trunc') or down ('floor'): a step function, so zero gradient.

    PyTorch records it too (the result requires grad) and sends zeros back.
    """

    def forward(self, a: Any, b: Any, mode: str) -> Any:
        xp = get_array_module(a, b)
        if category(xp.result_type(a, b)) == BOOL:
            raise NotImplementedError(f"div with rounding_mode={mode!r} is not implemented for bool")
        if category(xp.result_type(a, b)) != FLOATING:
            if xp.any(b == 0):
                raise RuntimeError("ZeroDivisionError")  # PyTorch's message for integer division by zero
            if mode == "floor":
                return xp.floor_divide(a, b)  # Python's (and PyTorch's) floor semantics on integers
            # Truncation = floor of the magnitudes, with the sign put back.
            return (xp.sign(a) * xp.sign(b) * (xp.abs(a) // xp.abs(b))).astype(xp.result_type(a, b))
        with np.errstate(divide="ignore", invalid="ignore"):
            return xp.floor_divide(a, b) if mode == "floor" else xp.trunc(a / b)

    def backward(self, grad: Any) -> tuple[Any, Any, None]:
        zeros = get_array_module(grad).zeros_like(grad)
        return zeros, zeros, None


class Neg(Function):
    def forward(self, a: Any) -> Any:
        return -a

    def backward(self, grad: Any) -> tuple[Any]:
        return (-grad,)


def _integer_pow(a: Any, b: Any) -> Any:
    """Integer ``a ** b`` that, like PyTorch, allows negative exponents: 1/a truncated toward zero.

    numpy refuses any negative integer exponent; PyTorch gives 1 for a == 1,
    +-1 for a == -1 (by the exponent's parity) and 0 otherwise.
    """
    xp = get_array_module(a, b)
    out = a ** xp.maximum(b, 0)
    if not xp.any(b < 0):
        return out
    odd = (b % 2) != 0
    reciprocal = xp.where(a == 1, 1, xp.where(a == -1, xp.where(odd, -1, 1), 0)).astype(out.dtype)
    return xp.where(b < 0, reciprocal, out)


class Pow(Function):
    """``a ** b`` for a tensor or scalar base and exponent of one dtype."""

    def forward(self, a: Any, b: Any) -> Any:
        xp = get_array_module(a, b)
        dtype = xp.result_type(a, b)
        if category(dtype) == INTEGER:
            out = _integer_pow(a, b)
        elif category(dtype) == FLOATING:
            with np.errstate(divide="ignore", invalid="ignore"):  # 0 ** -1 = inf, (-1) ** 0.5 = nan: silent
                out = a**b
        else:  # bool ** bool: x ** False is True, x ** True is x
            out = xp.logical_or(a, xp.logical_not(b))
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


class Clamp(Function):
    def forward(self, a: Any, low: Any, high: Any) -> Any:
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


def _as_operand(value: Any) -> Any:
    """Tensors stay; numpy scalars and 0-d arrays count as Python numbers (as ``np.float64`` does
    in PyTorch: ``float32_tensor * np.float64(2)`` stays float32); other arrays and lists become arrays."""
    if isinstance(value, Tensor | bool | int | float):
        return value
    if isinstance(value, np.generic) or (isinstance(value, np.ndarray) and value.ndim == 0):
        return value.item()
    return get_array_module(value).asarray(value)


def promoted(*operands: Any, dtype: Any = None) -> list[Any]:
    """The operands converted to one dtype (``result_type`` of them unless ``dtype`` is given).

    Tensors go through a differentiable cast (a no-op when the dtype already
    matches); Python numbers become numpy scalars of that dtype, which wraps
    out-of-range integers as PyTorch does (``uint8_tensor + 300``) instead of
    numpy's OverflowError.

    >>> import pyrt
    >>> a, b = promoted(pyrt.tensor([1, 2]), 0.5)
    >>> a.dtype, type(b).__name__
    (dtype('float32'), 'float32')
    """
    if dtype is None and all(isinstance(x, Tensor) for x in operands) and (
            len({x.dtype for x in operands}) == 1):
        return list(operands)  # the common case in a training step: nothing to decide
    operands = tuple(_as_operand(x) for x in operands)
    target = result_type(*operands) if dtype is None else np.dtype(dtype)
    floating = category(target) == FLOATING
    out = []
    for x in operands:
        if isinstance(x, Tensor):
            out.append(x if x.dtype == target else Cast.apply(x, target))
        elif hasattr(x, "dtype"):
            out.append(x.astype(target, copy=False))
        elif floating:
            out.append(target.type(x))  # np.float32(0.5): exact for any Python number
        else:
            out.append(np.asarray(x).astype(target)[()])  # wraps out-of-range ints, as PyTorch
    return out


def add(a: Operand, b: Operand, *, alpha: float = 1) -> Tensor:
    """Elementwise ``a + alpha * b`` with broadcasting and PyTorch's type promotion.

    >>> import pyrt
    >>> add(pyrt.tensor([1.0, 2.0]), 1.0).tolist()
    [2.0, 3.0]
    >>> add(pyrt.tensor([1, 2]), 0.5).dtype
    dtype('float32')
    """
    if alpha != 1:
        b = mul(b, alpha)
    return Add.apply(*promoted(a, b))


def sub(a: Operand, b: Operand, *, alpha: float = 1) -> Tensor:
    """Elementwise ``a - alpha * b``.

    >>> import pyrt
    >>> sub(pyrt.tensor([3.0]), pyrt.tensor([1.0])).item()
    2.0
    """
    if alpha != 1:
        b = mul(b, alpha)
    a, b = _as_operand(a), _as_operand(b)
    bools = [result_type(x) == np.bool_ for x in (a, b)]  # a Python bool counts, as in PyTorch
    if all(bools):
        raise RuntimeError("Subtraction, the `-` operator, with two bool tensors is not supported. "
                           "Use the `^` or `logical_xor()` operator instead.")
    if any(bools):
        raise RuntimeError("Subtraction, the `-` operator, with a bool tensor is not supported. If you are "
                           "trying to invert a mask, use the `~` or `logical_not()` operator instead.")
    return Sub.apply(*promoted(a, b))


def mul(a: Operand, b: Operand) -> Tensor:
    """Elementwise ``a * b``.

    >>> import pyrt
    >>> mul(pyrt.tensor([3.0]), 2.0).item()
    6.0
    """
    return Mul.apply(*promoted(a, b))


def div(a: Operand, b: Operand, *, rounding_mode: str | None = None) -> Tensor:
    """Elementwise ``a / b``: true division (integers give float32), or rounded 'trunc' / 'floor'.

    >>> import pyrt
    >>> div(pyrt.tensor([3, 4]), 2).tolist()
    [1.5, 2.0]
    >>> div(pyrt.tensor([7, -7]), 2, rounding_mode="floor").tolist()
    [3, -4]
    """
    if rounding_mode is None:
        return Div.apply(*promoted(a, b, dtype=float_type(result_type(_as_operand(a), _as_operand(b)))))
    if rounding_mode not in ("trunc", "floor"):
        raise ValueError(f"div expected rounding_mode to be one of None, 'trunc', or 'floor' but found "
                         f"{rounding_mode!r}")
    return RoundedDiv.apply(*promoted(a, b), rounding_mode)


def floor_divide(a: Operand, b: Operand) -> Tensor:
    """``a // b``: division rounded down, as Python and ``torch.floor_divide`` do.

    >>> import pyrt
    >>> floor_divide(pyrt.tensor([5, -5]), 2).tolist()
    [2, -3]
    """
    return div(a, b, rounding_mode="floor")


def neg(a: Tensor) -> Tensor:
    """Elementwise ``-a``.

    >>> import pyrt
    >>> neg(pyrt.tensor([3.0])).item()
    -3.0
    """
    if a.dtype == np.bool_:
        raise RuntimeError("Negation, the `-` operator, on a bool tensor is not supported. If you are "
                           "trying to invert a mask, use the `~` or `logical_not()` operator instead.")
    return Neg.apply(a)


def pow(a: Operand, exponent: Operand) -> Tensor:
    """Elementwise ``a ** exponent``; either may be a Python number, with PyTorch's promotion.

    >>> import pyrt
    >>> pow(pyrt.tensor([3.0]), 2).item()
    9.0
    >>> pow(0.5, pyrt.tensor([1, 2])).tolist()
    [0.5, 0.25]
    """
    a, exponent = _as_operand(a), _as_operand(exponent)
    if (isinstance(exponent, int) and not isinstance(exponent, bool) and exponent < 0
            and category(result_type(a, exponent)) != FLOATING):
        # PyTorch's rule for a scalar exponent; a tensor exponent instead gives 1/a truncated.
        raise RuntimeError("Integers to negative integer powers are not allowed.")
    if result_type(a, exponent) == np.bool_ and not (isinstance(a, Tensor) and isinstance(exponent, bool)):
        # PyTorch has bool pow only for a bool tensor ** a Python bool.
        raise NotImplementedError("pow is not implemented for bool operands other than a bool tensor ** "
                                  "a Python bool")
    return Pow.apply(*promoted(a, exponent))


def _bound(value: Any) -> Any:
    return value if value is None else _as_operand(value)


def clamp(a: Tensor, min: Operand | None = None, max: Operand | None = None) -> Tensor:
    """Limit values to ``[min, max]`` (numbers or tensors); the gradient is zero where a value was clipped.

    >>> import pyrt
    >>> clamp(pyrt.tensor([-1.0, 0.5, 2.0]), 0.0, 1.0).tolist()
    [0.0, 0.5, 1.0]
    """
    if min is None and max is None:
        raise ValueError("clamp: at least one of min and max must be given")
    low, high = _bound(min), _bound(max)
    given = [x for x in (low, high) if x is not None]
    a, *given = promoted(a, *given)
    low, high = (given.pop(0) if low is not None else None), (given.pop(0) if high is not None else None)
    if not isinstance(low, Tensor) and not isinstance(high, Tensor):
        return Clamp.apply(a, low, high)
    # Tensor bounds: as PyTorch, a keeps the gradient where a >= min (and a <= max), the bound elsewhere.
    out = a if low is None else where(a < low, low, a)
    return out if high is None else where(out > high, high, out)


def clip(a: Tensor, min: Operand | None = None, max: Operand | None = None) -> Tensor:
    """Alias of ``clamp``, as in PyTorch and numpy.

    >>> import pyrt
    >>> clip(pyrt.tensor([-1.0, 2.0]), max=1.0).tolist()
    [-1.0, 1.0]
    """
    return clamp(a, min, max)


def maximum(a: Operand, b: Operand) -> Tensor:
    """Elementwise maximum; ties share the gradient equally.

    >>> import pyrt
    >>> maximum(pyrt.tensor([1.0, 5.0]), pyrt.tensor([3.0, 2.0])).tolist()
    [3.0, 5.0]
    """
    return Maximum.apply(*promoted(a, b))


def minimum(a: Operand, b: Operand) -> Tensor:
    """Elementwise minimum; ties share the gradient equally.

    >>> import pyrt
    >>> minimum(pyrt.tensor([1.0, 5.0]), pyrt.tensor([3.0, 2.0])).tolist()
    [1.0, 2.0]
    """
    return Minimum.apply(*promoted(a, b))


@runs_on_input_device
def where(condition: Tensor | Any, a: Operand, b: Operand) -> Tensor:
    """Pick ``a`` where ``condition`` holds, else ``b`` (gradients flow to the picked side).

    >>> import pyrt
    >>> where(pyrt.tensor([True, False]), pyrt.tensor([1.0, 1.0]), 0.0).tolist()
    [1.0, 0.0]
    """
    cond = condition.data if isinstance(condition, Tensor) else get_array_module(condition).asarray(condition)
    return Where.apply(cond.astype(bool, copy=False), *promoted(a, b))


def lerp(start: Tensor, end: Tensor, weight: Operand) -> Tensor:
    """Linear interpolation ``start + weight * (end - start)``; ``weight`` a number or a tensor.

    >>> import pyrt
    >>> lerp(pyrt.tensor([0.0, 10.0]), pyrt.tensor([1.0, 20.0]), 0.25).tolist()
    [0.25, 12.5]
    """
    if category(start.dtype) != FLOATING:
        raise RuntimeError(f"lerp: expected floating point tensors, got {start.dtype}")
    if start.dtype != end.dtype:
        raise RuntimeError(f"lerp: expected start and end of one dtype, got {start.dtype} and {end.dtype}")
    return add(start, mul(weight, sub(end, start)))


@runs_on_input_device
def masked_fill(x: Tensor, mask: Tensor | Any, value: Operand) -> Tensor:
    """``x`` with ``value`` where ``mask`` is True; the result keeps ``x``'s dtype, and has the
    broadcast shape of ``x`` and ``mask`` (as PyTorch's out-of-place ``masked_fill``).

    ``value`` may be a number or a 0-d tensor (which then receives the gradient
    of the filled places).

    >>> import pyrt
    >>> masked_fill(pyrt.tensor([1.0, 2.0, 3.0]), pyrt.tensor([True, False, True]), -1.0).tolist()
    [-1.0, 2.0, -1.0]
    """
    cond = mask.data if isinstance(mask, Tensor) else get_array_module(mask).asarray(mask)
    if cond.dtype != np.bool_:
        raise RuntimeError(f"masked_fill only supports boolean masks, but got mask with dtype {cond.dtype}")
    if isinstance(value, Tensor) and value.ndim != 0:
        raise RuntimeError(f"masked_fill only supports a 0-dimensional value tensor, but got tensor with "
                           f"{value.ndim} dimension(s)")
    (fill,) = promoted(value, dtype=x.dtype)
    return Where.apply(cond, fill, x)


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
