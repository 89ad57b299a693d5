"""Recurrent layers as fused ops: one LSTM or GRU layer over a whole sequence is one node.

Shapes: ``x`` is (T, B, I) (time major), states ``h0``/``c0`` are (B, H),
``weight_ih`` is (G*H, I), ``weight_hh`` (G*H, H), biases (G*H,), with G = 4
gates ``i, f, g, o`` for the LSTM and G = 3 gates ``r, z, n`` for the GRU, in
PyTorch's order so parameters copy across unchanged.

Why one node per layer instead of ~10 per time step: the recurrence is a
Python loop either way, but a fused node runs it on raw arrays, writes every
step into preallocated (T, B, ...) buffers, and its backward is hand-written
backpropagation through time. The work per step is one (B, H) @ (H, G*H) GEMM
plus elementwise gate math on the whole (B, G*H) block; the input projection
for all steps is one (T*B, I) @ (I, G*H) GEMM up front, and the weight
gradients are one GEMM each at the end, over the stacked steps.

A ``Function`` has one output array, so the LSTM returns ``h_1..h_T`` and
``c_T`` packed in one (T+1, B, H) array; ``lstm_layer`` slices ``output``,
``h_n`` and ``c_n`` out of it with differentiable indexing, so gradients
through any of them flow back into the same node. (``h_n`` is ``h_T``, the
last output row, so it needs no storage of its own; the GRU's output is
just (T, B, H).)
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pyrt import kernels
from pyrt.autograd import Function
from pyrt.backend import describe, get_array_module
from pyrt.ops.linalg import matmul_arrays
from pyrt.tensor import Tensor

__all__ = ["gru_layer", "lstm_layer"]


def _rows(x: Any) -> Any:
    """(T, B, F) -> (T*B, F) without a copy (x is contiguous)."""
    return x.reshape(x.shape[0] * x.shape[1], x.shape[2])


class LSTMLayer(Function):
    """One LSTM layer over a sequence; returns h_1..h_T and c_T packed as (T+1, B, H).

    The gate math of each step is ``kernels.lstm_cell_forward`` / ``lstm_cell_backward``,
    which run natively on float32 numpy and as a plain reference on anything else.
    """

    def forward(self, x: Any, h0: Any, c0: Any, w_ih: Any, w_hh: Any, b_ih: Any | None,
                b_hh: Any | None) -> Any:
        xp = get_array_module(x)
        x = xp.ascontiguousarray(x)
        (T, B, _), H = x.shape, w_hh.shape[1]
        gates = matmul_arrays(_rows(x), w_ih.T).reshape(T, B, 4 * H)
        for b in (b_ih, b_hh):
            if b is not None:
                gates += b
        # states holds h_0, h_1..h_T and then c_T, so states[1:] is the packed output and
        # states[t] is the GEMM operand of step t, both without copies. Every per-step
        # slice below is C-contiguous, which the native cell kernel needs.
        states = xp.empty((T + 2, B, H), dtype=x.dtype)
        states[0] = h0
        cells = xp.empty((T + 1, B, H), dtype=x.dtype)
        cells[0] = c0
        tanh_cells = xp.empty((T, B, H), dtype=x.dtype)
        w_hh_t = w_hh.T
        for t in range(T):
            a = gates[t]
            a += matmul_arrays(states[t], w_hh_t)
            kernels.lstm_cell_forward(a, cells[t], cells[t + 1], tanh_cells[t], states[t + 1])
        states[T + 1] = cells[T]
        self.has_bias = (b_ih is not None, b_hh is not None)
        self.save_for_backward(x, w_ih, w_hh, gates, states, cells, tanh_cells)
        return states[1:]

    def backward(self, grad: Any) -> tuple[Any, ...]:
        """Backpropagation through time: the cell kernel per step, then one GEMM per weight."""
        x, w_ih, w_hh, gates, states, cells, tanh_cells = self.saved_tensors
        xp = get_array_module(grad)
        # A strided incoming gradient (e.g. from a slice of the output) would send every
        # step to the reference path; one copy keeps float32 on the native kernel.
        grad = xp.ascontiguousarray(grad)
        T = tanh_cells.shape[0]
        d_gates = xp.empty_like(gates)  # dL/d(pre-activation) of every gate, every step
        d_c = grad[T].copy()  # c_n's gradient enters at the last step
        d_h_prev = None
        for t in range(T - 1, -1, -1):
            kernels.lstm_cell_backward(gates[t], cells[t], tanh_cells[t], grad[t], d_h_prev, d_c,
                                       d_gates[t])
            d_h_prev = matmul_arrays(d_gates[t], w_hh)
        return self._weight_gradients(x, w_ih, states, d_gates, d_h_prev, d_c)

    def _weight_gradients(self, x: Any, w_ih: Any, states: Any, d_gates: Any, d_h0: Any,
                          d_c0: Any) -> tuple[Any, ...]:
        """One GEMM each over all steps, from the gates' gradients (T, B, 4H)."""
        T = d_gates.shape[0]
        d_rows = _rows(d_gates)
        grad_x = None
        if self.needs_input_grad[0]:
            grad_x = matmul_arrays(d_rows, w_ih).reshape(x.shape)
        grad_w_ih = matmul_arrays(d_rows.T, _rows(x))
        grad_w_hh = matmul_arrays(d_rows.T, _rows(states[:T]))
        grad_b = d_rows.sum(axis=0)
        return (grad_x, d_h0, d_c0, grad_w_ih, grad_w_hh,
                grad_b if self.has_bias[0] else None, grad_b if self.has_bias[1] else None)


