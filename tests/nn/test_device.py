"""Device requests as ported PyTorch code makes them: ``model.to(rank)``, ``.to("cuda:0")``,
``.to(torch.device(...))``, ``.cuda()``: a clear error naming the device when it is absent, while
``.to("cpu")`` and dtype casts keep working; ``pyrt.cuda``; ``nn.DataParallel``."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import pyrt
from pyrt import nn

no_gpu = pytest.mark.skipif(pyrt.cuda.is_available(), reason="checks the answers without a GPU")


@no_gpu
def test_cuda_reports_no_device() -> None:
    assert pyrt.cuda.is_available() is False
    assert pyrt.cuda.device_count() == 0


@no_gpu
@pytest.mark.parametrize("device", [0, 1, "cuda", "cuda:0", "cuda:3"])
def test_cuda_requests_without_a_gpu_raise_and_leave_the_model_alone(device) -> None:
    model = nn.Linear(3, 2)
    before = model.weight.data.copy()
    index = device if isinstance(device, int) else int(device.partition(":")[2] or 0)
    with pytest.raises(RuntimeError, match=rf"CUDA device {index} was requested .* 0 visible CUDA devices"):
        model.to(device)
    assert model.weight.data is not None and np.array_equal(model.weight.data, before)
    assert model.weight.dtype == np.float32 and model.weight.device == "cpu"


@no_gpu
def test_torch_devices_and_cuda_method() -> None:
    torch = pytest.importorskip("torch")
    model = nn.Linear(3, 2)
    with pytest.raises(RuntimeError, match="CUDA device 1 was requested"):
        model.to(torch.device("cuda", 1))
    with pytest.raises(RuntimeError, match="CUDA device 0 was requested"):
        model.to(torch.device("cuda"))
    with pytest.raises(RuntimeError, match="CUDA device 0 was requested"):
        model.cuda()
    assert model.to(torch.device("cpu")) is model
    assert model.to(torch.device("cpu"), pyrt.float64).weight.dtype == np.float64


def test_cpu_and_dtype_forms_keep_working() -> None:
    model = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    weight = model[0].weight
    assert model.to("cpu") is model and model.cpu() is model
    assert model.to(pyrt.float64) is model and weight.dtype == np.float64
    assert model.to("cpu", pyrt.float32)[0].weight is weight and weight.dtype == np.float32
    model.to(dtype=pyrt.float64, device="cpu", non_blocking=True)
    assert weight.dtype == np.float64 and model[1].running_mean.dtype == np.float64
    assert model[1].num_batches_tracked.dtype == np.int64  # integer state keeps its dtype
    model.to(pyrt.ones(1))  # another tensor's device and dtype
    assert weight.dtype == np.float32
    model.to("float64")
    assert weight.dtype == np.float64


def test_bad_requests_are_clear() -> None:
    model = nn.Linear(1, 1)
    with pytest.raises(ValueError, match="unsupported device 'mps'"):
        model.to("mps")
    with pytest.raises(ValueError, match="unsupported device 'cuda:x'"):
        model.to("cuda:x")
    with pytest.raises(TypeError, match="floating point dtypes"):
        model.to(pyrt.int64)
    with pytest.raises(TypeError, match="unexpected keyword"):
        model.to(devise="cpu")


def test_parse_device_with_two_visible_devices(monkeypatch) -> None:
    monkeypatch.setattr(pyrt.cuda, "device_count", lambda: 2)
    assert pyrt.cuda.parse_device("cuda:1") == ("cuda", 1)
    assert pyrt.cuda.parse_device(0) == ("cuda", 0)
    assert pyrt.cuda.parse_device("cuda") == ("cuda", 0)
    with pytest.raises(RuntimeError, match=r"CUDA device 2 .* valid indices are 0\.\.1"):
        pyrt.cuda.parse_device("cuda:2")


def test_moves_to_a_gpu_when_there_is_one() -> None:
    if not pyrt.cuda.is_available():
        pytest.skip("needs a GPU and cupy")
    cupy = pytest.importorskip("cupy")
    model = nn.Linear(3, 2)
    weight = model.weight
    model.to(0)
    assert model.weight is weight and isinstance(weight.data, cupy.ndarray) and weight.device == "cuda:0"
    model.to("cpu")
    assert isinstance(weight.data, np.ndarray)


def test_data_parallel_is_a_pass_through_that_names_ddp() -> None:
    inner = nn.Linear(3, 2)
    with pytest.warns(UserWarning, match="DistributedDataParallel"):
        model = nn.DataParallel(inner)
    assert nn.parallel.DataParallel is nn.DataParallel
    x = pyrt.tensor(np.random.default_rng(0).standard_normal((4, 3)).astype(np.float32))
    np.testing.assert_array_equal(model(x).data, inner(x).data)
    assert list(model.state_dict()) == ["module.weight", "module.bias"]
    assert list(model.parameters()) == list(inner.parameters())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model(x)
    assert not caught  # once, at construction; not every step


@no_gpu
def test_data_parallel_with_absent_device_ids_fails_at_construction() -> None:
    with pytest.raises(RuntimeError, match="CUDA device 1 was requested"):
        nn.DataParallel(nn.Linear(1, 1), device_ids=[1])
