"""Pipeline parallelism: measured bubble and activation memory per schedule, and samples/s vs PyTorch.

``python -m pyrt.bench pipeline`` launches itself under ``mpiexec`` at p = 2
and 4 ranks (one launch per p). Every launch trains a deep MLP whose stages
cost about the same (16 blocks of Linear(512, 512) + ReLU and a Linear(512, 10)
head, cut by parameter count; global batch 256, SGD with momentum, cross-entropy)
with GPipe, 1F1B, interleaved 1F1B (v = 2 stages per rank) and zero-bubble
(ZB-H1), at m = 4, 8 and 16 micro-batches, and, in the same processes and on the
same weights, stages, micro-batches and threads, the matching schedule of
``torch.distributed.pipelining`` over gloo. Each rank gets cores / p threads.

For every configuration the first step's losses must agree between the two
frameworks; then, after warm-up, pyrt's and PyTorch's steps alternate (so a
noisy neighbour slows both alike), each timed from a barrier to the slowest
rank's end, and the median step gives samples/s (ratio = PyTorch's step time /
ours). The bubble is pyrt's measured idle share (``bubble_fraction`` of the
gathered timelines, averaged over the timed steps) and the activations are
``schedule.peak_in_flight``, both next to the theory: (p-1)/(m+p-1) for GPipe
and 1F1B, (p-1)/(v*m+p-1) for interleaved, and for zero-bubble the unit-cost
simulation of its generated schedule (``validate_schedule``); m micro-batches
alive per stage for GPipe, p - s for 1F1B and ZB-H1, and the count in the
generated order for interleaved. PyTorch has no single-stage ZB-H1: its
``ScheduleInterleavedZeroBubble`` with one stage per rank stands in (the table
names PyTorch's schedule on every row). ``--quick`` runs p = 2, m = 4 on a
4-block MLP of width 64 for 3 timed steps; ``--plot-dir DIR`` draws the 1F1B
and zero-bubble timelines of p = 2, m = 8 (``--quick``: m = 4) into DIR.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from pyrt.bench.harness import Record, print_table

RANKS = [2, 4]
MICROBATCHES = [4, 8, 16]
SCHEDULES = ["gpipe", "1f1b", "interleaved", "zero-bubble"]
V = 2  # stages per rank of the interleaved schedule
FULL = {"width": 512, "blocks": 16, "batch": 256, "warmup": 5, "steps": 10}
QUICK = {"width": 64, "blocks": 4, "batch": 32, "warmup": 2, "steps": 3}
# The figures written by --plot-dir: one measured 1F1B and one zero-bubble step at p = 2, m = 8
# (--quick: its only m).
PLOT_SCHEDULES, PLOT_RANKS, PLOT_MICROBATCHES = ("1f1b", "zero-bubble"), 2, 8


# --- theory ---------------------------------------------------------------------------
def _pyrt_class(schedule: str) -> Any:
    from pyrt.distributed import pipelining

    return {"gpipe": pipelining.ScheduleGPipe, "1f1b": pipelining.Schedule1F1B,
            "interleaved": pipelining.ScheduleInterleaved1F1B,
            "zero-bubble": pipelining.ScheduleZeroBubble}[schedule]


def stages_per_rank(schedule: str) -> int:
    """v: how many stages each rank holds under ``schedule``.

    >>> stages_per_rank("interleaved"), stages_per_rank("1f1b")
    (2, 1)
    """
    return V if schedule == "interleaved" else 1


def theory(schedule: str, p: int, m: int) -> tuple[float, list[int]]:
    """The expected bubble fraction and micro-batches alive per stage (stage order) of ``schedule``.

    GPipe and 1F1B: (p-1)/(m+p-1); interleaved: (p-1)/(v*m+p-1); zero-bubble:
    the unit-cost simulation of the generated schedule. Activations: m per
    stage for GPipe, p - s for 1F1B and ZB-H1; interleaved counts its
    generated order (it has no closed form per stage).

    >>> theory("1f1b", 4, 8)
    (0.2727272727272727, [4, 3, 2, 1])
    >>> theory("gpipe", 2, 4)[1]
    [4, 4]
    """
    from pyrt.distributed.pipelining import validate_schedule

    v = stages_per_rank(schedule)
    if schedule == "gpipe":
        return (p - 1) / (m + p - 1), [m] * p
    if schedule == "1f1b":
        return (p - 1) / (m + p - 1), [p - s for s in range(p)]
    stats = validate_schedule(_pyrt_class(schedule).generate(p, m, v), v * p, m)
    if schedule == "zero-bubble":
        return stats.bubble_fraction, [p - s for s in range(p)]
    return (p - 1) / (v * m + p - 1), stats.peak_in_flight


def plot_name(schedule: str, p: int, m: int, microbatches: list[int]) -> str | None:
    """The PNG that --plot-dir gets for this configuration, or None if it is not drawn.

    >>> plot_name("zero-bubble", 2, 8, [4, 8, 16]), plot_name("gpipe", 2, 8, [4, 8, 16])
    ('pipeline_zero_bubble_p2_m8.png', None)
    >>> plot_name("1f1b", 2, 4, [4])
    'pipeline_1f1b_p2_m4.png'
    """
    drawn_m = PLOT_MICROBATCHES if PLOT_MICROBATCHES in microbatches else microbatches[0]
    if schedule not in PLOT_SCHEDULES or p != PLOT_RANKS or m != drawn_m:
        return None
    return f"pipeline_{schedule.replace('-', '_')}_p{p}_m{m}.png"


# --- the worker (runs on every rank under mpiexec) ------------------------------------------
def _build_model(width: int, blocks: int) -> Any:
    """Equal blocks, so cutting by parameter count gives stages that cost about the same."""
    from pyrt import nn

    return nn.Sequential(*[nn.Sequential(nn.Linear(width, width), nn.ReLU()) for _ in range(blocks)],
                         nn.Linear(width, 10))


def _torch_schedule(schedule: str) -> tuple[Any, str]:
    """PyTorch's schedule class for ``schedule`` and the name the table prints."""
    from torch.distributed.pipelining import schedules as ts

    if schedule == "zero-bubble":
        # PyTorch has no single-stage ZB-H1; its interleaved zero-bubble schedule run with
        # one stage per rank is the nearest (same stages as ours).
        return ts.ScheduleInterleavedZeroBubble, "InterleavedZeroBubble (v=1)"
    cls = {"gpipe": ts.ScheduleGPipe, "1f1b": ts.Schedule1F1B,
           "interleaved": ts.ScheduleInterleaved1F1B}[schedule]
    return cls, cls.__name__.removeprefix("Schedule") + (f" (v={V})" if schedule == "interleaved" else "")


