"""Convolution layers: ``Conv1d``, ``Conv2d`` and ``ConvTranspose2d`` (im2col + our SGEMM,
see ``pyrt.ops.conv``), with PyTorch's arguments, parameter shapes and initialisation."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from pyrt.nn import functional as F
from pyrt.nn import init
from pyrt.nn.module import Module
from pyrt.nn.parameter import Parameter
from pyrt.ops.conv import IntPair, _pair
from pyrt.tensor import Tensor

__all__ = ["Conv1d", "Conv2d", "ConvTranspose2d"]

_PADDING_MODES = ("zeros", "reflect", "replicate", "circular")


class _ConvNd(Module):
    """Parameters, checks and repr shared by the convolution layers.

    ``dims`` is 1 or 2. Sizes are stored as tuples of that length, as PyTorch does.
    """

    dims: int
    transposed = False

    def __init__(self, in_channels: int, out_channels: int, kernel_size: Any, stride: Any,
                 padding: Any, dilation: Any, groups: int, bias: bool, padding_mode: str,
                 dtype: Any, output_padding: Any = 0) -> None:
        super().__init__()
        name = type(self).__name__
        if isinstance(groups, bool) or not isinstance(groups, int) or groups < 1:
            raise ValueError(f"{name}: groups must be a positive int, got {groups!r}")
        if in_channels <= 0 or out_channels <= 0:
            raise ValueError(f"{name}: channels must be positive, got in_channels={in_channels}, "
                             f"out_channels={out_channels}")
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"{name}: in_channels={in_channels} and out_channels={out_channels} "
                             f"must both be divisible by groups={groups}")
        if padding_mode not in _PADDING_MODES:
            raise ValueError(f"{name}: padding_mode must be one of {_PADDING_MODES}, got {padding_mode!r}")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = self._tuple(f"{name}: kernel_size", kernel_size, 1)
        self.stride = self._tuple(f"{name}: stride", stride, 1)
        if isinstance(padding, str):
            if padding not in ("same", "valid") or self.transposed:
                raise ValueError(f"{name}: padding must be an int, a tuple, 'valid' or 'same', "
                                 f"got {padding!r}")
            if padding == "same" and any(s != 1 for s in self.stride):
                raise ValueError(f"{name}: padding='same' is not supported for strided convolutions")
            self.padding: Any = padding
        else:
            self.padding = self._tuple(f"{name}: padding", padding, 0)
        self.dilation = self._tuple(f"{name}: dilation", dilation, 1)
        self.output_padding = self._tuple(f"{name}: output_padding", output_padding, 0)
        self.groups = groups
        self.padding_mode = padding_mode
        dtype = np.float32 if dtype is None else np.dtype(dtype)
        shape = ((in_channels, out_channels // groups) if self.transposed
                 else (out_channels, in_channels // groups)) + self.kernel_size
        self.weight = Parameter(np.empty(shape, dtype=dtype))
        if bias:
            self.bias = Parameter(np.empty((out_channels,), dtype=dtype))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def _tuple(self, name: str, value: Any, minimum: int) -> tuple[int, ...]:
        if self.dims == 2:
            return _pair(name, value, minimum)
        items = (value,) if isinstance(value, int) else tuple(value)
        if len(items) != 1:
            raise TypeError(f"{name} must be an int or a 1-tuple, got {value!r}")
        return (_pair(name, items[0], minimum)[0],)

    def reset_parameters(self) -> None:
        """Redraw weight and bias from PyTorch's default distribution."""
        # a=sqrt(5) makes the bound 1/sqrt(fan_in), PyTorch's default (see Linear); fan_in
        # is weight.shape[1] * kernel area, which for a transposed conv is out_channels/groups.
        init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            fan_in = self.weight.shape[1] * math.prod(self.kernel_size)
            bound = 1 / math.sqrt(fan_in)
            init.uniform_(self.bias, -bound, bound)

    def _padded_input(self, input: Tensor) -> tuple[Tensor, Any]:
        """With a non-zero ``padding_mode``, pad explicitly and let the conv pad nothing."""
        if self.padding_mode == "zeros" or self.padding == "valid":
            return input, self.padding
        if self.padding == "same":
            amounts = [(d * (k - 1) // 2, d * (k - 1) - d * (k - 1) // 2)
                       for k, d in zip(self.kernel_size, self.dilation, strict=True)]
        else:
            amounts = [(p, p) for p in self.padding]
        flat = [n for pair in reversed(amounts) for n in pair]  # last dim first, as F.pad wants
        return F.pad(input, flat, mode=self.padding_mode), 0

    def extra_repr(self) -> str:
        text = (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}")
        if self.padding != (0,) * self.dims:
            text += f", padding={self.padding}"  # a string unquoted, as PyTorch prints it
        if self.dilation != (1,) * self.dims:
            text += f", dilation={self.dilation}"
        if self.output_padding != (0,) * self.dims:
            text += f", output_padding={self.output_padding}"
        if self.groups != 1:
            text += f", groups={self.groups}"
        if self.bias is None:
            text += ", bias=False"
        if self.padding_mode != "zeros":
            text += f", padding_mode={self.padding_mode}"
        return text


class Conv2d(_ConvNd):
    """2-D convolution over (N, C, H, W) with weight (out, in/groups, kH, kW), as in PyTorch.

    ``padding`` is an int, a pair, ``'valid'`` or ``'same'``; ``padding_mode`` is
    ``'zeros'``, ``'reflect'``, ``'replicate'`` or ``'circular'``. Initialised as
    PyTorch does: weight and bias from U(-1/sqrt(fan_in), 1/sqrt(fan_in)) with
    ``fan_in = in_channels / groups * kH * kW``, so weights copy across unchanged.

    >>> import pyrt
    >>> conv = Conv2d(3, 8, 3, padding=1)
    >>> conv
    Conv2d(3, 8, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1))
    >>> conv(pyrt.ones(2, 3, 16, 16)).shape
    (2, 8, 16, 16)
    >>> Conv2d(3, 8, 4, padding="same", padding_mode="reflect")(pyrt.ones(2, 3, 9, 9)).shape
    (2, 8, 9, 9)
    """

    dims = 2

    def __init__(self, in_channels: int, out_channels: int, kernel_size: IntPair,
                 stride: IntPair = 1, padding: IntPair | str = 0, dilation: IntPair = 1,
                 groups: int = 1, bias: bool = True, padding_mode: str = "zeros",
                 dtype: Any = None) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups,
                         bias, padding_mode, dtype)

    def forward(self, input: Tensor) -> Tensor:
        input, padding = self._padded_input(input)
        return F.conv2d(input, self.weight, self.bias, self.stride, padding, self.dilation,
                        self.groups)


