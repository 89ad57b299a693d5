"""The CUDA int8 GEMM, row sums and activation quantizer (csrc/cuda/qgemm.cu), and the GPU path of
``pyrt.kernels``' int8 functions and ``DynamicQuantizedLinear``.

Run: pytest tests/cuda/test_cuda_int8.py
The kernel tests take ``kernel_device`` (tests/cuda/conftest.py): the kernels' own source runs on
the CPU through pyrt._cuda_emulator everywhere (mma.sync's fragments emulated per the PTX layout),
and on a GPU through pyrt._cuda where cupy and a device are present. Oracles: numpy int64 for the
integer sums, and the CPU kernel (pyrt._C), whose int32 sums and float32 epilogue the GPU kernel
must reproduce exactly, so outputs are compared for equality, not closeness. The Python-level tests
take ``gpu`` (tests/conftest.py): the CPU fake of cupy always, real cupy on a GPU machine.
"""

from __future__ import annotations

import io

import numpy as np
import pytest

import pyrt
from pyrt import _C, kernels, nn
from pyrt.quantization import per_channel_dynamic_qconfig, quantize_dynamic

TILE = 128       # the kernel's block tile in m and n
TILE_K = 64      # bytes of k per shared-memory stage
MAX_K = 132104   # kInt8GemmMaxK


# --- helpers ----------------------------------------------------------------------------------


def _view(dev, host: np.ndarray, row_pad: int = 0, offset: int = 0):
    """A device copy of a 2-D host array as a view with row stride cols + row_pad elements,
    starting `offset` elements into its buffer (misaligns the base when the item is a byte)."""
    rows, cols = host.shape
    buf = np.zeros(offset + rows * (cols + row_pad) + 1, host.dtype)
    dev_buf = dev.asarray(buf)
    view = dev_buf[offset : offset + rows * (cols + row_pad)].reshape(rows, cols + row_pad)[:, :cols]
    view[...] = dev.asarray(host)
    return view, dev_buf


def _row_sums(dev, w):
    n, k = w.shape
    sums = dev.xp.full(n, -7, dtype=dev.xp.int32)
    dev.kernels.int8_row_sums(n, k, dev.ptr(w), w.strides[0], dev.ptr(sums), dev.stream_ptr())
    return sums


def _gemm(dev, a, a_scale, a_zp, w, w_scale, bias=None, out=None, params=None):
    """out = the kernel's product for device arrays a (m, k) uint8 and w (n, k) int8 (any row
    strides); a new out (filled with NaN, so unwritten outputs show) unless one is given."""
    m, k = a.shape
    n = w.shape[0]
    if out is None:
        out = dev.xp.full((m, n), np.nan, dtype=dev.xp.float32)
    dev.kernels.int8_gemm(
        m, n, k, dev.ptr(a), a.strides[0], a_scale, a_zp, 0 if params is None else dev.ptr(params),
        dev.ptr(w), w.strides[0], dev.ptr(_row_sums(dev, w)), dev.ptr(w_scale),
        0 if bias is None else dev.ptr(bias), dev.ptr(out), out.strides[0] // 4, dev.stream_ptr(),
    )
    dev.synchronize()
    return out


def _cpu(a, a_scale, a_zp, w, w_scale, bias=None):
    """The CPU kernel's output: the bit-exact oracle."""
    return kernels.int8_gemm(a, a_scale, a_zp, kernels.pack_int8_weight(w), w_scale, bias)


def _int64_reference(a, a_scale, a_zp, w, w_scale, bias=None):
    acc = (a.astype(np.int64) - a_zp) @ w.astype(np.int64).T
    out = acc * (np.float64(np.float32(a_scale)) * w_scale.astype(np.float64))
    return out if bias is None else out + bias


def _case(rng, m, n, k, per_channel=True):
    a = rng.integers(0, 128, size=(m, k), dtype=np.uint8)
    w = rng.integers(-128, 128, size=(n, k), dtype=np.int8)
    scale = rng.uniform(0.001, 0.1, n) if per_channel else np.full(n, 0.037)
    return a, w, scale.astype(np.float32), rng.standard_normal(n).astype(np.float32)


# --- int8_gemm ------------------------------------------------------------------------------

