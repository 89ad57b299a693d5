"""pyrt.nn.utils.prune against torch.nn.utils.prune: masks, state, outputs, errors, training.

Weights are built with distinct magnitudes (no ties), so torch's topk and our
selection must pick the same entries and channels.
"""

from __future__ import annotations

import importlib
import math
from typing import Any

import numpy as np
import pytest

import pyrt
import pyrt.nn.utils.prune as prune_module
from pyrt import nn
from pyrt.nn.utils import prune


def _torch() -> Any:
    torch = pytest.importorskip("torch")
    importlib.import_module("torch.nn.utils.prune")  # not imported by `import torch`
    return torch


def _distinct(shape: tuple[int, ...], seed: int) -> np.ndarray:
    """Values with pairwise distinct magnitudes and random signs."""
    rng = np.random.default_rng(seed)
    size = int(np.prod(shape))
    magnitudes = (rng.permutation(size) + 1).astype(np.float32) / size
    return (magnitudes * rng.choice([-1.0, 1.0], size)).astype(np.float32).reshape(shape)


def _pair(kind: str, seed: int = 0) -> tuple[nn.Module, Any]:
    """The same layer in pyrt and torch, with equal weights and biases."""
    torch = _torch()
    if kind == "linear":
        ours, theirs = nn.Linear(6, 5), torch.nn.Linear(6, 5)
    else:
        ours, theirs = nn.Conv2d(3, 4, 3), torch.nn.Conv2d(3, 4, 3)
    weight = _distinct(tuple(theirs.weight.shape), seed)
    bias = _distinct(tuple(theirs.bias.shape), seed + 1)
    ours.weight.data[...] = weight
    ours.bias.data[...] = bias
    with torch.no_grad():
        theirs.weight.copy_(torch.from_numpy(weight))
        theirs.bias.copy_(torch.from_numpy(bias))
    return ours, theirs


def _input(kind: str) -> np.ndarray:
    rng = np.random.default_rng(7)
    shape = (4, 6) if kind == "linear" else (2, 3, 6, 6)
    return rng.standard_normal(shape).astype(np.float32)


