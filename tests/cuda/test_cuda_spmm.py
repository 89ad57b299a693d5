"""pyrt._cuda.spmm (CSR @ dense) against a dense numpy product, on the SIMT emulator and a GPU.

Run: pytest tests/cuda/test_cuda_spmm.py
Every test takes ``kernel_device`` (tests/cuda/conftest.py): the kernel's own source runs on
the CPU through pyrt._cuda_emulator everywhere, and on a GPU through pyrt._cuda where cupy
and a device are present. Each case also asserts which column mapping the kernel takes
(``spmm_path``: vec4x2, vec4 or scalar), so the vector and scalar paths are each known to
be exercised rather than assumed.
"""

from __future__ import annotations

import numpy as np
import pytest

WARP = 32


def _csr(dense: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """int32 indptr, int32 indices and float32 values of a dense matrix's nonzeros."""
    rows, cols = np.nonzero(dense)
    indptr = np.zeros(dense.shape[0] + 1, dtype=np.int32)
    np.cumsum(np.bincount(rows, minlength=dense.shape[0]), out=indptr[1:])
    return indptr, cols.astype(np.int32), dense[rows, cols].astype(np.float32)


def _sparse(rng: np.random.Generator, m: int, k: int, density: float) -> np.ndarray:
    values = rng.uniform(-1, 1, size=(m, k)).astype(np.float32)
    values[values == 0] = 0.5  # a drawn zero would silently drop out of the pattern
    return values * (rng.random((m, k)) < density)


def _placed(dev, host: np.ndarray, shift: int = 0, row_stride: int | None = None):
    """A device copy of 2-D float32 ``host`` whose first element is ``shift`` floats past a
    16-byte boundary, with ``row_stride`` floats between rows (default: the row length)."""
    rows, cols = host.shape
    ld = cols if row_stride is None else row_stride
    flat = dev.xp.zeros(rows * max(ld, 1) + 16, dtype=np.float32)
    start = (-dev.ptr(flat) % 16) // 4 + shift
    view = flat[start : start + rows * max(ld, 1)].reshape(rows, max(ld, 1))[:, :cols]
    view[...] = dev.asarray(host)
    return view


def _spmm(dev, dense: np.ndarray, b, c, alpha: float = 1.0, beta: float = 0.0) -> str:
    """c = alpha * dense @ b + beta * c with dense passed as CSR; returns the path the kernel took."""
    m, k = dense.shape
    n = b.shape[1]
    indptr, indices, values = (dev.asarray(a) for a in _csr(dense))
    ldb, ldc = b.strides[0] // 4, c.strides[0] // 4
    dev.kernels.spmm(m, n, k, alpha, dev.ptr(indptr), dev.ptr(indices), dev.ptr(values), dev.ptr(b),
                     ldb, beta, dev.ptr(c), ldc, dev.stream_ptr())
    dev.synchronize()
    return dev.kernels.spmm_path(n, dev.ptr(b), ldb, dev.ptr(c), ldc)


def _check(dev, got, want, k: int) -> None:
    np.testing.assert_allclose(dev.asnumpy(got), want, rtol=1e-5, atol=2e-6 * max(k, 1) + 1e-6)


def _expected_path(n: int) -> str:
    return "scalar" if n % 4 else ("vec4x2" if n > 4 * WARP else "vec4")


# m, n, k: the warp (32), the vector width (4), the slabs (128 and 256 columns) and primes.
SHAPES = [
    (0, 5, 3), (5, 0, 3), (3, 4, 0), (1, 1, 1), (3, 5, 7), (4, 4, 4), (5, 3, 31), (31, 32, 33),
    (33, 31, 32), (7, 127, 13), (6, 129, 11), (3, 128, 17), (2, 132, 5), (2, 256, 9), (3, 260, 37),
    (2, 516, 3), (129, 4, 127), (11, 388, 23),
]


@pytest.mark.parametrize(("m", "n", "k"), SHAPES)
def test_shapes_against_dense_product(kernel_device, m, n, k):
    dev = kernel_device
    rng = np.random.default_rng(m * 10007 + n * 101 + k)
    dense = _sparse(rng, m, k, 0.3)
    b = rng.uniform(-1, 1, size=(k, n)).astype(np.float32)
    c = dev.xp.full((m, n), np.nan, dtype=np.float32)  # beta == 0: garbage in c is never read
    b_dev = _placed(dev, b)
    path = _spmm(dev, dense, b_dev, c)
    _check(dev, c, dense.astype(np.float64) @ b.astype(np.float64), k)
    if m and n:
        assert path == _expected_path(n)


@pytest.mark.parametrize("n", [5, 8, 132])
def test_empty_rows_and_all_zero_matrix(kernel_device, n):
    dev = kernel_device
    rng = np.random.default_rng(n)
    k = 9
    b = rng.uniform(-1, 1, size=(k, n)).astype(np.float32)
    dense = _sparse(rng, 6, k, 0.5)
    dense[[0, 2, 5]] = 0.0  # first, middle and last rows empty
    c = dev.xp.full((6, n), np.nan, dtype=np.float32)
    _spmm(dev, dense, _placed(dev, b), c)
    _check(dev, c, dense.astype(np.float64) @ b, k)
    zero = np.zeros((4, k), np.float32)  # nnz == 0
    c = dev.xp.full((4, n), np.nan, dtype=np.float32)
    _spmm(dev, zero, _placed(dev, b), c)
    assert (dev.asnumpy(c) == 0).all()


@pytest.mark.parametrize("n", [3, 4, 136])
def test_rows_longer_than_a_warp(kernel_device, n):
    # Rows of 31, 32, 33, 64, 65 and 100 nonzeros: runs of 32 loaded and broadcast in turn,
    # the last one partial or (at 32 and 64) exactly full.
    dev = kernel_device
    rng = np.random.default_rng(n + 1)
    k = 100
    dense = np.zeros((6, k), np.float32)
    for row, count in enumerate([31, 32, 33, 64, 65, 100]):
        cols = np.sort(rng.choice(k, size=count, replace=False))
        dense[row, cols] = rng.uniform(0.5, 1.0, size=count) * rng.choice([-1, 1], size=count)
    b = rng.uniform(-1, 1, size=(k, n)).astype(np.float32)
    c = dev.xp.zeros((6, n), dtype=np.float32)
    _spmm(dev, dense, _placed(dev, b), c)
    _check(dev, c, dense.astype(np.float64) @ b, k)


# (n, shift of b, row stride of b, shift of c): aligned strided rows keep the vector path; any
# misalignment of b or c, or a row stride that is not a multiple of 4, takes the scalar one.
LAYOUTS = [
    (8, 0, 12, 0, "vec4"),
    (136, 0, 140, 0, "vec4x2"),
    (8, 1, None, 0, "scalar"),      # b starts 4 bytes past a 16-byte boundary
    (136, 2, None, 0, "scalar"),
    (8, 0, 10, 0, "scalar"),        # rows 40 bytes apart: every other row misaligned
    (8, 0, None, 3, "scalar"),      # c misaligned
    (7, 0, 9, 0, "scalar"),         # strided and n % 4 != 0
    (129, 1, 131, 1, "scalar"),
]


@pytest.mark.parametrize(("n", "b_shift", "ldb", "c_shift", "path"), LAYOUTS)
def test_strided_and_misaligned_operands(kernel_device, n, b_shift, ldb, c_shift, path):
    dev = kernel_device
    rng = np.random.default_rng(n * 7 + b_shift)
    m, k = 9, 21
    dense = _sparse(rng, m, k, 0.4)
    b = rng.uniform(-1, 1, size=(k, n)).astype(np.float32)
    b_dev = _placed(dev, b, b_shift, ldb)
    around = dev.xp.full(m * n + 16, 42.0, dtype=np.float32)  # c in a bigger buffer
    start = (-dev.ptr(around) % 16) // 4 + c_shift
    c = around[start : start + m * n].reshape(m, n)
    assert _spmm(dev, dense, b_dev, c) == path
    _check(dev, c, dense.astype(np.float64) @ b, k)
    c[...] = 42.0
    assert (dev.asnumpy(around) == 42.0).all()  # nothing outside c was written


@pytest.mark.parametrize("n", [5, 8, 136])
@pytest.mark.parametrize(("alpha", "beta"), [(2.0, 1.0), (-0.5, 3.0)])
def test_alpha_beta(kernel_device, n, alpha, beta):
    dev = kernel_device
    rng = np.random.default_rng(n)
    m, k = 7, 13
    dense = _sparse(rng, m, k, 0.3)
    b = rng.uniform(-1, 1, size=(k, n)).astype(np.float32)
    c0 = rng.uniform(-1, 1, size=(m, n)).astype(np.float32)
    c = _placed(dev, c0)
    _spmm(dev, dense, _placed(dev, b), c, alpha, beta)
    _check(dev, c, alpha * (dense.astype(np.float64) @ b) + beta * c0, k)


def test_row_slice_with_nonzero_indptr_start(kernel_device):
    # indptr values are offsets into indices/values, so rows 2..5 of a bigger matrix are
    # passed as a view of its indptr with the full indices and values.
    dev = kernel_device
    rng = np.random.default_rng(11)
    dense = _sparse(rng, 8, 40, 0.5)
    indptr, indices, values = (dev.asarray(a) for a in _csr(dense))
    n = 12
    b = rng.uniform(-1, 1, size=(40, n)).astype(np.float32)
    b_dev = _placed(dev, b)
    c = dev.xp.zeros((4, n), dtype=np.float32)
    dev.kernels.spmm(4, n, 40, 1.0, dev.ptr(indptr[2:]), dev.ptr(indices), dev.ptr(values), dev.ptr(b_dev),
                     n, 0.0, dev.ptr(c), n, dev.stream_ptr())
    dev.synchronize()
    _check(dev, c, dense[2:6].astype(np.float64) @ b, 40)


def test_large_values_and_nonfinite_b(kernel_device):
    # Only stored nonzeros are multiplied (a dense product would turn 0 * inf into NaN), and
    # float32 sums overflow to inf where the exact ones pass 3.4e38.
    dev = kernel_device
    dense = np.array([[3e38, 3e38, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 2.0]], np.float32)
    b = np.array([[1.0, 2.0, -1.0, 4.0], [1.0, 1.0, -1.0, -1.0], [np.inf, np.nan, -np.inf, 0.0]], np.float32)
    c = dev.xp.zeros((3, 4), dtype=np.float32)
    _spmm(dev, dense, _placed(dev, b), c)
    # [0, 3] is 3e38 * 4 - 3e38 = 9e38 exactly, but the first product already overflows to inf.
    want = np.array([[np.inf, np.inf, -np.inf, np.inf], [1.0, 2.0, -1.0, 4.0],
                     [np.inf, np.nan, -np.inf, 0.0]])
    np.testing.assert_array_equal(dev.asnumpy(c), want.astype(np.float32))


def test_negative_size_and_bad_stride_are_value_errors(kernel_device):
    with pytest.raises(ValueError, match="spmm: m = -1"):
        kernel_device.kernels.spmm(-1, 1, 1, 1.0, 0, 0, 0, 0, 1, 0.0, 0, 1, 0)
    with pytest.raises(ValueError, match="ldb = 3 and ldc = 4 must be >= n = 4"):
        kernel_device.kernels.spmm(1, 4, 1, 1.0, 0, 0, 0, 0, 3, 0.0, 0, 4, 0)


def test_error_without_gpu():
    _cuda = pytest.importorskip("pyrt._cuda", reason="pyrt was built without CUDA")
    if _cuda.device_count() != 0:
        pytest.skip("a GPU is visible: the no-driver error path cannot be reached")
    # m = 1 launches; nothing is dereferenced because the launch itself fails.
    with pytest.raises(RuntimeError, match=r"spmm: CUDA error cudaError\w+ \(\d+\)"):
        _cuda.spmm(1, 4, 1, 1.0, 0, 0, 0, 0, 4, 0.0, 0, 4, 0)
