"""How weights get their int8 codes: symmetric min/max quantization, as PyTorch's weight observers.

PyTorch's ``MinMaxObserver`` / ``PerChannelMinMaxObserver`` with ``qint8``
and a symmetric scheme choose ``scale = max|w| / 127.5`` (half of the code
range 255) and zero point 0, then round half to even and clamp to [-128, 127],
multiplying by the float32 inverse scale as FBGEMM does. Using the same rule
makes pyrt's int8 weights equal PyTorch's code for code, so the two runtimes
differ only in the activation path.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pyrt.backend import describe

__all__ = ["quantize_weight"]

QMIN, QMAX = -128, 127
# PyTorch clamps the scale to float32's eps so an all-zero weight still has a usable scale.
EPS = float(np.finfo(np.float32).eps)


def quantize_weight(weight: Any, per_channel: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Quantize a float (n, k) weight to int8 codes and float32 scales.

    Returns ``(codes, scale)`` with ``weight ~= scale[:, None] * codes``;
    ``scale`` has shape ``(n,)`` per channel, ``(1,)`` per tensor.

    >>> w = np.array([[1.0, -0.5], [0.25, 0.0]], np.float32)
    >>> codes, scale = quantize_weight(w)
    >>> codes.tolist(), scale.shape
    ([[127, -64], [32, 0]], (1,))
    >>> quantize_weight(w, per_channel=True)[0].tolist()
    [[127, -64], [127, 0]]
    """
    weight = np.asarray(weight)
    if weight.ndim != 2 or not np.issubdtype(weight.dtype, np.floating):
        raise TypeError(f"quantize_weight: weight must be a 2-D float array, got {describe(weight)}")
    if not np.isfinite(weight).all():
        raise ValueError("quantize_weight: weight holds NaN or infinity; it cannot be quantized")
    weight = weight.astype(np.float32, copy=False)
    axis = 1 if per_channel else None
    if weight.size:
        amax = np.abs(weight).max(axis=axis, keepdims=True)
    else:  # an empty layer: nothing to observe, keep the eps scale
        amax = np.zeros((weight.shape[0], 1) if per_channel else (1, 1), np.float32)
    # Computed in float32 as PyTorch's observer does, so scales match to the bit.
    scale = np.maximum(amax / np.float32((QMAX - QMIN) / 2), np.float32(EPS)).astype(np.float32)
    # Multiply by the float32 inverse, as FBGEMM's quantize routine does: dividing
    # instead rounds about 1 weight in 10^4 to the neighbouring code.
    inverse = (np.float32(1) / scale).astype(np.float32)
    codes = np.clip(np.rint(weight * inverse), QMIN, QMAX).astype(np.int8)
    return codes, scale.reshape(-1)
