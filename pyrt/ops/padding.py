"""``pad``: PyTorch's ``F.pad`` with constant, reflect, replicate and circular modes.

``pad`` lists (before, after) pairs starting from the last dim, as in PyTorch:
``(left, right, top, bottom)`` pads W then H. Constant padding may be
negative (a crop). The other modes map every output position along a padded
dim to the input position it copies (``np.pad`` of ``arange`` with the same
mode gives that map), so the forward is one ``take`` per padded dim and the
backward adds each gradient back to the position it was copied from: a
reflected or replicated border element gets several contributions.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from pyrt.autograd import Function, runs_on_input_device
from pyrt.backend import describe, get_array_module
from pyrt.tensor import Tensor

__all__ = ["pad"]

_NUMPY_MODES = {"reflect": "reflect", "replicate": "edge", "circular": "wrap"}


class ConstantPad(Function):
    def forward(self, x: Any, pairs: tuple[tuple[int, int], ...], value: float) -> Any:
        xp = get_array_module(x)
        lead = x.ndim - len(pairs)
        # Negative amounts crop first; what is left is padded with ``value``.
        crop = tuple(slice(max(-lo, 0), n - max(-hi, 0))
                     for (lo, hi), n in zip(pairs, x.shape[lead:], strict=True))
        cropped = x[(Ellipsis, *crop)]
        out_shape = x.shape[:lead] + tuple(
            c + max(lo, 0) + max(hi, 0) for (lo, hi), c in zip(pairs, cropped.shape[lead:], strict=True))
        out = xp.full(out_shape, value, dtype=x.dtype)
        self.place = tuple(slice(max(lo, 0), max(lo, 0) + c)
                           for (lo, _), c in zip(pairs, cropped.shape[lead:], strict=True))
        out[(Ellipsis, *self.place)] = cropped
        self.shape, self.crop = x.shape, crop
        return out

    def backward(self, grad: Any) -> tuple[Any, None, None]:
        xp = get_array_module(grad)
        grad_x = xp.zeros(self.shape, dtype=grad.dtype)
        grad_x[(Ellipsis, *self.crop)] = grad[(Ellipsis, *self.place)]
        return grad_x, None, None


class IndexPad(Function):
    """Reflect, replicate or circular padding as one gather per padded dim."""

    def forward(self, x: Any, pairs: tuple[tuple[int, int], ...], mode: str) -> Any:
        xp = get_array_module(x)
        lead = x.ndim - len(pairs)
        self.maps = []
        for axis, (lo, hi) in enumerate(pairs, start=lead):
            source = np.pad(np.arange(x.shape[axis]), (lo, hi), mode=_NUMPY_MODES[mode])
            self.maps.append((axis, xp.asarray(source), x.shape[axis]))
            x = xp.take(x, self.maps[-1][1], axis=axis)
        return x

    def backward(self, grad: Any) -> tuple[Any, None, None]:
        xp = get_array_module(grad)
        for axis, source, size in reversed(self.maps):
            moved = xp.moveaxis(grad, axis, 0)
            summed = xp.zeros((size, *moved.shape[1:]), dtype=grad.dtype)
            xp.add.at(summed, source, moved)  # repeated sources accumulate
            grad = xp.moveaxis(summed, 0, axis)
        return grad, None, None


@runs_on_input_device
def pad(input: Tensor, pad: Sequence[int], mode: str = "constant", value: float | None = None) -> Tensor:
    """Pad the trailing dims of ``input``; ``pad`` is ``(last_lo, last_hi, prev_lo, prev_hi, ...)``.

    ``mode`` is ``'constant'`` (with ``value``, 0 by default; negative amounts crop),
    ``'reflect'`` (mirror without repeating the edge), ``'replicate'`` (repeat the
    edge) or ``'circular'`` (wrap around).

    >>> import pyrt
    >>> x = pyrt.tensor([[1.0, 2.0, 3.0]])
    >>> pad(x, (1, 2)).tolist()
    [[0.0, 1.0, 2.0, 3.0, 0.0, 0.0]]
    >>> pad(x, (2, 1), mode="reflect").tolist()
    [[3.0, 2.0, 1.0, 2.0, 3.0, 2.0]]
    >>> pad(x, (1, 1), mode="replicate").tolist()
    [[1.0, 1.0, 2.0, 3.0, 3.0]]
    """
    amounts = tuple(pad)
    if len(amounts) % 2 or not all(isinstance(p, (int, np.integer)) and not isinstance(p, bool)
                                   for p in amounts):
        raise ValueError(f"pad: pad must be an even number of ints, got {pad!r}")
    dims = len(amounts) // 2
    if dims > input.ndim:
        raise ValueError(f"pad: pad {amounts} covers {dims} dims but input is {describe(input.data)}")
    # (last_lo, last_hi, prev_lo, prev_hi) -> ((prev_lo, prev_hi), (last_lo, last_hi)): dim order.
    pairs = tuple((int(amounts[2 * k]), int(amounts[2 * k + 1])) for k in reversed(range(dims)))
    sizes = input.shape[input.ndim - dims:]
    if mode == "constant":
        for (lo, hi), n in zip(pairs, sizes, strict=True):
            if n + lo + hi < 0:
                raise ValueError(f"pad: pad {amounts} crops more than input {describe(input.data)} has")
        return ConstantPad.apply(input, pairs, 0.0 if value is None else float(value))
    if mode not in _NUMPY_MODES:
        raise ValueError(f"pad: mode must be 'constant', 'reflect', 'replicate' or 'circular', "
                         f"got {mode!r}")
    if value not in (None, 0, 0.0):
        raise ValueError(f"pad: value is only used in constant mode, got value={value} with {mode!r}")
    for (lo, hi), n in zip(pairs, sizes, strict=True):
        if min(lo, hi) < 0:
            raise ValueError(f"pad: {mode} padding must be non-negative, got {amounts}")
        if mode == "replicate" and n == 0 and lo + hi:
            raise ValueError(f"pad: cannot replicate an empty dim of input {describe(input.data)}")
        if mode == "reflect" and max(lo, hi) >= n:
            raise ValueError(f"pad: reflect padding {amounts} must be smaller than the padded dim "
                             f"(size {n}) of input {describe(input.data)}")
        if mode == "circular" and max(lo, hi) > n:
            raise ValueError(f"pad: circular padding {amounts} must not exceed the padded dim "
                             f"(size {n}) of input {describe(input.data)}")
    return IndexPad.apply(input, pairs, mode)
