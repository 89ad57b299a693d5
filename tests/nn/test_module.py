"""Module: registration, traversal, modes, state_dict round trips and strict errors, repr."""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import pytest

import pyrt
from pyrt import nn


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3, 4)
        self.scale = nn.Parameter(pyrt.ones(4))
        self.register_buffer("count", pyrt.zeros(1))
        self.register_buffer("scratch", pyrt.zeros(2), persistent=False)
        self.plain = 5

    def forward(self, x: pyrt.Tensor) -> pyrt.Tensor:
        return self.fc(x) * self.scale


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.block = Block()
        self.head = nn.Linear(4, 2)

    def forward(self, x: pyrt.Tensor) -> pyrt.Tensor:
        return self.head(self.block(x).relu())


def test_attribute_assignment_registers_parameters_buffers_and_modules() -> None:
    block = Block()
    assert list(block._parameters) == ["scale"]
    assert list(block._buffers) == ["count", "scratch"]
    assert list(block._modules) == ["fc"]
    assert block.plain == 5 and "plain" not in block._parameters


def test_named_parameters_recurse_in_registration_order() -> None:
    names = [n for n, _ in Net().named_parameters()]
    assert names == ["block.scale", "block.fc.weight", "block.fc.bias", "head.weight", "head.bias"]


def test_parameters_without_recurse_only_own() -> None:
    assert [n for n, _ in Net().block.named_parameters(recurse=False)] == ["scale"]


def test_shared_parameter_and_module_yielded_once() -> None:
    shared = nn.Linear(2, 2)
    model = nn.Sequential(shared, nn.ReLU(), shared)
    assert len(list(model.parameters())) == 2
    assert [n for n, _ in model.named_modules()] == ["", "0", "1"]
    # ... but state_dict keeps every name, so it loads into an untied model too.
    assert list(model.state_dict()) == ["0.weight", "0.bias", "2.weight", "2.bias"]


def test_tied_weight_across_modules_counted_once() -> None:
    a, b = nn.Linear(3, 3), nn.Linear(3, 3)
    b.weight = a.weight
    model = nn.Sequential(a, b)
    assert len(list(model.parameters())) == 3


def test_children_and_modules() -> None:
    net = Net()
    assert [type(m).__name__ for m in net.children()] == ["Block", "Linear"]
    assert [n for n, _ in net.named_modules()] == ["", "block", "block.fc", "head"]
    assert len(list(net.modules())) == 4


def test_reassigning_parameter_name_to_non_parameter_raises() -> None:
    block = Block()
    with pytest.raises(TypeError, match="parameter 'scale'"):
        block.scale = pyrt.ones(4)
    block.scale = None  # None is allowed: the slot stays registered
    assert "scale" in block._parameters and block.scale is None


def test_buffer_assignment_must_be_tensor() -> None:
    block = Block()
    block.count = pyrt.ones(1)
    assert block.count.item() == 1.0
    with pytest.raises(TypeError, match="buffer 'count'"):
        block.count = 3


def test_register_rejects_bad_names_and_types() -> None:
    m = nn.Module()
    with pytest.raises(KeyError, match="contain"):
        m.register_parameter("a.b", nn.Parameter(pyrt.ones(1)))
    with pytest.raises(TypeError, match="Parameter or None"):
        m.register_parameter("w", pyrt.ones(1))
    with pytest.raises(TypeError):
        m.register_buffer("b", np.ones(1))
    with pytest.raises(KeyError, match="already exists"):
        m.register_buffer("training", pyrt.ones(1))
    with pytest.raises(TypeError, match="not a Module"):
        m.add_module("x", 3)


def test_setattr_before_init_is_a_clear_error() -> None:
    class Broken(nn.Module):
        def __init__(self) -> None:
            self.fc = nn.Linear(1, 1)

    with pytest.raises(AttributeError, match=r"before Module\.__init__"):
        Broken()


def test_delattr_unregisters() -> None:
    block = Block()
    del block.fc
    del block.count
    assert "fc" not in block._modules and "count" not in block._buffers
    with pytest.raises(AttributeError):
        _ = block.fc


def test_missing_attribute_message() -> None:
    with pytest.raises(AttributeError, match="'Net' object has no attribute 'nope'"):
        _ = Net().nope


def test_parameter_is_tensor_requiring_grad_and_shares_data() -> None:
    t = pyrt.ones(3)
    p = nn.Parameter(t)
    assert isinstance(p, pyrt.Tensor) and p.requires_grad and p.is_leaf
    assert p.data is t.data
    assert not nn.Parameter(pyrt.ones(1), requires_grad=False).requires_grad
    assert repr(p).startswith("Parameter containing:\ntensor(")


def test_train_eval_propagate() -> None:
    net = Net()
    assert net.training and net.block.fc.training
    net.eval()
    assert not any(m.training for m in net.modules())
    net.train()
    assert all(m.training for m in net.modules())


def test_zero_grad_set_to_none_and_zero() -> None:
    net = Net()
    net(pyrt.ones(2, 3)).sum().backward()
    net.zero_grad(set_to_none=False)
    assert all(p.grad is not None and not p.grad.data.any() for p in net.parameters())
    net.zero_grad()
    assert all(p.grad is None for p in net.parameters())


def test_requires_grad_freezes() -> None:
    net = Net()
    net.block.requires_grad_(False)
    assert not any(p.requires_grad for p in net.block.parameters())
    assert all(p.requires_grad for p in net.head.parameters())