class GRULayer(Function):
    """One GRU layer over a sequence; returns h_1..h_T as (T, B, H).

    PyTorch's formula: r = sigmoid(W_ir x + b_ir + W_hr h + b_hr), z likewise,
    n = tanh(W_in x + b_in + r * (W_hn h + b_hn)), h' = (1 - z) * n + z * h.
    """

    def forward(self, x: Any, h0: Any, w_ih: Any, w_hh: Any, b_ih: Any | None,
                b_hh: Any | None) -> Any:
        xp = get_array_module(x)
        x = xp.ascontiguousarray(x)
        (T, B, _), H = x.shape, w_hh.shape[1]
        gates = matmul_arrays(_rows(x), w_ih.T).reshape(T, B, 3 * H)  # becomes r, z, n
        if b_ih is not None:
            gates += b_ih
        # W_hh h + b_hh per step, kept: its n block multiplies r, so r's gradient needs it.
        hidden = xp.empty_like(gates)
        states = xp.empty((T + 1, B, H), dtype=x.dtype)  # h_0, h_1..h_T
        states[0] = h0
        w_hh_t = w_hh.T
        # exp overflows to inf (or underflows to 0) for saturated gates; 1 / inf = 0 and
        # 1 / (1 + 0) = 1 are the right limits, so neither is worth a warning.
        with np.errstate(over="ignore", under="ignore"):
            for t in range(T):
                a, hh = gates[t], hidden[t]
                hh[...] = matmul_arrays(states[t], w_hh_t)
                if b_hh is not None:
                    hh += b_hh
                rz = a[:, :2 * H]
                rz += hh[:, :2 * H]
                xp.negative(rz, out=rz)
                xp.exp(rz, out=rz)
                rz += 1
                xp.reciprocal(rz, out=rz)
                r, z, n = a[:, :H], a[:, H:2 * H], a[:, 2 * H:]
                n += r * hh[:, 2 * H:]
                xp.tanh(n, out=n)
                h = states[t + 1]
                xp.subtract(states[t], n, out=h)  # h' = n + z * (h - n)
                h *= z
                h += n
        self.has_bias = (b_ih is not None, b_hh is not None)
        self.save_for_backward(x, w_ih, w_hh, gates, hidden, states)
        return states[1:]

    def backward(self, grad: Any) -> tuple[Any, ...]:
        x, w_ih, w_hh, gates, hidden, states = self.saved_tensors
        xp = get_array_module(grad)
        T, _, H = grad.shape
        # The input and hidden projections get different gradients only in the n block:
        # n's pre-activation sees W_in x directly but W_hn h through r.
        d_input_gates = xp.empty_like(gates)
        d_hidden_gates = xp.empty_like(gates)
        d_h_prev = None
        for t in range(T - 1, -1, -1):
            d_h = grad[t] if d_h_prev is None else grad[t] + d_h_prev
            r, z, n = gates[t, :, :H], gates[t, :, H:2 * H], gates[t, :, 2 * H:]
            d_r, d_z, d_n = (d_input_gates[t, :, k * H:(k + 1) * H] for k in range(3))
            h_prev = states[t]
            xp.multiply(d_h, 1 - z, out=d_n)
            d_n *= 1 - n * n
            xp.subtract(h_prev, n, out=d_z)
            d_z *= d_h
            d_z *= z * (1 - z)
            xp.multiply(d_n, hidden[t, :, 2 * H:], out=d_r)
            d_r *= r * (1 - r)
            d_hh = d_hidden_gates[t]
            d_hh[:, :2 * H] = d_input_gates[t, :, :2 * H]
            xp.multiply(d_n, r, out=d_hh[:, 2 * H:])
            d_h_prev = matmul_arrays(d_hh, w_hh)
            d_h_prev += d_h * z
        d_in_rows, d_hid_rows = _rows(d_input_gates), _rows(d_hidden_gates)
        grad_x = None
        if self.needs_input_grad[0]:
            grad_x = matmul_arrays(d_in_rows, w_ih).reshape(x.shape)
        grad_w_ih = matmul_arrays(d_in_rows.T, _rows(x))
        grad_w_hh = matmul_arrays(d_hid_rows.T, _rows(states[:T]))
        return (grad_x, d_h_prev, grad_w_ih, grad_w_hh,
                d_in_rows.sum(axis=0) if self.has_bias[0] else None,
                d_hid_rows.sum(axis=0) if self.has_bias[1] else None)


