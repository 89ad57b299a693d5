"""DistributedDataParallel under real mpiexec at 1, 2 and 4 ranks."""

from __future__ import annotations

import pytest
from mpirun import run_workers


@pytest.mark.parametrize("nprocs", [1, 2, 4])
@pytest.mark.parametrize("bucket_cap_mb", ["0.001", "25"])
def test_ddp_matches_single_process_training(nprocs: int, bucket_cap_mb: str) -> None:
    result = run_workers(nprocs, "ddp_equivalence.py", bucket_cap_mb, timeout=120)
    assert result.stdout.count("ddp matches single-process") == nprocs


@pytest.mark.parametrize("nprocs", [1, 2])
@pytest.mark.parametrize(("bucket_cap_mb", "algorithm"), [("0.001", "auto"), ("25", "ring")])
def test_ddp_with_one_gpu_per_rank_matches_single_process_cpu_training(nprocs: int, bucket_cap_mb: str,
                                                                       algorithm: str) -> None:
    """Each rank on its own GPU (the CPU fake of cupy without one): gradient buckets are device
    arrays staged through pinned host memory around MPI; the result equals CPU training."""
    result = run_workers(nprocs, "ddp_equivalence.py", bucket_cap_mb, algorithm, "cuda", timeout=120)
    assert result.stdout.count("ddp matches single-process") == nprocs
    assert all(f"on cuda:{r}" in result.stdout for r in range(nprocs))


def test_ddp_with_cuda_aware_mpi_hands_mpi_the_device_buckets() -> None:
    """With an MPI that reads GPU memory, buckets and the initial broadcast go to MPI as device
    buffers (``__cuda_array_interface__``), nothing staged through the host (the worker checks)."""
    result = run_workers(2, "ddp_equivalence.py", "0.001", "mpi", "cuda", "cuda-aware", timeout=120)
    assert result.stdout.count("ddp matches single-process") == 2


@pytest.mark.parametrize("nprocs", [1, 2, 4])
def test_ddp_errors_instead_of_hanging(nprocs: int) -> None:
    result = run_workers(nprocs, "ddp_errors.py", timeout=120)
    assert result.stdout.count("ddp errors ok") == nprocs


@pytest.mark.parametrize("nprocs", [1, 2])
def test_ddp_overlaps_bucket_allreduce_with_backward(nprocs: int) -> None:
    result = run_workers(nprocs, "ddp_overlap.py", timeout=120)
    assert result.stdout.count("ddp overlap ok") == nprocs


@pytest.mark.parametrize("nprocs", [1, 2, 4])
def test_join_trains_uneven_data_like_one_process(nprocs: int) -> None:
    result = run_workers(nprocs, "ddp_uneven.py", "join", timeout=120)
    assert result.stdout.count("ddp uneven ok") == nprocs


@pytest.mark.parametrize("nprocs", [2, 4])
def test_a_skipped_backward_is_an_error_not_a_mix_of_steps(nprocs: int) -> None:
    result = run_workers(nprocs, "ddp_uneven.py", "skip-backward", timeout=60, check=False)
    assert result.returncode != 0
    assert "DDP iteration 2) #" in result.stderr and "rank 1 called all_reduce(avg" in result.stderr
    assert "DDP iteration 3) #" in result.stderr, result.stderr
    assert "unreachable" not in result.stdout


@pytest.mark.parametrize("nprocs", [2, 4])
def test_an_extra_step_without_join_is_an_error_not_a_hang(nprocs: int) -> None:
    result = run_workers(nprocs, "ddp_uneven.py", "extra-step", timeout=60, check=False)
    assert result.returncode != 0
    assert "ranks disagree on the call" in result.stderr, result.stderr
    assert f"rank {nprocs - 1} called all_reduce(avg" in result.stderr
    assert "unreachable" not in result.stdout
