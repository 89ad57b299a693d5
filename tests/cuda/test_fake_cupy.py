"""The CPU fake of cupy (tests/fake_cupy.py) fails where real cupy fails: if it grew lenient,
the GPU tests would pass on code that breaks on a GPU. These checks pin its strictness."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

import pyrt
import pyrt.kernels


def test_the_fixture_installs_and_undoes_everything(monkeypatch) -> None:
    import fake_cupy

    before = (sys.modules.get("cupy"), pyrt.kernels._cuda_module)
    with monkeypatch.context() as inner:
        cupy = fake_cupy.install_patched(inner)
        assert sys.modules["cupy"] is cupy and pyrt.cuda.device_count() == 2
        assert pyrt.kernels._cuda_module is not before[1]
    assert (sys.modules.get("cupy"), pyrt.kernels._cuda_module) == before


def test_host_arrays_never_mix_in(fake_gpu) -> None:
    cp = fake_gpu
    x = cp.asarray(np.arange(6.0).reshape(2, 3))
    host = np.ones(3)
    with pytest.raises(TypeError, match="Implicit conversion to a NumPy array is not allowed"):
        np.asarray(x)
    for mixed in (lambda: x + host, lambda: host + x, lambda: x * np.array(2.0), lambda: cp.exp(host),
                  lambda: cp.maximum(x, host), lambda: np.maximum(x, host), lambda: cp.concatenate([x, host]),
                  lambda: cp.add(x, [1.0, 2.0, 3.0])):
        with pytest.raises(TypeError, match=r"Unsupported type|Implicit conversion"):
            mixed()
    assert (x * np.float32(2)).sum().get() == 30.0  # numpy scalars are fine, as in cupy
    y = x.copy()
    with pytest.raises(ValueError, match=r"non-scalar numpy\.ndarray cannot be used for fill"):
        y[0] = host  # basic indexing: cupy fills, and refuses a host array
    y[np.array([0])] = host[None]  # advanced indexing: cupy copies the host value to the device
    assert y[np.array([0])].get().tolist() == [[1.0, 1.0, 1.0]]  # host index arrays too


def test_keywords_cupy_lacks_are_refused(fake_gpu) -> None:
    x = fake_gpu.zeros((2, 3))
    with pytest.raises(TypeError, match="unexpected keyword argument 'writeable'"):
        fake_gpu.lib.stride_tricks.as_strided(x, shape=(3,), strides=(8,), writeable=False)
    with pytest.raises(TypeError, match="unexpected keyword argument 'sparse'"):
        fake_gpu.indices((2, 3), sparse=True)
    assert fake_gpu.indices((2, 3)).shape == (2, 2, 3)


def test_results_stay_on_the_device(fake_gpu) -> None:
    cp = fake_gpu
    x = cp.asarray(np.arange(6.0).reshape(2, 3))
    for result in (x.sum(), x[0, 1], x.max(axis=1), np.exp(x), np.concatenate([x, x]), x.T,
                   cp.where(x > 1, x, 0)):
        assert type(result) is cp.ndarray
    assert result.ndim == 2 and x.sum().ndim == 0  # reductions give 0-d arrays, not numpy scalars
    assert float(x.sum()) == 15.0 and int(x[1, 1]) == 4 and bool(x.any())
    with pytest.raises(TypeError):
        list(range(5))[x[0, 1]]  # cupy arrays have no __index__


def test_only_real_cupy_names_exist(fake_gpu) -> None:
    cp = fake_gpu
    for missing in ("errstate", "frompyfunc", "seterr", "nditer"):
        with pytest.raises(AttributeError):
            getattr(cp, missing)
    x = cp.zeros(3)
    with pytest.raises(AttributeError):
        x.flags.writeable  # noqa: B018 (cupy's flags: c_contiguous, f_contiguous, owndata only)
    assert x.flags.c_contiguous and x.flags.owndata and not x[1:].flags.owndata
    assert callable(cp.add.at) and callable(sys.modules["cupyx"].scatter_add)


def test_kernels_refuse_arrays_of_another_device(fake_gpu) -> None:
    cp = fake_gpu
    with cp.cuda.Device(1):
        y = cp.ones(3)
    assert y.device.id == 1 and cp.cuda.runtime.getDevice() == 0
    for kernel in (lambda: y + 1, lambda: cp.exp(y), lambda: y.sum(), lambda: y.astype(np.float32)):
        with pytest.raises(ValueError, match="array device = 1 while current = 0"):
            kernel()
    assert y.reshape(3, 1).shape == (3, 1) and y.get().tolist() == [1.0] * 3  # views and copies out are fine
    with cp.cuda.Device(1):
        assert (y + 1).device.id == 1


def test_pointers_address_the_data(fake_gpu) -> None:
    cp = fake_gpu
    host = np.arange(12, dtype=np.float32).reshape(3, 4)
    x = cp.asarray(host)
    view = x[1:, 2:]
    assert view.data.ptr == x.data.ptr + (1 * 4 + 2) * 4
    assert cp.asarray(host) is not x and x.data.ptr != host.__array_interface__["data"][0]  # a copy


def test_sgemm_stand_in_reads_strided_operands(fake_gpu) -> None:
    import fake_cupy

    cp = fake_gpu
    rng = np.random.default_rng(0)
    a_host = rng.standard_normal((7, 5)).astype(np.float32)
    b_host = rng.standard_normal((9, 4)).astype(np.float32)
    a = cp.asarray(a_host.T.copy()).T  # transposed view
    b = cp.asarray(b_host)[::2, :]  # every other row: (5, 4)
    c = cp.zeros((7, 4), dtype=np.float32)
    fake_cupy.FakeCudaKernels().sgemm(7, 4, 5, 2.0, a.data.ptr, a.strides[0] // 4, a.strides[1] // 4,
                                      b.data.ptr, b.strides[0] // 4, b.strides[1] // 4, 0.0,
                                      c.data.ptr, 4, 1, 0)
    np.testing.assert_allclose(c.get(), 2.0 * a_host @ b_host[::2], rtol=1e-5)


def test_matmul_runs_the_cuda_kernel_entry(fake_gpu) -> None:
    calls = getattr(pyrt.kernels._cuda_module, "calls", None)
    x = pyrt.randn(3, 4, device="cuda")
    w = pyrt.randn(4, 2, device="cuda")
    assert (x @ w).device == "cuda:0"
    if calls is not None:  # the stand-in counts; pyrt._cuda_emulator does not
        assert calls == ["sgemm"]


def test_api_names_come_from_cupy_14() -> None:
    """tests/cupy14_api.json was read from the cupy-cuda13x 14.2 wheel; where real cupy is
    importable, the names the fake uses must exist there too."""
    api = json.loads((Path(__file__).parents[1] / "cupy14_api.json").read_text())
    assert {"asarray", "asnumpy", "add", "ndarray", "float32"} <= set(api["cupy"])
    assert "errstate" not in api["cupy"] and "writeable" not in api["ndarray"]
    try:
        import cupy
    except ImportError:
        pytest.skip("real cupy is not installed (the names were checked when the list was made)")
    assert set(api["cupy"]) <= set(dir(cupy)) and set(api["ndarray"]) <= set(dir(cupy.ndarray))
    for name in ("Device", "Stream", "get_current_stream", "alloc_pinned_memory", "runtime"):
        assert hasattr(cupy.cuda, name)
