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
    kind = type(x)
    # numpy arrays first: every op asks, once per operand, on the CPU's hot path.
    return kind is not np.ndarray and kind.__module__.startswith("cupy")


def get_array_module(*arrays: Any) -> ModuleType:
    """Return ``cupy`` if any argument is a cupy array, else ``numpy``.

    >>> get_array_module(np.ones(2), 3.0) is np
    True
    """
    for x in arrays:
        if type(x) is not np.ndarray and is_cuda_array(x):
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


def move_array(array: Any, kind: str, index: int | None) -> Any:
    """``array`` on the CPU (``kind="cpu"``: numpy) or on CUDA device ``index`` (cupy), copied
    only when it is elsewhere (``pyrt.cuda.parse_device`` gives ``kind`` and ``index``).

    A move between two GPUs goes through host memory: simple, and correct whether or not
    the devices can reach each other's memory (peer access).

    >>> a = np.zeros(2)
    >>> move_array(a, "cpu", None) is a
    True
    """
    if kind == "cpu":
        return array.get() if is_cuda_array(array) else array
    import cupy

    if is_cuda_array(array) and array.device.id == index:
        return array
    host = array.get() if is_cuda_array(array) else array
    with cupy.cuda.Device(index):
        return cupy.asarray(host)


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
