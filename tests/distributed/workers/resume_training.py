"""Train with checkpoints, optionally die by SIGKILL mid-epoch, optionally resume.

The model has dropout (the RNG matters), the data is shuffled each epoch (the
sampler position matters) and Adam keeps state (the optimizer matters), so a
resumed run ends bit-identical to an uninterrupted one only if every piece of
state came back.

Run: mpiexec -n 2 python tests/distributed/workers/resume_training.py OUT_DIR [--kill-at STEP] [--resume]
         [--forget rng|sampler]
     python tests/distributed/workers/resume_training.py OUT_DIR ...   (one process, RandomSampler)
"""

from __future__ import annotations

import argparse
import os
import signal
from pathlib import Path

import numpy as np

import pyrt
import pyrt.distributed as dist
from pyrt import nn, optim
from pyrt.nn import functional as F
from pyrt.nn.parallel import DistributedDataParallel as DDP
from pyrt.utils.checkpoint import load_checkpoint, save_checkpoint
from pyrt.utils.data import DataLoader, DistributedSampler, RandomSampler, TensorDataset

EPOCHS, BATCH, SAVE_EVERY = 3, 8, 5


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out", type=Path)
    parser.add_argument("--kill-at", type=int, default=-1, help="global step at which the last rank dies")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--forget", choices=["rng", "sampler"],
                        help="resume without this piece of state (the tests' negative control)")
    args = parser.parse_args()
    distributed = "PMI_RANK" in os.environ or "OMPI_COMM_WORLD_RANK" in os.environ
    if distributed:
        dist.init_process_group()
    rank, world = (dist.get_rank(), dist.get_world_size()) if distributed else (0, 1)

    rng = np.random.default_rng(0)
    data = TensorDataset(rng.standard_normal((200, 12)).astype(np.float32), rng.integers(0, 4, 200))
    pyrt.manual_seed(1)
    model = nn.Sequential(nn.Linear(12, 32), nn.ReLU(), nn.Dropout(0.3), nn.Linear(32, 4))
    # Each rank's own stream from here on: dropout masks differ across ranks, as in real jobs.
    pyrt.manual_seed(100 + rank)
    trained = DDP(model) if distributed else model
    sampler = DistributedSampler(data, shuffle=True, seed=7) if distributed else RandomSampler(data)
    loader = DataLoader(data, batch_size=BATCH, sampler=sampler)
    opt = optim.Adam(model.parameters(), lr=1e-2)
    checkpoint = args.out / "checkpoint.pt"

    start_epoch, start_step = 0, 0
    if args.resume:
        resumed = load_checkpoint(checkpoint, model=model, optimizer=opt,
                                  sampler=None if args.forget == "sampler" else sampler)
        start_epoch, start_step = resumed["epoch"], resumed["step"]
        if args.forget == "rng":
            pyrt.manual_seed(100 + rank)
    global_step = start_epoch * len(loader) + start_step
    for epoch in range(start_epoch, EPOCHS):
        if distributed:
            sampler.set_epoch(epoch)
        for step, (x, y) in enumerate(loader, start=start_step if epoch == start_epoch else 0):
            if global_step == args.kill_at and rank == world - 1:
                os.kill(os.getpid(), signal.SIGKILL)
            opt.zero_grad()
            F.cross_entropy(trained(x), y).backward()
            opt.step()
            global_step += 1
            if global_step % SAVE_EVERY == 0:
                save_checkpoint(checkpoint, model=model, optimizer=opt, sampler=sampler,
                                epoch=epoch, step=step + 1)
    if rank == 0:
        pyrt.save({"model": model.state_dict(), "optimizer": opt.state_dict(),
                   "steps": global_step}, args.out / "final.pt")
    print(f"rank {rank}: trained to step {global_step}", flush=True)


if __name__ == "__main__":
    main()
