"""Run each example as a user would (a subprocess) and check what it prints."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def _run(script: str, *args: str, timeout: float = 300) -> str:
    # One OpenMP thread: these checks are about results, not speed, and the test
    # suite often shares its cores with other jobs, where OpenMP barriers around
    # the examples' small GEMMs (32x64 @ 64x256) measured 10x slower than one thread.
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, str(EXAMPLES / script), *args], capture_output=True,
                            text=True, timeout=timeout, cwd=EXAMPLES.parent, env=env)
    assert result.returncode == 0, f"{script} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


@pytest.mark.parametrize("script", ["train_mlp.py", "simple_model.py"])
def test_example_starts_with_its_run_line(script: str) -> None:
    first_lines = (EXAMPLES / script).read_text().splitlines()[:3]
    assert any(line.startswith(f"# Run: python examples/{script}") for line in first_lines)


def test_train_mlp_reaches_97_percent_on_digits() -> None:
    out = _run("train_mlp.py")
    epochs = re.findall(r"^epoch\s+\d+\s+loss ([\d.]+)\s+test accuracy ([\d.]+)$", out, re.M)
    assert len(epochs) >= 2, out
    assert float(epochs[-1][0]) < float(epochs[0][0])  # the loss fell
    final = re.search(r"^test accuracy: ([\d.]+)$", out, re.M)
    assert final is not None, out
    assert float(final.group(1)) >= 0.97, out


def test_train_mlp_flags() -> None:
    out = _run("train_mlp.py", "--epochs", "1", "--batch-size", "64", "--lr", "0.002",
               "--seed", "3")
    assert len(re.findall(r"^epoch\s+\d+", out, re.M)) == 1


def test_simple_model_loss_decreases() -> None:
    out = _run("simple_model.py")
    losses = [float(v) for v in re.findall(r"^step\s+\d+\s+loss ([\d.]+)$", out, re.M)]
    assert len(losses) >= 2, out
    assert losses[-1] < 0.1 * losses[0], out


def test_train_mlp_on_the_fake_gpu_learns_like_on_the_cpu(tmp_path: Path) -> None:
    """``--device cuda`` moves the model and every batch; on the fake GPU (tests/fake_cupy.py,
    the kernels run by the SIMT emulator) the run prints the same losses as on the CPU."""
    tests = Path(__file__).resolve().parent
    launcher = ("import runpy, sys, fake_cupy; fake_cupy.install(); "
                f"sys.argv = [{str(EXAMPLES / 'train_mlp.py')!r}, *sys.argv[1:]]; "
                "runpy.run_path(sys.argv[0], run_name='__main__')")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": f"{tests}{os.pathsep}{EXAMPLES}"}
    flags = ["--epochs", "2", "--batch-size", "128"]
    # cwd elsewhere: `python -c` puts the cwd first on sys.path, and the checkout's pyrt/ (no
    # compiled modules after a regular install) must not shadow the installed package.
    gpu = subprocess.run([sys.executable, "-c", launcher, *flags, "--device", "cuda"], capture_output=True,
                         text=True, timeout=300, cwd=tmp_path, env=env)
    assert gpu.returncode == 0, gpu.stdout + gpu.stderr
    assert "device: cuda:0" in gpu.stdout
    cpu = _run("train_mlp.py", *flags)
    losses = [re.findall(r"^epoch\s+\d+\s+loss ([\d.]+)", out, re.M) for out in (gpu.stdout, cpu)]
    assert len(losses[0]) == 2 and losses[0] == losses[1], (gpu.stdout, cpu)
