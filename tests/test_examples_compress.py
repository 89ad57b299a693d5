"""Run examples/compress_mlp.py as a user would, on a reduced schedule, and check its table."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "compress_mlp.py"
ROW = re.compile(r"^\s*(.+?)\s+([\d.]+)\s+(\d+)\s+([\d.]+)\s+([\d.]+)$", re.M)


def test_starts_with_its_run_line() -> None:
    assert EXAMPLE.read_text().splitlines()[0].startswith("# Run: python examples/compress_mlp.py")


def test_compress_mlp_keeps_accuracy_and_shrinks_the_model() -> None:
    # 15 dense epochs and 4 per pruning step instead of 40 and 10 (about 6 s).
    # One OpenMP thread: this checks results, not speed, and shares its cores.
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, str(EXAMPLE), "--epochs", "15", "--finetune-epochs", "4"],
                            capture_output=True, text=True, timeout=120, cwd=EXAMPLE.parent.parent, env=env)
    out = result.stdout
    assert result.returncode == 0, f"{out}\n{result.stderr}"
    table = out[out.index("\nCompression of the digits MLP"):]
    rows = {name: (float(acc), int(size), float(t1), float(t64))
            for name, acc, size, t1, t64 in ROW.findall(table)}
    dense, masked, quantized = rows["dense fp32"], rows["pruned 90% (masked dense)"], rows["int8 (dynamic)"]
    assert dense[0] >= 0.95, out
    # The targets: within 1 point of dense after 90% pruning, int8 within 0.5.
    # The reduced run meets both at seed 0 (-0.28 and 0 points); it is noisier than the
    # default run (seeds 0-2 measured -1.39..+1.11 points pruned), whose seeds 0-5 all meet them.
    assert masked[0] >= dense[0] - 0.01, out
    assert quantized[0] >= dense[0] - 0.005, out
    assert masked[1] == dense[1], out  # zeros stored densely take the same bytes
    assert quantized[1] < 0.3 * dense[1], out  # int8 weights: about a quarter
    assert all(t1 > 0 and t64 > 0 for _, _, t1, t64 in rows.values()), out
    if importlib.util.find_spec("pyrt.sparse") is not None:
        sparse = rows["pruned 90% sparse"]
        assert sparse[0] == masked[0], out  # the same function, computed another way
        assert sparse[1] < 0.4 * dense[1], out  # CSR: values, column indices, row pointers
    else:
        assert "left out, pyrt.sparse is not available" in out, out
