"""Loss functions. Cross-entropy and the binary losses are single nodes whose
backward is the closed form (``softmax - onehot``, ``sigmoid - target``), which is
both faster and more stable than differentiating through log and exp."""

from __future__ import annotations

from typing import Any

import numpy as np

from pyrt.autograd import Function, runs_on_input_device
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


@runs_on_input_device
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
    """Negative log-likelihood of class indices (M,) under log-probabilities (M, C).

    With class weights ``w``, row i contributes ``-w[t_i] * log_probs[i, t_i]`` and the
    mean divides by ``sum(w[t_i])`` over the rows that are not ``ignore_index``, as in
    PyTorch; without weights every w is 1, so the mean is over the counted rows.
    """

    def forward(self, log_probs: Any, target: Any, weight: Any | None, reduction: str,
                ignore_index: int) -> Any:
        xp = get_array_module(log_probs)
        valid = target != ignore_index
        safe_target = xp.where(valid, target, 0)
        rows = xp.arange(target.shape[0])
        row_weight = valid.astype(log_probs.dtype)
        if weight is not None:
            row_weight = row_weight * weight[safe_target]
        losses = -log_probs[rows, safe_target] * row_weight
        self.shape, self.reduction = log_probs.shape, reduction
        self.total_weight = row_weight.sum() if reduction == "mean" else 1
        self.save_for_backward(safe_target, row_weight)
        if reduction == "none":
            return losses
        total = losses.sum()
        # A mean over zero counted rows is 0/0 = NaN, as in PyTorch.
        with np.errstate(invalid="ignore", divide="ignore"):
            return total / self.total_weight if reduction == "mean" else total

    def backward(self, grad: Any) -> tuple[Any, None, None, None, None]:
        safe_target, row_weight = self.saved_tensors
        xp = get_array_module(grad)
        grad_log_probs = xp.zeros(self.shape, dtype=grad.dtype)
        if self.reduction == "mean":
            # All rows ignored: the forward is NaN, the gradient 0 (not NaN), as in PyTorch.
            scale = grad / self.total_weight if self.total_weight else grad * 0
            per_row = scale * row_weight
        else:
            per_row = grad * row_weight
        grad_log_probs[xp.arange(self.shape[0]), safe_target] = -per_row
        return grad_log_probs, None, None, None, None


class CrossEntropy(Function):
    """``nll_loss(log_softmax(logits))`` fused: backward is ``softmax - onehot``."""

    def forward(self, logits: Any, target: Any, weight: Any | None, reduction: str,
                ignore_index: int) -> Any:
        log_probs, probs = _log_softmax_rows(logits)
        self.nll = NLLLoss()
        out = self.nll.forward(log_probs, target, weight, reduction, ignore_index)
        self.save_for_backward(probs)
        return out

    def backward(self, grad: Any) -> tuple[Any, None, None, None, None]:
        (probs,) = self.saved_tensors
        grad_log_probs = self.nll.backward(grad)[0]
        # d loss / d logits = g_lp - softmax * sum(g_lp) per row; with one nonzero
        # per row that is (probs - onehot) * weight.
        row_weight = -grad_log_probs.sum(axis=1, keepdims=True)
        return grad_log_probs + probs * row_weight, None, None, None, None

    def release(self) -> None:
        super().release()
        if hasattr(self, "nll"):
            self.nll.release()


def _log_softmax_rows(logits: Any) -> tuple[Any, Any]:
    """(log_softmax, softmax) of (M, C) logits along C, shifted by the row max."""
    xp = get_array_module(logits)
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = xp.exp(shifted)
    sum_exp = exp.sum(axis=1, keepdims=True)
    return shifted - xp.log(sum_exp), exp / sum_exp


