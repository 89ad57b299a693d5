"""quantize_dynamic's outputs stay within PyTorch's own int8 error of the float model.

For each MLP the same float weights go into pyrt and into torch; torch's
``torch.ao.quantization.quantize_dynamic`` gives the reference error, and
pyrt's error against the float output must be at most 1.5x that (it is
usually equal: the weight codes and activation parameters follow the same rules).
"""

from __future__ import annotations

import itertools
import warnings

import numpy as np
import pytest

import pyrt
from pyrt import nn
from pyrt.datasets import load_digits
from pyrt.quantization import per_channel_dynamic_qconfig, quantize_dynamic

torch = pytest.importorskip("torch")


def mlp(sizes: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (fan_in, fan_out) in enumerate(itertools.pairwise(sizes)):
        layers.append(nn.Linear(fan_in, fan_out))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def torch_copy(model: nn.Sequential):
    layers = []
    for layer in model:
        if isinstance(layer, nn.Linear):
            t = torch.nn.Linear(layer.in_features, layer.out_features)
            t.weight.data = torch.from_numpy(layer.weight.data.copy())
            t.bias.data = torch.from_numpy(layer.bias.data.copy())
            layers.append(t)
        else:
            layers.append(torch.nn.ReLU())
    return torch.nn.Sequential(*layers)


def torch_quantized(model, per_channel: bool):
    qconfig = torch.ao.quantization.per_channel_dynamic_qconfig if per_channel else None
    spec = {torch.nn.Linear: qconfig} if per_channel else {torch.nn.Linear}
    with warnings.catch_warnings():  # torch.ao.quantization warns that it moves to torchao
        warnings.simplefilter("ignore")
        return torch.ao.quantization.quantize_dynamic(model, spec, dtype=torch.qint8)


def inputs(sizes: list[int], batch: int, rng) -> np.ndarray:
    if sizes[0] == 64:  # the digits MLP sees real digits
        return load_digits("test")[0][:batch]
    return rng.random((batch, sizes[0]), dtype=np.float32)  # MNIST-like pixels in [0, 1)


def errors(sizes, batch, per_channel, rng):
    model = mlp(sizes)
    x = inputs(sizes, batch, rng)
    spec = {nn.Linear: per_channel_dynamic_qconfig} if per_channel else {nn.Linear}
    ours = quantize_dynamic(model, spec, dtype=pyrt.qint8)(pyrt.tensor(x)).data
    reference = torch_copy(model)
    with torch.no_grad():
        exact = reference(torch.from_numpy(x)).numpy()
        theirs = torch_quantized(reference, per_channel)(torch.from_numpy(x)).numpy()
    return ours, theirs, exact


@pytest.mark.parametrize("sizes", [[64, 128, 10], [784, 1024, 512, 10]], ids=["digits", "mnist"])
@pytest.mark.parametrize("per_channel", [False, True], ids=["per_tensor", "per_channel"])
@pytest.mark.parametrize("batch", [1, 64])
def test_error_within_torch_int8_error(sizes, per_channel, batch, rng) -> None:
    ours, theirs, exact = errors(sizes, batch, per_channel, rng)
    our_error = np.abs(ours - exact).max()
    torch_error = np.abs(theirs - exact).max()
    assert torch_error > 0  # the comparison means something only if int8 changed the output
    assert our_error <= 1.5 * torch_error, (our_error, torch_error)
    # Close to torch's quantized output itself, not just equally far from float.
    np.testing.assert_allclose(ours, theirs, atol=torch_error, rtol=0)


def test_weight_codes_equal_torch(rng) -> None:
    model = mlp([784, 1024, 10])
    for per_channel in (False, True):
        spec = {nn.Linear: per_channel_dynamic_qconfig} if per_channel else {nn.Linear}
        ours = quantize_dynamic(model, spec)[0]
        theirs = torch_quantized(torch_copy(model), per_channel)[0].weight()
        assert np.array_equal(ours.weight.data, theirs.int_repr().numpy())
        scales = theirs.q_per_channel_scales().numpy() if per_channel else np.array([theirs.q_scale()])
        np.testing.assert_array_equal(ours.scale.data, scales.astype(np.float32))
