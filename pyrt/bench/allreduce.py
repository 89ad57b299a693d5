"""All-reduce bandwidth: pyrt's shared-memory and ring all-reduces vs MPI_Allreduce.

``python -m pyrt.bench allreduce`` launches itself under ``mpiexec`` at 2 and 4
ranks. Each rank times ``pyrt.distributed.all_reduce`` (ours, including its
agreement check) with ``algorithm="shm"`` on an ordinary array (staged
through the shared window) and on one in the group's shared memory
(``shm_zero_copy``: how DDP's buckets are reduced), with ``"ring"``, and
mpi4py's raw ``comm.Allreduce`` (the reference), on float32 buffers from 1 KB to 64 MB,
and reports the slowest rank's best time. Bandwidths follow nccl-tests: algbw = bytes / time, busbw =
algbw * 2 (p - 1) / p, the per-link traffic a bandwidth-optimal all-reduce needs.

A second table prices the agreement check every collective makes first
(``pyrt.distributed.agreement``: one small Iallgather of each rank's call):
its own time per call, and that time as a share of an ``all_reduce`` at
4 KB, 1 MB and 16 MB.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from pyrt.bench.harness import Record, print_table

SIZES = [1 << 10, 1 << 12, 1 << 14, 1 << 16, 1 << 18, 1 << 20, 1 << 22, 1 << 24, 1 << 26]
QUICK_SIZES = [1 << 10, 1 << 20]
AGREEMENT_SIZES = [1 << 12, 1 << 20, 1 << 24]
RANKS = [2, 4]


def _time_collectives(comm, fns: list, nbytes: int) -> list[float]:
    """Per function, the best over rounds of the slowest rank's mean time per call. The functions
    take turns round after round, so a stretch of load from other processes (a preempted rank
    stalls every rank) falls on all of them alike rather than on whichever ran then."""
    calls = max(3, min(200, (64 << 20) // max(nbytes, 1) // 4))
    for fn in fns:
        fn()
    best = [float("inf")] * len(fns)
    for _ in range(7):
        for i, fn in enumerate(fns):
            comm.Barrier()
            start = time.perf_counter()
            for _ in range(calls):
                fn()
            elapsed = (time.perf_counter() - start) / calls
            best[i] = min(best[i], comm.allreduce(elapsed, op=_max_op()))
    return best


def _max_op():
    from mpi4py import MPI

    return MPI.MAX


def worker(sizes: list[int], out_path: str) -> None:
    """Runs on every rank under mpiexec; rank 0 writes the records."""
    from mpi4py import MPI

    import pyrt.distributed as dist
    from pyrt.distributed import native

    pg = dist.init_process_group()
    comm, world = pg.comm, pg.size()
    # (label, algorithm, whether the buffer lives in the group's shared memory: zero-copy, as DDP's buckets)
    algorithms = ([("shm", "shm", False), ("shm_zero_copy", "shm", True)] if pg.on_one_node else [])
    algorithms += [("ring", "ring", False)] if native.comm_available() else []
    records = []
    for nbytes in sizes:
        count = nbytes // 4
        data = np.random.default_rng(comm.Get_rank()).standard_normal(count).astype(np.float32)
        expected = data.copy()
        comm.Allreduce(MPI.IN_PLACE, expected, op=MPI.SUM)
        buffer = data.copy()
        fns = [lambda b=buffer: comm.Allreduce(MPI.IN_PLACE, b, op=MPI.SUM)]
        for label, algorithm, zero_copy in algorithms:
            check = pg.shared_memory().allocate(nbytes).view(np.float32) if zero_copy else np.empty_like(data)
            check[...] = data
            dist.all_reduce(check, algorithm=algorithm)
            if not np.allclose(check, expected, rtol=1e-5, atol=1e-5):
                raise AssertionError(f"allreduce {label} {nbytes} B on {world} ranks: wrong result")
            fns.append(lambda b=check, a=algorithm: dist.all_reduce(b, algorithm=a))
        ref_s, *ours = _time_collectives(comm, fns, nbytes)
        for (label, _, _), ours_s in zip(algorithms, ours, strict=True):
            records.append(Record(f"allreduce_{label}", f"{nbytes} B x {world} ranks", ours_s,
                                  "MPI_Allreduce", ref_s, _bandwidths(nbytes, world, ours_s, ref_s)))
        if not algorithms:
            records.append(Record("allreduce_mpi", f"{nbytes} B x {world} ranks", ref_s,
                                  "MPI_Allreduce", ref_s, _bandwidths(nbytes, world, ref_s, ref_s)))
    # --quick (sizes up to 1 MB) prices the check at the sizes it timed, not at 16 MB.
    records += _agreement_overhead(comm, [n for n in AGREEMENT_SIZES if n <= max(sizes)])
    if comm.Get_rank() == 0:
        Path(out_path).write_text(json.dumps([r.to_json() for r in records]))
    dist.destroy_process_group()


def _agreement_overhead(comm, sizes: list[int]) -> list[Record]:
    """The agreement check's time per call against a whole all_reduce (``algorithm="auto"``)."""
    import pyrt.distributed as dist
    from pyrt.distributed import agreement, process_group

    pg, world = process_group.default_group(), comm.Get_size()
    records = []
    for nbytes in sizes:
        buffer = np.ones(nbytes // 4, np.float32)
        call = agreement.Call("all_reduce", buffer.dtype, buffer.shape, "sum", transport="mpi")
        check_s, total_s = _time_collectives(comm, [
            lambda c=call: agreement.check_call(pg, c, pg.next_sequence()),
            lambda b=buffer: dist.all_reduce(b)], nbytes)
        records.append(Record("agreement_check", f"{nbytes} B x {world} ranks", check_s, "all_reduce",
                              total_s, {"bytes": nbytes, "ranks": world,
                                        "overhead_percent": 100 * check_s / total_s}))
    return records


def _bandwidths(nbytes: int, world: int, ours_s: float, ref_s: float) -> dict[str, float]:
    factor = 2 * (world - 1) / world
    return {"bytes": nbytes, "ranks": world,
            "algbw": nbytes / ours_s / 1e9, "busbw": nbytes / ours_s / 1e9 * factor,
            "ref_algbw": nbytes / ref_s / 1e9, "ref_busbw": nbytes / ref_s / 1e9 * factor}


def run(quick: bool = False) -> list[Record]:
    from pyrt.run import find_mpiexec

    records: list[Record] = []
    sizes = QUICK_SIZES if quick else SIZES
    for world in RANKS:
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "records.json"
            command = [find_mpiexec(), "-n", str(world), sys.executable, "-m", "pyrt.bench.allreduce",
                       ",".join(map(str, sizes)), str(out)]
            subprocess.run(command, check=True, timeout=900)
            for raw in json.loads(out.read_text()):
                fields = {k: raw[k] for k in ("bench", "case", "ours_s", "ref", "ref_s")}
                extra = {k: v for k, v in raw.items() if k not in fields and k != "ratio"}
                records.append(Record(**fields, extra=extra))
    bandwidth = [r for r in records if r.bench != "agreement_check"]
    agreement = [r for r in records if r.bench == "agreement_check"]
    print_table("All-reduce, float32 sum (GB/s; ratio = MPI time / ours)", bandwidth, [
        ("algorithm", lambda r: r.bench.removeprefix("allreduce_")),
        ("ranks", lambda r: r.extra["ranks"]), ("bytes", lambda r: r.extra["bytes"]),
        ("ours us", lambda r: r.ours_s * 1e6), ("MPI us", lambda r: r.ref_s * 1e6),
        ("ratio", lambda r: r.ratio), ("algbw", lambda r: r.extra["algbw"]),
        ("busbw", lambda r: r.extra["busbw"]), ("MPI algbw", lambda r: r.extra["ref_algbw"]),
        ("MPI busbw", lambda r: r.extra["ref_busbw"]),
    ])
    print_table("Agreement check before every collective (target: under 5% of all_reduce from 1 MB)",
                agreement, [
                    ("ranks", lambda r: r.extra["ranks"]), ("bytes", lambda r: r.extra["bytes"]),
                    ("check us", lambda r: r.ours_s * 1e6), ("all_reduce us", lambda r: r.ref_s * 1e6),
                    ("overhead %", lambda r: r.extra["overhead_percent"]),
                ])
    return records


if __name__ == "__main__":
    worker([int(s) for s in sys.argv[1].split(",")], sys.argv[2])
