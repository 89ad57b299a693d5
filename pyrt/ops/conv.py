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

The transposed convolution is the same pair run the other way round: its
forward is conv2d's input gradient (``grad_cols`` then col2im) and its input
gradient is conv2d's forward (im2col then GEMM). ``conv1d`` is ``conv2d`` on
a height-1 image.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pyrt.autograd import Function, runs_on_input_device
from pyrt.backend import describe, get_array_module
from pyrt.errors import ShapeError
from pyrt.ops.linalg import matmul_arrays
from pyrt.ops.padding import pad
from pyrt.tensor import Tensor

__all__ = ["conv1d", "conv2d", "conv_transpose2d"]

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
            raise ShapeError(
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
    # numpy's view is made read-only (its windows overlap); cupy's as_strided has no such
    # keyword, and the reshape below copies either way.
    read_only = {"writeable": False} if xp is np else {}
    windows = xp.lib.stride_tricks.as_strided(
        padded,
        shape=(n, oh, ow, groups, kh, kw, cg),
        strides=(sn, sh * stride[0], sw * stride[1], sc * cg, sh * dilation[0],
                 sw * dilation[1], sc),
        **read_only,
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


def _same_padding(op: str, kernel: tuple[int, ...], stride: tuple[int, ...],
                  dilation: tuple[int, ...]) -> list[tuple[int, int]]:
    """(before, after) per spatial dim that keeps the size at stride 1; the odd one goes after."""
    if any(s != 1 for s in stride):
        raise ValueError(f"{op}: padding='same' is not supported for strided convolutions "
                         f"(stride={stride})")
    return [(d * (k - 1) // 2, d * (k - 1) - d * (k - 1) // 2)
            for k, d in zip(kernel, dilation, strict=True)]


@runs_on_input_device
def conv2d(input: Tensor, weight: Tensor, bias: Tensor | None = None, stride: IntPair = 1,
           padding: IntPair | str = 0, dilation: IntPair = 1, groups: int = 1) -> Tensor:
    """2-D cross-correlation, PyTorch's ``F.conv2d``: input (N, C, H, W) or (C, H, W),
    weight (O, C/groups, KH, KW), bias (O,); returns (N, O, OH, OW).

    ``OH = (H + 2*padding - dilation*(KH-1) - 1) // stride + 1``, likewise OW.
    ``padding='valid'`` is 0; ``padding='same'`` (stride 1) keeps H and W, padding
    the odd extra row or column at the bottom/right as PyTorch does.

    >>> import pyrt
    >>> conv2d(pyrt.ones(2, 3, 5, 5), pyrt.ones(4, 3, 3, 3), padding=1).shape
    (2, 4, 5, 5)
    >>> conv2d(pyrt.ones(1, 1, 3, 3), pyrt.ones(1, 1, 2, 2), stride=2).tolist()
    [[[[4.0]]]]
    >>> conv2d(pyrt.ones(1, 1, 5, 6), pyrt.ones(1, 1, 2, 4), padding="same").shape
    (1, 1, 5, 6)
    """
    stride = _pair("conv2d: stride", stride, 1)
    dilation = _pair("conv2d: dilation", dilation, 1)
    if isinstance(padding, str):
        if padding == "valid":
            padding = 0
        elif padding == "same":
            if weight.ndim != 4:
                raise ShapeError(f"conv2d: weight must be (out_channels, in_channels/groups, kH, kW), "
                                 f"got {describe(weight.data)}")
            (top, bottom), (left, right) = _same_padding("conv2d", weight.shape[2:], stride, dilation)
            if (bottom, right) != (top, left):  # an even kernel span: one extra row/column after
                input = pad(input, (0, right - left, 0, bottom - top))
            padding = (top, left)
        else:
            raise ValueError(f"conv2d: padding must be an int, a pair, 'valid' or 'same', got {padding!r}")
    padding = _pair("conv2d: padding", padding, 0)
    if weight.ndim != 4:
        raise ShapeError(f"conv2d: weight must be (out_channels, in_channels/groups, kH, kW), "
                         f"got {describe(weight.data)}")
    if isinstance(groups, bool) or not isinstance(groups, int) or groups < 1:
        raise ValueError(f"conv2d: groups must be a positive int, got {groups!r}")
    if input.ndim == 3:  # unbatched, as PyTorch allows
        return conv2d(input.unsqueeze(0), weight, bias, stride, padding, dilation,
                      groups).squeeze(0)
    o, cg = weight.shape[:2]
    if input.ndim != 4 or input.shape[1] != cg * groups:
        raise ShapeError(
            f"conv2d: input is {describe(input.data)} but weight is {describe(weight.data)} "
            f"with groups={groups}; expected input (N, {cg * groups}, H, W)"
        )
    if o % groups:
        raise ShapeError(f"conv2d: out_channels {o} is not divisible by groups={groups}")
    if bias is not None and bias.shape != (o,):
        raise ShapeError(f"conv2d: bias is {describe(bias.data)}, expected ({o},)")
    if input.dtype != weight.dtype or (bias is not None and bias.dtype != weight.dtype):
        raise TypeError(f"conv2d: input is {input.dtype} but weight is {weight.dtype}"
                        + (f" and bias is {bias.dtype}" if bias is not None else ""))
    _output_size("conv2d", input.shape[2:], weight.shape[2:], stride, padding, dilation)
    return Conv2d.apply(input, weight, bias, stride, padding, dilation, groups)


def _single(name: str, value: int | tuple[int], minimum: int) -> int:
    """``3`` or ``(3,)`` -> ``3``, checked like ``_pair``."""
    items = (value,) if isinstance(value, int) else tuple(value)
    if len(items) != 1:
        raise TypeError(f"{name} must be an int or a 1-tuple, got {value!r}")
    return _pair(name, items[0], minimum)[0]


@runs_on_input_device
def conv1d(input: Tensor, weight: Tensor, bias: Tensor | None = None, stride: int | tuple[int] = 1,
           padding: int | tuple[int] | str = 0, dilation: int | tuple[int] = 1,
           groups: int = 1) -> Tensor:
    """1-D cross-correlation, PyTorch's ``F.conv1d``: input (N, C, L) or (C, L), weight
    (O, C/groups, K), bias (O,); returns (N, O, OL). ``padding`` may be 'valid' or 'same'.

    Runs as ``conv2d`` on (N, C, 1, L) with a (O, C/groups, 1, K) weight: the same
    im2col + GEMM, so no second convolution kernel to keep in step.

    >>> import pyrt
    >>> conv1d(pyrt.ones(1, 1, 5), pyrt.ones(1, 1, 3)).tolist()
    [[[3.0, 3.0, 3.0]]]
    >>> conv1d(pyrt.ones(2, 4, 7), pyrt.ones(6, 2, 3), padding="same", groups=2).shape
    (2, 6, 7)
    """
    if weight.ndim != 3:
        raise ShapeError(f"conv1d: weight must be (out_channels, in_channels/groups, kL), "
                         f"got {describe(weight.data)}")
    if input.ndim not in (2, 3):
        raise ShapeError(f"conv1d: input must be (N, C, L) or (C, L), got {describe(input.data)}")
    width_padding = padding if isinstance(padding, str) else (0, _single("conv1d: padding", padding, 0))
    out = conv2d(input.unsqueeze(-2), weight.unsqueeze(2), bias, (1, _single("conv1d: stride", stride, 1)),
                 width_padding, (1, _single("conv1d: dilation", dilation, 1)), groups)
    return out.squeeze(-2)


class ConvTranspose2d(Function):
    """The adjoint of ``Conv2d`` with respect to its input (see the module docstring)."""

    def forward(self, z: Any, weight: Any, bias: Any | None, stride: tuple[int, int],
                padding: tuple[int, int], output_padding: tuple[int, int],
                dilation: tuple[int, int], groups: int) -> Any:
        n, cin, hin, win = z.shape
        _, coutg, kh, kw = weight.shape
        cout = coutg * groups
        out_hw = tuple(int((i - 1) * s - 2 * p + d * (k - 1) + op + 1) for i, s, p, d, k, op in
                       zip((hin, win), stride, padding, dilation, (kh, kw), output_padding, strict=True))
        padded_shape = (n, out_hw[0] + 2 * padding[0], out_hw[1] + 2 * padding[1], cout)
        # z plays conv2d's output gradient: (N, Cin, Hin, Win) -> (G, N*Hin*Win, Cin/G).
        z_rows = z.reshape(n, groups, cin // groups, hin, win).transpose(1, 0, 3, 4, 2)
        z_rows = z_rows.reshape(groups, -1, cin // groups)
        # The weight (Cin, Cout/G, KH, KW) is conv2d's (O, C/G, KH, KW) with O = Cin.
        weight_rows = weight.transpose(0, 2, 3, 1).reshape(groups, cin // groups, kh * kw * coutg)
        grad_padded = _col2im(z_rows, weight_rows, padded_shape, (kh, kw), stride, dilation, (hin, win))
        ph, pw = padding
        out = grad_padded[:, ph:ph + out_hw[0], pw:pw + out_hw[1]].transpose(0, 3, 1, 2)
        if bias is not None:
            out = out + bias.reshape(1, cout, 1, 1)
        self.save_for_backward(z_rows, weight_rows)
        self.geometry = (z.shape, weight.shape, stride, padding, dilation, groups)
        self.has_bias = bias is not None
        return out

    def backward(self, grad: Any) -> tuple[Any, ...]:
        z_rows, weight_rows = self.saved_tensors
        z_shape, weight_shape, stride, padding, dilation, groups = self.geometry
        n, cin, hin, win = z_shape
        _, coutg, kh, kw = weight_shape
        need_z, need_weight, need_bias = self.needs_input_grad[:3]
        # conv2d's forward on the gradient: im2col over the same windows.
        padded = _padded_channels_last(grad, padding)
        cols = _im2col(padded, (kh, kw), stride, dilation, (hin, win), groups)
        grad_z = grad_weight = None
        if need_z:
            rows = matmul_arrays(cols.transpose(1, 0, 2), weight_rows.transpose(0, 2, 1))
            grad_z = rows.reshape(groups, n, hin, win, cin // groups).transpose(1, 0, 4, 2, 3)
            grad_z = grad_z.reshape(z_shape)
        if need_weight:
            grad_weight = matmul_arrays(z_rows.transpose(0, 2, 1), cols.transpose(1, 0, 2))
            grad_weight = grad_weight.reshape(cin, kh, kw, coutg).transpose(0, 3, 1, 2)
        grad_bias = grad.sum(axis=(0, 2, 3)) if self.has_bias and need_bias else None
        return grad_z, grad_weight, grad_bias, None, None, None, None, None


@runs_on_input_device
def conv_transpose2d(input: Tensor, weight: Tensor, bias: Tensor | None = None, stride: IntPair = 1,
                     padding: IntPair = 0, output_padding: IntPair = 0, groups: int = 1,
                     dilation: IntPair = 1) -> Tensor:
    """Transposed 2-D convolution (the gradient of ``conv2d`` with respect to its input),
    PyTorch's ``F.conv_transpose2d``: input (N, Cin, H, W) or (Cin, H, W), weight
    (Cin, Cout/groups, KH, KW), bias (Cout,).

    ``OH = (H - 1)*stride - 2*padding + dilation*(KH - 1) + output_padding + 1``, likewise OW.

    >>> import pyrt
    >>> conv_transpose2d(pyrt.ones(1, 1, 2, 2), pyrt.ones(1, 1, 2, 2), stride=2).tolist()
    [[[[1.0, 1.0, 1.0, 1.0], [1.0, 1.0, 1.0, 1.0], [1.0, 1.0, 1.0, 1.0], [1.0, 1.0, 1.0, 1.0]]]]
    >>> conv_transpose2d(pyrt.ones(2, 4, 5, 5), pyrt.ones(4, 3, 3, 3), padding=1).shape
    (2, 3, 5, 5)
    """
    stride = _pair("conv_transpose2d: stride", stride, 1)
    padding = _pair("conv_transpose2d: padding", padding, 0)
    output_padding = _pair("conv_transpose2d: output_padding", output_padding, 0)
    dilation = _pair("conv_transpose2d: dilation", dilation, 1)
    if weight.ndim != 4:
        raise ShapeError(f"conv_transpose2d: weight must be (in_channels, out_channels/groups, kH, kW), "
                         f"got {describe(weight.data)}")
    if isinstance(groups, bool) or not isinstance(groups, int) or groups < 1:
        raise ValueError(f"conv_transpose2d: groups must be a positive int, got {groups!r}")
    if input.ndim == 3:
        return conv_transpose2d(input.unsqueeze(0), weight, bias, stride, padding, output_padding,
                                groups, dilation).squeeze(0)
    cin, coutg = weight.shape[:2]
    if input.ndim != 4 or input.shape[1] != cin:
        raise ShapeError(f"conv_transpose2d: input is {describe(input.data)} but weight is "
                         f"{describe(weight.data)}; expected input (N, {cin}, H, W)")
    if cin % groups:
        raise ShapeError(f"conv_transpose2d: in_channels {cin} is not divisible by groups={groups}")
    if bias is not None and bias.shape != (coutg * groups,):
        raise ShapeError(f"conv_transpose2d: bias is {describe(bias.data)}, expected ({coutg * groups},)")
    if input.dtype != weight.dtype or (bias is not None and bias.dtype != weight.dtype):
        raise TypeError(f"conv_transpose2d: input is {input.dtype} but weight is {weight.dtype}"
                        + (f" and bias is {bias.dtype}" if bias is not None else ""))
    for op, s, d in zip(output_padding, stride, dilation, strict=True):
        if op >= s and op >= d:  # PyTorch's rule: the extra rows must come from a gap
            raise ValueError(f"conv_transpose2d: output_padding {output_padding} must be smaller than "
                             f"stride {stride} or dilation {dilation}")
    for i, s, p, d, k, op in zip(input.shape[2:], stride, padding, dilation, weight.shape[2:],
                                 output_padding, strict=True):
        if (i - 1) * s - 2 * p + d * (k - 1) + op + 1 <= 0:
            raise ShapeError(f"conv_transpose2d: input {describe(input.data)} with kernel "
                             f"{weight.shape[2:]}, stride {stride} and padding {padding} gives an "
                             "empty output")
    return ConvTranspose2d.apply(input, weight, bias, stride, padding, output_padding, dilation, groups)
