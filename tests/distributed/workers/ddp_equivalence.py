"""DDP on N ranks vs single-process training on the same global batch.

Each rank trains a DDP-wrapped MLP on its shard of every global batch; rank 0
also trains an identical unwrapped model on the whole batch. After several SGD
steps the parameters must agree to 1e-5. Small buckets force several
all-reduces in flight; the worker also checks no_sync accumulation.

With ``device`` "cuda" each rank trains on its own GPU (cuda:rank, one per rank):
real cupy where a GPU is visible, else the CPU fake of cupy (tests/fake_cupy.py),
so the buckets are device arrays staged through pinned host memory for MPI; the
reference still trains on the CPU, so GPU DDP must equal CPU training.

A fourth argument "cuda-aware" makes pyrt treat the MPI as CUDA-aware: buckets go to
MPI as device buffers (the fake's "device" memory is host memory, which any MPI reads),
and the worker checks nothing was staged through the host.

Run: mpiexec -n 2 python tests/distributed/workers/ddp_equivalence.py [bucket_cap_mb] [algorithm] [device]
[cuda-aware]
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

import pyrt
import pyrt.distributed as dist
from pyrt import nn
from pyrt.nn.parallel import DistributedDataParallel as DDP


def make_model(seed: int) -> nn.Module:
    pyrt.manual_seed(seed)
    return nn.Sequential(nn.Linear(20, 32), nn.Tanh(), nn.Linear(32, 16), nn.ReLU(), nn.Linear(16, 5))


def gpu_of(rank: int) -> str:
    """This rank's GPU: real cupy's when one is visible, else a device of the CPU fake."""
    try:
        import cupy

        real = cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:  # no cupy, or no driver
        real = False
    if not real:
        sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # tests/
        import fake_cupy

        fake_cupy.install(device_count=2)
    index = rank % pyrt.cuda.device_count()
    pyrt.cuda.set_device(index)  # the usual one-GPU-per-rank setup (torch.cuda.set_device(local_rank))
    return f"cuda:{index}"


def main() -> None:
    bucket_cap_mb = float(sys.argv[1]) if len(sys.argv) > 1 else 0.001
    algorithm = sys.argv[2] if len(sys.argv) > 2 else "auto"
    dist.init_process_group()
    world, rank = dist.get_world_size(), dist.get_rank()
    device = gpu_of(rank) if len(sys.argv) > 3 and sys.argv[3] == "cuda" else "cpu"
    staged: list[int] = []
    if len(sys.argv) > 4 and sys.argv[4] == "cuda-aware":
        from pyrt.distributed import staging

        staging.cuda_aware_mpi = lambda: True
        to_host = staging.to_host
        staging.to_host = lambda array: staged.append(array.size) or to_host(array)
    global_batch = 24
    rng = np.random.default_rng(0)
    xs = rng.standard_normal((6, global_batch, 20)).astype(np.float32)
    ys = rng.integers(0, 5, size=(6, global_batch))

    # Different seeds per rank: DDP must broadcast rank 0's initial parameters.
    ddp = DDP(make_model(seed=1 + rank).to(device), bucket_cap_mb=bucket_cap_mb, algorithm=algorithm)
    reference = make_model(seed=1)
    if device != "cpu":  # the buckets are GPU arrays, which all_reduce stages through the host
        assert all(type(b.buffer).__module__.startswith("cupy") for b in ddp._buckets)
    opt = pyrt.optim.SGD(ddp.parameters(), lr=0.1, momentum=0.9)
    ref_opt = pyrt.optim.SGD(reference.parameters(), lr=0.1, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()
    shard = slice(rank * global_batch // world, (rank + 1) * global_batch // world)

    for step in range(6):
        x, y = pyrt.tensor(xs[step], device=device), pyrt.tensor(ys[step], device=device)
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
        loss_fn(reference(x.cpu()), y.cpu()).backward()
        ref_opt.step()

    worst = 0.0
    for (name, p), (_, q) in zip(ddp.module.named_parameters(), reference.named_parameters(),
                                 strict=True):
        assert p.device == device and (p.grad is None or p.grad.device == device), (name, p.device)
        diff = float(np.abs(p.detach().cpu().numpy() - q.detach().numpy()).max())
        worst = max(worst, diff)
        assert diff <= 1e-5, f"rank {rank}: {name} differs from single-process by {diff}"
    # Every rank holds identical parameters.
    for p in ddp.parameters():
        host = p.detach().cpu().numpy()
        gathered = [np.empty_like(host) for _ in range(world)]
        dist.all_gather(gathered, host)
        assert all((g == gathered[0]).all() for g in gathered)
    if len(sys.argv) > 4 and sys.argv[4] == "cuda-aware":
        assert not staged, f"rank {rank}: {len(staged)} GPU arrays were staged through the host"
    print(f"rank {rank}: ddp matches single-process, max abs diff {worst:.2e}, "
          f"{len(ddp._buckets)} buckets on {device}")
    grads = [p.grad.data.copy() for p in ddp.parameters()]
    dist.destroy_process_group()
    # The averaged gradients view DDP's buckets, in the group's shared memory on one node: that
    # memory must outlive the group (it crashed the process when destroy unmapped it).
    for p, before in zip(ddp.parameters(), grads, strict=True):
        assert (p.grad.data == before).all()


if __name__ == "__main__":
    main()
