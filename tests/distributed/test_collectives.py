"""Collectives, subgroups and failure behaviour under real mpiexec at 1, 2 and 4 ranks."""

from __future__ import annotations

import time

import pytest
from mpirun import run_workers


@pytest.mark.parametrize("nprocs", [1, 2, 4])
def test_collectives_match_closed_form(nprocs: int) -> None:
    result = run_workers(nprocs, "collectives.py", timeout=180)
    assert result.stdout.count("collectives ok") == nprocs
    # AVG's one rule (sum, then one division by the group size) was checked bit for bit on every
    # algorithm: on all ranks, and at 4 ranks also on a 3-rank group (inexact division by 3).
    assert result.stdout.count("avg rule holds on") == (2 if nprocs == 4 else 1), result.stdout


@pytest.mark.parametrize("context", [None, ("DDP iteration", 0), ("DDP iteration", 7), ("", -3),
                                     ("step", 2**32 - 1)])
def test_a_record_stamped_with_its_context_equals_its_whole_encoding(context) -> None:
    import numpy as np

    from pyrt.distributed import agreement

    call = agreement.Call("all_reduce", np.float32, (4, 3), "avg", None, "shm", context, 64)
    whole = agreement._record.__wrapped__(call).copy()  # encoded afresh, context and all
    whole[0] = 11
    assert np.array_equal(call.encode(11), whole)
    assert agreement.Call.describe(call.encode(11)).endswith(
        "#11" if context is None or context == ("", -3) else f"{context[0]} {context[1]}) #11")


@pytest.mark.parametrize("nprocs", [2, 4])
def test_mismatched_sizes_raise_on_every_rank(nprocs: int) -> None:
    result = run_workers(nprocs, "mismatch.py", timeout=120)
    assert result.stdout.count("ranks disagree") == 12 * nprocs, result.stdout


@pytest.mark.parametrize("nprocs", [2, 4])
@pytest.mark.parametrize("where", ["main", "thread"])
def test_a_rank_that_raises_ends_the_job(nprocs: int, where: str) -> None:
    args = ["--in-thread"] if where == "thread" else []
    start = time.monotonic()
    result = run_workers(nprocs, "rank_raises.py", *args, timeout=60, check=False)
    elapsed = time.monotonic() - start
    assert result.returncode != 0
    assert f"rank {nprocs - 1} raised" in result.stderr
    if where == "thread":
        assert "in thread worker" in result.stderr
    assert "unreachable" not in result.stdout
    assert elapsed < 30, f"the job took {elapsed:.1f}s to end"


@pytest.mark.parametrize("nprocs", [1, 2])
def test_missing_ring_module_gives_an_actionable_error(nprocs: int) -> None:
    result = run_workers(nprocs, "ring_missing.py", timeout=60)
    assert result.stdout.count("ring missing handled") == nprocs


def test_pytorch_backend_names_run_over_mpi_with_a_notice() -> None:
    result = run_workers(2, "backend_names.py", timeout=60)
    assert result.stdout.count("backend names ok") == 2
    # One notice per backend name and rank, not one per call.
    assert result.stderr.count("init_process_group(backend='gloo') runs over MPI") == 2, result.stderr
    assert result.stderr.count("init_process_group(backend='nccl') runs over MPI") == 2


def test_hierarchical_all_reduce_across_emulated_nodes(monkeypatch: pytest.MonkeyPatch) -> None:
    # MPICH splits the 4 ranks into 2 "nodes" of 2 (0, 2 and 1, 3): shared memory inside each,
    # MPI between the node leaders. (MPIR_CVAR_ODD_EVEN_CLIQUES loses ANY_SOURCE receives in
    # MPICH 5.0.2 when the senders poll with sleeps; reproduced with plain mpi4py.)
    monkeypatch.setenv("MPIR_CVAR_NUM_CLIQUES", "2")
    result = run_workers(4, "collectives.py", timeout=180)
    assert result.stdout.count("collectives ok") == 4
    assert result.stdout.count("emulated nodes: False, 2") == 4, result.stdout
    assert result.stdout.count("avg rule holds on") == 2, result.stdout  # hierarchical included
