"""The data-parallel examples under real mpiexec, as the README runs them."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from mpirun import run_workers

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.mark.parametrize("script", ["ddp_simple.py", "ddp_mlp.py"])
def test_example_starts_with_its_mpiexec_line(script: str) -> None:
    assert (EXAMPLES / script).read_text().startswith(f"# Run: mpiexec -n 2 python examples/{script}")


def test_ddp_simple_trains_and_keeps_ranks_identical() -> None:
    out = run_workers(2, str(EXAMPLES / "ddp_simple.py"), timeout=120).stdout
    losses = [float(v) for v in re.findall(r"loss ([\d.]+)", out)]
    assert losses[-1] < 0.01 * losses[0], out
    assert "2 ranks hold identical weights" in out


@pytest.mark.parametrize("nprocs", [1, 2])
def test_ddp_mlp_matches_single_process_accuracy(nprocs: int) -> None:
    out = run_workers(nprocs, str(EXAMPLES / "ddp_mlp.py"), timeout=300).stdout
    final = re.search(r"^test accuracy: ([\d.]+)$", out, re.M)
    assert final is not None, out
    assert float(final.group(1)) >= 0.97, out
    assert re.search(rf"throughput: [\d,]+ samples/s over {nprocs} ranks", out), out
    # Which all-reduce each bucket ran, counted per algorithm.
    buckets = re.search(r"^all-reduce: .* per step \((\d+) buckets?: (.*)\), ", out, re.M)
    assert buckets is not None, out
    counts = re.findall(r"(\d+) (shm|hierarchical|ring|mpi)", buckets.group(2))
    assert counts and sum(int(c) for c, _ in counts) == int(buckets.group(1)), out


def test_ddp_mlp_writes_a_profile_of_both_ranks_and_a_loss_curve(tmp_path: Path) -> None:
    trace, curve = tmp_path / "trace.json", tmp_path / "loss.png"
    out = run_workers(2, str(EXAMPLES / "ddp_mlp.py"), "--epochs", "1", "--profile", str(trace),
                      "--plot-loss", str(curve), timeout=120).stdout
    assert f"profile of 2 ranks written to {trace}" in out and f"loss curve saved to {curve}" in out, out
    assert curve.read_bytes().startswith(b"\x89PNG")
    events = [e for e in json.loads(trace.read_text())["traceEvents"] if e["ph"] == "X"]
    assert {e["pid"] for e in events} == {0, 1}
    steps = {e["name"] for e in events if e["cat"] == "user" and e["name"].startswith("step ")}
    assert steps == {f"step {i}" for i in range(2, 8)}  # --profile-steps 6 after 2 warm-up steps
    assert any(e["name"].startswith("all_reduce (DDP bucket") and e["tid"] == 2 for e in events)
