"""``MultiheadAttention``, with PyTorch's parameters, masks and results.

Shapes (E = embed_dim, H = num_heads, d = E / H): query (L, N, E), key and
value (S, N, E), or batch first (N, L, E) when ``batch_first``, or unbatched
(L, E). Internally everything is batch first and split into heads as
(N, H, L, d), so one batched matmul covers every head
(``pyrt.ops.attention``). Both masks become one additive bias broadcast to
(N, H, L, S): a bool mask's True means *do not attend* (PyTorch's convention
here, the opposite of ``scaled_dot_product_attention``'s) and becomes -inf; a
float mask is added as it is.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from pyrt.backend import describe, get_array_module
from pyrt.nn import init
from pyrt.nn.linear import Linear
from pyrt.nn.module import Module
from pyrt.nn.parameter import Parameter
from pyrt.ops.attention import attention_with_weights, narrow_last
from pyrt.ops.linalg import linear
from pyrt.tensor import Tensor

__all__ = ["MultiheadAttention"]


def _as_bias(mask: Tensor, dtype: Any) -> Tensor:
    """A bool mask (True = masked) as a 0/-inf float tensor; a float mask unchanged."""
    if mask.dtype == np.bool_:
        xp = get_array_module(mask.data)
        return Tensor(xp.where(mask.data, dtype.type(-np.inf), dtype.type(0)))
    if mask.dtype != dtype:
        raise TypeError(f"MultiheadAttention: a float mask must be {dtype} like the query, got {mask.dtype}")
    return mask


class MultiheadAttention(Module):
    """Multi-head attention ``softmax(Q K^T / sqrt(d) + mask) V`` over ``num_heads`` heads.

    ``forward(query, key, value, key_padding_mask=None, need_weights=True,
    attn_mask=None, average_attn_weights=True, is_causal=False)`` returns
    ``(output, weights)``: weights are (N, L, S) averaged over heads, (N, H, L, S)
    with ``average_attn_weights=False``, or None when ``need_weights=False``.
    ``key_padding_mask`` is (N, S); ``attn_mask`` is (L, S) or (N*H, L, S);
    ``is_causal`` without ``attn_mask`` masks keys after each query.
    A query whose every key is masked gets zeros (PyTorch's fused path does the
    same; its path that returns weights gives NaN).

    >>> import pyrt
    >>> mha = MultiheadAttention(8, 2, batch_first=True)
    >>> x = pyrt.randn(3, 5, 8)
    >>> out, weights = mha(x, x, x)
    >>> out.shape, weights.shape
    ((3, 5, 8), (3, 5, 5))
    >>> sorted(name for name, _ in mha.named_parameters())
    ['in_proj_bias', 'in_proj_weight', 'out_proj.bias', 'out_proj.weight']
    """

    def __init__(self, embed_dim: int, num_heads: int, dropout: float = 0.0, bias: bool = True,
                 add_bias_kv: bool = False, add_zero_attn: bool = False, kdim: int | None = None,
                 vdim: int | None = None, batch_first: bool = False, dtype: Any = None) -> None:
        super().__init__()
        if embed_dim <= 0 or num_heads <= 0 or embed_dim % num_heads:
            raise ValueError(f"MultiheadAttention: embed_dim ({embed_dim}) must be a positive multiple "
                             f"of num_heads ({num_heads})")
        if add_bias_kv or add_zero_attn:
            raise NotImplementedError("MultiheadAttention: add_bias_kv and add_zero_attn are not supported")
        if not 0.0 <= dropout <= 1.0:
            raise ValueError(f"MultiheadAttention: dropout must be in [0, 1], got {dropout}")
        self.embed_dim, self.num_heads, self.head_dim = embed_dim, num_heads, embed_dim // num_heads
        self.kdim = embed_dim if kdim is None else kdim
        self.vdim = embed_dim if vdim is None else vdim
        self._qkv_same_embed_dim = self.kdim == embed_dim and self.vdim == embed_dim
        self.dropout, self.batch_first = float(dropout), batch_first
        dtype = np.float32 if dtype is None else np.dtype(dtype)
        if self._qkv_same_embed_dim:
            # One (3E, E) matrix, as in PyTorch: self-attention projects q, k, v in one GEMM.
            self.in_proj_weight = Parameter(np.empty((3 * embed_dim, embed_dim), dtype=dtype))
            for name in ("q_proj_weight", "k_proj_weight", "v_proj_weight"):
                self.register_parameter(name, None)
        else:
            self.register_parameter("in_proj_weight", None)
            self.q_proj_weight = Parameter(np.empty((embed_dim, embed_dim), dtype=dtype))
            self.k_proj_weight = Parameter(np.empty((embed_dim, self.kdim), dtype=dtype))
            self.v_proj_weight = Parameter(np.empty((embed_dim, self.vdim), dtype=dtype))
        if bias:
            self.in_proj_bias = Parameter(np.empty(3 * embed_dim, dtype=dtype))
        else:
            self.register_parameter("in_proj_bias", None)
        self.out_proj = Linear(embed_dim, embed_dim, bias=bias, dtype=dtype)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """PyTorch's initialisation: Xavier-uniform projections, zero biases."""
        if self._qkv_same_embed_dim:
            init.xavier_uniform_(self.in_proj_weight)
        else:
            for weight in (self.q_proj_weight, self.k_proj_weight, self.v_proj_weight):
                init.xavier_uniform_(weight)
        if self.in_proj_bias is not None:
            init.zeros_(self.in_proj_bias)
            init.zeros_(self.out_proj.bias)

    def _project(self, query: Tensor, key: Tensor, value: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Batch-first q, k, v projections, (N, L|S, E)."""
        E = self.embed_dim
        b = self.in_proj_bias
        if self._qkv_same_embed_dim and query is key and key is value:
            qkv = linear(query, self.in_proj_weight, b)  # one GEMM for all three
            return tuple(narrow_last(qkv, i * E, (i + 1) * E) for i in range(3))  # type: ignore[return-value]
        biases = (None, None, None) if b is None else tuple(narrow_last(b, i * E, (i + 1) * E)
                                                             for i in range(3))
        if self._qkv_same_embed_dim:
            weights = tuple(self.in_proj_weight[i * E:(i + 1) * E] for i in range(3))
        else:
            weights = (self.q_proj_weight, self.k_proj_weight, self.v_proj_weight)
        return tuple(linear(x, w, bb) for x, w, bb in zip((query, key, value), weights, biases,  # type: ignore[return-value]
                                                           strict=True))

    def _bias(self, attn_mask: Tensor | None, key_padding_mask: Tensor | None, is_causal: bool,
              batch: int, length: int, source: int, dtype: Any, xp: Any) -> Tensor | None:
        """Both masks as one additive bias that broadcasts to (N, H, L, S)."""
        H = self.num_heads
        bias = None
        if attn_mask is None and is_causal:
            attn_mask = Tensor(~xp.tril(xp.ones((length, source), dtype=bool)))
        if attn_mask is not None:
            if attn_mask.shape == (length, source):
                bias = _as_bias(attn_mask, dtype)
            elif attn_mask.shape == (batch * H, length, source):
                bias = _as_bias(attn_mask, dtype).reshape(batch, H, length, source)
            else:
                raise ValueError(f"MultiheadAttention: attn_mask is {describe(attn_mask.data)}; expected "
                                 f"({length}, {source}) or ({batch * H}, {length}, {source})")
        if key_padding_mask is not None:
            if key_padding_mask.shape != (batch, source):
                raise ValueError(f"MultiheadAttention: key_padding_mask is "
                                 f"{describe(key_padding_mask.data)}; expected ({batch}, {source})")
            padding = _as_bias(key_padding_mask, dtype).reshape(batch, 1, 1, source)
            bias = padding if bias is None else bias + padding
        return bias

    def forward(self, query: Tensor, key: Tensor, value: Tensor, key_padding_mask: Tensor | None = None,
                need_weights: bool = True, attn_mask: Tensor | None = None,
                average_attn_weights: bool = True, is_causal: bool = False) -> tuple[Tensor, Tensor | None]:
        batched = query.ndim == 3
        if query.ndim not in (2, 3) or key.ndim != query.ndim or value.ndim != query.ndim:
            raise ValueError(f"MultiheadAttention: query, key and value must all be 3-D (batched) or "
                             f"2-D (unbatched), got {query.shape}, {key.shape} and {value.shape}")
        if query.shape[-1] != self.embed_dim or key.shape[-1] != self.kdim or value.shape[-1] != self.vdim:
            raise ValueError(f"MultiheadAttention: expected last dims ({self.embed_dim}, {self.kdim}, "
                             f"{self.vdim}), got query {query.shape}, key {key.shape}, value {value.shape}")
        same = query is key and key is value
        if not batched:  # one sample: batch of one
            query, key, value = (t.unsqueeze(0) for t in (query, key, value))
            if key_padding_mask is not None:
                key_padding_mask = key_padding_mask.unsqueeze(0)
        elif not self.batch_first:
            query, key, value = (t.transpose(0, 1) for t in (query, key, value))
        if same:  # keep self-attention's single projection GEMM after the transposes
            key = value = query
        N, L, _ = query.shape
        S = key.shape[1]
        if key.shape[:2] != value.shape[:2] or key.shape[0] != N:
            raise ValueError(f"MultiheadAttention: key {key.shape} and value {value.shape} must share "
                             f"batch and length with the query's batch {N}")
        q, k, v = self._project(query, key, value)
        H, d = self.num_heads, self.head_dim
        q, k, v = (t.reshape(N, t.shape[1], H, d).permute(0, 2, 1, 3) for t in (q, k, v))
        bias = self._bias(attn_mask, key_padding_mask, is_causal, N, L, S, query.dtype,
                          get_array_module(query.data))
        out, weights = attention_with_weights(q, k, v, bias, self.dropout, 1 / math.sqrt(d),
                                              training=self.training)
        out = self.out_proj(out.permute(0, 2, 1, 3).reshape(N, L, self.embed_dim))
        if not batched:
            out = out.squeeze(0)
        elif not self.batch_first:
            out = out.transpose(0, 1)
        if not need_weights:
            return out, None
        if average_attn_weights:
            weights = weights.mean(dim=1)
        return out, (weights if batched else weights.squeeze(0))

    def extra_repr(self) -> str:
        return f"embed_dim={self.embed_dim}, num_heads={self.num_heads}" + (
            f", dropout={self.dropout}" if self.dropout else "") + (
            ", batch_first=True" if self.batch_first else "")
