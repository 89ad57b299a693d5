"""The typed front door to pyrt's native kernels.

Every native kernel has exactly one Python entry point here. It validates its
inputs (dtype, rank, shape, memory overlap) with errors that name the offending
shapes and dtypes, then dispatches on the array type: numpy arrays go to
``pyrt._C`` (C++, OpenMP), cupy arrays to ``pyrt._cuda``, and arrays a native
kernel cannot take (for the fused optimizer updates and LSTM cell: anything
but C-contiguous float32 numpy) to the plain reference in
``pyrt.kernel_reference``. Ops, layers and optimizers call these functions and
never choose a path themselves; nothing else imports ``_C`` or ``_cuda``.
Each entry point is decorated with ``traced_kernel``, so a running ``pyrt.profiler.profile``
records every call with its arrays' shapes.
"""

from __future__ import annotations

import contextlib
from types import ModuleType
from typing import Any

import numpy as np

try:
    from pyrt import _C
except ImportError as exc:  # the usual cause: importing the source tree instead of the install
    import os as _os

    raise ImportError(
        f"pyrt's compiled kernels (pyrt._C) are missing from {_os.path.dirname(__file__)}. If that "
        "is a source checkout, you are importing it instead of the installed package: run from "
        "another directory, or install for development with `pip install --no-build-isolation -e .`"
    ) from exc
from pyrt import kernel_reference
from pyrt.backend import describe, get_array_module, is_cuda_array
from pyrt.profiler.recorder import traced_kernel

