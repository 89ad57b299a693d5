"""Normalisation layers: ``BatchNorm1d``, ``BatchNorm2d``, ``BatchNorm3d`` and ``LayerNorm``.

State names follow PyTorch (``weight``, ``bias``, ``running_mean``,
``running_var``, ``num_batches_tracked``) so ``state_dict`` keys and shapes
match and checkpoints copy across.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from pyrt.autograd import on_device_of
from pyrt.backend import describe
from pyrt.nn import functional as F
from pyrt.nn.module import Module
from pyrt.nn.parameter import Parameter
from pyrt.tensor import Tensor

__all__ = ["BatchNorm1d", "BatchNorm2d", "BatchNorm3d", "LayerNorm"]


class _BatchNorm(Module):
    expected_dims: tuple[int, ...] = ()

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1,
                 affine: bool = True, track_running_stats: bool = True,
                 dtype: Any = None, *, bias: bool = True) -> None:
        super().__init__()
        if num_features <= 0:
            raise ValueError(f"{type(self).__name__}: num_features must be positive, "
                             f"got {num_features}")
        self.num_features = num_features
        self.eps = eps
        self.momentum = momentum
        self.affine = affine
        self.track_running_stats = track_running_stats
        dtype = np.float32 if dtype is None else np.dtype(dtype)
        if affine:
            self.weight = Parameter(np.ones(num_features, dtype=dtype))
            if bias:
                self.bias = Parameter(np.zeros(num_features, dtype=dtype))
            else:
                self.register_parameter("bias", None)
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        if track_running_stats:
            self.register_buffer("running_mean", Tensor(np.zeros(num_features, dtype=dtype)))
            self.register_buffer("running_var", Tensor(np.ones(num_features, dtype=dtype)))
            self.register_buffer("num_batches_tracked", Tensor(np.array(0, dtype=np.int64)))
        else:
            self.register_buffer("running_mean", None)
            self.register_buffer("running_var", None)
            self.register_buffer("num_batches_tracked", None)

    def reset_running_stats(self) -> None:
        """Back to mean 0, variance 1, no batches seen."""
        if self.track_running_stats:
            self.running_mean.data[...] = 0
            self.running_var.data[...] = 1
            self.num_batches_tracked.data[...] = 0

    def reset_parameters(self) -> None:
        """Running statistics reset; weight to 1 and bias to 0."""
        self.reset_running_stats()
        if self.affine:
            self.weight.data[...] = 1
            if self.bias is not None:
                self.bias.data[...] = 0

    def forward(self, input: Tensor) -> Tensor:
        if input.ndim not in self.expected_dims:
            wanted = " or ".join(f"{d}D" for d in self.expected_dims)
            raise ValueError(f"{type(self).__name__}: expected {wanted} input, got "
                             f"{describe(input.data)}")
        if input.shape[1] != self.num_features:
            raise ValueError(f"{type(self).__name__}: input is {describe(input.data)} but "
                             f"num_features is {self.num_features} (input must be (N, "
                             f"{self.num_features}, ...))")
        momentum = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats:
            with on_device_of(self.num_batches_tracked):
                self.num_batches_tracked.data += 1
            if self.momentum is None:  # a cumulative average over every batch so far
                momentum = 1.0 / float(self.num_batches_tracked.data)
        # Without running statistics, evaluation normalises with the batch's, as in PyTorch.
        use_batch_stats = self.training or self.running_mean is None
        track = not self.training or self.track_running_stats
        return F.batch_norm(input, self.running_mean if track else None,
                            self.running_var if track else None, self.weight, self.bias,
                            use_batch_stats, momentum, self.eps)

    def extra_repr(self) -> str:
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, "
                f"affine={self.affine}, bias={self.bias is not None}, "
                f"track_running_stats={self.track_running_stats}")


class BatchNorm2d(_BatchNorm):
    """Per-channel normalisation of (N, C, H, W) with batch statistics in training.

    Training normalises with the batch's mean and biased variance and folds
    them into ``running_mean``/``running_var`` (unbiased) with ``momentum``;
    evaluation normalises with the running statistics.

    >>> import pyrt
    >>> bn = BatchNorm2d(4)
    >>> bn
    BatchNorm2d(4, eps=1e-05, momentum=0.1, affine=True, bias=True, track_running_stats=True)
    >>> list(bn.state_dict())
    ['weight', 'bias', 'running_mean', 'running_var', 'num_batches_tracked']
    >>> bn(pyrt.randn(8, 4, 5, 5)).shape
    (8, 4, 5, 5)
    """

    expected_dims = (4,)


class BatchNorm1d(_BatchNorm):
    """Per-feature normalisation of (N, C) or (N, C, L); see ``BatchNorm2d``.

    >>> import pyrt
    >>> BatchNorm1d(3)(pyrt.randn(16, 3)).shape
    (16, 3)
    """

    expected_dims = (2, 3)


class BatchNorm3d(_BatchNorm):
    """Per-channel normalisation of (N, C, D, H, W) (volumes, video); see ``BatchNorm2d``.

    >>> import pyrt
    >>> BatchNorm3d(2)(pyrt.randn(3, 2, 4, 5, 5)).shape
    (3, 2, 4, 5, 5)
    """

    expected_dims = (5,)


class LayerNorm(Module):
    """Normalise over the trailing ``normalized_shape`` dims of each sample, then scale and shift.

    >>> import pyrt
    >>> ln = LayerNorm(8)
    >>> ln
    LayerNorm((8,), eps=1e-05, elementwise_affine=True, bias=True)
    >>> ln(pyrt.randn(2, 5, 8)).shape
    (2, 5, 8)
    """

    def __init__(self, normalized_shape: int | Sequence[int], eps: float = 1e-5,
                 elementwise_affine: bool = True, bias: bool = True, dtype: Any = None) -> None:
        super().__init__()
        shape = ((normalized_shape,) if isinstance(normalized_shape, int)
                 else tuple(normalized_shape))
        if not shape or min(shape) <= 0:
            raise ValueError(f"LayerNorm: normalized_shape must be positive dims, "
                             f"got {normalized_shape!r}")
        self.normalized_shape = shape
        self.eps = eps
        self.elementwise_affine = elementwise_affine
        dtype = np.float32 if dtype is None else np.dtype(dtype)
        if elementwise_affine:
            self.weight = Parameter(np.ones(shape, dtype=dtype))
            if bias:
                self.bias = Parameter(np.zeros(shape, dtype=dtype))
            else:
                self.register_parameter("bias", None)
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)

    def reset_parameters(self) -> None:
        """Weight to 1 and bias to 0."""
        if self.weight is not None:
            self.weight.data[...] = 1
        if self.bias is not None:
            self.bias.data[...] = 0

    def forward(self, input: Tensor) -> Tensor:
        return F.layer_norm(input, self.normalized_shape, self.weight, self.bias, self.eps)

    def extra_repr(self) -> str:
        return (f"{self.normalized_shape}, eps={self.eps}, "
                f"elementwise_affine={self.elementwise_affine}, bias={self.bias is not None}")
