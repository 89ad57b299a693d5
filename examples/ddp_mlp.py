# Run: mpiexec -n 2 python examples/ddp_mlp.py [--epochs 40] [--batch-size 32] [--lr 1e-3]
#          [--plot-loss loss.png] [--profile trace.json]
"""The digits MLP of ``train_mlp.py``, data-parallel over any number of MPI ranks.

The global batch stays ``--batch-size`` whatever the number of ranks: each
rank takes ``batch_size / world`` samples of it through a DistributedSampler,
and DistributedDataParallel averages the gradients, so the model sees the same
batches statistics as single-process training and reaches the same accuracy.
Rank 0 prints per-epoch loss and accuracy (with a tqdm progress bar over the
steps when tqdm is installed, as the ``examples`` extra does), the training
throughput, and how much of the gradient all-reduce ran hidden behind
backward. ``--plot-loss PATH`` saves the loss curve as a PNG (needs
matplotlib); ``--profile PATH`` records a few steps of every rank with
``pyrt.profiler`` and writes them as one Chrome trace (open it in Perfetto UI
or catapult's trace viewer: one process per rank, the bucket all-reduces on
each rank's ``comm`` track beside backward on ``main``).
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from digits_training import cosine_lr, evaluate
from train_mlp import build_model, digits_datasets

import pyrt
import pyrt.distributed as dist
from pyrt import nn, optim
from pyrt.nn.parallel import DistributedDataParallel as DDP
from pyrt.profiler import profile, record_function
from pyrt.utils.data import DataLoader, DistributedSampler

PROFILE_FIRST_STEP = 2  # the first steps allocate and warm caches; the trace shows steady state


def progress_bar(total: int, enabled: bool) -> Any:
    """A tqdm bar over the training steps, or None (not rank 0, or tqdm is not installed)."""
    if not enabled:
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    # leave=False: the bar disappears when done, so the output keeps only the epoch lines.
    return tqdm(total=total, unit="step", leave=False, dynamic_ncols=True)


def save_loss_curve(path: str, step_losses: list[float], steps_per_epoch: int) -> None:
    """Plot rank 0's loss per step and its mean per epoch to ``path`` (a PNG)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print(f"--plot-loss: matplotlib is not installed; {path} not written")
        return
    epochs = len(step_losses) // steps_per_epoch
    means = [sum(step_losses[e * steps_per_epoch:(e + 1) * steps_per_epoch]) / steps_per_epoch
             for e in range(epochs)]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot([(i + 1) / steps_per_epoch for i in range(len(step_losses))], step_losses,
            lw=0.6, alpha=0.4, label="per step (rank 0's shard)")
    ax.plot([e + 0.5 for e in range(epochs)], means, marker="o", ms=3, label="mean over each epoch")
    ax.set(xlabel="epoch", ylabel="cross-entropy loss", yscale="log", title="ddp_mlp.py training loss")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    print(f"loss curve saved to {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=32, help="global batch size")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--plot-loss", metavar="PNG", help="save the loss curve to this PNG file")
    parser.add_argument("--profile", metavar="JSON", help="write a Chrome trace of a few steps here")
    parser.add_argument("--profile-steps", type=int, default=6, help="steps the trace records")
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

    prof = profile() if args.profile else None
    bar = progress_bar(args.epochs * len(train_loader), enabled=rank == 0)
    train_seconds, samples, step, step_losses = 0.0, 0, 0, []
    for epoch in range(args.epochs):
        sampler.set_epoch(epoch)
        cosine_lr(optimizer, args.lr, epoch, args.epochs)
        total_loss, batches = 0.0, 0
        dist.barrier()
        start = time.perf_counter()
        for x, y in train_loader:
            if prof is not None and step == PROFILE_FIRST_STEP:
                prof.start()
            with record_function(f"step {step}"):  # a no-op unless profiling
                optimizer.zero_grad()
                loss = loss_fn(model(x), y)
                loss.backward()
                with record_function("optimizer.step"):
                    optimizer.step()
                step_losses.append(loss.item())
            if prof is not None and step == PROFILE_FIRST_STEP + args.profile_steps - 1:
                prof.stop()
            total_loss += step_losses[-1]
            batches += 1
            step += 1
            samples += len(y) * world
            if bar is not None:
                bar.update()
        train_seconds += time.perf_counter() - start
        if rank == 0:
            accuracy = evaluate(model, test_loader)
            line = f"epoch {epoch + 1:3d}  loss {total_loss / batches:.4f}  test accuracy {accuracy:.4f}"
            (print if bar is None else bar.write)(line)
    if bar is not None:
        bar.close()

    stats = model.comm_stats
    if rank == 0:
        print(f"throughput: {samples / train_seconds:,.0f} samples/s over {world} ranks")
        print(f"all-reduce: {1e3 * stats.allreduce_seconds / stats.steps:.3f} ms per step "
              f"({stats.describe_buckets()}), {100 * stats.hidden_fraction:.0f}% hidden behind backward")
        print(f"test accuracy: {evaluate(model, test_loader):.4f}")
        if args.plot_loss:
            save_loss_curve(args.plot_loss, step_losses, len(train_loader))
    if prof is not None:
        prof.stop()  # in case training had fewer steps than the profile wanted
        if prof.export_chrome_trace(args.profile):  # every rank calls it; rank 0 writes the file
            print(f"profile of {world} ranks written to {args.profile}")
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
