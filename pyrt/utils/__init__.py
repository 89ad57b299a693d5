"""``pyrt.utils``: helpers outside the core engine (``pyrt.utils.data``, as in PyTorch;
``pyrt.utils.checkpoint`` for resumable training checkpoints)."""

from pyrt.utils import checkpoint, data

__all__ = ["checkpoint", "data"]
