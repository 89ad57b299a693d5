"""int8 GEMM and dynamic activation quantization against exact integer references."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyrt import kernels


def reference(a_q, a_scale, a_zp, w_q, w_scales, bias=None) -> np.ndarray:
    acc = (a_q.astype(np.int64) - a_zp) @ w_q.astype(np.int64).T  # exact
    out = acc.astype(np.float64) * (np.float64(np.float32(a_scale)) * w_scales.astype(np.float64))
    return out if bias is None else out + bias


def assert_matches(out, expected) -> None:
    # The kernel's int32 accumulators are exact; only the float epilogue rounds.
    np.testing.assert_allclose(out, expected, rtol=2e-6, atol=1e-5)


def random_case(rng, m, k, n):
    a_q = rng.integers(0, 128, size=(m, k), dtype=np.uint8)
    w_q = rng.integers(-128, 128, size=(n, k), dtype=np.int8)
    w_scales = rng.uniform(0.001, 0.1, n).astype(np.float32)
    bias = rng.standard_normal(n).astype(np.float32)
    return a_q, w_q, w_scales, bias


@pytest.mark.parametrize("m", [0, 1, 2, 5, 7, 64])
@pytest.mark.parametrize("k", [0, 1, 3, 4, 31, 1029])
@pytest.mark.parametrize("n", [0, 1, 17, 33])
def test_edge_shapes_match_integer_reference(m, k, n, rng) -> None:
    a_q, w_q, w_scales, bias = random_case(rng, m, k, n)
    out = kernels.int8_gemm(a_q, 0.02, 13, kernels.pack_int8_weight(w_q), w_scales, bias)
    assert out.shape == (m, n) and out.dtype == np.float32
    assert_matches(out, reference(a_q, 0.02, 13, w_q, w_scales, bias))


@pytest.mark.parametrize("w_value", [-128, 127])
@pytest.mark.parametrize("zero_point", [0, 64, 127])
def test_saturation_extremes_are_exact(w_value, zero_point) -> None:
    """The largest products vpmaddubsw sees: 127 x -128 pairs must not saturate int16."""
    k, n = 4096, 16
    a_q = np.full((6, k), 127, np.uint8)
    a_q[1] = 0
    w_q = np.full((n, k), w_value, np.int8)
    w_q[3, ::2] = -w_value - 1 if w_value == 127 else 127  # alternating signs in one row
    scales = np.ones(n, np.float32)
    out = kernels.int8_gemm(a_q, 1.0, zero_point, kernels.pack_int8_weight(w_q), scales)
    assert_matches(out, reference(a_q, 1.0, zero_point, w_q, scales))


def test_activation_codes_above_127_are_rejected() -> None:
    w = kernels.pack_int8_weight(np.ones((2, 3), np.int8))
    with pytest.raises(ValueError, match="127"):
        kernels.int8_gemm(np.full((1, 3), 200, np.uint8), 1.0, 0, w, np.ones(2, np.float32))


def test_per_tensor_scale_and_strided_rows(rng) -> None:
    a_q, w_q, _, _ = random_case(rng, 9, 40, 5)
    wide = np.zeros((9, 64), np.uint8)
    wide[:, :40] = a_q
    scales = np.full(5, 0.05, np.float32)
    out = kernels.int8_gemm(wide[:, :40], 0.1, 7, kernels.pack_int8_weight(w_q.T.copy().T), scales)
    assert_matches(out, reference(a_q, 0.1, 7, w_q, scales))


@settings(max_examples=40, deadline=None)
@given(m=st.integers(0, 40), k=st.integers(0, 300), n=st.integers(0, 40),
       zero_point=st.integers(0, 127), seed=st.integers(0, 2**16))
def test_random_shapes_property(m, k, n, zero_point, seed) -> None:
    rng = np.random.default_rng(seed)
    a_q, w_q, w_scales, bias = random_case(rng, m, k, n)
    out = kernels.int8_gemm(a_q, 0.03, zero_point, kernels.pack_int8_weight(w_q), w_scales, bias)
    assert_matches(out, reference(a_q, 0.03, zero_point, w_q, w_scales, bias))


def test_quantize_u8_follows_pytorch_dynamic_parameters(rng) -> None:
    x = rng.uniform(-2.0, 3.0, size=(8, 33)).astype(np.float32)
    q, scale, zero_point = kernels.quantize_u8(x)
    low, high = min(float(x.min()), 0.0), max(float(x.max()), 0.0)
    assert scale == pytest.approx((high - low) / 127, rel=1e-6)
    assert zero_point == round(-low / scale)
    assert q.dtype == np.uint8 and q.max() <= 127
    np.testing.assert_allclose(scale * (q.astype(np.float64) - zero_point), x, atol=scale / 2 + 1e-6)


@pytest.mark.parametrize(("values", "zero_point"), [([[1.0, 2.0, 0.0]], 0),
                                                    ([[-1.0, -3.0, 0.0]], 127)])
def test_quantize_u8_keeps_zero_exact(values, zero_point) -> None:
    q, scale, zp = kernels.quantize_u8(np.array(values, np.float32))
    assert zp == zero_point and scale > 0
    assert q[0, 2] == zp  # 0.0 maps exactly to the zero point: padding stays exact


def test_quantize_u8_rejects_non_finite() -> None:
    with pytest.raises(ValueError):
        kernels.quantize_u8(np.array([[1.0, np.nan]], np.float32))


def test_dynamic_linear_approximates_float_linear(rng) -> None:
    x = rng.standard_normal((16, 64)).astype(np.float32)
    w = rng.standard_normal((10, 64)).astype(np.float32) * 0.1
    w_scales = (np.abs(w).max(axis=1) / 127).astype(np.float32)
    w_q = np.round(w / w_scales[:, None]).astype(np.int8)
    y = kernels.dynamic_linear(x, kernels.pack_int8_weight(w_q), w_scales)
    np.testing.assert_allclose(y, x @ w.T, atol=0.05)


def test_portable_int8_kernel_is_bit_identical(rng, run_python) -> None:
    code = (
        "import numpy as np; from pyrt import kernels\n"
        "assert kernels.int8_gemm_kernel_name() == 'portable'\n"
        "r = np.random.default_rng(1)\n"
        "a = r.integers(0, 128, (7, 1029), dtype=np.uint8)\n"
        "w = r.integers(-128, 128, (33, 1029), dtype=np.int8)\n"
        "out = kernels.int8_gemm(a, 1.0, 5, kernels.pack_int8_weight(w), np.ones(33, np.float32))\n"
        "ref = (a.astype(np.int64) - 5) @ w.astype(np.int64).T\n"
        "assert (out == ref.astype(np.float32)).all()\n"
    )
    run_python("-c", code, env={"PYRT_DISABLE_AVX2": "1"})


def test_errors_name_the_shapes() -> None:
    w = kernels.pack_int8_weight(np.ones((4, 8), np.int8))
    with pytest.raises(ValueError, match=r"inner dimensions 6 != 8"):
        kernels.int8_gemm(np.ones((2, 6), np.uint8), 1.0, 0, w, np.ones(4, np.float32))
    with pytest.raises(TypeError, match="uint8"):
        kernels.int8_gemm(np.ones((2, 8), np.int8), 1.0, 0, w, np.ones(4, np.float32))
    with pytest.raises(ValueError, match=r"w_scales is \(3,\)"):
        kernels.int8_gemm(np.ones((2, 8), np.uint8), 1.0, 0, w, np.ones(3, np.float32))
    with pytest.raises(TypeError, match="2-D int8"):
        kernels.pack_int8_weight(np.ones((4, 8), np.float32))
    with pytest.raises(TypeError, match="2-D float32"):
        kernels.quantize_u8(np.ones(8, np.float32))
