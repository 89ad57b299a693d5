"""Pipeline parallelism under real mpiexec: every schedule equals the unpartitioned model."""

from __future__ import annotations

import pytest
from mpirun import run_workers

SCHEDULES = ("ScheduleGPipe", "Schedule1F1B", "ScheduleZeroBubble", "ScheduleInterleaved1F1B")


@pytest.mark.parametrize("nprocs", [1, 2, 4])
def test_every_schedule_matches_the_unpartitioned_model(nprocs: int) -> None:
    result = run_workers(nprocs, "pipeline_equivalence.py", timeout=180)
    for name in SCHEDULES:
        for m in (1, 2, 3, 4, 8):
            assert result.stdout.count(f"pipeline matches {name} m={m}") == nprocs, (name, m)
    if nprocs > 1:
        assert result.stdout.count("functional send/recv matches") == nprocs
        assert result.stdout.count("parameterless first stage matches") == nprocs


def test_pipeline_composes_with_ddp_on_a_2x2_grid() -> None:
    result = run_workers(4, "pipeline_ddp.py", timeout=180)
    for name in SCHEDULES:
        assert result.stdout.count(f"pipeline x ddp matches {name}") == 4, name


def test_misuse_raises_on_every_rank() -> None:
    result = run_workers(2, "pipeline_errors.py", timeout=60)
    assert result.stdout.count("pipeline errors ok") == 2


def test_a_shape_change_after_the_first_step_ends_the_job_with_a_message() -> None:
    result = run_workers(2, "pipeline_errors.py", "--shape-change", timeout=60, check=False)
    assert result.returncode != 0
    assert "rank 0 raised" in result.stderr
    assert "pipeline stage 0 -> 1, micro-batch 0: the output is (3, 4) float32 but the first step " \
           "sent (4, 4) float32" in result.stderr
    assert "unreachable" not in result.stdout
