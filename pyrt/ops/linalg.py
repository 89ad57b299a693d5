"""Matrix products: ``matmul`` (2-D, batched, 1-D like PyTorch) and ``linear``.

float32 products run on pyrt's own SGEMM (``pyrt.kernels.matmul``); other
dtypes (float64 for gradient checks) use the array library's matmul. Transposes
in the backward are strided views: the kernel packs them without a copy.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from pyrt import kernels
from pyrt.autograd import Function, runs_on_input_device
from pyrt.backend import describe, get_array_module
from pyrt.errors import ShapeError
from pyrt.tensor import Tensor

__all__ = ["linear", "matmul"]


def matmul_arrays(a: Any, b: Any) -> Any:
    """``a @ b`` on arrays with numpy's batching rules, on our kernel for float32."""
    if a.dtype != np.float32 or b.dtype != np.float32 or a.ndim < 2 or b.ndim != 2:
        if a.dtype == b.dtype == np.float32 and a.ndim >= 2 and b.ndim >= 2:
            return _batched_sgemm(a, b)
        return get_array_module(a, b).matmul(a, b)
    if a.ndim == 2:
        return kernels.matmul(a, b)
    # (..., m, k) @ (k, n): one GEMM over the stacked rows.
    out = kernels.matmul(a.reshape(math.prod(a.shape[:-1]), a.shape[-1]), b)
    return out.reshape(*a.shape[:-1], b.shape[1])


def _batched_sgemm(a: Any, b: Any) -> Any:
    xp = get_array_module(a, b)
    batch = np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    a = xp.broadcast_to(a, (*batch, *a.shape[-2:]))
    b = xp.broadcast_to(b, (*batch, *b.shape[-2:]))
    out = xp.empty((*batch, a.shape[-2], b.shape[-1]), dtype=np.float32)
    for i in np.ndindex(*batch):
        kernels.matmul(a[i], b[i], out=out[i])
    return out


def _swap_last(x: Any) -> Any:
    return x.swapaxes(-1, -2)


class MatMul(Function):
    def forward(self, a: Any, b: Any) -> Any:
        self.save_for_backward(a, b)
        return matmul_arrays(a, b)

    def backward(self, grad: Any) -> tuple[Any, Any]:
        a, b = self.saved_tensors
        need_a, need_b = self.needs_input_grad
        grad_a = matmul_arrays(grad, _swap_last(b)) if need_a else None
        if not need_b:
            grad_b = None
        elif b.ndim == 2 and a.ndim > 2:
            # Fold the batch into the rows: one (k, m*batch) @ (m*batch, n) GEMM.
            rows = math.prod(a.shape[:-1])
            grad_b = matmul_arrays(a.reshape(rows, a.shape[-1]).T, grad.reshape(rows, grad.shape[-1]))
        else:
            grad_b = matmul_arrays(_swap_last(a), grad)
        return grad_a, grad_b  # the engine sums broadcast batch dims away


class LinearFunction(Function):
    """``x @ weight.T + bias`` as one node: the layer every MLP spends its time in."""

    def forward(self, x: Any, weight: Any, bias: Any | None) -> Any:
        self.save_for_backward(x, weight)
        self.has_bias = bias is not None
        rows = x.reshape(math.prod(x.shape[:-1]), x.shape[-1])  # -1 fails when x is empty
        out = matmul_arrays(rows, weight.T)
        if bias is not None:
            out += bias
        return out.reshape(*x.shape[:-1], weight.shape[0])

    def backward(self, grad: Any) -> tuple[Any, Any, Any | None]:
        x, weight = self.saved_tensors
        need_x, need_weight, need_bias = self.needs_input_grad
        grad_rows = grad.reshape(math.prod(grad.shape[:-1]), grad.shape[-1])
        # A first layer's input needs no gradient: skipping it saves a third of backward's GEMM work there.
        grad_x = matmul_arrays(grad_rows, weight).reshape(x.shape) if need_x else None
        grad_weight = (matmul_arrays(grad_rows.T, x.reshape(grad_rows.shape[0], x.shape[-1]))
                       if need_weight else None)
        grad_bias = grad_rows.sum(axis=0) if need_bias else None
        return grad_x, grad_weight, grad_bias


@runs_on_input_device
def matmul(a: Tensor, b: Tensor) -> Tensor:
    """Matrix product with PyTorch's rules: 1-D operands are promoted, batch dims broadcast.

    >>> import pyrt
    >>> matmul(pyrt.ones(2, 3), pyrt.ones(3, 4)).shape
    (2, 4)
    >>> matmul(pyrt.ones(5, 2, 3), pyrt.ones(3)).shape
    (5, 2)
    """
    if a.ndim == 0 or b.ndim == 0:
        raise ShapeError(f"matmul: both operands need at least 1 dim, got {a.shape} and {b.shape}")
    if a.shape[-1] != b.shape[0 if b.ndim == 1 else -2]:
        raise ShapeError(
            f"matmul: a is {describe(a.data)} but b is {describe(b.data)}; inner dimensions "
            f"{a.shape[-1]} != {b.shape[0 if b.ndim == 1 else -2]}"
        )
    if a.ndim >= 2 and b.ndim >= 2:
        try:
            np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
        except ValueError:
            raise ShapeError(
                f"matmul: batch dims of {a.shape} and {b.shape} do not broadcast"
            ) from None
    if a.dtype != b.dtype:
        raise TypeError(f"matmul: a is {a.dtype} but b is {b.dtype}; cast one of them")
    if a.ndim >= 2 and b.ndim >= 2:
        return MatMul.apply(a, b)
    # Promote 1-D operands to a row / a column, then drop the added dims again.
    out = MatMul.apply(a.unsqueeze(0) if a.ndim == 1 else a, b.unsqueeze(1) if b.ndim == 1 else b)
    shape = out.shape[:-2] + out.shape[-2:][a.ndim == 1:2 - (b.ndim == 1)]
    return out.reshape(shape)


@runs_on_input_device
def linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """``x @ weight.T + bias``: x is (..., in_features), weight (out_features, in_features).

    >>> import pyrt
    >>> linear(pyrt.ones(4, 3), pyrt.ones(2, 3), pyrt.zeros(2)).tolist()[0]
    [3.0, 3.0]
    """
    if weight.ndim != 2 or x.ndim == 0 or x.shape[-1] != weight.shape[1]:
        raise ShapeError(
            f"linear: input is {describe(x.data)} but weight is {describe(weight.data)}; "
            f"expected input (..., {weight.shape[1] if weight.ndim == 2 else '?'})"
        )
    if bias is not None and bias.shape != (weight.shape[0],):
        raise ShapeError(f"linear: bias is {describe(bias.data)}, expected ({weight.shape[0]},)")
    if x.dtype != weight.dtype:
        raise TypeError(f"linear: input is {x.dtype} but weight is {weight.dtype}")
    return LinearFunction.apply(x, weight, bias)
