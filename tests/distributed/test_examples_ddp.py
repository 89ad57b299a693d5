"""The data-parallel examples under real mpiexec, as the README runs them."""

from __future__ import annotations

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
