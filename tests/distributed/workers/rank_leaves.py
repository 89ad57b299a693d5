"""The last rank leaves, stalls or is stopped while the others wait: the job must end, saying where
every rank is, or (when every rank leaves together) finish cleanly.

Run: mpiexec -n 2 python tests/distributed/workers/rank_leaves.py MODE
  MODE: exit1 | exit0 | together (every rank ends without destroy_process_group)
        | straggler (30 s late, timeout 3 s) | sigstop (timeout 3 s) | idle-wait (CPU while waiting)
"""

from __future__ import annotations

import os
import signal
import sys
import time
from datetime import timedelta

import numpy as np

import pyrt.distributed as dist


def main() -> None:
    mode = sys.argv[1]
    timeout = timedelta(seconds=3) if mode in ("straggler", "sigstop") else timedelta(minutes=10)
    dist.init_process_group(timeout=timeout)
    rank, last = dist.get_rank(), dist.get_world_size() - 1
    dist.all_reduce(np.ones(3))  # all_reduce #1: everyone gets this far
    if rank == last:
        if mode in ("exit1", "exit0"):
            sys.exit(1 if mode == "exit1" else 0)
        if mode == "straggler":
            time.sleep(30)
        if mode == "sigstop":
            os.kill(os.getpid(), signal.SIGSTOP)
        if mode == "idle-wait":
            time.sleep(2)
    if mode == "together":
        print(f"rank {rank}: done", flush=True)
        return  # no destroy_process_group: every rank leaves at the same point
    cpu, wall = time.process_time(), time.monotonic()
    dist.all_reduce(np.ones(3))  # all_reduce #2
    if mode != "idle-wait":
        print(f"unreachable: rank {rank} finished all_reduce #2 without the last rank", flush=True)
    elif rank != last:
        print(f"rank {rank}: waited {time.monotonic() - wall:.2f} s using "
              f"{time.process_time() - cpu:.3f} s of CPU", flush=True)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
