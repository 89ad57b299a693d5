"""``LocalSGD``: every rank trains its own replica and the replicas are averaged every H steps.

Between averages the ranks never communicate, so a slow rank costs the others
nothing until the next average, and the communication volume drops H-fold
compared with averaging gradients every step (Lin et al., "Don't Use Large
Mini-Batches, Use Local SGD", 2020; PyTorch's ``PeriodicModelAverager``). Only
parameters are averaged; each rank keeps its optimizer state, as PyTorch does.
"""

from __future__ import annotations

from pyrt.distributed.collectives import ReduceOp, all_reduce, broadcast
from pyrt.distributed.process_group import ProcessGroup, resolve_group
from pyrt.distributed.ps.flat import FlatParameters
from pyrt.nn.module import Module

__all__ = ["LocalSGD"]


class LocalSGD:
    """Average ``model``'s parameters over ``group`` every ``sync_every`` calls to ``step()``.

    The constructor broadcasts the group's first rank's parameters, so every
    replica starts equal. ``steps_since_sync`` is how many local steps the
    parameters have taken since the last average (0 right after one).

    Example (under ``mpiexec -n 4``)::

        averager = LocalSGD(model, sync_every=8)
        for x, y in loader:
            optimizer.zero_grad()
            loss_fn(model(x), y).backward()
            optimizer.step()
            averager.step()                  # all-reduces every 8th call
    """

    def __init__(self, model: Module, sync_every: int, group: ProcessGroup | None = None) -> None:
        if sync_every < 1:
            raise ValueError(f"LocalSGD: sync_every must be >= 1, got {sync_every}")
        self.sync_every = sync_every
        self.group = resolve_group(group, "LocalSGD")
        self._flat = FlatParameters(model.parameters())
        # (numel,): the parameters as one buffer, so an average is a single all-reduce.
        self._vector = self._flat.parameters_to_vector()
        broadcast(self._vector, src=self.group.global_ranks[0], group=self.group)
        self._flat.vector_to_parameters(self._vector)
        self.steps_since_sync = 0
        self.syncs = 0

    def step(self) -> bool:
        """Count one local step; every ``sync_every``-th call average the parameters. True if it did.

        Example: ``optimizer.step(); averager.step()``.
        """
        self.steps_since_sync += 1
        if self.steps_since_sync < self.sync_every:
            return False
        self._flat.parameters_to_vector(self._vector)
        all_reduce(self._vector, op=ReduceOp.AVG, group=self.group)
        self._flat.vector_to_parameters(self._vector)
        self.steps_since_sync = 0
        self.syncs += 1
        return True
