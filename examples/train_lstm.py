# Run: python examples/train_lstm.py [--epochs 12] [--batch-size 32] [--lr 1e-2] [--seed 0]
# Data-parallel: mpiexec -n 2 python examples/train_lstm.py  (or pass --ddp)
"""Classify the bundled handwritten digits with an LSTM that reads each image row by row.

Each 8x8 image is a sequence of 8 time steps of 8 pixels. One LSTM layer
(64 hidden units) reads the rows top to bottom, and a linear layer classifies
its last hidden state into the 10 digits. Adam with a cosine learning-rate
schedule fits the training split; each epoch reports the training loss and the
accuracy on the held-out test split (a stratified 20% of each class).

Under ``mpiexec`` (detected from the launcher's environment) the same script
trains data-parallel: the global batch is split over the ranks by a
DistributedSampler and DistributedDataParallel averages the gradients, so
the run sees the same batch statistics at any number of ranks.
"""

from __future__ import annotations

import argparse
import math
import os
import time

import numpy as np

import pyrt
from pyrt import nn, optim
from pyrt.datasets import load_digits
from pyrt.utils.data import DataLoader, TensorDataset


class RowLSTM(nn.Module):
    """LSTM over image rows, then a linear classifier on the last hidden state."""

    def __init__(self, row_size: int = 8, hidden_size: int = 64, num_classes: int = 10) -> None:
        super().__init__()
        self.lstm = nn.LSTM(row_size, hidden_size, batch_first=True)
        self.classifier = nn.Linear(hidden_size, num_classes)

    def forward(self, images: pyrt.Tensor) -> pyrt.Tensor:
        _, (h_n, _) = self.lstm(images)  # images: (batch, 8 rows, 8 pixels)
        return self.classifier(h_n[-1])


def digits_sequences() -> tuple[TensorDataset, TensorDataset]:
    """Train and test splits as (N, 8, 8) row sequences, standardised per pixel."""
    x_train, y_train = load_digits("train", flatten=False)
    x_test, y_test = load_digits("test", flatten=False)
    # Statistics of the training split only; +0.01 keeps the almost always blank
    # border pixels from blowing up.
    mean, std = x_train.mean(axis=0), x_train.std(axis=0) + np.float32(0.01)
    train = TensorDataset(pyrt.tensor((x_train - mean) / std), pyrt.tensor(y_train))
    test = TensorDataset(pyrt.tensor((x_test - mean) / std), pyrt.tensor(y_test))
    return train, test


def evaluate(model: nn.Module, loader: DataLoader) -> float:
    model.eval()
    correct = total = 0
    with pyrt.no_grad():
        for x, y in loader:
            correct += int((model(x).argmax(dim=1) == y).data.sum())
            total += len(y)
    model.train()
    return correct / total


def launched_world_size() -> int:
    """Ranks in this job as the MPI launcher tells its processes (1 when run plainly)."""
    for name in ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE"):  # MPICH/Hydra, Open MPI
        if name in os.environ:
            return int(os.environ[name])
    return 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--batch-size", type=int, default=32, help="global batch size")
    parser.add_argument("--lr", type=float, default=1e-2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--ddp", action="store_true",
                        help="use DistributedDataParallel even on one rank")
    args = parser.parse_args()

    distributed = args.ddp or launched_world_size() > 1
    rank, world = 0, 1
    if distributed:
        import pyrt.distributed as dist  # only now: a single-process run never loads MPI
        from pyrt.nn.parallel import DistributedDataParallel
        from pyrt.utils.data import DistributedSampler

        dist.init_process_group("mpi")
        rank, world = dist.get_rank(), dist.get_world_size()
        if args.batch_size % world:
            raise SystemExit(f"--batch-size {args.batch_size} must divide evenly over {world} ranks")

    pyrt.manual_seed(args.seed)  # initial weights and shuffling order
    train, test = digits_sequences()
    test_loader = DataLoader(test, batch_size=512)
    model: nn.Module = RowLSTM()
    if distributed:
        sampler = DistributedSampler(train, shuffle=True, seed=args.seed)
        train_loader = DataLoader(train, batch_size=args.batch_size // world, sampler=sampler)
        model = DistributedDataParallel(model)  # rank 0's initial weights everywhere
    else:
        sampler = None
        train_loader = DataLoader(train, batch_size=args.batch_size, shuffle=True)
    loss_fn = nn.CrossEntropyLoss()
    optimizer = optim.Adam(model.parameters(), lr=args.lr)
    if rank == 0:
        print(model)
        print(f"{world} rank(s), {args.batch_size // world} samples per rank per step")

    start = time.perf_counter()
    for epoch in range(args.epochs):
        if sampler is not None:
            sampler.set_epoch(epoch)
        for group in optimizer.param_groups:  # cosine decay to 0 over the run
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
            accuracy = evaluate(model, test_loader)
            print(f"epoch {epoch + 1:3d}  loss {total_loss / batches:.4f}  test accuracy {accuracy:.4f}")
    if rank == 0:
        print(f"trained {args.epochs} epochs in {time.perf_counter() - start:.2f}s")
        print(f"test accuracy: {evaluate(model, test_loader):.4f}")
    if distributed:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
