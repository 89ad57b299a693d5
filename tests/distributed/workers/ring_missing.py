"""Without pyrt._comm (built with no MPI), algorithm="ring" says how to fix it and "auto" still works.

Run: mpiexec -n 2 python tests/distributed/workers/ring_missing.py
"""

from __future__ import annotations

import sys

import numpy as np

sys.modules["pyrt._comm"] = None  # what an install built without MPI headers looks like

import pyrt.distributed as dist  # noqa: E402

dist.init_process_group()
x = np.ones(1 << 20, np.float32)
try:
    dist.all_reduce(x, algorithm="ring")
except RuntimeError as exc:
    assert "pip install mpich" in str(exc) and "algorithm='mpi'" in str(exc), str(exc)
else:
    raise AssertionError("algorithm='ring' without pyrt._comm must raise")
dist.all_reduce(x)  # auto falls back to MPI_Allreduce
assert (x == dist.get_world_size()).all()
print(f"rank {dist.get_rank()}: ring missing handled")
dist.destroy_process_group()
