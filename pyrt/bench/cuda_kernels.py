"""pyrt's CUDA kernels vs NVIDIA's libraries on the same GPU, side by side.

``python -m pyrt.bench --device cuda`` runs this suite (and the training suite on
the GPU). Three kernels, each validated against the library before it is timed:

* SGEMM vs cuBLAS (cupy's float32 matmul, TF32 off: ``CUPY_TF32=0``, cupy's default),
* int8 GEMM (int32 accumulation plus our dequantizing epilogue) vs cuBLAS's int8
  ``cublasGemmEx`` (int8 x int8 -> int32, the layout its int8 tensor-core path wants:
  ``TN``), which does less work than ours (no epilogue),
* CSR SpMM vs cuSPARSE (cupyx.scipy.sparse's CSR times a dense matrix, the matrix built and
  the dense operand made column-major once, outside the timing, so only cusparseSpMM is timed
  on their side).

Times are of whole calls, each followed by a stream synchronization, best of
several rounds taken alternately (pyrt.bench.harness.time_pair); at the sizes
timed here a kernel runs for milliseconds and the synchronization costs microseconds.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import numpy as np

from pyrt import kernels
from pyrt.bench.harness import Record, print_table, time_pair

os.environ.setdefault("CUPY_TF32", "0")  # before cupy is imported: cuBLAS in full fp32

SGEMM_SHAPES = [(4096, 4096, 4096), (2048, 2048, 2048), (1024, 1024, 1024), (64, 784, 1024),
                (256, 1024, 4096)]
INT8_SHAPES = [(4096, 4096, 4096), (2048, 2048, 2048), (1024, 1024, 1024), (64, 1024, 784)]
SPMM_CASES = [(4096, 4096, 256, 0.9), (4096, 4096, 256, 0.95), (4096, 4096, 256, 0.8),
              (1024, 784, 64, 0.9)]
# Small enough for the SIMT emulator, which runs the quick suite in the tests.
QUICK_SGEMM = [(33, 17, 9)]
QUICK_INT8 = [(17, 40, 9)]
QUICK_SPMM = [(19, 23, 8, 0.9)]


def _cupy() -> Any:
    import cupy

    return cupy


def synchronized(fn: Callable[[], Any]) -> Callable[[], None]:
    """``fn`` followed by a wait for the current stream, so host timers see the GPU's work."""
    cupy = _cupy()

    def call() -> None:
        fn()
        cupy.cuda.get_current_stream().synchronize()

    return call


def cublas_int8_gemm(a_q: Any, w_q: Any, out: Any) -> Any:
    """``out (m, n) int32 = a_q (m, k) int8 @ w_q (n, k) int8 .T`` by cublasGemmEx.

    cuBLAS is column-major: the row-major product C = A W^T is, read column-major,
    C^T (n, m) = W (n, k) @ A^T, i.e. op(W) = T on W's column-major (k, n) view
    and op(A^T) = N, the TN layout cuBLAS's int8 path requires.
    """
    cupy = _cupy()
    from cupy_backends.cuda.libs import cublas

    m, k = a_q.shape
    n = w_q.shape[0]
    one, zero = np.array(1, np.int32), np.array(0, np.int32)
    cuda_r_8i, cuda_r_32i, compute_32i, gemm_default = 3, 10, 72, -1
    handle = cupy.cuda.device.get_cublas_handle()
    cublas.gemmEx(handle, cublas.CUBLAS_OP_T, cublas.CUBLAS_OP_N, n, m, k, one.ctypes.data,
                  w_q.data.ptr, cuda_r_8i, k, a_q.data.ptr, cuda_r_8i, k, zero.ctypes.data,
                  out.data.ptr, cuda_r_32i, n, compute_32i, gemm_default)
    return out


def cusparse_matrix(indptr: Any, indices: Any, values: Any, shape: tuple[int, int]) -> Any:
    """A CSR matrix cuSPARSE multiplies (cupyx.scipy.sparse), built once outside the timing: its
    constructor checks the format (a kernel and a host sync) on every construction."""
    from cupyx.scipy import sparse

    return sparse.csr_matrix((values, indices, indptr), shape=shape)


def _sgemm(rng: np.random.Generator, quick: bool) -> list[Record]:
    cupy = _cupy()
    records = []
    for m, k, n in QUICK_SGEMM if quick else SGEMM_SHAPES:
        a = cupy.asarray(rng.standard_normal((m, k)).astype(np.float32))
        b = cupy.asarray(rng.standard_normal((k, n)).astype(np.float32))
        out = cupy.empty((m, n), np.float32)
        reference = cupy.matmul(a, b)
        kernels.matmul(a, b, out=out)
        error = float(cupy.abs(out - reference).max())
        if error > 1e-4 * np.sqrt(k) * float(cupy.abs(reference).max()):
            raise AssertionError(f"cuda sgemm {m}x{k}x{n}: differs from cuBLAS by {error}")
        ours_s, ref_s = time_pair(synchronized(lambda a=a, b=b, out=out: kernels.matmul(a, b, out=out)),
                                  synchronized(lambda a=a, b=b, out=out: cupy.matmul(a, b, out=out)))
        records.append(Record("cuda", f"sgemm {m}x{k}x{n}", ours_s, "cuBLAS", ref_s,
                              {"tflops": 2 * m * n * k / ours_s / 1e12}))
    return records


