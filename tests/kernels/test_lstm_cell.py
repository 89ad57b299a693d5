"""The LSTM cell kernels: the native float32 pass against the equations and against the
plain reference (``pyrt.kernel_reference``) that ``pyrt.kernels`` runs for every other
array, and the float32 LSTM layer against float64."""

from __future__ import annotations

import numpy as np
import pytest

import pyrt
from pyrt import kernels


def sigmoid(x):
    return 1 / (1 + np.exp(-x))


def reference_forward(pre, c_prev):
    h = c_prev.shape[1]
    i, f, g, o = (sigmoid(pre[:, :h]), sigmoid(pre[:, h:2 * h]), np.tanh(pre[:, 2 * h:3 * h]),
                  sigmoid(pre[:, 3 * h:]))
    c = f * c_prev + i * g
    return np.concatenate([i, f, g, o], axis=1), c, np.tanh(c), o * np.tanh(c)


@pytest.mark.parametrize(("batch", "hidden"), [(1, 1), (3, 7), (64, 128), (5, 33), (0, 4), (2, 8)])
def test_forward_matches_the_equations(batch, hidden, rng) -> None:
    pre = (rng.standard_normal((batch, 4 * hidden)) * 4).astype(np.float32)
    pre[:, :2] = [30.0, -30.0]  # saturated gates
    c_prev = rng.standard_normal((batch, hidden)).astype(np.float32)
    gates = pre.copy()
    c, tanh_c, h = (np.empty((batch, hidden), np.float32) for _ in range(3))
    kernels.lstm_cell_forward(gates, c_prev, c, tanh_c, h)
    for ours, ref in zip((gates, c, tanh_c, h), reference_forward(pre.astype(np.float64), c_prev),
                         strict=True):
        np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=2e-6)


