"""The training loop the digits examples share (not run by itself).

``fit`` trains a network on the digits splits with Adam and a cosine learning
rate, printing the loss and test accuracy per epoch. Launched by ``mpiexec`` on
more than one rank (or with ``--ddp``), the same loop runs data-parallel: a
DistributedSampler gives each rank its share of every global batch and
DistributedDataParallel averages the gradients, so any number of ranks sees
the same batch statistics.
"""

from __future__ import annotations

import argparse
import math
import os
import time

import pyrt
from pyrt import nn, optim
from pyrt.utils.data import DataLoader, DistributedSampler, TensorDataset


def training_flags(description: str, epochs: int, lr: float) -> argparse.Namespace:
    """Parse the flags every digits example takes."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--epochs", type=int, default=epochs)
    parser.add_argument("--batch-size", type=int, default=32, help="global batch size")
    parser.add_argument("--lr", type=float, default=lr)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--ddp", action="store_true", help="data-parallel even on one rank")
    parser.add_argument("--device", default="cpu",
                        help="cpu, or cuda: one GPU per rank (the rank's index on its node)")
    return parser.parse_args()


def local_rank() -> int:
    """This process's index among the ranks on its node, as MPICH's hydra or Open MPI announce it."""
    for name in ("MPI_LOCALRANKID", "OMPI_COMM_WORLD_LOCAL_RANK"):
        if name in os.environ:
            return int(os.environ[name])
    return 0


def rank_device(device: str) -> str:
    """``device`` with a GPU index for this rank: ranks on one node take their own GPU each."""
    if device != "cuda":
        return device
    return f"cuda:{local_rank() % pyrt.cuda.device_count()}"


def evaluate(model: nn.Module, loader: DataLoader, device: str = "cpu") -> float:
    """Accuracy of ``model`` on ``loader``, in eval mode (dropout off, batch norm frozen)."""
    model.eval()
    correct = total = 0
    with pyrt.no_grad():
        for x, y in loader:
            correct += int((model(x.to(device)).argmax(dim=1) == y.to(device)).sum().item())
            total += len(y)
    model.train()
    return correct / total


def cosine_lr(optimizer: optim.Optimizer, base_lr: float, epoch: int, epochs: int) -> None:
    """Cosine decay from ``base_lr`` to 0: large steps early, fine ones at the end."""
    for group in optimizer.param_groups:
        group["lr"] = base_lr * 0.5 * (1 + math.cos(math.pi * epoch / epochs))


def launched_on_ranks() -> int:
    """World size announced by the MPI launcher (MPICH's hydra or Open MPI), else 1."""
    for name in ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE"):
        if name in os.environ:
            return int(os.environ[name])
    return 1


def fit(net: nn.Module, train: TensorDataset, test: TensorDataset, args: argparse.Namespace) -> None:
    """Train ``net`` (data-parallel when launched on several ranks) and report accuracy."""
    distributed = args.ddp or launched_on_ranks() > 1
    device = rank_device(args.device)
    net.to(device)  # before DDP wraps it, as in PyTorch
    rank, world = 0, 1
    if distributed:
        import pyrt.distributed as dist  # only now: single-process runs never load MPI
        from pyrt.nn.parallel import DistributedDataParallel as DDP

        dist.init_process_group("mpi")
        rank, world = dist.get_rank(), dist.get_world_size()
        if args.batch_size % world:
            raise SystemExit(f"--batch-size {args.batch_size} must divide evenly over {world} ranks")
    test_loader = DataLoader(test, batch_size=512)
    sampler = None
    if distributed:
        sampler = DistributedSampler(train, shuffle=True, seed=args.seed)
        train_loader = DataLoader(train, batch_size=args.batch_size // world, sampler=sampler)
        model: nn.Module = DDP(net)  # rank 0's initial weights everywhere
        pyrt.manual_seed(args.seed + rank)  # each rank its own dropout masks
    else:
        train_loader = DataLoader(train, batch_size=args.batch_size, shuffle=True)
        model = net
    loss_fn = nn.CrossEntropyLoss()
    optimizer = optim.Adam(model.parameters(), lr=args.lr)
    if rank == 0:
        print(net)
        print(f"device: {device}")
        if distributed:
            print(f"{world} ranks, {args.batch_size // world} samples per rank per step")

    start = time.perf_counter()
    for epoch in range(args.epochs):
        if sampler is not None:
            sampler.set_epoch(epoch)
        cosine_lr(optimizer, args.lr, epoch, args.epochs)
        total_loss, batches = 0.0, 0
        for x, y in train_loader:
            x, y = x.to(device), y.to(device)
            optimizer.zero_grad()
            loss = loss_fn(model(x), y)
            loss.backward()
            optimizer.step()
            total_loss += loss.item()
            batches += 1
        if rank == 0:
            # The bare network, not the DDP wrapper: its forward would wait for
            # the other ranks to join a buffer broadcast.
            accuracy = evaluate(net, test_loader, device)
            print(f"epoch {epoch + 1:3d}  loss {total_loss / batches:.4f}  test accuracy {accuracy:.4f}")
    if rank == 0:
        print(f"trained {args.epochs} epochs in {time.perf_counter() - start:.2f}s")
        print(f"test accuracy: {evaluate(net, test_loader, device):.4f}")
    if distributed:
        dist.destroy_process_group()
