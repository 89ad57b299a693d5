"""The typed front door to pyrt's native kernels.

Every native kernel has exactly one Python entry point here. It validates its
inputs (dtype, rank, shape, memory overlap) with errors that name the offending
shapes and dtypes, then dispatches on the array type: numpy arrays go to
``pyrt._C`` (C++, OpenMP), cupy arrays to ``pyrt._cuda``. Ops and layers call
these functions; nothing else imports ``_C`` or ``_cuda``.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import numpy as np

from pyrt import _C
from pyrt.backend import describe, get_array_module, is_cuda_array

__all__ = [
    "cuda_available",
    "get_num_threads",
    "matmul",
    "set_num_threads",
    "sgemm_kernel_name",
]

_cuda_module: ModuleType | None = None


def _cuda() -> ModuleType:
    """Import ``pyrt._cuda`` on first use, with an actionable error if it was not built."""
    global _cuda_module
    if _cuda_module is None:
        try:
            from pyrt import _cuda as module
        except ImportError as exc:
            raise RuntimeError(
                "pyrt was built without CUDA support (pyrt._cuda is missing); reinstall on a "
                "machine with nvcc, or with `pip install . -Ccmake.define.PYRT_CUDA=ON`"
            ) from exc
        _cuda_module = module
    return _cuda_module


def cuda_available() -> bool:
    """True when ``pyrt._cuda`` was built and at least one GPU is visible.

    >>> isinstance(cuda_available(), bool)
    True
    """
    try:
        return _cuda().device_count() > 0
    except RuntimeError:
        return False


def set_num_threads(n: int) -> None:
    """Set the number of threads the CPU kernels use in this process.

    >>> set_num_threads(get_num_threads())
    """
    if not isinstance(n, int | np.integer) or n < 1:
        raise ValueError(f"set_num_threads: n must be a positive integer, got {n!r}")
    _C.set_num_threads(int(n))


def get_num_threads() -> int:
    """Number of threads the CPU kernels use.

    >>> get_num_threads() >= 1
    True
    """
    return int(_C.get_num_threads())


def sgemm_kernel_name() -> str:
    """Name of the CPU SGEMM micro-kernel picked for this processor.

    >>> sgemm_kernel_name() in ("avx2_fma_6x16", "portable")
    True
    """
    return str(_C.sgemm_kernel_name())


def _element_strides(x: Any, itemsize: int) -> tuple[int, int]:
    return x.strides[0] // itemsize, x.strides[1] // itemsize


def _check_matmul_operand(name: str, x: Any) -> None:
    if getattr(x, "ndim", None) != 2:
        raise ValueError(f"matmul: {name} must be a 2-D array, got {describe(x)}")
    if x.dtype != np.float32:
        raise TypeError(
            f"matmul: {name} is {describe(x)}; the native kernel computes in float32 "
            "(cast with .astype(np.float32), or use numpy for other dtypes)"
        )
    if any(s % x.itemsize for s in x.strides):
        raise ValueError(
            f"matmul: {name} has strides {x.strides} that are not multiples of its "
            f"item size {x.itemsize}"
        )


def matmul(a: Any, b: Any, out: Any | None = None) -> Any:
    """Matrix product ``a @ b`` of 2-D float32 arrays on our SGEMM kernel.

    ``a`` is (m, k) and ``b`` is (k, n); either may be a transposed or strided
    view (the kernel packs any layout, nothing is copied first). numpy arrays
    run on the C++ kernel, cupy arrays on the CUDA kernel. ``out``, if given,
    is an (m, n) float32 array of the same library that overlaps neither input.

    >>> a = np.ones((2, 3), np.float32); b = np.ones((3, 4), np.float32)
    >>> matmul(a, b)[0, 0]
    np.float32(3.0)
    >>> matmul(a, b.T.copy().T).shape   # a transposed view works without a copy
    (2, 4)
    """
    _check_matmul_operand("a", a)
    _check_matmul_operand("b", b)
    if a.shape[1] != b.shape[0]:
        raise ValueError(
            f"matmul: a is {describe(a)} but b is {describe(b)}; "
            f"inner dimensions {a.shape[1]} != {b.shape[0]}"
        )
    xp = get_array_module(a, b)
    if xp is not np and not (is_cuda_array(a) and is_cuda_array(b)):
        raise TypeError(
            "matmul: a and b must both be numpy arrays or both cupy arrays, got "
            f"{type(a).__module__}.{type(a).__name__} and {type(b).__module__}.{type(b).__name__}"
        )
    m, n = a.shape[0], b.shape[1]
    if out is None:
        out = xp.empty((m, n), dtype=np.float32)
    else:
        _check_out(out, (m, n), a, b, xp)
    if xp is np:
        _C.sgemm(a, b, out, 1.0, 0.0)
    else:
        _cuda_sgemm(a, b, out)
    return out


def _check_out(out: Any, shape: tuple[int, int], a: Any, b: Any, xp: ModuleType) -> None:
    if get_array_module(out) is not xp:
        raise TypeError(f"matmul: out is a {type(out).__module__} array but the inputs are not")
    if out.shape != shape or out.dtype != np.float32:
        raise ValueError(f"matmul: out is {describe(out)} but the product is {shape} float32")
    if xp is np:
        if not out.flags.writeable:
            raise ValueError("matmul: out is read-only")
        if np.may_share_memory(out, a) or np.may_share_memory(out, b):
            raise ValueError("matmul: out overlaps an input; pass a separate output array")
    if any(s % out.itemsize for s in out.strides) or (0 in out.strides and out.size > 1):
        raise ValueError(f"matmul: out has strides {out.strides}; it must not repeat elements")


def _cuda_sgemm(a: Any, b: Any, out: Any) -> None:
    import cupy

    if not (a.device.id == b.device.id == out.device.id):
        raise ValueError(
            f"matmul: arrays are on different GPUs (a: cuda:{a.device.id}, "
            f"b: cuda:{b.device.id}, out: cuda:{out.device.id})"
        )
    m, k = a.shape
    n = b.shape[1]
    rsa, csa = _element_strides(a, 4)
    rsb, csb = _element_strides(b, 4)
    rsc, csc = _element_strides(out, 4)
    stream = cupy.cuda.get_current_stream().ptr
    with a.device:
        _cuda().sgemm(
            m, n, k, 1.0, a.data.ptr, rsa, csa, b.data.ptr, rsb, csb, 0.0, out.data.ptr,
            rsc, csc, stream,
        )