class _Pair:
    """One configuration built in both frameworks on this rank: same weights, stages and batch."""

    def __init__(self, schedule: str, m: int, cfg: dict[str, Any], rank: int, p: int) -> None:
        import torch
        from torch.distributed import pipelining as tp
        from torch.distributed.pipelining import schedules as ts

        import pyrt
        from pyrt import nn
        from pyrt.bench.train import _torch_twin
        from pyrt.distributed import pipelining as pp

        v = stages_per_rank(schedule)
        num_stages = v * p
        mine = [rank + k * p for k in range(v)]
        self.first, self.last = 0 in mine, num_stages - 1 in mine
        pyrt.manual_seed(0)
        model = _build_model(cfg["width"], cfg["blocks"])
        twin = _torch_twin(model)  # copies the weights before any step changes them
        counts = pp.partition_sequential(model, num_stages, balance="parameters")
        starts = np.cumsum([0, *counts])

        rng = np.random.default_rng(0)
        x = rng.standard_normal((cfg["batch"], cfg["width"])).astype(np.float32)
        y = rng.integers(0, 10, cfg["batch"]).astype(np.int64)

        stages = [pp.PipelineStage(pp.split_sequential(model, num_stages, balance="parameters",
                                                       stage_index=s), s, num_stages) for s in mine]
        self.schedule = (_pyrt_class(schedule)(stages, m, nn.CrossEntropyLoss()) if v > 1
                         else _pyrt_class(schedule)(stages[0], m, nn.CrossEntropyLoss()))
        optimizer = pyrt.optim.SGD([q for s in stages for q in s.submodule.parameters()],
                                   lr=0.01, momentum=0.9)
        self.ours = self._stepper(optimizer, self.schedule, pyrt.tensor(x), pyrt.tensor(y))

        cls, self.ref_name = _torch_schedule(schedule)
        torch_stages = [tp.PipelineStage(twin[int(starts[s]):int(starts[s + 1])], s, num_stages,
                                         device=torch.device("cpu")) for s in mine]
        # PyTorch's multi-stage schedules (interleaved, zero-bubble) take a list of stages.
        multi = issubclass(cls, ts.PipelineScheduleMulti)
        ref_schedule = cls(torch_stages if multi else torch_stages[0], m, torch.nn.CrossEntropyLoss())
        ref_optimizer = torch.optim.SGD([q for s in torch_stages for q in s.submod.parameters()],
                                        lr=0.01, momentum=0.9)
        self.ref = self._stepper(ref_optimizer, ref_schedule, torch.from_numpy(x), torch.from_numpy(y))

    def _stepper(self, optimizer: Any, schedule: Any, x: Any, y: Any) -> Callable[[], float | None]:
        """One training step; returns the mean micro-batch loss on the last stage's rank."""

        def step() -> float | None:
            optimizer.zero_grad()
            losses: list[Any] = []
            args = (x,) if self.first else ()
            if self.last:
                schedule.step(*args, target=y, losses=losses)
            else:
                schedule.step(*args)
            optimizer.step()
            return float(sum(loss.item() for loss in losses) / len(losses)) if losses else None

        return step


