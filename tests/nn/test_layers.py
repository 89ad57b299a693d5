"""Layers: Linear init and forward, gradcheck in float64, activations, Dropout, Flatten,
containers, and the initialisers of pyrt.nn.init."""

from __future__ import annotations

import math

import numpy as np
import pytest

import pyrt
from pyrt import nn
from pyrt.nn import init

# --- Linear ----------------------------------------------------------------------


@pytest.mark.parametrize(("fan_in", "fan_out"), [(1, 1), (7, 3), (784, 10), (64, 128)])
def test_linear_default_init_within_pytorch_bounds(fan_in: int, fan_out: int) -> None:
    layer = nn.Linear(fan_in, fan_out)
    bound = 1 / math.sqrt(fan_in)
    assert layer.weight.shape == (fan_out, fan_in) and layer.bias.shape == (fan_out,)
    assert layer.weight.dtype == np.float32
    assert np.abs(layer.weight.data).max() <= bound
    assert np.abs(layer.bias.data).max() <= bound


def test_linear_init_fills_the_range_uniformly() -> None:
    w = nn.Linear(100, 400).weight.data
    bound = 0.1
    # U(-b, b): std b/sqrt(3), and the extremes come close to +-b.
    assert abs(w.std() - bound / math.sqrt(3)) < 2e-3
    assert w.max() > 0.99 * bound and w.min() < -0.99 * bound


def test_linear_init_repeatable_under_manual_seed() -> None:
    pyrt.manual_seed(7)
    a = nn.Linear(5, 4)
    pyrt.manual_seed(7)
    b = nn.Linear(5, 4)
    np.testing.assert_array_equal(a.weight.data, b.weight.data)
    np.testing.assert_array_equal(a.bias.data, b.bias.data)


def test_linear_forward_matches_numpy(rng: np.random.Generator) -> None:
    layer = nn.Linear(13, 5)
    x = rng.standard_normal((7, 13)).astype(np.float32)
    expected = x @ layer.weight.data.T + layer.bias.data
    np.testing.assert_allclose(layer(pyrt.tensor(x)).data, expected, rtol=1e-5, atol=1e-5)


def test_linear_forward_batched_leading_dims(rng: np.random.Generator) -> None:
    layer = nn.Linear(4, 3)
    x = rng.standard_normal((2, 5, 4)).astype(np.float32)
    out = layer(pyrt.tensor(x))
    assert out.shape == (2, 5, 3)
    np.testing.assert_allclose(out.data, x @ layer.weight.data.T + layer.bias.data, rtol=1e-5,
                               atol=1e-5)


def test_linear_without_bias() -> None:
    layer = nn.Linear(3, 2, bias=False)
    assert layer.bias is None and [n for n, _ in layer.named_parameters()] == ["weight"]
    np.testing.assert_allclose(layer(pyrt.ones(1, 3)).data, layer.weight.data.sum(1)[None],
                               rtol=1e-6)


def test_linear_wrong_input_width_names_shapes() -> None:
    with pytest.raises(ValueError, match=r"\(2, 5\) float32"):
        nn.Linear(4, 3)(pyrt.ones(2, 5))


def test_linear_zero_sized_batch_and_outputs() -> None:
    assert nn.Linear(3, 2)(pyrt.ones(0, 3)).shape == (0, 2)
    assert nn.Linear(3, 0)(pyrt.ones(2, 3)).shape == (2, 0)


def test_linear_zero_in_features_init() -> None:
    layer = nn.Linear(0, 3)
    assert layer.weight.shape == (3, 0)
    assert not layer.bias.data.any()  # bound 0 when there is no input


def test_linear_zero_in_features_forward_and_backward() -> None:
    layer = nn.Linear(0, 3)
    x = pyrt.ones(2, 0, requires_grad=True)
    out = layer(x)
    assert out.shape == (2, 3)
    assert (out.data == layer.bias.data).all()  # an empty sum plus the bias
    out.sum().backward()
    assert x.grad.shape == (2, 0) and layer.weight.grad.shape == (3, 0)
    assert layer.bias.grad.tolist() == [2.0, 2.0, 2.0]


