"""``Linear`` (the affine layer) and ``Identity``."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from pyrt.nn import functional as F
from pyrt.nn import init
from pyrt.nn.module import Module
from pyrt.nn.parameter import Parameter
from pyrt.tensor import Tensor

__all__ = ["Identity", "Linear"]


class Linear(Module):
    """``y = x @ weight.T + bias`` with weight (out_features, in_features).

    Initialised as PyTorch does: weight and bias from U(-1/sqrt(in), 1/sqrt(in)).

    >>> import pyrt
    >>> layer = Linear(784, 10)
    >>> layer
    Linear(in_features=784, out_features=10, bias=True)
    >>> layer(pyrt.ones(32, 784)).shape
    (32, 10)
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True,
                 dtype: Any = None) -> None:
        super().__init__()
        if in_features < 0 or out_features < 0:
            raise ValueError(f"Linear: features must be >= 0, got in_features={in_features}, "
                             f"out_features={out_features}")
        self.in_features = in_features
        self.out_features = out_features
        dtype = np.float32 if dtype is None else np.dtype(dtype)
        self.weight = Parameter(np.empty((out_features, in_features), dtype=dtype))
        if bias:
            self.bias = Parameter(np.empty((out_features,), dtype=dtype))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Redraw weight and bias from PyTorch's default distribution."""
        # a=sqrt(5) gives gain sqrt(1/3), so the bound is sqrt(3) * gain / sqrt(fan_in)
        # = 1/sqrt(fan_in): PyTorch's historical default, kept for parity.
        init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            bound = 1 / math.sqrt(self.in_features) if self.in_features > 0 else 0.0
            init.uniform_(self.bias, -bound, bound)

    def forward(self, input: Tensor) -> Tensor:
        return F.linear(input, self.weight, self.bias)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}")


class Identity(Module):
    """Returns its input unchanged; a placeholder when swapping layers out.

    >>> import pyrt
    >>> Identity()(pyrt.ones(2)).tolist()
    [1.0, 1.0]
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # Arguments are accepted and ignored, as in PyTorch, so Identity can
        # stand in for any layer constructor.
        super().__init__()

    def forward(self, input: Tensor) -> Tensor:
        return input