def _timed(comm: Any, step: Callable[[], Any]) -> float:
    """The step's time from a barrier to the slowest rank's end."""
    from mpi4py import MPI

    comm.Barrier()
    start = time.perf_counter()
    step()
    return comm.allreduce(time.perf_counter() - start, op=MPI.MAX)


def _measure(pair: _Pair, schedule: str, m: int, p: int, cfg: dict[str, Any], comm: Any,
             plot_dir: str | None) -> dict[str, Any] | None:
    """Check, warm up and time one configuration; rank 0 returns its record fields."""
    from pyrt.distributed.pipelining import bubble_fraction, gather_timelines, plot_schedule

    ours_loss, ref_loss = pair.ours(), pair.ref()
    if ours_loss is not None and abs(ours_loss - ref_loss) > 1e-3 * max(1.0, abs(ref_loss)):
        raise AssertionError(f"pipeline {schedule} p={p} m={m}: first-step loss {ours_loss} "
                             f"!= PyTorch's {ref_loss}")
    for _ in range(cfg["warmup"] - 1):
        pair.ours()
        pair.ref()
    ours_s, ref_s, bubbles, events = [], [], [], []
    timelines = None
    for _ in range(cfg["steps"]):
        # Alternate the frameworks step by step, so both see the same machine.
        ours_s.append(_timed(comm, pair.ours))
        gathered = gather_timelines(pair.schedule)  # outside the timed region
        if gathered is not None:
            bubbles.append(bubble_fraction(gathered))
            timelines = gathered
            events += [e for timeline in gathered.values() for e in timeline]
        ref_s.append(_timed(comm, pair.ref))
    peaks = comm.gather(pair.schedule.peak_in_flight, root=0)
    if comm.Get_rank() != 0:
        return None
    name = plot_name(schedule, p, m, cfg["microbatches"])
    if plot_dir is not None and name is not None:
        plot_schedule(timelines, Path(plot_dir) / name, f"pyrt {schedule}, p={p}, m={m} (one measured step)")
    alive = {stage: n for per_rank in peaks for stage, n in per_rank.items()}
    bubble_theory, alive_theory = theory(schedule, p, m)
    return {"schedule": schedule, "ranks": p, "microbatches": m, "stages_per_rank": stages_per_rank(schedule),
            "ours_s": statistics.median(ours_s), "ref_s": statistics.median(ref_s),
            "ref_schedule": pair.ref_name, "samples_per_s": cfg["batch"] / statistics.median(ours_s),
            "ref_samples_per_s": cfg["batch"] / statistics.median(ref_s),
            "bubble": statistics.mean(bubbles), "bubble_theory": bubble_theory,
            "bubble_measured_costs": _bubble_with_costs(pair.schedule, events),
            "peak_in_flight": [alive[s] for s in sorted(alive)], "peak_in_flight_theory": alive_theory,
            "width": cfg["width"], "blocks": cfg["blocks"], "batch": cfg["batch"],
            "threads": cfg["threads"]}


def _bubble_with_costs(schedule: Any, events: list[Any]) -> float:
    """The schedule's own bubble with each stage's measured mean F/B/I/W times and free transfers.

    The textbook figures assume equal stages; real ones are not (the last
    stage also runs the head and the loss, the first computes no input
    gradient). This separates what the stages' imbalance costs from what
    the transfers and the interpreter cost.
    """
    from pyrt.distributed.pipelining import validate_schedule

    durations: dict[tuple[str, int], list[float]] = {}
    for e in events:
        durations.setdefault((e.kind, e.stage), []).append(e.end - e.start)
    costs = {key: statistics.mean(values) for key, values in durations.items()}
    return validate_schedule(schedule.pipeline_order, schedule.num_stages, schedule.n_microbatches,
                             costs).bubble_fraction