def test_linear_negative_features_rejected() -> None:
    with pytest.raises(ValueError, match="in_features=-1"):
        nn.Linear(-1, 2)


@pytest.mark.parametrize("make_float64", ["to", "dtype"])
def test_linear_gradcheck_float64(make_float64: str) -> None:
    layer = (nn.Linear(4, 3).to(pyrt.float64) if make_float64 == "to"
             else nn.Linear(4, 3, dtype=pyrt.float64))
    assert layer.weight.dtype == np.float64 and layer.bias.dtype == np.float64
    x = pyrt.tensor(np.random.default_rng(0).standard_normal((5, 4)), requires_grad=True)
    assert pyrt.gradcheck(lambda x, w, b: layer(x), [x, layer.weight, layer.bias])


def test_mlp_gradcheck_float64() -> None:
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2), nn.Sigmoid()).double()
    x = pyrt.tensor(np.random.default_rng(1).standard_normal((2, 3)), requires_grad=True)
    assert pyrt.gradcheck(lambda x, *params: model(x), [x, *model.parameters()])


def test_linear_backward_matches_numpy(rng: np.random.Generator) -> None:
    layer = nn.Linear(6, 4)
    x = rng.standard_normal((3, 6)).astype(np.float32)
    layer(pyrt.tensor(x)).sum().backward()
    np.testing.assert_allclose(layer.weight.grad.data, np.ones((3, 4)).T @ x, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(layer.bias.grad.data, np.full(4, 3.0), rtol=1e-6)


# --- activations, Dropout, Flatten, Identity -------------------------------------------

def test_activation_modules_match_numpy() -> None:
    x = np.array([-2.0, -0.5, 0.0, 0.5, 2.0], dtype=np.float32)
    t = pyrt.tensor(x)
    np.testing.assert_allclose(nn.ReLU()(t).data, np.maximum(x, 0))
    np.testing.assert_allclose(nn.Sigmoid()(t).data, 1 / (1 + np.exp(-x)), rtol=1e-6)
    np.testing.assert_allclose(nn.Tanh()(t).data, np.tanh(x), rtol=1e-6)
    e = np.exp(x - x.max())
    np.testing.assert_allclose(nn.Softmax(dim=0)(t).data, e / e.sum(), rtol=1e-6)
    np.testing.assert_allclose(nn.LogSoftmax(dim=0)(t).data, np.log(e / e.sum()), rtol=1e-5)


def test_dropout_train_zeroes_and_scales_eval_identity() -> None:
    layer = nn.Dropout(0.25)
    out = layer(pyrt.ones(10000)).data
    kept = out != 0
    np.testing.assert_allclose(out[kept], 1 / 0.75, rtol=1e-6)
    assert abs(kept.mean() - 0.75) < 0.02
    layer.eval()
    np.testing.assert_array_equal(layer(pyrt.ones(5)).data, np.ones(5))


def test_dropout_edges() -> None:
    assert not nn.Dropout(1.0)(pyrt.ones(4)).data.any()
    np.testing.assert_array_equal(nn.Dropout(0.0)(pyrt.ones(4)).data, np.ones(4))
    with pytest.raises(ValueError, match="between 0 and 1"):
        nn.Dropout(1.5)


def test_dropout_repeatable_under_manual_seed() -> None:
    pyrt.manual_seed(3)
    a = nn.Dropout(0.5)(pyrt.ones(50)).data
    pyrt.manual_seed(3)
    b = nn.Dropout(0.5)(pyrt.ones(50)).data
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(("start", "end", "shape"),
                         [(1, -1, (2, 60)), (0, -1, (120,)), (1, 2, (2, 12, 5)), (2, 3, (2, 3, 20))])
def test_flatten(start: int, end: int, shape: tuple[int, ...]) -> None:
    assert nn.Flatten(start, end)(pyrt.zeros(2, 3, 4, 5)).shape == shape


def test_identity_accepts_any_arguments() -> None:
    x = pyrt.ones(2)
    assert nn.Identity(3, foo=1)(x) is x


# --- containers ------------------------------------------------------------------------

def test_sequential_indexing_len_iter_append() -> None:
    net = nn.Sequential(nn.Linear(2, 3), nn.ReLU())
    assert len(net) == 2 and isinstance(net[0], nn.Linear) and isinstance(net[-1], nn.ReLU)
    assert [type(m).__name__ for m in net] == ["Linear", "ReLU"]
    net.append(nn.Linear(3, 1))
    assert net(pyrt.ones(4, 2)).shape == (4, 1)
    head = net[:2]
    assert isinstance(head, nn.Sequential) and len(head) == 2 and head[0] is net[0]
    with pytest.raises(IndexError, match="out of range"):
        _ = net[3]


def test_sequential_from_ordered_dict_and_setitem() -> None:
    from collections import OrderedDict

    net = nn.Sequential(OrderedDict([("fc", nn.Linear(2, 2)), ("act", nn.ReLU())]))
    assert list(net.state_dict()) == ["fc.weight", "fc.bias"]
    net[1] = nn.Tanh()
    assert isinstance(net.act, nn.Tanh)
    del net[1]
    assert len(net) == 1


def test_modulelist_registers_and_renumbers() -> None:
    layers = nn.ModuleList([nn.Linear(2, 2), nn.Linear(2, 2)])
    layers.append(nn.Linear(2, 2))
    layers.insert(0, nn.ReLU())
    assert len(layers) == 4 and isinstance(layers[0], nn.ReLU)
    assert len(list(layers.parameters())) == 6
    del layers[0]
    assert list(layers._modules) == ["0", "1", "2"]
    layers += [nn.Tanh()]
    assert isinstance(layers[-1], nn.Tanh) and len(layers[1:]) == 3


# --- init --------------------------------------------------------------------------------

def test_calculate_gain() -> None:
    assert init.calculate_gain("linear") == 1.0
    assert init.calculate_gain("relu") == pytest.approx(math.sqrt(2))
    assert init.calculate_gain("tanh") == pytest.approx(5 / 3)
    assert init.calculate_gain("leaky_relu", math.sqrt(5)) == pytest.approx(math.sqrt(1 / 3))
    with pytest.raises(ValueError, match="Unsupported nonlinearity"):
        init.calculate_gain("swish")


def test_uniform_normal_constant_fill_in_place() -> None:
    t = pyrt.zeros(1000)
    array = t.data
    init.uniform_(t, -2.0, 3.0)
    assert t.data is array and array.min() >= -2 and array.max() < 3
    init.normal_(t, 1.0, 0.5)
    assert abs(array.mean() - 1.0) < 0.1 and abs(array.std() - 0.5) < 0.05
    init.constant_(t, 0.25)
    assert (array == 0.25).all()
    assert not init.zeros_(t).data.any() and (init.ones_(t).data == 1).all()


def test_xavier_and_kaiming_bounds() -> None:
    w = pyrt.empty(30, 20)
    init.xavier_uniform_(w, gain=2.0)
    assert np.abs(w.data).max() <= 2.0 * math.sqrt(6 / 50)
    init.kaiming_uniform_(w, nonlinearity="relu")
    assert np.abs(w.data).max() <= math.sqrt(2) * math.sqrt(3 / 20)
    init.kaiming_uniform_(w, mode="fan_out", nonlinearity="relu")
    assert np.abs(w.data).max() <= math.sqrt(2) * math.sqrt(3 / 30)
    init.kaiming_normal_(w, nonlinearity="relu")
    assert abs(w.data.std() - math.sqrt(2 / 20)) < 0.03
    init.xavier_normal_(w)
    assert abs(w.data.std() - math.sqrt(2 / 50)) < 0.02


def test_init_keeps_dtype_and_works_on_parameters() -> None:
    p = nn.Parameter(pyrt.zeros(3, 4, dtype=pyrt.float64))
    init.kaiming_uniform_(p)  # no "in place on a tensor that requires grad" error
    assert p.dtype == np.float64 and p.data.any()


def test_fan_needs_two_dims() -> None:
    with pytest.raises(ValueError, match="fewer than 2 dimensions"):
        init.xavier_uniform_(pyrt.empty(5))
    with pytest.raises(ValueError, match="Mode"):
        init.kaiming_uniform_(pyrt.empty(2, 2), mode="fan")
