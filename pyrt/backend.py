"""Array backend: which array library (numpy or cupy) holds an array, and where.

One code path serves both libraries, as in Chainer: a function that computes on
arrays asks ``xp = get_array_module(x)`` and then writes ``xp.exp(x)``. cupy is
never imported here unless an array already is a cupy array, so CPU-only users
never pay for (or need) it.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import numpy as np


def is_cuda_array(x: Any) -> bool:
    """True when ``x`` is a cupy array (checked without importing cupy).

    >>> is_cuda_array(np.zeros(3))
    False
    """
    return type(x).__module__.startswith("cupy")


def get_array_module(*arrays: Any) -> ModuleType:
    """Return ``cupy`` if any argument is a cupy array, else ``numpy``.

    >>> get_array_module(np.ones(2), 3.0) is np
    True
    """
    for x in arrays:
        if is_cuda_array(x):
            import cupy

            return cupy
    return np


def device_of(x: Any) -> str:
    """Device of an array as a string: ``"cpu"`` or ``"cuda:N"``.

    >>> device_of(np.zeros(1))
    'cpu'
    """
    if is_cuda_array(x):
        return f"cuda:{x.device.id}"
    return "cpu"


def describe(x: Any) -> str:
    """Shape and dtype of an array for error messages, e.g. ``(64, 784) float32``.

    >>> describe(np.zeros((2, 3), np.float32))
    '(2, 3) float32'
    """
    shape = getattr(x, "shape", None)
    dtype = getattr(x, "dtype", None)
    if shape is None:
        return type(x).__name__
    return f"{tuple(shape)} {dtype}"
