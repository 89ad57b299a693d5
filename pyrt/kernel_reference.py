"""Plain reference versions of the fused kernels, for any dtype, layout and array library.

``pyrt.kernels`` runs C-contiguous float32 numpy arrays on the native
kernels (``pyrt._C``) and everything else here: float64 (gradcheck), strided
views, cupy arrays. Each function does what its native twin does, in the
same order, as whole-array expressions on ``xp = get_array_module(...)``, so
it reads as the equations and runs on numpy and cupy alike. Results are
written in place (augmented assignment, ``out=`` or slice assignment), never
rebound, because callers hold the arrays (a parameter's ``.data``, an
optimizer's state, an LSTM's per-step buffers).

Nothing here validates: ``pyrt.kernels`` checks shapes and array types before
dispatching, with one error message for both paths.
"""

from __future__ import annotations

import math
from typing import Any

from pyrt.backend import get_array_module

__all__ = ["adam_step", "lstm_cell_backward", "lstm_cell_forward", "sgd_step"]


def sgd_step(p: Any, grad: Any, momentum_buffer: Any | None, *, lr: float, momentum: float,
             dampening: float, weight_decay: float, nesterov: bool, maximize: bool,
             first_step: bool) -> None:
    """PyTorch's SGD step, updating ``p`` (and ``momentum_buffer``) in place.

    >>> import numpy as np
    >>> p, buf = np.ones(2), np.empty(2)
    >>> sgd_step(p, np.full(2, 0.5), buf, lr=0.1, momentum=0.9, dampening=0.0, weight_decay=0.0,
    ...          nesterov=False, maximize=False, first_step=True)
    >>> p.tolist(), buf.tolist()
    ([0.95, 0.95], [0.5, 0.5])
    """
    g = -grad if maximize else grad
    if weight_decay != 0:
        g = g + weight_decay * p
    if momentum != 0:
        if first_step:
            momentum_buffer[...] = g  # PyTorch starts the buffer at the first gradient
        else:
            momentum_buffer *= momentum
            momentum_buffer += (1 - dampening) * g
        g = g + momentum * momentum_buffer if nesterov else momentum_buffer
    p -= lr * g


def adam_step(p: Any, grad: Any, exp_avg: Any, exp_avg_sq: Any, max_exp_avg_sq: Any | None, *,
              lr: float, beta1: float, beta2: float, eps: float, weight_decay: float, step: int,
              decoupled_weight_decay: bool, maximize: bool) -> None:
    """PyTorch's Adam (AdamW with ``decoupled_weight_decay``) step, in place; ``step`` counts from 1.

    >>> import numpy as np
    >>> p, m, v = np.ones(2), np.zeros(2), np.zeros(2)
    >>> adam_step(p, np.full(2, 0.5), m, v, None, lr=0.1, beta1=0.9, beta2=0.999, eps=1e-8,
    ...           weight_decay=0.0, step=1, decoupled_weight_decay=False, maximize=False)
    >>> p.round(4).tolist()
    [0.9, 0.9]
    """
    xp = get_array_module(p)
    g = -grad if maximize else grad
    if weight_decay != 0:
        if decoupled_weight_decay:
            p *= 1 - lr * weight_decay
        else:
            g = g + weight_decay * p
    exp_avg *= beta1
    exp_avg += (1 - beta1) * g
    exp_avg_sq *= beta2
    exp_avg_sq += (1 - beta2) * (g * g)
    second_moment = exp_avg_sq
    if max_exp_avg_sq is not None:  # AMSGrad: the largest second moment so far
        xp.maximum(max_exp_avg_sq, exp_avg_sq, out=max_exp_avg_sq)
        second_moment = max_exp_avg_sq
    # Bias corrections in Python floats, as PyTorch and the native kernel compute them.
    bias_correction1 = 1 - beta1**step
    bias_correction2_sqrt = math.sqrt(1 - beta2**step)
    denom = xp.sqrt(second_moment) / bias_correction2_sqrt + eps
    p -= (lr / bias_correction1) * (exp_avg / denom)


def _sigmoid_inplace(x: Any) -> None:
    """x = sigmoid(x) = (1 + tanh(x / 2)) / 2: no exp, so saturated gates cannot overflow."""
    xp = get_array_module(x)
    x *= 0.5
    xp.tanh(x, out=x)
    x += 1
    x *= 0.5


def _gate_blocks(a: Any, hidden: int) -> tuple[Any, Any, Any, Any]:
    """The (B, H) column blocks i, f, g, o of a (B, 4H) gate array, as views."""
    return a[:, :hidden], a[:, hidden:2 * hidden], a[:, 2 * hidden:3 * hidden], a[:, 3 * hidden:]


def lstm_cell_forward(gates: Any, c_prev: Any, c: Any, tanh_c: Any, h: Any) -> None:
    """One LSTM step after its GEMMs; see ``pyrt.kernels.lstm_cell_forward``.

    >>> import numpy as np
    >>> g, c0 = np.zeros((1, 4)), np.ones((1, 1))
    >>> c, tc, h = np.empty((1, 1)), np.empty((1, 1)), np.empty((1, 1))
    >>> lstm_cell_forward(g, c0, c, tc, h)
    >>> g.tolist(), c.tolist()
    ([[0.5, 0.5, 0.0, 0.5]], [[0.5]])
    """
    xp = get_array_module(gates)
    i, f, g, o = _gate_blocks(gates, c_prev.shape[1])
    for sigmoid_gate in (i, f, o):
        _sigmoid_inplace(sigmoid_gate)
    xp.tanh(g, out=g)
    c[...] = f * c_prev + i * g
    xp.tanh(c, out=tanh_c)
    xp.multiply(o, tanh_c, out=h)


def lstm_cell_backward(gates: Any, c_prev: Any, tanh_c: Any, grad_h: Any, grad_h_next: Any | None,
                       grad_c: Any, grad_gates: Any) -> None:
    """Backward of one LSTM step; see ``pyrt.kernels.lstm_cell_backward``.

    >>> import numpy as np
    >>> g, z = np.full((1, 4), 0.5), np.zeros((1, 1))
    >>> dc, dg = np.zeros((1, 1)), np.empty((1, 4))
    >>> lstm_cell_backward(g, z, z, np.ones((1, 1)), None, dc, dg)
    >>> dg.tolist(), dc.tolist()
    ([[0.0625, 0.0, 0.1875, 0.0]], [[0.25]])
    """
    i, f, g, o = _gate_blocks(gates, c_prev.shape[1])
    d_i, d_f, d_g, d_o = _gate_blocks(grad_gates, c_prev.shape[1])
    d_h = grad_h if grad_h_next is None else grad_h + grad_h_next
    # h = o tanh(c): dL/dc gains d_h o tanh'(c), on top of what c_{t+1} sends back.
    grad_c += d_h * o * (1 - tanh_c * tanh_c)
    # c = f c_prev + i g, each activated gate times its derivative: sigmoid' = s (1 - s),
    # tanh' = 1 - g^2.
    d_i[...] = grad_c * g * i * (1 - i)
    d_f[...] = grad_c * c_prev * f * (1 - f)
    d_g[...] = grad_c * i * (1 - g * g)
    d_o[...] = d_h * tanh_c * o * (1 - o)
    grad_c *= f  # dL/dc_{t-1}