class SoftCrossEntropy(Function):
    """``-sum_c coeffs[i, c] * log_softmax(logits)[i, c]`` per row, then reduced.

    Every other cross-entropy form is this with some (M, C) coefficients: class
    probabilities times class weights, or label smoothing's ``(1 - eps) * onehot
    + eps / C`` (times weights). The gradient is ``softmax * sum(coeffs) - coeffs``
    per row for the logits and ``-log_softmax`` for the coefficients.
    """

    def forward(self, logits: Any, coeffs: Any, reduction: str, denominator: Any) -> Any:
        log_probs, probs = _log_softmax_rows(logits)
        losses = -(coeffs * log_probs).sum(axis=1)
        self.reduction, self.denominator = reduction, denominator
        self.save_for_backward(log_probs, probs, coeffs)
        if reduction == "none":
            return losses
        with np.errstate(invalid="ignore", divide="ignore"):
            return losses.sum() / denominator if reduction == "mean" else losses.sum()

    def backward(self, grad: Any) -> tuple[Any, Any, None, None]:
        log_probs, probs, coeffs = self.saved_tensors
        if self.reduction == "none":
            per_row = grad[:, None]
        elif self.reduction == "mean":
            per_row = grad / self.denominator if self.denominator else grad * 0
        else:
            per_row = grad
        grad_logits = (probs * coeffs.sum(axis=1, keepdims=True) - coeffs) * per_row
        grad_coeffs = -log_probs * per_row if self.needs_input_grad[1] else None
        return grad_logits, grad_coeffs, None, None


def _rows_last(name: str, input: Tensor, target: Tensor,
               probabilities: bool) -> tuple[Tensor, Tensor, tuple[int, ...]]:
    """(N, C, d1, ...) / (C,) input -> (M, C) rows; target -> (M,) (or (M, C)); and the
    per-sample shape that ``reduction='none'`` gives back."""
    if input.ndim == 0:
        raise ValueError(f"{name}: input must be (C,), (N, C) or (N, C, d1, ...), got a 0-d tensor")
    if input.ndim == 1:  # unbatched: one sample
        input, target = input.unsqueeze(0), target.unsqueeze(0)
        sample_shape: tuple[int, ...] = ()
    else:
        sample_shape = (input.shape[0], *input.shape[2:])
    classes = input.shape[1]
    expected = input.shape if probabilities else (input.shape[0], *input.shape[2:])
    if target.shape != expected:
        kind = "class probabilities" if probabilities else "class indices"
        raise ValueError(f"{name}: input is {describe(input.data)} so target must be {expected} "
                         f"{kind}, got {describe(target.data)}")
    if input.ndim > 2:  # class dim last, then one row per position
        order = (0, *range(2, input.ndim), 1)
        input = input.permute(*order).reshape(-1, classes)
        target = target.permute(*order).reshape(-1, classes) if probabilities else target.reshape(-1)
    return input, target, sample_shape


def _check_indices(name: str, target: Tensor, classes: int, ignore_index: int) -> None:
    bad = (target.data != ignore_index) & ((target.data < 0) | (target.data >= classes))
    if bool(bad.any()):
        value = int(target.data[bad.nonzero()][0])
        raise IndexError(f"{name}: target {value} is out of bounds for {classes} classes")


def _check_weight(name: str, weight: Tensor | None, input: Tensor) -> None:
    classes = input.shape[1] if input.ndim > 1 else input.shape[0]
    if weight is not None and weight.shape != (classes,):
        raise ValueError(f"{name}: weight is {describe(weight.data)} but input "
                         f"{describe(input.data)} has {classes} classes; expected ({classes},)")


