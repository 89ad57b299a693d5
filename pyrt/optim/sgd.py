"""Stochastic gradient descent with momentum, dampening, weight decay and Nesterov.

PyTorch's algorithm, step t (g is the gradient, b the momentum buffer)::

    g = g + weight_decay * p
    b = g                                   if t == 1
    b = momentum * b + (1 - dampening) * g  otherwise
    g = g + momentum * b  (nesterov)   or   g = b
    p = p - lr * g

Parameters are updated in place (``p.data``), so the model, DDP and any
other holder of the array see the new values.
"""

from __future__ import annotations

from typing import Any

from pyrt import kernels
from pyrt.backend import get_array_module
from pyrt.optim.optimizer import Optimizer, ParamsT
from pyrt.tensor import Tensor

__all__ = ["SGD"]


class SGD(Optimizer):
    """SGD with PyTorch's semantics (buffer initialised to the first gradient).

    >>> import pyrt
    >>> w = pyrt.tensor([1.0], requires_grad=True)
    >>> opt = SGD([w], lr=0.1, momentum=0.9)
    >>> (w * w).sum().backward()
    >>> opt.step()
    >>> round(w.item(), 4)
    0.8
    """

    def __init__(self, params: ParamsT, lr: float = 1e-3, momentum: float = 0.0,
                 dampening: float = 0.0, weight_decay: float = 0.0, nesterov: bool = False,
                 *, maximize: bool = False) -> None:
        if lr < 0.0:
            raise ValueError(f"Invalid learning rate: {lr}")
        if momentum < 0.0:
            raise ValueError(f"Invalid momentum value: {momentum}")
        if weight_decay < 0.0:
            raise ValueError(f"Invalid weight_decay value: {weight_decay}")
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("Nesterov momentum requires a momentum and zero dampening "
                             f"(got momentum={momentum}, dampening={dampening})")
        super().__init__(params, dict(lr=lr, momentum=momentum, dampening=dampening,
                                      weight_decay=weight_decay, nesterov=nesterov,
                                      maximize=maximize))

    def _update(self, p: Tensor, grad: Any, group: dict[str, Any], state: dict[str, Any]) -> None:
        momentum, first_step, buf = group["momentum"], False, None
        if momentum != 0:
            if "momentum_buffer" not in state:
                # Filled by the kernel from the first gradient (PyTorch's rule).
                xp = get_array_module(p.data)
                state["momentum_buffer"] = Tensor(xp.empty_like(p.data))
                first_step = True
            buf = state["momentum_buffer"].data
        kernels.sgd_step(p.data, grad, buf, lr=group["lr"], momentum=momentum,
                         dampening=group["dampening"], weight_decay=group["weight_decay"],
                         nesterov=group["nesterov"], maximize=group["maximize"], first_step=first_step)
