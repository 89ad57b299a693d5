"""Batch and layer normalisation, each one node with a closed-form backward.

Both compute ``xhat = (x - mean) / sqrt(var + eps)`` (biased variance) and
``y = xhat * weight + bias``; they differ in the axes of the statistics:
batch norm averages over everything but the channel axis 1, layer norm over
the trailing ``normalized_shape``. With M elements per statistic, the
gradient through the statistics collapses to

    grad_x = weight * invstd * (grad - mean(grad) - xhat * mean(grad * xhat))

and ``mean(grad)``, ``mean(grad * xhat)`` are the bias and weight gradients
divided by M, so the backward costs a few passes instead of the ten nodes
of the composed formula.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from pyrt.autograd import Function, runs_on_input_device
from pyrt.backend import describe, get_array_module
from pyrt.tensor import Tensor

__all__ = ["batch_norm", "layer_norm"]


def _channel_shape(x: Any) -> tuple[int, ...]:
    """(1, C, 1, ...): a per-channel vector broadcast against (N, C, ...)."""
    return (1, x.shape[1]) + (1,) * (x.ndim - 2)


class BatchNorm(Function):
    def forward(self, x: Any, weight: Any | None, bias: Any | None, running_mean: Any | None,
                running_var: Any | None, training: bool, momentum: float, eps: float) -> Any:
        xp = get_array_module(x)
        axes = (0, *range(2, x.ndim))
        count = x.size // x.shape[1]
        shape = _channel_shape(x)
        if training:
            mean = x.mean(axis=axes)
            centered = x - mean.reshape(shape)
            var = xp.mean(centered * centered, axis=axes)
            if running_mean is not None:
                # In place, as PyTorch's kernel does: these arrays are the module's buffers.
                running_mean *= 1 - momentum
                running_mean += momentum * mean
                running_var *= 1 - momentum
                running_var += momentum * var * (count / (count - 1))  # unbiased
        else:
            mean, var = running_mean, running_var
            centered = x - mean.reshape(shape)
        invstd = 1 / xp.sqrt(var + eps)
        xhat = centered * invstd.reshape(shape)
        self.save_for_backward(xhat, invstd, weight)
        self.training, self.axes, self.count, self.shape = training, axes, count, shape
        self.has_bias = bias is not None
        out = xhat * weight.reshape(shape) if weight is not None else xhat.copy()
        if bias is not None:
            out += bias.reshape(shape)
        return out

    def backward(self, grad: Any) -> tuple[Any, ...]:
        xhat, invstd, weight = self.saved_tensors
        axes, shape = self.axes, self.shape
        grad_bias = grad.sum(axis=axes)
        grad_weight = (grad * xhat).sum(axis=axes)
        scale = invstd if weight is None else weight * invstd
        if self.training:
            # The statistics depend on x too: subtract their share of the gradient.
            grad_x = grad - (grad_bias / self.count).reshape(shape)
            grad_x -= xhat * (grad_weight / self.count).reshape(shape)
            grad_x *= scale.reshape(shape)
        else:
            grad_x = grad * scale.reshape(shape)
        return (grad_x, None if weight is None else grad_weight,
                grad_bias if self.has_bias else None, None, None, None, None, None)


class LayerNorm(Function):
    def forward(self, x: Any, weight: Any | None, bias: Any | None, dims: int,
                eps: float) -> Any:
        xp = get_array_module(x)
        axes = tuple(range(x.ndim - dims, x.ndim))
        mean = x.mean(axis=axes, keepdims=True)
        centered = x - mean
        invstd = 1 / xp.sqrt(xp.mean(centered * centered, axis=axes, keepdims=True) + eps)
        xhat = centered * invstd
        self.save_for_backward(xhat, invstd, weight)
        self.axes, self.has_bias = axes, bias is not None
        out = xhat * weight if weight is not None else xhat.copy()
        if bias is not None:
            out += bias
        return out

    def backward(self, grad: Any) -> tuple[Any, ...]:
        xhat, invstd, weight = self.saved_tensors
        lead = tuple(range(xhat.ndim - len(self.axes)))
        grad_weight = (grad * xhat).sum(axis=lead) if weight is not None else None
        grad_bias = grad.sum(axis=lead) if self.has_bias else None
        grad_xhat = grad * weight if weight is not None else grad
        grad_x = grad_xhat - grad_xhat.mean(axis=self.axes, keepdims=True)
        grad_x -= xhat * (grad_xhat * xhat).mean(axis=self.axes, keepdims=True)
        grad_x *= invstd
        return grad_x, grad_weight, grad_bias, None, None


@runs_on_input_device
def batch_norm(input: Tensor, running_mean: Tensor | None, running_var: Tensor | None,
               weight: Tensor | None = None, bias: Tensor | None = None, training: bool = False,
               momentum: float = 0.1, eps: float = 1e-5) -> Tensor:
    """Normalise each channel (axis 1) of (N, C, ...), PyTorch's ``F.batch_norm``.

    ``training`` uses the batch's mean and biased variance and, when running
    statistics are given, updates them in place (``running_var`` with the
    unbiased variance); otherwise the running statistics normalise.

    >>> import pyrt
    >>> x = pyrt.tensor([[1.0], [3.0]])
    >>> mean, var = pyrt.zeros(1), pyrt.ones(1)
    >>> [round(v, 3) for v in batch_norm(x, mean, var, training=True).reshape(-1).tolist()]
    [-1.0, 1.0]
    >>> round(mean.item(), 4), round(var.item(), 4)
    (0.2, 1.1)
    """
    if input.ndim < 2:
        raise ValueError(f"batch_norm: input must be (N, C, ...), got {describe(input.data)}")
    channels = input.shape[1]
    for name, t in (("running_mean", running_mean), ("running_var", running_var),
                    ("weight", weight), ("bias", bias)):
        if t is not None and t.shape != (channels,):
            raise ValueError(f"batch_norm: {name} is {describe(t.data)} but input "
                             f"{describe(input.data)} has {channels} channels")
    if (running_mean is None) != (running_var is None):
        raise ValueError("batch_norm: pass both running_mean and running_var, or neither")
    if not training and running_mean is None:
        raise ValueError("batch_norm: running_mean and running_var are required when not training")
    if training and input.numel() // max(channels, 1) <= 1:
        raise ValueError(f"batch_norm: expected more than 1 value per channel when training, "
                         f"got input {describe(input.data)}")
    return BatchNorm.apply(input, weight, bias, running_mean, running_var, bool(training),
                           float(momentum), float(eps))


@runs_on_input_device
def layer_norm(input: Tensor, normalized_shape: int | Sequence[int], weight: Tensor | None = None,
               bias: Tensor | None = None, eps: float = 1e-5) -> Tensor:
    """Normalise over the trailing ``normalized_shape`` dims, PyTorch's ``F.layer_norm``.

    >>> import pyrt
    >>> [round(v, 3) for v in layer_norm(pyrt.tensor([[1.0, 3.0]]), 2).reshape(-1).tolist()]
    [-1.0, 1.0]
    """
    shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
    if not shape or tuple(input.shape[input.ndim - len(shape):]) != shape:
        raise ValueError(f"layer_norm: input is {describe(input.data)} but normalized_shape is "
                         f"{shape}; the input must end with those dims")
    for name, t in (("weight", weight), ("bias", bias)):
        if t is not None and t.shape != shape:
            raise ValueError(f"layer_norm: {name} is {describe(t.data)}, expected {shape}")
    if math.prod(shape) == 0:
        raise ValueError(f"layer_norm: normalized_shape {shape} has no elements")
    return LayerNorm.apply(input, weight, bias, len(shape), float(eps))
