"""Loss functions. Cross-entropy and the binary losses are single nodes whose
backward is the closed form (``softmax - onehot``, ``sigmoid - target``), which is
both faster and more stable than differentiating through log and exp."""

from __future__ import annotations

from typing import Any

import numpy as np

from pyrt.autograd import Function
from pyrt.backend import describe, get_array_module
from pyrt.tensor import Tensor

__all__ = [
    "binary_cross_entropy", "binary_cross_entropy_with_logits", "cross_entropy", "mse_loss",
    "nll_loss",
]

_REDUCTIONS = ("mean", "sum", "none")


def _check_reduction(name: str, reduction: str) -> None:
    if reduction not in _REDUCTIONS:
        raise ValueError(f"{name}: reduction must be one of {_REDUCTIONS}, got {reduction!r}")


def _reduce(losses: Any, reduction: str) -> Any:
    if reduction == "sum":
        return losses.sum()
    if reduction == "mean":
        return losses.mean()
    return losses


def _reduced_grad(grad: Any, shape: tuple[int, ...], reduction: str) -> Any:
    """Gradient of the reduction, broadcast back to the per-element losses."""
    if reduction == "none":
        return grad
    count = int(np.prod(shape)) if reduction == "mean" else 1
    return get_array_module(grad).broadcast_to(grad / max(count, 1), shape)


def _check_same_shape(name: str, input: Tensor, target: Tensor) -> None:
    if input.shape != target.shape:
        raise ValueError(
            f"{name}: input is {describe(input.data)} but target is {describe(target.data)}; "
            "they must have the same shape"
        )


def mse_loss(input: Tensor, target: Tensor, reduction: str = "mean") -> Tensor:
    """Mean squared error ``(input - target) ** 2``, reduced.

    >>> import pyrt
    >>> mse_loss(pyrt.tensor([1.0, 3.0]), pyrt.tensor([1.0, 1.0])).item()
    2.0
    """
    _check_reduction("mse_loss", reduction)
    _check_same_shape("mse_loss", input, target)
    diff = input - target
    squared = diff * diff
    if reduction == "none":
        return squared
    return squared.sum() if reduction == "sum" else squared.mean()


class NLLLoss(Function):
    """Negative log-likelihood of class indices under log-probabilities (N, C)."""

    def forward(self, log_probs: Any, target: Any, reduction: str, ignore_index: int) -> Any:
        xp = get_array_module(log_probs)
        valid = target != ignore_index
        safe_target = xp.where(valid, target, 0)
        rows = xp.arange(target.shape[0])
        losses = -log_probs[rows, safe_target] * valid
        self.shape, self.reduction = log_probs.shape, reduction
        self.count = int(valid.sum()) if reduction == "mean" else 1
        self.save_for_backward(safe_target, valid)
        if reduction == "none":
            return losses
        total = losses.sum()
        # A mean over zero valid targets is 0/0 = NaN, as in PyTorch.
        return total / self.count if reduction == "mean" else total

    def backward(self, grad: Any) -> tuple[Any, None, None, None]:
        safe_target, valid = self.saved_tensors
        xp = get_array_module(grad)
        grad_log_probs = xp.zeros(self.shape, dtype=grad.dtype)
        per_row = grad * valid if self.reduction == "none" else (grad / self.count) * valid
        grad_log_probs[xp.arange(self.shape[0]), safe_target] = -per_row
        return grad_log_probs, None, None, None


class CrossEntropy(Function):
    """``nll_loss(log_softmax(logits))`` fused: backward is ``softmax - onehot``."""

    def forward(self, logits: Any, target: Any, reduction: str, ignore_index: int) -> Any:
        xp = get_array_module(logits)
        shifted = logits - logits.max(axis=1, keepdims=True)
        exp = xp.exp(shifted)
        sum_exp = exp.sum(axis=1, keepdims=True)
        log_probs = shifted - xp.log(sum_exp)
        self.nll = NLLLoss()
        out = self.nll.forward(log_probs, target, reduction, ignore_index)
        self.save_for_backward(exp / sum_exp)
        return out

    def backward(self, grad: Any) -> tuple[Any, None, None, None]:
        (probs,) = self.saved_tensors
        grad_log_probs = self.nll.backward(grad)[0]
        # d loss / d logits = g_lp - softmax * sum(g_lp) per row; with one nonzero
        # per row that is (probs - onehot) * weight.
        row_weight = -grad_log_probs.sum(axis=1, keepdims=True)
        return grad_log_probs + probs * row_weight, None, None, None

    def release(self) -> None:
        super().release()
        if hasattr(self, "nll"):
            self.nll.release()