SHAPES = [  # (m, n, k): 0, 1, 15, 16, 17, 31, 33, primes, and past one block tile / k stage
    (0, 5, 3), (5, 0, 3), (5, 3, 0), (1, 1, 1),
    (1, 15, 16), (16, 17, 15), (17, 16, 31), (15, 31, 33), (31, 33, 17),
    (2, 7, TILE_K), (3, 5, TILE_K + 1), (33, 1, 2 * TILE_K - 1), (7, 13, 97),
    (TILE + 1, 9, 19), (5, TILE + 3, 37), (TILE + 2, TILE + 7, 2 * TILE_K + 3),
]


@pytest.mark.parametrize(("m", "n", "k"), SHAPES)
def test_equals_cpu_kernel_and_int64_reference(kernel_device, m, n, k):
    dev = kernel_device
    rng = np.random.default_rng(m * 10007 + n * 101 + k)
    a, w, scale, bias = _case(rng, m, n, k)
    got = dev.asnumpy(_gemm(dev, dev.asarray(a), 0.021, 13, dev.asarray(w), dev.asarray(scale),
                            dev.asarray(bias)))
    cpu = _cpu(a, 0.021, 13, w, scale, bias)
    assert got.shape == (m, n) and got.dtype == np.float32
    np.testing.assert_array_equal(got, cpu)  # same int32 sums, same epilogue: the same floats
    np.testing.assert_allclose(got, _int64_reference(a, 0.021, 13, w, scale, bias), rtol=2e-6, atol=1e-5)


@pytest.mark.parametrize("zero_point", [0, 127])
@pytest.mark.parametrize("per_channel", [True, False])
@pytest.mark.parametrize("with_bias", [True, False])
def test_zero_points_scales_and_bias(kernel_device, zero_point, per_channel, with_bias):
    dev = kernel_device
    rng = np.random.default_rng(zero_point + 2 * per_channel + 4 * with_bias)
    m, n, k = 19, 45, 83
    a, w, scale, bias = _case(rng, m, n, k, per_channel)
    bias = bias if with_bias else None
    got = _gemm(dev, dev.asarray(a), 0.5, zero_point, dev.asarray(w), dev.asarray(scale),
                None if bias is None else dev.asarray(bias))
    np.testing.assert_array_equal(dev.asnumpy(got), _cpu(a, 0.5, zero_point, w, scale, bias))


def test_int32_sums_are_exact(kernel_device):
    # Unit scales and no bias: out is float32(sum), exact below 2**24, so this compares the
    # tensor-core sums with numpy's int64 ones bit for bit, extreme codes included.
    dev = kernel_device
    rng = np.random.default_rng(11)
    m, n, k = 21, 40, 3 * TILE_K + 5
    a = rng.choice(np.array([0, 1, 126, 127], np.uint8), size=(m, k))
    w = rng.choice(np.array([-128, -127, -1, 0, 1, 127], np.int8), size=(n, k))
    a[0], w[0] = 127, -128  # the most negative product in every term
    ones = np.ones(n, np.float32)
    got = dev.asnumpy(_gemm(dev, dev.asarray(a), 1.0, 0, dev.asarray(w), dev.asarray(ones)))
    want = a.astype(np.int64) @ w.astype(np.int64).T
    np.testing.assert_array_equal(got, want.astype(np.float32))
    assert got[0, 0] == -127 * 128 * k


def test_any_uint8_code_is_exact(kernel_device):
    # A is multiplied as .u8: codes 128..255 (which the CPU refuses) are exact too, not read as
    # negative int8.
    dev = kernel_device
    rng = np.random.default_rng(12)
    m, n, k = 11, 9, 45
    a = rng.integers(0, 256, size=(m, k), dtype=np.uint8)
    a[0] = 255
    w = rng.integers(-128, 128, size=(n, k), dtype=np.int8)
    w[0] = -128
    ones = np.ones(n, np.float32)
    got = dev.asnumpy(_gemm(dev, dev.asarray(a), 1.0, 0, dev.asarray(w), dev.asarray(ones)))
    np.testing.assert_array_equal(got, (a.astype(np.int64) @ w.astype(np.int64).T).astype(np.float32))
    assert got[0, 0] == -255 * 128 * k


