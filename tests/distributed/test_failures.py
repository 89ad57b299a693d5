"""A rank that leaves, stalls or is stopped ends the job with a report under plain mpiexec;
ranks that leave together, or wait, do so quietly."""

from __future__ import annotations

import re
import time

import pytest
from mpirun import run_workers


def _run(nprocs: int, mode: str) -> tuple[object, float]:
    start = time.monotonic()
    result = run_workers(nprocs, "rank_leaves.py", mode, timeout=90, check=False)
    return result, time.monotonic() - start


@pytest.mark.parametrize("nprocs", [2, 4])
@pytest.mark.parametrize("mode", ["exit1", "exit0"])
def test_a_rank_that_exits_mid_training_ends_the_job_promptly(nprocs: int, mode: str) -> None:
    result, elapsed = _run(nprocs, mode)
    last = nprocs - 1
    assert result.returncode != 0, result.stdout
    assert f"but rank {last} left" in result.stderr, result.stderr
    assert f"rank {last}: left the job" in result.stderr
    assert "unreachable" not in result.stdout
    assert elapsed < 30, f"the job took {elapsed:.1f} s to end"


@pytest.mark.parametrize("nprocs", [2, 4])
def test_ranks_leaving_together_without_destroy_end_cleanly(nprocs: int) -> None:
    result, _ = _run(nprocs, "together")
    assert result.returncode == 0, result.stderr
    assert result.stdout.count(": done") == nprocs


@pytest.mark.parametrize(("nprocs", "mode"), [(2, "straggler"), (4, "straggler"), (2, "sigstop"),
                                              (4, "sigstop")])
def test_a_stalled_rank_trips_the_watchdog_with_a_report(nprocs: int, mode: str) -> None:
    result, elapsed = _run(nprocs, mode)
    last = nprocs - 1
    assert result.returncode != 0
    assert re.search(r"pyrt watchdog: rank \d waited 3\.\d s in all_reduce #2 on WORLD", result.stderr), \
        result.stderr
    assert f"rank {last}: finished all_reduce #1 on WORLD" in result.stderr
    assert "rank 0: waiting in all_reduce #2 on WORLD" in result.stderr
    assert "unreachable" not in result.stdout
    assert elapsed < 25, f"the job took {elapsed:.1f} s to end (timeout 3 s)"


def test_waiting_ranks_leave_the_core_to_others() -> None:
    result, _ = _run(4, "idle-wait")
    assert result.returncode == 0, result.stderr
    waits = re.findall(r"waited ([\d.]+) s using ([\d.]+) s of CPU", result.stdout)
    assert len(waits) == 3, result.stdout
    for wall, cpu in waits:
        # MPICH's own wait spins a full core (cpu == wall); polling with sleeps uses a few %.
        assert float(wall) > 1.5 and float(cpu) < 0.5 * float(wall), result.stdout
