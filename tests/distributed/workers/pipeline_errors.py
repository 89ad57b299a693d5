"""Misused pipelines raise clear errors instead of hanging.

Without ``--shape-change``: errors every rank detects (a stage on the wrong
rank, stages that do not divide over the ranks, bad micro-batch counts, ranks
that disagree on the schedule, a batch too small to cut, step() called with
the wrong arguments)
are raised and caught on every rank, and the pipeline still trains afterwards.

With ``--shape-change``: the first stage changes its batch size after the
first step, which fixed the shapes between stages; it must raise naming the
stages and the micro-batch, and the job must end instead of leaving the next
stage waiting.

Run: mpiexec -n 2 python tests/distributed/workers/pipeline_errors.py [--shape-change]
"""

from __future__ import annotations

import sys
from collections.abc import Callable

import numpy as np
import pytest

import pyrt
import pyrt.distributed as dist
from pyrt import nn
from pyrt.distributed.pipelining import PipelineStage, Schedule1F1B, split_sequential


def expect(error: type[Exception], match: str, call: Callable[[], object]) -> None:
    with pytest.raises(error, match=match):
        call()


def main() -> None:
    dist.init_process_group()
    rank, world = dist.get_rank(), dist.get_world_size()
    pyrt.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
    part = split_sequential(model, world)
    loss_fn = nn.CrossEntropyLoss()

    if "--shape-change" in sys.argv:
        schedule = Schedule1F1B(PipelineStage(part, rank, world), 2, loss_fn)
        for batch in (8, 6):
            if rank == 0:
                schedule.step(pyrt.randn(batch, 4))
            else:
                schedule.step(target=pyrt.zeros(batch).long())
        print(f"rank {rank}: unreachable, the shape change went unnoticed", flush=True)
        return

    expect(ValueError, "belongs to group rank", lambda: PipelineStage(part, (rank + 1) % world, world))
    expect(ValueError, "do not divide evenly", lambda: PipelineStage(part, rank, world + 1))
    expect(ValueError, "outside", lambda: PipelineStage(part, -1, world))
    stage = PipelineStage(part, rank, world)
    expect(ValueError, "n_microbatches must be a positive int", lambda: Schedule1F1B(stage, 0, loss_fn))
    expect(TypeError, "loss_fn must be callable", lambda: Schedule1F1B(stage, 2, "cross-entropy"))
    expect(ValueError, "the pipeline's schedule: ranks disagree: n_microbatches: rank 0 has 2, "
           "rank 1 has 3", lambda: Schedule1F1B(stage, 2 + rank, loss_fn))
    expect(ValueError, "the pipeline's schedule: ranks disagree: mode: rank 0 has 'training', "
           "rank 1 has 'evaluation'", lambda: Schedule1F1B(stage, 2, loss_fn if rank == 0 else None))
    expect(ValueError, "pyrt's pipeline runs on the CPU", lambda: PipelineStage(part, rank, world, "cuda"))
    schedule = Schedule1F1B(stage, 4, loss_fn)
    with pyrt.no_grad():
        expect(RuntimeError, "needs grad mode", lambda: schedule.step(pyrt.randn(8, 4)))
    if stage.is_first:
        expect(TypeError, "one positional argument", lambda: schedule.step())
        expect(ValueError, r"cannot be cut into 4 micro-batches", lambda: schedule.step(pyrt.randn(3, 4)))
    else:
        expect(TypeError, "needs target=", lambda: schedule.step(pyrt.randn(8, 4)))
        expect(ValueError, r"cannot be cut into 4 micro-batches",
               lambda: schedule.step(target=pyrt.zeros(3).long()))
    # After all that, the pipeline still runs, and the stage serves a second schedule with
    # other micro-batch shapes (each schedule learns its own).
    # The SPMD call of PyTorch scripts, step(x, target=y) on every rank, works too.
    schedules = {4: schedule, 2: Schedule1F1B(stage, 2, loss_fn)}
    for m, batch in ((4, 8), (2, 6), (4, 8)):
        losses: list[pyrt.Tensor] = []
        schedules[m].step(pyrt.randn(batch, 4), target=pyrt.zeros(batch).long(), losses=losses)
        assert len(losses) == (m if stage.is_last else 0)
        assert all(np.isfinite(t.item()) for t in losses)
    print(f"rank {rank}: pipeline errors ok", flush=True)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
