"""The benchmark command runs, validates against its references, and writes its records."""

from __future__ import annotations

import json

import pytest


def run_bench(run_python, tmp_path, *suites: str) -> list[dict]:
    out = tmp_path / "bench.json"
    run_python("-m", "pyrt.bench", *suites, "--quick", "--json", str(out), timeout=600)
    return json.loads(out.read_text())


REQUIRED = {"bench", "case", "ours_s", "ref", "ref_s", "ratio"}


def test_kernel_suites_write_comparable_records(run_python, tmp_path) -> None:
    records = run_bench(run_python, tmp_path)
    assert {r["bench"] for r in records} >= {"matmul"}
    for r in records:
        assert REQUIRED <= set(r)
        assert r["ours_s"] > 0 and r["ratio"] == pytest.approx(r["ref_s"] / r["ours_s"])


def test_allreduce_suite_reports_bandwidths(run_python, tmp_path) -> None:
    records = run_bench(run_python, tmp_path, "allreduce")
    assert {r["ranks"] for r in records} == {2, 4}
    bandwidth = [r for r in records if r["bench"] != "agreement_check"]
    assert {r["bench"] for r in bandwidth} >= {"allreduce_shm", "allreduce_ring"}
    for r in bandwidth:
        assert REQUIRED | {"algbw", "busbw", "bytes"} <= set(r)
        assert r["busbw"] == pytest.approx(r["algbw"] * 2 * (r["ranks"] - 1) / r["ranks"])
    # The agreement check's price at 4 KB and 1 MB (16 MB too without --quick), at both rank counts.
    checks = [r for r in records if r["bench"] == "agreement_check"]
    expected = [(p, b) for p in (2, 4) for b in (4096, 1 << 20)]
    assert sorted((r["ranks"], r["bytes"]) for r in checks) == expected
    assert all(r["overhead_percent"] == pytest.approx(100 * r["ours_s"] / r["ref_s"]) for r in checks)


def test_unknown_suite_is_an_error(run_python) -> None:
    result = run_python("-m", "pyrt.bench", "nope", check=False)
    assert result.returncode != 0 and "unknown suite" in result.stderr


def test_pipeline_suite_measures_bubbles_against_pytorch(run_python, tmp_path) -> None:
    """--quick: p = 2, m = 4, a 4-block MLP of width 64, 3 timed steps per schedule."""
    plots = tmp_path / "plots"
    out = tmp_path / "bench.json"
    run_python("-m", "pyrt.bench", "pipeline", "--quick", "--json", str(out), "--plot-dir", str(plots),
               timeout=300)
    records = json.loads(out.read_text())
    assert {r["schedule"] for r in records} == {"gpipe", "1f1b", "interleaved", "zero-bubble"}
    for r in records:
        assert REQUIRED | {"bubble", "bubble_theory", "peak_in_flight", "peak_in_flight_theory",
                           "samples_per_s", "ref_samples_per_s", "ref_schedule"} <= set(r)
        assert (r["ranks"], r["microbatches"]) == (2, 4)
        assert 0 <= r["bubble"] <= 1 and 0 <= r["bubble_theory"] <= 1
        assert r["ratio"] > 0 and r["ratio"] == pytest.approx(r["ref_s"] / r["ours_s"])
        # Which micro-batches are alive depends on the order alone, not on timing.
        assert r["peak_in_flight"] == r["peak_in_flight_theory"]
    assert sorted(p.name for p in plots.iterdir()) == ["pipeline_1f1b_p2_m4.png",
                                                       "pipeline_zero_bubble_p2_m4.png"]


def test_compress_suite_compares_pruned_sparse_and_int8_with_pytorch(run_python, tmp_path) -> None:
    """--quick: 90% only, the digits MLP trained 2 epochs, one short timing round (about 10 s)."""
    pytest.importorskip("torch")
    records = run_bench(run_python, tmp_path, "compress")
    assert {r["bench"] for r in records} == {"compress"}
    assert {r["model"] for r in records} == {"digits 64-256-128-10", "mlp 784-1024-512-10"}
    variants = {r["variant"] for r in records}
    assert {"fp32", "pruned 90% masked", "int8"} <= variants
    for r in records:
        assert REQUIRED | {"variant", "sparsity", "batch", "accuracy", "bytes", "ref_bytes"} <= set(r)
        assert r["batch"] in (1, 64) and r["ratio"] == pytest.approx(r["ref_s"] / r["ours_s"])
        if r["model"].startswith("digits"):
            # Same weights, same masks (checked by the suite): same predictions as PyTorch.
            assert r["accuracy"] is not None
            if r["variant"] != "int8":
                assert r["accuracy"] == pytest.approx(r["ref_accuracy"], abs=0.01)
        if r["variant"] == "int8":
            assert r["bytes"] < 0.3 * next(f["bytes"] for f in records
                                           if f["model"] == r["model"] and f["variant"] == "fp32")
        if r["variant"].endswith("sparse"):
            assert r["speedup_vs_masked"] == pytest.approx(r["masked_s"] / r["ours_s"])


def test_ddp_suite_runs_pytorch_ddp_beside_ours(run_python, tmp_path) -> None:
    records = run_bench(run_python, tmp_path, "ddp")
    assert [r["ranks"] for r in records] == [1, 2]  # --quick
    for r in records:
        assert REQUIRED <= set(r) and r["samples_per_s"] > 0
        assert r["torch_samples_per_s"] is None or r["torch_samples_per_s"] > 0
    assert records[0]["ratio"] == pytest.approx(1.0)  # 1 rank is the reference
    assert records[0]["cap_samples_per_s"] == {}  # the cap sweep needs ranks to average over
    assert set(records[1]["cap_samples_per_s"]) == {"25.0", "4.0", "1.0"}
    assert all(v > 0 for v in records[1]["cap_samples_per_s"].values())
