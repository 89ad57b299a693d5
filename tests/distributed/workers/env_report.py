"""Print what each rank sees, for the launcher test.

Run: python -m pyrt.run -n 2 tests/distributed/workers/env_report.py extra-arg
"""

import os
import sys

import pyrt
import pyrt.distributed as dist

dist.init_process_group()
print(f"rank {dist.get_rank()} of {dist.get_world_size()} threads {os.environ.get('OMP_NUM_THREADS')} "
      f"kernel-threads {pyrt.get_num_threads()} args {sys.argv[1:]}")
dist.destroy_process_group()
