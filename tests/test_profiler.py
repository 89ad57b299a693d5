"""pyrt.profiler in one process: what a small model's step records, and the trace file's shape."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pytest

import pyrt
from pyrt import nn
from pyrt.profiler import chrome_trace, profile, record_function, recorder


def _mlp_step() -> None:
    pyrt.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    optimizer = pyrt.optim.Adam(model.parameters(), lr=1e-3)
    x, y = pyrt.randn(5, 8), pyrt.tensor(np.array([0, 1, 2, 3, 0]))
    with profile() as prof:
        with record_function("step"):
            loss = nn.CrossEntropyLoss()(model(x), y)
            loss.backward()
            optimizer.step()
    return prof


def _complete(events: list[dict]) -> list[dict]:
    return [e for e in events if e["ph"] == "X"]


def _inside(child: dict, parent: dict) -> bool:
    return (child["tid"] == parent["tid"] and parent["ts"] <= child["ts"]
            and child["ts"] + child["dur"] <= parent["ts"] + parent["dur"])


def test_a_step_records_forward_backward_and_kernels_nested(tmp_path: Path) -> None:
    path = tmp_path / "trace.json"
    assert _mlp_step().export_chrome_trace(path) == str(path)
    trace = json.loads(path.read_text())
    events = _complete(trace["traceEvents"])
    names = [e["name"] for e in events]
    assert names.count("LinearFunction") == 2 and names.count("LinearFunctionBackward") == 2, names
    assert {"ReLU", "ReLUBackward", "CrossEntropy", "CrossEntropyBackward", "backward", "step"} <= set(names)
    categories = {e["name"]: e["cat"] for e in events}
    assert categories["LinearFunction"] == "forward" and categories["LinearFunctionBackward"] == "backward"
    assert categories["matmul"] == "kernel" and categories["adam_step"] == "kernel"
    assert categories["backward"] == "autograd" and categories["step"] == "user"

    step = next(e for e in events if e["name"] == "step")
    backward = next(e for e in events if e["name"] == "backward")
    assert all(_inside(e, step) for e in events if e is not step)
    assert all(_inside(e, backward) for e in events if e["cat"] == "backward")
    assert not any(_inside(e, backward) for e in events if e["cat"] == "forward")
    # Each Linear runs one GEMM forward; backward runs one for the weight of the first layer (its
    # input needs no gradient) and two for the second. Every GEMM sits inside its op.
    matmuls = [e for e in events if e["name"] == "matmul"]
    ops = [e for e in events if e["name"] in ("LinearFunction", "LinearFunctionBackward")]
    assert sorted(sum(_inside(m, op) for m in matmuls) for op in ops) == [1, 1, 1, 2]
    assert len(matmuls) == 5
    assert len([e for e in events if e["name"] == "adam_step"]) == 4  # one per parameter


def test_events_carry_shapes_dtypes_and_bytes() -> None:
    events = _complete(_mlp_step().events())
    first_linear = next(e for e in events if e["name"] == "LinearFunction")
    assert first_linear["args"]["shapes"] == [[5, 8], [16, 8], [16]]
    gemm = next(e for e in events if e["name"] == "matmul")
    assert gemm["args"] == {"shapes": [[5, 8], [8, 16]], "dtypes": ["float32", "float32"],
                            "bytes": 5 * 8 * 4 + 8 * 16 * 4}


def test_trace_file_is_the_trace_event_format(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "trace.json"
    _mlp_step().export_chrome_trace(path)
    trace = json.loads(path.read_text())
    assert set(trace) >= {"traceEvents", "displayTimeUnit"}
    metadata = [e for e in trace["traceEvents"] if e["ph"] == "M"]
    assert {(e["name"], e["args"].get("name")) for e in metadata} >= {("process_name", "rank 0"),
                                                                      ("thread_name", "main")}
    for e in _complete(trace["traceEvents"]):
        assert {"name", "cat", "ph", "ts", "dur", "pid", "tid"} <= set(e)
        assert e["pid"] == 0 and e["tid"] == 1
        assert isinstance(e["ts"], float) and e["ts"] >= 0 and e["dur"] >= 0


def test_nothing_is_recorded_outside_a_profile() -> None:
    prof = _mlp_step()
    count = len(prof.events())
    assert recorder.active is None
    with record_function("ignored"):
        (pyrt.ones(3, requires_grad=True) * 2).sum().backward()
    assert len(prof.events()) == count


def test_a_raising_op_still_closes_its_range() -> None:
    with profile() as prof, pytest.raises(ValueError, match="inner dimensions"):
        pyrt.kernels.matmul(np.ones((2, 3), np.float32), np.ones((4, 2), np.float32))
    assert [e["name"] for e in _complete(prof.events())] == ["matmul"]
    assert recorder.active is None


def test_misuse_is_an_error() -> None:
    with profile() as prof:
        with pytest.raises(RuntimeError, match="already recording"), profile():
            pass
        with pytest.raises(RuntimeError, match="still recording"):
            prof.export_chrome_trace("unused.json")
    with pytest.raises(RuntimeError, match="nothing was recorded"):
        profile().events()


def test_args_that_json_lacks_are_written_plainly(tmp_path: Path) -> None:
    with profile() as prof, record_function("numpy args", {"peer": np.int64(1), "obj": object}):
        pass
    prof.export_chrome_trace(tmp_path / "t.json")
    event = _complete(json.loads((tmp_path / "t.json").read_text())["traceEvents"])[0]
    assert event["args"] == {"peer": 1, "obj": str(object)}


def test_record_function_decorates_and_nests() -> None:
    @record_function("outer")
    def work(depth: int) -> None:
        if depth:
            work(depth - 1)

    with profile() as prof:
        work(2)
    outer = _complete(prof.events())
    assert [e["name"] for e in outer] == ["outer"] * 3
    assert _inside(outer[2], outer[1]) and _inside(outer[1], outer[0])


def test_other_threads_get_their_own_track() -> None:
    with profile() as prof:
        rec = recorder.active
        ones = np.ones((2, 2), np.float32)
        plain = rec.deferred(lambda: pyrt.kernels.matmul(ones, ones), "all_reduce", "collective", {})
        with rec.span("DDP bucket 0", "ddp"):  # as DDP launches a bucket: the comm event is named after it
            named = rec.deferred(lambda: None, "all_reduce", "collective", {"bytes": 16})
        thread = threading.Thread(target=lambda: (plain(), named()), name="pyrt-comm-WORLD")
        thread.start()
        thread.join()
    events = prof.events()
    tracks = {e["tid"]: e["args"]["name"] for e in events if e["ph"] == "M" and e["name"] == "thread_name"}
    assert tracks == {1: "main", 2: "comm WORLD"}
    comm = [e for e in _complete(events) if e["tid"] == 2]
    assert {e["name"] for e in comm} == {"all_reduce", "all_reduce (DDP bucket 0)", "matmul"}
    launched = next(e for e in comm if e["name"] == "all_reduce (DDP bucket 0)")
    assert launched["args"]["launched_by"] == "DDP bucket 0" and launched["args"]["queued_us"] >= 0


def test_merge_puts_every_rank_on_rank_zeros_clock() -> None:
    # Rank 1's clock reads 1 ms more than rank 0's at the common barrier (sync_ns).
    a = recorder.Record("a", "user", 1, 3_000_000, 3_500_000, None)
    b = recorder.Record("b", "user", 7, 4_000_000, 4_100_000, None)
    rank0 = chrome_trace.RankTrace(0, 10_000_000, 2_000_000, [a], {1: "MainThread"}, 1)
    rank1 = chrome_trace.RankTrace(1, 11_000_000, 2_500_000, [b], {7: "MainThread"}, 7)
    events = _complete(chrome_trace.merge([rank0, rank1])["traceEvents"])
    # Rank 1's profile started at 2.5 ms of its clock = 1.5 ms of rank 0's, before rank 0's (2 ms).
    assert [(e["pid"], e["ts"], e["dur"]) for e in events] == [(0, 1500.0, 500.0), (1, 1500.0, 100.0)]