@pytest.mark.parametrize("with_next", [False, True])
def test_backward_matches_the_equations(with_next, rng) -> None:
    batch, hidden = 6, 19
    gates, _, _, _ = reference_forward(rng.standard_normal((batch, 4 * hidden)),
                                       np.zeros((batch, hidden)))
    gates = gates.astype(np.float32)
    c_prev, tanh_c, grad_h, grad_next, grad_c = (
        rng.standard_normal((batch, hidden)).astype(np.float32) for _ in range(5))
    tanh_c = np.tanh(tanh_c)
    d_c = grad_c.copy()
    d_gates = np.empty_like(gates)
    kernels.lstm_cell_backward(gates, c_prev, tanh_c, grad_h, grad_next if with_next else None, d_c,
                               d_gates)
    i, f, g, o = np.split(gates.astype(np.float64), 4, axis=1)
    dh = grad_h + (grad_next if with_next else 0)
    dc = grad_c + dh * o * (1 - tanh_c**2)
    expected = np.concatenate([dc * g * i * (1 - i), dc * c_prev * f * (1 - f), dc * i * (1 - g * g),
                               dh * tanh_c * o * (1 - o)], axis=1)
    np.testing.assert_allclose(d_gates, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(d_c, dc * f, rtol=1e-5, atol=1e-6)


def test_portable_cell_agrees(run_python) -> None:
    code = (
        "import numpy as np; from pyrt import kernels\n"
        "r = np.random.default_rng(0); pre = (r.standard_normal((4, 4 * 13)) * 3).astype(np.float32)\n"
        "c0 = r.standard_normal((4, 13)).astype(np.float32)\n"
        "g = pre.copy(); c, t, h = (np.empty((4, 13), np.float32) for _ in range(3))\n"
        "kernels.lstm_cell_forward(g, c0, c, t, h)\n"
        "ref = 1 / (1 + np.exp(-pre.astype(float)[:, 3 * 13:])) * np.tanh(c.astype(float))\n"
        "np.testing.assert_allclose(h, ref, rtol=1e-5, atol=1e-6)\n"
    )
    run_python("-c", code, env={"PYRT_DISABLE_AVX2": "1"})


def test_shape_errors_are_named() -> None:
    z = np.zeros((2, 3), np.float32)
    with pytest.raises(ValueError, match=r"gates is \(2, 3\) float32, expected \(2, 12\)"):
        kernels.lstm_cell_forward(z.copy(), z, z.copy(), z.copy(), z.copy())
    with pytest.raises(ValueError, match=r"grad_gates is \(2, 3\) float64, expected \(2, 12\)"):
        z64 = np.zeros((2, 3))
        kernels.lstm_cell_backward(np.zeros((2, 12)), z64, z64, z64, None, z64.copy(), z64.copy())
    with pytest.raises(TypeError, match=r"one floating dtype, got gates \(2, 12\) float64, c_prev \(2, 3\) "
                                        r"float32"):
        kernels.lstm_cell_forward(np.zeros((2, 12)), z, z.copy(), z.copy(), z.copy())


def strided(x: np.ndarray) -> np.ndarray:
    """A copy of the 2-D x as the leading columns of a wider buffer: rows not contiguous."""
    base = np.full((x.shape[0], x.shape[1] + 3), np.nan, x.dtype)
    view = base[:, :x.shape[1]]
    view[...] = x
    assert not view.flags.c_contiguous
    return view


LAYOUTS = {
    "float32 native": lambda x: x.astype(np.float32),
    "float64 reference": lambda x: x.astype(np.float64),
    "float32 strided reference": lambda x: strided(x.astype(np.float32)),
}


@pytest.mark.parametrize(("batch", "hidden"), [(2, 1), (3, 7), (5, 33)])
def test_cell_native_and_reference_agree(batch, hidden, rng, reference_calls) -> None:
    pre = (rng.standard_normal((batch, 4 * hidden)) * 4).astype(np.float32)
    pre[0, :4] = [60.0, -60.0, 100.0, -100.0]  # saturated gates: exp overflows, tanh is +-1
    c_prev, grad_h, grad_next, grad_c = (rng.standard_normal((batch, hidden)).astype(np.float32)
                                         for _ in range(4))
    results = {}
    for name, layout in LAYOUTS.items():
        gates, c, tanh_c, h = layout(pre), layout(c_prev), layout(c_prev), layout(c_prev)
        kernels.lstm_cell_forward(gates, layout(c_prev), c, tanh_c, h)
        d_c, d_gates = layout(grad_c), layout(pre)
        kernels.lstm_cell_backward(gates, layout(c_prev), tanh_c, layout(grad_h), layout(grad_next),
                                   d_c, d_gates)
        results[name] = (gates, c, tanh_c, h, d_c, d_gates)
    # The native kernel ran the contiguous float32 arrays, the reference the other two layouts.
    assert reference_calls == {"lstm_cell_forward": 2, "lstm_cell_backward": 2}
    for name in ("float64 reference", "float32 strided reference"):
        for what, ours, ref in zip(("gates", "c", "tanh_c", "h", "grad_c", "grad_gates"),
                                   results["float32 native"], results[name], strict=True):
            np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=2e-6, err_msg=f"{what} vs {name}")


@pytest.mark.parametrize("layers", [1, 2])
def test_fused_float32_lstm_matches_float64(layers, rng) -> None:
    results = {}
    for dtype in (np.float32, np.float64):
        pyrt.manual_seed(0)
        lstm = pyrt.nn.LSTM(5, 16, num_layers=layers, batch_first=True)
        if dtype == np.float64:
            lstm.double()
        x = pyrt.tensor(rng.standard_normal((3, 7, 5)).astype(dtype) if dtype == np.float32 else
                        results[np.float32][0].astype(np.float64), requires_grad=True)
        out, (h_n, c_n) = lstm(x)
        (out.sum() + (h_n * 2).sum() + (c_n * 3).sum()).backward()
        results[dtype] = (x.data, out.data, x.grad.data,
                          *(p.grad.data for p in lstm.parameters()))
    for ours, ref in zip(results[np.float32][1:], results[np.float64][1:], strict=True):
        np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-5)