def test_k_at_the_overflow_guard_is_exact_and_past_it_refused(kernel_device):
    # The largest k the guard allows, with the codes that drive the int32 accumulator and the
    # zero-point difference to their extremes: acc = -127 * 128 * k and
    # acc - zp * rowsum = 127 * 128 * k = 2147482624, 1024 below 2**31. (The slowest test on the
    # emulator, ~40 s: one row of blocks, but 2065 k stages.)
    dev = kernel_device
    k = MAX_K
    assert int(dev.kernels.int8_gemm_max_k) == k
    a = np.zeros((2, k), np.uint8)
    a[0] = 127
    w = np.stack([np.full(k, -128, np.int8), np.full(k, 127, np.int8)])
    ones = np.ones(2, np.float32)
    # Row stride padded to 16 bytes (k is 8 mod 16), so the copies take the cp.async path.
    a_dev, _ = _view(dev, a, row_pad=8)
    w_dev, _ = _view(dev, w, row_pad=8)
    got = dev.asnumpy(_gemm(dev, a_dev, 1.0, 127, w_dev, dev.asarray(ones)))
    want = (a.astype(np.int64) - 127) @ w.astype(np.int64).T
    assert want[1, 0] == 2147482624
    np.testing.assert_array_equal(got, want.astype(np.float32))
    np.testing.assert_array_equal(got, _cpu(a, 1.0, 127, w, ones))

    with pytest.raises(ValueError, match=r"k = 132105 exceeds kInt8GemmMaxK = 132104"):
        dev.kernels.int8_gemm(1, 1, k + 1, 0, k + 1, 1.0, 0, 0, 0, k + 1, 0, 0, 0, 0, 1, 0)


@pytest.mark.parametrize(("row_pad", "offset"), [(0, 0), (1, 0), (16, 3), (5, 1), (48, 16)])
def test_row_strides_and_misaligned_bases(kernel_device, row_pad, offset):
    # A row stride or base that is not a multiple of 16 bytes takes the byte-wise copy; a
    # padded stride with an aligned base takes cp.async. Both must give the same floats, and
    # out (a view with a longer row stride) must be written inside its view only.
    dev = kernel_device
    rng = np.random.default_rng(row_pad * 31 + offset)
    m, n, k = 18, 21, 2 * TILE_K + 13
    a, w, scale, bias = _case(rng, m, n, k)
    a_dev, _ = _view(dev, a, row_pad, offset)
    w_dev, _ = _view(dev, w, row_pad, offset)
    out_host = np.full((m, n + 3), 42.0, np.float32)
    out_buf = dev.asarray(out_host)
    got = _gemm(dev, a_dev, 0.25, 64, w_dev, dev.asarray(scale), dev.asarray(bias), out=out_buf[:, 1 : n + 1])
    np.testing.assert_array_equal(dev.asnumpy(got), _cpu(a, 0.25, 64, w, scale, bias))
    around = dev.asnumpy(out_buf)
    assert (around[:, 0] == 42.0).all() and (around[:, n + 1 :] == 42.0).all()


def test_parameters_read_from_the_quantizer_workspace(kernel_device):
    # a_params: the GEMM reads scale and zero point that quantize_u8 left in device memory
    # (the arguments are ignored, even an out-of-range zero point).
    dev = kernel_device
    rng = np.random.default_rng(5)
    m, n, k = 9, 20, 70
    x = (rng.standard_normal((m, k)) * 2 + 0.5).astype(np.float32)
    _, w, scale, bias = _case(rng, m, n, k)
    q_cpu, s_cpu, zp_cpu = kernels.quantize_u8(x)
    workspace = dev.xp.zeros(int(dev.kernels.quantize_u8_workspace_words), dtype=dev.xp.int32)
    q = dev.xp.zeros((m, k), dtype=dev.xp.uint8)
    x_dev = dev.asarray(x)
    dev.kernels.quantize_u8(m, k, dev.ptr(x_dev), k, 1, dev.ptr(q), k, dev.ptr(workspace), dev.stream_ptr())
    got = _gemm(dev, q, 123.0, 999, dev.asarray(w), dev.asarray(scale), dev.asarray(bias), params=workspace)
    np.testing.assert_array_equal(dev.asnumpy(got), _cpu(q_cpu, s_cpu, zp_cpu, w, scale, bias))


