"""``ZeroRedundancyOptimizer``: optimizer state sharded over the data-parallel ranks (ZeRO).

Data parallelism keeps a full copy of the optimizer state on every rank (two
moments per parameter for Adam: twice the model). ZeRO (Rajbhandari et al.,
2020) gives each of the w ranks one w-th of it. One step, on every rank:

1. The parameters' gradients are laid end to end in a flat buffer (one per
   dtype), zero-padded to a multiple of w elements.
2. ``reduce_scatter`` averages that buffer over the group; rank r keeps
   block r only (the same bytes on the wire as DDP's all-reduce's first half).
3. The wrapped optimizer (``optimizer_class``) steps on the parts of the
   parameters inside block r, so it holds state for those elements only.
4. ``all_gather`` of the updated blocks gives every rank every parameter
   (the all-reduce's second half).

Every rank ends the step with the parameters plain DDP and the same
optimizer would give it. This works for optimizers that update each element
from its own gradient and state alone (SGD, Adam, AdamW); one that uses a
whole tensor's norm (LAMB, say) would see only its part here.

ZeRO reduces the gradients itself: use it on the unwrapped model (a model
wrapped in DDP works too, at the cost of a second reduction).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from pyrt.autograd import enable_grad
from pyrt.distributed.collectives import (
    ReduceOp,
    all_gather_into_tensor,
    all_reduce,
    broadcast,
    reduce_scatter_tensor,
)
from pyrt.distributed.functional import record_communication
from pyrt.distributed.process_group import ProcessGroup, resolve_group
from pyrt.optim.optimizer import Optimizer, ParamsT
from pyrt.tensor import Tensor

__all__ = ["ZeroRedundancyOptimizer", "optimizer_state_bytes"]


class _Piece:
    """The part of one parameter inside this rank's block, as the tensor the local optimizer steps."""

    def __init__(self, param: Tensor, begin: int, end: int, block_offset: int) -> None:
        self.param = param
        self.begin, self.end = begin, end            # element range within the flattened parameter
        self.block_offset = block_offset             # where it starts in this rank's block
        self.tensor = Tensor(param.data.reshape(-1)[begin:end].copy(), requires_grad=True)


