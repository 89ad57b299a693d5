"""``python -m pyrt.bench --device cuda`` on the fake GPU: the suites validate and time on the
CPU stand-ins (fake cupy, the SIMT emulator), so their plumbing is tested without a GPU.

What this cannot test is the libraries they compare against: cuBLAS's int8 GemmEx and
cuSPARSE are replaced below by numpy twins with the same signatures.
"""

from __future__ import annotations

import subprocess
import sys
import time

import numpy as np
import pytest

from pyrt.bench import cuda_kernels, train


def test_sgemm_against_cublas_runs_on_the_fake_gpu(fake_gpu) -> None:
    records = cuda_kernels._sgemm(np.random.default_rng(0), quick=True)
    assert [r.ref for r in records] == ["cuBLAS"]
    assert all(r.ours_s > 0 and r.ref_s > 0 for r in records)


def test_spmm_against_cusparse_runs_on_the_fake_gpu(fake_gpu, monkeypatch: pytest.MonkeyPatch) -> None:
    def numpy_cusparse(indptr, indices, values, shape):  # cuSPARSE's twin: a dense matrix
        dense = np.zeros(shape, np.float32)
        host_indptr = indptr.get()
        dense[np.repeat(np.arange(shape[0]), np.diff(host_indptr)), indices.get()] = values.get()
        return fake_gpu.asarray(dense)

    monkeypatch.setattr(cuda_kernels, "cusparse_matrix", numpy_cusparse)
    records = cuda_kernels._spmm(np.random.default_rng(0), quick=True)  # validates ours against it
    assert [r.ref for r in records] == ["cuSPARSE"]
    assert all(r.ours_s > 0 and r.ref_s > 0 for r in records)


def test_int8_against_cublas_runs_on_the_fake_gpu(fake_gpu, monkeypatch: pytest.MonkeyPatch) -> None:
    def numpy_gemm_ex(a_q, w_q, out):  # cublasGemmEx's contract: int8 x int8 -> int32
        out[...] = fake_gpu.asarray(a_q.get().astype(np.int32) @ w_q.get().astype(np.int32).T)
        return out

    monkeypatch.setattr(cuda_kernels, "cublas_int8_gemm", numpy_gemm_ex)
    records = cuda_kernels._int8(np.random.default_rng(0), quick=True)  # validates before timing
    assert [r.ref for r in records] == ["cuBLAS int8"]
    assert all(r.ours_s > 0 and r.ref_s > 0 for r in records)


def _time_once(step) -> float:
    start = time.perf_counter()
    step()
    return time.perf_counter() - start


def test_training_steps_run_on_the_fake_gpu(fake_gpu, monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    import fake_cupy

    import pyrt.kernels

    # The emulator would take minutes for the CNN's 7200-deep products; numpy on the pointers
    # computes the same SGEMM contract in milliseconds (the emulator is tested on its own).
    monkeypatch.setattr(pyrt.kernels, "_cuda_module", fake_cupy.FakeCudaKernels())
    monkeypatch.setattr(train, "time_pair", lambda ours, ref, **_: (_time_once(ours), None))
    records = train.run(quick=True, device="cuda")
    assert [r.case.endswith("on cuda") for r in records] == [True] * 3
    assert all(r.extra["samples_per_s"] > 0 for r in records)
    assert "Training step, batch 64, cuda" in capsys.readouterr().out


# Both run outside the checkout: `python -m` puts the cwd first on sys.path, and the checkout's
# pyrt/ (no compiled modules after a regular install) must not shadow the installed package.
def test_without_a_gpu_the_cuda_suite_says_so(tmp_path) -> None:
    result = subprocess.run([sys.executable, "-m", "pyrt.bench", "--device", "cuda", "--quick"],
                            capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert result.returncode != 0
    assert "need a CUDA GPU" in result.stderr


def test_cuda_device_refuses_cpu_only_suites(tmp_path) -> None:
    result = subprocess.run([sys.executable, "-m", "pyrt.bench", "ddp", "--device", "cuda"],
                            capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert result.returncode == 2
    assert "--device cuda runs the suites" in result.stderr
