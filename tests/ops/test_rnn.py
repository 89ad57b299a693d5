"""The fused LSTM and GRU layer ops: against a plain per-step numpy reference, against
finite differences in float64 (through output, h_n and c_n, w.r.t. inputs, initial
states and every weight), float32 (our SGEMM) against float64, and argument errors."""

from __future__ import annotations

import numpy as np
import pytest

import pyrt
from pyrt import ops

T, B, IN, H = 3, 2, 3, 4


def _sigmoid(a: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-a))


def reference_lstm(x, h, c, w_ih, w_hh, b_ih, b_hh):
    """The textbook loop, one gate at a time: what the fused op must reproduce."""
    outputs = []
    for x_t in x:
        z = x_t @ w_ih.T + b_ih + h @ w_hh.T + b_hh
        i, f, g, o = np.split(z, 4, axis=1)
        c = _sigmoid(f) * c + _sigmoid(i) * np.tanh(g)
        h = _sigmoid(o) * np.tanh(c)
        outputs.append(h)
    return np.stack(outputs), h, c


def reference_gru(x, h, w_ih, w_hh, b_ih, b_hh):
    outputs = []
    for x_t in x:
        xr, xz, xn = np.split(x_t @ w_ih.T + b_ih, 3, axis=1)
        hr, hz, hn = np.split(h @ w_hh.T + b_hh, 3, axis=1)
        r, z = _sigmoid(xr + hr), _sigmoid(xz + hz)
        n = np.tanh(xn + r * hn)
        h = (1 - z) * n + z * h
        outputs.append(h)
    return np.stack(outputs), h


def _arrays(gates: int, seed: int = 0, steps: int = T, batch: int = B, in_size: int = IN,
            hidden: int = H, scale: float = 0.5) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    shapes = {"x": (steps, batch, in_size), "h0": (batch, hidden), "c0": (batch, hidden),
              "w_ih": (gates * hidden, in_size), "w_hh": (gates * hidden, hidden),
              "b_ih": (gates * hidden,), "b_hh": (gates * hidden,)}
    if gates == 3:
        del shapes["c0"]
    return {k: rng.standard_normal(s) * scale for k, s in shapes.items()}


def _tensors(arrays: dict[str, np.ndarray], dtype=np.float64) -> dict[str, pyrt.Tensor]:
    return {k: pyrt.tensor(v.astype(dtype), requires_grad=True) for k, v in arrays.items()}


@pytest.mark.parametrize("steps,batch,in_size,hidden", [(1, 1, 1, 1), (3, 2, 3, 4), (7, 5, 3, 11)])
def test_lstm_layer_matches_reference(steps: int, batch: int, in_size: int, hidden: int) -> None:
    a = _arrays(4, steps=steps, batch=batch, in_size=in_size, hidden=hidden, scale=1.0)
    out, h_n, c_n = ops.lstm_layer(*_tensors(a).values())
    ref_out, ref_h, ref_c = reference_lstm(*a.values())
    np.testing.assert_allclose(out.data, ref_out, atol=1e-12)
    np.testing.assert_allclose(h_n.data, ref_h, atol=1e-12)
    np.testing.assert_allclose(c_n.data, ref_c, atol=1e-12)


@pytest.mark.parametrize("steps,batch,in_size,hidden", [(1, 1, 1, 1), (3, 2, 3, 4), (7, 5, 3, 11)])
def test_gru_layer_matches_reference(steps: int, batch: int, in_size: int, hidden: int) -> None:
    a = _arrays(3, steps=steps, batch=batch, in_size=in_size, hidden=hidden, scale=1.0)
    out, h_n = ops.gru_layer(*_tensors(a).values())
    ref_out, ref_h = reference_gru(*a.values())
    np.testing.assert_allclose(out.data, ref_out, atol=1e-12)
    np.testing.assert_allclose(h_n.data, ref_h, atol=1e-12)


def test_saturated_gates_stay_finite() -> None:
    # Pre-activations of +-1000: exp overflows to inf inside the op, which must give
    # exactly saturated gates (0 or 1, tanh +-1) and no NaN, with no warning escaping.
    a = _arrays(4, scale=1.0)
    a["w_ih"] *= 2000
    t = _tensors(a, np.float32)
    with np.errstate(all="raise"):
        out, _, c_n = ops.lstm_layer(*t.values())
        (out.sum() + c_n.sum()).backward()
    with np.errstate(over="ignore"):
        ref_out, _, ref_c = reference_lstm(*(v.astype(np.float64) for v in a.values()))
    assert all(np.isfinite(v.grad.data).all() for v in t.values())
    assert np.isfinite(out.data).all()
    np.testing.assert_allclose(out.data, ref_out, atol=1e-5)
    np.testing.assert_allclose(c_n.data, ref_c, atol=1e-4)


