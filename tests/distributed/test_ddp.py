"""DistributedDataParallel under real mpiexec at 1, 2 and 4 ranks."""

from __future__ import annotations

import pytest
from mpirun import run_workers


@pytest.mark.parametrize("nprocs", [1, 2, 4])
@pytest.mark.parametrize("bucket_cap_mb", ["0.001", "25"])
def test_ddp_matches_single_process_training(nprocs: int, bucket_cap_mb: str) -> None:
    result = run_workers(nprocs, "ddp_equivalence.py", bucket_cap_mb, timeout=120)
    assert result.stdout.count("ddp matches single-process") == nprocs


@pytest.mark.parametrize("nprocs", [1, 2, 4])
def test_ddp_errors_instead_of_hanging(nprocs: int) -> None:
    result = run_workers(nprocs, "ddp_errors.py", timeout=120)
    assert result.stdout.count("ddp errors ok") == nprocs


@pytest.mark.parametrize("nprocs", [1, 2])
def test_ddp_overlaps_bucket_allreduce_with_backward(nprocs: int) -> None:
    result = run_workers(nprocs, "ddp_overlap.py", timeout=120)
    assert result.stdout.count("ddp overlap ok") == nprocs
