"""pyrt.profiler under real mpiexec: one merged trace of 2 ranks, DDP's overlap and p2p sizes visible."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mpirun import run_workers


@pytest.fixture(scope="module")
def trace(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    path = tmp_path_factory.mktemp("profiler") / "trace.json"
    result = run_workers(2, "profiler_trace.py", str(path), timeout=120)
    assert f"rank 0: 4 buckets, trace written: {path}" in result.stdout, result.stdout
    assert "rank 1: 4 buckets, trace written: None" in result.stdout, result.stdout
    return json.loads(Path(path).read_text())["traceEvents"]


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
def test_bucket_allreduces_run_on_the_comm_track_beside_backward(trace: list[dict], pid: int) -> None:
    events, comm = _complete(trace, pid), _tracks(trace, pid)["comm WORLD"]
    buckets = [e for e in events if e["name"].startswith("all_reduce (DDP bucket")]
    # 4 buckets x 2 profiled steps; the step before the profile is not in the trace.
    assert len(buckets) == 8, [e["name"] for e in events]
    assert all(e["tid"] == comm and e["cat"] == "collective" for e in buckets)
    assert {e["args"]["context"] for e in buckets} == {"DDP iteration 2", "DDP iteration 3"}
    # float32: "last" with "second.bias", "second.weight", "first.bias", "first.weight".
    expected = [4 * (4 * 64 + 4 + 64), 4 * 64 * 64, 4 * 64, 4 * 64 * 32]
    assert sorted({e["args"]["bytes"] for e in buckets}) == sorted(expected)
    launches = [e for e in events if e["cat"] == "ddp" and e["name"].startswith("DDP bucket")]
    assert len(launches) == 8 and all(e["tid"] == 1 for e in launches)
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