class _FlatBuffer:
    """The parameters of one dtype laid end to end, padded to a multiple of the group size."""

    def __init__(self, params: list[Tensor], rank: int, world: int) -> None:
        self.params = params
        self.offsets = np.cumsum([0] + [p.numel() for p in params]).tolist()
        self.numel = self.offsets[-1]
        self.padded = -(-self.numel // world) * world
        self.block = self.padded // world
        self.start = rank * self.block
        self.dtype = params[0].dtype
        self.pieces: list[_Piece] = []
        for p, offset in zip(params, self.offsets, strict=False):
            lo, hi = max(offset, self.start), min(offset + p.numel(), self.start + self.block)
            if lo < hi:
                self.pieces.append(_Piece(p, lo - offset, hi - offset, lo - self.start))


class ZeroRedundancyOptimizer(Optimizer):
    """Wrap ``optimizer_class`` so each rank of ``process_group`` keeps 1/world of its state.

    PyTorch's signature: ``params`` (tensors or parameter groups), the
    optimizer class, the data-parallel group (default: the world) and the
    optimizer's keyword arguments. ``param_groups`` are the full parameters'
    and stay the ones to edit (learning-rate schedules); ``optim`` is the
    local optimizer over this rank's pieces. Parameters are copied from the
    group's first rank at construction, as DDP does. ``step`` averages the
    gradients over the group (see the module docstring), so call it on every
    rank, after backward on the unwrapped model.

    Example (under ``mpiexec -n 2``)::

        model = nn.Linear(10, 10)
        opt = ZeroRedundancyOptimizer(model.parameters(), optim.Adam, lr=1e-3)
        loss_fn(model(x_shard), y_shard).backward()
        opt.step()                       # each rank holds Adam moments for 55 of the 110 elements
    """

    def __init__(self, params: ParamsT, optimizer_class: type[Optimizer],
                 process_group: ProcessGroup | None = None, **defaults: Any) -> None:
        if not (isinstance(optimizer_class, type) and issubclass(optimizer_class, Optimizer)):
            raise TypeError(f"ZeroRedundancyOptimizer: optimizer_class must be a pyrt.optim.Optimizer "
                            f"subclass, got {optimizer_class!r}")
        super().__init__(params, defaults)
        self.process_group = resolve_group(process_group, "ZeroRedundancyOptimizer")
        self.optimizer_class = optimizer_class
        pg = self.process_group
        everything = [p for group in self.param_groups for p in group["params"]]
        self._check_same_parameters(everything)
        for p in everything:
            broadcast(p, src=pg.global_ranks[0], group=pg)
        by_dtype: dict[np.dtype, list[Tensor]] = {}
        for p in everything:
            by_dtype.setdefault(p.dtype, []).append(p)
        self._buffers = [_FlatBuffer(ps, pg.rank(), pg.size()) for ps in by_dtype.values()]
        group_of = {id(p): i for i, group in enumerate(self.param_groups) for p in group["params"]}
        local_groups: list[dict[str, Any]] = [
            {**{k: v for k, v in group.items() if k != "params"}, "params": []}
            for group in self.param_groups]
        for buffer in self._buffers:
            for piece in buffer.pieces:
                local_groups[group_of[id(piece.param)]]["params"].append(piece.tensor)
        self.optim = optimizer_class(local_groups, **defaults)
        # The local optimizer filled in its defaults; show them on the full groups too.
        for group, local in zip(self.param_groups, self.optim.param_groups, strict=True):
            group.update({k: v for k, v in local.items() if k != "params"})

    def _check_same_parameters(self, params: list[Tensor]) -> None:
        pg = self.process_group
        mine = [(tuple(p.shape), str(p.dtype)) for p in params]
        every = pg.comm.allgather(mine)
        for r, theirs in enumerate(every):
            if theirs != every[0]:
                raise ValueError(
                    f"ZeroRedundancyOptimizer: global rank {pg.global_ranks[r]} has parameters "
                    f"(shape, dtype) {theirs} but global rank {pg.global_ranks[0]} has {every[0]}")

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Average the gradients over the group, step this rank's block, gather the parameters.

        Returns ``closure()`` if given (run before the step, with grad enabled).
        """
        loss = None
        if closure is not None:
            with enable_grad():
                loss = closure()
        pg = self.process_group
        everything = [p for buffer in self._buffers for p in buffer.params]
        # A parameter that no rank gave a gradient keeps it None and is not
        # stepped, as with DDP and a plain optimizer (no decay, no moment update).
        has_grad = np.array([p.grad is not None for p in everything], dtype=np.uint8)
        if pg.size() > 1:
            all_reduce(has_grad, op=ReduceOp.MAX, group=pg, algorithm="mpi")
            record_communication("all_reduce", has_grad.nbytes)
        stepped = dict(zip(map(id, everything), has_grad.astype(bool).tolist(), strict=True))
        for group, local in zip(self.param_groups, self.optim.param_groups, strict=True):
            local.update({k: v for k, v in group.items() if k != "params"})
        grad_blocks = [self._reduce_scatter_gradients(buffer) for buffer in self._buffers]
        for buffer, grad_block in zip(self._buffers, grad_blocks, strict=True):
            for piece in buffer.pieces:
                # Start from the parameter's current values (the user may have loaded new ones).
                piece.tensor.data[...] = piece.param.data.reshape(-1)[piece.begin:piece.end]
                end = piece.block_offset + piece.end - piece.begin
                piece.tensor.grad = (Tensor(grad_block[piece.block_offset:end])
                                     if stepped[id(piece.param)] else None)
        self.optim.step()
        for buffer in self._buffers:
            self._all_gather_parameters(buffer, stepped)
            for piece in buffer.pieces:
                piece.tensor.grad = None
        return loss

    def _reduce_scatter_gradients(self, buffer: _FlatBuffer) -> np.ndarray:
        pg = self.process_group
        flat = np.zeros(buffer.padded, dtype=buffer.dtype)
        for p, offset in zip(buffer.params, buffer.offsets, strict=False):
            if p.grad is not None:
                flat[offset:offset + p.numel()] = p.grad.data.reshape(-1)
        block = np.empty(buffer.block, dtype=buffer.dtype)
        if pg.size() == 1:
            return flat
        reduce_scatter_tensor(block, flat, op=ReduceOp.AVG, group=pg)
        record_communication("reduce_scatter", flat.nbytes)
        return block

    def _all_gather_parameters(self, buffer: _FlatBuffer, stepped: dict[int, bool]) -> None:
        pg = self.process_group
        block = np.zeros(buffer.block, dtype=buffer.dtype)  # the padding stays zero
        for piece in buffer.pieces:
            block[piece.block_offset:piece.block_offset + piece.end - piece.begin] = piece.tensor.data
        flat = np.empty(buffer.padded, dtype=buffer.dtype)
        if pg.size() == 1:
            flat = block
        else:
            all_gather_into_tensor(flat, block, group=pg)
            record_communication("all_gather", flat.nbytes)
        for p, offset in zip(buffer.params, buffer.offsets, strict=False):
            if stepped[id(p)]:
                p.data[...] = flat[offset:offset + p.numel()].reshape(p.shape)
                p._version += 1  # graphs recorded with the old values must not backward

    def state_dict(self) -> dict[str, Any]:
        raise NotImplementedError(
            "ZeroRedundancyOptimizer.state_dict: the state is sharded over the ranks and pyrt cannot "
            "consolidate it yet; save each rank's zero.optim.state_dict() instead")

    def load_state_dict(self, state_dict: Any) -> None:
        raise NotImplementedError(
            "ZeroRedundancyOptimizer.load_state_dict: the state is sharded over the ranks; load each "
            "rank's zero.optim.load_state_dict(...) instead")

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        if hasattr(self, "optim"):
            raise NotImplementedError("ZeroRedundancyOptimizer: parameter groups cannot be added after "
                                      "construction (the flat layout is fixed)")
        super().add_param_group(param_group)


def optimizer_state_bytes(optimizer: Optimizer) -> int:
    """Bytes of the arrays in an optimizer's per-parameter state (this rank's, for ZeRO).

    >>> import pyrt
    >>> from pyrt import optim
    >>> w = pyrt.zeros(100, requires_grad=True)
    >>> opt = optim.Adam([w])
    >>> (w * w).sum().backward(); opt.step()
    >>> optimizer_state_bytes(opt)      # two float32 moments of 100 elements
    800
    """
    if isinstance(optimizer, ZeroRedundancyOptimizer):
        optimizer = optimizer.optim
    total = 0
    for state in optimizer.state.values():
        for value in state.values():
            array = value.data if isinstance(value, Tensor) else value
            if isinstance(array, np.ndarray):
                total += array.nbytes
    return total
