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
    """Softmax cross-entropy of logits against class indices or class probabilities.

    Takes (N, C), (C,) or (N, C, d1, ...) logits; see ``F.cross_entropy`` for
    ``weight``, ``ignore_index`` and ``label_smoothing``.

    >>> import pyrt
    >>> round(CrossEntropyLoss()(pyrt.zeros(2, 4), pyrt.tensor([0, 3])).item(), 4)
    1.3863
    >>> round(CrossEntropyLoss(label_smoothing=0.1)(pyrt.tensor([[2.0, 0.0]]), pyrt.tensor([0])).item(), 4)
    0.2269
    """

    def __init__(self, weight: Tensor | None = None, size_average: None = None, ignore_index: int = -100,
                 reduce: None = None, reduction: str = "mean", label_smoothing: float = 0.0) -> None:
        super().__init__(_legacy_reduction(type(self).__name__, size_average, reduce, reduction))
        self.ignore_index = ignore_index
        self.label_smoothing = label_smoothing
        # A buffer, as in PyTorch: it follows .to() and appears in the state_dict.
        self.register_buffer("weight", weight)

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return F.cross_entropy(input, target, self.weight, ignore_index=self.ignore_index,
                               reduction=self.reduction, label_smoothing=self.label_smoothing)


class NLLLoss(_Loss):
    """Negative log-likelihood of class indices under log-probabilities (N, C), (C,) or (N, C, ...).

    >>> import pyrt
    >>> NLLLoss()(pyrt.tensor([[-1.0, -2.0]]), pyrt.tensor([1])).item()
    2.0
    >>> NLLLoss(weight=pyrt.tensor([1.0, 3.0]), reduction="sum")(pyrt.tensor([[-1.0, -2.0]]),
    ...                                                        pyrt.tensor([1])).item()
    6.0
    """

    def __init__(self, weight: Tensor | None = None, size_average: None = None, ignore_index: int = -100,
                 reduce: None = None, reduction: str = "mean") -> None:
        super().__init__(_legacy_reduction(type(self).__name__, size_average, reduce, reduction))
        self.ignore_index = ignore_index
        self.register_buffer("weight", weight)

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return F.nll_loss(input, target, self.weight, ignore_index=self.ignore_index,
                          reduction=self.reduction)


def _legacy_reduction(name: str, size_average: None, reduce: None, reduction: str) -> str:
    # PyTorch deprecated these long ago; refusing them keeps one way to say it.
    if size_average is not None or reduce is not None:
        raise TypeError(f"{name}: size_average and reduce are deprecated in PyTorch and not "
                        f"supported; pass reduction='mean', 'sum' or 'none'")
    return reduction


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

    ``weight`` rescales each element; ``pos_weight`` (one per class, the last dim)
    weighs the positive term, as in PyTorch.

    >>> import pyrt
    >>> round(BCEWithLogitsLoss()(pyrt.tensor([0.0]), pyrt.tensor([1.0])).item(), 4)
    0.6931
    >>> round(BCEWithLogitsLoss(pos_weight=pyrt.tensor([2.0]))(pyrt.tensor([0.0]),
    ...                                                        pyrt.tensor([1.0])).item(), 4)
    1.3863
    """

    def __init__(self, weight: Tensor | None = None, size_average: None = None, reduce: None = None,
                 reduction: str = "mean", pos_weight: Tensor | None = None) -> None:
        super().__init__(_legacy_reduction(type(self).__name__, size_average, reduce, reduction))
        self.register_buffer("weight", weight)
        self.register_buffer("pos_weight", pos_weight)

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return F.binary_cross_entropy_with_logits(input, target, self.weight, reduction=self.reduction,
                                                  pos_weight=self.pos_weight)
