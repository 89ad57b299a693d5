"""A quantized model's state dict holds int8 weights, saves ~4x smaller, and loads back exactly."""

from __future__ import annotations

import os

import numpy as np
import pytest

import pyrt
from pyrt import nn
from pyrt.quantization import Int8Weight, per_channel_dynamic_qconfig, quantize_dynamic


def mnist_mlp() -> nn.Sequential:
    return nn.Sequential(nn.Linear(784, 1024), nn.ReLU(), nn.Linear(1024, 512), nn.ReLU(), nn.Linear(512, 10))


@pytest.mark.parametrize("qconfig", [None, per_channel_dynamic_qconfig], ids=["per_tensor", "per_channel"])
def test_state_dict_holds_int8_weights_scales_and_bias(qconfig) -> None:
    spec = {nn.Linear} if qconfig is None else {nn.Linear: qconfig}
    state = quantize_dynamic(nn.Sequential(nn.Linear(6, 4)), spec).state_dict()
    assert list(state) == ["0.weight", "0.scale", "0.bias"]
    assert state["0.weight"].dtype == np.int8 and state["0.weight"].shape == (4, 6)
    assert state["0.scale"].dtype == np.float32
    assert state["0.scale"].shape == ((1,) if qconfig is None else (4,))  # per tensor: one scale
    assert state["0.bias"].dtype == np.float32


@pytest.mark.parametrize("qconfig", [None, per_channel_dynamic_qconfig], ids=["per_tensor", "per_channel"])
def test_save_load_round_trip_is_exact_and_4x_smaller(qconfig, tmp_path, rng) -> None:
    model = mnist_mlp()
    spec = {nn.Linear} if qconfig is None else {nn.Linear: qconfig}
    qmodel = quantize_dynamic(model, spec, dtype=pyrt.qint8)
    pyrt.save(model.state_dict(), tmp_path / "fp32.pt")
    pyrt.save(qmodel.state_dict(), tmp_path / "int8.pt")
    ratio = os.path.getsize(tmp_path / "fp32.pt") / os.path.getsize(tmp_path / "int8.pt")
    assert ratio >= 3.5, ratio

    # A freshly quantized model of the same shape (different weights) takes the checkpoint.
    fresh = quantize_dynamic(mnist_mlp(), spec, dtype=pyrt.qint8)
    x = pyrt.tensor(rng.random((8, 784), dtype=np.float32))
    fresh(x)  # packs the fresh weights, so the load below must invalidate that packed copy
    loaded = pyrt.load(tmp_path / "int8.pt")
    assert loaded["0.weight"].dtype == np.int8
    fresh.load_state_dict(loaded)
    for name, value in qmodel.state_dict().items():
        assert np.array_equal(fresh.state_dict()[name].data, value.data), name
    assert np.array_equal(fresh(x).data, qmodel(x).data)


def test_loading_a_per_channel_checkpoint_into_per_tensor_model_is_a_shape_error() -> None:
    per_channel = quantize_dynamic(nn.Linear(4, 3), {nn.Linear: per_channel_dynamic_qconfig})
    with pytest.raises(RuntimeError, match=r"size mismatch for scale"):
        quantize_dynamic(nn.Linear(4, 3)).load_state_dict(per_channel.state_dict())


def test_state_dict_is_a_copy_and_keeps_the_packed_weight() -> None:
    layer = quantize_dynamic(nn.Linear(4, 3))
    layer(pyrt.ones(1, 4))
    assert layer.weight.is_packed()
    state = layer.state_dict()
    state["weight"].data[...] = 0  # as in PyTorch, editing the state dict leaves the layer alone
    assert layer.weight.is_packed() and layer.weight.data.any()


def test_writes_through_data_repack_on_next_forward() -> None:
    layer = quantize_dynamic(nn.Linear(3, 2, bias=False))
    layer(pyrt.ones(1, 3))
    layer.weight.data[...] = [[1, 2, 3], [4, 5, 6]]  # any write goes through .data
    # Ones quantize exactly (scale 1/127, code 127), so the output is scale * row sums.
    np.testing.assert_allclose(layer(pyrt.ones(1, 3)).data, layer.scale.data * np.array([[6, 15]]), rtol=1e-6)


def test_int8_weight_rejects_other_dtypes() -> None:
    with pytest.raises(TypeError, match="2-D int8"):
        Int8Weight(np.ones((2, 2), np.float32))