@runs_on_input_device
def cross_entropy(input: Tensor, target: Tensor, weight: Tensor | None = None,
                  ignore_index: int = -100, reduction: str = "mean",
                  label_smoothing: float = 0.0) -> Tensor:
    """Softmax cross-entropy of logits against class indices or class probabilities.

    ``input`` is (N, C), (C,) unbatched, or (N, C, d1, ...) with one class
    distribution per position; ``target`` is integer class indices (N,) / () /
    (N, d1, ...), or float probabilities shaped like ``input``. ``weight`` (C,)
    scales each class; ``ignore_index`` rows add nothing and do not count in the
    mean; ``label_smoothing`` mixes the target with the uniform distribution.
    The mean of index targets divides by the summed weights of the counted rows,
    that of probability targets by the number of rows, as in PyTorch.

    >>> import pyrt
    >>> round(cross_entropy(pyrt.tensor([[0.0, 0.0]]), pyrt.tensor([1])).item(), 4)
    0.6931
    >>> round(cross_entropy(pyrt.tensor([[2.0, 0.0]]), pyrt.tensor([0]), label_smoothing=0.2).item(), 4)
    0.3269
    """
    _check_reduction("cross_entropy", reduction)
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"cross_entropy: label_smoothing must be in [0, 1], got {label_smoothing}")
    _check_weight("cross_entropy", weight, input)
    # PyTorch tells the two target kinds apart by shape: the input's shape means probabilities.
    probabilities = target.shape == input.shape and input.ndim > 0
    if probabilities and not np.issubdtype(target.dtype, np.floating):
        raise TypeError(f"cross_entropy: a target shaped like the input holds class probabilities and "
                        f"must be floating point, got {target.dtype}")
    if not probabilities and not np.issubdtype(target.dtype, np.integer):
        raise TypeError(f"cross_entropy: target must hold integer class indices (or float class "
                        f"probabilities shaped like the input {input.shape}), got {describe(target.data)}")
    if probabilities and target.dtype != input.dtype:
        target = target.to(input.dtype)
    if weight is not None and weight.dtype != input.dtype:
        raise TypeError(f"cross_entropy: weight is {weight.dtype} but input is {input.dtype}")
    rows, target_rows, sample_shape = _rows_last("cross_entropy", input, target, probabilities)
    classes = rows.shape[1]
    xp = get_array_module(rows.data)
    class_weight = None if weight is None else weight.data
    if probabilities:
        # Coefficients are a tensor here: a probability target may itself need a gradient.
        coeffs = target_rows
        if label_smoothing:
            coeffs = coeffs * (1 - label_smoothing) + label_smoothing / classes
        if weight is not None:
            coeffs = coeffs * Tensor(class_weight)
        losses = SoftCrossEntropy.apply(rows, coeffs, reduction, rows.shape[0])
    else:
        _check_indices("cross_entropy", target_rows, classes, ignore_index)
        if not label_smoothing:
            losses = CrossEntropy.apply(rows, target_rows.data, class_weight, reduction, ignore_index)
        else:
            t = target_rows.data
            valid = t != ignore_index
            safe = xp.where(valid, t, 0)
            w = xp.ones(classes, dtype=rows.dtype) if class_weight is None else class_weight
            coeffs = xp.broadcast_to(w * (label_smoothing / classes), rows.shape).copy()
            coeffs[xp.arange(len(t)), safe] += (1 - label_smoothing) * w[safe]
            coeffs *= valid[:, None]
            denominator = (w[safe] * valid).sum()
            losses = SoftCrossEntropy.apply(rows, Tensor(coeffs), reduction, denominator)
    return losses.reshape(sample_shape) if reduction == "none" else losses