def _check_class_target(name: str, input: Tensor, target: Tensor, ignore_index: int) -> None:
    if input.ndim != 2:
        raise ValueError(f"{name}: input must be (N, C), got {describe(input.data)}")
    if target.ndim != 1 or target.shape[0] != input.shape[0]:
        raise ValueError(
            f"{name}: input is {describe(input.data)} so target must be ({input.shape[0]},) "
            f"class indices, got {describe(target.data)}"
        )
    if not np.issubdtype(target.dtype, np.integer):
        raise TypeError(f"{name}: target must hold integer class indices, got {target.dtype}")
    classes = input.shape[1]
    bad = (target.data != ignore_index) & ((target.data < 0) | (target.data >= classes))
    if bool(bad.any()):
        value = int(target.data[bad.nonzero()[0][0]])
        raise IndexError(f"{name}: target {value} is out of bounds for {classes} classes")


def cross_entropy(input: Tensor, target: Tensor, reduction: str = "mean",
                  ignore_index: int = -100) -> Tensor:
    """Softmax cross-entropy of logits (N, C) against class indices (N,).

    >>> import pyrt
    >>> round(cross_entropy(pyrt.tensor([[0.0, 0.0]]), pyrt.tensor([1])).item(), 4)
    0.6931
    """
    _check_reduction("cross_entropy", reduction)
    _check_class_target("cross_entropy", input, target, ignore_index)
    return CrossEntropy.apply(input, target.data, reduction, ignore_index)


def nll_loss(input: Tensor, target: Tensor, reduction: str = "mean",
             ignore_index: int = -100) -> Tensor:
    """Negative log-likelihood of class indices (N,) under log-probabilities (N, C).

    >>> import pyrt
    >>> x = pyrt.tensor([[0.0, 0.0]])
    >>> round(nll_loss(pyrt.log_softmax(x, dim=1), pyrt.tensor([0])).item(), 4)
    0.6931
    """
    _check_reduction("nll_loss", reduction)
    _check_class_target("nll_loss", input, target, ignore_index)
    return NLLLoss.apply(input, target.data, reduction, ignore_index)


class BinaryCrossEntropy(Function):
    # PyTorch clamps each log at -100 so a probability of exactly 0 or 1 gives a
    # finite loss; the gradient's denominator is floored for the same reason.
    def forward(self, p: Any, target: Any, reduction: str) -> Any:
        xp = get_array_module(p)
        with np.errstate(divide="ignore"):  # log(0) = -inf, then clamped
            log_p = xp.maximum(xp.log(p), -100.0)
            log_not_p = xp.maximum(xp.log1p(-p), -100.0)
        self.reduction = reduction
        self.save_for_backward(p, target)
        return _reduce(-(target * log_p + (1 - target) * log_not_p), reduction)

    def backward(self, grad: Any) -> tuple[Any, Any, None]:
        p, target = self.saved_tensors
        xp = get_array_module(p)
        grad = _reduced_grad(grad, p.shape, self.reduction)
        grad_p = grad * (p - target) / xp.maximum(p * (1 - p), 1e-12)
        with np.errstate(divide="ignore"):
            grad_target = grad * (xp.maximum(xp.log1p(-p), -100.0) - xp.maximum(xp.log(p), -100.0))
        return grad_p, grad_target, None


class BinaryCrossEntropyWithLogits(Function):
    # max(x, 0) - x * t + log(1 + exp(-|x|)) never exponentiates a large number.
    def forward(self, x: Any, target: Any, reduction: str) -> Any:
        xp = get_array_module(x)
        self.reduction = reduction
        self.save_for_backward(x, target)
        losses = xp.maximum(x, 0) - x * target + xp.log1p(xp.exp(-xp.abs(x)))
        return _reduce(losses, reduction)

    def backward(self, grad: Any) -> tuple[Any, Any, None]:
        x, target = self.saved_tensors
        xp = get_array_module(x)
        grad = _reduced_grad(grad, x.shape, self.reduction)
        return grad * (0.5 * (1 + xp.tanh(0.5 * x)) - target), -grad * x, None


def binary_cross_entropy(input: Tensor, target: Tensor, reduction: str = "mean") -> Tensor:
    """Binary cross-entropy of probabilities in [0, 1] against targets in [0, 1].

    >>> import pyrt
    >>> round(binary_cross_entropy(pyrt.tensor([0.5]), pyrt.tensor([1.0])).item(), 4)
    0.6931
    """
    _check_reduction("binary_cross_entropy", reduction)
    _check_same_shape("binary_cross_entropy", input, target)
    data = input.data
    if data.size and bool(((data < 0) | (data > 1)).any()):
        raise ValueError("binary_cross_entropy: input must hold probabilities in [0, 1]")
    return BinaryCrossEntropy.apply(input, target.to(input.dtype), reduction)


def binary_cross_entropy_with_logits(input: Tensor, target: Tensor,
                                     reduction: str = "mean") -> Tensor:
    """Sigmoid + binary cross-entropy in one numerically stable step.

    >>> import pyrt
    >>> round(binary_cross_entropy_with_logits(pyrt.tensor([0.0]), pyrt.tensor([1.0])).item(), 4)
    0.6931
    """
    _check_reduction("binary_cross_entropy_with_logits", reduction)
    _check_same_shape("binary_cross_entropy_with_logits", input, target)
    return BinaryCrossEntropyWithLogits.apply(input, target.to(input.dtype), reduction)


