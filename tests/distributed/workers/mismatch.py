"""Ranks make different calls: every rank must raise, naming each rank's call, never hang
or return a wrong result. Rank 1 is the odd one out in every case.

Run: mpiexec -n 2 python tests/distributed/workers/mismatch.py
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

import pyrt.distributed as dist
from pyrt.distributed.agreement import CollectiveMismatchError


def expect_error(call: Callable[[], object], *fragments: str) -> None:
    try:
        call()
    except CollectiveMismatchError as exc:
        for fragment in fragments:
            assert fragment in str(exc), (fragment, str(exc))
        print(f"rank {dist.get_rank()}: {exc}")
    else:
        raise AssertionError(f"expected a CollectiveMismatchError for {fragments}")


def main() -> None:
    dist.init_process_group()
    rank = dist.get_rank()
    odd = rank == 1
    sized = np.ones(1000 - odd, np.float32)
    expect_error(lambda: dist.all_reduce(sized, algorithm="mpi"), "ranks disagree",
                 "rank 0 called all_reduce(sum, float32 (1000,), mpi)",
                 "rank 1 called all_reduce(sum, float32 (999,), mpi)")
    if dist.native.comm_available():
        expect_error(lambda: dist.all_reduce(sized, algorithm="ring"), "float32 (999,), ring")
        same = np.ones(100_000, np.float32)
        expect_error(lambda: dist.all_reduce(same, algorithm="ring" if odd else "mpi"),
                     "rank 0 called all_reduce(sum, float32 (100000,), mpi)",
                     "rank 1 called all_reduce(sum, float32 (100000,), ring)")
    typed = np.ones(10, np.float64 if odd else np.float32)
    expect_error(lambda: dist.all_reduce(typed), "rank 0 called all_reduce(sum, float32 (10,)",
                 "rank 1 called all_reduce(sum, float64 (10,)")
    # Same element count, different shapes.
    shaped = np.ones((5, 2) if odd else (2, 5), np.float32)
    expect_error(lambda: dist.all_reduce(shaped), "float32 (2, 5)", "float32 (5, 2)")
    values = np.ones(4, np.float32)
    expect_error(lambda: dist.all_reduce(values, op="max" if odd else "sum"), "all_reduce(sum,",
                 "all_reduce(max,")
    expect_error(lambda: dist.all_reduce(values, op="avg" if odd else "sum"), "all_reduce(avg,")
    expect_error(lambda: dist.broadcast(values, src=1 if odd else 0),
                 "broadcast(root 0, float32 (4,))", "broadcast(root 1, float32 (4,))")
    # Different collectives.
    other: dict[str, Callable[[], object]] = {
        "broadcast": lambda: dist.broadcast(values, src=0),
        "barrier": dist.barrier,
        "all_gather": lambda: dist.all_gather_into_tensor(
            np.empty(4 * dist.get_world_size(), np.float32), values),
    }
    for kind, call in other.items():
        expect_error(call if odd else (lambda: dist.all_reduce(values)), "rank 0 called all_reduce(",
                     f"rank 1 called {kind}(")
    work = dist.all_reduce(sized, async_op=True)
    expect_error(work.wait, "all_reduce #")
    # Point to point: the receiver's buffer must match what was sent.
    if rank in (0, 1):
        peer = 1 - rank
        if rank == 0:
            dist.send(np.ones(6, np.float32), dst=peer)
            dist.send(np.arange(5), dst=peer)
            dist.send(np.ones((2, 3), np.float32), dst=peer)
        else:
            expect_error(lambda: dist.recv(np.empty(6, np.float64), src=peer),
                         "rank 0 sent float32 (6,)", "rank 1 receives into float64 (6,)")
            received = np.empty(5, np.int64)
            dist.recv(received, src=peer)  # the refused message is gone: this is the next
            assert received.tolist() == [0, 1, 2, 3, 4], received
            expect_error(lambda: dist.irecv(np.empty((3, 2), np.float32)).wait(),
                         "rank 0 sent float32 (2, 3)", "receives into float32 (3, 2)")
    # The group is still usable afterwards, and agreeing calls give the right answer.
    ok = np.ones(4)
    dist.all_reduce(ok)
    assert (ok == dist.get_world_size()).all()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
