"""Every collective against closed-form values, and AVG's one rule bit for bit across
algorithms; run at any number of ranks.

Run: mpiexec -n 4 python tests/distributed/workers/collectives.py
"""

from __future__ import annotations

import numpy as np

import pyrt
import pyrt.distributed as dist
from pyrt.distributed import agreement
from pyrt.distributed.agreement import CollectiveMismatchError

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
                if algorithm == "ring" and (not floating or not dist.native.comm_available()):
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


def bits(x: np.ndarray) -> np.ndarray:
    """The raw bits of a float array, so == compares them exactly (and -0.0 != 0.0)."""
    return x.view(np.uint32 if x.dtype == np.float32 else np.uint64)


# Around every algorithm's switches: fewer elements than ranks (empty ring chunks), odd
# sizes, past auto's 256 KB switch to the ring, and (float32) past one shared-memory
# slot (4 MB), so the shm path's chunk loop runs too.
AVERAGE_SIZES = [0, 1, 7, 1000, 65_537]


def check_average_rule(group=None) -> dict[str, int]:
    """AVG is the algorithm's own SUM divided once by the group size, bit for bit, on every
    algorithm; algorithms that agree on a SUM agree on its AVG, and at 2 ranks (or on inputs
    whose sums are exact in any order) every algorithm gives the same bits.

    Returns, per algorithm, in how many elements its SUM of random values differed from MPI's
    (rounding in another order; expected from 3 ranks up), for the log.
    """
    on_one_node = (group or dist.process_group.default_group()).on_one_node
    world = dist.get_world_size(group)
    algorithms = ["mpi", "hierarchical", "auto"]
    algorithms += ["shm"] if on_one_node else []
    algorithms += ["ring"] if dist.native.comm_available() else []
    rng = np.random.default_rng(1000 + dist.get_rank())  # different values on every rank
    differing = dict.fromkeys(algorithms[1:], 0)
    for dtype in (np.float32, np.float64):
        for size in [*AVERAGE_SIZES, (1 << 20) + 3] if dtype == np.float32 else AVERAGE_SIZES:
            inputs = {
                # Random values: partial sums round, so the order of the additions shows.
                "random": rng.standard_normal(size).astype(dtype),
                # Multiples of 2**-10 below 2**10: every partial sum is exact in float32, in
                # any order, so only the averaging itself can make algorithms disagree.
                "exact": (rng.integers(-2**20, 2**20, size) * 2.0**-10).astype(dtype),
            }
            for kind, values in inputs.items():
                sums, avgs = {}, {}
                for algorithm in algorithms:
                    sums[algorithm], avgs[algorithm] = values.copy(), values.copy()
                    dist.all_reduce(sums[algorithm], "sum", group=group, algorithm=algorithm)
                    dist.all_reduce(avgs[algorithm], "avg", group=group, algorithm=algorithm)
                    where = f"{algorithm} {kind} {dtype.__name__} size {size} on {world} ranks"
                    assert np.array_equal(bits(avgs[algorithm]), bits(sums[algorithm] / dtype(world))), \
                        f"avg is not sum / {world}: {where}"
                for algorithm in algorithms[1:]:
                    where = f"{algorithm} vs mpi, {kind} {dtype.__name__} size {size} on {world} ranks"
                    same_sum = bits(sums[algorithm]) == bits(sums["mpi"])
                    assert np.array_equal(bits(avgs[algorithm])[same_sum], bits(avgs["mpi"])[same_sum]), \
                        f"same sum, different avg: {where}"
                    if world <= 2 or kind == "exact":
                        assert same_sum.all(), f"sums differ: {where}"
                        assert np.array_equal(bits(avgs[algorithm]), bits(avgs["mpi"])), \
                            f"avgs differ: {where}"
                    else:
                        differing[algorithm] += int((~same_sum).sum())
    return differing


