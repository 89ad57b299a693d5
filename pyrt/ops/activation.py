"""Activations, softmax, and dropout.

Every activation is one node whose backward is written from the forward's
saved values (``sigmoid' = s (1 - s)``), instead of a chain of elementwise
nodes: one pass each way, and the numerically careful forms (``log1p``,
``expm1``, no ``exp`` of a large number) are kept in the gradient too.
Boundary points (``x == 0`` for ELU, ``x == min_val`` for hardtanh) take
PyTorch's side, so gradients match it exactly there.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from pyrt import random
from pyrt.autograd import Function
from pyrt.backend import get_array_module
from pyrt.tensor import Tensor

__all__ = [
    "dropout", "elu", "gelu", "hardswish", "hardtanh", "leaky_relu", "log_softmax", "logsigmoid",
    "relu", "relu6", "sigmoid", "silu", "softmax", "softplus", "tanh",
]


class ReLU(Function):
    def forward(self, x: Any) -> Any:
        xp = get_array_module(x)
        positive = x > 0
        self.save_for_backward(positive)
        return xp.maximum(x, 0)

    def backward(self, grad: Any) -> tuple[Any]:
        (positive,) = self.saved_tensors
        return (grad * positive,)


class Sigmoid(Function):
    def forward(self, x: Any) -> Any:
        xp = get_array_module(x)
        # 0.5 * (1 + tanh(x / 2)) never overflows, unlike 1 / (1 + exp(-x)).
        out = 0.5 * (1 + xp.tanh(0.5 * x))
        self.save_for_backward(out)
        return out

    def backward(self, grad: Any) -> tuple[Any]:
        (out,) = self.saved_tensors
        return (grad * out * (1 - out),)


class Tanh(Function):
    def forward(self, x: Any) -> Any:
        out = get_array_module(x).tanh(x)
        self.save_for_backward(out)
        return out

    def backward(self, grad: Any) -> tuple[Any]:
        (out,) = self.saved_tensors
        return (grad * (1 - out * out),)


class Softmax(Function):
    def forward(self, x: Any, dim: int) -> Any:
        xp = get_array_module(x)
        shifted = x - x.max(axis=dim, keepdims=True)
        e = xp.exp(shifted)
        out = e / e.sum(axis=dim, keepdims=True)
        self.dim = dim
        self.save_for_backward(out)
        return out

    def backward(self, grad: Any) -> tuple[Any, None]:
        (out,) = self.saved_tensors
        # Jacobian-vector product of softmax: s * (g - sum(g * s)).
        return out * (grad - (grad * out).sum(axis=self.dim, keepdims=True)), None


class LogSoftmax(Function):
    def forward(self, x: Any, dim: int) -> Any:
        xp = get_array_module(x)
        shifted = x - x.max(axis=dim, keepdims=True)
        out = shifted - xp.log(xp.exp(shifted).sum(axis=dim, keepdims=True))
        self.dim = dim
        self.save_for_backward(out)
        return out

    def backward(self, grad: Any) -> tuple[Any, None]:
        (out,) = self.saved_tensors
        xp = get_array_module(out)
        return grad - xp.exp(out) * grad.sum(axis=self.dim, keepdims=True), None


class Dropout(Function):
    def forward(self, x: Any, p: float) -> Any:
        xp = get_array_module(x)
        keep = random.uniform(x.shape, xp) >= p
        # Inverted dropout: scale at train time so evaluation is the identity.
        mask = keep.astype(x.dtype) / (1 - p)
        self.save_for_backward(mask)
        return x * mask

    def backward(self, grad: Any) -> tuple[Any, None]:
        (mask,) = self.saved_tensors
        return grad * mask, None


def relu(x: Tensor) -> Tensor:
    """``max(x, 0)`` elementwise.

    >>> import pyrt
    >>> relu(pyrt.tensor([-1.0, 2.0])).tolist()
    [0.0, 2.0]
    """
    return ReLU.apply(x)


def sigmoid(x: Tensor) -> Tensor:
    """Logistic function ``1 / (1 + exp(-x))``, computed without overflow.

    >>> import pyrt
    >>> sigmoid(pyrt.tensor([0.0])).item()
    0.5
    """
    return Sigmoid.apply(x)


def tanh(x: Tensor) -> Tensor:
    """Hyperbolic tangent.

    >>> import pyrt
    >>> tanh(pyrt.tensor([0.0])).item()
    0.0
    """
    return Tanh.apply(x)


def _check_dim(name: str, x: Tensor, dim: int) -> int:
    # A 0-d tensor has one valid dim, -1 or 0, as in PyTorch.
    if not -max(x.ndim, 1) <= dim < max(x.ndim, 1):
        raise IndexError(f"{name}: dim {dim} is out of range for a tensor of shape {x.shape}")
    return dim % max(x.ndim, 1)


def softmax(x: Tensor, dim: int = -1) -> Tensor:
    """``exp(x) / sum(exp(x))`` along ``dim``, shifted by the max for stability.

    >>> import pyrt
    >>> softmax(pyrt.tensor([0.0, 0.0]), dim=0).tolist()
    [0.5, 0.5]
    >>> softmax(pyrt.tensor(3.0)).item()   # a 0-d tensor is its own one-element row
    1.0
    """
    dim = _check_dim("softmax", x, dim)
    if x.ndim == 0:
        return Softmax.apply(x.reshape(1), 0).reshape(())
    return Softmax.apply(x, dim)


def log_softmax(x: Tensor, dim: int = -1) -> Tensor:
    """``log(softmax(x))`` along ``dim``, computed without forming ``softmax``.

    >>> import pyrt
    >>> round(log_softmax(pyrt.tensor([0.0, 0.0]), dim=0).tolist()[0], 4)
    -0.6931
    """
    dim = _check_dim("log_softmax", x, dim)
    if x.ndim == 0:
        return LogSoftmax.apply(x.reshape(1), 0).reshape(())
    return LogSoftmax.apply(x, dim)


def dropout(x: Tensor, p: float = 0.5, training: bool = True) -> Tensor:
    """Zero each element with probability ``p`` and scale the rest by ``1 / (1 - p)``.

    Identity when ``training`` is False or ``p`` is 0. Draws from pyrt's
    generator, so ``pyrt.manual_seed`` makes it repeatable.

    >>> import pyrt
    >>> dropout(pyrt.tensor([1.0, 2.0]), p=0.5, training=False).tolist()
    [1.0, 2.0]
    """
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout: p must be in [0, 1], got {p}")
    if not training or p == 0.0:
        return x
    if p == 1.0:
        return x * 0.0
    return Dropout.apply(x, p)




# --- the rest of PyTorch's pointwise activations --------------------------------------

def _erf(x: Any) -> Any:
    """The error function, to double precision on numpy and cupy arrays.

    numpy has no erf. scipy's (or cupyx's) is a vectorised Cody approximation;
    without scipy, ``math.erf`` per element is exact but slower, which only
    costs time, never accuracy.
    """
    xp = get_array_module(x)
    if xp is not np:
        from cupyx.scipy.special import erf

        return erf(x)
    try:
        from scipy.special import erf
    except ImportError:
        return np.asarray(np.frompyfunc(math.erf, 1, 1)(x), dtype=x.dtype)
    return erf(x)


class LeakyReLU(Function):
    def forward(self, x: Any, negative_slope: float) -> Any:
        xp = get_array_module(x)
        self.slope = xp.where(x > 0, x.dtype.type(1), x.dtype.type(negative_slope))
        return x * self.slope

    def backward(self, grad: Any) -> tuple[Any, None]:
        return grad * self.slope, None


class GELU(Function):
    # Exact: x * Phi(x), Phi the standard normal CDF, so d/dx = Phi(x) + x * phi(x).
    # 'tanh': 0.5 x (1 + tanh(u)), u = sqrt(2/pi) (x + 0.044715 x^3).
    _ROOT_2_OVER_PI = math.sqrt(2.0 / math.pi)

    def forward(self, x: Any, approximate: str) -> Any:
        xp = get_array_module(x)
        self.approximate = approximate
        self.save_for_backward(x)
        if approximate == "tanh":
            t = xp.tanh(self._ROOT_2_OVER_PI * (x + 0.044715 * x ** 3))
            self.t = t
            return 0.5 * x * (1 + t)
        cdf = 0.5 * (1 + _erf(x * (1 / math.sqrt(2.0))))
        self.cdf = cdf
        return x * cdf

    def backward(self, grad: Any) -> tuple[Any, None]:
        (x,) = self.saved_tensors
        xp = get_array_module(x)
        if self.approximate == "tanh":
            t = self.t
            du = self._ROOT_2_OVER_PI * (1 + 3 * 0.044715 * x * x)
            return grad * (0.5 * (1 + t) + 0.5 * x * (1 - t * t) * du), None
        pdf = xp.exp(-0.5 * x * x) * (1 / math.sqrt(2 * math.pi))
        return grad * (self.cdf + x * pdf), None


class SiLU(Function):
    def forward(self, x: Any) -> Any:
        xp = get_array_module(x)
        s = 0.5 * (1 + xp.tanh(0.5 * x))  # sigmoid without overflow
        self.save_for_backward(x, s)
        return x * s

    def backward(self, grad: Any) -> tuple[Any]:
        x, s = self.saved_tensors
        return (grad * s * (1 + x * (1 - s)),)


class ELU(Function):
    def forward(self, x: Any, alpha: float) -> Any:
        xp = get_array_module(x)
        positive = x > 0
        # expm1 keeps alpha * (exp(x) - 1) accurate for small |x|; only the negative
        # side is used, so exp never sees a large argument there.
        negative_part = alpha * xp.expm1(xp.minimum(x, 0))
        self.save_for_backward(positive, negative_part)
        self.alpha = alpha
        return xp.where(positive, x, negative_part)

    def backward(self, grad: Any) -> tuple[Any, None]:
        positive, negative_part = self.saved_tensors
        # d/dx alpha (exp(x) - 1) = alpha exp(x) = out + alpha; PyTorch takes this side at 0.
        return grad * get_array_module(grad).where(positive, 1, negative_part + self.alpha), None


class Softplus(Function):
    def forward(self, x: Any, beta: float, threshold: float) -> Any:
        xp = get_array_module(x)
        scaled = x * beta
        linear = scaled > threshold  # PyTorch reverts to the identity there, for stability
        # log1p(exp(z)) = max(z, 0) + log1p(exp(-|z|)) never overflows.
        soft = (xp.maximum(scaled, 0) + xp.log1p(xp.exp(-xp.abs(scaled)))) / beta
        self.save_for_backward(scaled, linear)
        return xp.where(linear, x, soft)

    def backward(self, grad: Any) -> tuple[Any, None, None]:
        scaled, linear = self.saved_tensors
        xp = get_array_module(grad)
        return grad * xp.where(linear, 1, 0.5 * (1 + xp.tanh(0.5 * scaled))), None, None


class Hardtanh(Function):
    def forward(self, x: Any, min_val: float, max_val: float) -> Any:
        xp = get_array_module(x)
        # Open interval: PyTorch gives zero gradient at the clip points themselves.
        self.save_for_backward((x > min_val) & (x < max_val))
        return xp.clip(x, min_val, max_val)

    def backward(self, grad: Any) -> tuple[Any, None, None]:
        (inside,) = self.saved_tensors
        return grad * inside, None, None


class LogSigmoid(Function):
    def forward(self, x: Any) -> Any:
        xp = get_array_module(x)
        self.save_for_backward(x)
        # log(sigmoid(x)) = min(x, 0) - log1p(exp(-|x|)): no overflow for either sign.
        return xp.minimum(x, 0) - xp.log1p(xp.exp(-xp.abs(x)))

    def backward(self, grad: Any) -> tuple[Any]:
        (x,) = self.saved_tensors
        xp = get_array_module(x)
        return (grad * 0.5 * (1 - xp.tanh(0.5 * x)),)  # sigmoid(-x)


class Hardswish(Function):
    def forward(self, x: Any) -> Any:
        xp = get_array_module(x)
        self.save_for_backward(x)
        return x * xp.clip(x + 3, 0, 6) / 6

    def backward(self, grad: Any) -> tuple[Any]:
        (x,) = self.saved_tensors
        xp = get_array_module(x)
        # PyTorch's sides: 0 up to -3, x/3 + 1/2 strictly between, 1 from 3 on.
        slope = xp.where(x <= -3, 0, xp.where(x < 3, x / 3 + 0.5, 1))
        return (grad * slope,)


def _check_float(name: str, x: Tensor) -> None:
    if not np.issubdtype(x.dtype, np.floating):
        raise TypeError(f"{name}: expected a floating point tensor, got {x.dtype}")


def leaky_relu(input: Tensor, negative_slope: float = 0.01, inplace: bool = False) -> Tensor:
    """``x`` where positive, ``negative_slope * x`` elsewhere.

    ``inplace`` is accepted for PyTorch compatibility; a new tensor is returned.

    >>> import pyrt
    >>> leaky_relu(pyrt.tensor([-2.0, 3.0]), 0.1).tolist()
    [-0.20000000298023224, 3.0]
    """
    _check_float("leaky_relu", input)
    return LeakyReLU.apply(input, float(negative_slope))


def gelu(input: Tensor, approximate: str = "none") -> Tensor:
    """Gaussian error linear unit ``x * Phi(x)``; ``approximate='tanh'`` uses the tanh form.

    >>> import pyrt
    >>> [round(v, 4) for v in gelu(pyrt.tensor([-1.0, 1.0])).tolist()]
    [-0.1587, 0.8413]
    >>> round(gelu(pyrt.tensor([1.0]), approximate="tanh").item(), 4)
    0.8412
    """
    if approximate not in ("none", "tanh"):
        raise ValueError(f"gelu: approximate must be 'none' or 'tanh', got {approximate!r}")
    _check_float("gelu", input)
    return GELU.apply(input, approximate)


def silu(input: Tensor, inplace: bool = False) -> Tensor:
    """``x * sigmoid(x)`` (a.k.a. swish).

    >>> import pyrt
    >>> round(silu(pyrt.tensor([1.0])).item(), 4)
    0.7311
    """
    _check_float("silu", input)
    return SiLU.apply(input)


def elu(input: Tensor, alpha: float = 1.0, inplace: bool = False) -> Tensor:
    """``x`` where positive, ``alpha * (exp(x) - 1)`` elsewhere.

    >>> import pyrt
    >>> [round(v, 4) for v in elu(pyrt.tensor([-1.0, 2.0])).tolist()]
    [-0.6321, 2.0]
    """
    _check_float("elu", input)
    return ELU.apply(input, float(alpha))


def softplus(input: Tensor, beta: float = 1.0, threshold: float = 20.0) -> Tensor:
    """``log(1 + exp(beta * x)) / beta``, and ``x`` itself where ``beta * x > threshold``.

    >>> import pyrt
    >>> round(softplus(pyrt.tensor([0.0])).item(), 4)
    0.6931
    """
    _check_float("softplus", input)
    if beta == 0:
        raise ValueError("softplus: beta must be nonzero")
    return Softplus.apply(input, float(beta), float(threshold))


def hardtanh(input: Tensor, min_val: float = -1.0, max_val: float = 1.0,
             inplace: bool = False) -> Tensor:
    """Clip to ``[min_val, max_val]``; the gradient is 1 strictly inside, 0 elsewhere.

    >>> import pyrt
    >>> hardtanh(pyrt.tensor([-2.0, 0.5, 2.0])).tolist()
    [-1.0, 0.5, 1.0]
    """
    _check_float("hardtanh", input)
    if min_val > max_val:
        raise ValueError(f"hardtanh: min_val {min_val} must not exceed max_val {max_val}")
    return Hardtanh.apply(input, float(min_val), float(max_val))


def relu6(input: Tensor, inplace: bool = False) -> Tensor:
    """``min(max(x, 0), 6)``, i.e. ``hardtanh(x, 0, 6)``.

    >>> import pyrt
    >>> relu6(pyrt.tensor([-1.0, 3.0, 7.0])).tolist()
    [0.0, 3.0, 6.0]
    """
    return hardtanh(input, 0.0, 6.0)


def logsigmoid(input: Tensor) -> Tensor:
    """``log(sigmoid(x))``, finite for every finite ``x``.

    >>> import pyrt
    >>> round(logsigmoid(pyrt.tensor([0.0])).item(), 4)
    -0.6931
    """
    _check_float("logsigmoid", input)
    return LogSigmoid.apply(input)


def hardswish(input: Tensor, inplace: bool = False) -> Tensor:
    """``x * relu6(x + 3) / 6``.

    >>> import pyrt
    >>> hardswish(pyrt.tensor([-4.0, 0.0, 4.0])).tolist()
    [-0.0, 0.0, 4.0]
    """
    _check_float("hardswish", input)
    return Hardswish.apply(input)
