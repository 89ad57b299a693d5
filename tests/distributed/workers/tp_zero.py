"""ZeroRedundancyOptimizer vs DistributedDataParallel + the same optimizer, on every rank.

Two copies of one model train for 5 steps on the same data shards: one
wrapped in DDP and stepped by a plain optimizer, the other unwrapped and
stepped by ZeroRedundancyOptimizer. Their parameters must agree after every
step (SGD with momentum and weight decay, Adam, AdamW; float64 and float32;
parameter counts that do and do not divide by the world size; a parameter
no rank uses). Each rank's optimizer state must be its share of DDP's, and
the counted communication must equal the analytic count.

Run: mpiexec -n 4 python tests/distributed/workers/tp_zero.py
"""

from __future__ import annotations

import numpy as np

import pyrt
import pyrt.distributed as dist
from pyrt import nn, optim
from pyrt.distributed.agreement import CollectiveMismatchError
from pyrt.distributed.functional import CommCounter
from pyrt.distributed.optim import ZeroRedundancyOptimizer, optimizer_state_bytes
from pyrt.nn.parallel import DistributedDataParallel as DDP


class Net(nn.Module):
    def __init__(self, width: int, dtype, unused: bool) -> None:
        super().__init__()
        self.hidden = nn.Linear(5, width, dtype=dtype)
        self.out = nn.Linear(width, 3, dtype=dtype)
        if unused:
            self.unused = nn.Linear(2, 2, dtype=dtype)   # never in forward: its gradient stays None

    def forward(self, x):
        return self.out(self.hidden(x).tanh())


