"""``Parameter``: a tensor that a ``Module`` registers as learnable state."""

from __future__ import annotations

from typing import Any

import numpy as np

from pyrt.tensor import Tensor

__all__ = ["Parameter"]


class Parameter(Tensor):
    """A leaf tensor that requires grad and is registered when set on a ``Module``.

    Built from a tensor it shares that tensor's array, as ``torch.nn.Parameter``
    shares storage.

    >>> import pyrt
    >>> w = Parameter(pyrt.zeros(2, 3))
    >>> w.requires_grad, w.shape
    (True, (2, 3))
    """

    # No new attributes: a Parameter is a Tensor that modules recognise by type.
    __slots__ = ()

    def __init__(self, data: Any = None, requires_grad: bool = True) -> None:
        if data is None:
            data = np.empty((0,), dtype=np.float32)
        super().__init__(data.data if isinstance(data, Tensor) else data,
                         requires_grad=requires_grad)

    def __repr__(self) -> str:
        return "Parameter containing:\n" + super().__repr__()
