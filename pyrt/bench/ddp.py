"""Data-parallel scaling: samples/s of a DDP training step at 1, 2 and 4 ranks.

``python -m pyrt.bench ddp`` launches itself under ``mpiexec`` with one thread
per rank. Each run trains the MLP 784-1024-512-10 on a fixed global batch of
64 (split across the ranks), with each library's default buckets (25 MB: one
bucket for these 5.3 MB of gradients; PyTorch caps its first at 1 MB), and
reports the throughput and the share of all-reduce time hidden behind backward
(``DistributedDataParallel.comm_stats``). The reference is the same training
at 1 rank: ratio = speedup over one rank.
A second table sweeps the bucket cap (``CAPS``): the same model under each cap,
measured in alternating rounds, so the default cap is the one this measurement
picks rather than an assumption.
``no-comm`` is the ceiling: every rank running the same local steps at once
with no gradient averaging at all (the wrapped module, no hooks), whose
speedup over DDP's 1 rank is the most any all-reduce could give here.

Where PyTorch is installed, the same processes then train the same model and data
with ``torch.nn.parallel.DistributedDataParallel`` over gloo (one
thread each), and the table shows its samples/s beside ours.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from pyrt.bench.harness import Record, print_table

GLOBAL_BATCH = 64
RANKS = [1, 2, 4]
CAPS = [25.0, 4.0, 1.0]  # bucket_cap_mb: 1, 2 and 5 buckets of these 5.3 MB of gradients


def _ddp_step(bucket_cap_mb: float = 25.0) -> tuple[Any, Callable[[], None], Any, Any]:
    """(the DDP-wrapped MLP, one training step of it, this rank's inputs and labels)."""
    import pyrt
    import pyrt.distributed as dist
    from pyrt import nn
    from pyrt.nn.parallel import DistributedDataParallel

    rank, world = dist.get_rank(), dist.get_world_size()
    pyrt.manual_seed(0)
    model = DistributedDataParallel(
        nn.Sequential(nn.Linear(784, 1024), nn.ReLU(), nn.Linear(1024, 512), nn.ReLU(), nn.Linear(512, 10)),
        bucket_cap_mb=bucket_cap_mb)
    optimizer = pyrt.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()
    rng = np.random.default_rng(rank)
    x = pyrt.tensor(rng.standard_normal((GLOBAL_BATCH // world, 784)).astype(np.float32))
    y = pyrt.tensor(rng.integers(0, 10, GLOBAL_BATCH // world))

    def step() -> None:
        optimizer.zero_grad()
        loss_fn(model(x), y).backward()
        optimizer.step()
    return model, step, x, y


def worker(steps: int, out_path: str) -> None:
    import pyrt.distributed as dist

    dist.init_process_group()
    rank, world = dist.get_rank(), dist.get_world_size()
    model, step, x, y = _ddp_step()
    for _ in range(3):
        step()
    model.comm_stats.__init__()  # count the timed steps only
    dist.barrier()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    comm = model.process_group.comm
    elapsed = comm.allreduce(time.perf_counter() - start, op=_max_op())
    cap_seconds = _cap_sweep_seconds(steps, comm) if world > 1 else {}
    no_comm_elapsed = _no_communication_seconds(steps, model.module, x, y, comm)
    torch_elapsed = _torch_ddp_seconds(steps, rank, world, x.data, y.data, comm)
    if rank == 0:
        stats = model.comm_stats
        Path(out_path).write_text(json.dumps({
            "ranks": world, "step_s": elapsed / steps, "samples_per_s": GLOBAL_BATCH * steps / elapsed,
            "allreduce_ms_per_step": 1e3 * stats.allreduce_seconds / max(stats.steps, 1),
            "hidden_fraction": stats.hidden_fraction, "buckets": len(model._buckets),
            "no_comm_samples_per_s": GLOBAL_BATCH * steps / no_comm_elapsed,
            "cap_samples_per_s": {str(cap): GLOBAL_BATCH / s for cap, s in cap_seconds.items()},
            "torch_samples_per_s": None if torch_elapsed is None else GLOBAL_BATCH * steps / torch_elapsed}))
    dist.destroy_process_group()


def _no_communication_seconds(steps: int, module, x, y, comm) -> float:
    """The same local steps on every rank at once, without averaging gradients: the slowest rank's
    seconds. What DDP would reach with free communication (ranks still share the cores' caches and
    memory bandwidth, and each still updates every parameter)."""
    import pyrt
    from pyrt import nn

    optimizer = pyrt.optim.SGD(module.parameters(), lr=0.01, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()

    def step() -> None:
        optimizer.zero_grad()
        loss_fn(module(x), y).backward()
        optimizer.step()

    return _slowest_rank_seconds(step, steps, comm)


def _cap_sweep_seconds(steps: int, comm) -> dict[float, float]:
    """Seconds per step under each of ``CAPS``, the best of 4 rounds taken in turns (the machine's
    load drifts over a run; alternating exposes every cap to it alike)."""
    steps_of = {cap: _ddp_step(cap)[1] for cap in CAPS}
    best, per_round = dict.fromkeys(CAPS, float("inf")), max(steps // 4, 1)
    for _ in range(4):
        for cap, step in steps_of.items():
            best[cap] = min(best[cap], _slowest_rank_seconds(step, per_round, comm) / per_round)
    return best


def _slowest_rank_seconds(step, steps: int, comm) -> float:
    """Seconds of ``steps`` calls of ``step`` after 3 warm-up calls, started together: the slowest rank's."""
    for _ in range(3):
        step()
    comm.Barrier()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return comm.allreduce(time.perf_counter() - start, op=_max_op())


def _torch_ddp_seconds(steps: int, rank: int, world: int, x: np.ndarray, y: np.ndarray, comm) -> float | None:
    """PyTorch DDP over gloo on the same model and data (its default buckets): the slowest rank's seconds."""
    try:
        import torch
        import torch.distributed as tdist
    except ImportError:
        return None
    torch.set_num_threads(1)
    # gloo's rendezvous: MASTER_ADDR / MASTER_PORT come from the parent, rank and size from MPI.
    tdist.init_process_group("gloo", rank=rank, world_size=world)
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(784, 1024), torch.nn.ReLU(), torch.nn.Linear(1024, 512),
                              torch.nn.ReLU(), torch.nn.Linear(512, 10))
    model = torch.nn.parallel.DistributedDataParallel(net)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    loss_fn = torch.nn.CrossEntropyLoss()
    tx, ty = torch.from_numpy(x), torch.from_numpy(y)

    def step() -> None:
        optimizer.zero_grad()
        loss_fn(model(tx), ty).backward()
        optimizer.step()

    elapsed = _slowest_rank_seconds(step, steps, comm)
    tdist.destroy_process_group()
    return elapsed


def _max_op():
    from mpi4py import MPI

    return MPI.MAX


def run(quick: bool = False) -> list[Record]:
    from pyrt.run import find_mpiexec

    steps = 5 if quick else 40
    results = []
    for world in RANKS[:2] if quick else RANKS:
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "ddp.json"
            env = dict(os.environ, OMP_NUM_THREADS="1", MASTER_ADDR="127.0.0.1",
                       MASTER_PORT=str(_free_port()))
            subprocess.run([find_mpiexec(), "-n", str(world), sys.executable, "-m", "pyrt.bench.ddp",
                            str(steps), str(out)], check=True, timeout=900, env=env)
            results.append(json.loads(out.read_text()))
    one_rank = results[0]["step_s"]
    records = [Record("ddp_mlp_784_1024_512_10", f"{r['ranks']} ranks, global batch {GLOBAL_BATCH}",
                      r["step_s"], "1 rank", one_rank, r) for r in results]
    print_table("DDP training step, MLP 784-1024-512-10, 1 thread per rank "
                "(ratio = speedup over 1 rank)", records, [
        ("ranks", lambda r: r.extra["ranks"]), ("samples/s", lambda r: r.extra["samples_per_s"]),
        ("speedup", lambda r: r.ratio), ("buckets", lambda r: r.extra["buckets"]),
        ("all-reduce ms/step", lambda r: r.extra["allreduce_ms_per_step"]),
        ("% hidden", lambda r: 100 * r.extra["hidden_fraction"]),
        ("no-comm samples/s", lambda r: r.extra["no_comm_samples_per_s"]),
        ("no-comm speedup", lambda r: r.extra["no_comm_samples_per_s"] / results[0]["samples_per_s"]),
        ("torch DDP (gloo) samples/s", lambda r: r.extra["torch_samples_per_s"]),
        ("pyrt / torch", lambda r: (r.extra["samples_per_s"] / r.extra["torch_samples_per_s"]
                                    if r.extra["torch_samples_per_s"] else None)),
    ])
    sweep = [r for r in records if r.extra["cap_samples_per_s"]]
    print_table("DDP bucket cap sweep: samples/s under each bucket_cap_mb, alternating rounds "
                "(ratio = over the default 25 MB)", sweep, [("ranks", lambda r: r.extra["ranks"])] + [
        (f"{cap:g} MB", lambda r, cap=cap: r.extra["cap_samples_per_s"][str(cap)]) for cap in CAPS] + [
        (f"{cap:g} MB ratio", lambda r, cap=cap: r.extra["cap_samples_per_s"][str(cap)]
         / r.extra["cap_samples_per_s"][str(CAPS[0])]) for cap in CAPS[1:]])
    return records


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


if __name__ == "__main__":
    worker(int(sys.argv[1]), sys.argv[2])
