"""Cross-entropy over logits whose classes (the vocabulary) are split over the group.

Rank r holds logits (N, V/t) for classes ``[r*V/t, (r+1)*V/t)``. Gathering
them (N x V per rank) is what the split avoids; instead three all-reduces of
N numbers each assemble the loss (Megatron-LM's ``vocab_parallel_cross_entropy``)::

    m      = max over all ranks of the row's largest logit         (all-reduce max)
    z_t    = logit[target] - m, from the rank holding the target   (all-reduce sum)
    S      = sum over all ranks of sum(exp(logit - m))              (all-reduce sum)
    loss   = log(S) - z_t

and the backward is local: ``softmax - onehot`` on each rank's own columns,
with ``softmax = exp(logit - m) / S``.

A vocabulary padded to a multiple of the group size (``VocabParallelEmbedding``,
``pad_vocab_size``) leaves columns ``>= vocab_size`` that are no class at all:
they are excluded from the max and the sum and get zero gradient, so the loss
equals ``cross_entropy`` of the unpadded, gathered logits.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pyrt.autograd import Function
from pyrt.backend import describe
from pyrt.distributed.collectives import ReduceOp
from pyrt.distributed.device_mesh import DeviceMesh
from pyrt.distributed.functional import parallel_all_reduce
from pyrt.distributed.process_group import ProcessGroup
from pyrt.distributed.tensor_parallel.layers import tensor_parallel_group
from pyrt.tensor import Tensor

__all__ = ["vocab_parallel_cross_entropy"]

_REDUCTIONS = ("mean", "sum", "none")


class _VocabParallelCrossEntropy(Function):
    def forward(self, logits: Any, target: Any, pg: ProcessGroup, vocab_size: int, reduction: str,
                ignore_index: int) -> Any:
        rows, part = logits.shape
        start = pg.rank() * part
        real = min(max(vocab_size - start, 0), part)  # columns here that are classes
        local_max = logits[:, :real].max(axis=1) if real else np.full(rows, -np.inf, logits.dtype)
        # The max only keeps exp from overflowing; it cancels out of the loss and its gradient.
        shifted = logits - parallel_all_reduce(local_max, pg, ReduceOp.MAX)[:, None]
        exp = np.zeros_like(shifted)  # padding columns: no class, probability 0
        exp[:, :real] = np.exp(shifted[:, :real])
        sum_exp = parallel_all_reduce(exp.sum(axis=1), pg)

        valid = target != ignore_index
        here = valid & (target >= start) & (target < start + part)
        local_target = np.where(here, target - start, 0)
        target_logit = np.where(here, shifted[np.arange(rows), local_target], 0)
        target_logit = parallel_all_reduce(target_logit, pg)

        losses = (np.log(sum_exp) - target_logit) * valid
        self.reduction = reduction
        self.count = int(valid.sum()) if reduction == "mean" else 1
        self.save_for_backward(exp / sum_exp[:, None], local_target, here, valid)
        if reduction == "none":
            return losses
        total = losses.sum()
        if reduction == "sum":
            return total
        with np.errstate(invalid="ignore"):  # a mean over zero counted targets is 0/0 = NaN, as in PyTorch
            return total / self.count

    def backward(self, grad: Any) -> tuple[Any, None, None, None, None, None]:
        probs, local_target, here, valid = self.saved_tensors
        # An ignored row gets zero gradient, as in PyTorch, even where its share is not finite:
        # a mean over no counted target is NaN forward but contributes nothing backward.
        count = max(self.count, 1)
        per_row = grad if self.reduction == "none" else np.broadcast_to(grad / count, valid.shape)
        per_row = np.where(valid, per_row, 0)
        grad_logits = probs * per_row[:, None]
        mine = np.flatnonzero(here)
        grad_logits[mine, local_target[mine]] -= per_row[mine]  # the onehot, on the target's rank only
        return grad_logits, None, None, None, None, None


def vocab_parallel_cross_entropy(logits: Tensor, target: Tensor | Any, vocab_size: int | None = None,
                                 group: ProcessGroup | DeviceMesh | None = None, reduction: str = "mean",
                                 ignore_index: int = -100) -> Tensor:
    """``cross_entropy`` of logits split by class over ``group``, without gathering them.

    ``logits`` is this rank's (N, C/t) block: classes ``[rank*C/t, (rank+1)*C/t)``
    of C = t * (C/t) columns, of which the first ``vocab_size`` (default: all)
    are classes and the rest padding. ``target`` holds (N,) class indices in
    ``[0, vocab_size)`` (or ``ignore_index``), the same on every rank. The
    result is the same on every rank and equals ``F.cross_entropy`` of the
    gathered first ``vocab_size`` columns.

    Example (under ``mpiexec -n 2``)::

        head = ColumnParallelLinear(64, 1000, gather_output=False)   # (N, 500) logits per rank
        loss = vocab_parallel_cross_entropy(head(h), target)
        loss.backward()
    """
    pg = tensor_parallel_group(group, "vocab_parallel_cross_entropy")
    if reduction not in _REDUCTIONS:
        raise ValueError(f"vocab_parallel_cross_entropy: reduction must be one of {_REDUCTIONS}, "
                         f"got {reduction!r}")
    target_array = np.asarray(target.data if isinstance(target, Tensor) else target)
    if logits.ndim != 2:
        raise ValueError(
            f"vocab_parallel_cross_entropy: logits must be (N, C/t), got {describe(logits.data)}")
    rows, part = logits.shape
    total = part * pg.size()
    vocab = total if vocab_size is None else int(vocab_size)
    if not 1 <= vocab <= total:
        raise ValueError(
            f"vocab_parallel_cross_entropy: vocab_size {vocab} does not fit {pg.size()} ranks x {part} "
            f"columns = {total}")
    if target_array.shape != (rows,) or not np.issubdtype(target_array.dtype, np.integer):
        raise ValueError(f"vocab_parallel_cross_entropy: logits are {describe(logits.data)} so target must "
                         f"be ({rows},) integer class indices, got {describe(target_array)}")
    bad = (target_array != ignore_index) & ((target_array < 0) | (target_array >= vocab))
    if bad.any():
        raise IndexError(f"vocab_parallel_cross_entropy: target {int(target_array[bad][0])} is out of "
                         f"bounds for {vocab} classes")
    return _VocabParallelCrossEntropy.apply(logits, target_array, pg, vocab, reduction, ignore_index)
