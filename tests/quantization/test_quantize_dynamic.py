"""quantize_dynamic and DynamicQuantizedLinear: what gets swapped, edge shapes, grad mode, errors."""

from __future__ import annotations

import copy

import numpy as np
import pytest

import pyrt
from pyrt import kernels, nn
from pyrt.quantization import (
    DynamicQuantizedLinear,
    QConfig,
    default_dynamic_qconfig,
    per_channel_dynamic_qconfig,
    quantize_dynamic,
)


def emulate(layer: DynamicQuantizedLinear, x: np.ndarray) -> np.ndarray:
    """The layer's math in numpy: activations quantized per batch, exact integer products."""
    rows = x.reshape(-1, x.shape[-1])
    a_q, a_scale, zero_point = kernels.quantize_u8(rows)
    acc = (a_q.astype(np.int64) - zero_point) @ layer.weight.data.astype(np.int64).T
    out = acc * (np.float64(np.float32(a_scale)) * layer.scale.data.astype(np.float64))
    if layer.bias is not None:
        out = out + layer.bias.data
    return out.reshape(*x.shape[:-1], layer.out_features)


@pytest.mark.parametrize("qconfig", [default_dynamic_qconfig, per_channel_dynamic_qconfig])
@pytest.mark.parametrize("shape", [(1, 37), (5, 37), (0, 37), (2, 3, 37)], ids=str)
@pytest.mark.parametrize("bias", [True, False])
def test_edge_shapes_match_emulation(qconfig, shape, bias, rng) -> None:
    # 37 inputs and 19 outputs: neither is a multiple of the kernel's 4x16 tile or its k-step.
    layer = DynamicQuantizedLinear.from_float(nn.Linear(37, 19, bias=bias), qconfig)
    x = rng.standard_normal(shape).astype(np.float32)
    y = layer(pyrt.tensor(x))
    assert y.shape == (*shape[:-1], 19) and y.dtype == np.float32
    np.testing.assert_allclose(y.data, emulate(layer, x), rtol=2e-6, atol=1e-5)


def test_non_contiguous_input(rng) -> None:
    layer = DynamicQuantizedLinear.from_float(nn.Linear(37, 5))
    x = rng.standard_normal((37, 6)).astype(np.float32).T  # a transposed view
    np.testing.assert_allclose(layer(pyrt.tensor(x)).data, emulate(layer, np.ascontiguousarray(x)),
                               rtol=2e-6, atol=1e-5)


def test_per_channel_is_at_least_as_accurate_on_uneven_rows(rng) -> None:
    linear = nn.Linear(64, 32)
    linear.weight.data *= np.geomspace(0.01, 10, 32, dtype=np.float32)[:, None]  # rows of very different size
    x = pyrt.tensor(rng.standard_normal((16, 64)).astype(np.float32))
    exact = linear(x).data
    per_tensor = DynamicQuantizedLinear.from_float(linear)(x).data
    per_channel = DynamicQuantizedLinear.from_float(linear, per_channel_dynamic_qconfig)(x).data
    small_rows = slice(0, 8)  # per tensor, these rows share the big rows' coarse scale
    assert (np.abs(per_channel - exact)[:, small_rows].max()
            < 0.5 * np.abs(per_tensor - exact)[:, small_rows].max())


def test_non_linear_layers_untouched_and_shared_nothing() -> None:
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Dropout(0.1), nn.Linear(16, 4), nn.Sigmoid())
    qmodel = quantize_dynamic(model)
    assert [type(m).__name__ for m in qmodel] == ["DynamicQuantizedLinear", "ReLU", "Dropout",
                                                  "DynamicQuantizedLinear", "Sigmoid"]
    assert qmodel[2].p == 0.1
    assert [type(m) for m in model] == [nn.Linear, nn.ReLU, nn.Dropout, nn.Linear, nn.Sigmoid]
    assert qmodel[1] is not model[1]  # a deep copy
    assert list(qmodel.parameters()) == []  # nothing learnable is left, as in PyTorch


def test_inplace_swaps_in_the_given_model() -> None:
    model = nn.Sequential(nn.Linear(8, 4), nn.ReLU())
    relu = model[1]
    assert quantize_dynamic(model, inplace=True) is model
    assert isinstance(model[0], DynamicQuantizedLinear) and model[1] is relu


def test_nested_model_and_linear_subclass_by_exact_type() -> None:
    class Wide(nn.Linear):
        pass

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.encoder = nn.Sequential(nn.Linear(4, 8), nn.ReLU())
            self.head = Wide(8, 2)

        def forward(self, x):
            return self.head(self.encoder(x))

    qnet = quantize_dynamic(Net())
    assert isinstance(qnet.encoder[0], DynamicQuantizedLinear)
    assert type(qnet.head) is Wide  # PyTorch matches types exactly, subclasses are left alone
    assert qnet(pyrt.ones(3, 4)).shape == (3, 2)