def test_argument_errors(kernel_device):
    gemm = kernel_device.kernels.int8_gemm
    with pytest.raises(ValueError, match="m = -1 is negative"):
        gemm(-1, 1, 1, 0, 1, 1.0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0)
    with pytest.raises(ValueError, match="k = -2 is negative"):
        gemm(1, 1, -2, 0, 1, 1.0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0)
    for zp in (-1, 128):
        with pytest.raises(ValueError, match=rf"a_zero_point = {zp} is outside \[0, 127\]"):
            gemm(1, 1, 1, 0, 1, 1.0, zp, 0, 0, 1, 0, 0, 0, 0, 1, 0)
    with pytest.raises(ValueError, match="n = -3 is negative"):
        kernel_device.kernels.int8_row_sums(-3, 1, 0, 1, 0, 0)
    with pytest.raises(ValueError, match="k = -1 is negative"):
        kernel_device.kernels.quantize_u8(1, -1, 0, 1, 1, 0, 1, 0, 0)


@pytest.mark.parametrize(("n", "k", "row_pad"), [(0, 5, 0), (1, 1, 0), (9, 0, 0), (33, 31, 1), (70, 300, 16)])
def test_row_sums(kernel_device, n, k, row_pad):
    dev = kernel_device
    w = np.random.default_rng(n + k).integers(-128, 128, size=(n, k), dtype=np.int8)
    if n:
        w[0] = -128
    w_dev, _ = _view(dev, w, row_pad)
    np.testing.assert_array_equal(dev.asnumpy(_row_sums(dev, w_dev)), w.astype(np.int64).sum(axis=1))


# --- quantize_u8 ----------------------------------------------------------------------------


def _quantize(dev, x, row_pad: int = 0):
    """Codes (host, padded rows cut off) and the 4 parameter words after the GPU quantizer."""
    m, k = x.shape
    workspace = dev.xp.full(int(dev.kernels.quantize_u8_workspace_words), -1, dtype=dev.xp.int32)
    out = dev.xp.full((m, k + row_pad), 200, dtype=dev.xp.uint8)
    dev.kernels.quantize_u8(m, k, dev.ptr(x), x.strides[0] // 4, x.strides[1] // 4, dev.ptr(out),
                            k + row_pad, dev.ptr(workspace), dev.stream_ptr())
    dev.synchronize()
    params = dev.asnumpy(workspace[:4])
    return dev.asnumpy(out), params


def _params(words):
    scale, inv_scale = words[[0, 2]].view(np.float32)
    return float(scale), int(words[1]), float(inv_scale), int(words[3])


DISTRIBUTIONS = {
    "normal": lambda rng, s: rng.standard_normal(s) * 3,
    "positive": lambda rng, s: rng.uniform(0.5, 4.0, s),
    "negative": lambda rng, s: -rng.uniform(0.5, 4.0, s),
    "zeros": lambda rng, s: np.zeros(s),
    "constant": lambda rng, s: np.full(s, 2.5),
    "tiny_positive": lambda rng, s: rng.uniform(0, 1e-4, s),      # small-scale branch, min == 0
    "tiny_negative": lambda rng, s: -rng.uniform(0, 1e-4, s),     # small-scale branch, max == 0
    "tiny_mixed": lambda rng, s: rng.uniform(-1e-4, 1e-4, s),     # small-scale branch, amplified
    "huge": lambda rng, s: rng.uniform(-3e38, 3e38, s),
    "denormal": lambda rng, s: rng.uniform(-1e-40, 1e-40, s),    # scale rounds to 0: 0.1 instead
    "halves": lambda rng, s: rng.integers(-40, 40, s) / 2.0,     # ties in the rounding
}


@pytest.mark.parametrize("dist", sorted(DISTRIBUTIONS))
@pytest.mark.parametrize(("m", "k"), [(0, 3), (3, 0), (1, 1), (7, 13), (40, 130)])
def test_quantizer_equals_cpu(kernel_device, dist, m, k):
    dev = kernel_device
    rng = np.random.default_rng(len(dist) * 1000 + m * 31 + k)
    x = DISTRIBUTIONS[dist](rng, (m, k)).astype(np.float32)
    q, words = _quantize(dev, dev.asarray(x))
    q_cpu, scale, zero_point = kernels.quantize_u8(x)
    got_scale, got_zp, got_inv, finite = _params(words)
    assert (got_scale, got_zp, finite) == (scale, zero_point, 1)
    assert got_inv == np.float32(1) / np.float32(scale)
    np.testing.assert_array_equal(q, q_cpu)


