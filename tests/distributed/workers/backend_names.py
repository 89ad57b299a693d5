"""PyTorch's init_process_group calls port unchanged: backend names, rank and world_size.

Run: mpiexec -n 2 python tests/distributed/workers/backend_names.py
"""

from __future__ import annotations

import numpy as np
import pytest
from mpi4py import MPI

import pyrt.distributed as dist


def main() -> None:
    rank, world = MPI.COMM_WORLD.Get_rank(), MPI.COMM_WORLD.Get_size()
    for backend in ("gloo", "nccl", None):
        dist.init_process_group(backend, rank=rank, world_size=world)
        x = np.ones(3)
        dist.all_reduce(x)
        assert (x == world).all()
        dist.destroy_process_group()
    with pytest.raises(ValueError, match=r"world_size=7, rank=-1 but MPI reports size"):
        dist.init_process_group("gloo", world_size=7)
    with pytest.raises(ValueError, match="unknown backend 'ucc'"):
        dist.init_process_group("ucc")
    print(f"rank {rank}: backend names ok", flush=True)


if __name__ == "__main__":
    main()
