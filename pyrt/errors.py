"""Exception types shared across pyrt.

Shared by the ops (matmul/reshape/permute) and the nn layers (conv): import
``ShapeError`` from here so that both raise the one class.
"""

from __future__ import annotations

__all__ = ["ShapeError"]


class ShapeError(RuntimeError, ValueError):
    """Operand shapes that do not fit together (matmul, reshape, permute, conv).

    A ``RuntimeError`` like PyTorch's, so ported ``except RuntimeError`` code
    catches it; also a ``ValueError``, so callers written against pyrt's
    earlier ``ValueError`` keep working.

    >>> issubclass(ShapeError, RuntimeError) and issubclass(ShapeError, ValueError)
    True
    """
