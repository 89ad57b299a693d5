"""pyrt._cuda.reduce_inplace against numpy, on the SIMT emulator and a GPU.

Run: pytest tests/cuda/test_cuda_reduce.py
Every test takes ``kernel_device`` (tests/cuda/conftest.py). Results must equal numpy's
bit for bit: each element is one IEEE add, multiply or comparison (or a wrapping integer
operation), so there is no rounding to allow for. Each case also asserts how the kernel
splits the buffer (``reduce_plan``: loose head, 16-byte vectors, loose tail), so the vector
body and both loose loops are known to be exercised.
"""

from __future__ import annotations

import numpy as np
import pytest

DTYPES = [np.float32, np.float64, np.int32, np.int64]
OPS = {"sum": np.add, "prod": np.multiply, "max": np.maximum, "min": np.minimum}
# 0, 1, primes, and sizes around the vector widths (2 and 4 elements) and a warp of vectors.
SIZES = [0, 1, 2, 3, 4, 5, 7, 13, 31, 64, 97, 1031]


def _values(rng: np.random.Generator, dtype, count: int) -> np.ndarray:
    if np.issubdtype(dtype, np.integer):
        return rng.integers(-1000, 1000, size=count).astype(dtype)
    return rng.uniform(-2, 2, size=count).astype(dtype)


def _placed(dev, host: np.ndarray, shift: int):
    """A device copy of 1-D ``host`` starting ``shift`` elements past a 16-byte boundary."""
    flat = dev.xp.zeros(host.size + 16, dtype=host.dtype)
    start = (-dev.ptr(flat) % 16) // host.itemsize + shift
    view = flat[start : start + host.size]
    view[...] = dev.asarray(host)
    return view


def _reduce(dev, dst, src, op: str) -> None:
    dev.kernels.reduce_inplace(dev.ptr(dst), dev.ptr(src), dst.size, dst.dtype.name, op, dev.stream_ptr())
    dev.synchronize()


def _expected_plan(count: int, itemsize: int, dst_shift: int, src_shift: int) -> tuple[int, int]:
    lanes = 16 // itemsize
    if (dst_shift - src_shift) % lanes:
        return count, 0  # unequally misaligned: all one by one
    head = min((-dst_shift) % lanes, count)
    return head, (count - head) // lanes


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("op", list(OPS))
@pytest.mark.parametrize("count", SIZES)
@pytest.mark.parametrize(("dst_shift", "src_shift"), [(0, 0), (1, 1), (1, 0), (0, 3)])
def test_matches_numpy(kernel_device, dtype, op, count, dst_shift, src_shift):
    dev = kernel_device
    rng = np.random.default_rng(count * 31 + dst_shift * 7 + src_shift)
    a, b = _values(rng, dtype, count), _values(rng, dtype, count)
    dst, src = _placed(dev, a, dst_shift), _placed(dev, b, src_shift)
    plan = dev.kernels.reduce_plan(dev.ptr(dst), dev.ptr(src), count, a.itemsize)
    assert tuple(plan) == _expected_plan(count, a.itemsize, dst_shift, src_shift)
    _reduce(dev, dst, src, op)
    np.testing.assert_array_equal(dev.asnumpy(dst), OPS[op](a, b))
    np.testing.assert_array_equal(dev.asnumpy(src), b)  # src is only read


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("op", list(OPS))
def test_dst_is_src(kernel_device, dtype, op):
    dev = kernel_device
    a = _values(np.random.default_rng(2), dtype, 37)
    x = _placed(dev, a, 0)
    _reduce(dev, x, x, op)
    np.testing.assert_array_equal(dev.asnumpy(x), OPS[op](a, a))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("op", ["max", "min"])
def test_nan_propagates_like_numpy(kernel_device, dtype, op):
    dev = kernel_device
    a = np.array([np.nan, 1.0, np.nan, 2.0, -np.inf, 3.0, 5.0, np.nan, 0.5], dtype)
    b = np.array([1.0, np.nan, np.nan, 1.0, 4.0, np.inf, -1.0, 2.0, np.nan], dtype)
    dst, src = _placed(dev, a, 0), _placed(dev, b, 0)
    _reduce(dev, dst, src, op)
    np.testing.assert_array_equal(dev.asnumpy(dst), OPS[op](a, b))  # NaN == NaN here


@pytest.mark.parametrize("dtype", [np.int32, np.int64])
@pytest.mark.parametrize("op", ["sum", "prod"])
def test_integers_wrap_like_numpy(kernel_device, dtype, op):
    dev = kernel_device
    info = np.iinfo(dtype)
    a = np.array([info.max, info.min, info.max, -1, info.max // 2 + 7], dtype)
    b = np.array([1, -1, info.max, info.min, 3], dtype)
    dst, src = _placed(dev, a, 0), _placed(dev, b, 0)
    _reduce(dev, dst, src, op)
    with np.errstate(over="ignore"):
        np.testing.assert_array_equal(dev.asnumpy(dst), OPS[op](a, b))


def test_bad_arguments(kernel_device):
    k = kernel_device.kernels
    with pytest.raises(ValueError, match="op must be 'sum', 'prod', 'max' or 'min', got 'avg'"):
        k.reduce_inplace(0, 0, 1, "float32", "avg", 0)
    with pytest.raises(ValueError, match="dtype must be float32, float64, int32 or int64, got float16"):
        k.reduce_inplace(0, 0, 1, "float16", "sum", 0)
    with pytest.raises(ValueError, match="count = -1 is negative"):
        k.reduce_inplace(0, 0, -1, "float32", "sum", 0)


def test_error_without_gpu():
    _cuda = pytest.importorskip("pyrt._cuda", reason="pyrt was built without CUDA")
    if _cuda.device_count() != 0:
        pytest.skip("a GPU is visible: the no-driver error path cannot be reached")
    # The launch itself fails, so the dummy pointers are never dereferenced.
    with pytest.raises(RuntimeError, match=r"reduce_inplace: CUDA error cudaError\w+ \(\d+\)"):
        _cuda.reduce_inplace(16, 16, 4, "float32", "sum", 0)
