"""pyrt.profiler under real mpiexec: one merged trace of 2 ranks, DDP's overlap and p2p sizes visible."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from mpirun import run_workers

# The worker's model: Linear(32, 64), Linear(64, 64), Linear(64, 4), float32.
PARAMETER_BYTES = 4 * (32 * 64 + 64 + 64 * 64 + 64 + 64 * 4 + 4)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[dict], int]:
    path = tmp_path_factory.mktemp("profiler") / "trace.json"
    result = run_workers(2, "profiler_trace.py", str(path), timeout=120)
    written = re.search(rf"rank 0: (\d+) buckets, trace written: {re.escape(str(path))}", result.stdout)
    assert written is not None, result.stdout
    buckets = int(written.group(1))  # 8 KB buckets, regrouped in arrival order after the first step
    assert f"rank 1: {buckets} buckets, trace written: None" in result.stdout, result.stdout
    return json.loads(Path(path).read_text())["traceEvents"], buckets


@pytest.fixture(scope="module")
def trace(run: tuple[list[dict], int]) -> list[dict]:
    return run[0]


def _tracks(trace: list[dict], pid: int) -> dict[str, int]:
    return {e["args"]["name"]: e["tid"] for e in trace
            if e["ph"] == "M" and e["name"] == "thread_name" and e["pid"] == pid}


def _complete(trace: list[dict], pid: int) -> list[dict]:
    return [e for e in trace if e["ph"] == "X" and e["pid"] == pid]


def _overlap(a: dict, b: dict) -> bool:
    return a["ts"] < b["ts"] + b["dur"] and b["ts"] < a["ts"] + a["dur"]


def test_one_process_per_rank_with_main_and_comm_tracks(trace: list[dict]) -> None:
    assert {e["pid"] for e in trace if e["ph"] == "X"} == {0, 1}
    names = {(e["pid"], e["args"]["name"]) for e in trace if e["ph"] == "M" and e["name"] == "process_name"}
    assert names == {(0, "rank 0"), (1, "rank 1")}
    for pid in (0, 1):
        assert _tracks(trace, pid) == {"main": 1, "comm WORLD": 2}


@pytest.mark.parametrize("pid", [0, 1])
def test_bucket_allreduces_run_on_the_comm_track_beside_backward(run: tuple[list[dict], int],
                                                                 pid: int) -> None:
    trace, n_buckets = run
    events, comm = _complete(trace, pid), _tracks(trace, pid)["comm WORLD"]
    buckets = [e for e in events if e["name"].startswith("all_reduce (DDP bucket")]
    # n buckets x 2 profiled steps; the step before the profile is not in the trace.
    assert n_buckets >= 3 and len(buckets) == 2 * n_buckets, [e["name"] for e in events]
    assert all(e["tid"] == comm and e["cat"] == "collective" for e in buckets)
    for iteration in (2, 3):  # each step's buckets carry every gradient once
        step = [e for e in buckets if e["args"]["context"] == f"DDP iteration {iteration}"]
        assert sum(e["args"]["bytes"] for e in step) == PARAMETER_BYTES, step
    launches = [e for e in events if e["cat"] == "ddp" and e["name"].startswith("DDP bucket")]
    assert len(launches) == 2 * n_buckets and all(e["tid"] == 1 for e in launches)
    backward_ops = [e for e in events if e["cat"] == "backward"]
    assert all(e["tid"] == 1 for e in backward_ops)
    overlapping = [b for b in buckets if any(_overlap(b, op) for op in backward_ops)]
    assert overlapping, "no bucket all-reduce overlaps a backward op in time"


def test_point_to_point_transfers_carry_their_sizes(trace: list[dict]) -> None:
    def transfers(pid: int) -> dict[str, dict]:
        return {e["name"]: e["args"] for e in _complete(trace, pid) if e["cat"] == "p2p" and "args" in e}

    sent, received = transfers(0), transfers(1)
    assert set(sent) == {"send", "isend"} and set(received) == {"recv", "irecv"}
    for args, peer in [*((a, 1) for a in sent.values()), *((a, 0) for a in received.values())]:
        assert args["bytes"] == 60 and args["shapes"] == [[3, 5]] and args["dtypes"] == ["float32"]
        assert args["peer"] == peer


def test_ranks_share_one_clock(trace: list[dict]) -> None:
    # Both ranks open "after barrier" as they leave one barrier: the aligned clocks put them together.
    starts = [next(e["ts"] for e in _complete(trace, pid) if e["name"] == "after barrier") for pid in (0, 1)]
    assert abs(starts[0] - starts[1]) < 50_000, starts  # us; a barrier's exit skew is far less
    assert min(e["ts"] for e in trace if e["ph"] == "X") >= 0
