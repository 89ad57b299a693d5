"""Several roots, ``inputs=``, and the split input/weight backward pipelining needs."""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Iterator

import numpy as np
import pytest

import pyrt
from pyrt import nn
from pyrt.autograd import backward, backward_input


def _leaf(*shape: int, seed: int = 0) -> pyrt.Tensor:
    return pyrt.tensor(np.random.default_rng(seed).standard_normal(shape), requires_grad=True)


def _grads(module: nn.Module) -> list[np.ndarray]:
    return [p.grad.data.copy() for p in module.parameters()]


def test_several_roots_add_their_gradients() -> None:
    x = _leaf(3, 4)
    a, b = (x * x).sum(), x.tanh()
    g = np.random.default_rng(1).standard_normal((3, 4))
    backward([a, b], [None, g])
    expected = 2 * x.data + g * (1 - np.tanh(x.data) ** 2)
    np.testing.assert_allclose(x.grad.data, expected, rtol=1e-12)


def test_roots_sharing_one_node_sum_their_seeds() -> None:
    x = _leaf(4)
    y = x * 3
    backward([y, y], [np.ones(4), np.full(4, 2.0)])
    np.testing.assert_allclose(x.grad.data, np.full(4, 9.0))


def test_a_leaf_root_gets_its_seed() -> None:
    x, w = _leaf(2), _leaf(2, seed=1)
    backward([x, (w * 2).sum()], [np.array([1.0, 5.0]), None])
    assert x.grad.tolist() == [1.0, 5.0] and w.grad.tolist() == [2.0, 2.0]


def test_inputs_limits_accumulation() -> None:
    x, w = _leaf(3), _leaf(3, seed=1)
    backward((x * w).sum(), inputs=[w])
    assert x.grad is None
    np.testing.assert_array_equal(w.grad.data, x.data)


@pytest.mark.parametrize("error, call", [
    ("2 gradients for 1 tensors", lambda x: backward([x * 2], [np.ones(3), np.ones(3)])),
    ("does not require grad", lambda x: backward([x * 2, pyrt.ones(3)], [np.ones(3), np.ones(3)])),
    ("implicitly created only for scalar", lambda x: backward([x * 2])),
    ("no tensors", lambda x: backward([])),
])
def test_bad_roots_raise(error: str, call) -> None:
    with pytest.raises(RuntimeError, match=error):
        call(_leaf(3))


def _models() -> list[tuple[str, nn.Module, tuple[int, ...]]]:
    pyrt.manual_seed(0)
    return [
        ("mlp", nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 3)).double(), (4, 5)),
        ("cnn", nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.ReLU(), nn.Flatten(),
                              nn.Linear(3 * 5 * 5, 2)).double(), (2, 2, 5, 5)),
        ("lstm", _LSTMHead().double(), (6, 2, 3)),
    ]


