"""Tensor parallelism, device meshes and ZeRO: pure rank arithmetic here, the rest under mpiexec.

The workers compare every output and gradient of the parallel layers with
their serial twins (float64) at tp = 1, 2 and 4, count the communication
against the analytic volume, train dp x tp and pp x tp jobs from one script
and compare ZeroRedundancyOptimizer with DDP + the same optimizer.
"""

from __future__ import annotations

import itertools
import re
import threading
from pathlib import Path

import numpy as np
import pytest
from mpirun import run_workers

from pyrt.distributed.device_mesh import mesh_dim_groups
from pyrt.distributed.functional import CommCounter, record_communication
from pyrt.distributed.tensor_parallel import pad_vocab_size, vocab_range


def test_mesh_rank_map_puts_tp_fastest() -> None:
    mesh = np.arange(8).reshape(2, 2, 2)  # (dp, pp, tp)
    assert mesh_dim_groups(mesh, 2) == [[0, 1], [2, 3], [4, 5], [6, 7]]
    assert mesh_dim_groups(mesh, 1) == [[0, 2], [1, 3], [4, 6], [5, 7]]
    assert mesh_dim_groups(mesh, 0) == [[0, 4], [1, 5], [2, 6], [3, 7]]
    # Every dimension's groups partition the ranks.
    for dim in range(3):
        assert sorted(r for g in mesh_dim_groups(mesh, dim) for r in g) == list(range(8))
    assert mesh_dim_groups(np.arange(3).reshape(3, 1), 1) == [[0], [1], [2]]


@pytest.mark.parametrize(("vocab", "size", "padded"), [(1, 1, 1), (10, 1, 10), (10, 4, 12), (12, 4, 12),
                                                       (5, 4, 8), (7, 2, 8), (1, 4, 4)])
def test_vocab_padding_and_ranges_cover_the_padded_vocabulary(vocab: int, size: int, padded: int) -> None:
    assert pad_vocab_size(vocab, size) == padded
    ranges = [vocab_range(padded, r, size) for r in range(size)]
    assert ranges[0][0] == 0 and ranges[-1][1] == padded
    assert all(a[1] == b[0] for a, b in itertools.pairwise(ranges))
    assert len({end - start for start, end in ranges}) == 1


def test_vocab_helpers_reject_bad_sizes() -> None:
    with pytest.raises(ValueError, match="vocab_size >= 1"):
        pad_vocab_size(0, 2)
    with pytest.raises(ValueError, match="10 rows do not split over 4 ranks"):
        vocab_range(10, 0, 4)
    with pytest.raises(ValueError, match="rank 4 is outside a group of 4"):
        vocab_range(12, 4, 4)


def test_comm_counter_counts_only_while_active_and_nests() -> None:
    outer, inner = CommCounter(), CommCounter()
    record_communication("all_reduce", 100)  # nobody listening
    with outer:
        record_communication("all_reduce", 8)
        with inner:
            record_communication("all_gather", 16)
    record_communication("all_reduce", 100)
    assert outer.calls == {"all_reduce": 1, "all_gather": 1}
    assert outer.bytes == {"all_reduce": 8, "all_gather": 16}
    assert inner.calls == {"all_gather": 1} and inner.bytes == {"all_gather": 16}
    outer.reset()
    assert outer.calls == {} and outer.bytes == {}
    # A counter sees its own thread's collectives only (DDP's communication thread is not ours).
    with outer:
        worker = threading.Thread(target=record_communication, args=("all_reduce", 4))
        worker.start()
        worker.join()
    assert outer.calls == {}


@pytest.mark.parametrize("nprocs", [1, 2, 4])
def test_tensor_parallel_layers_match_serial(nprocs: int) -> None:
    out = run_workers(nprocs, "tp_layers.py", timeout=120).stdout
    assert out.count(f"tp layers match serial at tp={nprocs}") == nprocs, out
    calls = 2 if nprocs > 1 else 0
    # The runtime's count equals the analytic one: 2 all-reduces of b*s*h float64 per block.
    assert re.search(rf"counted {calls} all-reduces, {calls * 2 * 3 * 8 * 8} bytes", out), out


@pytest.mark.parametrize("nprocs", [1, 2, 4])
def test_zero_matches_ddp_with_a_world_share_of_the_state(nprocs: int) -> None:
    out = run_workers(nprocs, "tp_zero.py", timeout=120).stdout
    assert out.count("zero matches ddp") == nprocs, out
    # The even case: every rank holds exactly 1/world of DDP's Adam state (48 float64 x 2).
    assert f"Adam width=5 unused=False float64: 48 elements (padded 48); optimizer state per rank " \
           f"{[768 // nprocs] * nprocs} bytes" in out, out


def test_dp_x_tp_and_pp_x_tp_meshes_from_one_script() -> None:
    out = run_workers(4, "tp_mesh.py", timeout=180).stdout
    assert out.count("dp x tp matches serial (DDP+SGD, ZeRO+Adam)") == 4, out
    for schedule in ("ScheduleGPipe", "Schedule1F1B", "ScheduleZeroBubble"):
        assert out.count(f"pp x tp matches serial under {schedule}") == 4, out


def test_dp_x_pp_x_tp_mesh_of_eight_ranks() -> None:
    out = run_workers(8, "tp_mesh3d.py", timeout=180).stdout
    assert out.count("dp x pp x tp matches serial") == 8, out
    for coordinate in ([0, 0, 0], [0, 1, 1], [1, 0, 1], [1, 1, 1]):
        assert f"at mesh coordinate {coordinate}" in out, out


EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "tensor_parallel_mlp.py"


def test_example_starts_with_its_mpiexec_line() -> None:
    assert EXAMPLE.read_text().startswith("# Run: mpiexec -n 4 python examples/tensor_parallel_mlp.py")


@pytest.mark.parametrize(("flags", "epochs"), [([], 2), (["--zero"], 1)])
def test_example_dp2_x_tp2_follows_the_single_process_loss_curve(flags: list[str], epochs: int) -> None:
    out = run_workers(4, str(EXAMPLE), "--epochs", str(epochs), *flags, timeout=180).stdout
    curves = [(float(a), float(b)) for a, b in re.findall(r"loss dp x tp ([\d.]+)  serial ([\d.]+)", out)]
    assert len(curves) == epochs, out
    for parallel, serial in curves:
        assert abs(parallel - serial) <= 1e-4 * serial, out
    assert epochs == 1 or curves[1][0] < 0.5 * curves[0][0], out
    traffic = re.findall(r"counted (\d+) calls, (\d+) bytes; analytic (\d+) calls, (\d+) bytes", out)
    assert len(traffic) == 3 and all(c == a and cb == ab for c, cb, a, ab in traffic), out
    assert int(traffic[0][0]) == (6 if flags else 5), out   # the all-reduces
    state = re.search(r"optimizer state on rank 0: (\d+) bytes for the (\d+) parameter elements", out)
    assert state is not None, out
    nbytes, numel = int(state.group(1)), int(state.group(2))
    # Adam's two float32 moments: of every element under DDP, of rank 0's half under ZeRO (dp=2).
    assert nbytes == 8 * (-(-numel // 2) if flags else numel), out
    accuracy = re.search(r"^test accuracy: ([\d.]+)$", out, re.M)
    assert accuracy is not None and float(accuracy.group(1)) >= 0.9, out   # 0.93 after one epoch
