"""DDP on N ranks vs single-process training on the same global batch.

Each rank trains a DDP-wrapped MLP on its shard of every global batch; rank 0
also trains an identical unwrapped model on the whole batch. After several SGD
steps the parameters must agree to 1e-5. Small buckets force several
all-reduces in flight; the worker also checks no_sync accumulation.

Run: mpiexec -n 2 python tests/distributed/workers/ddp_equivalence.py [bucket_cap_mb] [algorithm]
"""

from __future__ import annotations

import sys

import numpy as np

import pyrt
import pyrt.distributed as dist
from pyrt import nn
from pyrt.nn.parallel import DistributedDataParallel as DDP


def make_model(seed: int) -> nn.Module:
    pyrt.manual_seed(seed)
    return nn.Sequential(nn.Linear(20, 32), nn.Tanh(), nn.Linear(32, 16), nn.ReLU(), nn.Linear(16, 5))


def main() -> None:
    bucket_cap_mb = float(sys.argv[1]) if len(sys.argv) > 1 else 0.001
    algorithm = sys.argv[2] if len(sys.argv) > 2 else "auto"
    dist.init_process_group()
    world, rank = dist.get_world_size(), dist.get_rank()
    global_batch = 24
    rng = np.random.default_rng(0)
    xs = rng.standard_normal((6, global_batch, 20)).astype(np.float32)
    ys = rng.integers(0, 5, size=(6, global_batch))

    # Different seeds per rank: DDP must broadcast rank 0's initial parameters.
    ddp = DDP(make_model(seed=1 + rank), bucket_cap_mb=bucket_cap_mb, algorithm=algorithm)
    reference = make_model(seed=1)
    opt = pyrt.optim.SGD(ddp.parameters(), lr=0.1, momentum=0.9)
    ref_opt = pyrt.optim.SGD(reference.parameters(), lr=0.1, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()
    shard = slice(rank * global_batch // world, (rank + 1) * global_batch // world)

    for step in range(6):
        x, y = pyrt.tensor(xs[step]), pyrt.tensor(ys[step])
        opt.zero_grad()
        if step % 3 == 2:
            # Gradient accumulation: two half-shards, the first without syncing.
            half = (shard.stop - shard.start) // 2
            first = slice(shard.start, shard.start + half)
            second = slice(shard.start + half, shard.stop)
            with ddp.no_sync():
                (loss_fn(ddp(x[first]), y[first]) * (half / (shard.stop - shard.start))).backward()
            scale = (shard.stop - shard.start - half) / (shard.stop - shard.start)
            (loss_fn(ddp(x[second]), y[second]) * scale).backward()
        else:
            loss_fn(ddp(x[shard]), y[shard]).backward()
        opt.step()

        ref_opt.zero_grad()
        loss_fn(reference(x), y).backward()
        ref_opt.step()

    worst = 0.0
    for (name, p), (_, q) in zip(ddp.module.named_parameters(), reference.named_parameters(),
                                 strict=True):
        diff = float(np.abs(p.data - q.data).max())
        worst = max(worst, diff)
        assert diff <= 1e-5, f"rank {rank}: {name} differs from single-process by {diff}"
    # Every rank holds identical parameters.
    for p in ddp.parameters():
        gathered = [np.empty_like(p.data) for _ in range(world)]
        dist.all_gather(gathered, p.data)
        assert all((g == gathered[0]).all() for g in gathered)
    print(f"rank {rank}: ddp matches single-process, max abs diff {worst:.2e}, "
          f"{len(ddp._buckets)} buckets")
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
