"""The benchmark command runs, validates against its references, and writes its records."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


def run_bench(tmp_path, *suites: str) -> list[dict]:
    out = tmp_path / "bench.json"
    subprocess.run([sys.executable, "-m", "pyrt.bench", *suites, "--quick", "--json", str(out)],
                   check=True, timeout=600, capture_output=True, text=True)
    return json.loads(out.read_text())


REQUIRED = {"bench", "case", "ours_s", "ref", "ref_s", "ratio"}


def test_kernel_suites_write_comparable_records(tmp_path) -> None:
    records = run_bench(tmp_path)
    assert {r["bench"] for r in records} >= {"matmul"}
    for r in records:
        assert REQUIRED <= set(r)
        assert r["ours_s"] > 0 and r["ratio"] == pytest.approx(r["ref_s"] / r["ours_s"])


def test_allreduce_suite_reports_bandwidths(tmp_path) -> None:
    records = run_bench(tmp_path, "allreduce")
    assert {r["ranks"] for r in records} == {2, 4}
    for r in records:
        assert REQUIRED | {"algbw", "busbw", "bytes"} <= set(r)
        assert r["busbw"] == pytest.approx(r["algbw"] * 2 * (r["ranks"] - 1) / r["ranks"])


def test_unknown_suite_is_an_error() -> None:
    result = subprocess.run([sys.executable, "-m", "pyrt.bench", "nope"], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode != 0 and "unknown suite" in result.stderr