def run(optimizer_class, kwargs: dict, width: int, unused: bool, dtype, rank: int, world: int) -> None:
    pyrt.manual_seed(3)
    ddp = DDP(Net(width, dtype, unused), find_unused_parameters=unused)
    pyrt.manual_seed(3)
    model = Net(width, dtype, unused)
    plain = optimizer_class(ddp.parameters(), **kwargs)
    zero = ZeroRedundancyOptimizer(model.parameters(), optimizer_class, **kwargs)
    rng = np.random.default_rng(0)
    loss_fn = nn.CrossEntropyLoss()
    label = f"{optimizer_class.__name__} width={width} unused={unused} {np.dtype(dtype).name}"
    tol = dict(rtol=1e-11, atol=1e-13) if dtype == np.float64 else dict(rtol=2e-5, atol=1e-6)
    for step in range(5):
        x = rng.standard_normal((4 * world, 5)).astype(dtype)
        y = rng.integers(0, 3, 4 * world)
        shard = slice(4 * rank, 4 * rank + 4)
        plain.zero_grad()
        loss_fn(ddp(pyrt.tensor(x[shard])), pyrt.tensor(y[shard])).backward()
        plain.step()
        zero.zero_grad()
        loss_fn(model(pyrt.tensor(x[shard])), pyrt.tensor(y[shard])).backward()
        with CommCounter() as counter:
            zero.step()
        for (name, p), q in zip(model.named_parameters(), ddp.module.parameters(), strict=True):
            np.testing.assert_allclose(p.data, q.data, **tol,
                                       err_msg=f"rank {rank}: {label} step {step}: {name}")
    if unused:
        unused_ids = {id(p) for p in model.unused.parameters()}
        stepped = {piece.tensor for b in zero._buffers for piece in b.pieces
                   if id(piece.param) not in unused_ids}
        assert all(p.grad is None for p in model.unused.parameters()) and zero.optim.state.keys() <= stepped

    check_checkpoint(plain, zero, ddp, model, optimizer_class, kwargs, width, unused, dtype, rank, world,
                     tol, label)

    # Memory: this rank keeps state for the elements of its block only.
    numel = sum(p.numel() for p in model.parameters())
    padded = -(-numel // world) * world
    block = padded // world
    unused_numel = sum(p.numel() for p in model.unused.parameters()) if unused else 0
    used_here = 0   # elements of used parameters inside this rank's block
    offset = 0
    for name, p in model.named_parameters():
        lo, hi = max(offset, rank * block), min(offset + p.numel(), (rank + 1) * block)
        if not name.startswith("unused") and lo < hi:
            used_here += hi - lo
        offset += p.numel()
    per_element = optimizer_state_bytes(plain) // (numel - unused_numel)
    mine = optimizer_state_bytes(zero)
    assert mine == per_element * used_here, (label, mine, per_element, used_here)
    every = ddp.process_group.comm.allgather(mine)
    assert sum(every) == optimizer_state_bytes(plain), (label, every, optimizer_state_bytes(plain))
    if numel % world == 0 and not unused:
        assert every == [optimizer_state_bytes(plain) // world] * world, (label, every)

    # One step's traffic: a reduce-scatter and an all-gather of the padded flat buffer,
    # and one byte per parameter saying whether any rank has its gradient.
    itemsize = np.dtype(dtype).itemsize
    expected = ({} if world == 1 else {"reduce_scatter": padded * itemsize, "all_gather": padded * itemsize,
                                       "all_reduce": len(list(model.parameters()))})
    assert counter.bytes == expected, (label, counter, expected)
    if rank == 0:
        print(f"world={world} {label}: {numel} elements (padded {padded}); optimizer state per rank "
              f"{every} bytes vs DDP's {optimizer_state_bytes(plain)} per rank; step traffic "
              f"{counter.bytes}", flush=True)


def check_checkpoint(plain, zero, ddp, model, optimizer_class, kwargs, width, unused, dtype, rank, world,
                     tol, label) -> None:
    """The consolidated state is the plain optimizer's; loading it into a fresh ZeRO continues the run."""
    zero.consolidate_state_dict(to=0)
    full = zero.state_dict() if rank == 0 else None
    expected = plain.state_dict()
    if rank == 0:
        assert full["state"].keys() == expected["state"].keys(), (label, full["state"].keys())
        for i, state in expected["state"].items():
            for key, value in state.items():
                mine = full["state"][i][key]
                if isinstance(value, pyrt.Tensor):
                    np.testing.assert_allclose(mine.data, value.data, **tol,
                                               err_msg=f"{label}: state {i} {key}")
                else:
                    assert mine == value, (label, i, key, mine, value)
        assert [{k: v for k, v in g.items() if k != "params"} for g in full["param_groups"]] == \
            [{k: v for k, v in g.items() if k != "params"} for g in expected["param_groups"]]
    else:
        try:
            zero.state_dict()
        except RuntimeError as exc:
            assert "consolidate_state_dict" in str(exc)
        else:
            raise AssertionError("state_dict() off the consolidating rank must raise")
    # Resume: a fresh model and ZeRO from the plain optimizer's state, one more step each.
    resumed_model = Net(width, dtype, unused)
    for p, q in zip(resumed_model.parameters(), model.parameters(), strict=True):
        p.data[...] = q.data
    resumed = ZeroRedundancyOptimizer(resumed_model.parameters(), optimizer_class, **kwargs)
    resumed.load_state_dict(expected)
    x = np.random.default_rng(9).standard_normal((4 * world, 5)).astype(dtype)
    y = np.random.default_rng(10).integers(0, 3, 4 * world)
    shard = slice(4 * rank, 4 * rank + 4)
    for net, opt in ((ddp, plain), (resumed_model, resumed)):
        opt.zero_grad()
        nn.CrossEntropyLoss()(net(pyrt.tensor(x[shard])), pyrt.tensor(y[shard])).backward()
        opt.step()
    for p, q in zip(resumed_model.parameters(), ddp.module.parameters(), strict=True):
        np.testing.assert_allclose(p.data, q.data, **tol, err_msg=f"rank {rank}: {label} after resuming")


def main() -> None:
    dist.init_process_group()
    rank, world = dist.get_rank(), dist.get_world_size()
    cases = [
        (optim.SGD, dict(lr=0.1, momentum=0.9, weight_decay=0.01)),
        (optim.Adam, dict(lr=0.01)),
        (optim.AdamW, dict(lr=0.01, weight_decay=0.1)),
    ]
    # Width 5: 5*5+5 + 5*3+3 = 48 elements, even for 1, 2 and 4 ranks. Width 6 with the
    # unused layer: 36 + 21 + 6 = 63, uneven (padded to 64), its last 6 elements unused.
    for width, unused in ((5, False), (6, True)):
        for optimizer_class, kwargs in cases:
            run(optimizer_class, kwargs, width, unused, np.float64, rank, world)
    run(optim.Adam, dict(lr=0.01), 6, True, np.float32, rank, world)   # the fused float32 kernels
    check_param_groups_and_errors(rank, world)
    print(f"rank {rank}: zero matches ddp", flush=True)
    dist.destroy_process_group()


def check_param_groups_and_errors(rank: int, world: int) -> None:
    pyrt.manual_seed(0)
    model = nn.Linear(3, 3, dtype=np.float64)
    zero = ZeroRedundancyOptimizer([{"params": [model.weight]}, {"params": [model.bias], "lr": 0.5}],
                                   optim.SGD, lr=0.1)
    # The full groups carry the local optimizer's defaults; editing them (a schedule) reaches the step.
    assert [g["lr"] for g in zero.param_groups] == [0.1, 0.5] and zero.param_groups[0]["momentum"] == 0
    zero.param_groups[1]["lr"] = 0.0
    before = model.bias.data.copy()
    model(pyrt.ones(2, 3, dtype=np.float64)).sum().backward()
    zero.step()
    assert (model.bias.data == before).all(), "lr=0 must leave the bias where it was"
    if world > 1:
        # Ranks naming different roots for the consolidation: an error on every rank, not a hang
        # in the gather of the pieces.
        try:
            zero.consolidate_state_dict(to=rank)
        except CollectiveMismatchError as exc:
            assert "consolidate_state_dict" in str(exc) and "rank 1 has 1" in str(exc), str(exc)
        else:
            raise AssertionError("consolidate_state_dict accepted a different root on every rank")
        try:
            ZeroRedundancyOptimizer([pyrt.zeros(2 + rank % 2, requires_grad=True)], optim.SGD, lr=0.1)
        except CollectiveMismatchError as exc:
            assert "ZeroRedundancyOptimizer" in str(exc) and "((3,), 'float32')" in str(exc), str(exc)
        else:
            raise AssertionError("ZeroRedundancyOptimizer accepted different parameters on the ranks")
    try:
        ZeroRedundancyOptimizer(model.parameters(), object)
    except TypeError as exc:
        assert "optimizer_class" in str(exc)
    else:
        raise AssertionError("ZeroRedundancyOptimizer accepted a non-optimizer class")


if __name__ == "__main__":
    main()
