# Run: mpiexec -n 4 python examples/tensor_parallel_mlp.py [--tp 2] [--epochs 10] [--batch-size 32] [--zero]
"""The digits MLP, widened, trained data- and tensor-parallel (dp x tp) on a device mesh.

The network is 64 -> 1024 -> 128 -> 10 with ReLUs, split Megatron-style over
the tp ranks: the first layer by output features (column-parallel), the
second by input features (row-parallel, one all-reduce forward), the
classifier by class (column-parallel, its logits never gathered:
``vocab_parallel_cross_entropy`` assembles the loss from three small
all-reduces). The dp ranks each take their share of every global batch, and
DDP over the mesh's dp group (or ``--zero``: ZeroRedundancyOptimizer, with
Adam's moments sharded over dp) averages the gradients.

Every rank seeds alike, so the tensor-parallel layers start as slices of the
serial network. Rank 0 also trains that serial network (no dropout, which
would need masks agreeing across tp ranks) on the whole of every global
batch, and prints both loss curves side by side: they agree to float32
rounding. It ends with the communication the runtime counted in one step,
next to the analytic count.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from train_mlp import digits_datasets

import pyrt
import pyrt.distributed as dist
from pyrt import nn, optim
from pyrt.distributed.functional import CommCounter, gather_from_parallel
from pyrt.distributed.optim import ZeroRedundancyOptimizer, optimizer_state_bytes
from pyrt.distributed.tensor_parallel import (
    ColumnParallelLinear,
    RowParallelLinear,
    vocab_parallel_cross_entropy,
)
from pyrt.nn import functional as F
from pyrt.nn.parallel import DistributedDataParallel as DDP

HIDDEN, BOTTLENECK, CLASSES = 1024, 128, 10


def build_parallel(tp: dist.DeviceMesh) -> nn.Sequential:
    return nn.Sequential(
        ColumnParallelLinear(64, HIDDEN, gather_output=False, group=tp), nn.ReLU(),
        RowParallelLinear(HIDDEN, BOTTLENECK, input_is_parallel=True, group=tp), nn.ReLU(),
        ColumnParallelLinear(BOTTLENECK, CLASSES, gather_output=False, group=tp),
    )


def build_serial() -> nn.Sequential:
    return nn.Sequential(nn.Linear(64, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, BOTTLENECK), nn.ReLU(),
                         nn.Linear(BOTTLENECK, CLASSES))


def accuracy(model: nn.Module, x: pyrt.Tensor, y: pyrt.Tensor, tp: dist.DeviceMesh | None) -> float:
    with pyrt.no_grad():
        logits = model(x)
        if tp is not None:
            logits = gather_from_parallel(logits, tp.get_group())
    return float((logits.argmax(dim=1) == y).data.mean())


def analytic_traffic(args: argparse.Namespace, dp: int, b: int, parallel: nn.Module) -> dict:
    """(calls, bytes) per kind of collective in one step, from the shapes alone (float32)."""
    traffic = {"all_reduce": (0, 0), "reduce_scatter": (0, 0), "all_gather": (0, 0)}
    if args.tp > 1:
        # forward: the row-parallel layer's output (b x 128); backward: the classifier's
        # input gradient (b x 128; the first layer's input is data and needs none);
        # the loss: max, target logit and sum of exps (b numbers each).
        traffic["all_reduce"] = (5, 4 * (2 * b * BOTTLENECK + 3 * b))
    if args.zero and dp > 1:
        params = list(parallel.parameters())
        padded = -(-sum(p.numel() for p in params) // dp) * dp
        traffic["reduce_scatter"] = traffic["all_gather"] = (1, 4 * padded)
        calls, nbytes = traffic["all_reduce"]
        traffic["all_reduce"] = (calls + 1, nbytes + len(params))  # one byte per parameter: has a gradient?
    return traffic


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tp", type=int, default=2, help="tensor-parallel ranks (dp = world / tp)")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=32, help="global batch size")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--zero", action="store_true", help="ZeroRedundancyOptimizer instead of DDP")
    args = parser.parse_args()

    dist.init_process_group("mpi")
    rank, world = dist.get_rank(), dist.get_world_size()
    if world % args.tp:
        raise SystemExit(f"--tp {args.tp} does not divide the {world} ranks")
    dp = world // args.tp
    if args.batch_size % dp:
        raise SystemExit(f"--batch-size {args.batch_size} must divide evenly over dp={dp} ranks")
    mesh = dist.init_device_mesh("cpu", (dp, args.tp), mesh_dim_names=("dp", "tp"))
    dp_rank = mesh.get_local_rank("dp")

    train, test = digits_datasets()
    (x_train, y_train), (x_test, y_test) = train.tensors, test.tensors
    pyrt.manual_seed(args.seed)
    parallel = build_parallel(mesh["tp"])
    pyrt.manual_seed(args.seed)
    serial = build_serial() if rank == 0 else None
    if args.zero:
        model: nn.Module = parallel
        optimizer: optim.Optimizer = ZeroRedundancyOptimizer(
            parallel.parameters(), optim.Adam, process_group=mesh.get_group("dp"), lr=args.lr)
    else:
        model = DDP(parallel, process_group=mesh.get_group("dp"))
        optimizer = optim.Adam(model.parameters(), lr=args.lr)
    serial_optimizer = optim.Adam(serial.parameters(), lr=args.lr) if serial is not None else None
    local = args.batch_size // dp
    if rank == 0:
        print(f"mesh {mesh}: dp={dp} x tp={args.tp}, {local} samples per dp rank per step, "
              f"{'ZeRO' if args.zero else 'DDP'} + Adam")

    steps_per_epoch = len(y_train) // args.batch_size
    counted: CommCounter | None = None
    worst = 0.0
    start = time.perf_counter()
    for epoch in range(args.epochs):
        # One order for every rank: the serial model sees the union of the dp shards.
        order = np.random.default_rng(args.seed + epoch).permutation(len(y_train))
        parallel_total = serial_total = 0.0
        for step in range(steps_per_epoch):
            batch = order[step * args.batch_size:(step + 1) * args.batch_size]
            mine = batch[dp_rank * local:(dp_rank + 1) * local]
            with CommCounter() as counter:
                optimizer.zero_grad()
                loss = vocab_parallel_cross_entropy(model(x_train[mine]), y_train[mine], group=mesh["tp"])
                loss.backward()
                optimizer.step()
            counted = counted or counter  # the first step's
            # The global batch's loss: the mean of the dp shards' (all tp ranks agree already).
            shard_loss = np.array([loss.item()])
            dist.all_reduce(shard_loss, op="avg", group=mesh.get_group("dp"))
            parallel_total += float(shard_loss[0])
            if serial is not None:
                serial_optimizer.zero_grad()
                serial_loss = F.cross_entropy(serial(x_train[batch]), y_train[batch])
                serial_loss.backward()
                serial_optimizer.step()
                serial_total += serial_loss.item()
        test_accuracy = accuracy(parallel, x_test, y_test, mesh["tp"])
        if serial is not None:
            a, b = parallel_total / steps_per_epoch, serial_total / steps_per_epoch
            worst = max(worst, abs(a - b) / abs(b))
            serial_accuracy = accuracy(serial, x_test, y_test, None)
            print(f"epoch {epoch + 1:3d}  loss dp x tp {a:.6f}  serial {b:.6f}  "
                  f"test accuracy dp x tp {test_accuracy:.4f}  serial {serial_accuracy:.4f}", flush=True)
    seconds = time.perf_counter() - start

    if rank == 0:
        print(f"largest relative difference between the loss curves: {worst:.2e}")
        print(f"trained {args.epochs} epochs in {seconds:.2f}s")
        for kind, (calls, nbytes) in analytic_traffic(args, dp, local, parallel).items():
            print(f"communication per step, {kind}: counted {counted.calls.get(kind, 0)} calls, "
                  f"{counted.bytes.get(kind, 0)} bytes; analytic {calls} calls, {nbytes} bytes")
        if not args.zero:
            print("(DDP's gradient all-reduce is not in the count; DDP keeps its own comm_stats)")
        numel = sum(p.numel() for p in parallel.parameters())
        print(f"optimizer state on rank 0: {optimizer_state_bytes(optimizer)} bytes for the {numel} "
              f"parameter elements of its tp shard ({'sharded over' if args.zero else 'replicated on'} "
              f"{dp} dp ranks)")
        print(f"test accuracy: {test_accuracy:.4f}")
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
