"""``examples/pipeline_lm.py`` under real mpiexec: 4 pipeline stages give the one-process loss curve."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from mpirun import run_workers

SCRIPT = Path(__file__).resolve().parents[2] / "examples" / "pipeline_lm.py"
# A small model on 100k characters of the standard library (the default corpus), 3 steps.
TINY = ["--max-chars", "100000", "--steps", "3", "--batch-size", "8", "--seq-len", "16",
        "--microbatches", "4", "--embed", "16", "--hidden", "32", "--sample-length", "40"]


def _losses(out: str) -> list[float]:
    return [float(v) for v in re.findall(r"^step \d+ loss ([\d.]+)$", out, re.M)]


def test_example_starts_with_its_mpiexec_line() -> None:
    assert SCRIPT.read_text().startswith("# Run: mpiexec -n 4 python examples/pipeline_lm.py")


# Adam's steps hardly change when every gradient is off by one factor (e.g. micro-batch
# losses summed instead of averaged); SGD's steps, at this rate, change the loss by ~0.1.
@pytest.mark.parametrize("optimizer", [["--optimizer", "adam"], ["--optimizer", "sgd", "--lr", "1.0"]],
                         ids=["adam", "sgd"])
def test_four_stages_follow_the_single_process_loss_curve(optimizer: list[str]) -> None:
    single = run_workers(1, str(SCRIPT), *TINY, *optimizer, timeout=60).stdout
    piped = run_workers(4, str(SCRIPT), *TINY, *optimizer, timeout=90).stdout
    assert "4 stages: Embedding, LSTMBlock | LSTMBlock | LSTMBlock | Linear" in piped, piped
    expected, got = _losses(single), _losses(piped)
    assert len(expected) == 3, single
    assert len(got) == 3, piped  # only the last stage's rank reports
    # The same kernels on different micro-batch splits: float32 rounding apart at most.
    # (Measured: equal to the 6 printed decimals.)
    np.testing.assert_allclose(got, expected, rtol=1e-4)
    assert got[-1] < got[0], piped
    for out in (single, piped):
        sample = re.search(r"^sample:\n(.*)\n-- end of sample$", out, re.M | re.S)
        assert sample is not None, out
        assert sample.group(1).startswith("def ") and len(sample.group(1)) == 4 + 40, out


def test_transformer_stages_follow_the_single_process_loss_curve() -> None:
    # The Transformer encoder blocks of issue 14 (pre-norm, GELU, causal mask) as pipeline stages.
    args = [*TINY, "--arch", "transformer"]
    single = run_workers(1, str(SCRIPT), *args, timeout=60).stdout
    piped = run_workers(4, str(SCRIPT), *args, timeout=90).stdout
    assert "4 stages: TokenAndPosition" in piped and "CausalBlock | CausalBlock" in piped, piped
    expected, got = _losses(single), _losses(piped)
    assert len(expected) == 3 and len(got) == 3, (single, piped)
    np.testing.assert_allclose(got, expected, rtol=1e-4)
    assert "sample:\ndef " in piped, piped
