"""Activations, softmax, and dropout."""

from __future__ import annotations

from typing import Any

from pyrt import random
from pyrt.autograd import Function
from pyrt.backend import get_array_module
from pyrt.tensor import Tensor

__all__ = ["dropout", "log_softmax", "relu", "sigmoid", "softmax", "tanh"]


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
    if not -x.ndim <= dim < max(x.ndim, 1):
        raise IndexError(f"{name}: dim {dim} is out of range for a tensor of shape {x.shape}")
    return dim % max(x.ndim, 1)


def softmax(x: Tensor, dim: int = -1) -> Tensor:
    """``exp(x) / sum(exp(x))`` along ``dim``, shifted by the max for stability.

    >>> import pyrt
    >>> softmax(pyrt.tensor([0.0, 0.0]), dim=0).tolist()
    [0.5, 0.5]
    """
    return Softmax.apply(x, _check_dim("softmax", x, dim))


def log_softmax(x: Tensor, dim: int = -1) -> Tensor:
    """``log(softmax(x))`` along ``dim``, computed without forming ``softmax``.

    >>> import pyrt
    >>> round(log_softmax(pyrt.tensor([0.0, 0.0]), dim=0).tolist()[0], 4)
    -0.6931
    """
    return LogSoftmax.apply(x, _check_dim("log_softmax", x, dim))


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


