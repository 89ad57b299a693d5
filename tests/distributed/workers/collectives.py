"""Every collective against closed-form values; run at any number of ranks.

Run: mpiexec -n 4 python tests/distributed/workers/collectives.py
"""

from __future__ import annotations

import numpy as np

import pyrt
import pyrt.distributed as dist

SIZES = [0, 1, 2, 3, 5, 7, 13, 1000, 65_537]


def rank_values(size: int, rank: int, dtype) -> np.ndarray:
    # Small integers: float sums are exact, so results compare with ==.
    return ((np.arange(size) % 7) + rank + 1).astype(dtype)


def check_all_reduce(group=None) -> None:
    # False when MPICH emulates several nodes (MPIR_CVAR_NUM_CLIQUES): no single shared window.
    on_one_node = (group or dist.process_group.default_group()).on_one_node
    world = dist.get_world_size(group)
    ranks = range(world)
    rank = dist.get_rank(group)
    for dtype in (np.float32, np.float64, np.int32, np.int64):
        floating = np.issubdtype(dtype, np.floating)
        # Past one shared-memory slot (4 MB): the shm path's chunk loop and its double buffer.
        sizes = [*SIZES, (1 << 20) + 3] if dtype == np.float32 else SIZES
        for size in sizes:
            for algorithm in ("mpi", "shm", "hierarchical", "ring", "auto"):
                if algorithm == "ring" and (not floating or not dist.collectives._ring_available()):
                    continue
                if algorithm == "shm" and not on_one_node:
                    continue
                stacked = np.stack([rank_values(size, r, dtype) for r in ranks])
                expected = {"sum": stacked.sum(0), "max": stacked.max(0), "min": stacked.min(0),
                            "avg": stacked.sum(0) / world if floating else stacked.sum(0) // world}
                if algorithm != "ring":
                    expected["product"] = stacked.prod(0)
                for op, want in expected.items():
                    x = rank_values(size, rank, dtype)
                    dist.all_reduce(x, op=op, group=group, algorithm=algorithm)
                    np.testing.assert_allclose(x, want.astype(dtype), rtol=1e-6,
                                               err_msg=f"{algorithm} {op} {size} {dtype}")
    # Tensors are reduced in place, non-contiguous views too.
    t = pyrt.tensor(np.ones((4, 6), np.float32) * (rank + 1))
    dist.all_reduce(t, group=group)
    assert (t.data == world * (world + 1) / 2).all()
    base = np.ones((6, 4), np.float32) * (rank + 1)
    view = base[:, ::2]
    dist.all_reduce(view, group=group)
    assert (base[:, ::2] == world * (world + 1) / 2).all() and (base[:, 1::2] == rank + 1).all()


def check_async_all_reduce(group=None) -> None:
    world, rank = dist.get_world_size(group), dist.get_rank(group)
    buffers = [np.full(1000 * (i + 1), float(rank + i), np.float32) for i in range(5)]
    works = [dist.all_reduce(b, group=group, async_op=True) for b in buffers]
    for w in works:
        w.wait()
        assert w.is_completed()
    for i, b in enumerate(buffers):
        assert (b == sum(r + i for r in range(world))).all()


def check_broadcast(group=None, global_ranks=None) -> None:
    global_ranks = global_ranks or list(range(dist.get_world_size()))
    for src in global_ranks:
        for size in (0, 1, 7, 1000):
            x = np.full(size, float(dist.get_rank()), np.float64)
            dist.broadcast(x, src=src, group=group)
            assert (x == src).all()
    t = pyrt.zeros(3, 2, dtype=np.int64) + dist.get_rank()
    work = dist.broadcast(t, src=global_ranks[-1], group=group, async_op=True)
    work.wait()
    assert (t.data == global_ranks[-1]).all()


def check_all_gather(group=None) -> None:
    world, rank = dist.get_world_size(group), dist.get_rank(group)
    for size in (0, 1, 5):
        parts = [np.zeros((size, 2), np.float32) for _ in range(world)]
        dist.all_gather(parts, np.full((size, 2), rank, np.float32), group=group)
        for r, p in enumerate(parts):
            assert (p == r).all()
    out = np.zeros(world * 3, np.int32)
    dist.all_gather_into_tensor(out, np.arange(3, dtype=np.int32) + 10 * rank, group=group)
    assert out.tolist() == [10 * r + i for r in range(world) for i in range(3)]


def check_reduce_scatter(group=None) -> None:
    world, rank = dist.get_world_size(group), dist.get_rank(group)
    for size in (0, 1, 4, 7):
        inputs = [np.full(size, float(rank * 10 + r), np.float64) for r in range(world)]
        out = np.zeros(size, np.float64)
        dist.reduce_scatter(out, inputs, group=group)
        assert (out == sum(q * 10 + rank for q in range(world))).all()
    out = pyrt.zeros(2)
    dist.reduce_scatter_tensor(out, pyrt.ones(2 * world) * (rank + 1), op="avg", group=group)
    assert np.allclose(out.data, (world + 1) / 2)


def check_point_to_point() -> None:
    world, rank = dist.get_world_size(), dist.get_rank()
    if world == 1:
        return
    right, left = (rank + 1) % world, (rank - 1) % world
    outgoing = np.full(17, float(rank), np.float32)
    incoming = np.zeros(17, np.float32)
    recv_work = dist.irecv(incoming, src=left, tag=3)
    send_work = dist.isend(outgoing, dst=right, tag=3)
    send_work.wait()
    assert recv_work.result() == left and (incoming == left).all()
    if not dist.process_group.default_group().on_one_node:
        # MPICH 5.0.2 under emulated nodes (MPIR_CVAR_*_CLIQUES) can lose an ANY_SOURCE receive
        # from another "node" whose sender polls with sleeps (reproduced with plain mpi4py).
        return
    if rank == 0:
        for _ in range(world - 1):
            box = np.zeros(2, np.int64)
            sender = dist.recv(box)  # from whichever rank sends first
            assert box.tolist() == [sender, sender * 2]
    else:
        dist.send(np.array([rank, rank * 2], np.int64), dst=0)


def main() -> None:
    pg = dist.init_process_group("mpi")
    world, rank = dist.get_world_size(), dist.get_rank()
    if not pg.on_one_node:
        print(f"rank {rank}: emulated nodes: {pg.on_one_node}, {pg.most_ranks_per_node}", flush=True)
    check_all_reduce()
    check_async_all_reduce()
    check_broadcast()
    check_all_gather()
    check_reduce_scatter()
    check_point_to_point()
    dist.barrier()
    # A subgroup of the odd ranks (or rank 0 alone) runs the same checks on its own ranks.
    members = [r for r in range(world) if r % 2 == 1] or [0]
    sub = dist.new_group(members)
    if rank in members:
        assert dist.get_world_size(sub) == len(members)
        assert dist.get_rank(sub) == members.index(rank)
        check_all_reduce(sub)
        check_async_all_reduce(sub)
        check_broadcast(sub, members)
        check_all_gather(sub)
        check_reduce_scatter(sub)
    else:
        assert dist.get_rank(sub) == -1
        try:
            dist.all_reduce(np.ones(1), group=sub)
        except ValueError as exc:
            assert "is not a member" in str(exc)
        else:
            raise AssertionError("a non-member's collective must raise")
    dist.barrier()
    dist.destroy_process_group()
    print(f"rank {rank}/{world}: collectives ok")


if __name__ == "__main__":
    main()
