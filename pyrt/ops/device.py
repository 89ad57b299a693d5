"""Moving a tensor between the CPU and a GPU, differentiably (``Tensor.to``, ``.cuda()``, ``.cpu()``)."""

from __future__ import annotations

from typing import Any

from pyrt.autograd import Function
from pyrt.backend import device_of, is_cuda_array, move_array
from pyrt.tensor import Tensor

__all__ = ["to_device"]


class ToDevice(Function):
    """A copy onto another device; its gradient is copied back to the source device, as PyTorch's."""

    def forward(self, x: Any, kind: str, index: int | None) -> Any:
        self.source = ("cuda", x.device.id) if is_cuda_array(x) else ("cpu", None)
        return move_array(x, kind, index)

    def backward(self, grad: Any) -> tuple[Any, None, None]:
        return move_array(grad, *self.source), None, None


def to_device(x: Tensor, kind: str, index: int | None = None) -> Tensor:
    """``x`` on the CPU (``kind="cpu"``) or on CUDA device ``index``; ``x`` itself when it is there.

    >>> import pyrt
    >>> x = pyrt.ones(2)
    >>> to_device(x, "cpu") is x
    True
    """
    wanted = "cpu" if kind == "cpu" else f"cuda:{index}"
    if device_of(x.data) == wanted:
        return x
    return ToDevice.apply(x, kind, index)