def test_apply_visits_children_first() -> None:
    seen: list[str] = []
    Net().apply(lambda m: seen.append(type(m).__name__))
    assert seen == ["Linear", "Block", "Linear", "Net"]


def test_get_submodule() -> None:
    net = Net()
    assert net.get_submodule("block.fc") is net.block.fc
    with pytest.raises(AttributeError, match="no submodule 'x'"):
        net.get_submodule("block.x")


def test_forward_not_implemented() -> None:
    with pytest.raises(NotImplementedError, match='missing "forward"'):
        nn.Module()(1)


# --- state dict ------------------------------------------------------------------

def test_state_dict_keys_include_persistent_buffers_only() -> None:
    keys = list(Net().state_dict())
    assert keys == ["block.scale", "block.count", "block.fc.weight", "block.fc.bias",
                    "head.weight", "head.bias"]
    assert isinstance(Net().state_dict(), OrderedDict)


def test_state_dict_values_are_detached_and_share_data() -> None:
    net = Net()
    state = net.state_dict()
    assert not state["head.weight"].requires_grad
    assert state["head.weight"].data is net.head.weight.data
    assert net.state_dict(keep_vars=True)["head.weight"] is net.head.weight


def test_state_dict_round_trip_copies_in_place() -> None:
    src, dst = Net(), Net()
    weight_array = dst.head.weight.data
    result = dst.load_state_dict(src.state_dict())
    assert result.missing_keys == [] and result.unexpected_keys == []
    assert dst.head.weight.data is weight_array  # same array object, new values
    x = pyrt.randn(5, 3)
    np.testing.assert_array_equal(src(x).data, dst(x).data)


def test_load_state_dict_preserves_dtype_and_accepts_arrays() -> None:
    m = nn.Linear(2, 2)
    m.load_state_dict({"weight": np.ones((2, 2)), "bias": np.zeros(2)})
    assert m.weight.dtype == np.float32
    np.testing.assert_array_equal(m.weight.data, np.ones((2, 2), np.float32))


def test_load_state_dict_strict_lists_missing_and_unexpected() -> None:
    state = Net().state_dict()
    del state["head.bias"]
    state["extra.weight"] = pyrt.ones(1)
    with pytest.raises(RuntimeError) as info:
        Net().load_state_dict(state)
    message = str(info.value)
    assert "Error(s) in loading state_dict for Net" in message
    assert 'Missing key(s) in state_dict: "head.bias"' in message
    assert 'Unexpected key(s) in state_dict: "extra.weight"' in message


def test_load_state_dict_non_strict_reports_keys() -> None:
    state = Net().state_dict()
    del state["head.bias"]
    state["extra"] = pyrt.ones(1)
    result = Net().load_state_dict(state, strict=False)
    assert result.missing_keys == ["head.bias"] and result.unexpected_keys == ["extra"]


def test_load_state_dict_shape_mismatch_always_errors_and_copies_nothing() -> None:
    m = nn.Linear(3, 2)
    before = m.bias.data.copy()
    state = {"weight": pyrt.ones(2, 4), "bias": pyrt.ones(2)}
    for strict in (True, False):
        with pytest.raises(RuntimeError,
                           match=r"size mismatch for weight: copying a param with shape \(2, 4\)"
                                 r" from checkpoint, the shape in current model is \(2, 3\)"):
            m.load_state_dict(state, strict=strict)
    np.testing.assert_array_equal(m.bias.data, before)


def test_load_state_dict_rejects_non_mapping_and_non_array_values() -> None:
    m = nn.Linear(1, 1)
    with pytest.raises(TypeError, match="mapping"):
        m.load_state_dict([("weight", pyrt.ones(1, 1))])  # type: ignore[arg-type]
    with pytest.raises(RuntimeError, match='copying "bias"'):
        m.load_state_dict({"weight": pyrt.ones(1, 1), "bias": "x"})


def test_buffers_round_trip() -> None:
    src, dst = Block(), Block()
    src.count.data[...] = 7
    dst.load_state_dict(src.state_dict())
    assert dst.count.item() == 7


# --- dtype and repr -------------------------------------------------------------------

def test_to_float64_keeps_parameter_identity() -> None:
    net = Net()
    params = list(net.parameters())
    net.to(pyrt.float64)
    assert all(p.dtype == np.float64 for p in net.parameters())
    assert [id(p) for p in net.parameters()] == [id(p) for p in params]
    assert net.block.count.dtype == np.float64
    with pytest.raises(TypeError, match="floating"):
        net.to(pyrt.int64)


def test_repr_nested_like_pytorch() -> None:
    model = nn.Sequential(nn.Linear(784, 10), nn.Sequential(nn.ReLU(), nn.Dropout(0.1)))
    assert repr(model) == (
        "Sequential(\n"
        "  (0): Linear(in_features=784, out_features=10, bias=True)\n"
        "  (1): Sequential(\n"
        "    (0): ReLU()\n"
        "    (1): Dropout(p=0.1, inplace=False)\n"
        "  )\n"
        ")"
    )
    assert repr(nn.Linear(2, 3, bias=False)) == "Linear(in_features=2, out_features=3, bias=False)"
    assert repr(nn.Module()) == "Module()"


def test_load_state_dict_bumps_the_versions_it_writes() -> None:
    layer = nn.Linear(2, 2)
    before = layer.weight._version
    layer.load_state_dict(nn.Linear(2, 2).state_dict())
    assert layer.weight._version == before + 1
