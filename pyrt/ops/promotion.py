"""Type promotion: which dtype an op on mixed operands produces, PyTorch's rules, written once.

Every op that combines operands asks ``result_type`` (binary arithmetic,
``where``, ``clamp``, ``lerp``, ...) or ``float_type`` (true division and the
float-valued math functions). The rules, as in ``torch.result_type``
(docs/type_promotion.md has them as a table):

1. Each operand has a *category*: bool < integer < floating.
2. Operands fall into three priority groups: tensors with at least one dim,
   0-d tensors, and Python numbers (``bool``/``int``/``float`` and numpy
   scalars, which count as numbers). Within a group, dtypes promote pairwise
   (``promote_types``); a Python bool is bool, an int is int64, a float is the
   default float dtype (float32).
3. A lower-priority group changes the result only when its category is
   higher: ``int32_tensor + 5`` stays int32, ``int32_tensor + 2.5`` becomes
   float32, ``float16_tensor + float64_0d_tensor`` stays float16, but
   ``int32_tensor + float64_0d_tensor`` becomes float64.

``promote_types`` differs from numpy's: an integer meeting a float always gives
that float (numpy makes ``int32 + float32`` float64, PyTorch float32).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pyrt.tensor import _DEFAULT_FLOAT, Tensor

__all__ = ["DEFAULT_FLOAT", "category", "float_type", "promote_types", "result_type", "scalar_type"]

# PyTorch's default dtype: what a Python float becomes (defined once, beside Tensor).
DEFAULT_FLOAT = np.dtype(_DEFAULT_FLOAT)

BOOL, INTEGER, FLOATING = 0, 1, 2


def category(dtype: Any) -> int:
    """0 for bool, 1 for integers, 2 for floating point.

    >>> category(np.int8), category(np.float16)
    (1, 2)
    """
    kind = np.dtype(dtype).kind
    if kind == "b":
        return BOOL
    if kind in "iu":
        return INTEGER
    if kind == "f":
        return FLOATING
    raise TypeError(f"pyrt has no type promotion for dtype {np.dtype(dtype)}")


def promote_types(a: Any, b: Any) -> np.dtype:
    """The smallest dtype both ``a`` and ``b`` convert to, as ``torch.promote_types``.

    >>> promote_types(np.int32, np.float32), promote_types(np.uint8, np.int8)
    (dtype('float32'), dtype('int16'))
    """
    a, b = np.dtype(a), np.dtype(b)
    if a == b:
        return a
    ca, cb = category(a), category(b)
    if ca != cb:
        # The higher category wins outright: int64 + float16 is float16, bool + uint8 is uint8.
        return a if ca > cb else b
    return np.promote_types(a, b)  # same category: numpy's lattice is PyTorch's (int8 + uint8 = int16)


def scalar_type(value: bool | int | float | np.generic) -> np.dtype:
    """The dtype a Python number stands for: bool, int64, or the default float.

    >>> scalar_type(True), scalar_type(3), scalar_type(0.5)
    (dtype('bool'), dtype('int64'), dtype('float32'))
    """
    if isinstance(value, bool | np.bool_):
        return np.dtype(bool)
    if isinstance(value, int | np.integer):
        return np.dtype(np.int64)
    if isinstance(value, float | np.floating):
        return DEFAULT_FLOAT
    raise TypeError(f"expected a Tensor or a Python number, got {type(value).__name__}")


def _combine(higher: np.dtype | None, lower: np.dtype | None) -> np.dtype | None:
    """PyTorch's combine_categories: a lower-priority group matters only if its category is higher."""
    if higher is None:
        return lower
    if lower is None:
        return higher
    if category(higher) == FLOATING:
        return higher
    if category(higher) == BOOL or category(lower) == FLOATING:
        return promote_types(higher, lower)
    return higher  # both integers (or a bool scalar): the tensor keeps its width


def result_type(*operands: Any) -> np.dtype:
    """The dtype an elementwise op on ``operands`` computes in (tensors, arrays or Python numbers).

    >>> import pyrt
    >>> result_type(pyrt.tensor([1, 2]), 0.5)
    dtype('float32')
    >>> result_type(pyrt.tensor([1, 2], dtype=pyrt.int32), pyrt.tensor(7))
    dtype('int32')
    """
    groups: list[np.dtype | None] = [None, None, None]  # dim tensors, 0-d tensors, numbers
    for x in operands:
        data = x.data if isinstance(x, Tensor) else x
        if hasattr(data, "dtype") and hasattr(data, "ndim") and not isinstance(data, np.generic):
            group, dtype = (0 if data.ndim > 0 else 1), data.dtype
        else:
            group, dtype = 2, scalar_type(data)
        groups[group] = dtype if groups[group] is None else promote_types(groups[group], dtype)
    out = _combine(groups[0], _combine(groups[1], groups[2]))
    if out is None:
        raise TypeError("result_type: expected at least one operand")
    return out


def float_type(dtype: Any) -> np.dtype:
    """``dtype`` if it is floating point, else the default float: what ``/``, ``exp``, ``sin`` give.

    >>> float_type(np.int64), float_type(np.float64)
    (dtype('float32'), dtype('float64'))
    """
    dtype = np.dtype(dtype)
    return dtype if category(dtype) == FLOATING else DEFAULT_FLOAT