@runs_on_input_device
def nll_loss(input: Tensor, target: Tensor, weight: Tensor | None = None,
             ignore_index: int = -100, reduction: str = "mean") -> Tensor:
    """Negative log-likelihood of class indices under log-probabilities.

    Shapes as for ``cross_entropy`` with index targets: (N, C) with (N,), (C,) with
    (), or (N, C, d1, ...) with (N, d1, ...). ``weight`` (C,) scales each class and
    the mean divides by the summed weights of the counted rows.

    >>> import pyrt
    >>> x = pyrt.tensor([[0.0, 0.0]])
    >>> round(nll_loss(pyrt.log_softmax(x, dim=1), pyrt.tensor([0])).item(), 4)
    0.6931
    """
    _check_reduction("nll_loss", reduction)
    _check_weight("nll_loss", weight, input)
    if not np.issubdtype(target.dtype, np.integer):
        raise TypeError(f"nll_loss: target must hold integer class indices, got {target.dtype}")
    if weight is not None and weight.dtype != input.dtype:
        raise TypeError(f"nll_loss: weight is {weight.dtype} but input is {input.dtype}")
    rows, target_rows, sample_shape = _rows_last("nll_loss", input, target, False)
    _check_indices("nll_loss", target_rows, rows.shape[1], ignore_index)
    losses = NLLLoss.apply(rows, target_rows.data, None if weight is None else weight.data,
                           reduction, ignore_index)
    return losses.reshape(sample_shape) if reduction == "none" else losses


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
    """``w * (pos_weight * t * softplus(-x) + (1 - t) * softplus(x))``, PyTorch's form.

    ``log(sigmoid(x)) = -softplus(-x)`` and ``log(1 - sigmoid(x)) = -softplus(x)``;
    softplus is computed as ``max(z, 0) + log1p(exp(-|z|))``, which never
    exponentiates a large number. Without ``pos_weight`` and ``weight`` this is
    the plain binary cross-entropy of ``sigmoid(x)``.
    """

    def forward(self, x: Any, target: Any, weight: Any | None, pos_weight: Any | None,
                reduction: str) -> Any:
        xp = get_array_module(x)
        tail = xp.log1p(xp.exp(-xp.abs(x)))
        softplus_neg = xp.maximum(-x, 0) + tail  # -log(sigmoid(x))
        log_weight = 1 if pos_weight is None else (pos_weight - 1) * target + 1
        unweighted = (1 - target) * x + log_weight * softplus_neg
        self.reduction = reduction
        self.save_for_backward(x, target, weight, pos_weight, softplus_neg, unweighted)
        return _reduce(unweighted if weight is None else unweighted * weight, reduction)

    def backward(self, grad: Any) -> tuple[Any, Any, Any, Any, None]:
        x, target, weight, pos_weight, softplus_neg, unweighted = self.saved_tensors
        xp = get_array_module(x)
        grad = _reduced_grad(grad, unweighted.shape, self.reduction)
        scaled = grad if weight is None else grad * weight
        sigmoid_neg = 0.5 * (1 - xp.tanh(0.5 * x))  # 1 - sigmoid(x)
        log_weight = 1 if pos_weight is None else (pos_weight - 1) * target + 1
        grad_x = scaled * ((1 - target) - log_weight * sigmoid_neg)
        need = self.needs_input_grad
        grad_target = None
        if need[1]:
            pos_term = 0 if pos_weight is None else (pos_weight - 1) * softplus_neg
            grad_target = scaled * (pos_term - x)
        grad_weight = grad * unweighted if need[2] else None
        grad_pos_weight = scaled * target * softplus_neg if need[3] else None
        return grad_x, grad_target, grad_weight, grad_pos_weight, None


@runs_on_input_device
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


@runs_on_input_device
def binary_cross_entropy_with_logits(input: Tensor, target: Tensor, weight: Tensor | None = None,
                                     reduction: str = "mean",
                                     pos_weight: Tensor | None = None) -> Tensor:
    """Sigmoid + binary cross-entropy in one numerically stable step.

    ``weight`` rescales each element's loss (broadcast to the input);
    ``pos_weight`` (broadcast along the last, class, dim) weighs the positive
    term, trading recall against precision, as in PyTorch.

    >>> import pyrt
    >>> round(binary_cross_entropy_with_logits(pyrt.tensor([0.0]), pyrt.tensor([1.0])).item(), 4)
    0.6931
    >>> round(binary_cross_entropy_with_logits(pyrt.tensor([0.0]), pyrt.tensor([1.0]),
    ...                                        pos_weight=pyrt.tensor([3.0])).item(), 4)
    2.0794
    """
    _check_reduction("binary_cross_entropy_with_logits", reduction)
    _check_same_shape("binary_cross_entropy_with_logits", input, target)
    for label, t in (("weight", weight), ("pos_weight", pos_weight)):
        try:
            fits = t is None or np.broadcast_shapes(t.shape, input.shape) == input.shape
        except ValueError:
            fits = False
        if not fits:
            raise ValueError(f"binary_cross_entropy_with_logits: {label} is {describe(t.data)} but "
                             f"input is {describe(input.data)}; it must broadcast to the input")
    return BinaryCrossEntropyWithLogits.apply(
        input, target.to(input.dtype), None if weight is None else weight.to(input.dtype),
        None if pos_weight is None else pos_weight.to(input.dtype), reduction)
