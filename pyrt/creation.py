"""Tensor factories with PyTorch's names: zeros, ones, full, arange, rand, randn, ...

Each takes PyTorch's ``device=`` (``"cpu"``, ``"cuda[:N]"``, an int, a ``torch.device``): on a
GPU the array is made by cupy on that device; random draws come from pyrt's one CPU generator
and are then copied, so a seed gives the same values on every device.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any

import numpy as np

from pyrt import random
from pyrt.backend import device_of
from pyrt.ops.promotion import scalar_type
from pyrt.tensor import _DEFAULT_FLOAT, Tensor

__all__ = [
    "arange", "empty", "empty_like", "from_numpy", "full", "full_like", "ones", "ones_like", "rand",
    "rand_like", "randint", "randn", "randn_like", "zeros", "zeros_like",
]


def _shape(size: tuple[Any, ...]) -> tuple[int, ...]:
    if len(size) == 1 and isinstance(size[0], Sequence):
        size = tuple(size[0])
    return tuple(int(n) for n in size)


def _on(device: Any, build: Callable[[ModuleType], Any]) -> Any:
    """``build(xp)`` with the array library of ``device`` (None: the CPU), run with that GPU
    current so cupy allocates there."""
    if device is not None:
        from pyrt.cuda import parse_device

        kind, index = parse_device(device)
        if kind == "cuda":
            import cupy

            with cupy.cuda.Device(index):
                return build(cupy)
    return build(np)


def zeros(*size: int | Sequence[int], dtype: Any = _DEFAULT_FLOAT, device: Any = None,
          requires_grad: bool = False) -> Tensor:
    """A tensor of zeros.

    >>> zeros(2, 3, device="cpu").shape
    (2, 3)
    """
    return Tensor(_on(device, lambda xp: xp.zeros(_shape(size), dtype=dtype)), requires_grad=requires_grad)


def ones(*size: int | Sequence[int], dtype: Any = _DEFAULT_FLOAT, device: Any = None,
         requires_grad: bool = False) -> Tensor:
    """A tensor of ones.

    >>> ones(2).tolist()
    [1.0, 1.0]
    """
    return Tensor(_on(device, lambda xp: xp.ones(_shape(size), dtype=dtype)), requires_grad=requires_grad)


def empty(*size: int | Sequence[int], dtype: Any = _DEFAULT_FLOAT, device: Any = None,
          requires_grad: bool = False) -> Tensor:
    """An uninitialised tensor.

    >>> empty(4).shape
    (4,)
    """
    return Tensor(_on(device, lambda xp: xp.empty(_shape(size), dtype=dtype)), requires_grad=requires_grad)


def full(size: Sequence[int], fill_value: bool | int | float, dtype: Any = None, device: Any = None,
         requires_grad: bool = False) -> Tensor:
    """A tensor filled with ``fill_value``; without ``dtype``, the value's own (as PyTorch):
    bool -> bool, int -> int64, float -> float32.

    >>> full((2,), 7.0).tolist()
    [7.0, 7.0]
    >>> full((2, 2), 4).dtype, full((1,), True).dtype
    (dtype('int64'), dtype('bool'))
    """
    if isinstance(fill_value, Tensor):
        fill_value = fill_value.item()
    if dtype is None:
        dtype = scalar_type(fill_value)
    return Tensor(_on(device, lambda xp: xp.full(_shape((size,)), fill_value, dtype=dtype)),
                  requires_grad=requires_grad)


def _like(x: Tensor, device: Any) -> Any:
    """``device`` if given, else ``x``'s own."""
    return device_of(x.data) if device is None else device


def zeros_like(x: Tensor, dtype: Any = None, device: Any = None, requires_grad: bool = False) -> Tensor:
    """Zeros with ``x``'s shape, and its dtype and device unless given.

    >>> zeros_like(ones(3)).tolist()
    [0.0, 0.0, 0.0]
    """
    return zeros(x.shape, dtype=x.dtype if dtype is None else dtype, device=_like(x, device),
                 requires_grad=requires_grad)


def ones_like(x: Tensor, dtype: Any = None, device: Any = None, requires_grad: bool = False) -> Tensor:
    """Ones with ``x``'s shape, and its dtype and device unless given.

    >>> ones_like(zeros(2)).tolist()
    [1.0, 1.0]
    """
    return ones(x.shape, dtype=x.dtype if dtype is None else dtype, device=_like(x, device),
                requires_grad=requires_grad)