def test_qconfig_spec_by_name_and_precedence() -> None:
    model = nn.Sequential(nn.Linear(4, 8), nn.Sequential(nn.Linear(8, 8), nn.Linear(8, 2)))
    only_first = quantize_dynamic(model, {"0"})
    assert isinstance(only_first[0], DynamicQuantizedLinear)
    assert type(only_first[1][0]) is nn.Linear and type(only_first[1][1]) is nn.Linear
    # A name reaches the whole subtree; a None on a deeper name opts out of it.
    subtree = quantize_dynamic(model, {"1": per_channel_dynamic_qconfig, "1.1": None})
    assert type(subtree[0]) is nn.Linear
    assert subtree[1][0].qscheme == "per_channel_symmetric" and type(subtree[1][1]) is nn.Linear
    # A name beats a type.
    mixed = quantize_dynamic(model, {nn.Linear: per_channel_dynamic_qconfig, "0": default_dynamic_qconfig})
    assert mixed[0].qscheme == "per_tensor_symmetric" and mixed[1][1].qscheme == "per_channel_symmetric"


def test_model_that_is_a_linear() -> None:
    linear = nn.Linear(3, 2)
    assert isinstance(quantize_dynamic(linear), DynamicQuantizedLinear)
    assert isinstance(linear, nn.Linear)


def test_custom_mapping() -> None:
    class Recording(DynamicQuantizedLinear):
        pass

    qmodel = quantize_dynamic(nn.Sequential(nn.Linear(2, 2)), mapping={nn.Linear: Recording})
    assert type(qmodel[0]) is Recording


@pytest.mark.parametrize("dtype", [pyrt.float16, pyrt.int8, "qint8", None])
def test_unsupported_dtype_names_the_supported_ones(dtype) -> None:
    with pytest.raises(ValueError, match=r"supported dtypes: pyrt\.qint8"):
        quantize_dynamic(nn.Linear(2, 2), dtype=dtype)


def test_bad_specs_and_inputs_are_clear_errors() -> None:
    with pytest.raises(TypeError, match="neither a Module type nor"):
        quantize_dynamic(nn.Linear(2, 2), {3})
    with pytest.raises(TypeError, match=r"expected a pyrt\.quantization\.QConfig"):
        quantize_dynamic(nn.Linear(2, 2), {nn.Linear: "per_channel"})
    with pytest.raises(ValueError, match="qscheme 'affine' is not supported"):
        QConfig("affine")
    layer = quantize_dynamic(nn.Linear(4, 2))
    with pytest.raises(ValueError, match=r"input is \(3, 5\) float32; expected \(\.\.\., 4\)"):
        layer(pyrt.ones(3, 5))
    with pytest.raises(TypeError, match="float64"):
        layer(pyrt.ones(3, 4, dtype=pyrt.float64))


def test_backward_through_a_quantized_layer_raises() -> None:
    model = quantize_dynamic(nn.Sequential(nn.Linear(4, 3), nn.ReLU()))
    x = pyrt.ones(2, 4, requires_grad=True)
    y = model(x)
    assert y.requires_grad  # recorded, so a backward cannot silently skip this layer
    with pytest.raises(RuntimeError, match=r"does not support backward.*pyrt\.no_grad"):
        y.sum().backward()
    with pyrt.no_grad():
        assert model(x).grad_fn is None
    assert model(pyrt.ones(2, 4)).grad_fn is None  # no input needs grad: nothing recorded


def test_repr_like_pytorch() -> None:
    model = nn.Sequential(nn.Linear(4, 3, bias=False))
    qmodel = quantize_dynamic(model, {nn.Linear: per_channel_dynamic_qconfig})
    assert repr(qmodel) == (
        "Sequential(\n  (0): DynamicQuantizedLinear(in_features=4, out_features=3, dtype=pyrt.qint8, "
        "qscheme=per_channel_symmetric, bias=False)\n)"
    )


def test_deepcopy_of_a_quantized_model_runs(rng) -> None:
    qmodel = quantize_dynamic(nn.Sequential(nn.Linear(6, 3)))
    x = pyrt.tensor(rng.standard_normal((4, 6)).astype(np.float32))
    expected = qmodel(x).data
    twin = copy.deepcopy(qmodel)
    assert np.array_equal(twin(x).data, expected)
    assert not np.shares_memory(twin[0].weight._codes, qmodel[0].weight._codes)


def test_zero_weight_layer_has_eps_scale_and_zero_output() -> None:
    linear = nn.Linear(5, 2)
    linear.weight.data[...] = 0
    layer = quantize_dynamic(linear, {nn.Linear: per_channel_dynamic_qconfig})
    assert (layer.scale.data > 0).all()
    np.testing.assert_allclose(layer(pyrt.ones(3, 5)).data, np.broadcast_to(linear.bias.data, (3, 2)))


def test_documented_snippet_runs_with_pyrt_names() -> None:
    # The user's document, with only the imports changed from torch to pyrt.
    import pyrt as torch
    from pyrt import nn as tnn
    from pyrt.quantization import quantize_dynamic as qd

    model = tnn.Sequential(tnn.Linear(64, 128), tnn.ReLU(), tnn.Linear(128, 10))
    quantized = qd(model, {tnn.Linear}, dtype=torch.qint8)
    assert quantized(torch.randn(8, 64)).shape == (8, 10)
