"""Pooling layers: ``MaxPool2d`` and ``AvgPool2d`` (see ``pyrt.ops.pool``)."""

from __future__ import annotations

from pyrt.nn import functional as F
from pyrt.nn.module import Module
from pyrt.ops.conv import IntPair
from pyrt.tensor import Tensor

__all__ = ["AvgPool2d", "MaxPool2d"]


class MaxPool2d(Module):
    """Maximum over each (dilated) window of (N, C, H, W); stride defaults to the kernel size.

    ``ceil_mode`` keeps a last partial window; ``return_indices`` makes the layer
    return ``(output, indices)`` as ``F.max_pool2d`` does.

    >>> import pyrt
    >>> pool = MaxPool2d(2)
    >>> pool
    MaxPool2d(kernel_size=2, stride=2, padding=0, dilation=1, ceil_mode=False)
    >>> pool(pyrt.ones(4, 8, 15, 15)).shape
    (4, 8, 7, 7)
    >>> MaxPool2d(2, ceil_mode=True)(pyrt.ones(4, 8, 15, 15)).shape
    (4, 8, 8, 8)
    """

    def __init__(self, kernel_size: IntPair, stride: IntPair | None = None, padding: IntPair = 0,
                 dilation: IntPair = 1, return_indices: bool = False, ceil_mode: bool = False) -> None:
        super().__init__()
        self.kernel_size = kernel_size
        self.stride = kernel_size if stride is None else stride
        self.padding = padding
        self.dilation = dilation
        self.return_indices = return_indices
        self.ceil_mode = ceil_mode

    def forward(self, input: Tensor) -> Tensor | tuple[Tensor, Tensor]:
        return F.max_pool2d(input, self.kernel_size, self.stride, self.padding, self.dilation,
                            ceil_mode=self.ceil_mode, return_indices=self.return_indices)

    def extra_repr(self) -> str:
        return (f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, "
                f"dilation={self.dilation}, ceil_mode={self.ceil_mode}")


class AvgPool2d(Module):
    """Mean over each window of (N, C, H, W); stride defaults to the kernel size.

    >>> import pyrt
    >>> AvgPool2d(2)(pyrt.ones(1, 1, 4, 4)).tolist()
    [[[[1.0, 1.0], [1.0, 1.0]]]]
    >>> AvgPool2d(2, ceil_mode=True)(pyrt.ones(1, 1, 3, 3)).shape
    (1, 1, 2, 2)
    """

    def __init__(self, kernel_size: IntPair, stride: IntPair | None = None, padding: IntPair = 0,
                 ceil_mode: bool = False, count_include_pad: bool = True,
                 divisor_override: int | None = None) -> None:
        super().__init__()
        self.kernel_size = kernel_size
        self.stride = kernel_size if stride is None else stride
        self.padding = padding
        self.ceil_mode = ceil_mode
        self.count_include_pad = count_include_pad
        self.divisor_override = divisor_override

    def forward(self, input: Tensor) -> Tensor:
        return F.avg_pool2d(input, self.kernel_size, self.stride, self.padding, self.ceil_mode,
                            self.count_include_pad, self.divisor_override)

    def extra_repr(self) -> str:
        text = f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"
        if self.ceil_mode:
            text += ", ceil_mode=True"
        if not self.count_include_pad:
            text += ", count_include_pad=False"
        return text
