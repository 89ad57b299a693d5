"""Exact resume: a run killed by SIGKILL mid-epoch and resumed from its last checkpoint ends
bit-identical to an uninterrupted run (model, optimizer state), at 1, 2 and 4 ranks."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from mpirun import WORKERS, run_workers

import pyrt


def _train(nprocs: int, out: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    out.mkdir(exist_ok=True)
    if nprocs > 1:
        return run_workers(nprocs, "resume_training.py", str(out), *args, timeout=120, check=check)
    # One plain process: the RandomSampler path, drawing from pyrt's global generator.
    result = subprocess.run([sys.executable, str(WORKERS / "resume_training.py"), str(out), *args],
                            capture_output=True, text=True, timeout=120,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert not check or result.returncode == 0, result.stderr
    return result


def _flatten(tree: object, prefix: str = "") -> dict[str, np.ndarray]:
    if isinstance(tree, dict):
        return {k: v for key, value in tree.items() for k, v in _flatten(value, f"{prefix}/{key}").items()}
    if isinstance(tree, (list, tuple)):
        return {k: v for i, value in enumerate(tree) for k, v in _flatten(value, f"{prefix}/{i}").items()}
    return {prefix: np.asarray(getattr(tree, "data", tree))}


@pytest.mark.parametrize(("nprocs", "kill_at"), [(1, 32), (2, 17), (4, 11)])
def test_resume_after_sigkill_is_bit_identical(tmp_path: Path, nprocs: int, kill_at: int) -> None:
    # kill_at is mid-epoch and two steps past a checkpoint (every 5 steps), so work is lost
    # and redone: 25, 13 and 7 steps per epoch at 1, 2 and 4 ranks.
    _train(nprocs, tmp_path / "uninterrupted")
    killed = _train(nprocs, tmp_path / "resumed", "--kill-at", str(kill_at), check=False)
    assert killed.returncode != 0, killed.stdout
    assert "trained to step" not in killed.stdout
    resumed = _train(nprocs, tmp_path / "resumed", "--resume")
    assert resumed.stdout.count("trained to step") == nprocs

    expected = _flatten(pyrt.load(tmp_path / "uninterrupted" / "final.pt"))
    actual = _flatten(pyrt.load(tmp_path / "resumed" / "final.pt"))
    assert expected.keys() == actual.keys()
    for key, value in expected.items():
        np.testing.assert_array_equal(actual[key], value, err_msg=key)


@pytest.mark.parametrize("forget", ["rng", "sampler"])
def test_resume_without_rng_or_sampler_state_diverges(tmp_path: Path, forget: str) -> None:
    # The negative control: the oracle above can fail. Resumed without the RNG state, the
    # dropout masks differ; without the sampler position, the epoch restarts from its
    # first batch in a new order.
    _train(1, tmp_path / "uninterrupted")
    _train(1, tmp_path / "resumed", "--kill-at", "32", check=False)
    _train(1, tmp_path / "resumed", "--resume", "--forget", forget)
    expected = _flatten(pyrt.load(tmp_path / "uninterrupted" / "final.pt"))
    actual = _flatten(pyrt.load(tmp_path / "resumed" / "final.pt"))
    assert not np.array_equal(actual["/model/0.weight"], expected["/model/0.weight"])
