"""What to quantize to: the ``qint8`` dtype marker and the dynamic ``QConfig`` presets.

PyTorch describes a quantization by a dtype (``torch.qint8``) and a qconfig
(which observer picks the weight scales). pyrt keeps the same two names with
only what dynamic quantization needs: the weight's scheme, per tensor or per
output channel. Activations are always quantized per batch at run time.

>>> qint8
pyrt.qint8
>>> per_channel_dynamic_qconfig.qscheme
'per_channel_symmetric'
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "QConfig",
    "QuantizedDType",
    "default_dynamic_qconfig",
    "per_channel_dynamic_qconfig",
    "qint8",
]

QSCHEMES = ("per_tensor_symmetric", "per_channel_symmetric")


@dataclass(frozen=True)
class QuantizedDType:
    """A quantized dtype: a name plus the numpy dtype its integer codes are stored in.

    A marker object rather than a numpy dtype, so ``pyrt.qint8`` is never
    mistaken for the plain ``pyrt.int8`` (as in PyTorch, where they differ).

    >>> qint8.storage
    dtype('int8')
    >>> qint8 == np.dtype("int8")
    False
    """

    name: str
    storage: np.dtype

    def __repr__(self) -> str:
        return f"pyrt.{self.name}"


qint8 = QuantizedDType("qint8", np.dtype("int8"))


@dataclass(frozen=True)
class QConfig:
    """How a layer's weights are quantized: symmetric int8, per tensor or per output channel.

    >>> QConfig("per_channel_symmetric")
    QConfig(qscheme='per_channel_symmetric')
    >>> QConfig("affine")
    Traceback (most recent call last):
    ValueError: QConfig: qscheme 'affine' is not supported; use one of ('per_tensor_symmetric', ...)
    """

    qscheme: str = "per_tensor_symmetric"

    def __post_init__(self) -> None:
        if self.qscheme not in QSCHEMES:
            raise ValueError(f"QConfig: qscheme {self.qscheme!r} is not supported; use one of {QSCHEMES}")


# PyTorch's default_dynamic_qconfig observes Linear weights per tensor; keeping
# that default makes a ported script quantize exactly as it did under torch.
default_dynamic_qconfig = QConfig("per_tensor_symmetric")
# One scale per output row: never worse, usually a little more accurate.
per_channel_dynamic_qconfig = QConfig("per_channel_symmetric")
