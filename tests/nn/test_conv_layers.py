"""Conv2d, pooling and normalisation layers: PyTorch parity of weights, state and results.

Weights go from a torch module into the pyrt one through ``load_state_dict``
(same keys, same shapes), then outputs, gradients and running statistics are
compared. The normalisation ops get their finite-difference checks here too.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import pyrt
import pyrt.nn.functional as F
from pyrt import nn


def _copy_from_torch(module: nn.Module, torch_module) -> None:
    module.load_state_dict({k: v.detach().numpy() for k, v in torch_module.state_dict().items()})


def _compare(module: nn.Module, torch_module, x: np.ndarray, rtol: float = 1e-5) -> None:
    torch = pytest.importorskip("torch")
    ours = pyrt.tensor(x, requires_grad=True)
    out = module(ours)
    grad = np.random.default_rng(1).standard_normal(out.shape).astype(x.dtype)
    out.backward(grad)
    theirs = torch.tensor(x, requires_grad=True)
    t_out = torch_module(theirs)
    t_out.backward(torch.tensor(grad))
    np.testing.assert_allclose(out.data, t_out.detach().numpy(), rtol=rtol, atol=rtol)
    np.testing.assert_allclose(ours.grad.data, theirs.grad.numpy(), rtol=rtol, atol=rtol)
    t_params = dict(torch_module.named_parameters())
    for name, param in module.named_parameters():
        np.testing.assert_allclose(param.grad.data, t_params[name].grad.numpy(), rtol=rtol,
                                   atol=rtol, err_msg=name)


# --- Conv2d ---------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs", [
    {}, {"stride": 2, "padding": 1}, {"kernel_size": (2, 3), "dilation": (2, 1)},
    {"groups": 2, "bias": False},
])
def test_conv2d_matches_torch(kwargs):
    torch = pytest.importorskip("torch")
    kwargs = {"kernel_size": 3, **kwargs}
    torch.manual_seed(0)
    theirs = torch.nn.Conv2d(4, 6, **kwargs)
    ours = nn.Conv2d(4, 6, **kwargs)
    assert repr(ours) == repr(theirs)
    assert [(k, v.shape) for k, v in ours.state_dict().items()] == \
        [(k, tuple(v.shape)) for k, v in theirs.state_dict().items()]
    _copy_from_torch(ours, theirs)
    x = np.random.default_rng(0).standard_normal((3, 4, 9, 8)).astype(np.float32)
    _compare(ours, theirs, x, rtol=1e-4)


def test_conv2d_default_init_is_uniform_in_one_over_sqrt_fan_in():
    pyrt.manual_seed(0)
    conv = nn.Conv2d(8, 16, (3, 5), groups=2)
    bound = 1 / math.sqrt(8 // 2 * 3 * 5)
    assert conv.weight.shape == (16, 4, 3, 5) and conv.weight.dtype == np.float32
    for p in (conv.weight, conv.bias):
        assert np.abs(p.data).max() <= bound
        assert np.abs(p.data).max() > 0.8 * bound  # spread over the range, not clustered
    pyrt.manual_seed(0)
    assert np.array_equal(nn.Conv2d(8, 16, (3, 5), groups=2).weight.data, conv.weight.data)


def test_conv2d_constructor_errors():
    with pytest.raises(ValueError, match="divisible by groups=3"):
        nn.Conv2d(4, 6, 3, groups=3)
    with pytest.raises(ValueError, match="channels must be positive"):
        nn.Conv2d(0, 6, 3)
    with pytest.raises(ValueError, match="kernel_size must be >= 1"):
        nn.Conv2d(1, 1, 0)
    with pytest.raises(ValueError, match=r"input is \(2, 5, 8, 8\) float32"):
        nn.Conv2d(3, 4, 3)(pyrt.zeros(2, 5, 8, 8))


# --- pooling -------------------------------------------------------------------------

def test_pool_layers_match_torch():
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(0).standard_normal((2, 3, 9, 9)).astype(np.float32)
    for ours, theirs in [(nn.MaxPool2d(2), torch.nn.MaxPool2d(2)),
                         (nn.MaxPool2d(3, 2, 1), torch.nn.MaxPool2d(3, 2, 1)),
                         (nn.AvgPool2d(2), torch.nn.AvgPool2d(2)),
                         (nn.AvgPool2d(3, 2, 1, count_include_pad=False),
                          torch.nn.AvgPool2d(3, 2, 1, count_include_pad=False))]:
        _compare(ours, theirs, x)
    assert repr(nn.AvgPool2d(2)) == repr(torch.nn.AvgPool2d(2))


def test_small_cnn_matches_torch_end_to_end():
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    theirs = torch.nn.Sequential(
        torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
        torch.nn.MaxPool2d(2), torch.nn.Conv2d(8, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(),
        torch.nn.Linear(16, 10))
    ours = nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(16, 10))
    _copy_from_torch(ours, theirs)
    x = np.random.default_rng(0).standard_normal((5, 1, 8, 8)).astype(np.float32)
    _compare(ours, theirs, x, rtol=1e-4)


# --- BatchNorm -----------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs", [
    {}, {"momentum": None}, {"affine": False}, {"track_running_stats": False},
    {"momentum": 0.3, "eps": 1e-3}, {"bias": False},
])
def test_batchnorm2d_train_then_eval_matches_torch(kwargs):
    torch = pytest.importorskip("torch")
    theirs = torch.nn.BatchNorm2d(3, **kwargs).double()
    ours = nn.BatchNorm2d(3, **kwargs).double()
    assert repr(ours) == repr(theirs)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    if ours.affine:
        rng = np.random.default_rng(2)
        with torch.no_grad():
            theirs.weight.copy_(torch.tensor(rng.standard_normal(3)))
            if theirs.bias is not None:
                theirs.bias.copy_(torch.tensor(rng.standard_normal(3)))
    _copy_from_torch(ours, theirs)
    rng = np.random.default_rng(0)
    for _ in range(3):
        ours.zero_grad()
        theirs.zero_grad()
        _compare(ours, theirs, rng.standard_normal((4, 3, 5, 6)) * 2 + 1, rtol=1e-10)
    for name, buffer in theirs.state_dict().items():
        np.testing.assert_allclose(ours.state_dict()[name].data, buffer.numpy(), rtol=1e-12)
    ours.eval()
    theirs.eval()
    ours.zero_grad()
    theirs.zero_grad()
    _compare(ours, theirs, rng.standard_normal((2, 3, 4, 4)), rtol=1e-10)


def test_batchnorm1d_matches_torch():
    torch = pytest.importorskip("torch")
    for shape in [(8, 5), (4, 5, 7)]:
        theirs = torch.nn.BatchNorm1d(5).double()
        ours = nn.BatchNorm1d(5).double()
        _compare(ours, theirs, np.random.default_rng(0).standard_normal(shape), rtol=1e-10)
        np.testing.assert_allclose(ours.running_var.data, theirs.running_var.numpy())


def test_batchnorm_buffers_and_running_stats():
    bn = nn.BatchNorm2d(2)
    assert [n for n, _ in bn.named_buffers()] == ["running_mean", "running_var",
                                                  "num_batches_tracked"]
    assert bn.num_batches_tracked.dtype == np.int64 and bn.num_batches_tracked.shape == ()
    x = np.random.default_rng(0).standard_normal((6, 2, 3, 3)).astype(np.float32)
    bn(pyrt.tensor(x))
    mean = x.mean(axis=(0, 2, 3))
    unbiased = x.var(axis=(0, 2, 3), ddof=1)
    np.testing.assert_allclose(bn.running_mean.data, 0.1 * mean, rtol=1e-5)
    np.testing.assert_allclose(bn.running_var.data, 0.9 + 0.1 * unbiased, rtol=1e-5)
    assert int(bn.num_batches_tracked.data) == 1
    bn.eval()
    before = bn.running_mean.data.copy()
    bn(pyrt.tensor(x))  # evaluation leaves the statistics alone
    assert np.array_equal(bn.running_mean.data, before)
    bn.reset_running_stats()
    assert bn.running_mean.data.tolist() == [0.0, 0.0] and int(bn.num_batches_tracked.data) == 0


def test_batchnorm_errors():
    with pytest.raises(ValueError, match=r"expected 4D input, got \(2, 3, 4\) float32"):
        nn.BatchNorm2d(3)(pyrt.zeros(2, 3, 4))
    with pytest.raises(ValueError, match=r"num_features is 4"):
        nn.BatchNorm2d(4)(pyrt.zeros(2, 3, 4, 4))
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        nn.BatchNorm1d(3)(pyrt.zeros(1, 3))
    with pytest.raises(ValueError, match="required when not training"):
        F.batch_norm(pyrt.zeros(2, 3), None, None, training=False)


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("shape", [(3, 2, 4, 3), (5, 3)])
def test_batch_norm_gradcheck(training, affine, shape):
    rng = np.random.default_rng(0)
    channels = shape[1]
    x = pyrt.tensor(rng.standard_normal(shape), requires_grad=True)
    weight = pyrt.tensor(rng.standard_normal(channels), requires_grad=True)
    bias = pyrt.tensor(rng.standard_normal(channels), requires_grad=True)
    mean = pyrt.tensor(rng.standard_normal(channels))
    var = pyrt.tensor(rng.random(channels) + 0.5)

    def fn(x, weight, bias):
        # Copies of the running statistics: the op updates them in place.
        return F.batch_norm(x, pyrt.tensor(mean.data.copy()), pyrt.tensor(var.data.copy()),
                            weight if affine else None, bias if affine else None, training)

    assert pyrt.gradcheck(fn, [x, weight, bias])


# --- LayerNorm ---------------------------------------------------------------------------

@pytest.mark.parametrize(("shape", "normalized"), [((4, 6), 6), ((2, 3, 4, 5), (4, 5))])
@pytest.mark.parametrize("affine", [True, False])
def test_layernorm_matches_torch(shape, normalized, affine):
    torch = pytest.importorskip("torch")
    theirs = torch.nn.LayerNorm(normalized, elementwise_affine=affine).double()
    ours = nn.LayerNorm(normalized, elementwise_affine=affine).double()
    assert repr(ours) == repr(theirs)
    if affine:
        rng = np.random.default_rng(3)
        with torch.no_grad():
            theirs.weight.copy_(torch.tensor(rng.standard_normal(theirs.weight.shape)))
            theirs.bias.copy_(torch.tensor(rng.standard_normal(theirs.bias.shape)))
        _copy_from_torch(ours, theirs)
    _compare(ours, theirs, np.random.default_rng(0).standard_normal(shape) * 3 - 1, rtol=1e-10)


@pytest.mark.parametrize(("shape", "normalized"), [((3, 5), (5,)), ((2, 3, 2, 3), (2, 3))])
@pytest.mark.parametrize("affine", [True, False])
def test_layer_norm_gradcheck(shape, normalized, affine):
    rng = np.random.default_rng(0)
    x = pyrt.tensor(rng.standard_normal(shape), requires_grad=True)
    weight = pyrt.tensor(rng.standard_normal(normalized), requires_grad=True)
    bias = pyrt.tensor(rng.standard_normal(normalized), requires_grad=True)
    assert pyrt.gradcheck(
        lambda x, w, b: F.layer_norm(x, normalized, w if affine else None, b if affine else None),
        [x, weight, bias])


def test_layer_norm_errors():
    with pytest.raises(ValueError, match=r"input is \(2, 3\) float32 but normalized_shape is \(4,\)"):
        F.layer_norm(pyrt.zeros(2, 3), 4)
    with pytest.raises(ValueError, match=r"weight is \(3,\) float32, expected \(2, 3\)"):
        F.layer_norm(pyrt.zeros(4, 2, 3), (2, 3), pyrt.ones(3))