def _assert_same(ours: nn.Module, theirs: Any, kind: str, name: str = "weight") -> None:
    torch = _torch()
    assert list(ours.state_dict()) == list(theirs.state_dict())
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in theirs.named_parameters()]
    assert [n for n, _ in ours.named_buffers()] == [n for n, _ in theirs.named_buffers()]
    for key, value in theirs.state_dict().items():
        np.testing.assert_array_equal(ours.state_dict()[key].numpy(), value.numpy(), err_msg=key)
    assert isinstance(ours._parameters[name + "_orig"], nn.Parameter)
    assert name not in ours._parameters
    x = _input(kind)
    ours_out = ours(pyrt.tensor(x)).detach().numpy()
    with torch.no_grad():
        theirs_out = theirs(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(ours_out, theirs_out, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(getattr(ours, name).detach().numpy(),
                                  getattr(theirs, name).detach().numpy())
    assert prune.is_pruned(ours) and torch.nn.utils.prune.is_pruned(theirs)


@pytest.mark.parametrize("kind", ["linear", "conv"])
@pytest.mark.parametrize("amount", [0, 1, 7, 0.0, 0.3, 0.5, 0.9, 1.0])
def test_l1_unstructured_matches_torch(kind: str, amount: float) -> None:
    torch = _torch()
    ours, theirs = _pair(kind)
    result = prune.l1_unstructured(ours, name="weight", amount=amount)
    torch.nn.utils.prune.l1_unstructured(theirs, name="weight", amount=amount)
    assert result is ours
    _assert_same(ours, theirs, kind)


def test_l1_unstructured_on_bias_and_with_importance_scores() -> None:
    torch = _torch()
    ours, theirs = _pair("linear")
    scores = _distinct((5, 6), seed=3)
    prune.l1_unstructured(ours, "weight", amount=10, importance_scores=pyrt.tensor(scores))
    torch.nn.utils.prune.l1_unstructured(theirs, "weight", amount=10,
                                         importance_scores=torch.from_numpy(scores))
    prune.l1_unstructured(ours, "bias", amount=2)
    torch.nn.utils.prune.l1_unstructured(theirs, "bias", amount=2)
    _assert_same(ours, theirs, "linear")
    _assert_same(ours, theirs, "linear", name="bias")


@pytest.mark.parametrize("kind", ["linear", "conv"])
@pytest.mark.parametrize("n", [1, 2, math.inf, -math.inf, 0.5, "fro"])
@pytest.mark.parametrize("dim", [0, 1, -1])
@pytest.mark.parametrize("amount", [1, 0.5])
def test_ln_structured_matches_torch(kind: str, n: Any, dim: int, amount: float) -> None:
    torch = _torch()
    ours, theirs = _pair(kind, seed=11)
    if kind == "conv" and n == "fro":
        # torch.norm's 'fro' takes at most two reduced dims; a 4-D weight has three.
        with pytest.raises(RuntimeError):
            torch.nn.utils.prune.ln_structured(theirs, "weight", amount=amount, n=n, dim=dim)
        with pytest.raises(RuntimeError):
            prune.ln_structured(ours, "weight", amount=amount, n=n, dim=dim)
        assert not prune.is_pruned(ours) and "weight" in ours._parameters
        return
    prune.ln_structured(ours, "weight", amount=amount, n=n, dim=dim)
    torch.nn.utils.prune.ln_structured(theirs, "weight", amount=amount, n=n, dim=dim)
    _assert_same(ours, theirs, kind)


def test_ln_structured_removes_whole_output_channels() -> None:
    conv = nn.Conv2d(3, 8, 3)
    prune.ln_structured(conv, "weight", amount=0.5, n=2, dim=0)
    channel_alive = conv.weight_mask.data.reshape(8, -1)
    assert sorted(channel_alive.min(axis=1).tolist()) == [0.0] * 4 + [1.0] * 4
    assert (channel_alive.min(axis=1) == channel_alive.max(axis=1)).all()


def test_ln_structured_nuclear_norm_matches_torch() -> None:
    torch = _torch()
    values = _distinct((5, 3, 4), seed=5)
    ours = prune.LnStructured(amount=2, n="nuc", dim=0).compute_mask(pyrt.tensor(values), pyrt.ones(5, 3, 4))
    theirs = torch.nn.utils.prune.LnStructured(amount=2, n="nuc", dim=0).compute_mask(
        torch.from_numpy(values), torch.ones(5, 3, 4))
    np.testing.assert_array_equal(ours.numpy(), theirs.numpy())
    # 'nuc' needs exactly two reduced dims, as in torch.
    with pytest.raises(RuntimeError, match="2-tuple"):
        prune.ln_structured(nn.Linear(3, 3), "weight", amount=1, n="nuc", dim=0)


def test_structured_pruning_errors_match_torch() -> None:
    torch = _torch()
    for args, error in ((("bias", 1, 2, 0), ValueError), (("weight", 1, 2, 2), IndexError)):
        ours, theirs = _pair("linear")
        with pytest.raises(error) as theirs_error:
            torch.nn.utils.prune.ln_structured(theirs, *args)
        with pytest.raises(error) as ours_error:
            prune.ln_structured(ours, *args)
        # The same text, with pyrt's shape spelling (a tuple) for torch.Size.
        expected = str(theirs_error.value).replace("torch.Size([5, 6])", "(5, 6)")
        assert str(ours_error.value) == expected.replace("torch.Size([5])", "(5,)")
        assert not prune.is_pruned(ours)
        assert [n for n, _ in ours.named_parameters()] == [n for n, _ in theirs.named_parameters()]


@pytest.mark.parametrize("amount", [-1, 1.5, -0.1, "0.5", None, 31, 0.99 + 1])
def test_amount_validation_matches_torch(amount: Any) -> None:
    torch = _torch()
    ours, theirs = _pair("linear")
    with pytest.raises((TypeError, ValueError)) as theirs_error:
        torch.nn.utils.prune.l1_unstructured(theirs, "weight", amount=amount)
    with pytest.raises(theirs_error.type) as ours_error:
        prune.l1_unstructured(ours, "weight", amount=amount)
    assert str(ours_error.value) == str(theirs_error.value)
    # A failed pruning leaves the module unpruned (the parameter re-registered last, as in torch).
    assert not prune.is_pruned(ours)
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in theirs.named_parameters()]
    assert isinstance(ours.weight, nn.Parameter)


def test_amount_validation_without_torch() -> None:
    with pytest.raises(TypeError, match="Invalid type for amount"):
        prune.L1Unstructured(amount="all")
    with pytest.raises(ValueError, match=r"amount=-2 should either be a float in the range \[0, 1\]"):
        prune.RandomUnstructured(amount=-2)
    with pytest.raises(ValueError, match="amount=5 should be smaller than the number of parameters to "
                                         "prune=4"):
        prune.l1_unstructured(nn.Linear(2, 2), "weight", amount=5)
    with pytest.raises(ValueError, match="amount=3 should be smaller than the number of parameters to "
                                         "prune=2"):
        prune.ln_structured(nn.Linear(3, 2), "weight", amount=3, n=1, dim=0)


@pytest.mark.parametrize("second", ["l1", "ln0", "ln1", "random_count"])
def test_repeated_pruning_composes_masks_like_torch(second: str) -> None:
    torch = _torch()
    for kind in ("linear", "conv"):
        ours, theirs = _pair(kind, seed=21)
        for lib, module in ((prune, ours), (torch.nn.utils.prune, theirs)):
            lib.l1_unstructured(module, "weight", amount=0.3)
            if second == "l1":
                lib.l1_unstructured(module, "weight", amount=0.5)  # half of what is left
                lib.l1_unstructured(module, "weight", amount=2)
            elif second.startswith("ln"):
                lib.ln_structured(module, "weight", amount=1, n=2, dim=int(second[2]))
            else:
                lib.identity(module, "weight")
        _assert_same(ours, theirs, kind)
        hooks = list(ours._forward_pre_hooks.values())
        assert len(hooks) == 1 and isinstance(hooks[0], prune.PruningContainer)


def test_repeated_unstructured_pruning_counts_only_surviving_entries() -> None:
    fc = nn.Linear(10, 10)
    prune.l1_unstructured(fc, "weight", amount=0.5)   # 50 of 100
    prune.l1_unstructured(fc, "weight", amount=0.5)   # 25 of the 50 left
    assert int((fc.weight_mask.data == 0).sum()) == 75
    prune.random_unstructured(fc, "weight", amount=5)
    assert int((fc.weight_mask.data == 0).sum()) == 80
    (container,) = fc._forward_pre_hooks.values()
    assert isinstance(container, prune.PruningContainer) and len(container) == 3


def test_global_unstructured_matches_torch() -> None:
    torch = _torch()
    ours_fc, theirs_fc = _pair("linear", seed=1)
    ours_conv, theirs_conv = _pair("conv", seed=2)
    # Distinct magnitudes across both layers: rescale the conv so no value repeats the linear's.
    scale = np.float32(1.0 / 3.0)
    ours_conv.weight.data *= scale
    with torch.no_grad():
        theirs_conv.weight.mul_(torch.tensor(scale))
    prune.l1_unstructured(ours_fc, "weight", amount=4)  # an existing mask is respected
    torch.nn.utils.prune.l1_unstructured(theirs_fc, "weight", amount=4)
    prune.global_unstructured(((ours_fc, "weight"), (ours_conv, "weight")),
                              pruning_method=prune.L1Unstructured, amount=0.6)
    torch.nn.utils.prune.global_unstructured(((theirs_fc, "weight"), (theirs_conv, "weight")),
                                             pruning_method=torch.nn.utils.prune.L1Unstructured, amount=0.6)
    _assert_same(ours_fc, theirs_fc, "linear")
    _assert_same(ours_conv, theirs_conv, "conv")
    total = ours_fc.weight_mask.data.size + ours_conv.weight_mask.data.size
    zeros = int((ours_fc.weight_mask.data == 0).sum() + (ours_conv.weight_mask.data == 0).sum())
    assert zeros == 4 + round(0.6 * (total - 4))


def test_global_unstructured_random_and_errors() -> None:
    layers = [nn.Linear(4, 4), nn.Linear(4, 2)]
    prune.global_unstructured([(m, "weight") for m in layers], prune.RandomUnstructured, amount=12)
    assert sum(int((m.weight_mask.data == 0).sum()) for m in layers) == 12
    with pytest.raises(TypeError, match="Only \"unstructured\" PRUNING_TYPE"):
        prune.global_unstructured([(layers[0], "bias")], prune.LnStructured, amount=1, n=1, dim=0)
    with pytest.raises(TypeError, match="parameters is not an Iterable"):
        prune.global_unstructured(3, prune.L1Unstructured, amount=1)
    with pytest.raises(TypeError, match="importance_scores must be of type dict"):
        prune.global_unstructured([(layers[0], "bias")], prune.L1Unstructured, importance_scores=[], amount=1)


def test_identity_matches_torch() -> None:
    torch = _torch()
    ours, theirs = _pair("conv")
    prune.identity(ours, "weight")
    torch.nn.utils.prune.identity(theirs, "weight")
    _assert_same(ours, theirs, "conv")
    assert (ours.weight_mask.data == 1).all()


@pytest.mark.parametrize("method", ["l1", "ln", "identity"])
def test_remove_matches_torch(method: str) -> None:
    torch = _torch()
    ours, theirs = _pair("linear", seed=4)
    for lib, module in ((prune, ours), (torch.nn.utils.prune, theirs)):
        if method == "l1":
            lib.l1_unstructured(module, "weight", amount=0.5)
        elif method == "ln":
            lib.ln_structured(module, "weight", amount=2, n=1, dim=1)
        else:
            lib.identity(module, "weight")
        lib.remove(module, "weight")
    # torch re-registers the parameter last, so the order is bias, weight in both.
    assert list(ours.state_dict()) == list(theirs.state_dict()) == ["bias", "weight"]
    assert isinstance(ours._parameters["weight"], nn.Parameter) and not ours._forward_pre_hooks
    assert not prune.is_pruned(ours)
    np.testing.assert_array_equal(ours.weight.detach().numpy(), theirs.weight.detach().numpy())
    with pytest.raises(ValueError, match="has to be pruned before pruning can be removed"):
        prune.remove(ours, "weight")


def test_remove_keeps_the_parameter_object_for_an_existing_optimizer() -> None:
    fc = nn.Linear(3, 3)
    prune.l1_unstructured(fc, "weight", amount=3)
    orig = fc.weight_orig
    prune.remove(fc, "weight")
    assert fc.weight is orig


def test_is_pruned_walks_submodules() -> None:
    model = nn.Sequential(nn.Linear(2, 2), nn.Sequential(nn.ReLU(), nn.Linear(2, 2)))
    assert not prune.is_pruned(model)
    prune.random_unstructured(model[1][1], "bias", amount=1)
    assert prune.is_pruned(model) and prune.is_pruned(model[1]) and not prune.is_pruned(model[0])
    model[1][1].register_forward_pre_hook(lambda m, args: None)  # an ordinary hook is not pruning
    prune.remove(model[1][1], "bias")
    assert not prune.is_pruned(model)


def test_random_unstructured_count_seed_and_mask_semantics() -> None:
    pyrt.manual_seed(3)
    a = prune.random_unstructured(nn.Linear(8, 8), "weight", amount=0.25)
    assert int((a.weight_mask.data == 0).sum()) == 16
    assert set(np.unique(a.weight_mask.data).tolist()) == {0.0, 1.0}
    np.testing.assert_array_equal(a.weight.detach().numpy(), (a.weight_orig.data * a.weight_mask.data))
    pyrt.manual_seed(3)
    b = prune.random_unstructured(nn.Linear(8, 8), "weight", amount=0.25)
    np.testing.assert_array_equal(a.weight_mask.data, b.weight_mask.data)
    c = prune.random_unstructured(nn.Linear(8, 8), "weight", amount=0.25)
    assert not np.array_equal(a.weight_mask.data, c.weight_mask.data)
    assert int((prune.random_unstructured(nn.Linear(3, 3), "weight", amount=9).weight_mask.data).sum()) == 0


def test_pruned_tensor_is_recomputed_each_forward() -> None:
    fc = nn.Linear(4, 4)
    prune.l1_unstructured(fc, "weight", amount=0.5)
    fc.weight_orig.data[...] += 1.0   # e.g. an optimizer step
    fc(pyrt.ones(1, 4))
    np.testing.assert_array_equal(fc.weight.detach().numpy(), fc.weight_orig.data * fc.weight_mask.data)


def test_training_keeps_pruned_entries_zero_and_matches_torch() -> None:
    torch = _torch()
    ours, theirs = _pair("linear", seed=9)
    prune.l1_unstructured(ours, "weight", amount=0.6)
    torch.nn.utils.prune.l1_unstructured(theirs, "weight", amount=0.6)
    ours_opt = pyrt.optim.SGD(ours.parameters(), lr=0.1, momentum=0.9, weight_decay=0.0)
    theirs_opt = torch.optim.SGD(theirs.parameters(), lr=0.1, momentum=0.9, weight_decay=0.0)
    rng = np.random.default_rng(0)
    pruned = ours.weight_mask.data == 0
    for _ in range(5):
        x = rng.standard_normal((8, 6)).astype(np.float32)
        target = rng.standard_normal((8, 5)).astype(np.float32)
        ours_opt.zero_grad()
        ((ours(pyrt.tensor(x)) - pyrt.tensor(target)) ** 2).mean().backward()
        assert (ours.weight_orig.grad.numpy()[pruned] == 0).all()
        assert (ours.weight_orig.grad.numpy()[~pruned] != 0).any()
        ours_opt.step()
        theirs_opt.zero_grad()
        ((theirs(torch.from_numpy(x)) - torch.from_numpy(target)) ** 2).mean().backward()
        theirs_opt.step()
    np.testing.assert_allclose(ours.weight_orig.data, theirs.weight_orig.detach().numpy(),
                               rtol=1e-5, atol=1e-6)
    prune.remove(ours, "weight")
    assert (ours.weight.data[pruned] == 0).all()
    assert (ours.weight.data[~pruned] != 0).all()


def test_state_dict_round_trip_into_a_pruned_model(tmp_path: Any) -> None:
    source = prune.l1_unstructured(nn.Linear(4, 3), "weight", amount=5)
    pyrt.save(source.state_dict(), tmp_path / "pruned.npz")
    target = prune.identity(nn.Linear(4, 3), "weight")
    target.load_state_dict(pyrt.load(tmp_path / "pruned.npz"))
    x = pyrt.ones(2, 4)
    np.testing.assert_array_equal(target(x).detach().numpy(), source(x).detach().numpy())
    assert int((target.weight.data == 0).sum()) >= 5


def test_the_documents_snippet_runs_with_pyrt_names() -> None:
    class Model(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(1, 4, 3)
            self.fc = nn.Linear(4 * 6 * 6, 10)

        def forward(self, x: pyrt.Tensor) -> pyrt.Tensor:
            return self.fc(self.conv(x).relu().flatten(1))

    model = Model()
    prune.l1_unstructured(model.fc, name='weight', amount=0.9)
    prune.remove(model.fc, 'weight')
    assert model(pyrt.ones(2, 1, 8, 8)).shape == (2, 10)
    assert int((model.fc.weight.data == 0).sum()) == round(0.9 * 1440)
    names = sorted(n for n, _ in model.named_parameters())
    assert names == ["conv.bias", "conv.weight", "fc.bias", "fc.weight"]


def test_both_import_spellings_name_one_module() -> None:
    assert prune is prune_module is pyrt.nn.utils.prune
