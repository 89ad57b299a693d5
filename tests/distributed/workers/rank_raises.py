"""One rank raises while the others wait in a collective: the job must end, loudly.

Run: mpiexec -n 2 python tests/distributed/workers/rank_raises.py [--in-thread]
"""

from __future__ import annotations

import sys
import threading
import time

import numpy as np

import pyrt.distributed as dist


def main() -> None:
    dist.init_process_group()
    failing = dist.get_world_size() - 1
    if dist.get_rank() == failing:
        if "--in-thread" in sys.argv:
            def fail() -> None:
                raise RuntimeError(f"rank {failing} failed on purpose in a thread")

            threading.Thread(target=fail, name="worker").start()
            time.sleep(30)  # the thread's exception must end the job before this returns
        raise RuntimeError(f"rank {failing} failed on purpose")
    dist.all_reduce(np.ones(3))  # would wait forever for the failed rank
    print("unreachable: the collective completed without the failed rank")


if __name__ == "__main__":
    main()
