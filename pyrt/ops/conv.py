"""2-D convolution as im2col + GEMM, in both directions.

Layout. The input (N, C, H, W) is copied once into a zero-padded channels-last
buffer (N, Hp, Wp, C); that copy is the padding anyway. Every window is then
a strided view of that buffer, and ``cols`` (N*OH*OW, KH*KW*C) is one copy of
that view in which each row reads KW*C contiguous floats at a time (the
channels-first order, (C, KH, KW), would gather one float per stride). The
weight is permuted to the same (KH, KW, C) column order, a copy of O*K floats.

    forward:   out (M, O)   = cols (M, K) @ W^T (K, O)          M = N*OH*OW
    backward:  grad_W (O, K) = grad^T (O, M) @ cols (M, K)
               grad_cols (M, K) = grad (M, O) @ W (O, K), then col2im

``out`` is (N, OH, OW, O) in memory and is returned as its (N, O, OH, OW)
transposed view, so no copy is made; elementwise ops after it keep that
channels-last layout, and the next conv's padding copy reads it contiguously.
col2im adds ``grad_cols`` back into the padded buffer with one strided slice
per kernel offset (KH*KW vectorised adds, no loop over pixels, no ``add.at``).

Groups split C and O into G independent convolutions: ``cols`` becomes
(M, G, K/G) and the products are batched over G.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pyrt.autograd import Function
from pyrt.backend import describe, get_array_module
from pyrt.ops.linalg import matmul_arrays
from pyrt.tensor import Tensor

__all__ = ["conv2d"]

IntPair = int | tuple[int, int]


def _pair(name: str, value: IntPair, minimum: int) -> tuple[int, int]:
    """``3`` -> ``(3, 3)``; checks both entries are ints >= ``minimum``."""
    pair = (value, value) if isinstance(value, int) else tuple(value)
    if len(pair) != 2 or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool)
                                 for v in pair):
        raise TypeError(f"{name} must be an int or a pair of ints, got {value!r}")
    if min(pair) < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
    return int(pair[0]), int(pair[1])


def _output_size(op: str, size: tuple[int, int], kernel: tuple[int, int],
                 stride: tuple[int, int], padding: tuple[int, int],
                 dilation: tuple[int, int]) -> tuple[int, int]:
    """Output (OH, OW) of a sliding window; a clear error when the window does not fit."""
    out = []
    for axis, n, k, s, p, d in zip("HW", size, kernel, stride, padding, dilation, strict=True):
        span = d * (k - 1) + 1
        if n + 2 * p < span:
            raise ValueError(
                f"{op}: kernel {kernel} (dilation {dilation}) spans {span} along {axis} but the "
                f"padded input is only {n + 2 * p} (input {n} + 2 * padding {p})"
            )
        out.append((n + 2 * p - span) // s + 1)
    return out[0], out[1]


def _window_slice(offset: int, stride: int, count: int) -> slice:
    """The rows (or columns) that kernel offset ``offset`` reads for ``count`` outputs."""
    return slice(offset, offset + stride * (count - 1) + 1, stride)


def _padded_channels_last(x: Any, padding: tuple[int, int]) -> Any:
    """(N, C, H, W) -> zero-padded (N, H+2ph, W+2pw, C), C-contiguous."""
    xp = get_array_module(x)
    n, c, h, w = x.shape
    ph, pw = padding
    nhwc = x.transpose(0, 2, 3, 1)
    if ph == pw == 0:
        return xp.ascontiguousarray(nhwc)  # free when x is the channels-last view of a conv
    padded = xp.zeros((n, h + 2 * ph, w + 2 * pw, c), dtype=x.dtype)
    padded[:, ph:ph + h, pw:pw + w] = nhwc
    return padded


def _im2col(padded: Any, kernel: tuple[int, int], stride: tuple[int, int],
            dilation: tuple[int, int], out_hw: tuple[int, int], groups: int) -> Any:
    """Padded (N, Hp, Wp, C) -> cols (N*OH*OW, G, KH*KW*C/G), one copy of a strided view."""
    xp = get_array_module(padded)
    n, _, _, c = padded.shape
    sn, sh, sw, sc = padded.strides
    (kh, kw), (oh, ow) = kernel, out_hw
    cg = c // groups
    windows = xp.lib.stride_tricks.as_strided(
        padded,
        shape=(n, oh, ow, groups, kh, kw, cg),
        strides=(sn, sh * stride[0], sw * stride[1], sc * cg, sh * dilation[0],
                 sw * dilation[1], sc),
        writeable=False,
    )
    return windows.reshape(n * oh * ow, groups, kh * kw * cg)  # reshape copies here


def _col2im(grad_rows: Any, weight_rows: Any, padded_shape: tuple[int, ...],
            kernel: tuple[int, int], stride: tuple[int, int], dilation: tuple[int, int],
            out_hw: tuple[int, int]) -> Any:
    """grad_cols = grad @ W, then each window's gradient summed back into (N, Hp, Wp, C).

    The KH*KW strided adds stream along the innermost memory axis, so grad_cols
    is made with the longer contiguous run: channels when there are many,
    output columns otherwise (3-channel images: 8x faster, measured).
    """
    xp = get_array_module(grad_rows)
    n, hp, wp, c = padded_shape
    (kh, kw), (oh, ow) = kernel, out_hw
    groups, _, kg = weight_rows.shape
    cg = kg // (kh * kw)
    if cg >= ow:
        grad_cols = matmul_arrays(grad_rows, weight_rows)  # (G, M, KH*KW*Cg)
        taps = grad_cols.reshape(groups, n, oh, ow, kh, kw, cg).transpose(4, 5, 1, 2, 3, 0, 6)
        grad_padded = xp.zeros(padded_shape, dtype=grad_rows.dtype)
    else:
        grad_cols = matmul_arrays(weight_rows.transpose(0, 2, 1), grad_rows.transpose(0, 2, 1))
        taps = grad_cols.reshape(groups, kh, kw, cg, n, oh, ow).transpose(1, 2, 4, 5, 6, 0, 3)
        # (C, N, Hp, Wp) in memory, viewed as (N, Hp, Wp, C) like the other branch.
        grad_padded = xp.zeros((c, n, hp, wp), dtype=grad_rows.dtype).transpose(1, 2, 3, 0)
    taps = taps.reshape(kh, kw, n, oh, ow, c)  # a view unless groups > 1
    for i in range(kh):
        rows = _window_slice(i * dilation[0], stride[0], oh)
        for j in range(kw):
            cols = _window_slice(j * dilation[1], stride[1], ow)
            grad_padded[:, rows, cols] += taps[i, j]
    return grad_padded


class Conv2d(Function):
    def forward(self, x: Any, weight: Any, bias: Any | None, stride: tuple[int, int],
                padding: tuple[int, int], dilation: tuple[int, int], groups: int) -> Any:
        n, _, h, w = x.shape
        o, cg, kh, kw = weight.shape
        out_hw = _output_size("conv2d", (h, w), (kh, kw), stride, padding, dilation)
        padded = _padded_channels_last(x, padding)
        cols = _im2col(padded, (kh, kw), stride, dilation, out_hw, groups)
        # (O, Cg, KH, KW) -> (G, O/G, KH*KW*Cg): the same column order as cols.
        weight_rows = weight.transpose(0, 2, 3, 1).reshape(groups, o // groups, kh * kw * cg)
        self.save_for_backward(cols, weight_rows)
        self.geometry = (x.shape, padded.shape, weight.shape, stride, padding, dilation, out_hw)
        self.has_bias = bias is not None
        # (G, M, K/G) @ (G, K/G, O/G): one GEMM when G == 1; both operands are views.
        out = matmul_arrays(cols.transpose(1, 0, 2), weight_rows.transpose(0, 2, 1))
        if bias is not None:
            out += bias.reshape(groups, 1, o // groups)
        # (G, N*OH*OW, O/G) -> the (N, O, OH, OW) view of channels-last memory (no copy if G == 1).
        out = out.reshape(groups, n, *out_hw, o // groups).transpose(1, 0, 4, 2, 3)
        return out.reshape(n, o, *out_hw)

    def backward(self, grad: Any) -> tuple[Any, Any, Any | None, None, None, None, None]:
        cols, weight_rows = self.saved_tensors
        x_shape, padded_shape, weight_shape, stride, padding, dilation, out_hw = self.geometry
        groups, og, _ = weight_rows.shape
        n, c, h, w = x_shape
        # (N, O, OH, OW) -> (G, M, O/G); free when grad is channels-last in memory.
        grad_rows = grad.reshape(n, groups, og, *out_hw).transpose(1, 0, 3, 4, 2)
        grad_rows = grad_rows.reshape(groups, -1, og)
        need_x, need_weight, need_bias = self.needs_input_grad[:3]
        o, _, kh, kw = weight_shape
        grad_weight = None
        if need_weight:  # a split (zero-bubble) backward asks for it in a pass of its own
            grad_weight = matmul_arrays(grad_rows.transpose(0, 2, 1), cols.transpose(1, 0, 2))
            grad_weight = grad_weight.reshape(o, kh, kw, c // groups).transpose(0, 3, 1, 2)
        grad_bias = grad_rows.sum(axis=1).reshape(o) if self.has_bias and need_bias else None
        grad_x = None
        # The first layer's input (the data) needs no gradient: skipping it saves
        # the grad_cols GEMM and the whole col2im.
        if need_x:
            grad_padded = _col2im(grad_rows, weight_rows, padded_shape, (kh, kw), stride,
                                  dilation, out_hw)
            ph, pw = padding
            grad_x = grad_padded[:, ph:ph + h, pw:pw + w].transpose(0, 3, 1, 2)
        return grad_x, grad_weight, grad_bias, None, None, None, None


def conv2d(input: Tensor, weight: Tensor, bias: Tensor | None = None, stride: IntPair = 1,
           padding: IntPair = 0, dilation: IntPair = 1, groups: int = 1) -> Tensor:
    """2-D cross-correlation, PyTorch's ``F.conv2d``: input (N, C, H, W) or (C, H, W),
    weight (O, C/groups, KH, KW), bias (O,); returns (N, O, OH, OW).

    ``OH = (H + 2*padding - dilation*(KH-1) - 1) // stride + 1``, likewise OW.

    >>> import pyrt
    >>> conv2d(pyrt.ones(2, 3, 5, 5), pyrt.ones(4, 3, 3, 3), padding=1).shape
    (2, 4, 5, 5)
    >>> conv2d(pyrt.ones(1, 1, 3, 3), pyrt.ones(1, 1, 2, 2), stride=2).tolist()
    [[[[4.0]]]]
    """
    stride = _pair("conv2d: stride", stride, 1)
    padding = _pair("conv2d: padding", padding, 0)
    dilation = _pair("conv2d: dilation", dilation, 1)
    if weight.ndim != 4:
        raise ValueError(f"conv2d: weight must be (out_channels, in_channels/groups, kH, kW), "
                         f"got {describe(weight.data)}")
    if isinstance(groups, bool) or not isinstance(groups, int) or groups < 1:
        raise ValueError(f"conv2d: groups must be a positive int, got {groups!r}")
    if input.ndim == 3:  # unbatched, as PyTorch allows
        return conv2d(input.unsqueeze(0), weight, bias, stride, padding, dilation,
                      groups).squeeze(0)
    o, cg = weight.shape[:2]
    if input.ndim != 4 or input.shape[1] != cg * groups:
        raise ValueError(
            f"conv2d: input is {describe(input.data)} but weight is {describe(weight.data)} "
            f"with groups={groups}; expected input (N, {cg * groups}, H, W)"
        )
    if o % groups:
        raise ValueError(f"conv2d: out_channels {o} is not divisible by groups={groups}")
    if bias is not None and bias.shape != (o,):
        raise ValueError(f"conv2d: bias is {describe(bias.data)}, expected ({o},)")
    if input.dtype != weight.dtype or (bias is not None and bias.dtype != weight.dtype):
        raise TypeError(f"conv2d: input is {input.dtype} but weight is {weight.dtype}"
                        + (f" and bias is {bias.dtype}" if bias is not None else ""))
    _output_size("conv2d", input.shape[2:], weight.shape[2:], stride, padding, dilation)
    return Conv2d.apply(input, weight, bias, stride, padding, dilation, groups)