def check_zero_copy_all_reduce(group=None) -> None:
    """Arrays in the group's shared memory: "auto" reduces them in place (zero-copy shm), equal to
    the closed form for every dtype and op, bit-equal to the staged shm path and independent of where
    the array sits; ranks passing it at different places get an error on every rank."""
    pg = group or dist.process_group.default_group()
    node = pg.node_shared_memory()
    if node is None:  # one rank, several nodes, or no pyrt._comm
        return
    world, rank = dist.get_world_size(group), dist.get_rank(group)
    arena = node.allocate(8 * ((1 << 20) + 3) + 256)

    def placed(values: np.ndarray, at: int) -> np.ndarray:
        x = arena[at:at + values.nbytes].view(values.dtype)
        x[...] = values
        return x

    for dtype in (np.float32, np.float64, np.int32, np.int64):
        floating = np.issubdtype(dtype, np.floating)
        for size in [*SIZES, (1 << 20) + 3] if dtype == np.float32 else SIZES:
            stacked = np.stack([rank_values(size, r, dtype) for r in range(world)])
            expected = {"sum": stacked.sum(0), "max": stacked.max(0), "min": stacked.min(0),
                        "product": stacked.prod(0),
                        "avg": stacked.sum(0) / world if floating else stacked.sum(0) // world}
            for op, want in expected.items():
                x = placed(rank_values(size, rank, dtype), 64)
                assert dist.collectives.select_algorithm(x, op, group) == "shm"
                dist.all_reduce(x, op=op, group=group)
                np.testing.assert_allclose(x, want.astype(dtype), rtol=1e-6,
                                           err_msg=f"zero-copy {op} {size} {dtype}")
    rng = np.random.default_rng(7 + rank)
    for size in (1, 1000, 65_537, (1 << 20) + 3):
        values = rng.standard_normal(size).astype(np.float32)
        staged = values.copy()
        dist.all_reduce(staged, "avg", group=group, algorithm="shm")
        for at in (0, 4, 128):  # the element order inside the array does not change a sum's bits
            x = placed(values, at)
            dist.all_reduce(x, "avg", group=group)
            assert np.array_equal(bits(x), bits(staged)), f"zero-copy at byte {at} != staged, size {size}"
    x = placed(np.ones(10, np.float32), 64 if rank == 0 else 128)
    try:
        dist.all_reduce(x, group=group)
    except CollectiveMismatchError as exc:
        assert "shared buffer" in str(exc) and "at byte 64" in str(exc), str(exc)
    else:
        raise AssertionError("arrays at different places in shared memory must be refused")
    ok = placed(np.ones(10, np.float32), 64)
    dist.all_reduce(ok, group=group)
    assert (ok == world).all()
    # A repeated call reuses its worked-out plan, kept per address, shape, strides, dtype and op
    # until the shared buffers change.
    for _ in range(2):
        ok = placed(np.full(10, rank + 1.0, np.float32), 64)
        dist.all_reduce(ok, group=group)
        assert (ok == world * (world + 1) / 2).all()
    square = ok[:9].reshape(3, 3)  # the same address as another shape
    square[...] = rank + 1.0
    dist.all_reduce(square.T, "max", group=group)  # transposed: not one C-contiguous block
    assert (square == world).all()
    dist.all_reduce(square, "min", group=group)
    assert (square == world).all() and len(node.plans) >= 2
    frozen = placed(np.ones(4, np.float32), 64)
    frozen.flags.writeable = False
    try:
        dist.all_reduce(frozen, group=group)
    except ValueError as exc:
        assert "read-only" in str(exc), str(exc)
    else:
        raise AssertionError("a read-only array must be refused")
    with agreement.context("step", rank):  # the context is part of the agreement on this path too
        try:
            dist.all_reduce(placed(np.ones(4, np.float32), 64), group=group)
        except CollectiveMismatchError as exc:
            assert "step 0" in str(exc) and "step 1" in str(exc), str(exc)
        else:
            raise AssertionError("ranks in different contexts must be refused")
    extra = node.allocate(64)
    assert node.plans == {}, "plans outlive a change of the shared buffers"
    extra.view(np.int64)[...] = rank
    dist.all_reduce(extra.view(np.int64), group=group)
    assert (extra.view(np.int64) == world * (world - 1) // 2).all()
    # A strided view inside shared memory is not one block every rank can reduce in place: it is
    # reduced like any other array, whichever algorithm is asked for.
    for algorithm in ("auto", "shm"):
        strided = placed(np.full(20, rank + 1.0, np.float32), 64)[::2]
        assert dist.collectives.select_algorithm(strided, "sum", group) != "shm"
        dist.all_reduce(strided, group=group, algorithm=algorithm)
        assert (strided == world * (world + 1) / 2).all(), (algorithm, strided)


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
    if world == 1:  # choosing an algorithm communicates nothing, and makes no shared memory
        assert dist.collectives.select_algorithm(np.ones(4, np.float32), algorithm="shm") == "shm"
        assert pg._shm is None
    check_all_reduce()
    differing = check_average_rule()
    if rank == 0:
        print(f"avg rule holds on {world} ranks; elements whose sum differs from mpi's: {differing}",
              flush=True)
    # 3 ranks: the first group size whose division is inexact (x / 3 != x * (1 / 3) for some x),
    # so a path that scaled differently from the others would show here.
    trio = dist.new_group([0, 1, 2]) if world >= 3 else None
    if trio is not None and rank in (0, 1, 2):
        differing = check_average_rule(trio)
        if rank == 0:
            print(f"avg rule holds on 3 of {world} ranks; elements whose sum differs from mpi's: "
                  f"{differing}", flush=True)
    check_zero_copy_all_reduce()
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
        check_zero_copy_all_reduce(sub)
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
