"""DDP when ranks do not do the same work: join() for uneven data, and errors (never a hang or a
silent mix of steps) for a skipped backward, an extra step, or mismatched configurations.

Run: mpiexec -n 2 python tests/distributed/workers/ddp_uneven.py MODE
  MODE: join (checks, then prints "ddp uneven ok") | skip-backward | extra-step
"""

from __future__ import annotations

import sys

import numpy as np
import pytest

import pyrt
import pyrt.distributed as dist
from pyrt import nn, optim
from pyrt.distributed.agreement import CollectiveMismatchError
from pyrt.nn import functional as F
from pyrt.nn.parallel import DistributedDataParallel as DDP


def make_model() -> nn.Module:
    pyrt.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3))


def batch(rank: int, step: int) -> tuple[pyrt.Tensor, pyrt.Tensor]:
    rng = np.random.default_rng(100 * rank + step)
    return pyrt.tensor(rng.standard_normal((4, 6)).astype(np.float32)), pyrt.tensor(rng.integers(0, 3, 4))


def steps_of(rank: int) -> int:
    return 3 + rank  # uneven: the last rank has the most batches


def check_join(world: int, rank: int) -> None:
    ddp = DDP(make_model(), bucket_cap_mb=1e-4)  # several buckets
    opt = optim.SGD(ddp.parameters(), lr=0.1)
    with ddp.join():
        for step in range(steps_of(rank)):
            x, y = batch(rank, step)
            opt.zero_grad()
            F.cross_entropy(ddp(x), y).backward()
            opt.step()
    # The oracle: one process, each step averaging the gradients of the ranks that still had
    # data over the whole world (a joined rank counts as zero, PyTorch's default).
    reference = make_model()
    ref_opt = optim.SGD(reference.parameters(), lr=0.1)
    for step in range(steps_of(world - 1)):
        ref_opt.zero_grad()
        for r in range(world):
            if step < steps_of(r):
                x, y = batch(r, step)
                (F.cross_entropy(reference(x), y) / world).backward()
        ref_opt.step()
    for (name, p), q in zip(ddp.module.named_parameters(), reference.parameters(), strict=True):
        np.testing.assert_allclose(p.data, q.data, rtol=1e-5, atol=1e-6, err_msg=name)

    if world > 1:
        # throw_on_early_termination: every rank raises when the first runs out.
        ddp = DDP(make_model())
        with pytest.raises(RuntimeError, match=r"ran out of data at iteration 3"):
            with ddp.join(throw_on_early_termination=True):
                for step in range(steps_of(rank)):
                    ddp(batch(rank, step)[0]).sum().backward()
        # Ranks configuring DDP differently hear it in DDP's words.
        with pytest.raises(CollectiveMismatchError, match=r"DistributedDataParallel: ranks disagree: "
                           r"bucket_cap_mb: rank 0 has 25.0, rank 1 has 1.0"):
            DDP(make_model(), bucket_cap_mb=25.0 if rank == 0 else 1.0)
        with pytest.raises(CollectiveMismatchError, match="find_unused_parameters: rank 0 has False, "
                           "rank 1 has True"):
            DDP(make_model(), find_unused_parameters=rank > 0)
    print(f"rank {rank}: ddp uneven ok", flush=True)


def main() -> None:
    mode = sys.argv[1]
    dist.init_process_group()
    world, rank = dist.get_world_size(), dist.get_rank()
    if mode == "join":
        check_join(world, rank)
    elif mode == "skip-backward":
        ddp = DDP(make_model())
        for step in range(3):
            out = ddp(batch(rank, step)[0])
            if not (rank == 1 and step == 1):  # rank 1 skips one backward
                out.sum().backward()
        print(f"unreachable: rank {rank} mixed steps", flush=True)
    elif mode == "extra-step":
        ddp = DDP(make_model())
        for step in range(steps_of(rank)):  # without join(): the last rank runs on alone
            ddp(batch(rank, step)[0]).sum().backward()
        print(f"rank {rank}: finished {steps_of(rank)} steps", flush=True)
        if rank != world - 1:
            dist.all_reduce(np.ones(1))  # e.g. an evaluation metric
        print(f"unreachable: rank {rank} after the collective", flush=True)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