@pytest.mark.parametrize("layout", ["transposed", "slice"])
def test_quantizer_strided_input_and_padded_output(kernel_device, layout):
    dev = kernel_device
    rng = np.random.default_rng(3)
    m, k = 23, 37
    if layout == "transposed":
        host = (rng.standard_normal((k, m)) * 2).astype(np.float32)
        x, x_dev = host.T, dev.asarray(host).T
    else:
        host = (rng.standard_normal((2 * m + 1, 3 * k + 2)) * 2).astype(np.float32)
        x, x_dev = host[1::2, ::3][:m, :k], dev.asarray(host)[1::2, ::3][:m, :k]
    q, words = _quantize(dev, x_dev, row_pad=11)
    q_cpu, scale, zero_point = kernels.quantize_u8(np.ascontiguousarray(x))
    assert _params(words)[:2] == (scale, zero_point)
    np.testing.assert_array_equal(q[:, :k], q_cpu)
    assert (q[:, k:] == 200).all()  # the padding is not written


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_quantizer_non_finite_input(kernel_device, bad):
    # Not an error on the device (that needs a wait); the parameters say so and a GEMM that
    # reads them outputs NaN. pyrt.kernels.quantize_u8 turns finite == 0 into ValueError.
    dev = kernel_device
    x = np.linspace(-1, 1, 60, dtype=np.float32).reshape(6, 10)
    x[4, 7] = bad
    q, words = _quantize(dev, dev.asarray(x))
    scale, _, _, finite = _params(words)
    assert finite == 0 and np.isnan(scale)
    w = np.ones((3, 10), np.int8)
    out = _gemm(dev, dev.asarray(q), 1.0, 0, dev.asarray(w), dev.asarray(np.ones(3, np.float32)),
                params=dev.asarray(words))
    assert np.isnan(dev.asnumpy(out)).all()


def test_quantizer_many_blocks(kernel_device):
    # More elements than one min/max block covers (1024), with the extremes in the last block.
    dev = kernel_device
    rng = np.random.default_rng(8)
    x = rng.uniform(-1, 1, (33, 100)).astype(np.float32)
    x[-1, -1], x[-1, -2] = 7.5, -3.25
    q, words = _quantize(dev, dev.asarray(x))
    q_cpu, scale, zero_point = kernels.quantize_u8(x)
    assert _params(words)[:2] == (scale, zero_point)
    np.testing.assert_array_equal(q, q_cpu)


# --- pyrt.kernels on cupy arrays (the fake GPU, and a real one where present) -----------------


def _host(x):
    return x.get() if hasattr(x, "get") else x


def test_kernels_dispatch_cupy_to_the_gpu(gpu):
    rng = np.random.default_rng(1)
    m, n, k = 6, 19, 50
    x = (rng.standard_normal((m, k)) * 1.5).astype(np.float32)
    _, w, scale, bias = _case(rng, m, n, k)
    packed = kernels.pack_int8_weight(gpu.asarray(w))
    assert isinstance(packed, kernels.CudaPackedInt8Weight)
    assert (packed.n, packed.k) == (n, k)
    assert packed.nbytes == n * 64 + 4 * n  # rows padded to 16 bytes, plus int32 row sums
    np.testing.assert_array_equal(_host(packed.row_sums), w.astype(np.int64).sum(axis=1))

    q, s, zp = kernels.quantize_u8(gpu.asarray(x))
    q_cpu, s_cpu, zp_cpu = kernels.quantize_u8(x)
    assert isinstance(q, gpu.ndarray) and (s, zp) == (s_cpu, zp_cpu)
    np.testing.assert_array_equal(_host(q), q_cpu)

    out = kernels.int8_gemm(q, s, zp, packed, gpu.asarray(scale), gpu.asarray(bias))
    assert isinstance(out, gpu.ndarray)
    want = kernels.int8_gemm(q_cpu, s_cpu, zp_cpu, kernels.pack_int8_weight(w), scale, bias)
    np.testing.assert_array_equal(_host(out), want)

    cpu_packed = kernels.pack_int8_weight(w)
    y = kernels.dynamic_linear(gpu.asarray(x), packed, gpu.asarray(scale), gpu.asarray(bias))
    np.testing.assert_array_equal(_host(y), kernels.dynamic_linear(x, cpu_packed, scale, bias))
    y = kernels.dynamic_linear(gpu.asarray(x), packed, gpu.asarray(scale))  # no bias
    np.testing.assert_array_equal(_host(y), kernels.dynamic_linear(x, cpu_packed, scale))