def _check_layer_args(name: str, gates: int, x: Tensor, states: dict[str, Tensor],
                      weight_ih: Tensor, weight_hh: Tensor, bias_ih: Tensor | None,
                      bias_hh: Tensor | None) -> None:
    if x.ndim != 3 or x.shape[0] == 0:
        raise ValueError(f"{name}: input must be (seq_len >= 1, batch, input_size), "
                         f"got {describe(x.data)}")
    hidden = weight_hh.shape[1] if weight_hh.ndim == 2 else -1
    expected = {
        "weight_ih": (gates * hidden, x.shape[2]), "weight_hh": (gates * hidden, hidden),
        "bias_ih": (gates * hidden,), "bias_hh": (gates * hidden,),
    }
    given = {"weight_ih": weight_ih, "weight_hh": weight_hh, "bias_ih": bias_ih, "bias_hh": bias_hh}
    for key, state in states.items():
        expected[key] = (x.shape[1], hidden)
        given[key] = state
    for key, t in given.items():
        if t is None:
            continue
        if t.shape != expected[key]:
            raise ValueError(f"{name}: {key} is {describe(t.data)} but input is "
                             f"{describe(x.data)}; expected {key} of shape {expected[key]}")
        if t.dtype != x.dtype:
            raise TypeError(f"{name}: {key} is {t.dtype} but input is {x.dtype}")


def lstm_layer(input: Tensor, h0: Tensor, c0: Tensor, weight_ih: Tensor, weight_hh: Tensor,
               bias_ih: Tensor | None = None,
               bias_hh: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """One LSTM layer over a sequence: returns ``output`` (T, B, H), ``h_n`` and ``c_n`` (B, H).

    ``input`` is (T, B, I), ``h0``/``c0`` are (B, H); weights in PyTorch's
    layout with gates ``i, f, g, o``. All three results carry gradients.

    >>> import pyrt
    >>> x, h = pyrt.ones(5, 2, 3), pyrt.zeros(2, 4)
    >>> out, h_n, c_n = lstm_layer(x, h, h, pyrt.ones(16, 3), pyrt.ones(16, 4))
    >>> out.shape, h_n.shape, c_n.shape
    ((5, 2, 4), (2, 4), (2, 4))
    """
    _check_layer_args("lstm_layer", 4, input, {"h0": h0, "c0": c0}, weight_ih, weight_hh,
                      bias_ih, bias_hh)
    packed = LSTMLayer.apply(input, h0, c0, weight_ih, weight_hh, bias_ih, bias_hh)
    T = input.shape[0]
    return packed[:T], packed[T - 1], packed[T]


def gru_layer(input: Tensor, h0: Tensor, weight_ih: Tensor, weight_hh: Tensor,
              bias_ih: Tensor | None = None,
              bias_hh: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """One GRU layer over a sequence: returns ``output`` (T, B, H) and ``h_n`` (B, H).

    ``input`` is (T, B, I), ``h0`` is (B, H); weights in PyTorch's layout
    with gates ``r, z, n``.

    >>> import pyrt
    >>> out, h_n = gru_layer(pyrt.ones(5, 2, 3), pyrt.zeros(2, 4), pyrt.ones(12, 3),
    ...                      pyrt.ones(12, 4))
    >>> out.shape, h_n.shape
    ((5, 2, 4), (2, 4))
    """
    _check_layer_args("gru_layer", 3, input, {"h0": h0}, weight_ih, weight_hh, bias_ih, bias_hh)
    output = GRULayer.apply(input, h0, weight_ih, weight_hh, bias_ih, bias_hh)
    return output, output[input.shape[0] - 1]
