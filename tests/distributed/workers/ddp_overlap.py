"""DDP overlaps communication with backward: a bucket reduces while backward still runs.

A layer whose backward sleeps stands in for a long backward (sleeping frees the
core, so the check does not depend on spare CPUs). The buckets holding the
layer after it are launched before the sleep; their all-reduces must have
completed by the time the sleep ends, while backward is still running.

Run: mpiexec -n 2 python tests/distributed/workers/ddp_overlap.py
"""

from __future__ import annotations

import time

import numpy as np

import pyrt
import pyrt.distributed as dist
from pyrt import nn
from pyrt.autograd import Function
from pyrt.nn.parallel import DistributedDataParallel as DDP

# What the early buckets' all-reduces had done when the slow backward ended.
completed_during_backward: list[bool] = []
ddp_model: list[DDP] = []


class SlowBackward(Function):
    def forward(self, x):
        return x

    def backward(self, grad):
        time.sleep(0.3)
        early = [b for b in ddp_model[0]._buckets if b.work is not None]
        completed_during_backward.append(bool(early) and all(b.work.is_completed() for b in early))
        return (grad,)


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.first = nn.Linear(64, 64)
        self.last = nn.Linear(64, 512 * 1024 // 64)  # ~2 MB of gradient in its own bucket

    def forward(self, x):
        return self.last(SlowBackward.apply(self.first(x)))


class RegisteredBackwards(nn.Module):
    """Layers registered in the reverse of their use: reverse registration order (the initial
    guess of when gradients arrive) is then exactly wrong."""

    def __init__(self) -> None:
        super().__init__()
        self.c = nn.Linear(8, 2)
        self.b = nn.Linear(8, 8)
        self.a = nn.Linear(4, 8)

    def forward(self, x):
        return self.c(self.b(self.a(x).relu()).relu())


def check_buckets_follow_arrival_order() -> None:
    """After the first iteration the buckets are rebuilt in the order gradients arrived (rank 0's),
    and training goes on equal to one process."""
    pyrt.manual_seed(3)
    model = DDP(RegisteredBackwards(), bucket_cap_mb=1e-6)  # one parameter per bucket
    reference = RegisteredBackwards()
    reference.load_state_dict(model.module.state_dict())
    first = [b.params[0][0] for b in model._buckets]
    assert first[0].startswith("a.") and first[-1].startswith("c."), first
    world, rank = dist.get_world_size(), dist.get_rank()
    for _ in range(3):
        model.zero_grad()
        reference.zero_grad()
        x = pyrt.tensor(np.random.default_rng(rank).standard_normal((4, 4)).astype(np.float32))
        model(x).sum().backward()
        for r in range(world):  # the average of every rank's gradient, computed by one process
            xr = np.random.default_rng(r).standard_normal((4, 4)).astype(np.float32)
            (reference(pyrt.tensor(xr)).sum() / world).backward()
        for (name, p), q in zip(model.module.named_parameters(), reference.parameters(), strict=True):
            np.testing.assert_allclose(p.grad.data, q.grad.data, rtol=1e-5, atol=1e-6, err_msg=name)
    rebuilt = [b.params[0][0] for b in model._buckets]
    assert rebuilt[0].startswith("c.") and rebuilt[-1].startswith("a."), rebuilt
    assert len(model.comm_stats.bucket_algorithms) == len(rebuilt)


def main() -> None:
    dist.init_process_group()
    model = DDP(Net(), bucket_cap_mb=1)
    ddp_model.append(model)
    assert len(model._buckets) >= 2, len(model._buckets)  # "last" reduces apart from "first"
    x = pyrt.tensor(np.ones((4, 64), np.float32))
    for _ in range(3):
        model.zero_grad()
        model(x).sum().backward()
    assert completed_during_backward == [True] * 3, completed_during_backward
    hidden = model.comm_stats.hidden_fraction
    check_buckets_follow_arrival_order()
    print(f"rank {dist.get_rank()}: ddp overlap ok, {hidden:.0%} of all-reduce time hidden")
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