def _int8(rng: np.random.Generator, quick: bool) -> list[Record]:
    cupy = _cupy()
    records = []
    for m, k, n in QUICK_INT8 if quick else INT8_SHAPES:
        a_host = rng.integers(0, kernels.ACTIVATION_QMAX + 1, size=(m, k)).astype(np.uint8)
        w_host = rng.integers(-127, 128, size=(n, k)).astype(np.int8)
        a_q, w_q = cupy.asarray(a_host), cupy.asarray(w_host)
        w = kernels.pack_int8_weight(w_q)
        ones = cupy.ones(n, np.float32)
        out, acc = cupy.empty((m, n), np.float32), cupy.empty((m, n), np.int32)
        # zero point 0 and unit scales: our output is the int32 accumulator as float32
        kernels.int8_gemm(a_q, 1.0, 0, w, ones, out=out)
        cublas_int8_gemm(a_q.view(np.int8), w_q, acc)
        if not bool((out == acc.astype(np.float32)).all()):
            raise AssertionError(f"cuda int8 gemm {m}x{k}x{n}: differs from cuBLAS's int32 result")
        ours_s, ref_s = time_pair(
            synchronized(lambda a_q=a_q, w=w, s=ones, out=out: kernels.int8_gemm(a_q, 1.0, 0, w, s, out=out)),
            synchronized(lambda a_q=a_q, w_q=w_q, acc=acc: cublas_int8_gemm(a_q.view(np.int8), w_q, acc)))
        records.append(Record("cuda", f"int8 gemm {m}x{k}x{n}", ours_s, "cuBLAS int8", ref_s,
                              {"tflops": 2 * m * n * k / ours_s / 1e12}))
    return records


def _spmm(rng: np.random.Generator, quick: bool) -> list[Record]:
    cupy = _cupy()
    records = []
    for m, k, n, sparsity in QUICK_SPMM if quick else SPMM_CASES:
        dense = rng.standard_normal((m, k)).astype(np.float32)
        dense[rng.random((m, k)) < sparsity] = 0.0
        rows, cols = np.nonzero(dense)
        indptr = np.searchsorted(rows, np.arange(m + 1)).astype(np.int64)
        pattern = kernels.CSRPattern(indptr, cols.astype(np.int64), (m, k))
        values = cupy.asarray(dense[rows, cols])
        b = cupy.asarray(rng.standard_normal((k, n)).astype(np.float32))
        device_indptr = cupy.asarray(indptr.astype(np.int32))
        device_indices = cupy.asarray(cols.astype(np.int32))
        ours = pattern.matmul(values, b)
        library_matrix = cusparse_matrix(device_indptr, device_indices, values, (m, k))
        b_fortran = cupy.asfortranarray(b)  # cupyx transposes a C-order b on every product otherwise
        reference = library_matrix @ b_fortran
        error = float(cupy.abs(ours - reference).max())
        if error > 1e-4 * np.sqrt(k) * max(1.0, float(cupy.abs(reference).max())):
            raise AssertionError(f"cuda spmm {m}x{k} @ {k}x{n}: differs from cuSPARSE by {error}")
        ours_s, ref_s = time_pair(
            synchronized(lambda values=values, b=b, pattern=pattern: pattern.matmul(values, b)),
            synchronized(lambda matrix=library_matrix, b=b_fortran: matrix @ b))
        records.append(Record("cuda", f"spmm {m}x{k} {sparsity:.0%} zeros @ {k}x{n}", ours_s, "cuSPARSE",
                              ref_s, {"tflops": 2 * len(cols) * n / ours_s / 1e12}))
    return records


def run(quick: bool = False) -> list[Record]:
    """Time our SGEMM, int8 GEMM and SpMM against cuBLAS / cuBLAS int8 / cuSPARSE on the current GPU."""
    from pyrt import cuda

    if not cuda.is_available():
        raise RuntimeError("the cuda benchmarks need a CUDA GPU with cupy and pyrt._cuda; none is visible")
    rng = np.random.default_rng(0)
    records = _sgemm(rng, quick) + _int8(rng, quick) + _spmm(rng, quick)
    print_table("CUDA kernels (ratio = library time / ours; above 1: pyrt is faster)", records, [
        ("case", lambda r: r.case), ("ours ms", lambda r: r.ours_s * 1e3), ("reference", lambda r: r.ref),
        ("ref ms", lambda r: r.ref_s * 1e3), ("ratio", lambda r: r.ratio),
        ("ours TFLOP/s", lambda r: r.extra["tflops"]),
    ])
    return records
