"""The backward engine: ordering, accumulation, graph freeing, hooks, grad mode."""

from __future__ import annotations

import numpy as np
import pytest

import pyrt


def test_deep_chain_has_no_recursion_limit() -> None:
    x = pyrt.tensor([1.0], requires_grad=True)
    y = x
    for _ in range(10_000):
        y = y * 1.0001
    y.backward()
    np.testing.assert_allclose(x.grad.data, [1.0001**10_000], rtol=1e-3)


def test_diamond_accumulates_both_paths() -> None:
    x = pyrt.tensor([3.0], requires_grad=True)
    a = x * 2
    (a * a + a).backward()  # d/dx (4x^2 + 2x) = 8x + 2
    assert x.grad.item() == 26.0


def test_gradients_accumulate_across_backward_calls() -> None:
    x = pyrt.tensor([1.0, 2.0], requires_grad=True)
    (x * 3).sum().backward()
    (x * 3).sum().backward()
    assert x.grad.tolist() == [6.0, 6.0]


def test_leaf_used_twice_in_one_op() -> None:
    x = pyrt.tensor([2.0], requires_grad=True)
    (x * x).backward()
    assert x.grad.item() == 4.0


def test_shared_gradient_array_is_not_aliased_between_leaves() -> None:
    a = pyrt.tensor([1.0, 2.0], requires_grad=True)
    b = pyrt.tensor([3.0, 4.0], requires_grad=True)
    (a + b).sum().backward()  # Add hands the same array to both inputs
    a.grad.data *= 10
    assert b.grad.tolist() == [1.0, 1.0]


def test_second_backward_through_freed_graph_raises() -> None:
    x = pyrt.tensor([1.0], requires_grad=True)
    y = (x * x).sum()
    y.backward()
    with pytest.raises(RuntimeError, match="backward through the graph a second time"):
        y.backward()


def test_retain_graph_allows_second_backward() -> None:
    x = pyrt.tensor([1.0], requires_grad=True)
    y = (x * x).sum()
    y.backward(retain_graph=True)
    y.backward()
    assert x.grad.item() == 4.0


def test_non_scalar_backward_needs_a_gradient() -> None:
    x = pyrt.tensor([1.0, 2.0], requires_grad=True)
    with pytest.raises(RuntimeError, match=r"scalar outputs; got an output of shape \(2,\)"):
        (x * 2).backward()
    (x * 2).backward(pyrt.tensor([1.0, 10.0]))
    assert x.grad.tolist() == [2.0, 20.0]


def test_backward_gradient_shape_is_checked() -> None:
    x = pyrt.tensor([1.0, 2.0], requires_grad=True)
    with pytest.raises(RuntimeError, match=r"grad has shape \(3,\)"):
        (x * 2).backward(np.ones(3, np.float32))


def test_backward_on_tensor_without_grad_raises() -> None:
    with pytest.raises(RuntimeError, match="does not require grad"):
        pyrt.tensor([1.0]).sum().backward()


def test_backward_on_leaf_itself() -> None:
    x = pyrt.tensor(3.0, requires_grad=True)
    x.backward()
    assert x.grad.item() == 1.0


def test_no_grad_records_nothing() -> None:
    x = pyrt.tensor([1.0], requires_grad=True)
    with pyrt.no_grad():
        y = x * 2
    assert not y.requires_grad and y.grad_fn is None
    assert pyrt.is_grad_enabled()


def test_no_grad_as_decorator_and_nesting() -> None:
    @pyrt.no_grad()
    def evaluate(t):
        with pyrt.enable_grad():
            inner = pyrt.is_grad_enabled()
        return t * 2, inner

    y, inner = evaluate(pyrt.tensor([1.0], requires_grad=True))
    assert inner and not y.requires_grad and pyrt.is_grad_enabled()


def test_detach_cuts_the_graph() -> None:
    x = pyrt.tensor([2.0], requires_grad=True)
    y = x * x.detach()
    y.backward()
    assert x.grad.item() == 2.0


def test_only_inputs_that_require_grad_receive_one() -> None:
    x = pyrt.tensor([2.0], requires_grad=True)
    c = pyrt.tensor([5.0])
    (x * c).backward()
    assert x.grad.item() == 5.0 and c.grad is None


def test_integer_tensors_cannot_require_grad() -> None:
    with pytest.raises(RuntimeError, match="only floating point"):
        pyrt.tensor([1, 2], requires_grad=True)


def test_post_accumulate_hook_runs_once_after_the_last_contribution() -> None:
    w = pyrt.tensor([1.0], requires_grad=True)
    seen = []
    w.register_post_accumulate_grad_hook(lambda t: seen.append(t.grad.item()))
    (w * 2 + w * 3 + w).backward()
    assert seen == [6.0]


def test_post_accumulate_hook_order_follows_backward() -> None:
    first = pyrt.tensor([1.0], requires_grad=True)
    last = pyrt.tensor([1.0], requires_grad=True)
    order = []
    first.register_post_accumulate_grad_hook(lambda t: order.append("first"))
    last.register_post_accumulate_grad_hook(lambda t: order.append("last"))
    h = (first * 2).exp()
    (h * last).backward()
    assert order == ["last", "first"]


def test_hook_removal() -> None:
    w = pyrt.tensor([1.0], requires_grad=True)
    seen = []
    remove = w.register_post_accumulate_grad_hook(lambda t: seen.append(1))
    remove()
    (w * 2).backward()
    assert seen == []


def test_grad_dtype_follows_the_leaf() -> None:
    x = pyrt.tensor(np.ones(3, np.float64), requires_grad=True)
    (x * 2).sum().backward()
    assert x.grad.dtype == np.float64


def test_inplace_update_of_a_grad_requiring_tensor_needs_no_grad() -> None:
    w = pyrt.tensor([1.0], requires_grad=True)
    with pytest.raises(RuntimeError, match="no_grad"):
        w.add_(1.0)
    with pyrt.no_grad():
        w.add_(1.0)
    assert w.item() == 2.0


def test_sum_to_shape() -> None:
    g = np.ones((2, 3, 4))
    assert pyrt.autograd.sum_to_shape(g, (3, 1)).tolist() == [[8.0]] * 3
    assert pyrt.autograd.sum_to_shape(g, ()).item() == 24.0


def test_backward_through_inputs_changed_in_place_raises() -> None:
    w = pyrt.tensor([1.0, 2.0], requires_grad=True)
    optimizer = pyrt.optim.SGD([w], lr=0.1)
    first, second = (w * w).sum(), (w * w * w).sum()
    first.backward()
    optimizer.step()  # changes w, which `second` saved for its backward
    with pytest.raises(RuntimeError, match="modified in place"):
        second.backward()


def test_functions_that_saved_nothing_do_not_care_about_in_place_changes() -> None:
    w = pyrt.tensor([1.0, 2.0], requires_grad=True)
    y = (w + 1).sum()
    with pyrt.no_grad():
        w.add_(1.0)
    y.backward()
    assert w.grad.tolist() == [1.0, 1.0]


def test_gradcheck_keeps_zero_dim_inputs_zero_dim() -> None:
    x = pyrt.tensor(np.array(0.5), requires_grad=True)
    assert pyrt.gradcheck(lambda t: (t * t).exp(), [x])
    assert x.shape == ()