def test_lstm_layer_gradcheck_through_output_h_n_and_c_n() -> None:
    t = _tensors(_arrays(4))

    def f(*args: pyrt.Tensor) -> pyrt.Tensor:
        out, h_n, c_n = ops.lstm_layer(*args)
        # h_n is also out[-1]: weighting both checks that their gradients add up.
        return ops.cat([out.reshape(-1), h_n.reshape(-1) * 2.0, c_n.reshape(-1)])

    assert pyrt.gradcheck(f, list(t.values()))


@pytest.mark.parametrize("which", ["h_n", "c_n"])
def test_lstm_layer_gradcheck_final_state_only(which: str) -> None:
    # Only one of the slices is used: the others get no gradient at all.
    t = _tensors(_arrays(4, seed=1))
    pick = {"h_n": 1, "c_n": 2}[which]
    assert pyrt.gradcheck(lambda *args: ops.lstm_layer(*args)[pick].tanh(), list(t.values()))


def test_lstm_layer_gradcheck_without_bias() -> None:
    t = _tensors(_arrays(4, seed=2))
    args = [t["x"], t["h0"], t["c0"], t["w_ih"], t["w_hh"]]
    assert pyrt.gradcheck(lambda *a: ops.lstm_layer(*a)[0], args)


def test_gru_layer_gradcheck() -> None:
    t = _tensors(_arrays(3, seed=3))

    def f(*args: pyrt.Tensor) -> pyrt.Tensor:
        out, h_n = ops.gru_layer(*args)
        return ops.cat([out.reshape(-1), h_n.reshape(-1) * 2.0])

    assert pyrt.gradcheck(f, list(t.values()))


def test_gru_layer_gradcheck_without_bias() -> None:
    t = _tensors(_arrays(3, seed=4))
    args = [t["x"], t["h0"], t["w_ih"], t["w_hh"]]
    assert pyrt.gradcheck(lambda *a: ops.gru_layer(*a)[1], args)


def test_input_without_grad_gets_none() -> None:
    t = _tensors(_arrays(4))
    x = pyrt.tensor(t["x"].data)  # data, not a parameter: its gradient is skipped
    out, _, _ = ops.lstm_layer(x, *list(t.values())[1:])
    out.sum().backward()
    assert x.grad is None and t["w_ih"].grad is not None


@pytest.mark.parametrize("layer", ["lstm", "gru"])
def test_float32_sgemm_path_matches_float64(layer: str) -> None:
    # Sizes that are not multiples of the GEMM tiles; the float32 run goes through
    # our SGEMM (forward and backward), the float64 one through numpy.
    gates = 4 if layer == "lstm" else 3
    a = _arrays(gates, steps=9, batch=7, in_size=13, hidden=17)
    fn = ops.lstm_layer if layer == "lstm" else ops.gru_layer
    results = {}
    for dtype in (np.float32, np.float64):
        t = _tensors(a, dtype)
        outs = fn(*t.values())
        sum(((o * o).sum() for o in outs), start=pyrt.tensor(np.zeros((), dtype))).backward()
        results[dtype] = [o.data for o in outs] + [v.grad.data for v in t.values()]
    for lo, hi in zip(results[np.float32], results[np.float64], strict=True):
        assert lo.dtype == np.float32
        np.testing.assert_allclose(lo, hi, rtol=1e-4, atol=1e-5)


def test_batch_first_view_input() -> None:
    # A transposed (non-contiguous) input gives the same result as its copy.
    a = _arrays(4)
    t = _tensors(a)
    view = pyrt.tensor(np.ascontiguousarray(a["x"].transpose(1, 0, 2))).transpose(0, 1)
    out_view = ops.lstm_layer(view, *list(t.values())[1:])[0]
    out = ops.lstm_layer(*t.values())[0]
    np.testing.assert_allclose(out_view.data, out.data)


def test_errors_name_the_shapes() -> None:
    t = _tensors(_arrays(4))
    with pytest.raises(ValueError, match=r"input must be \(seq_len >= 1, batch, input_size\)"):
        ops.lstm_layer(t["x"][0], t["h0"], t["c0"], t["w_ih"], t["w_hh"])
    with pytest.raises(ValueError, match=r"h0 is \(3, 4\) float64 .* expected h0 of shape \(2, 4\)"):
        ops.lstm_layer(t["x"], pyrt.zeros(3, 4, dtype=np.float64), t["c0"], t["w_ih"], t["w_hh"])
    with pytest.raises(ValueError, match=r"weight_ih is \(16, 3\) .* expected weight_ih of shape "
                                         r"\(12, 3\)"):
        ops.gru_layer(t["x"], t["h0"], t["w_ih"], t["w_hh"][:12])
    with pytest.raises(TypeError, match="weight_hh is float32 but input is float64"):
        ops.lstm_layer(t["x"], t["h0"], t["c0"], t["w_ih"],
                       pyrt.tensor(t["w_hh"].data.astype(np.float32)))
