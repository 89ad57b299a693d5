"""A model's parameters seen as one flat float32 vector, the unit servers shard and workers send."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from pyrt.tensor import Tensor

__all__ = ["FlatParameters", "broadcast_shards", "check_same_layout"]


class FlatParameters:
    """Copies between a list of parameters and a flat vector, in ``model.parameters()`` order.

    >>> import pyrt
    >>> from pyrt import nn
    >>> flat = FlatParameters(nn.Linear(3, 2).parameters())
    >>> flat.numel, flat.parameters_to_vector().shape
    (8, (8,))
    """

    def __init__(self, parameters: Iterable[Tensor]) -> None:
        self.parameters = list(parameters)
        for i, p in enumerate(self.parameters):
            if p.data.dtype != np.float32 or not isinstance(p.data, np.ndarray):
                raise TypeError(
                    f"parameter {i} of shape {p.shape} is {type(p.data).__name__} {p.data.dtype}; the "
                    "parameter server carries float32 numpy arrays only"
                )
        sizes = [p.data.size for p in self.parameters]
        self.offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(int).tolist()
        self.numel = self.offsets[-1]

    def _slices(self) -> Iterable[tuple[Tensor, slice]]:
        for p, lo, hi in zip(self.parameters, self.offsets[:-1], self.offsets[1:], strict=True):
            yield p, slice(lo, hi)

    def parameters_to_vector(self, out: np.ndarray | None = None) -> np.ndarray:
        """The parameters' values, concatenated (into ``out`` when given)."""
        out = np.empty(self.numel, dtype=np.float32) if out is None else out
        for p, span in self._slices():
            out[span] = p.data.ravel()
        return out

    def grads_to_vector(self, out: np.ndarray) -> np.ndarray:
        """The gradients, concatenated into ``out``; a parameter without one contributes zeros."""
        for p, span in self._slices():
            out[span] = 0.0 if p.grad is None else p.grad.data.ravel()
        return out

    def vector_to_parameters(self, vector: np.ndarray) -> None:
        """Write ``vector`` into the parameters in place (every holder of the arrays sees it)."""
        for p, span in self._slices():
            p.data[...] = vector[span].reshape(p.data.shape)


def check_same_layout(comm: Any, numel: int, what: str) -> None:
    """Raise on every rank (never hang or truncate) unless all ranks hold as many parameters."""
    every = comm.allgather(numel)
    if len(set(every)) > 1:
        listing = ", ".join(f"rank {r} has {n}" for r, n in enumerate(every))
        raise ValueError(f"{what}: ranks disagree on the model's parameter count: {listing}")


def broadcast_shards(comm: Any, vector: np.ndarray, bounds: list[tuple[int, int]],
                     server_ranks: list[int]) -> None:
    """Every rank receives each server's shard into ``vector`` (collective over ``comm``)."""
    for (lo, hi), root in zip(bounds, server_ranks, strict=True):
        comm.Bcast(vector[lo:hi], root=root)