def test_int8_gemm_into_out_and_from_a_strided_a(gpu):
    rng = np.random.default_rng(2)
    m, n, k = 5, 7, 33
    a, w, scale, bias = _case(rng, m, n, k)
    wide = gpu.asarray(np.concatenate([a, a], axis=1))
    a_cols = gpu.asarray(a.T.copy()).T  # column stride m: copied to whole rows first
    out_buf = gpu.zeros((m, n + 2), dtype=gpu.float32)
    packed = kernels.pack_int8_weight(gpu.asarray(w))
    want = _cpu(a, 0.1, 3, w, scale, bias)
    for a_dev in (wide[:, :k], a_cols):
        got = kernels.int8_gemm(a_dev, 0.1, 3, packed, gpu.asarray(scale), gpu.asarray(bias),
                                out=out_buf[:, 1 : n + 1])
        np.testing.assert_array_equal(_host(got), want)
    assert (_host(out_buf)[:, [0, n + 1]] == 0).all()


def test_errors_on_the_gpu_path(gpu):
    w = np.ones((4, 8), np.int8)
    packed_gpu = kernels.pack_int8_weight(gpu.asarray(w))
    packed_cpu = kernels.pack_int8_weight(w)
    a = np.ones((2, 8), np.uint8)
    scales = np.ones(4, np.float32)
    with pytest.raises(TypeError, match="packed on the CPU"):
        kernels.int8_gemm(gpu.asarray(a), 1.0, 0, packed_cpu, gpu.asarray(scales))
    with pytest.raises(TypeError, match=r"w is packed on cuda:0 but the input is a numpy array"):
        kernels.int8_gemm(a, 1.0, 0, packed_gpu, scales)
    with pytest.raises(TypeError, match=r"w_scales is a numpy\.ndarray but a_q is a cupy array"):
        kernels.int8_gemm(gpu.asarray(a), 1.0, 0, packed_gpu, scales)
    with pytest.raises(TypeError, match=r"bias is a numpy\.ndarray but a_q is a cupy array"):
        kernels.int8_gemm(gpu.asarray(a), 1.0, 0, packed_gpu, gpu.asarray(scales), scales)
    with pytest.raises(TypeError, match="other operands are on the CPU"):
        kernels.int8_gemm(a, 1.0, 0, packed_cpu, gpu.asarray(scales))
    with pytest.raises(TypeError, match="2-D uint8"):
        kernels.int8_gemm(gpu.asarray(a.astype(np.int8)), 1.0, 0, packed_gpu, gpu.asarray(scales))
    with pytest.raises(ValueError, match=r"inner dimensions 6 != 8"):
        kernels.int8_gemm(gpu.asarray(a[:, :6]), 1.0, 0, packed_gpu, gpu.asarray(scales))
    with pytest.raises(ValueError, match=r"w_scales is \(3,\)"):
        kernels.int8_gemm(gpu.asarray(a), 1.0, 0, packed_gpu, gpu.asarray(scales[:3]))
    with pytest.raises(ValueError, match=r"outside \[0, 127\]"):
        kernels.int8_gemm(gpu.asarray(a), 1.0, 128, packed_gpu, gpu.asarray(scales))
    # Codes above 127 are exact on the GPU up to k = 65793 (test_any_uint8_code_is_exact), refused
    # beyond, where only 7-bit codes keep the int32 sums from overflowing.
    big_k = 65794
    with pytest.raises(ValueError, match=r"activations must be in \[0, 127\]"):
        kernels.int8_gemm(gpu.full((1, big_k), 200, dtype=gpu.uint8), 1.0, 0,
                          kernels.pack_int8_weight(gpu.zeros((1, big_k), dtype=gpu.int8)),
                          gpu.asarray(np.ones(1, np.float32)))
    with pytest.raises(ValueError, match=r"out is \(2, 5\) float32"):
        kernels.int8_gemm(gpu.asarray(a), 1.0, 0, packed_gpu, gpu.asarray(scales),
                          out=gpu.zeros((2, 5), dtype=gpu.float32))
    with pytest.raises(TypeError, match="2-D int8"):
        kernels.pack_int8_weight(gpu.asarray(w.astype(np.float32)))
    with pytest.raises(ValueError, match="exceeds kInt8GemmMaxK"):
        kernels.pack_int8_weight(gpu.zeros((1, MAX_K + 1), dtype=gpu.int8))
    with pytest.raises(TypeError, match="2-D float32"):
        kernels.quantize_u8(gpu.asarray(np.ones(8, np.float32)))
    with pytest.raises(ValueError, match="NaN or infinity"):
        kernels.quantize_u8(gpu.asarray(np.array([[1.0, np.nan]], np.float32)))
    with pytest.raises(TypeError, match="packed on the CPU"):
        kernels.dynamic_linear(gpu.asarray(np.ones((2, 8), np.float32)), packed_cpu, gpu.asarray(scales))
    with pytest.raises(ValueError, match=r"inner dimensions 5 != 8"):
        kernels.dynamic_linear(gpu.asarray(np.ones((2, 5), np.float32)), packed_gpu, gpu.asarray(scales))


