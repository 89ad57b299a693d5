"""Loss modules: thin holders of a reduction (and options) around ``pyrt.nn.functional``."""

from __future__ import annotations

from pyrt.nn import functional as F
from pyrt.nn.module import Module
from pyrt.tensor import Tensor

__all__ = ["BCELoss", "BCEWithLogitsLoss", "CrossEntropyLoss", "MSELoss", "NLLLoss"]

_REDUCTIONS = ("mean", "sum", "none")


class _Loss(Module):
    def __init__(self, reduction: str = "mean") -> None:
        super().__init__()
        if reduction not in _REDUCTIONS:
            raise ValueError(
                f"{type(self).__name__}: reduction must be one of {_REDUCTIONS}, got {reduction!r}"
            )
        self.reduction = reduction


class MSELoss(_Loss):
    """Mean squared error.

    >>> import pyrt
    >>> MSELoss()(pyrt.tensor([1.0, 3.0]), pyrt.tensor([1.0, 1.0])).item()
    2.0
    """

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return F.mse_loss(input, target, reduction=self.reduction)


class CrossEntropyLoss(_Loss):
    """Softmax cross-entropy of logits (N, C) against class indices (N,).

    Targets equal to ``ignore_index`` add nothing and do not count in the mean.

    >>> import pyrt
    >>> round(CrossEntropyLoss()(pyrt.zeros(2, 4), pyrt.tensor([0, 3])).item(), 4)
    1.3863
    """

    # Class weights and label smoothing are not offered: a PyTorch call that
    # passes them fails with a TypeError rather than training a different model.
    def __init__(self, *, ignore_index: int = -100, reduction: str = "mean") -> None:
        super().__init__(reduction)
        self.ignore_index = ignore_index

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return F.cross_entropy(input, target, reduction=self.reduction,
                               ignore_index=self.ignore_index)


class NLLLoss(_Loss):
    """Negative log-likelihood of class indices under log-probabilities (N, C).

    >>> import pyrt
    >>> NLLLoss()(pyrt.tensor([[-1.0, -2.0]]), pyrt.tensor([1])).item()
    2.0
    """

    def __init__(self, *, ignore_index: int = -100, reduction: str = "mean") -> None:
        super().__init__(reduction)
        self.ignore_index = ignore_index

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return F.nll_loss(input, target, reduction=self.reduction, ignore_index=self.ignore_index)


class BCELoss(_Loss):
    """Binary cross-entropy of probabilities against targets in [0, 1].

    >>> import pyrt
    >>> round(BCELoss()(pyrt.tensor([0.5]), pyrt.tensor([1.0])).item(), 4)
    0.6931
    """


    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return F.binary_cross_entropy(input, target, reduction=self.reduction)


class BCEWithLogitsLoss(_Loss):
    """Sigmoid and binary cross-entropy fused, stable for large logits.

    >>> import pyrt
    >>> round(BCEWithLogitsLoss()(pyrt.tensor([0.0]), pyrt.tensor([1.0])).item(), 4)
    0.6931
    """


    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return F.binary_cross_entropy_with_logits(input, target, reduction=self.reduction)
