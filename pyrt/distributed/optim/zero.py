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
wrapped in DDP works too, at the cost of a second reduction). Unlike
PyTorch's, which expects DDP to have averaged them already, between
``backward`` and ``step`` each rank's ``.grad`` is its own, not the average:
clip or inspect gradients there only under DDP.

Checkpoints follow PyTorch: ``consolidate_state_dict(to=0)`` on every rank
gathers the pieces, ``state_dict()`` on rank 0 returns them in the wrapped
optimizer's own per-parameter format, and ``load_state_dict`` on every rank
takes such a state (or a plain optimizer's) and keeps its block.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from pyrt.autograd import enable_grad
from pyrt.distributed.agreement import agree
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
        pg.drain()  # MPI matches collectives by order: let queued asynchronous ones go first
        agree(pg, "ZeroRedundancyOptimizer", {"parameters (shape, dtype)": [
            (tuple(p.shape), str(p.dtype)) for p in params]})

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

    # --- checkpoints: PyTorch's consolidate-then-save protocol -----------------------
    def _param_indices(self) -> dict[int, int]:
        """Position of every parameter across the groups: the key of a plain optimizer's state_dict."""
        return {id(p): i for i, p in enumerate(p for g in self.param_groups for p in g["params"])}

    def consolidate_state_dict(self, to: int = 0) -> None:
        """Gather every rank's state pieces on global rank ``to``; call it on every rank of the group.

        Afterwards ``state_dict()`` on rank ``to`` returns the full state in the
        wrapped optimizer's own format (per parameter, as a plain optimizer over
        the same parameters would save it), which a plain optimizer or another
        ``ZeroRedundancyOptimizer`` of any group size can load.

        Example (under ``mpiexec -n 2``)::

            zero.consolidate_state_dict(to=0)
            if dist.get_rank() == 0:
                pyrt.save(zero.state_dict(), "optimizer.npz")
        """
        pg = self.process_group
        root = pg.group_rank(to, "consolidate_state_dict: to")
        index = self._param_indices()
        mine: list[tuple[int, int, int, dict[str, Any]]] = []
        for buffer in self._buffers:
            for piece in buffer.pieces:
                state = self.optim.state.get(piece.tensor)
                if state:
                    arrays = {k: (v.data if isinstance(v, Tensor) else v) for k, v in state.items()}
                    mine.append((index[id(piece.param)], piece.begin, piece.end, arrays))
        pg.drain()
        # Every rank in this call with the same root before the (unchecked) gather of the pieces:
        # ranks naming different roots would otherwise wait in it for ever.
        agree(pg, "ZeroRedundancyOptimizer.consolidate_state_dict", {"to": pg.global_ranks[root]})
        every = pg.comm.gather(mine, root=root)
        self._consolidated = None
        if pg.rank() != root:
            return
        params = [p for g in self.param_groups for p in g["params"]]
        state: dict[int, dict[str, Any]] = {}
        for i, begin, end, arrays in (entry for rank_pieces in every for entry in rank_pieces):
            p = params[i]
            full = state.setdefault(i, {})
            for key, value in arrays.items():
                if isinstance(value, np.ndarray) and value.shape == (end - begin,):
                    flat = full.setdefault(key, Tensor(np.zeros(p.numel(), dtype=value.dtype)))
                    flat.data[begin:end] = value
                else:
                    full[key] = value  # per-tensor scalars (Adam's step) agree across the pieces
        for i, full in state.items():
            for value in full.values():
                if isinstance(value, Tensor):
                    value.data = value.data.reshape(params[i].shape)
        groups = [{**g, "params": [index[id(p)] for p in g["params"]]} for g in self.param_groups]
        self._consolidated = {"state": state, "param_groups": groups}

    def state_dict(self) -> dict[str, Any]:
        """The state gathered by ``consolidate_state_dict``, on the rank it was gathered to.

        Example: ``zero.consolidate_state_dict(to=0)`` on every rank, then
        ``zero.state_dict()`` on rank 0.
        """
        consolidated = getattr(self, "_consolidated", None)
        if consolidated is None:
            raise RuntimeError(
                "ZeroRedundancyOptimizer.state_dict: the state is sharded over the ranks; call "
                "consolidate_state_dict(to=rank) on every rank first, then state_dict() on that rank")
        return consolidated

    def load_state_dict(self, state_dict: Any) -> None:
        """Load a full state (a plain optimizer's, or a consolidated one); every rank passes all of it.

        Each rank keeps the parts of the state that fall in its block.

        Example: ``zero.load_state_dict(pyrt.load("optimizer.npz"))`` on every rank.
        """
        if "state" not in state_dict or "param_groups" not in state_dict:
            raise ValueError("ZeroRedundancyOptimizer.load_state_dict: expected 'state' and 'param_groups', "
                             f"got keys {sorted(state_dict)}")
        saved_groups = list(state_dict["param_groups"])
        sizes = [len(g["params"]) for g in self.param_groups]
        if [len(g["params"]) for g in saved_groups] != sizes:
            raise ValueError(f"ZeroRedundancyOptimizer.load_state_dict: the saved groups hold "
                             f"{[len(g['params']) for g in saved_groups]} parameters, these hold {sizes}")
        for group, local, saved in zip(self.param_groups, self.optim.param_groups, saved_groups, strict=True):
            hyper = {k: v for k, v in saved.items() if k != "params"}
            group.update(hyper)
            local.update(hyper)
        index = self._param_indices()
        saved_state = {int(k): v for k, v in state_dict["state"].items()}
        self.optim.state = {}
        for buffer in self._buffers:
            for piece in buffer.pieces:
                full = saved_state.get(index[id(piece.param)])
                if not full:
                    continue
                local_state = {}
                for key, value in full.items():
                    array = value.data if isinstance(value, Tensor) else value
                    if isinstance(array, np.ndarray) and array.shape == piece.param.shape:
                        local_state[key] = Tensor(np.array(array.reshape(-1)[piece.begin:piece.end],
                                                           dtype=piece.tensor.dtype))
                    else:
                        local_state[key] = array
                self.optim.state[piece.tensor] = local_state

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
