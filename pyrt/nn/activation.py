"""Parameter-free layers: activations, ``Softmax``/``LogSoftmax``, ``Dropout``, ``Flatten``."""

from __future__ import annotations

from pyrt.nn import functional as F
from pyrt.nn.module import Module
from pyrt.tensor import Tensor

__all__ = ["Dropout", "Flatten", "LogSoftmax", "ReLU", "Sigmoid", "Softmax", "Tanh"]


class ReLU(Module):
    """``max(x, 0)``.

    ``inplace`` is accepted for PyTorch compatibility; pyrt always returns a
    new tensor (same values), since its ops never write into their inputs.

    >>> import pyrt
    >>> ReLU()(pyrt.tensor([-1.0, 2.0])).tolist()
    [0.0, 2.0]
    """

    def __init__(self, inplace: bool = False) -> None:
        super().__init__()
        self.inplace = inplace

    def forward(self, input: Tensor) -> Tensor:
        return F.relu(input)

    def extra_repr(self) -> str:
        return "inplace=True" if self.inplace else ""


class Sigmoid(Module):
    """``1 / (1 + exp(-x))``.

    >>> import pyrt
    >>> Sigmoid()(pyrt.tensor([0.0])).item()
    0.5
    """

    def forward(self, input: Tensor) -> Tensor:
        return F.sigmoid(input)


class Tanh(Module):
    """Hyperbolic tangent.

    >>> import pyrt
    >>> Tanh()(pyrt.tensor([0.0])).item()
    0.0
    """

    def forward(self, input: Tensor) -> Tensor:
        return F.tanh(input)


class Softmax(Module):
    """Softmax along ``dim``.

    >>> import pyrt
    >>> Softmax(dim=1)(pyrt.zeros(1, 2)).tolist()
    [[0.5, 0.5]]
    """

    def __init__(self, dim: int = -1) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, input: Tensor) -> Tensor:
        return F.softmax(input, self.dim)

    def extra_repr(self) -> str:
        return f"dim={self.dim}"


class LogSoftmax(Module):
    """Log-softmax along ``dim``.

    >>> import pyrt
    >>> round(LogSoftmax(dim=1)(pyrt.zeros(1, 2)).tolist()[0][0], 4)
    -0.6931
    """

    def __init__(self, dim: int = -1) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, input: Tensor) -> Tensor:
        return F.log_softmax(input, self.dim)

    def extra_repr(self) -> str:
        return f"dim={self.dim}"


class Dropout(Module):
    """Zero each element with probability ``p`` while training; identity in ``eval()``.

    >>> import pyrt
    >>> Dropout(0.5).eval()(pyrt.ones(3)).tolist()
    [1.0, 1.0, 1.0]
    """

    def __init__(self, p: float = 0.5, inplace: bool = False) -> None:
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"dropout probability has to be between 0 and 1, but got {p}")
        self.p = p
        self.inplace = inplace

    def forward(self, input: Tensor) -> Tensor:
        return F.dropout(input, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}, inplace={self.inplace}"


class Flatten(Module):
    """Merge dims ``start_dim..end_dim``; by default everything but the batch dim.

    >>> import pyrt
    >>> Flatten()(pyrt.zeros(32, 1, 8, 8)).shape
    (32, 64)
    """

    def __init__(self, start_dim: int = 1, end_dim: int = -1) -> None:
        super().__init__()
        self.start_dim = start_dim
        self.end_dim = end_dim

    def forward(self, input: Tensor) -> Tensor:
        return input.flatten(self.start_dim, self.end_dim)

    def extra_repr(self) -> str:
        return f"start_dim={self.start_dim}, end_dim={self.end_dim}"