def worker(cfg: dict[str, Any], out_path: str, plot_dir: str | None) -> None:
    """Runs on every rank under mpiexec: every schedule and m, pyrt and PyTorch; rank 0 writes JSON."""
    import torch
    import torch.distributed as tdist

    import pyrt
    import pyrt.distributed as dist

    pyrt.set_num_threads(cfg["threads"])
    torch.set_num_threads(cfg["threads"])
    comm = dist.init_process_group().comm
    rank, p = comm.Get_rank(), comm.Get_size()
    # gloo's rendezvous: MASTER_ADDR / MASTER_PORT come from the parent, rank and size from MPI.
    tdist.init_process_group("gloo", rank=rank, world_size=p)
    results = []
    for m in cfg["microbatches"]:
        for schedule in cfg["schedules"]:
            result = _measure(_Pair(schedule, m, cfg, rank, p), schedule, m, p, cfg, comm, plot_dir)
            if result is not None:
                results.append(result)
    if rank == 0:
        Path(out_path).write_text(json.dumps(results))
    tdist.destroy_process_group()
    dist.destroy_process_group()


# --- the parent ------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _record(r: dict[str, Any]) -> Record:
    extra = {k: v for k, v in r.items() if k not in ("ours_s", "ref_s")}
    return Record("pipeline", f"{r['schedule']} p={r['ranks']} m={r['microbatches']}", r["ours_s"],
                  f"torch.distributed.pipelining {r['ref_schedule']} (gloo)", r["ref_s"], extra)


def _slashed(values: list[int]) -> str:
    return "/".join(map(str, values))


def run(quick: bool = False, plot_dir: str | None = None) -> list[Record]:
    """Launch one mpiexec job per p, then print and return one record per (p, schedule, m)."""
    from pyrt.run import find_mpiexec

    cores = len(os.sched_getaffinity(0))
    if plot_dir is not None:
        plot_dir = str(Path(plot_dir).resolve())  # the workers may not share our idea of "."
        Path(plot_dir).mkdir(parents=True, exist_ok=True)
    records = []
    for p in RANKS[:1] if quick else RANKS:
        threads = max(1, cores // p)
        cfg = {**(QUICK if quick else FULL), "threads": threads, "schedules": SCHEDULES,
               "microbatches": MICROBATCHES[:1] if quick else MICROBATCHES}
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "pipeline.json"
            env = dict(os.environ, OMP_NUM_THREADS=str(threads), OPENBLAS_NUM_THREADS=str(threads),
                       MKL_NUM_THREADS=str(threads), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()))
            command = [find_mpiexec(), "-n", str(p), sys.executable, "-m", "pyrt.bench.pipeline",
                       json.dumps(cfg), str(out)] + (["--plot-dir", str(plot_dir)] if plot_dir else [])
            subprocess.run(command, check=True, timeout=900, env=env)
            records += [_record(r) for r in json.loads(out.read_text())]
    cfg = QUICK if quick else FULL
    print_table(f"Pipeline training step, MLP {cfg['blocks']} x Linear({cfg['width']}) + ReLU + "
                f"Linear({cfg['width']}, 10), global batch {cfg['batch']}, cores/p threads per rank "
                "(bubble and activations: pyrt's; ratio = PyTorch step time / ours)", records, [
        ("p", lambda r: r.extra["ranks"]), ("m", lambda r: r.extra["microbatches"]),
        ("schedule", lambda r: r.extra["schedule"]),
        ("bubble", lambda r: r.extra["bubble"]), ("theory", lambda r: r.extra["bubble_theory"]),
        ("at measured costs", lambda r: r.extra["bubble_measured_costs"]),
        ("act/stage", lambda r: _slashed(r.extra["peak_in_flight"])),
        ("theory", lambda r: _slashed(r.extra["peak_in_flight_theory"])),
        ("pyrt samples/s", lambda r: r.extra["samples_per_s"]),
        ("torch samples/s", lambda r: r.extra["ref_samples_per_s"]),
        ("ratio", lambda r: r.ratio), ("torch schedule", lambda r: r.extra["ref_schedule"]),
    ])
    return records


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="worker: run under mpiexec by run()")
    parser.add_argument("config", help="the configuration as JSON")
    parser.add_argument("out", help="where rank 0 writes the results")
    parser.add_argument("--plot-dir", help="write the timeline figures here")
    args = parser.parse_args()
    worker(json.loads(args.config), args.out, args.plot_dir)
