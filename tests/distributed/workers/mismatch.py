"""Ranks pass different sizes or dtypes: every rank must raise, naming them, not hang.

Run: mpiexec -n 2 python tests/distributed/workers/mismatch.py
"""

from __future__ import annotations

import numpy as np

import pyrt.distributed as dist


def expect_error(call, *fragments: str) -> None:
    try:
        call()
    except ValueError as exc:
        for fragment in fragments:
            assert fragment in str(exc), (fragment, str(exc))
        print(f"rank {dist.get_rank()}: {exc}")
    else:
        raise AssertionError("expected a ValueError")


def main() -> None:
    dist.init_process_group()
    rank = dist.get_rank()
    sized = np.ones(1000 - rank, np.float32)
    expect_error(lambda: dist.all_reduce(sized, algorithm="mpi"),
                 "ranks disagree", "rank 0 has 1000 float32", "rank 1 has 999 float32")
    if dist.collectives._ring_available():
        expect_error(lambda: dist.all_reduce(sized, algorithm="ring"), "rank 1 has 999 float32")
    typed = np.ones(10, np.float32 if rank == 0 else np.float64)
    expect_error(lambda: dist.all_reduce(typed), "rank 0 has 10 float32", "rank 1 has 10 float64")
    expect_error(lambda: dist.broadcast(sized, src=0), "broadcast: ranks disagree")
    work = dist.all_reduce(sized, async_op=True)
    expect_error(work.wait, "all_reduce: ranks disagree")
    # The group is still usable afterwards.
    ok = np.ones(4)
    dist.all_reduce(ok)
    assert (ok == dist.get_world_size()).all()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
