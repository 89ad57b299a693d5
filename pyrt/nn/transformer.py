"""``TransformerEncoderLayer``: self-attention and a feed-forward block, each with a
residual connection and layer norm, and ``TransformerEncoder``, a stack of copies of
one layer; as PyTorch's (same submodule names, so ``state_dict`` keys copy across).

Post-norm (``norm_first=False``, PyTorch's default):
    x = norm1(x + dropout1(self_attn(x)));  x = norm2(x + dropout2(ff(x)))
Pre-norm (``norm_first=True``, what GPT-style models use; trains without warm-up):
    x = x + dropout1(self_attn(norm1(x)));  x = x + dropout2(ff(norm2(x)))
with ``ff(x) = linear2(dropout(activation(linear1(x))))``.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from pyrt.nn import functional as F
from pyrt.nn.activation import Dropout
from pyrt.nn.attention import MultiheadAttention
from pyrt.nn.container import ModuleList
from pyrt.nn.linear import Linear
from pyrt.nn.module import Module
from pyrt.nn.normalization import LayerNorm
from pyrt.tensor import Tensor

__all__ = ["TransformerEncoder", "TransformerEncoderLayer"]

_ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {"relu": F.relu, "gelu": F.gelu}


class TransformerEncoderLayer(Module):
    """One Transformer encoder block with PyTorch's arguments and submodules.

    ``activation`` is ``'relu'``, ``'gelu'`` or a callable; ``forward(src,
    src_mask=None, src_key_padding_mask=None, is_causal=False)`` takes (S, N, E),
    (N, S, E) with ``batch_first``, or (S, E); masks as in ``MultiheadAttention``.

    >>> import pyrt
    >>> layer = TransformerEncoderLayer(16, 4, dim_feedforward=32, activation="gelu",
    ...                                 batch_first=True, norm_first=True)
    >>> layer(pyrt.randn(2, 7, 16), is_causal=True).shape
    (2, 7, 16)
    """

    def __init__(self, d_model: int, nhead: int, dim_feedforward: int = 2048, dropout: float = 0.1,
                 activation: str | Callable[[Tensor], Tensor] = "relu", layer_norm_eps: float = 1e-5,
                 batch_first: bool = False, norm_first: bool = False, bias: bool = True,
                 dtype: Any = None) -> None:
        super().__init__()
        if isinstance(activation, str):
            if activation not in _ACTIVATIONS:
                raise ValueError(f"TransformerEncoderLayer: activation must be 'relu', 'gelu' or a "
                                 f"callable, got {activation!r}")
            activation = _ACTIVATIONS[activation]
        self.self_attn = MultiheadAttention(d_model, nhead, dropout=dropout, bias=bias,
                                            batch_first=batch_first, dtype=dtype)
        self.linear1 = Linear(d_model, dim_feedforward, bias=bias, dtype=dtype)
        self.dropout = Dropout(dropout)
        self.linear2 = Linear(dim_feedforward, d_model, bias=bias, dtype=dtype)
        self.norm_first = norm_first
        self.norm1 = LayerNorm(d_model, eps=layer_norm_eps, bias=bias, dtype=dtype)
        self.norm2 = LayerNorm(d_model, eps=layer_norm_eps, bias=bias, dtype=dtype)
        self.dropout1 = Dropout(dropout)
        self.dropout2 = Dropout(dropout)
        # A plain attribute, not a submodule: PyTorch stores the function the same way.
        object.__setattr__(self, "activation", activation)

    def forward(self, src: Tensor, src_mask: Tensor | None = None,
                src_key_padding_mask: Tensor | None = None, is_causal: bool = False) -> Tensor:
        x = src
        if self.norm_first:
            x = x + self._attention_block(self.norm1(x), src_mask, src_key_padding_mask, is_causal)
            return x + self._feed_forward_block(self.norm2(x))
        x = self.norm1(x + self._attention_block(x, src_mask, src_key_padding_mask, is_causal))
        return self.norm2(x + self._feed_forward_block(x))

    def _attention_block(self, x: Tensor, mask: Tensor | None, key_padding_mask: Tensor | None,
                         is_causal: bool) -> Tensor:
        out, _ = self.self_attn(x, x, x, attn_mask=mask, key_padding_mask=key_padding_mask,
                                need_weights=False, is_causal=is_causal)
        return self.dropout1(out)

    def _feed_forward_block(self, x: Tensor) -> Tensor:
        return self.dropout2(self.linear2(self.dropout(self.activation(self.linear1(x)))))


class TransformerEncoder(Module):
    """``num_layers`` independent copies of ``encoder_layer`` applied in turn, then ``norm``.

    ``forward(src, mask=None, src_key_padding_mask=None, is_causal=None)`` passes the
    masks to every layer. (PyTorch's nested-tensor fast path for padded batches is an
    inference optimisation with the same results; ``enable_nested_tensor`` is accepted
    and has no effect.)

    >>> import pyrt
    >>> layer = TransformerEncoderLayer(16, 4, dim_feedforward=32, batch_first=True, norm_first=True)
    >>> encoder = TransformerEncoder(layer, num_layers=3, norm=LayerNorm(16))
    >>> encoder(pyrt.randn(2, 7, 16), is_causal=True).shape
    (2, 7, 16)
    >>> sorted({name.split(".")[0] for name in encoder.state_dict()})
    ['layers', 'norm']
    """

    def __init__(self, encoder_layer: TransformerEncoderLayer, num_layers: int, norm: Module | None = None,
                 enable_nested_tensor: bool = True, mask_check: bool = True) -> None:
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"TransformerEncoder: num_layers must be >= 1, got {num_layers}")
        # Deep copies, as PyTorch makes: each layer trains its own weights.
        self.layers = ModuleList([copy.deepcopy(encoder_layer) for _ in range(num_layers)])
        self.num_layers = num_layers
        self.norm = norm

    def forward(self, src: Tensor, mask: Tensor | None = None, src_key_padding_mask: Tensor | None = None,
                is_causal: bool | None = None) -> Tensor:
        x = src
        for layer in self.layers:
            x = layer(x, src_mask=mask, src_key_padding_mask=src_key_padding_mask, is_causal=bool(is_causal))
        return x if self.norm is None else self.norm(x)