__all__ = [
    "CSRPattern",
    "CudaPackedInt8Weight",
    "PackedInt8Weight",
    "adam_step",
    "cuda_available",
    "dynamic_linear",
    "get_num_threads",
    "int8_gemm",
    "int8_gemm_kernel_name",
    "lstm_cell_backward",
    "lstm_cell_forward",
    "matmul",
    "measure_fp32_peak_gflops",
    "measure_int8_peak_gops",
    "pack_int8_weight",
    "quantize_u8",
    "reduce_inplace",
    "set_num_threads",
    "sgd_step",
    "sgemm_kernel_name",
    "spmm",
    "spmm_kernel_name",
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


def measure_fp32_peak_gflops() -> float:
    """Measured fp32 FMA throughput of this CPU on the kernel threads, in GFLOP/s (0.0 without AVX2/FMA).

    Independent FMA chains with no memory traffic, tens of milliseconds per
    thread: the ceiling a benchmark reports its kernels against ("% of peak").
    Other processes on the same cores lower it, as they lower the kernels.

    >>> measure_fp32_peak_gflops() >= 0.0
    True
    """
    return float(_C.measure_fp32_peak_gflops())


def measure_int8_peak_gops() -> float:
    """Measured int8 multiply-accumulate throughput of this CPU (AVX2 ``vpmaddubsw`` chains), in GOP/s.

    The int8 GEMM's ceiling, as ``measure_fp32_peak_gflops`` is the SGEMM's.

    >>> measure_int8_peak_gops() >= 0.0
    True
    """
    return float(_C.measure_int8_peak_gops())


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
    # Two strides (x is 2-D), tested without a generator: this runs for both operands of every GEMM.
    if x.strides[0] % x.itemsize or x.strides[1] % x.itemsize:
        raise ValueError(
            f"matmul: {name} has strides {x.strides} that are not multiples of its "
            f"item size {x.itemsize}"
        )


@traced_kernel
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
    # Two numpy operands, the CPU's every call, need no array-module lookup.
    xp = np if type(a) is np.ndarray and type(b) is np.ndarray else get_array_module(a, b)
    if xp is not np and not (is_cuda_array(a) and is_cuda_array(b)):
        raise TypeError(
            "matmul: a and b must both be numpy arrays or both cupy arrays, got "
            f"{type(a).__module__}.{type(a).__name__} and {type(b).__module__}.{type(b).__name__}"
        )
    m, n = a.shape[0], b.shape[1]
    if out is None and xp is np:
        out = np.empty((m, n), dtype=np.float32)
    elif out is None:
        with a.device:  # on a's GPU, not the current one
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
    if xp is np and not out.flags.writeable:
        raise ValueError("matmul: out is read-only")
    if xp.may_share_memory(out, a) or xp.may_share_memory(out, b):  # blocks would read what others wrote
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
    with a.device:  # streams are per device: take a's GPU's current stream
        stream = cupy.cuda.get_current_stream().ptr
        _cuda().sgemm(
            m, n, k, 1.0, a.data.ptr, rsa, csa, b.data.ptr, rsb, csb, 0.0, out.data.ptr,
            rsc, csc, stream,
        )


# --- int8 GEMM for dynamic quantization ------------------------------------------

PackedInt8Weight = _C.PackedInt8Weight

# Activations are 7-bit ([0, 127]) so AVX2's vpmaddubsw cannot saturate;
# see csrc/cpu/qgemm.cpp.
ACTIVATION_QMAX = 127
# Largest k whose int32 accumulators cannot overflow: k * 127 * 128 < 2**31 (csrc/cpu/qgemm.h).
INT8_GEMM_MAX_K = 132104
# The GPU kernel multiplies activations as unsigned bytes (mma .u8), exact for any uint8 code while
# k * 255 * 128 < 2**31; only beyond that does it need the 7-bit codes the CPU always requires.
_CUDA_ANY_U8_MAX_K = (2**31 - 1) // (255 * 128)
# The GPU kernel copies rows in 16-byte chunks when a matrix's address and row stride allow it
# (else byte by byte), so GPU weights and codes get their rows padded to 16 bytes.
_CUDA_ROW_ALIGN = 16


class CudaPackedInt8Weight:
    """int8 weights (n, k) on a GPU, ready for :func:`int8_gemm`: the codes and their row sums.

    Made by :func:`pack_int8_weight` of a cupy array. ``codes`` is the int8
    (n, k) array with rows padded to 16 bytes (the kernel's fast loads) and
    ``row_sums`` the int32 (n,) sums ``sum_k w[n, k]`` that take the
    activation zero point out of the inner loop; both on the weight's GPU.

    >>> w = CudaPackedInt8Weight(np.ones((2, 16), np.int8), np.full(2, 3, np.int32), k=3)
    >>> (w.n, w.k, w.nbytes)
    (2, 3, 40)
    """

    __slots__ = ("codes", "k", "n", "row_sums")

    def __init__(self, codes: Any, row_sums: Any, k: int) -> None:
        self.codes = codes
        self.row_sums = row_sums
        self.n = int(codes.shape[0])
        self.k = int(k)

    @property
    def nbytes(self) -> int:
        """Bytes held on the GPU (padded codes plus row sums), for memory reports."""
        return int(self.codes.nbytes + self.row_sums.nbytes)

    @property
    def device(self) -> Any:
        """The ``cupy.cuda.Device`` holding the weight."""
        return self.codes.device

    def __repr__(self) -> str:
        return f"CudaPackedInt8Weight(n={self.n}, k={self.k}, device=cuda:{self.codes.device.id})"


def _require_numpy(fn: str, **arrays: Any) -> None:
    for name, x in arrays.items():
        if type(x) is not np.ndarray and get_array_module(x) is not np:
            raise TypeError(
                f"{fn}: {name} is a {type(x).__module__}.{type(x).__name__} but the other operands are "
                "on the CPU; pass numpy arrays here, or put every operand on the GPU (cupy arrays and "
                "a weight packed from a cupy array)"
            )


def _round_up(x: int, multiple: int) -> int:
    return -(-x // multiple) * multiple


@traced_kernel
def pack_int8_weight(w_q: Any) -> PackedInt8Weight | CudaPackedInt8Weight:
    """Pack int8 weights (n, k), nn.Linear's layout, once for :func:`int8_gemm`.

    A numpy array gives a CPU ``PackedInt8Weight``; a cupy array a
    :class:`CudaPackedInt8Weight` on the array's GPU.

    >>> p = pack_int8_weight(np.ones((3, 5), np.int8))
    >>> (p.n, p.k)
    (3, 5)
    """
    if getattr(w_q, "ndim", None) != 2 or w_q.dtype != np.int8:
        raise TypeError(f"pack_int8_weight: w_q must be a 2-D int8 array, got {describe(w_q)}")
    if is_cuda_array(w_q):
        return _cuda_pack_int8_weight(w_q)
    _require_numpy("pack_int8_weight", w_q=w_q)
    return _C.pack_int8_weight(w_q)


def _cuda_pack_int8_weight(w_q: Any) -> CudaPackedInt8Weight:
    import cupy

    n, k = w_q.shape
    if k > INT8_GEMM_MAX_K:  # the CPU's PackedInt8Weight refuses the same
        raise ValueError(f"pack_int8_weight: k = {k} exceeds kInt8GemmMaxK = {INT8_GEMM_MAX_K} "
                         "(int32 accumulators could overflow)")
    with w_q.device:
        codes = cupy.zeros((n, _round_up(k, _CUDA_ROW_ALIGN)), dtype=cupy.int8)
        codes[:, :k] = w_q
        row_sums = cupy.empty(n, dtype=cupy.int32)
        _cuda().int8_row_sums(n, k, codes.data.ptr, codes.shape[1], row_sums.data.ptr,
                              cupy.cuda.get_current_stream().ptr)
    return CudaPackedInt8Weight(codes, row_sums, k)


def _check_quantize_input(x: Any) -> None:
    if getattr(x, "ndim", None) != 2 or x.dtype != np.float32:
        raise TypeError(f"quantize_u8: x must be a 2-D float32 array, got {describe(x)}")
    if x.strides[0] % 4 or x.strides[1] % 4:  # x is 2-D float32: two strides, no generator per call
        raise ValueError(f"quantize_u8: x has strides {x.strides}, not multiples of 4 bytes")


def _cuda_quantize(x: Any) -> tuple[Any, Any]:
    """Queue the GPU quantizer on x; returns (codes, workspace) without waiting.

    The codes are (m, k) with rows padded to 16 bytes; the workspace's first
    4 int32 words become (scale as float32, zero point, 1 / scale, finite).
    """
    import cupy

    m, k = x.shape
    cuda = _cuda()
    workspace = cupy.empty(int(cuda.quantize_u8_workspace_words), dtype=cupy.int32)
    padded = cupy.empty((m, _round_up(k, _CUDA_ROW_ALIGN)), dtype=cupy.uint8)
    rsx, csx = _element_strides(x, 4)
    cuda.quantize_u8(m, k, x.data.ptr, rsx, csx, padded.data.ptr, padded.shape[1], workspace.data.ptr,
                     cupy.cuda.get_current_stream().ptr)
    return padded[:, :k], workspace


@traced_kernel
def quantize_u8(x: Any) -> tuple[Any, float, int]:
    """Dynamic per-tensor quantization of float32 (m, k) to 7-bit uint8 codes.

    Returns ``(q, scale, zero_point)`` with ``x ~= scale * (q - zero_point)``,
    chosen as PyTorch's dynamic Linear does (range widened to include 0,
    ``scale = (max - min) / 127``). Any strides are accepted. On a cupy array
    the GPU computes the same codes and parameters as the CPU would (``q`` is
    a cupy array whose rows are padded to 16 bytes); returning the parameters
    as Python numbers waits for the GPU.

    >>> q, scale, zp = quantize_u8(np.array([[-1.0, 0.0, 1.0]], np.float32))
    >>> q.dtype, int(q[0, 1]) == zp
    (dtype('uint8'), True)
    """
    _check_quantize_input(x)
    if is_cuda_array(x):
        with x.device:
            q, workspace = _cuda_quantize(x)
            params = workspace[:4].get()
        if not params[3]:
            raise ValueError("quantize_u8: x contains NaN or infinity")
        return q, float(params[:1].view(np.float32)[0]), int(params[1])
    _require_numpy("quantize_u8", x=x)
    q, scale, zero_point = _C.quantize_u8(x)
    return q, float(scale), int(zero_point)


def _check_gemm_vector(fn: str, name: str, v: Any, n: int, xp: ModuleType) -> Any:
    """w_scales or bias as a contiguous float32 (n,) array of ``xp``'s kind."""
    if xp is np:
        if type(v) is not np.ndarray:  # (a numpy array passes: the call and its dict are per forward)
            _require_numpy(fn, **{name: v})
    elif not is_cuda_array(v):
        raise TypeError(f"{fn}: {name} is a {type(v).__module__}.{type(v).__name__} but a_q is a cupy "
                        f"array; pass {name} as a cupy array on the same GPU")
    v = xp.ascontiguousarray(v, dtype=xp.float32)
    if v.shape != (n,):
        raise ValueError(f"{fn}: {name} is {describe(v)}, expected ({n},) float32")
    return v


def _check_same_gpu(fn: str, **arrays: Any) -> None:
    devices = {name: x.device.id for name, x in arrays.items() if x is not None}
    if len(set(devices.values())) > 1:
        where = ", ".join(f"{name}: cuda:{d}" for name, d in devices.items())
        raise ValueError(f"{fn}: arrays are on different GPUs ({where})")


def _check_packed_matches(fn: str, w: Any, on_gpu: bool) -> None:
    if on_gpu and not isinstance(w, CudaPackedInt8Weight):
        where = "the CPU" if isinstance(w, PackedInt8Weight) else f"a {type(w).__name__}"
        raise TypeError(f"{fn}: the input is a cupy array but w is packed on {where}; pack the int8 "
                        "weight from a cupy array (pack_int8_weight(cupy.asarray(w_q)))")
    if not on_gpu and not isinstance(w, PackedInt8Weight):
        if isinstance(w, CudaPackedInt8Weight):
            raise TypeError(f"{fn}: w is packed on cuda:{w.codes.device.id} but the input is a numpy "
                            "array; pass a cupy array on that GPU, or pack the weight from a numpy array")
        raise TypeError(f"{fn}: w must be a PackedInt8Weight (pack_int8_weight), got {type(w)}")


@traced_kernel
def int8_gemm(
    a_q: Any,
    a_scale: float,
    a_zero_point: int,
    w: PackedInt8Weight | CudaPackedInt8Weight,
    w_scales: Any,
    bias: Any | None = None,
    out: Any | None = None,
) -> Any:
    """``a_scale * w_scales * ((a_q - a_zero_point) @ w_q.T) + bias`` as float32 (m, n).

    ``a_q`` is uint8 (m, k) with values in [0, 127] (from :func:`quantize_u8`)
    and contiguous rows; ``w`` comes from :func:`pack_int8_weight` of an
    (n, k) int8 array; ``w_scales`` is float32 (n,) (per output channel; repeat
    one value for per-tensor); ``bias`` is float32 (n,) or None. All numpy
    (the C++ kernel), or all cupy on one GPU with ``w`` packed from a cupy
    array (the CUDA kernel, with the same int32 sums and epilogue, so the
    same floats). The GPU kernel is exact for any uint8 ``a_q`` up to
    k = 65793, so there codes above 127 are only refused (which needs a
    reduction and a wait for the GPU) for larger k.

    >>> w = pack_int8_weight(np.full((2, 3), 2, np.int8))
    >>> a = np.full((1, 3), 5, np.uint8)
    >>> int8_gemm(a, 0.5, 1, w, np.ones(2, np.float32))
    array([[12., 12.]], dtype=float32)
    """
    on_gpu = is_cuda_array(a_q)
    _check_packed_matches("int8_gemm", w, on_gpu)
    if getattr(a_q, "ndim", None) != 2 or a_q.dtype != np.uint8:
        raise TypeError(f"int8_gemm: a_q must be a 2-D uint8 array, got {describe(a_q)}")
    m, k = a_q.shape
    if k != w.k:
        raise ValueError(
            f"int8_gemm: a_q is {describe(a_q)} but the packed weight is ({w.n}, {w.k}); "
            f"inner dimensions {k} != {w.k}"
        )
    if not 0 <= int(a_zero_point) <= ACTIVATION_QMAX:
        raise ValueError(f"int8_gemm: a_zero_point {a_zero_point} is outside [0, 127]")
    if on_gpu:
        return _cuda_int8_gemm_checked(a_q, float(a_scale), int(a_zero_point), w, w_scales, bias, out)
    _require_numpy("int8_gemm", a_q=a_q)
    if a_q.size and k > 1 and a_q.strides[1] != 1:
        a_q = np.ascontiguousarray(a_q)  # the kernel reads whole rows
    w_scales = _check_gemm_vector("int8_gemm", "w_scales", w_scales, w.n, np)
    if bias is not None:
        bias = _check_gemm_vector("int8_gemm", "bias", bias, w.n, np)
    if out is None:
        out = np.empty((m, w.n), dtype=np.float32)
    else:
        _require_numpy("int8_gemm", out=out)
        if out.shape != (m, w.n) or out.dtype != np.float32:
            raise ValueError(f"int8_gemm: out is {describe(out)} but the product is ({m}, {w.n}) float32")
        if not out.flags.writeable or (out.size and w.n > 1 and out.strides[1] != 4):
            raise ValueError("int8_gemm: out must be writeable with contiguous rows")
        if np.may_share_memory(out, a_q):
            raise ValueError("int8_gemm: out overlaps a_q; pass a separate output array")
    _C.int8_gemm(a_q, float(a_scale), int(a_zero_point), w, w_scales, bias, out)
    return out


def _cuda_int8_gemm_checked(a_q: Any, a_scale: float, a_zero_point: int, w: CudaPackedInt8Weight,
                            w_scales: Any, bias: Any | None, out: Any | None) -> Any:
    import cupy

    m, k = a_q.shape
    if out is not None and not is_cuda_array(out):
        raise TypeError(f"int8_gemm: out is a {type(out).__module__}.{type(out).__name__} but a_q is a "
                        "cupy array")
    _check_same_gpu("int8_gemm", a_q=a_q, w=w.codes, out=out)
    with a_q.device:
        w_scales = _check_gemm_vector("int8_gemm", "w_scales", w_scales, w.n, cupy)
        if bias is not None:
            bias = _check_gemm_vector("int8_gemm", "bias", bias, w.n, cupy)
        _check_same_gpu("int8_gemm", a_q=a_q, w_scales=w_scales, bias=bias)
        if a_q.size and k > 1 and a_q.strides[1] != 1:
            a_q = cupy.ascontiguousarray(a_q)  # the kernel reads whole rows
        if k > _CUDA_ANY_U8_MAX_K and a_q.size and int(a_q.max()) > ACTIVATION_QMAX:
            raise ValueError("int8_gemm: activations must be in [0, 127] (7-bit, so vpmaddubsw cannot "
                             "saturate); quantize them with quantize_u8")
        if out is None:
            out = cupy.empty((m, w.n), dtype=cupy.float32)
        else:
            if out.shape != (m, w.n) or out.dtype != np.float32:
                raise ValueError(f"int8_gemm: out is {describe(out)} but the product is ({m}, {w.n}) float32")
            if out.size and w.n > 1 and out.strides[1] != 4:
                raise ValueError("int8_gemm: out must have contiguous rows")
            if cupy.may_share_memory(out, a_q):
                raise ValueError("int8_gemm: out overlaps a_q; pass a separate output array")
        _cuda_int8_gemm(a_q, a_scale, a_zero_point, 0, w, w_scales, bias, out)
    return out


def _cuda_int8_gemm(a_q: Any, a_scale: float, a_zero_point: int, a_params_ptr: int,
                    w: CudaPackedInt8Weight, w_scales: Any, bias: Any | None, out: Any) -> None:
    """Launch on checked operands, under the operands' device (the caller's ``with``)."""
    import cupy

    m, k = a_q.shape
    _cuda().int8_gemm(
        m, w.n, k, a_q.data.ptr, a_q.strides[0], a_scale, a_zero_point, a_params_ptr,
        w.codes.data.ptr, w.codes.shape[1], w.row_sums.data.ptr, w_scales.data.ptr,
        0 if bias is None else bias.data.ptr, out.data.ptr, out.strides[0] // 4,
        cupy.cuda.get_current_stream().ptr,
    )


@traced_kernel
def dynamic_linear(x: Any, w: PackedInt8Weight | CudaPackedInt8Weight, w_scales: Any,
                   bias: Any | None = None) -> Any:
    """``x @ w.T + bias`` with x quantized on the fly: PyTorch's dynamic int8 Linear.

    numpy ``x`` runs on the CPU; cupy ``x`` (with ``w`` packed from a cupy
    array, ``w_scales`` and ``bias`` cupy arrays on the same GPU) runs on the
    GPU with identical quantization parameters, without waiting for the GPU:
    the parameters stay in device memory between the quantizer and the GEMM.
    There, an ``x`` holding NaN or infinity gives NaN outputs instead of the
    CPU's ValueError (raising would need that wait).

    >>> w = pack_int8_weight(np.eye(3, dtype=np.int8) * 100)
    >>> y = dynamic_linear(np.array([[0.5, -1.0, 2.0]], np.float32), w, np.full(3, 0.01, np.float32))
    >>> np.allclose(y, [[0.5, -1.0, 2.0]], atol=0.02)
    True
    """
    if not is_cuda_array(x):
        a_q, a_scale, a_zero_point = quantize_u8(x)
        return int8_gemm(a_q, a_scale, a_zero_point, w, w_scales, bias)
    import cupy

    _check_quantize_input(x)
    _check_packed_matches("dynamic_linear", w, True)
    if x.shape[1] != w.k:
        raise ValueError(f"dynamic_linear: x is {describe(x)} but the packed weight is ({w.n}, {w.k}); "
                         f"inner dimensions {x.shape[1]} != {w.k}")
    _check_same_gpu("dynamic_linear", x=x, w=w.codes)
    with x.device:
        w_scales = _check_gemm_vector("dynamic_linear", "w_scales", w_scales, w.n, cupy)
        if bias is not None:
            bias = _check_gemm_vector("dynamic_linear", "bias", bias, w.n, cupy)
        _check_same_gpu("dynamic_linear", x=x, w_scales=w_scales, bias=bias)
        a_q, workspace = _cuda_quantize(x)
        out = cupy.empty((x.shape[0], w.n), dtype=cupy.float32)
        # a_scale and a_zero_point are read from the workspace on the device.
        _cuda_int8_gemm(a_q, 0.0, 0, workspace.data.ptr, w, w_scales, bias, out)
    return out


def int8_gemm_kernel_name() -> str:
    """Name of the int8 GEMM micro-kernel picked for this CPU.

    >>> int8_gemm_kernel_name() in ("avx2_4x16", "portable")
    True
    """
    return str(_C.int8_gemm_kernel_name())


# --- CSR SpMM ------------------------------------------------------------------------

# The CUDA kernel reads int32 indices (csrc/cuda/spmm.h): nnz and k must fit.
_INT32_MAX = 2**31 - 1


def _device_name(x: Any) -> str:
    return f"cuda:{x.device.id}" if is_cuda_array(x) else "cpu"


class CSRPattern:
    """The validated structure of an (m, k) CSR matrix, for many products with changing values.

    ``spmm`` checks ``indptr``/``indices`` on every call, one pass over the
    indices: for a pruned 1024 x 784 layer at batch 1 that was a third of the
    product (104 of 346 us). A layer whose pattern is fixed while its values
    train checks it once here; the pattern keeps read-only copies, so nothing
    can change it after the check.

    ``matmul`` runs where its operands are: numpy arrays on the C++ kernel,
    cupy arrays on the CUDA kernel of their GPU, which reads int32 copies of
    the structure kept per GPU (made on first use there, once). ``device`` is
    where the pattern was made or moved to: built from cupy arrays (checked on
    the host, once) or by ``to("cuda:N")``, its copy on that GPU is made
    ahead. ``indptr`` and ``indices`` are always the validated int64 host
    arrays.

    >>> pattern = CSRPattern(np.array([0, 1, 3]), np.array([2, 0, 1]), (2, 3))
    >>> pattern.matmul(np.array([1.0, 2.0, 3.0], np.float32), np.eye(3, dtype=np.float32))
    array([[0., 0., 1.],
           [2., 3., 0.]], dtype=float32)
    >>> pattern.nnz, pattern.indices.flags.writeable, pattern.device
    (3, False, 'cpu')
    """

    def __init__(self, indptr: Any, indices: Any, shape: tuple[int, int]) -> None:
        self.shape = (int(shape[0]), int(shape[1]))
        on_gpu = [is_cuda_array(indptr), is_cuda_array(indices)]
        device = "cpu"
        if any(on_gpu):
            if not all(on_gpu) or indptr.device.id != indices.device.id:
                raise ValueError(f"spmm: indptr is on {_device_name(indptr)} but indices is on "
                                 f"{_device_name(indices)}; pass both on one device")
            device = _device_name(indptr)
            # Validated on the host: one copy per pattern, not per product.
            indptr, indices = indptr.get(), indices.get()
        self.indptr, self.indices = _checked_csr_structure("spmm", indptr, indices, self.shape)
        if self.indptr is indptr or self.indices is indices:  # private copies, whatever the caller keeps
            self.indptr, self.indices = self.indptr.copy(), self.indices.copy()
        self.indptr.flags.writeable = False
        self.indices.flags.writeable = False
        self._device = device
        # GPU index -> (indptr, indices) int32 cupy arrays on it; shared by the patterns
        # that to() makes from this one, since the structure never changes.
        self._device_copies: dict[int, tuple[Any, Any]] = {}
        if device != "cpu":
            self._device_copy(int(device.partition(":")[2]))

    @property
    def nnz(self) -> int:
        return int(self.indices.shape[0])

    @property
    def device(self) -> str:
        """``"cpu"`` or ``"cuda:N"``: where the pattern was made or moved to (``to``).

        >>> CSRPattern(np.array([0, 0]), np.array([], np.int64), (1, 3)).device
        'cpu'
        """
        return self._device

    def _device_copy(self, index: int) -> tuple[Any, Any]:
        """The structure as int32 cupy arrays on GPU ``index``, copied there on first use."""
        copy = self._device_copies.get(index)
        if copy is None:
            import cupy

            if self.nnz > _INT32_MAX or self.shape[1] > _INT32_MAX:
                raise ValueError(f"spmm: the CUDA kernel takes int32 indices, but this ({self.shape[0]}, "
                                 f"{self.shape[1]}) matrix has nnz={self.nnz}; nnz and k must be < 2**31")
            with cupy.cuda.Device(index):
                copy = (cupy.asarray(self.indptr.astype(np.int32)),
                        cupy.asarray(self.indices.astype(np.int32)))
            self._device_copies[index] = copy
        return copy

    def to(self, device: Any) -> CSRPattern:
        """This pattern on ``device`` (``"cpu"``, ``"cuda"``, ``"cuda:N"``, an int): itself when it
        is there already, else a pattern sharing the validated host arrays (no new check) whose
        copy on that GPU is made now rather than at the first product.

        >>> pattern = CSRPattern(np.array([0, 1]), np.array([0]), (1, 1))
        >>> pattern.to("cpu") is pattern
        True
        """
        from pyrt.cuda import parse_device  # pyrt.cuda imports this module

        kind, index = parse_device(device)
        target = "cpu" if kind == "cpu" else f"cuda:{index}"
        if target == self._device:
            return self
        moved = object.__new__(CSRPattern)
        moved.shape, moved.indptr, moved.indices = self.shape, self.indptr, self.indices
        moved._device, moved._device_copies = target, self._device_copies
        if index is not None:
            moved._device_copy(index)
        return moved

    @traced_kernel
    def matmul(self, values: Any, b: Any, out: Any | None = None, bias: Any | None = None) -> Any:
        """``A @ b (+ bias[:, None])`` with A's nonzeros ``values`` (nnz,) float32, b (k, n) and
        bias (m,) float32, as ``spmm``; on the CUDA kernel when the operands are cupy arrays (all
        on one GPU)."""
        on_host = (type(b) is np.ndarray and type(values) is np.ndarray
                   and (bias is None or type(bias) is np.ndarray))
        if (not on_host or out is not None) and (
                is_cuda_array(values) or is_cuda_array(b) or is_cuda_array(out) or is_cuda_array(bias)):
            return _cuda_spmm(self, values, b, out, bias)
        return _spmm_checked(self.indptr, self.indices, values, self.shape, b, out, bias)


def _checked_csr_structure(fn: str, indptr: Any, indices: Any,
                           shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    m, k = shape
    for name, x in (("indptr", indptr), ("indices", indices)):
        if is_cuda_array(x):
            raise TypeError(f"{fn}: {name} is a cupy array but the other operands are on the CPU")
        if not np.issubdtype(np.asarray(x).dtype, np.integer):
            raise TypeError(f"{fn}: {name} must hold integers, got {describe(np.asarray(x))}")
    indptr = np.ascontiguousarray(indptr, dtype=np.int64)
    indices = np.ascontiguousarray(indices, dtype=np.int64)
    if indptr.shape != (m + 1,):
        raise ValueError(f"{fn}: indptr is {describe(indptr)} but a ({m}, {k}) matrix needs ({m + 1},)")
    if indices.ndim != 1:
        raise ValueError(f"{fn}: indices must be 1-D, got {describe(indices)}")
    problem = _C.validate_csr(indptr, indices, k)
    if problem:
        raise ValueError(f"{fn}: invalid CSR matrix of shape ({m}, {k}): {problem}")
    return indptr, indices


def _spmm_checked(indptr: np.ndarray, indices: np.ndarray, values: Any, shape: tuple[int, int], b: Any,
                  out: Any | None, bias: Any | None = None) -> np.ndarray:
    """spmm on a structure already checked: checks values, b, out and bias (O(1) each), then runs."""
    m, k = shape
    if out is None and type(b) is np.ndarray and b.ndim == 2 and b.shape[0] == k:
        # The per-forward case (a layer's own values times a contiguous activation) goes straight
        # to C++, which refuses what it cannot read (dtypes, lengths, strides); only b's rows,
        # which the structure's check bounds, need checking here. Python's checks cost as much
        # as a batch-1 product. Whatever C++ refuses takes the path below, to be converted or
        # to get an error naming the shapes.
        out = np.empty((m, b.shape[1]), dtype=np.float32)
        try:
            _C.spmm(indptr, indices, values, b, out, 1.0, 0.0, bias)
            return out
        except (TypeError, ValueError):
            out = None
    if getattr(values, "dtype", None) != np.float32:
        raise TypeError(f"spmm: values must be float32, got {describe(values)}")
    values = np.ascontiguousarray(values)
    if values.shape != indices.shape:
        raise ValueError(f"spmm: indices is {describe(indices)} but values is {describe(values)}")
    if getattr(b, "ndim", None) != 2 or b.dtype != np.float32:
        raise TypeError(f"spmm: b must be a 2-D float32 array, got {describe(b)}")
    if b.shape[0] != k:
        raise ValueError(f"spmm: the matrix is ({m}, {k}) but b is {describe(b)}; inner dimensions "
                         f"{k} != {b.shape[0]}")
    rows_usable = (b.shape[1] <= 1 or b.strides[1] == b.itemsize) and b.strides[0] >= b.shape[1] * 4
    if b.size and not rows_usable:
        b = np.ascontiguousarray(b)  # transposed, reversed or broadcast rows
    n = b.shape[1]
    if out is None:
        out = np.empty((m, n), dtype=np.float32)
    elif out.shape != (m, n) or out.dtype != np.float32 or not out.flags.c_contiguous:
        raise ValueError(f"spmm: out is {describe(out)} but the product is a contiguous ({m}, {n}) float32")
    elif any(np.may_share_memory(out, x) for x in (b, values, bias) if x is not None):
        raise ValueError("spmm: out overlaps an input; pass a separate output array")
    if bias is not None:
        _check_bias(bias, m)
        bias = np.ascontiguousarray(bias)
    _C.spmm(indptr, indices, values, b, out, 1.0, 0.0, bias)
    return out


def _check_bias(bias: Any, m: int) -> None:
    if getattr(bias, "dtype", None) != np.float32 or bias.shape != (m,):
        raise ValueError(f"spmm: bias is {describe(bias)} but the product has {m} rows: pass ({m},) float32")


def _cuda_spmm(pattern: CSRPattern, values: Any, b: Any, out: Any | None, bias: Any | None) -> Any:
    """``pattern.matmul`` on cupy arrays: checks devices, dtypes and shapes, then runs the CUDA kernel."""
    import cupy

    m, k = pattern.shape
    operands = {"values": values, "b": b, **({} if out is None else {"out": out}),
                **({} if bias is None else {"bias": bias})}
    devices = {name: _device_name(x) for name, x in operands.items()}
    if len(set(devices.values())) != 1:
        raise ValueError("spmm: the operands are on different devices ("
                         + ", ".join(f"{name}: {where}" for name, where in devices.items())
                         + "); put them on one GPU")
    if values.dtype != np.float32 or values.shape != (pattern.nnz,):
        raise TypeError(f"spmm: values must be ({pattern.nnz},) float32 (the pattern's nnz), "
                        f"got {describe(values)}")
    if getattr(b, "ndim", None) != 2 or b.dtype != np.float32:
        raise TypeError(f"spmm: b must be a 2-D float32 array, got {describe(b)}")
    if b.shape[0] != k:
        raise ValueError(f"spmm: the matrix is ({m}, {k}) but b is {describe(b)}; inner dimensions "
                         f"{k} != {b.shape[0]}")
    if bias is not None:
        _check_bias(bias, m)
    n = b.shape[1]
    with b.device:
        values = cupy.ascontiguousarray(values)
        # The kernel reads rows of b with a unit column stride and a row stride that is a whole
        # number of floats, at least n apart; anything else is copied once.
        rows_usable = ((n <= 1 or b.strides[1] == 4) and b.strides[0] % 4 == 0
                       and b.strides[0] >= max(n, 1) * 4)
        if b.size and not rows_usable:
            b = cupy.ascontiguousarray(b)
        if out is None:
            out = cupy.empty((m, n), dtype=np.float32)
        elif out.shape != (m, n) or out.dtype != np.float32 or not out.flags.c_contiguous:
            raise ValueError(f"spmm: out is {describe(out)} but the product is a contiguous ({m}, {n}) "
                             "float32")
        elif any(cupy.may_share_memory(out, x) for x in (b, values, bias) if x is not None):
            raise ValueError("spmm: out overlaps an input; pass a separate output array")
        if m and n:
            indptr, indices = pattern._device_copy(b.device.id)
            _cuda().spmm(m, n, k, 1.0, indptr.data.ptr, indices.data.ptr, values.data.ptr, b.data.ptr,
                         b.strides[0] // 4 if k > 1 else max(n, 1), 0.0, out.data.ptr, n,
                         cupy.cuda.get_current_stream().ptr)
        if bias is not None:
            out += bias[:, None]
    return out


@traced_kernel
def spmm(indptr: Any, indices: Any, values: Any, shape: tuple[int, int], b: Any,
         out: Any | None = None) -> Any:
    """``A @ b`` for a sparse CSR matrix A (m, k) and a dense float32 b (k, n).

    A is given as SciPy stores it: ``indptr`` (m + 1,), ``indices`` (nnz,) and
    ``values`` (nnz,), row by row with sorted, duplicate-free column indices.
    The structure is validated on every call (in C++, one pass over the
    indices) with an error that says what is wrong; ``CSRPattern`` validates a
    fixed structure once for many products. Pass int64 indices and float32
    values to avoid a conversion copy; b may be any float32 view whose rows
    are contiguous, otherwise it is copied. With cupy arrays (all five on one
    GPU) the product runs on the CUDA kernel; the structure is then copied to
    the host to be checked, so repeated products should use a ``CSRPattern``.

    >>> indptr, indices = np.array([0, 1, 3]), np.array([2, 0, 1])
    >>> values = np.array([1.0, 2.0, 3.0], np.float32)
    >>> spmm(indptr, indices, values, (2, 3), np.eye(3, dtype=np.float32))
    array([[0., 0., 1.],
           [2., 3., 0.]], dtype=float32)
    """
    shape = (int(shape[0]), int(shape[1]))
    if any(is_cuda_array(x) for x in (indptr, indices, values, b, out)):
        return CSRPattern(indptr, indices, shape).matmul(values, b, out)
    indptr, indices = _checked_csr_structure("spmm", indptr, indices, shape)
    return _spmm_checked(indptr, indices, values, shape, b, out)


def spmm_kernel_name() -> str:
    """Name of the SpMM loop picked for this CPU.

    >>> spmm_kernel_name() in ("avx2_fma", "portable")
    True
    """
    return str(_C.spmm_kernel_name())


# --- reductions for collectives -------------------------------------------------------

# What the CPU kernel (pyrt._C) computes; other dtypes and "prod" take numpy's ufunc on the
# CPU. The CUDA kernel computes all of _REDUCE_OPS on all of _REDUCE_DTYPES.
_REDUCE_OPS = {"sum": np.add, "prod": np.multiply, "max": np.maximum, "min": np.minimum}
_REDUCE_DTYPES = (np.float32, np.float64, np.int32, np.int64)
_NATIVE_CPU_OPS = ("sum", "max", "min")


def _check_reduction_buffer(fn: str, name: str, x: Any, dtypes: tuple[Any, ...]) -> None:
    if not (isinstance(x, np.ndarray) or is_cuda_array(x)):
        raise TypeError(f"{fn}: {name} must be a numpy or cupy array, got {type(x).__name__}")
    if x.dtype not in dtypes or not x.flags.c_contiguous:
        names = ", ".join(np.dtype(d).name for d in dtypes)
        raise TypeError(f"{fn}: {name} must be a contiguous array of {names}, got {describe(x)}")


@traced_kernel
def reduce_inplace(dst: Any, src: Any, op: str = "sum") -> Any:
    """``dst = op(dst, src)`` element-wise for op in sum, prod, max, min; returns ``dst``.

    The vectorized kernel behind the ring all-reduce: float32, float64, int32
    and int64, contiguous, numpy arrays on the CPU or cupy arrays on one GPU
    (the CUDA kernel, on cupy's current stream). max and min propagate NaN like
    ``np.maximum``/``np.minimum``; integer sums and products wrap as numpy's
    do. ``dst`` and ``src`` are the same array or do not overlap.

    >>> reduce_inplace(np.ones(3), np.full(3, 2.0), "max")
    array([2., 2., 2.])
    >>> reduce_inplace(np.full(2, 3, np.int32), np.full(2, 4, np.int32), "prod")
    array([12, 12], dtype=int32)
    """
    _check_reduction_buffer("reduce_inplace", "dst", dst, _REDUCE_DTYPES)
    _check_reduction_buffer("reduce_inplace", "src", src, _REDUCE_DTYPES)
    if dst.shape != src.shape or dst.dtype != src.dtype:
        raise ValueError(f"reduce_inplace: dst is {describe(dst)} but src is {describe(src)}")
    if op not in _REDUCE_OPS:
        raise ValueError(f"reduce_inplace: op must be 'sum', 'prod', 'max' or 'min', got {op!r}")
    if is_cuda_array(dst) or is_cuda_array(src):
        _cuda_reduce(dst, src, op)
        return dst
    if dst is not src and np.may_share_memory(dst, src):
        raise ValueError("reduce_inplace: dst and src partly overlap; pass separate arrays")
    if not dst.flags.writeable:
        raise ValueError("reduce_inplace: dst is read-only")
    if dst.dtype in (np.float32, np.float64) and op in _NATIVE_CPU_OPS:
        _C.reduce_inplace(dst, src, op)
    else:
        _REDUCE_OPS[op](dst, src, out=dst)
    return dst


def _same_gpu(fn: str, *arrays: Any) -> None:
    devices = [_device_name(x) for x in arrays]
    if len(set(devices)) != 1:
        raise ValueError(f"{fn}: arrays are on different devices ({', '.join(devices)}); "
                         "move them to one GPU first")


def _cuda_reduce(dst: Any, src: Any, op: str) -> None:
    import cupy

    _same_gpu("reduce_inplace", dst, src)
    if dst is not src and cupy.may_share_memory(dst, src):
        raise ValueError("reduce_inplace: dst and src partly overlap; pass separate arrays")
    with dst.device:
        _cuda().reduce_inplace(dst.data.ptr, src.data.ptr, dst.size, dst.dtype.name, op,
                               cupy.cuda.get_current_stream().ptr)


# --- fused optimizer updates and the LSTM cell ------------------------------------------
# One entry point per kernel, whatever the arrays: C-contiguous float32 numpy arrays run
# the native pass in pyrt._C; anything else (float64, strided views, cupy arrays) runs the
# plain reference in pyrt.kernel_reference on the same arrays, in place. Callers never
# choose: optimizers and the LSTM layer call these functions for every dtype and device.

def _runs_native(*arrays: Any) -> bool:
    """True when every array fits the native kernels: a C-contiguous float32 numpy array."""
    return all(isinstance(x, np.ndarray) and x.dtype == np.float32 and x.flags.c_contiguous
               for x in arrays)


def _device_current(x: Any) -> contextlib.AbstractContextManager[Any]:
    """For a cupy array, its GPU made current while the reference runs: cupy launches every
    kernel on the current device and refuses an array that lives on another one."""
    return x.device if is_cuda_array(x) else contextlib.nullcontext()


def _listing(arrays: dict[str, Any]) -> str:
    return ", ".join(f"{name} {describe(x)}" for name, x in arrays.items())


def _check_same_kind(fn: str, arrays: dict[str, Any]) -> None:
    """One array library and one floating dtype across ``arrays`` (None entries already dropped)."""
    if not all(hasattr(x, "shape") and hasattr(x, "dtype") for x in arrays.values()):
        raise TypeError(f"{fn}: needs numpy or cupy arrays, got {_listing(arrays)}")
    if len({is_cuda_array(x) for x in arrays.values()}) > 1:
        kinds = ", ".join(f"{name} {type(x).__module__}.{type(x).__name__}" for name, x in arrays.items())
        raise TypeError(f"{fn}: mixes numpy and cupy arrays ({kinds}); move them to one device")
    dtypes = {np.dtype(x.dtype) for x in arrays.values()}
    if len(dtypes) > 1 or not np.issubdtype(dtypes.pop(), np.floating):
        raise TypeError(f"{fn}: needs arrays of one floating dtype, got {_listing(arrays)}")


def _check_update(fn: str, **arrays: Any) -> None:
    present = {name: x for name, x in arrays.items() if x is not None}
    _check_same_kind(fn, present)
    if len({tuple(x.shape) for x in present.values()}) > 1:
        raise ValueError(f"{fn}: needs arrays of one shape, got {_listing(present)}")


@traced_kernel
def sgd_step(p: Any, grad: Any, momentum_buffer: Any | None, *, lr: float, momentum: float = 0.0,
             dampening: float = 0.0, weight_decay: float = 0.0, nesterov: bool = False,
             maximize: bool = False, first_step: bool = False) -> None:
    """One SGD update of ``p`` in place, PyTorch's equations (see ``pyrt.optim.SGD``).

    ``momentum_buffer`` (same shape, updated in place) is needed when
    ``momentum`` is non-zero; on ``first_step`` it is set to the gradient.
    C-contiguous float32 numpy arrays take one native pass; any other
    floating arrays (float64, strided, cupy) the reference in
    ``pyrt.kernel_reference``.

    >>> p, g = np.ones(2, np.float32), np.full(2, 0.5, np.float32)
    >>> sgd_step(p, g, None, lr=0.1)
    >>> p
    array([0.95, 0.95], dtype=float32)
    >>> p64 = np.ones(2); sgd_step(p64, np.full(2, 0.5), None, lr=0.1); p64   # the reference
    array([0.95, 0.95])
    """
    _check_update("sgd_step", p=p, grad=grad, momentum_buffer=momentum_buffer)
    if momentum != 0 and momentum_buffer is None:
        raise ValueError("sgd_step: momentum needs a buffer (momentum_buffer is None)")
    if _runs_native(p, grad, *([] if momentum_buffer is None else [momentum_buffer])):
        _C.sgd_step(p, grad, momentum_buffer, lr, momentum, dampening, weight_decay, nesterov, maximize,
                    first_step)
    else:
        with _device_current(p):
            kernel_reference.sgd_step(p, grad, momentum_buffer, lr=lr, momentum=momentum,
                                      dampening=dampening, weight_decay=weight_decay,
                                      nesterov=nesterov, maximize=maximize, first_step=first_step)


@traced_kernel
def adam_step(p: Any, grad: Any, exp_avg: Any, exp_avg_sq: Any, max_exp_avg_sq: Any | None, *,
              lr: float, beta1: float, beta2: float, eps: float, weight_decay: float, step: int,
              decoupled_weight_decay: bool = False, maximize: bool = False) -> None:
    """One Adam (or, with ``decoupled_weight_decay``, AdamW) update of ``p`` in place.

    The moment estimates (and ``max_exp_avg_sq`` for AMSGrad) are updated in
    place; ``step`` counts from 1 and sets the bias corrections. Dispatch as
    in :func:`sgd_step`.

    >>> p, g = np.ones(2, np.float32), np.full(2, 0.5, np.float32)
    >>> m, v = np.zeros(2, np.float32), np.zeros(2, np.float32)
    >>> adam_step(p, g, m, v, None, lr=0.1, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0, step=1)
    >>> p.round(4)
    array([0.9, 0.9], dtype=float32)
    """
    _check_update("adam_step", p=p, grad=grad, exp_avg=exp_avg, exp_avg_sq=exp_avg_sq,
                  max_exp_avg_sq=max_exp_avg_sq)
    if int(step) < 1:
        raise ValueError(f"adam_step: step counts from 1, got {step}")
    state = [exp_avg, exp_avg_sq, *([] if max_exp_avg_sq is None else [max_exp_avg_sq])]
    if _runs_native(p, grad, *state):
        _C.adam_step(p, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, lr, beta1, beta2, eps, weight_decay,
                     decoupled_weight_decay, maximize, int(step))
    else:
        with _device_current(p):
            kernel_reference.adam_step(p, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, lr=lr,
                                       beta1=beta1, beta2=beta2, eps=eps, weight_decay=weight_decay,
                                       step=int(step), decoupled_weight_decay=decoupled_weight_decay,
                                       maximize=maximize)


def _check_lstm(fn: str, gates: Any, **states: Any) -> dict[str, Any]:
    present = {"gates": gates, **{k: v for k, v in states.items() if v is not None}}
    _check_same_kind(fn, present)
    c_prev = states["c_prev"]
    if c_prev.ndim != 2:
        raise ValueError(f"{fn}: c_prev must be (batch, hidden), got {describe(c_prev)}")
    batch, hidden = c_prev.shape
    for name, x in present.items():
        want = (batch, 4 * hidden) if name in ("gates", "grad_gates") else (batch, hidden)
        if tuple(x.shape) != want:
            raise ValueError(f"{fn}: {name} is {describe(x)}, expected {want} for c_prev "
                             f"{describe(c_prev)}")
    return present


@traced_kernel
def lstm_cell_forward(gates: Any, c_prev: Any, c: Any, tanh_c: Any, h: Any) -> None:
    """One LSTM step after its GEMMs: activate the gates and update the cell, in one pass.

    ``gates`` (B, 4H) holds the pre-activations (order i, f, g, o) and receives the
    activated gates; ``c`` = f c_prev + i g, ``tanh_c`` = tanh(c), ``h`` = o tanh(c),
    all (B, H), are written. C-contiguous float32 numpy arrays run the native
    kernel (AVX2 exp); any other floating arrays the reference in
    ``pyrt.kernel_reference``.

    >>> g = np.zeros((1, 4), np.float32); c0 = np.ones((1, 1), np.float32)
    >>> c, tc, h = (np.empty((1, 1), np.float32) for _ in range(3))
    >>> lstm_cell_forward(g, c0, c, tc, h)
    >>> g.round(3).tolist(), c.round(3).tolist()
    ([[0.5, 0.5, 0.0, 0.5]], [[0.5]])
    """
    arrays = _check_lstm("lstm_cell_forward", gates, c_prev=c_prev, c=c, tanh_c=tanh_c, h=h)
    if _runs_native(*arrays.values()):
        _C.lstm_cell_forward(gates, c_prev, c, tanh_c, h)
    else:
        with _device_current(gates):
            kernel_reference.lstm_cell_forward(gates, c_prev, c, tanh_c, h)


@traced_kernel
def lstm_cell_backward(gates: Any, c_prev: Any, tanh_c: Any, grad_h: Any, grad_h_next: Any | None,
                       grad_c: Any, grad_gates: Any) -> None:
    """Backward of :func:`lstm_cell_forward` for one step.

    ``gates`` are the activated gates (B, 4H); ``grad_h`` (and ``grad_h_next``,
    the recurrent part, or None) is dL/dh_t; ``grad_c`` holds dL/dc_t and
    becomes dL/dc_{t-1}; ``grad_gates`` (B, 4H) receives dL/d(pre-activation).
    Dispatch as in :func:`lstm_cell_forward`.

    >>> g = np.full((1, 4), 0.5, np.float32); z = np.zeros((1, 1), np.float32)
    >>> dc, dg = np.zeros((1, 1), np.float32), np.empty((1, 4), np.float32)
    >>> lstm_cell_backward(g, z, z, np.ones((1, 1), np.float32), None, dc, dg)
    >>> dg.tolist(), dc.tolist()
    ([[0.0625, 0.0, 0.1875, 0.0]], [[0.25]])
    """
    arrays = _check_lstm("lstm_cell_backward", gates, c_prev=c_prev, tanh_c=tanh_c, grad_h=grad_h,
                         grad_h_next=grad_h_next, grad_c=grad_c, grad_gates=grad_gates)
    if _runs_native(*arrays.values()):
        _C.lstm_cell_backward(gates, c_prev, tanh_c, grad_h, grad_h_next, grad_c, grad_gates)
    else:
        with _device_current(gates):
            kernel_reference.lstm_cell_backward(gates, c_prev, tanh_c, grad_h, grad_h_next, grad_c,
                                                grad_gates)