class Conv1d(_ConvNd):
    """1-D convolution over (N, C, L) with weight (out, in/groups, k), as in PyTorch.

    >>> import pyrt
    >>> conv = Conv1d(4, 6, 3, padding="same")
    >>> conv
    Conv1d(4, 6, kernel_size=(3,), stride=(1,), padding=same)
    >>> conv(pyrt.ones(2, 4, 10)).shape
    (2, 6, 10)
    """

    dims = 1

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | tuple[int],
                 stride: int | tuple[int] = 1, padding: int | tuple[int] | str = 0,
                 dilation: int | tuple[int] = 1, groups: int = 1, bias: bool = True,
                 padding_mode: str = "zeros", dtype: Any = None) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups,
                         bias, padding_mode, dtype)

    def forward(self, input: Tensor) -> Tensor:
        input, padding = self._padded_input(input)
        return F.conv1d(input, self.weight, self.bias, self.stride, padding, self.dilation,
                        self.groups)


class ConvTranspose2d(_ConvNd):
    """Transposed 2-D convolution (an upsampling conv), weight (in, out/groups, kH, kW).

    ``output_size`` in ``forward`` picks among the sizes a strided conv maps to
    the same input size, as in PyTorch.

    >>> import pyrt
    >>> up = ConvTranspose2d(8, 4, 2, stride=2)
    >>> up
    ConvTranspose2d(8, 4, kernel_size=(2, 2), stride=(2, 2))
    >>> up(pyrt.ones(1, 8, 5, 5)).shape
    (1, 4, 10, 10)
    """

    dims = 2
    transposed = True

    def __init__(self, in_channels: int, out_channels: int, kernel_size: IntPair,
                 stride: IntPair = 1, padding: IntPair = 0, output_padding: IntPair = 0,
                 groups: int = 1, bias: bool = True, dilation: IntPair = 1,
                 padding_mode: str = "zeros", dtype: Any = None) -> None:
        if padding_mode != "zeros":
            raise ValueError(f"ConvTranspose2d: only padding_mode='zeros' is supported, got {padding_mode!r}")
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups,
                         bias, padding_mode, dtype, output_padding)

    def forward(self, input: Tensor, output_size: Any = None) -> Tensor:
        output_padding = self.output_padding
        if output_size is not None:
            wanted = tuple(output_size)[-2:]
            smallest = [(i - 1) * s - 2 * p + d * (k - 1) + 1 for i, s, p, d, k in zip(
                input.shape[-2:], self.stride, self.padding, self.dilation, self.kernel_size, strict=True)]
            output_padding = tuple(w - m for w, m in zip(wanted, smallest, strict=True))
            if any(op < 0 or op >= max(s, d) for op, s, d in zip(output_padding, self.stride,
                                                                self.dilation, strict=True)):
                raise ValueError(f"ConvTranspose2d: output_size {tuple(output_size)} is not reachable "
                                 f"from input {input.shape} (smallest {tuple(smallest)})")
        return F.conv_transpose2d(input, self.weight, self.bias, self.stride, self.padding,
                                  output_padding, self.groups, self.dilation)
