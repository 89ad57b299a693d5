"""Scaled dot-product attention, PyTorch's ``F.scaled_dot_product_attention``.

Shapes: ``query`` (..., L, E), ``key`` (..., S, E), ``value`` (..., S, Ev); the
leading dims broadcast. ``out = softmax(q @ k^T * scale + bias) @ v`` with
``bias`` 0 where attention is allowed and -inf where it is masked.

The scaling, the mask and the softmax are one node (``MaskedSoftmax``): the
gradient of ``softmax(z)`` is ``s * (g - sum(g * s))`` and ``z`` is linear in
the scores and the bias, so one backward formula covers all three. A row
whose every key is masked would be 0/0; PyTorch's attention returns zeros
there (its ``_safe_softmax``), and so does this node, with zero gradient.
The two matmuls stay ordinary ``matmul`` nodes (our batched SGEMM).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from pyrt.autograd import Function, runs_on_input_device
from pyrt.backend import describe, get_array_module
from pyrt.ops.activation import dropout
from pyrt.ops.linalg import matmul
from pyrt.tensor import Tensor

__all__ = ["scaled_dot_product_attention"]


class Narrow(Function):
    """``x[..., start:stop]``: a view forward; backward writes the gradient into zeros.

    ``getitem``'s backward accumulates with ``add.at`` (it must allow repeated
    indices); a contiguous slice needs only one assignment, which matters for
    splitting the fused (..., 3E) query/key/value projection every step.
    """

    def forward(self, x: Any, start: int, stop: int) -> Any:
        self.shape, self.start, self.stop = x.shape, start, stop
        return x[..., start:stop]

    def backward(self, grad: Any) -> tuple[Any, None, None]:
        grad_x = get_array_module(grad).zeros(self.shape, dtype=grad.dtype)
        grad_x[..., self.start:self.stop] = grad
        return grad_x, None, None


def narrow_last(x: Tensor, start: int, stop: int) -> Tensor:
    """``x[..., start:stop]`` with a slice-sized backward (see ``Narrow``)."""
    return Narrow.apply(x, start, stop)


class MaskedSoftmax(Function):
    """``softmax(scores * scale + bias)`` over the last dim; fully masked rows give 0."""

    def forward(self, scores: Any, bias: Any | None, scale: float) -> Any:
        xp = get_array_module(scores)
        z = scores * scores.dtype.type(scale)
        if bias is not None:
            z = z + bias
        row_max = z.max(axis=-1, keepdims=True)
        dead = xp.isneginf(row_max)
        e = xp.exp(z - xp.where(dead, 0, row_max))  # exp(-inf) = 0 in a dead row: no NaN
        total = e.sum(axis=-1, keepdims=True)
        out = e / xp.where(dead, 1, total)
        self.scale = scale
        self.save_for_backward(out)
        return out

    def backward(self, grad: Any) -> tuple[Any, Any, None]:
        (out,) = self.saved_tensors
        grad_z = out * (grad - (grad * out).sum(axis=-1, keepdims=True))
        grad_scores = grad_z * grad_z.dtype.type(self.scale) if self.needs_input_grad[0] else None
        return grad_scores, grad_z if self.needs_input_grad[1] else None, None


def _mask_bias(attn_mask: Tensor | None, is_causal: bool, length: int, source: int,
               dtype: Any, xp: Any) -> Tensor | None:
    """The additive bias: a bool mask (True = may attend) and the causal mask become 0/-inf."""
    if is_causal:
        allowed = xp.tril(xp.ones((length, source), dtype=bool))
        return Tensor(xp.where(allowed, dtype.type(0), dtype.type(-np.inf)))
    if attn_mask is None:
        return None
    if attn_mask.dtype == np.bool_:
        return Tensor(xp.where(attn_mask.data, dtype.type(0), dtype.type(-np.inf)))
    return attn_mask  # a float mask is added as it is, and may carry a gradient


def attention_with_weights(query: Tensor, key: Tensor, value: Tensor, bias: Tensor | None,
                           dropout_p: float, scale: float, training: bool = True) -> tuple[Tensor, Tensor]:
    """``(softmax(q k^T scale + bias) [dropped out] @ v, the attention weights)``, no checks.

    Shared by ``scaled_dot_product_attention`` and ``nn.MultiheadAttention``, which
    also returns the weights.
    """
    scores = matmul(query, key.transpose(-2, -1))
    weights = MaskedSoftmax.apply(scores, bias, scale)
    if dropout_p > 0.0 and training:
        weights = dropout(weights, dropout_p)
    return matmul(weights, value), weights


@runs_on_input_device
def scaled_dot_product_attention(query: Tensor, key: Tensor, value: Tensor,
                                 attn_mask: Tensor | None = None, dropout_p: float = 0.0,
                                 is_causal: bool = False, scale: float | None = None) -> Tensor:
    """``softmax(query @ key^T * scale + mask) @ value``, PyTorch's ``F.scaled_dot_product_attention``.

    ``attn_mask`` is bool (True = may attend) or float (added to the scores), broadcast
    to (..., L, S); ``is_causal`` masks the upper triangle (query i sees keys <= i);
    ``scale`` defaults to ``1 / sqrt(E)``; ``dropout_p`` drops attention weights.

    >>> import pyrt
    >>> q = pyrt.ones(2, 3, 4)
    >>> v = pyrt.tensor([[[1.0], [2.0], [3.0]]] * 2)
    >>> scaled_dot_product_attention(q, q, v, is_causal=True)[0].tolist()
    [[1.0], [1.5], [2.0]]
    """
    if query.ndim < 2 or key.ndim < 2 or value.ndim < 2:
        raise ValueError(f"scaled_dot_product_attention: query, key and value need (..., L, E) "
                         f"shapes, got {query.shape}, {key.shape} and {value.shape}")
    if query.shape[-1] != key.shape[-1] or key.shape[-2] != value.shape[-2]:
        raise ValueError(
            f"scaled_dot_product_attention: query is {describe(query.data)}, key "
            f"{describe(key.data)} and value {describe(value.data)}; query and key must share "
            "the last dim and key and value the second to last")
    if not query.dtype == key.dtype == value.dtype or not np.issubdtype(query.dtype, np.floating):
        raise TypeError(f"scaled_dot_product_attention: query, key and value must share one float "
                        f"dtype, got {query.dtype}, {key.dtype} and {value.dtype}")
    if is_causal and attn_mask is not None:
        raise ValueError("scaled_dot_product_attention: pass attn_mask or is_causal, not both")
    if not 0.0 <= dropout_p <= 1.0:
        raise ValueError(f"scaled_dot_product_attention: dropout_p must be in [0, 1], got {dropout_p}")
    length, source = query.shape[-2], key.shape[-2]
    if attn_mask is not None:
        try:
            np.broadcast_shapes(attn_mask.shape, (*query.shape[:-2], length, source))
        except ValueError:
            raise ValueError(f"scaled_dot_product_attention: attn_mask {attn_mask.shape} does not "
                             f"broadcast to the scores' shape {(*query.shape[:-2], length, source)}"
                             ) from None
        if attn_mask.dtype != np.bool_ and attn_mask.dtype != query.dtype:
            raise TypeError(f"scaled_dot_product_attention: a float attn_mask must be "
                            f"{query.dtype} like query, got {attn_mask.dtype}")
    scale = 1.0 / math.sqrt(query.shape[-1]) if scale is None else float(scale)
    bias = _mask_bias(attn_mask, is_causal, length, source, query.dtype,
                      get_array_module(query.data))
    return attention_with_weights(query, key, value, bias, dropout_p, scale)[0]
