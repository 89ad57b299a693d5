# Run: mpiexec -n 2 python examples/ddp_mlp.py [--epochs 40] [--batch-size 32] [--lr 1e-3]
"""The digits MLP of ``train_mlp.py``, data-parallel over any number of MPI ranks.

The global batch stays ``--batch-size`` whatever the number of ranks: each
rank takes ``batch_size / world`` samples of it through a DistributedSampler,
and DistributedDataParallel averages the gradients, so the model sees the same
batches statistics as single-process training and reaches the same accuracy.
Rank 0 prints per-epoch loss and accuracy, the training throughput, and how
much of the gradient all-reduce ran hidden behind backward.
"""

from __future__ import annotations

import argparse
import time

from digits_training import cosine_lr, evaluate
from train_mlp import build_model, digits_datasets

import pyrt
import pyrt.distributed as dist
from pyrt import nn, optim
from pyrt.nn.parallel import DistributedDataParallel as DDP
from pyrt.utils.data import DataLoader, DistributedSampler


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=32, help="global batch size")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    dist.init_process_group("mpi")
    rank, world = dist.get_rank(), dist.get_world_size()
    if args.batch_size % world:
        raise SystemExit(f"--batch-size {args.batch_size} must divide evenly over {world} ranks")
    pyrt.manual_seed(args.seed)
    train, test = digits_datasets()
    sampler = DistributedSampler(train, shuffle=True, seed=args.seed)
    train_loader = DataLoader(train, batch_size=args.batch_size // world, sampler=sampler)
    test_loader = DataLoader(test, batch_size=512)
    # The model's gradients total ~200 KB: PyTorch's 25 MB default bucket would
    # hold them all, launched only when backward ends, leaving nothing to overlap.
    # 100 KB buckets give three, the first reduced while backward is still running.
    model = DDP(build_model(), bucket_cap_mb=0.1)  # rank 0's initial weights everywhere
    pyrt.manual_seed(args.seed + rank)  # each rank its own dropout masks
    loss_fn = nn.CrossEntropyLoss()
    optimizer = optim.Adam(model.parameters(), lr=args.lr)
    if rank == 0:
        print(f"{world} ranks, {args.batch_size // world} samples per rank per step")

    train_seconds, samples = 0.0, 0
    for epoch in range(args.epochs):
        sampler.set_epoch(epoch)
        cosine_lr(optimizer, args.lr, epoch, args.epochs)
        total_loss, batches = 0.0, 0
        dist.barrier()
        start = time.perf_counter()
        for x, y in train_loader:
            optimizer.zero_grad()
            loss = loss_fn(model(x), y)
            loss.backward()
            optimizer.step()
            total_loss += loss.item()
            batches += 1
            samples += len(y) * world
        train_seconds += time.perf_counter() - start
        if rank == 0:
            accuracy = evaluate(model, test_loader)
            print(f"epoch {epoch + 1:3d}  loss {total_loss / batches:.4f}  test accuracy {accuracy:.4f}")

    stats = model.comm_stats
    if rank == 0:
        print(f"throughput: {samples / train_seconds:,.0f} samples/s over {world} ranks")
        print(f"all-reduce: {1e3 * stats.allreduce_seconds / stats.steps:.3f} ms per step, "
              f"{100 * stats.hidden_fraction:.0f}% hidden behind backward")
        print(f"test accuracy: {evaluate(model, test_loader):.4f}")
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
