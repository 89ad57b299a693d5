"""Tensor factories with PyTorch's names: zeros, ones, full, arange, rand, randn, ..."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from pyrt import random
from pyrt.ops.promotion import scalar_type
from pyrt.tensor import _DEFAULT_FLOAT, Tensor

__all__ = [
    "arange", "empty", "from_numpy", "full", "ones", "ones_like", "rand", "randint", "randn",
    "zeros", "zeros_like",
]


def _shape(size: tuple[Any, ...]) -> tuple[int, ...]:
    if len(size) == 1 and isinstance(size[0], Sequence):
        size = tuple(size[0])
    return tuple(int(n) for n in size)


def zeros(*size: int | Sequence[int], dtype: Any = _DEFAULT_FLOAT,
          requires_grad: bool = False) -> Tensor:
    """A tensor of zeros.

    >>> zeros(2, 3).shape
    (2, 3)
    """
    return Tensor(np.zeros(_shape(size), dtype=dtype), requires_grad=requires_grad)


def ones(*size: int | Sequence[int], dtype: Any = _DEFAULT_FLOAT,
         requires_grad: bool = False) -> Tensor:
    """A tensor of ones.

    >>> ones(2).tolist()
    [1.0, 1.0]
    """
    return Tensor(np.ones(_shape(size), dtype=dtype), requires_grad=requires_grad)


def empty(*size: int | Sequence[int], dtype: Any = _DEFAULT_FLOAT) -> Tensor:
    """An uninitialised tensor.

    >>> empty(4).shape
    (4,)
    """
    return Tensor(np.empty(_shape(size), dtype=dtype))


def full(size: Sequence[int], fill_value: bool | int | float, dtype: Any = None,
         requires_grad: bool = False) -> Tensor:
    """A tensor filled with ``fill_value``; without ``dtype``, the value's own (as PyTorch):
    bool -> bool, int -> int64, float -> float32.

    >>> full((2,), 7.0).tolist()
    [7.0, 7.0]
    >>> full((2, 2), 4).dtype, full((1,), True).dtype
    (dtype('int64'), dtype('bool'))
    """
    if dtype is None:
        if isinstance(fill_value, Tensor):
            fill_value = fill_value.item()
        dtype = scalar_type(fill_value)
    return Tensor(np.full(_shape((size,)), fill_value, dtype=dtype), requires_grad=requires_grad)


def zeros_like(x: Tensor) -> Tensor:
    """Zeros with ``x``'s shape, dtype and array library.

    >>> zeros_like(ones(3)).tolist()
    [0.0, 0.0, 0.0]
    """
    return Tensor(x.data * 0)


def ones_like(x: Tensor) -> Tensor:
    """Ones with ``x``'s shape, dtype and array library.

    >>> ones_like(zeros(2)).tolist()
    [1.0, 1.0]
    """
    return Tensor(x.data * 0 + 1)


def arange(start: float, end: float | None = None, step: float = 1, dtype: Any = None) -> Tensor:
    """Evenly spaced values in ``[start, end)``; integers unless a bound is a float.

    >>> arange(3).tolist()
    [0, 1, 2]
    """
    if end is None:
        start, end = 0, start
    values = np.arange(start, end, step, dtype=dtype)
    if dtype is None and values.dtype == np.float64:
        values = values.astype(_DEFAULT_FLOAT)
    return Tensor(values)


def rand(*size: int | Sequence[int], dtype: Any = _DEFAULT_FLOAT,
         requires_grad: bool = False) -> Tensor:
    """Uniform samples in ``[0, 1)`` from pyrt's generator.

    >>> rand(2, 2).shape
    (2, 2)
    """
    return Tensor(random.uniform(_shape(size), dtype=dtype), requires_grad=requires_grad)


def randn(*size: int | Sequence[int], dtype: Any = _DEFAULT_FLOAT,
          requires_grad: bool = False) -> Tensor:
    """Standard normal samples from pyrt's generator.

    >>> randn(3).shape
    (3,)
    """
    return Tensor(random.normal(_shape(size), dtype=dtype), requires_grad=requires_grad)


def randint(low: int, high: int, size: Sequence[int]) -> Tensor:
    """Integers in ``[low, high)`` from pyrt's generator.

    >>> int(randint(0, 1, (3,)).sum())
    0
    """
    return Tensor(random.default_generator().integers(low, high, size=tuple(size), dtype=np.int64))


def from_numpy(array: np.ndarray) -> Tensor:
    """A tensor sharing memory with a numpy array.

    >>> from_numpy(np.zeros(2, np.float64)).dtype
    dtype('float64')
    """
    if not isinstance(array, np.ndarray):
        raise TypeError(f"from_numpy: expected a numpy.ndarray, got {type(array).__name__}")
    return Tensor(array)