def test_operands_on_different_gpus_are_refused(fake_gpu):
    cp = fake_gpu
    packed = kernels.pack_int8_weight(cp.asarray(np.ones((4, 8), np.int8)))  # on cuda:0
    with cp.cuda.Device(1):
        a = cp.asarray(np.ones((2, 8), np.uint8))
        x = cp.asarray(np.ones((2, 8), np.float32))
        scales = cp.asarray(np.ones(4, np.float32))
    with pytest.raises(ValueError, match=r"different GPUs \(a_q: cuda:1, w: cuda:0\)"):
        kernels.int8_gemm(a, 1.0, 0, packed, scales)
    with pytest.raises(ValueError, match=r"different GPUs \(x: cuda:1, w: cuda:0\)"):
        kernels.dynamic_linear(x, packed, scales)


def test_dynamic_linear_on_the_gpu_gives_nan_for_non_finite_input(gpu):
    # No wait for the GPU in dynamic_linear, so no ValueError as on the CPU: NaN outputs instead.
    packed = kernels.pack_int8_weight(gpu.asarray(np.ones((3, 4), np.int8)))
    x = np.array([[1.0, np.inf, 0.0, 2.0]], np.float32)
    y = kernels.dynamic_linear(gpu.asarray(x), packed, gpu.asarray(np.ones(3, np.float32)))
    assert np.isnan(_host(y)).all()


def test_packing_a_cuda_1_weight_stays_there(fake_gpu):
    cp = fake_gpu
    w = np.arange(-12, 12, dtype=np.int8).reshape(3, 8)
    with cp.cuda.Device(1):
        w_dev = cp.asarray(w)
    packed = kernels.pack_int8_weight(w_dev)
    assert packed.device.id == 1 and packed.row_sums.device.id == 1
    assert repr(packed) == "CudaPackedInt8Weight(n=3, k=8, device=cuda:1)"
    with cp.cuda.Device(1):
        y = kernels.dynamic_linear(cp.asarray(np.ones((2, 8), np.float32)), packed,
                                   cp.asarray(np.ones(3, np.float32)))
    assert y.device.id == 1
    np.testing.assert_array_equal(
        y.get(), kernels.dynamic_linear(np.ones((2, 8), np.float32), kernels.pack_int8_weight(w),
                                        np.ones(3, np.float32)))


# --- DynamicQuantizedLinear on "cuda" ---------------------------------------------------------


def _mlp(per_channel: bool = False):
    pyrt.manual_seed(3)
    model = nn.Sequential(nn.Linear(64, 48), nn.ReLU(), nn.Linear(48, 32), nn.ReLU(), nn.Linear(32, 10))
    spec = {nn.Linear: per_channel_dynamic_qconfig} if per_channel else {nn.Linear}
    return model, spec


