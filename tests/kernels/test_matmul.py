"""pyrt.kernels.matmul (our SGEMM) against numpy on edge shapes and layouts.

The reference is computed in float64, so the tolerance only has to cover
float32 rounding of a k-term dot product.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import pyrt
from pyrt import kernels


def reference(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return a.astype(np.float64) @ b.astype(np.float64)


def assert_close(ours: np.ndarray, a: np.ndarray, b: np.ndarray) -> None:
    k = a.shape[1]
    expected = reference(a, b)
    scale = np.abs(a).astype(np.float64) @ np.abs(b).astype(np.float64)
    np.testing.assert_array_less(np.abs(ours - expected), 1e-6 * (k + 1) * scale + 1e-30)


def random_matrix(rng: np.random.Generator, rows: int, cols: int) -> np.ndarray:
    return rng.standard_normal((rows, cols)).astype(np.float32)


# Sizes around the micro-tile (6x16), the cache blocks and small primes.
EDGE_SIZES = [0, 1, 2, 5, 6, 7, 13, 15, 16, 17, 31, 97, 127, 257]


@pytest.mark.parametrize("m", [0, 1, 5, 6, 7, 97])
@pytest.mark.parametrize("n", [0, 1, 15, 16, 17, 127])
@pytest.mark.parametrize("k", [0, 1, 7, 257])
def test_edge_shapes(m: int, n: int, k: int, rng) -> None:
    a, b = random_matrix(rng, m, k), random_matrix(rng, k, n)
    out = kernels.matmul(a, b)
    assert out.shape == (m, n) and out.dtype == np.float32
    assert_close(out, a, b)


@pytest.mark.parametrize(("m", "n", "k"), [(1, 1, 1), (300, 200, 700), (97, 1031, 389),
                                           (64, 1024, 784), (1, 512, 1024), (1024, 1, 512),
                                           (7, 7, 4099)])
def test_larger_shapes_cross_cache_blocks(m: int, n: int, k: int, rng) -> None:
    a, b = random_matrix(rng, m, k), random_matrix(rng, k, n)
    assert_close(kernels.matmul(a, b), a, b)


@pytest.mark.parametrize("layout", ["a_T", "b_T", "both_T", "sliced", "negative_stride",
                                    "column_slice", "broadcast_rows"])
def test_non_contiguous_layouts(layout: str, rng) -> None:
    base_a, base_b = random_matrix(rng, 70, 90), random_matrix(rng, 90, 50)
    if layout == "a_T":
        a, b = random_matrix(rng, 90, 70).T, base_b
    elif layout == "b_T":
        a, b = base_a, random_matrix(rng, 50, 90).T
    elif layout == "both_T":
        a, b = random_matrix(rng, 90, 70).T, random_matrix(rng, 50, 90).T
    elif layout == "sliced":
        a, b = base_a[::2, 1::3], random_matrix(rng, 60, 40)[::2, ::3]
    elif layout == "negative_stride":
        a, b = base_a[::-1, ::-1], base_b[::-1]
    elif layout == "column_slice":
        a, b = base_a[:, 10:40], base_b[10:40, :]
    else:
        a = np.broadcast_to(random_matrix(rng, 1, 90), (70, 90))
        b = base_b
    assert not (a.flags.c_contiguous and b.flags.c_contiguous)
    assert_close(kernels.matmul(a, b), a, b)


def test_out_parameter_is_filled_and_returned(rng) -> None:
    a, b = random_matrix(rng, 9, 4), random_matrix(rng, 4, 11)
    out = np.full((9, 11), np.nan, np.float32)
    assert kernels.matmul(a, b, out=out) is out
    assert_close(out, a, b)


def test_out_may_be_a_strided_view(rng) -> None:
    a, b = random_matrix(rng, 9, 4), random_matrix(rng, 4, 11)
    big = np.zeros((11, 9 * 2), np.float32)
    out = big[:, ::2].T  # (9, 11) with strides in both dims
    kernels.matmul(a, b, out=out)
    assert_close(out, a, b)
    assert (big[:, 1::2] == 0).all()


def test_result_ignores_nan_garbage_in_out(rng) -> None:
    a, b = random_matrix(rng, 3, 0), random_matrix(rng, 0, 5)
    out = np.full((3, 5), np.nan, np.float32)
    kernels.matmul(a, b, out=out)
    assert (out == 0).all()


def test_extreme_values_propagate_like_ieee() -> None:
    a = np.array([[np.inf, 1.0], [np.nan, 0.0]], np.float32)
    b = np.array([[1.0], [1.0]], np.float32)
    out = kernels.matmul(a, b)
    assert out[0, 0] == np.inf and np.isnan(out[1, 0])


@settings(max_examples=60, deadline=None)
@given(m=st.integers(0, 70), n=st.integers(0, 70), k=st.integers(0, 70),
       transpose_a=st.booleans(), transpose_b=st.booleans(), seed=st.integers(0, 2**16))
def test_random_shapes_property(m, n, k, transpose_a, transpose_b, seed) -> None:
    rng = np.random.default_rng(seed)
    a = random_matrix(rng, k, m).T if transpose_a else random_matrix(rng, m, k)
    b = random_matrix(rng, n, k).T if transpose_b else random_matrix(rng, k, n)
    assert_close(kernels.matmul(a, b), a, b)


def test_thread_counts_give_the_same_answer(rng) -> None:
    a, b = random_matrix(rng, 301, 257), random_matrix(rng, 257, 199)
    before = pyrt.get_num_threads()
    try:
        pyrt.set_num_threads(1)
        one = kernels.matmul(a, b)
        pyrt.set_num_threads(2)
        two = kernels.matmul(a, b)
    finally:
        pyrt.set_num_threads(before)
    assert pyrt.get_num_threads() == before
    np.testing.assert_allclose(one, two, rtol=1e-5, atol=1e-5)


def test_portable_kernel_is_correct(rng, run_python) -> None:
    """The non-AVX2 fallback, forced by PYRT_DISABLE_AVX2, in a fresh process."""
    code = (
        "import numpy as np, pyrt; from pyrt import kernels\n"
        "assert kernels.sgemm_kernel_name() == 'portable', kernels.sgemm_kernel_name()\n"
        "r = np.random.default_rng(0)\n"
        "for m, n, k in [(1, 1, 1), (7, 17, 5), (97, 130, 257), (0, 3, 2)]:\n"
        "    a = r.standard_normal((m, k)).astype(np.float32)\n"
        "    b = r.standard_normal((n, k)).astype(np.float32).T\n"
        "    np.testing.assert_allclose(kernels.matmul(a, b), a.astype(float) @ b, rtol=1e-4,"
        " atol=1e-4)\n"
    )
    run_python("-c", code, env={"PYRT_DISABLE_AVX2": "1"})


def test_avx2_is_used_where_available() -> None:
    with open("/proc/cpuinfo") as f:
        flags = f.read()
    if " avx2 " in flags and " fma " in flags and not os.environ.get("PYRT_DISABLE_AVX2"):
        assert kernels.sgemm_kernel_name() == "avx2_fma_6x16"


# --- bad input gets a clear error --------------------------------------------------

def test_inner_dimension_mismatch_names_shapes() -> None:
    a, b = np.ones((64, 784), np.float32), np.ones((512, 10), np.float32)
    with pytest.raises(ValueError, match=r"a is \(64, 784\) float32 but b is \(512, 10\) "
                                         r"float32; inner dimensions 784 != 512"):
        kernels.matmul(a, b)


@pytest.mark.parametrize("dtype", [np.float64, np.int32, np.float16])
def test_wrong_dtype_is_rejected(dtype) -> None:
    with pytest.raises(TypeError, match=f"a is \\(2, 2\\) {np.dtype(dtype)}"):
        kernels.matmul(np.ones((2, 2), dtype), np.ones((2, 2), np.float32))


@pytest.mark.parametrize("shape", [(3,), (2, 2, 2), ()])
def test_wrong_rank_is_rejected(shape) -> None:
    with pytest.raises(ValueError, match="must be a 2-D array"):
        kernels.matmul(np.ones(shape, np.float32), np.ones((2, 2), np.float32))


def test_non_array_is_rejected() -> None:
    with pytest.raises(ValueError, match="must be a 2-D array, got list"):
        kernels.matmul([[1.0]], np.ones((1, 1), np.float32))


def test_bad_out_is_rejected() -> None:
    a, b = np.ones((2, 3), np.float32), np.ones((3, 4), np.float32)
    with pytest.raises(ValueError, match=r"out is \(4, 2\) float32 but the product is \(2, 4\)"):
        kernels.matmul(a, b, out=np.empty((4, 2), np.float32))
    with pytest.raises(ValueError, match="out is \\(2, 4\\) float64"):
        kernels.matmul(a, b, out=np.empty((2, 4), np.float64))
    read_only = np.empty((2, 4), np.float32)
    read_only.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        kernels.matmul(a, b, out=read_only)


def test_out_overlapping_an_input_is_rejected() -> None:
    buffer = np.ones((4, 4), np.float32)
    with pytest.raises(ValueError, match="overlaps an input"):
        kernels.matmul(buffer, buffer, out=buffer)


def test_set_num_threads_validates() -> None:
    with pytest.raises(ValueError, match="positive integer"):
        pyrt.set_num_threads(0)


# --- m == 1 with a column-major b: x @ W.T of a Linear layer at batch 1 (dot products down W's rows) ---

@pytest.mark.parametrize("k", [0, 1, 7, 8, 15, 16, 17, 31, 784, 1031])
@pytest.mark.parametrize("n", [1, 3, 4, 5, 10, 17, 513])
def test_batch_one_times_transposed_weight(k: int, n: int, rng) -> None:
    x, w = random_matrix(rng, 1, k), random_matrix(rng, n, k)
    assert_close(kernels.matmul(x, w.T), x, w.T)
    strided_x = random_matrix(rng, 1, 2 * k)[:, ::2]           # a row with a column stride of 2
    assert_close(kernels.matmul(strided_x, w.T), strided_x, w.T)
    v = random_matrix(rng, k, 1)                                # A @ v runs as v.T @ A.T: the same path
    assert_close(kernels.matmul(w, v), w, v)


def test_batch_one_gemv_threads_and_nan_out(rng) -> None:
    x, w = random_matrix(rng, 1, 1024), random_matrix(rng, 2049, 1024)  # enough work for 2 threads
    out = np.full((1, 2049), np.nan, np.float32)
    assert kernels.matmul(x, w.T, out=out) is out
    assert_close(out, x, w.T)
    wide = random_matrix(rng, 2049, 1100)[:, :1024]             # rows of W with a stride > k
    assert_close(kernels.matmul(x, wide.T), x, wide.T)


def test_portable_batch_one_gemv(run_python) -> None:
    code = (
        "import numpy as np; from pyrt import kernels\n"
        "assert kernels.sgemm_kernel_name() == 'portable'\n"
        "r = np.random.default_rng(0)\n"
        "for n, k in [(1, 1), (5, 17), (513, 1031), (3, 0)]:\n"
        "    x = r.standard_normal((1, k)).astype(np.float32)\n"
        "    w = r.standard_normal((n, k)).astype(np.float32)\n"
        "    np.testing.assert_allclose(kernels.matmul(x, w.T), x.astype(float) @ w.T, rtol=1e-4,"
        " atol=1e-4)\n"
    )
    run_python("-c", code, env={"PYRT_DISABLE_AVX2": "1"})