class _LSTMHead(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(3, 4)
        self.head = nn.Linear(4, 2)

    def forward(self, x: pyrt.Tensor) -> pyrt.Tensor:
        return self.head(self.lstm(x)[0])


@pytest.mark.parametrize("name, model, shape", _models(), ids=lambda v: v if isinstance(v, str) else "")
def test_split_backward_equals_full_backward(name: str, model: nn.Module, shape: tuple[int, ...]) -> None:
    x = _leaf(*shape, seed=2)
    out = model(x)
    g = np.random.default_rng(3).standard_normal(out.shape)
    out.backward(g)
    full, full_x = _grads(model), x.grad.data.copy()

    model.zero_grad()
    x.grad = None
    weights = backward_input(model(x), g, inputs=[x])
    np.testing.assert_allclose(x.grad.data, full_x, rtol=1e-12)
    assert all(p.grad is None for p in model.parameters()), "the input pass wrote a weight gradient"
    assert len(weights) > 0
    weights.run()
    for got, want in zip(_grads(model), full, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-12)


@contextlib.contextmanager
def _recording_masks(function: type) -> Iterator[list[tuple[bool, ...]]]:
    """Record ``needs_input_grad`` at every call of ``function.backward``."""
    calls: list[tuple[bool, ...]] = []
    original = function.backward

    def spy(self, grad):
        calls.append(self.needs_input_grad)
        return original(self, grad)

    function.backward = spy
    try:
        yield calls
    finally:
        function.backward = original


def test_input_pass_skips_the_weight_gemm() -> None:
    """LinearFunction honours the mask: the input pass computes grad_x only, the weight pass the rest."""
    layer = nn.Linear(3, 2).double()
    x = _leaf(4, 3)
    with _recording_masks(pyrt.ops.linalg.LinearFunction) as calls:
        backward_input(layer(x).sum(), inputs=[x]).run()
    assert calls == [(True, False, False), (False, True, True)]


def test_weight_pass_fires_hooks_once_and_frees_the_graph() -> None:
    layer = nn.Linear(3, 2).double()
    seen: list[str] = []
    layer.weight.register_post_accumulate_grad_hook(lambda t: seen.append("weight"))
    x = _leaf(4, 3)
    out = layer(x).sum()
    weights = backward_input(out, inputs=[x])
    assert seen == []
    weights.run()
    assert seen == ["weight"]
    with pytest.raises(RuntimeError, match="already computed"):
        weights.run()
    with pytest.raises(RuntimeError, match="backward through the graph a second time"):
        out.backward()


def test_weight_pass_accumulates_over_microbatches() -> None:
    layer = nn.Linear(3, 2).double()
    xs = [_leaf(2, 3, seed=s) for s in range(3)]
    for x in xs:
        layer(x).sum().backward()
    expected = layer.weight.grad.data.copy()
    layer.zero_grad()
    pending = [backward_input(layer(x).sum(), inputs=[x]) for x in xs]
    for weights in reversed(pending):
        weights.run()
    np.testing.assert_allclose(layer.weight.grad.data, expected, rtol=1e-12)


def test_accumulation_across_passes_is_in_place_and_within_a_pass_is_not() -> None:
    a = _leaf(3)
    b = a * 1.0  # Add hands one gradient array to a and to b's node: a must not add into it
    ((a + b) + a).sum().backward()
    np.testing.assert_array_equal(a.grad.data, np.full(3, 3.0))
    first = weakref.ref(a.grad.data)  # a weak reference: holding the array would forbid in place
    ((a + a * 1.0) + a).sum().backward()
    assert first() is a.grad.data, "a later pass adds into the leaf's own gradient array"
    np.testing.assert_array_equal(a.grad.data, np.full(3, 6.0))


def test_a_gradient_referenced_elsewhere_is_not_changed_in_place() -> None:
    # The earlier gradient is a constant of the next loss: Mul saved it.
    a = _leaf(2)
    (a * 2.0).sum().backward()
    held = a.grad
    ((held * a).sum() + (a * 2.0).sum()).backward()
    np.testing.assert_array_equal(a.grad.data, np.full(2, 6.0))  # 2 + 2 + 2, as PyTorch gives


def test_split_backward_with_an_input_reused_across_microbatches() -> None:
    x, w = _leaf(3), _leaf(3, seed=1)
    pending = [backward_input((x + w).sum(), inputs=[x]) for _ in range(2)]
    for weights in pending:
        weights.run()
    np.testing.assert_array_equal(x.grad.data, np.full(3, 2.0))
    np.testing.assert_array_equal(w.grad.data, np.full(3, 2.0))


def test_split_backward_never_lets_two_leaves_share_a_gradient_array() -> None:
    x, w = _leaf(3), _leaf(3, seed=1)
    backward_input((x + w).tanh().sum(), inputs=[x]).run()
    assert x.grad.data is not w.grad.data
    x_before = x.grad.data.copy()
    (w * 1.0).sum().backward()
    np.testing.assert_array_equal(x.grad.data, x_before)


def test_weight_pass_refuses_a_graph_changed_in_place() -> None:
    layer = nn.Linear(2, 1).double()
    x = _leaf(4, 2)
    weights = backward_input(layer(x).sum(), inputs=[x])
    with pyrt.no_grad():
        x.add_(1.0)  # LinearFunction saved x for its weight gradient
    with pytest.raises(RuntimeError, match="modified in place"):
        weights.run()


def test_lstm_weight_gradients_computed_in_the_input_pass_are_handed_over() -> None:
    model = _LSTMHead().double()
    x = _leaf(5, 2, 3)
    with _recording_masks(pyrt.ops.rnn.LSTMLayer) as calls:
        backward_input(model(x).sum(), inputs=[x]).run()
    assert len(calls) == 1, f"the LSTM's backward ran {len(calls)} times"
    assert all(p.grad is not None for p in model.parameters())


def test_a_leaf_root_reached_through_the_graph_fires_its_hook_once() -> None:
    x = _leaf(2)
    seen: list[list[float]] = []
    x.register_post_accumulate_grad_hook(lambda t: seen.append(t.grad.tolist()))
    backward([x, (x * 2.0).sum()], [np.ones(2), None])
    assert seen == [[3.0, 3.0]]


def test_split_backward_defers_a_leaf_root_outside_inputs() -> None:
    x, w = _leaf(2), _leaf(2, seed=1)
    weights = backward_input([w, (x * w).sum()], [np.ones(2), None], inputs=[x])
    assert w.grad is None
    weights.run()
    np.testing.assert_allclose(w.grad.data, 1 + x.data)


def test_inputs_must_be_leaves() -> None:
    x = _leaf(2)
    h = x * 2.0
    with pytest.raises(ValueError, match=r"inputs\[0\] \(shape \(2,\)\) must be a leaf"):
        backward((h * h).sum(), inputs=[h])


def test_tensor_backward_takes_inputs() -> None:
    x, w = _leaf(2), _leaf(2, seed=1)
    (x * w).sum().backward(inputs=[w])
    assert x.grad is None
    np.testing.assert_array_equal(w.grad.data, x.data)
