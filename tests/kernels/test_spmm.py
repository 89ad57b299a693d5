"""CSR SpMM and the collective reductions against numpy references."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyrt import kernels


def random_csr(rng, m: int, k: int, density: float):
    dense = rng.standard_normal((m, k)).astype(np.float32)
    dense[rng.random((m, k)) >= density] = 0
    rows, cols = np.nonzero(dense)
    indptr = np.zeros(m + 1, np.int64)
    np.add.at(indptr, rows + 1, 1)
    return np.cumsum(indptr), cols.astype(np.int64), dense[rows, cols], dense


def check(indptr, indices, values, dense, b) -> None:
    out = kernels.spmm(indptr, indices, values, dense.shape, b)
    expected = dense.astype(np.float64) @ b.astype(np.float64)
    scale = np.abs(dense).astype(np.float64) @ np.abs(b).astype(np.float64)
    np.testing.assert_array_less(np.abs(out - expected), 1e-6 * scale + 1e-30)


@pytest.mark.parametrize("m", [0, 1, 7, 64])
@pytest.mark.parametrize("k", [0, 1, 13, 300])
@pytest.mark.parametrize("n", [0, 1, 7, 8, 67, 193])
@pytest.mark.parametrize("density", [0.0, 0.1, 0.5])
def test_shapes_and_densities(m, k, n, density, rng) -> None:
    indptr, indices, values, dense = random_csr(rng, m, k, density)
    check(indptr, indices, values, dense, rng.standard_normal((k, n)).astype(np.float32))


def test_empty_rows_and_one_dense_row(rng) -> None:
    dense = np.zeros((50, 400), np.float32)
    dense[17] = rng.standard_normal(400)  # every nonzero in one row: the load-balance edge
    rows, cols = np.nonzero(dense)
    indptr = np.searchsorted(rows, np.arange(51)).astype(np.int64)
    check(indptr, cols.astype(np.int64), dense[rows, cols], dense,
          rng.standard_normal((400, 130)).astype(np.float32))


def test_all_zero_matrix_overwrites_out() -> None:
    out = np.full((3, 4), np.nan, np.float32)
    kernels.spmm(np.zeros(4, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32), (3, 5),
                 np.ones((5, 4), np.float32), out=out)
    assert (out == 0).all()


def test_int32_indices_and_strided_b(rng) -> None:
    indptr, indices, values, dense = random_csr(rng, 20, 30, 0.3)
    b = rng.standard_normal((40, 30)).astype(np.float32).T  # transposed: copied to row-major
    check(indptr.astype(np.int32), indices.astype(np.int32), values, dense, b)
    wide = rng.standard_normal((30, 64)).astype(np.float32)[:, 5:50]  # row stride > n: used as is
    check(indptr, indices, values, dense, wide)


@settings(max_examples=40, deadline=None)
@given(m=st.integers(0, 40), k=st.integers(0, 60), n=st.integers(0, 100),
       density=st.floats(0.0, 1.0), seed=st.integers(0, 2**16))
def test_random_property(m, k, n, density, seed) -> None:
    rng = np.random.default_rng(seed)
    indptr, indices, values, dense = random_csr(rng, m, k, density)
    check(indptr, indices, values, dense, rng.standard_normal((k, n)).astype(np.float32))


def test_portable_spmm_is_correct(run_python) -> None:
    code = (
        "import numpy as np; from pyrt import kernels\n"
        "assert kernels.spmm_kernel_name() == 'portable'\n"
        "r = np.random.default_rng(0); d = r.standard_normal((33, 50)).astype(np.float32)\n"
        "d[r.random((33, 50)) > 0.2] = 0; rows, cols = np.nonzero(d)\n"
        "ip = np.searchsorted(rows, np.arange(34)); b = r.standard_normal((50, 21)).astype(np.float32)\n"
        "out = kernels.spmm(ip, cols, d[rows, cols], d.shape, b)\n"
        "np.testing.assert_allclose(out, d.astype(float) @ b, rtol=1e-5, atol=1e-5)\n"
    )
    run_python("-c", code, env={"PYRT_DISABLE_AVX2": "1"})


@pytest.mark.parametrize(("indptr", "indices", "message"), [
    ([0, 2, 1], [0, 1], "indptr"),
    ([0, 1, 2], [0, 5], "5"),
    ([0, 1, 2], [0, -1], "-1"),
    ([0, 2, 2], [1, 0], "increasing"),
    ([0, 2, 2], [1, 1], "increasing"),
])
def test_invalid_structure_is_named(indptr, indices, message) -> None:
    with pytest.raises(ValueError, match=f"invalid CSR matrix of shape \\(2, 3\\): .*{message}"):
        kernels.spmm(np.array(indptr), np.array(indices), np.ones(len(indices), np.float32), (2, 3),
                     np.ones((3, 2), np.float32))


def test_shape_and_dtype_errors() -> None:
    ok = (np.array([0, 1]), np.array([0]), np.ones(1, np.float32))
    with pytest.raises(ValueError, match=r"inner dimensions 3 != 4"):
        kernels.spmm(*ok, (1, 3), np.ones((4, 2), np.float32))
    with pytest.raises(TypeError, match="values must be float32"):
        kernels.spmm(ok[0], ok[1], np.ones(1), (1, 3), np.ones((3, 2), np.float32))
    with pytest.raises(ValueError, match=r"indptr is \(2,\) int64 but a \(2, 3\) matrix needs \(3,\)"):
        kernels.spmm(*ok, (2, 3), np.ones((3, 2), np.float32))
    with pytest.raises(TypeError, match="b must be a 2-D float32"):
        kernels.spmm(*ok, (1, 3), np.ones((3, 2)))


# --- reductions ------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("size", [0, 1, 7, 31, 1000, 65_537, 300_001])
@pytest.mark.parametrize("op", ["sum", "max", "min"])
def test_reductions_match_numpy_exactly(dtype, size, op, rng) -> None:
    dst = rng.standard_normal(size).astype(dtype)
    src = rng.standard_normal(size).astype(dtype)
    if size > 10:
        dst[3], src[5], src[7] = np.nan, np.nan, np.inf
    expected = {"sum": np.add, "max": np.maximum, "min": np.minimum}[op](dst, src)
    np.testing.assert_array_equal(kernels.reduce_inplace(dst, src, op), expected)


def test_reduction_errors() -> None:
    with pytest.raises(ValueError, match=r"dst is \(3,\) float32 but src is \(4,\) float32"):
        kernels.reduce_inplace(np.ones(3, np.float32), np.ones(4, np.float32))
    with pytest.raises(TypeError, match="contiguous array of float32, float64, int32, int64"):
        kernels.reduce_inplace(np.ones(3, np.int16), np.ones(3, np.int16))
    with pytest.raises(ValueError, match="op must be 'sum', 'prod', 'max' or 'min', got 'avg'"):
        kernels.reduce_inplace(np.ones(3), np.ones(3), "avg")


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int32, np.int64])
@pytest.mark.parametrize("op", ["sum", "prod", "max", "min"])
def test_every_dtype_and_op_matches_numpy(dtype, op, rng) -> None:
    # The CUDA kernel's contract (tests/cuda/test_cuda_reduce.py): the same on the CPU, where
    # prod and the integer dtypes take numpy's ufunc.
    dst = (rng.standard_normal(37) * 50).astype(dtype)
    src = (rng.standard_normal(37) * 50).astype(dtype)
    expected = {"sum": np.add, "prod": np.multiply, "max": np.maximum, "min": np.minimum}[op](dst, src)
    np.testing.assert_array_equal(kernels.reduce_inplace(dst, src, op), expected)


def test_float_indices_and_overlapping_reductions_are_rejected() -> None:
    with pytest.raises(TypeError, match="indices must hold integers"):
        kernels.spmm(np.array([0, 1]), np.array([0.7]), np.ones(1, np.float32), (1, 2),
                     np.ones((2, 2), np.float32))
    x = np.ones(10)
    with pytest.raises(ValueError, match="partly overlap"):
        kernels.reduce_inplace(x[1:], x[:-1])
    np.testing.assert_array_equal(kernels.reduce_inplace(x, x), np.full(10, 2.0))  # x + x is fine


def test_csr_pattern_checks_once_and_keeps_its_own_read_only_copy(rng) -> None:
    dense = (rng.random((7, 5)) < 0.4) * rng.standard_normal((7, 5))
    indptr = np.concatenate([[0], np.cumsum((dense != 0).sum(axis=1))])
    indices = np.nonzero(dense)[1].astype(np.int64)
    values = dense[dense != 0].astype(np.float32)
    b = rng.standard_normal((5, 3)).astype(np.float32)
    pattern = kernels.CSRPattern(indptr, indices, (7, 5))
    expected = kernels.spmm(indptr, indices, values, (7, 5), b)
    indices[:] = 0  # the caller's arrays may change: the pattern holds its own copy
    np.testing.assert_array_equal(pattern.matmul(values, b), expected)
    assert not pattern.indices.flags.writeable and not pattern.indptr.flags.writeable
    with pytest.raises(ValueError, match="invalid CSR matrix of shape"):
        kernels.CSRPattern(indptr, np.zeros_like(indices), (7, 5))
    with pytest.raises(ValueError, match=r"values is \(1,\) float32"):
        pattern.matmul(values[:1], b)


def test_csr_pattern_adds_a_bias_per_row_on_both_paths(rng) -> None:
    dense = ((rng.random((7, 5)) < 0.4) * rng.standard_normal((7, 5))).astype(np.float32)
    indptr, indices, values = csr_of(dense)
    pattern = kernels.CSRPattern(indptr, indices, (7, 5))
    bias = rng.standard_normal(7).astype(np.float32)
    b = rng.standard_normal((5, 3)).astype(np.float32)
    want = dense.astype(np.float64) @ b + bias[:, None]
    # straight to C++; then b's rows strided (the checked path copies them), then a batch of one
    np.testing.assert_allclose(pattern.matmul(values, b, bias=bias), want, rtol=1e-5, atol=1e-6)
    strided_bias = np.repeat(bias, 2)[::2]
    np.testing.assert_allclose(pattern.matmul(values, np.asfortranarray(b), bias=strided_bias), want,
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(pattern.matmul(values, b[:, :1], bias=bias), want[:, :1],
                               rtol=1e-5, atol=1e-6)
    assert pattern.matmul(values, b[:, :0], bias=bias).shape == (7, 0)
    with pytest.raises(ValueError, match=r"bias is \(6,\) float32 but the product has 7 rows"):
        pattern.matmul(values, b, bias=bias[:6])
    with pytest.raises(ValueError, match=r"bias is \(7,\) float64"):
        pattern.matmul(values, b, bias=bias.astype(np.float64))
    with pytest.raises(TypeError, match=r"values must be float32, got \(\d+,\) float64"):
        pattern.matmul(values.astype(np.float64), b, bias=bias)
    out = np.zeros((7, 3), np.float32)
    with pytest.raises(ValueError, match="out overlaps an input"):  # the bias is read after out is written
        pattern.matmul(values, b, out=out, bias=out[:, 0])


# --- the blocked loop nest: k blocks of up to 512 rows of B, row blocks of 256, panels of 96 -------

def csr_of(dense: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rows, cols = np.nonzero(dense)
    indptr = np.searchsorted(rows, np.arange(dense.shape[0] + 1)).astype(np.int64)
    return indptr, cols.astype(np.int64), dense[rows, cols]


@pytest.mark.parametrize(("m", "k", "n"), [
    (300, 513, 97),    # k one past a block (2 blocks of 257), 1 row past a row block, n = W + 1
    (257, 1031, 200),  # prime k over 3 blocks, n = 2 panels + 8
    (600, 1300, 1),    # N = 1: one masked lane per nonzero
    (520, 700, 7),     # n below one vector
    (256, 2048, 96),   # exact multiples of every block
])
def test_k_and_row_blocking_edges(m, k, n, rng) -> None:
    dense = rng.standard_normal((m, k)).astype(np.float32)
    dense[rng.random((m, k)) >= 0.1] = 0
    dense[3] = 0                                       # empty rows, inside the first row block
    dense[m - 1] = 0
    dense[5] = rng.standard_normal(k)                  # all-dense row spanning every k block
    dense[7, :] = 0
    dense[7, k - 1] = 2.0                              # a row whose only nonzero is in the last block
    check(*csr_of(dense), dense, rng.standard_normal((k, n)).astype(np.float32))


def test_single_nonzero_and_empty_matrix_with_large_k(rng) -> None:
    dense = np.zeros((270, 1100), np.float32)
    dense[269, 600] = -3.0
    b = rng.standard_normal((1100, 33)).astype(np.float32)
    check(*csr_of(dense), dense, b)
    out = kernels.spmm(*csr_of(np.zeros((270, 1100), np.float32)), (270, 1100), b)
    assert out.shape == (270, 33) and not out.any()
    assert kernels.spmm(*csr_of(np.zeros((0, 1100), np.float32)), (0, 1100), b).shape == (0, 33)


def test_non_contiguous_b_views_with_blocking(rng) -> None:
    dense = rng.standard_normal((280, 900)).astype(np.float32)
    dense[rng.random((280, 900)) >= 0.2] = 0
    csr = csr_of(dense)
    wide = rng.standard_normal((900, 300)).astype(np.float32)
    check(*csr, dense, wide[:, 3:200])                 # row stride 300 > n: used in place
    check(*csr, dense, rng.standard_normal((150, 900)).astype(np.float32).T)  # transposed: copied
    check(*csr, dense, rng.standard_normal((1800, 50)).astype(np.float32)[::2])  # every other row


def test_float64_operands_are_rejected_with_their_shapes() -> None:
    csr = csr_of(np.eye(3, dtype=np.float32))
    with pytest.raises(TypeError, match=r"b must be a 2-D float32 array, got \(3, 2\) float64"):
        kernels.spmm(*csr, (3, 3), np.ones((3, 2)))
    with pytest.raises(TypeError, match=r"values must be float32, got \(3,\) float64"):
        kernels.spmm(csr[0], csr[1], csr[2].astype(np.float64), (3, 3), np.ones((3, 2), np.float32))


def test_portable_spmm_blocking(run_python) -> None:
    code = (
        "import numpy as np; from pyrt import kernels\n"
        "assert kernels.spmm_kernel_name() == 'portable'\n"
        "r = np.random.default_rng(1); d = r.standard_normal((300, 1100)).astype(np.float32)\n"
        "d[r.random((300, 1100)) > 0.1] = 0; d[4] = 0; rows, cols = np.nonzero(d)\n"
        "ip = np.searchsorted(rows, np.arange(301))\n"
        "for n in (1, 13, 100):\n"
        "    b = r.standard_normal((1100, n)).astype(np.float32)\n"
        "    out = kernels.spmm(ip, cols, d[rows, cols], d.shape, b)\n"
        "    np.testing.assert_allclose(out, d.astype(float) @ b, rtol=1e-4, atol=1e-4)\n"
    )
    run_python("-c", code, env={"PYRT_DISABLE_AVX2": "1"})


# --- n == 1: the SpMV path (a pruned layer at batch 1) -----------------------------------------------

@pytest.mark.parametrize(("m", "k", "density"), [(1, 1, 1.0), (5, 3, 0.0), (37, 101, 0.3), (3000, 2000, 0.1)])
def test_spmv_shapes_threads_and_strided_x(m, k, density, rng) -> None:
    dense = rng.standard_normal((m, k)).astype(np.float32)
    dense[rng.random((m, k)) >= density] = 0
    if m > 2:
        dense[1] = 0                                   # an empty row
        dense[2, : min(k, 7)] = 1.5                    # a row of 1..7 nonzeros: the unrolled loop's tail
    csr = csr_of(dense)
    check(*csr, dense, rng.standard_normal((k, 1)).astype(np.float32))
    column = rng.standard_normal((k, 5)).astype(np.float32)[:, 2:3]  # x with a row stride of 5
    check(*csr, dense, column)
    out = np.full((m, 1), np.nan, np.float32)
    kernels.spmm(*csr, (m, k), column, out=out)
    assert np.isfinite(out).all()


def test_spmv_every_row_length_through_the_vector_steps(rng) -> None:
    # Row i holds i nonzeros (0..40): the AVX2 SpMV's 16-nonzero steps, its 8 and 4 steps and its
    # scalar tail in every combination, with x contiguous (the vector path) and strided (the scalar one).
    m, k = 41, 64
    dense = np.zeros((m, k), np.float32)
    for i in range(m):
        dense[i, rng.choice(k, size=i, replace=False)] = rng.standard_normal(i)
    csr = csr_of(dense)
    check(*csr, dense, rng.standard_normal((k, 1)).astype(np.float32))
    check(*csr, dense, rng.standard_normal((k, 3)).astype(np.float32)[:, 1:2])





# --- the packed path: B copied into 96-column panels, k blocks of 256 rows, row blocks of 256 -------
# B is packed when its rows feed at least 100 nonzeros each on average (nnz >= 100 k), so these
# matrices are dense enough for that; packed_csr checks it.

def packed_csr(dense: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    csr = csr_of(dense)
    assert len(csr[1]) >= 100 * dense.shape[1], "too sparse to take the packed path"
    return csr


def dense_with_edges(rng, m: int, k: int, uses: int = 150) -> np.ndarray:
    """(m, k) with about `uses` nonzeros per column, plus empty, dense and one-nonzero rows."""
    dense = rng.standard_normal((m, k)).astype(np.float32)
    dense[rng.random((m, k)) >= min(0.95, uses / m)] = 0
    dense[0] = 0                                       # empty first row
    dense[m // 2] = 0                                  # empty row inside a row block
    dense[m - 1] = 0                                   # empty last row
    dense[3] = rng.standard_normal(k)                  # a dense row spanning every k block
    dense[5, :] = 0
    dense[5, k - 1] = -1.5                             # a row whose only nonzero is in the last k block
    dense[6, :] = 0
    dense[6, 0] = 0.5                                  # a row whose only nonzero is in the first k block
    return dense


@pytest.mark.parametrize(("m", "k", "n"), [
    (129, 257, 2),     # the narrowest packed product: one masked vector; k one past a block
    (256, 512, 96),    # exact multiples of the row block, the k block and the panel
    (127, 1031, 97),   # prime k over 5 blocks, one column past a panel (a 1-column masked panel)
    (257, 769, 101),   # prime m, n: a 96 + 5 panel split, row blocks of 256 + 1
    (300, 600, 193),   # 2 panels + 1 column; k = 2 blocks of 300
    (131, 520, 256),   # the benchmark's width: panels of 96, 96 and 64
    (600, 300, 40),    # row blocks of 256 + 256 + 88, one k block, one 40-column panel
    (160, 2000, 13),   # n below two vectors
])
def test_packed_panels_and_blocks(m, k, n, rng) -> None:
    dense = dense_with_edges(rng, m, k)
    check(*packed_csr(dense), dense, rng.standard_normal((k, n)).astype(np.float32))


@pytest.mark.parametrize("n", [2, 7, 8, 9, 95, 96, 97, 200])
def test_packed_non_contiguous_b(n, rng) -> None:
    dense = dense_with_edges(rng, 140, 520)
    csr = packed_csr(dense)
    wide = rng.standard_normal((520, n + 37)).astype(np.float32)
    check(*csr, dense, wide[:, 5:5 + n])                                       # row stride > n, odd offset
    check(*csr, dense, rng.standard_normal((1040, n)).astype(np.float32)[1::2])  # every other row


def test_packed_alpha_beta_accumulate(rng) -> None:
    # The C++ entry point's alpha and beta (the Python API passes 1 and 0): the first k block
    # applies beta, later blocks add, and rows with nothing in a block leave C as it is.
    from pyrt import _C

    dense = dense_with_edges(rng, 150, 700)
    indptr, indices, values = packed_csr(dense)
    b = rng.standard_normal((700, 101)).astype(np.float32)
    c0 = rng.standard_normal((150, 101)).astype(np.float32)
    exact = dense.astype(np.float64) @ b.astype(np.float64)
    scale = np.abs(dense).astype(np.float64) @ np.abs(b).astype(np.float64) + np.abs(c0)
    for alpha, beta in [(2.0, 0.5), (-1.0, 1.0), (0.5, 0.0)]:
        out = c0.copy()
        _C.spmm(indptr, indices, values, b, out, alpha, beta)
        expected = alpha * exact + beta * c0.astype(np.float64)
        np.testing.assert_array_less(np.abs(out - expected), 1e-6 * (abs(alpha) + 1) * scale + 1e-30)
    out = np.full((150, 101), np.nan, np.float32)                     # beta == 0 never reads C
    _C.spmm(indptr, indices, values, b, out, 1.0, 0.0)
    assert np.isfinite(out).all()


def test_packed_empty_and_all_zero_rows(rng) -> None:
    # Rows 0-279 empty except one short row, so a whole row block and most of its k blocks have
    # no nonzeros; 120 dense rows give B enough reuse to be packed.
    dense = np.zeros((400, 800), np.float32)
    dense[280:] = rng.standard_normal((120, 800))
    dense[10, 790:] = 1.0
    b = rng.standard_normal((800, 150)).astype(np.float32)
    check(*packed_csr(dense), dense, b)
    out = kernels.spmm(*csr_of(np.zeros((400, 800), np.float32)), (400, 800), b)
    assert out.shape == (400, 150) and not out.any()


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_packed_threads_agree(threads, rng) -> None:
    # Thread counts change the grid (rows or panels per thread); every split gives the same
    # product (each C element is summed by one thread in the same order).
    dense = dense_with_edges(rng, 333, 1100)
    b = rng.standard_normal((1100, 250)).astype(np.float32)
    csr = packed_csr(dense)
    before = kernels.get_num_threads()
    try:
        kernels.set_num_threads(1)
        one = kernels.spmm(*csr, dense.shape, b)
        kernels.set_num_threads(threads)
        np.testing.assert_array_equal(kernels.spmm(*csr, dense.shape, b), one)
    finally:
        kernels.set_num_threads(before)
    check(*csr, dense, b)


def test_portable_on_packed_shapes(run_python) -> None:
    code = (
        "import numpy as np; from pyrt import kernels\n"
        "assert kernels.spmm_kernel_name() == 'portable'\n"
        "r = np.random.default_rng(3); d = r.standard_normal((257, 1031)).astype(np.float32)\n"
        "d[r.random((257, 1031)) > 0.5] = 0; d[0] = 0; d[200] = 0; rows, cols = np.nonzero(d)\n"
        "ip = np.searchsorted(rows, np.arange(258))\n"
        "for n in (2, 97, 256):\n"
        "    b = r.standard_normal((1031, n)).astype(np.float32)\n"
        "    out = kernels.spmm(ip, cols, d[rows, cols], d.shape, b)\n"
        "    np.testing.assert_allclose(out, d.astype(float) @ b, rtol=1e-4, atol=1e-3)\n"
    )
    run_python("-c", code, env={"PYRT_DISABLE_AVX2": "1"})
