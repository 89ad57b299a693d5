"""pyrt._cuda.sgemm against numpy, on the SIMT emulator and (where there is one) a GPU.

Run: pytest tests/cuda/test_cuda_sgemm.py
Every test below takes ``kernel_device`` (tests/cuda/conftest.py): it runs the
kernel's own source on the CPU through pyrt._cuda_emulator everywhere, and on a
GPU through pyrt._cuda when cupy and a device are present. The no-GPU error
path runs wherever pyrt._cuda imports, since a machine without a driver must
get a RuntimeError, not a crash.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

TILE = 128  # the kernel's block tile; shapes below straddle it


def test_device_count_and_error_without_gpu():
    _cuda = pytest.importorskip("pyrt._cuda", reason="pyrt was built without CUDA")
    count = _cuda.device_count()
    assert isinstance(count, int)
    assert count >= 0
    if count == 0:
        # Dummy pointers are fine: nothing is launched, so nothing is dereferenced.
        with pytest.raises(RuntimeError, match=r"CUDA error cudaError\w+ \(\d+\)"):
            _cuda.sgemm(1, 1, 1, 1.0, 0, 1, 1, 0, 1, 1, 0.0, 0, 1, 1, 0)
        with pytest.raises(RuntimeError, match="synchronize"):
            _cuda.synchronize()
        assert _cuda.device_count() == 0  # still answers after the failures


def test_negative_size_is_value_error(kernel_device):
    with pytest.raises(ValueError, match="m = -1"):
        kernel_device.kernels.sgemm(-1, 1, 1, 1.0, 0, 1, 1, 0, 1, 1, 0.0, 0, 1, 1, 0)


# --- on a GPU --------------------------------------------------------------


def _strides(x) -> tuple[int, int]:
    return x.strides[0] // 4, x.strides[1] // 4


def _sgemm(dev, a, b, c, alpha: float = 1.0, beta: float = 0.0) -> None:
    """c = alpha * a @ b + beta * c in place, on device arrays of any strides."""
    m, k = a.shape
    n = b.shape[1]
    dev.kernels.sgemm(
        m, n, k, alpha,
        dev.ptr(a), *_strides(a),
        dev.ptr(b), *_strides(b),
        beta,
        dev.ptr(c), *_strides(c),
        dev.stream_ptr(),
    )  # fmt: skip
    dev.synchronize()


def _reference(a, b, c, alpha, beta):
    """alpha * a @ b + beta * c in float64; c unread when beta == 0, as in BLAS."""
    out = alpha * (a.astype(np.float64) @ b.astype(np.float64))
    if beta != 0:
        out += beta * c.astype(np.float64)
    return out


def _check(dev, got, want, k):
    # float32 rounding grows with k; these sums are of k terms in [-1, 1].
    np.testing.assert_allclose(dev.asnumpy(got), want, rtol=1e-5, atol=2e-6 * max(k, 1) + 1e-6)


def _rand(rng, shape):
    return rng.uniform(-1, 1, size=shape).astype(np.float32)


SHAPES = [
    (0, 5, 3),
    (5, 0, 3),
    (5, 3, 0),
    (0, 0, 0),
    (1, 1, 1),
    (1, 1, 7),
    (2, 3, 1),
    (7, 13, 17),
    (31, 37, 41),
    (TILE, TILE, 8),
    (TILE - 1, TILE + 1, 9),
    (TILE + 1, TILE - 1, 15),
    (2 * TILE + 1, 3 * TILE + 5, 33),
    (1, 300, 1),
    (300, 1, 300),
    (257, 131, 1031),
]


@pytest.mark.parametrize(("m", "n", "k"), SHAPES)
@pytest.mark.parametrize(("alpha", "beta"), [(1.0, 0.0), (1.0, 1.0), (-0.5, 2.0)])
def test_contiguous(kernel_device, m, n, k, alpha, beta):
    dev = kernel_device
    rng = np.random.default_rng(m * 10007 + n * 101 + k)
    a, b, c = _rand(rng, (m, k)), _rand(rng, (k, n)), _rand(rng, (m, n))
    c_dev = dev.asarray(c)
    _sgemm(dev, dev.asarray(a), dev.asarray(b), c_dev, alpha, beta)
    _check(dev, c_dev, _reference(a, b, c, alpha, beta), k)


def _layout(dev, rng, shape, kind):
    """A device view of the given shape: row-major, transposed, or a strided slice."""
    rows, cols = shape
    if kind == "row":
        host = _rand(rng, shape)
        return host, dev.asarray(host)
    if kind == "transposed":
        host = _rand(rng, (cols, rows))
        return host.T, dev.asarray(host).T
    # every other row and every third column of a bigger array: no unit stride at all
    host = _rand(rng, (2 * rows + 1, 3 * cols + 2))
    return host[1::2, ::3][:rows, :cols], dev.asarray(host)[1::2, ::3][:rows, :cols]


LAYOUTS = ["row", "transposed", "slice"]


@pytest.mark.parametrize(("m", "n", "k"), [(1, 1, 1), (7, 13, 17), (TILE + 1, TILE - 1, 67)])
@pytest.mark.parametrize("layout_a", LAYOUTS)
@pytest.mark.parametrize("layout_b", LAYOUTS)
@pytest.mark.parametrize("layout_c", LAYOUTS)
def test_strided_operands(kernel_device, m, n, k, layout_a, layout_b, layout_c):
    dev = kernel_device
    rng = np.random.default_rng(7)
    a, a_dev = _layout(dev, rng, (m, k), layout_a)
    b, b_dev = _layout(dev, rng, (k, n), layout_b)
    c, c_dev = _layout(dev, rng, (m, n), layout_c)
    _sgemm(dev, a_dev, b_dev, c_dev, 1.5, 0.5)
    _check(dev, c_dev, _reference(a, b, c, 1.5, 0.5), k)


@pytest.mark.parametrize(("m", "n", "k"), [(1, 1, 1), (TILE + 3, 2 * TILE - 3, 19), (5, 3, 0)])
def test_beta_zero_ignores_nan_in_c(kernel_device, m, n, k):
    dev, xp = kernel_device, kernel_device.xp
    rng = np.random.default_rng(3)
    a, b = _rand(rng, (m, k)), _rand(rng, (k, n))
    c_dev = xp.full((m, n), xp.nan, dtype=xp.float32)
    _sgemm(dev, dev.asarray(a), dev.asarray(b), c_dev, 1.0, 0.0)
    assert not xp.isnan(c_dev).any()
    _check(dev, c_dev, _reference(a, b, None, 1.0, 0.0), k)


def test_alpha_zero_reads_neither_a_nor_b(kernel_device):
    dev, xp = kernel_device, kernel_device.xp
    rng = np.random.default_rng(4)
    a = xp.full((9, 10), xp.nan, dtype=xp.float32)
    b = xp.full((10, 11), xp.inf, dtype=xp.float32)
    c = _rand(rng, (9, 11))
    c_dev = dev.asarray(c)
    _sgemm(dev, a, b, c_dev, 0.0, 3.0)
    _check(dev, c_dev, 3.0 * c.astype(np.float64), 10)
    _sgemm(dev, a, b, c_dev, 0.0, 0.0)
    assert (c_dev == 0).all()


@pytest.mark.parametrize("layout_c", LAYOUTS)
def test_only_c_view_is_written(kernel_device, layout_c):
    # C is a view into a larger buffer; everything around it must stay untouched.
    m, n, k = TILE + 5, TILE + 9, 13
    dev, xp = kernel_device, kernel_device.xp
    rng = np.random.default_rng(5)
    a, b = _rand(rng, (m, k)), _rand(rng, (k, n))
    parent = xp.full((3 * m + 4, 3 * n + 4), 42.0, dtype=xp.float32)
    if layout_c == "row":
        c_dev = parent[2 : 2 + m, 3 : 3 + n]
    elif layout_c == "transposed":
        c_dev = parent[2 : 2 + n, 3 : 3 + m].T
    else:
        c_dev = parent[1::3, 2::3][:m, :n]
    _sgemm(dev, dev.asarray(a), dev.asarray(b), c_dev, 1.0, 0.0)
    _check(dev, c_dev, _reference(a, b, None, 1.0, 0.0), k)
    c_dev[...] = 42.0
    assert (parent == 42.0).all()


@pytest.fixture
def gpu(kernel_device):
    if kernel_device.name != "gpu":
        pytest.skip("streams and cuBLAS exist only on a GPU")
    return kernel_device


def test_large_against_cublas_on_a_side_stream(gpu):
    cp = gpu.xp
    m, n, k = 1000, 1100, 1200
    rng = np.random.default_rng(6)
    a, b = _rand(rng, (m, k)), _rand(rng, (k, n))
    c_dev = cp.empty((m, n), dtype=cp.float32)
    stream = cp.cuda.Stream(non_blocking=True)
    with stream:
        a_dev, b_dev = cp.asarray(a), cp.asarray(b)
        _sgemm(gpu, a_dev, b_dev, c_dev, 1.0, 0.0)
    _check(gpu, c_dev, _reference(a, b, None, 1.0, 0.0), k)
    # and the same result as cupy's own (cuBLAS) matmul to float32 accuracy
    np.testing.assert_allclose(
        cp.asnumpy(c_dev), cp.asnumpy(a_dev @ b_dev), rtol=1e-4, atol=1e-3 * math.sqrt(k)
    )


def test_synchronize_after_launch(kernel_device):
    xp = kernel_device.xp
    a = xp.ones((3, 4), dtype=xp.float32)
    b = xp.ones((4, 5), dtype=xp.float32)
    c = xp.empty((3, 5), dtype=xp.float32)
    _sgemm(kernel_device, a, b, c)
    kernel_device.kernels.synchronize()
    assert (c == 4).all()
