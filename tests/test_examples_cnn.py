"""Run examples/train_cnn.py as a user would: one process, and two MPI ranks."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "train_cnn.py"


def _mpiexec() -> str | None:
    # The mpich wheel installs mpiexec next to the interpreter (as tests/distributed/mpirun.py).
    beside = Path(sys.executable).parent / "mpiexec"
    return str(beside) if beside.exists() else shutil.which("mpiexec")


def _run(command: list[str], timeout: float) -> str:
    # One OpenMP thread: this checks results, not speed, and shares its cores.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                                cwd=EXAMPLE.parent.parent, env=env)
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"{command} did not finish in {timeout}s\n{exc.stdout}\n{exc.stderr}") \
            from None
    assert result.returncode == 0, f"{command} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def _final_accuracy(out: str) -> float:
    epochs = re.findall(r"^epoch\s+\d+\s+loss ([\d.]+)\s+test accuracy ([\d.]+)$", out, re.M)
    assert len(epochs) >= 2, out
    assert float(epochs[-1][0]) < float(epochs[0][0]), out  # the loss fell
    final = re.search(r"^test accuracy: ([\d.]+)$", out, re.M)
    assert final is not None, out
    return float(final.group(1))


def test_starts_with_its_run_line():
    assert EXAMPLE.read_text().splitlines()[0].startswith("# Run: python examples/train_cnn.py")


def test_train_cnn_reaches_98_percent_on_digits():
    out = _run([sys.executable, str(EXAMPLE)], timeout=180)
    assert _final_accuracy(out) >= 0.98, out


def test_train_cnn_data_parallel_on_two_ranks():
    mpiexec = _mpiexec()
    if mpiexec is None:
        pytest.skip("mpiexec not found (pip install mpich)")
    out = _run([mpiexec, "-n", "2", sys.executable, str(EXAMPLE), "--epochs", "8"], timeout=180)
    assert "2 ranks, 16 samples per rank per step" in out, out
    assert _final_accuracy(out) >= 0.97, out
