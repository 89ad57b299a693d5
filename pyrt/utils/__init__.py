"""``pyrt.utils``: helpers outside the core engine (``pyrt.utils.data``, as in PyTorch)."""

from pyrt.utils import data

__all__ = ["data"]
