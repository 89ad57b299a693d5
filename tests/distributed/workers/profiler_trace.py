"""Profile two DDP steps and a few point-to-point transfers, and export one trace of every rank.

The test (``test_profiler_trace.py``) reads the file rank 0 writes. A layer
whose backward sleeps stands in for a long backward, as in ``ddp_overlap.py``:
the buckets of the layers after it are launched before the sleep, so their
all-reduces run on the communication thread while backward is still running.

Run: mpiexec -n 2 python tests/distributed/workers/profiler_trace.py trace.json
"""

from __future__ import annotations

import sys
import time

import numpy as np

import pyrt
import pyrt.distributed as dist
from pyrt import nn
from pyrt.autograd import Function
from pyrt.nn.parallel import DistributedDataParallel as DDP
from pyrt.profiler import profile, record_function


class SlowBackward(Function):
    def forward(self, x):
        return x

    def backward(self, grad):
        time.sleep(0.05)
        return (grad,)


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.first = nn.Linear(32, 64)
        self.second = nn.Linear(64, 64)
        self.last = nn.Linear(64, 4)

    def forward(self, x):
        return self.last(self.second(SlowBackward.apply(self.first(x))))


def main() -> None:
    path = sys.argv[1]
    dist.init_process_group()
    rank, world = dist.get_rank(), dist.get_world_size()
    pyrt.manual_seed(0)
    # 8 KB buckets (several, regrouped in arrival order after the first step); MPI's
    # all-reduce, so the test does not depend on which transport "auto" picks.
    model = DDP(Net(), bucket_cap_mb=8 / 1024, algorithm="mpi")
    x = pyrt.randn(8, 32)
    model(x).sum().backward()  # before the profile: not recorded
    with profile() as prof:
        for step in range(2):
            with record_function(f"step {step}"):
                model.zero_grad()
                model(x).sum().backward()
        if world > 1:
            payload = np.arange(15, dtype=np.float32).reshape(3, 5)
            if rank == 0:
                dist.send(payload, dst=1)
                dist.isend(payload * 2, dst=1).wait()
            elif rank == 1:
                dist.recv(payload, src=0)
                dist.irecv(payload, src=0).wait()
        dist.barrier()
        with record_function("after barrier"):
            pass
    written = prof.export_chrome_trace(path)
    print(f"rank {rank}: {len(model._buckets)} buckets, trace written: {written}")
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
