"""Module forward (pre-)hooks: order, replacing args/output, removal, nesting, state."""

from __future__ import annotations

import numpy as np
import pytest

import pyrt
from pyrt import nn


class Scale(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.factor = nn.Parameter(pyrt.tensor([2.0]))

    def forward(self, x: pyrt.Tensor, shift: float = 0.0) -> pyrt.Tensor:
        return x * self.factor + shift


def test_hooks_run_in_registration_order_around_forward() -> None:
    log: list[str] = []
    module = Scale()
    module.register_forward_pre_hook(lambda m, args: log.append("pre1"))
    module.register_forward_hook(lambda m, args, out: log.append("post1"))
    module.register_forward_pre_hook(lambda m, args: log.append("pre2"))
    module.register_forward_hook(lambda m, args, out: log.append("post2"))
    module(pyrt.ones(1))
    assert log == ["pre1", "pre2", "post1", "post2"]
    module(pyrt.ones(1))  # every call, not just the first
    assert log == ["pre1", "pre2", "post1", "post2"] * 2


def test_hooks_see_the_module_args_and_output() -> None:
    seen = {}
    module = Scale()
    x = pyrt.tensor([1.0, 3.0])
    module.register_forward_pre_hook(lambda m, args: seen.update(pre=(m, args)))
    module.register_forward_hook(lambda m, args, out: seen.update(post=(m, args, out)))
    out = module(x, shift=1.0)  # keyword arguments go to forward, not to the hooks
    assert seen["pre"][0] is module and seen["pre"][1] == (x,)
    assert seen["post"][0] is module and seen["post"][1] == (x,) and seen["post"][2] is out
    assert out.tolist() == [3.0, 7.0]


def test_pre_hook_replaces_args_tuple_or_single_value() -> None:
    module = Scale()
    handle = module.register_forward_pre_hook(lambda m, args: (args[0] + 1,))
    assert module(pyrt.tensor([1.0])).tolist() == [4.0]
    handle.remove()
    # A non-tuple return becomes the single positional argument, as in PyTorch.
    module.register_forward_pre_hook(lambda m, args: args[0] * 10)
    assert module(pyrt.tensor([1.0])).tolist() == [20.0]


def test_chained_pre_hooks_see_the_previous_hooks_args() -> None:
    module = Scale()
    module.register_forward_pre_hook(lambda m, args: (args[0] + 1,))
    module.register_forward_pre_hook(lambda m, args: (args[0] * 3,))
    assert module(pyrt.tensor([1.0])).tolist() == [12.0]  # ((1 + 1) * 3) * 2


def test_forward_hook_replaces_output_and_gets_modified_args() -> None:
    module = Scale()
    seen_args = []
    module.register_forward_pre_hook(lambda m, args: (args[0] + 1,))
    module.register_forward_hook(lambda m, args, out: seen_args.append(args[0].tolist()))
    module.register_forward_hook(lambda m, args, out: out * 0 - 1)
    module.register_forward_hook(lambda m, args, out: None)  # None keeps the replaced output
    assert module(pyrt.tensor([1.0])).tolist() == [-1.0]
    assert seen_args == [[2.0]]


def test_replaced_output_keeps_autograd() -> None:
    module = Scale()
    module.register_forward_hook(lambda m, args, out: out * out)
    module(pyrt.tensor([3.0])).sum().backward()
    assert module.factor.grad.tolist() == [36.0]  # d(9 f^2)/df at f = 2


def test_handle_remove_and_context_manager() -> None:
    calls = []
    module = Scale()
    handle = module.register_forward_hook(lambda m, args, out: calls.append(1))
    module(pyrt.ones(1))
    handle.remove()
    handle.remove()  # twice is harmless
    module(pyrt.ones(1))
    assert calls == [1]
    with module.register_forward_pre_hook(lambda m, args: calls.append(2)):
        module(pyrt.ones(1))
    module(pyrt.ones(1))
    assert calls == [1, 2]
    assert not module._forward_pre_hooks and not module._forward_hooks


def test_removing_one_hook_keeps_the_others_in_order() -> None:
    log: list[int] = []
    module = Scale()
    handles = [module.register_forward_pre_hook(lambda m, args, i=i: log.append(i)) for i in range(4)]
    handles[1].remove()
    module(pyrt.ones(1))
    assert log == [0, 2, 3]
    module.register_forward_pre_hook(lambda m, args: log.append(9))
    log.clear()
    module(pyrt.ones(1))
    assert log == [0, 2, 3, 9]


def test_stale_handle_never_removes_a_newer_hook() -> None:
    module = Scale()
    old = module.register_forward_hook(lambda m, args, out: None)
    old.remove()
    module.register_forward_hook(lambda m, args, out: None)
    old.remove()
    assert len(module._forward_hooks) == 1


def test_hook_removing_itself_during_the_call() -> None:
    log: list[str] = []
    module = Scale()
    handles = {}

    def once(m: nn.Module, args: tuple) -> None:
        log.append("once")
        handles["once"].remove()

    handles["once"] = module.register_forward_pre_hook(once)
    module.register_forward_pre_hook(lambda m, args: log.append("always"))
    module(pyrt.ones(1))
    module(pyrt.ones(1))
    assert log == ["once", "always", "always"]


def test_hook_removing_a_later_hook_takes_effect_from_the_next_call() -> None:
    # As in PyTorch: a call runs the hooks registered when it started.
    log: list[str] = []
    module = Scale()
    handles = {}
    module.register_forward_hook(lambda m, args, out: (log.append("first"), handles["second"].remove()))
    handles["second"] = module.register_forward_hook(lambda m, args, out: log.append("second"))
    module(pyrt.ones(1))
    module(pyrt.ones(1))
    assert log == ["first", "second", "first"]


def test_nested_modules_hooks_fire_inner_within_outer() -> None:
    log: list[str] = []
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    for name, module in model.named_modules():
        label = name or "model"
        module.register_forward_pre_hook(lambda m, args, label=label: log.append(f"pre {label}"))
        module.register_forward_hook(lambda m, args, out, label=label: log.append(f"post {label}"))
    model(pyrt.ones(5, 3))
    assert log == ["pre model", "pre 0", "post 0", "pre 1", "post 1", "pre 2", "post 2", "post model"]


def test_forward_hook_collects_activations_of_a_submodule() -> None:
    pyrt.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    features = []
    model[1].register_forward_hook(lambda m, args, out: features.append(out))
    x = pyrt.tensor(np.arange(6, dtype=np.float32).reshape(2, 3))
    model(x)
    np.testing.assert_allclose(features[0].detach().numpy(), model[1](model[0](x)).detach().numpy())


def test_hooks_are_not_state_and_survive_load_state_dict() -> None:
    calls = []
    module = nn.Linear(2, 2)
    module.register_forward_pre_hook(lambda m, args: calls.append("pre"))
    module.register_forward_hook(lambda m, args, out: calls.append("post"))
    assert list(module.state_dict()) == ["weight", "bias"]
    other = nn.Linear(2, 2)
    module.load_state_dict(other.state_dict())
    out = module(pyrt.ones(1, 2))
    assert calls == ["pre", "post"]
    np.testing.assert_allclose(out.detach().numpy(), other(pyrt.ones(1, 2)).detach().numpy())
    # Loading a checkpoint into a hooked module and saving it back changes nothing either.
    assert list(other.state_dict()) == list(module.state_dict())


def test_hook_exception_propagates_and_module_still_works() -> None:
    module = Scale()

    def broken(m: nn.Module, args: tuple) -> None:
        raise RuntimeError("boom")

    handle = module.register_forward_pre_hook(broken)
    with pytest.raises(RuntimeError, match="boom"):
        module(pyrt.ones(1))
    handle.remove()
    assert module(pyrt.ones(1)).tolist() == [2.0]


def test_matches_torch_hook_semantics() -> None:
    torch = pytest.importorskip("torch")
    results = {}
    for lib, make in (("torch", torch.nn.ReLU), ("pyrt", nn.ReLU)):
        log: list[str] = []
        module = make()
        module.register_forward_pre_hook(lambda m, args, log=log: (log.append("pre"), args[0] - 1)[1])
        module.register_forward_hook(lambda m, args, out, log=log: (log.append("post"), out * 2)[1])
        x = torch.tensor([0.5, 3.0]) if lib == "torch" else pyrt.tensor([0.5, 3.0])
        results[lib] = (module(x).tolist(), log)
    assert results["torch"] == results["pyrt"]