@pytest.mark.parametrize("per_channel", [False, True])
@pytest.mark.parametrize("how", ["move_after_quantize", "quantize_cuda_model"])
def test_quantized_mlp_on_cuda_equals_cpu(gpu, per_channel, how):
    model, spec = _mlp(per_channel)
    x = np.random.default_rng(4).standard_normal((17, 64)).astype(np.float32)
    qcpu = quantize_dynamic(model, spec, dtype=pyrt.qint8)
    if how == "move_after_quantize":
        qgpu = quantize_dynamic(model, spec, dtype=pyrt.qint8).to("cuda")
    else:
        qgpu = quantize_dynamic(model.to("cuda"), spec, dtype=pyrt.qint8)
    layer = qgpu[0]
    assert layer.weight.device == "cuda:0" and layer.scale.device == "cuda:0"
    assert isinstance(layer.weight.packed(), kernels.CudaPackedInt8Weight)
    with pyrt.no_grad():
        want = qcpu(pyrt.tensor(x))
        got = qgpu(pyrt.tensor(x).to("cuda"))
    assert got.device == "cuda:0"
    # Identical weight codes and activation parameters, identical int32 sums and epilogue:
    # the outputs agree to the last bit, not merely within int8 rounding.
    np.testing.assert_array_equal(got.cpu().data, want.data)
    # ... while the float model differs from both by the int8 rounding.
    with pyrt.no_grad():
        float_out = model.to("cpu")(pyrt.tensor(x)).data
    assert 0 < np.abs(float_out - want.data).max() < 0.1


def test_quantized_model_state_dict_and_save_on_cuda(gpu):
    model, spec = _mlp()
    qgpu = quantize_dynamic(model, spec, dtype=pyrt.qint8).to("cuda")
    state = qgpu.state_dict()
    assert state["0.weight"].dtype == np.int8 and state["0.weight"].device == "cuda:0"
    buffer = io.BytesIO()
    pyrt.save(qgpu.state_dict(), buffer)
    buffer.seek(0)
    loaded = pyrt.load(buffer)
    assert loaded["0.weight"].device == "cpu" and loaded["0.weight"].dtype == np.int8  # host copies
    qcpu = quantize_dynamic(_mlp()[0], spec, dtype=pyrt.qint8)
    qcpu[0].weight.data[...] = 0  # made different, then restored from the GPU model's checkpoint
    qcpu.load_state_dict(loaded)
    x = np.random.default_rng(6).standard_normal((3, 64)).astype(np.float32)
    with pyrt.no_grad():
        np.testing.assert_array_equal(qgpu(pyrt.tensor(x).cuda()).cpu().data, qcpu(pyrt.tensor(x)).data)
    # And a CPU checkpoint into the GPU model: the packed GPU weight is rebuilt from the new codes.
    qgpu[2].weight.packed()
    state = qcpu.state_dict()
    state["2.weight"] = pyrt.tensor(np.ones((32, 48), np.int8))
    qgpu.load_state_dict(state)
    assert not qgpu[2].weight.is_packed()
    with pyrt.no_grad():
        qcpu.load_state_dict(state)
        np.testing.assert_array_equal(qgpu(pyrt.tensor(x).cuda()).cpu().data, qcpu(pyrt.tensor(x)).data)


def test_quantized_layer_device_mismatch_is_a_clear_error(gpu):
    model, spec = _mlp()
    qcpu = quantize_dynamic(model, spec, dtype=pyrt.qint8)
    with pytest.raises(TypeError, match="packed on the CPU"), pyrt.no_grad():
        qcpu(pyrt.tensor(np.ones((2, 64), np.float32)).to("cuda"))
    qgpu = quantize_dynamic(model, spec, dtype=pyrt.qint8).to("cuda")
    with pytest.raises(TypeError, match=r"packed on cuda:0 but the input is a numpy array"), pyrt.no_grad():
        qgpu(pyrt.tensor(np.ones((2, 64), np.float32)))


def test_moving_back_to_the_cpu_repacks(gpu):
    model, spec = _mlp()
    q = quantize_dynamic(model, spec, dtype=pyrt.qint8).to("cuda")
    x = np.ones((2, 64), np.float32)
    with pyrt.no_grad():
        on_gpu = q(pyrt.tensor(x).cuda()).cpu().data
        q.to("cpu")
        assert isinstance(q[0].weight.packed(), _C.PackedInt8Weight)
        np.testing.assert_array_equal(q(pyrt.tensor(x)).data, on_gpu)
