"""Every differentiable op against central finite differences in float64.

Each case is (id, function of tensors, input shapes). Inputs are drawn so that
the op is smooth around them (positive for log/sqrt, away from kinks for
relu/abs/clamp/max), which is what a finite-difference check needs.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

import pyrt
import pyrt.nn.functional as F
from pyrt import ops


def _away_from_zero(x: np.ndarray) -> np.ndarray:
    return np.where(np.abs(x) < 0.1, x + np.sign(x + 1e-12) * 0.2, x)


def _distinct(x: np.ndarray) -> np.ndarray:
    # Spread values so max/min have a unique winner and no ties within eps.
    return np.arange(x.size, dtype=np.float64).reshape(x.shape) * 0.37 % 1.9 + x * 1e-3


CASES: list[tuple[str, Callable[..., pyrt.Tensor], list[tuple[int, ...]], Callable]] = [
    ("add", lambda a, b: a + b, [(3, 4), (3, 4)], None),
    ("add_broadcast", lambda a, b: a + b, [(2, 3, 4), (3, 1)], None),
    ("add_scalar", lambda a: 2.5 + a, [(5,)], None),
    ("sub_broadcast", lambda a, b: a - b, [(4, 1), (1, 5)], None),
    ("rsub", lambda a: 1.0 - a, [(3,)], None),
    ("mul_broadcast", lambda a, b: a * b, [(2, 3), (3,)], None),
    ("div", lambda a, b: a / b, [(3, 4), (3, 4)], _away_from_zero),
    ("rdiv", lambda a: 2.0 / a, [(3, 4)], _away_from_zero),
    ("neg", lambda a: -a, [(2, 2)], None),
    ("pow_scalar", lambda a: a**3, [(3, 2)], None),
    ("pow_tensor", lambda a, b: a**b, [(3,), (3,)], np.abs),
    ("rpow", lambda a: 2.0**a, [(4,)], None),
    ("exp", ops.exp, [(3, 3)], None),
    ("log", ops.log, [(3, 3)], lambda x: np.abs(x) + 0.5),
    ("sqrt", ops.sqrt, [(3, 3)], lambda x: np.abs(x) + 0.5),
    ("abs", ops.abs, [(3, 3)], _away_from_zero),
    ("clamp", lambda a: ops.clamp(a, -0.5, 0.5), [(4, 4)], None),
    ("clamp_min_only", lambda a: ops.clamp(a, min=0.0), [(6,)], _away_from_zero),
    ("maximum", ops.maximum, [(3, 4), (3, 4)], None),
    ("minimum_broadcast", ops.minimum, [(3, 4), (4,)], None),
    ("where", lambda c, a, b: ops.where(c.data > 0, a, b), [(3, 4), (3, 4), (3, 4)], None),
    ("relu", ops.relu, [(4, 5)], _away_from_zero),
    ("sigmoid", ops.sigmoid, [(4, 5)], None),
    ("tanh", ops.tanh, [(4, 5)], None),
    ("softmax", lambda a: ops.softmax(a, dim=1), [(3, 5)], None),
    ("softmax_dim0", lambda a: ops.softmax(a, dim=0), [(3, 5)], None),
    ("log_softmax", lambda a: ops.log_softmax(a, dim=-1), [(3, 5)], None),
    ("logsumexp", lambda a: ops.logsumexp(a, dim=1), [(3, 5)], None),
    ("logsumexp_keepdim", lambda a: ops.logsumexp(a, dim=(0, 1), keepdim=True), [(3, 5)], None),
    ("sum_all", lambda a: a.sum(), [(3, 4)], None),
    ("sum_dim", lambda a: a.sum(dim=1), [(3, 4, 2)], None),
    ("sum_dims_keepdim", lambda a: a.sum(dim=(0, 2), keepdim=True), [(3, 4, 2)], None),
    ("mean", lambda a: a.mean(dim=-1), [(3, 4)], None),
    ("mean_all", lambda a: a.mean(), [(3, 4)], None),
    ("max_all", lambda a: a.max(), [(3, 4)], _distinct),
    ("max_dim", lambda a: a.max(dim=1).values, [(3, 4)], _distinct),
    ("min_dim_keepdim", lambda a: a.min(dim=0, keepdim=True).values, [(3, 4)], _distinct),
    ("var", lambda a: a.var(), [(3, 4)], None),
    ("var_dim_biased", lambda a: a.var(dim=1, unbiased=False), [(3, 4)], None),
    ("reshape", lambda a: a.reshape(4, 3) * a.reshape(4, 3), [(3, 4)], None),
    ("view_neg1", lambda a: a.view(-1).exp(), [(2, 3)], None),
    ("transpose", lambda a: a.transpose(0, 2).exp(), [(2, 3, 4)], None),
    ("permute", lambda a: a.permute(1, 2, 0).tanh(), [(2, 3, 4)], None),
    ("T", lambda a, b: a.T @ b, [(3, 2), (3, 4)], None),
    ("getitem_slice", lambda a: a[1:, ::2] * 3, [(4, 5)], None),
    ("getitem_int", lambda a: a[2], [(4, 5)], None),
    ("getitem_repeated_index", lambda a: a[np.array([0, 2, 0, 0])], [(3, 2)], None),
    ("getitem_bool_mask", lambda a: a[a.data > 0], [(4, 4)], None),
    ("getitem_tuple_fancy", lambda a: a[np.array([0, 1]), np.array([2, 2])], [(3, 3)], None),
    ("cat", lambda a, b: ops.cat([a, b, a], dim=1), [(2, 3), (2, 1)], None),
    ("stack", lambda a, b: ops.stack([a, b], dim=1), [(2, 3), (2, 3)], None),
    ("squeeze_unsqueeze", lambda a: a.unsqueeze(0).squeeze(2).exp(), [(3, 1, 2)], None),
    ("expand", lambda a: a.expand(4, 3, 5), [(3, 1)], None),
    ("flatten", lambda a: a.flatten(1), [(2, 3, 4)], None),
    ("matmul_2d", ops.matmul, [(3, 4), (4, 5)], None),
    ("matmul_batched", ops.matmul, [(2, 3, 4), (2, 4, 5)], None),
    ("matmul_batched_broadcast", ops.matmul, [(2, 1, 3, 4), (3, 4, 2)], None),
    ("matmul_batched_2d", ops.matmul, [(2, 3, 4), (4, 5)], None),
    ("matmul_vec", ops.matmul, [(3, 4), (4,)], None),
    ("matmul_vec_left", ops.matmul, [(4,), (4, 2)], None),
    ("matmul_dot", ops.matmul, [(4,), (4,)], None),
    ("linear", F.linear, [(5, 3), (4, 3), (4,)], None),
    ("linear_3d_input", F.linear, [(2, 5, 3), (4, 3), (4,)], None),
    ("linear_no_bias", lambda x, w: F.linear(x, w), [(5, 3), (4, 3)], None),
    ("clone", lambda a: ops.clone(a) * a, [(3,)], None),
    ("mse_loss", F.mse_loss, [(4, 3), (4, 3)], None),
    ("mse_loss_sum", lambda a, b: F.mse_loss(a, b, reduction="sum"), [(4, 3), (4, 3)], None),
    ("bce_with_logits", lambda a, b: F.binary_cross_entropy_with_logits(a, b.sigmoid()),
     [(4, 3), (4, 3)], None),
    ("bce_with_logits_none",
     lambda a: F.binary_cross_entropy_with_logits(a, pyrt.tensor(np.ones((2, 3))), reduction="none"),
     [(2, 3)], None),
    ("bce", lambda a: F.binary_cross_entropy(a.sigmoid(), pyrt.tensor(np.eye(3)[:2])),
     [(2, 3)], None),
    ("bce_target_grad", lambda a, t: F.binary_cross_entropy(a.sigmoid(), t.sigmoid()),
     [(2, 3), (2, 3)], None),
    ("bce_sum", lambda a: F.binary_cross_entropy(a.sigmoid(), pyrt.tensor(np.eye(3)[:2]),
                                                 reduction="sum"), [(2, 3)], None),
]


@pytest.mark.parametrize(("fn", "shapes", "prepare"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_gradcheck(fn, shapes, prepare, rng) -> None:
    inputs = []
    for shape in shapes:
        x = rng.standard_normal(shape)
        if prepare is not None:
            x = prepare(x)
        inputs.append(pyrt.tensor(x, requires_grad=True))
    assert pyrt.gradcheck(fn, inputs)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cross_entropy_gradcheck(reduction, rng) -> None:
    logits = pyrt.tensor(rng.standard_normal((5, 4)), requires_grad=True)
    target = pyrt.tensor(np.array([0, 3, 1, 1, 2]))
    assert pyrt.gradcheck(lambda x: F.cross_entropy(x, target, reduction=reduction), [logits])


def test_cross_entropy_ignore_index_gradcheck(rng) -> None:
    logits = pyrt.tensor(rng.standard_normal((4, 3)), requires_grad=True)
    target = pyrt.tensor(np.array([2, -100, 0, -100]))
    assert pyrt.gradcheck(lambda x: F.cross_entropy(x, target), [logits])
    assert logits.grad.data[1].tolist() == [0.0, 0.0, 0.0]


def test_nll_loss_gradcheck(rng) -> None:
    logits = pyrt.tensor(rng.standard_normal((4, 3)), requires_grad=True)
    target = pyrt.tensor(np.array([2, 1, 0, 1]))
    assert pyrt.gradcheck(lambda x: F.nll_loss(F.log_softmax(x, dim=1), target), [logits])


def test_dropout_gradient_matches_its_mask(rng) -> None:
    x = pyrt.tensor(rng.standard_normal((50, 40)), requires_grad=True)
    y = F.dropout(x, p=0.3)
    y.sum().backward()
    kept = y.data != 0
    np.testing.assert_allclose(x.grad.data, kept / 0.7)
    assert 0.6 < kept.mean() < 0.8


def test_gradcheck_reports_a_wrong_backward() -> None:
    class WrongSquare(pyrt.autograd.Function):
        def forward(self, x):
            self.save_for_backward(x)
            return x * x

        def backward(self, grad):
            (x,) = self.saved_tensors
            return (3 * x * grad,)

    x = pyrt.tensor(np.array([1.0, 2.0]), requires_grad=True)
    with pytest.raises(AssertionError, match="differs from finite differences"):
        pyrt.gradcheck(WrongSquare.apply, [x])
    assert not pyrt.gradcheck(WrongSquare.apply, [x], raise_exception=False)


def test_gradcheck_requires_float64() -> None:
    x = pyrt.tensor([1.0], requires_grad=True)
    with pytest.raises(TypeError, match="float64"):
        pyrt.gradcheck(ops.exp, [x])


def test_cast_gradient_returns_in_the_input_dtype() -> None:
    x = pyrt.tensor(np.array([1.5, -2.0]), requires_grad=True)
    (x.to(np.float32) * 3.0).sum().backward()
    assert x.grad.dtype == np.float64
    assert x.grad.tolist() == [3.0, 3.0]