def empty_like(x: Tensor, dtype: Any = None, device: Any = None, requires_grad: bool = False) -> Tensor:
    """An uninitialised tensor with ``x``'s shape, and its dtype and device unless given.

    >>> empty_like(zeros(2, 3)).shape
    (2, 3)
    """
    return empty(x.shape, dtype=x.dtype if dtype is None else dtype, device=_like(x, device),
                 requires_grad=requires_grad)


def full_like(x: Tensor, fill_value: bool | int | float, dtype: Any = None, device: Any = None,
              requires_grad: bool = False) -> Tensor:
    """``fill_value`` in ``x``'s shape, and its dtype and device unless given.

    >>> full_like(zeros(2), 3).tolist()
    [3.0, 3.0]
    """
    return full(x.shape, fill_value, dtype=x.dtype if dtype is None else dtype, device=_like(x, device),
                requires_grad=requires_grad)


def rand_like(x: Tensor, dtype: Any = None, device: Any = None, requires_grad: bool = False) -> Tensor:
    """Uniform samples in ``[0, 1)`` in ``x``'s shape, and its dtype and device unless given.

    >>> rand_like(zeros(2, 2)).shape
    (2, 2)
    """
    return rand(x.shape, dtype=x.dtype if dtype is None else dtype, device=_like(x, device),
                requires_grad=requires_grad)


def randn_like(x: Tensor, dtype: Any = None, device: Any = None, requires_grad: bool = False) -> Tensor:
    """Standard normal samples in ``x``'s shape, and its dtype and device unless given.

    >>> randn_like(zeros(3)).dtype
    dtype('float32')
    """
    return randn(x.shape, dtype=x.dtype if dtype is None else dtype, device=_like(x, device),
                 requires_grad=requires_grad)


def arange(start: float, end: float | None = None, step: float = 1, dtype: Any = None,
           device: Any = None, requires_grad: bool = False) -> Tensor:
    """Evenly spaced values in ``[start, end)``; integers unless a bound is a float.

    >>> arange(3).tolist()
    [0, 1, 2]
    """
    if end is None:
        start, end = 0, start
    values = np.arange(start, end, step, dtype=dtype)  # on the CPU: numpy's rules decide the dtype
    if dtype is None and values.dtype == np.float64:
        values = values.astype(_DEFAULT_FLOAT)
    return Tensor(_on(device, lambda xp: xp.arange(start, end, step, dtype=values.dtype)),
                  requires_grad=requires_grad)


def rand(*size: int | Sequence[int], dtype: Any = _DEFAULT_FLOAT, device: Any = None,
         requires_grad: bool = False) -> Tensor:
    """Uniform samples in ``[0, 1)`` from pyrt's generator.

    >>> rand(2, 2).shape
    (2, 2)
    """
    return Tensor(_on(device, lambda xp: random.uniform(_shape(size), xp, dtype=dtype)),
                  requires_grad=requires_grad)


def randn(*size: int | Sequence[int], dtype: Any = _DEFAULT_FLOAT, device: Any = None,
          requires_grad: bool = False) -> Tensor:
    """Standard normal samples from pyrt's generator.

    >>> randn(3).shape
    (3,)
    """
    return Tensor(_on(device, lambda xp: random.normal(_shape(size), xp, dtype=dtype)),
                  requires_grad=requires_grad)


def randint(low: int, high: int, size: Sequence[int], dtype: Any = np.int64, device: Any = None) -> Tensor:
    """Integers in ``[low, high)`` from pyrt's generator.

    >>> int(randint(0, 1, (3,)).sum())
    0
    """
    values = random.default_generator().integers(low, high, size=tuple(size), dtype=np.int64).astype(dtype)
    return Tensor(_on(device, lambda xp: values if xp is np else xp.asarray(values)))


def from_numpy(array: np.ndarray) -> Tensor:
    """A tensor sharing memory with a numpy array.

    >>> from_numpy(np.zeros(2, np.float64)).dtype
    dtype('float64')
    """
    if not isinstance(array, np.ndarray):
        raise TypeError(f"from_numpy: expected a numpy.ndarray, got {type(array).__name__}")
    return Tensor(array)
