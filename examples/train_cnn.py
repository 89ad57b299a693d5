# Run: python examples/train_cnn.py [--epochs 15] [--batch-size 32] [--lr 2e-3] [--seed 0]
#  or: mpiexec -n 2 python examples/train_cnn.py   (data-parallel; --ddp forces it)
"""Train a small CNN on the bundled handwritten digits (1x8x8 images, 10 classes).

Two conv blocks (3x3 convolution, batch norm, ReLU, 2x2 max pool) take the
8x8 image to 64 channels of 2x2, and one linear layer classifies them.
Adam with a cosine learning-rate schedule fits it under cross-entropy; each
epoch reports the training loss and the held-out test accuracy.

Launched by mpiexec on more than one rank (or with --ddp), the same loop runs
data-parallel: a DistributedSampler gives each rank its share of every global
batch and DistributedDataParallel averages the gradients (and hands every
rank rank 0's batch-norm statistics at each step), as in ddp_mlp.py.
"""

from __future__ import annotations

import argparse
import math
import os
import time

import pyrt
from pyrt import nn, optim
from pyrt.datasets import load_digits
from pyrt.utils.data import DataLoader, DistributedSampler, TensorDataset


def build_model() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),   # 32x4x4
        nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2),  # 64x2x2
        nn.Flatten(), nn.Dropout(0.2), nn.Linear(64 * 2 * 2, 10),
    )


def digits_datasets() -> tuple[TensorDataset, TensorDataset]:
    """Train and test images as (N, 1, 8, 8), standardised with the training split's statistics."""
    x_train, y_train = load_digits("train", flatten=False)
    x_test, y_test = load_digits("test", flatten=False)
    # One mean and std for all pixels: a conv shares its weights across
    # positions, so per-pixel scaling (as the MLP uses) would distort the edges.
    mean, std = x_train.mean(), x_train.std()
    train = TensorDataset(pyrt.tensor((x_train[:, None] - mean) / std), pyrt.tensor(y_train))
    test = TensorDataset(pyrt.tensor((x_test[:, None] - mean) / std), pyrt.tensor(y_test))
    return train, test


def evaluate(model: nn.Module, loader: DataLoader) -> float:
    model.eval()  # batch norm uses its running statistics, dropout is off
    correct = total = 0
    with pyrt.no_grad():
        for x, y in loader:
            correct += int((model(x).argmax(dim=1) == y).data.sum())
            total += len(y)
    model.train()
    return correct / total


def launched_on_ranks() -> int:
    """World size announced by the MPI launcher (MPICH's hydra or Open MPI), else 1."""
    for name in ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE"):
        if name in os.environ:
            return int(os.environ[name])
    return 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--batch-size", type=int, default=32, help="global batch size")
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--ddp", action="store_true", help="data-parallel even on one rank")
    args = parser.parse_args()

    distributed = args.ddp or launched_on_ranks() > 1
    rank, world = 0, 1
    if distributed:
        import pyrt.distributed as dist  # only now: single-process runs never load MPI
        from pyrt.nn.parallel import DistributedDataParallel as DDP

        dist.init_process_group("mpi")
        rank, world = dist.get_rank(), dist.get_world_size()
        if args.batch_size % world:
            raise SystemExit(f"--batch-size {args.batch_size} must divide evenly over {world} ranks")

    pyrt.manual_seed(args.seed)  # fixes initial weights, shuffling order and dropout masks
    train, test = digits_datasets()
    net = build_model()
    test_loader = DataLoader(test, batch_size=512)
    if distributed:
        sampler = DistributedSampler(train, shuffle=True, seed=args.seed)
        train_loader = DataLoader(train, batch_size=args.batch_size // world, sampler=sampler)
        model: nn.Module = DDP(net)  # rank 0's initial weights everywhere
        pyrt.manual_seed(args.seed + rank)  # each rank its own dropout masks
    else:
        sampler = None
        train_loader = DataLoader(train, batch_size=args.batch_size, shuffle=True)
        model = net
    loss_fn = nn.CrossEntropyLoss()
    optimizer = optim.Adam(model.parameters(), lr=args.lr)
    if rank == 0:
        print(net)
        if distributed:
            print(f"{world} ranks, {args.batch_size // world} samples per rank per step")

    start = time.perf_counter()
    for epoch in range(args.epochs):
        if sampler is not None:
            sampler.set_epoch(epoch)
        for group in optimizer.param_groups:  # cosine decay from lr to 0
            group["lr"] = args.lr * 0.5 * (1 + math.cos(math.pi * epoch / args.epochs))
        total_loss, batches = 0.0, 0
        for x, y in train_loader:
            optimizer.zero_grad()
            loss = loss_fn(model(x), y)
            loss.backward()
            optimizer.step()
            total_loss += loss.item()
            batches += 1
        if rank == 0:
            # The bare network, not the DDP wrapper: its forward would wait for
            # the other ranks to join a buffer broadcast.
            accuracy = evaluate(net, test_loader)
            print(f"epoch {epoch + 1:3d}  loss {total_loss / batches:.4f}  test accuracy {accuracy:.4f}")
    if rank == 0:
        print(f"trained {args.epochs} epochs in {time.perf_counter() - start:.2f}s")
        print(f"test accuracy: {evaluate(net, test_loader):.4f}")
    if distributed:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
