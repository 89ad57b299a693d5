"""Forward values of the ops against numpy, PyTorch's semantics, and their errors."""

from __future__ import annotations

import numpy as np
import pytest

import pyrt
import pyrt.nn.functional as F
from pyrt import ops


def t(x, **kw):
    return pyrt.tensor(np.asarray(x), **kw)


def test_broadcasting_arithmetic_matches_numpy(rng) -> None:
    a, b = rng.standard_normal((2, 3, 4)), rng.standard_normal((3, 1))
    for op in (np.add, np.subtract, np.multiply, np.divide):
        expected = op(a, b)
        got = {np.add: t(a) + t(b), np.subtract: t(a) - t(b), np.multiply: t(a) * t(b),
               np.divide: t(a) / t(b)}[op]
        np.testing.assert_allclose(got.data, expected)


def test_python_scalars_keep_float32() -> None:
    x = pyrt.ones(3)
    for y in (x + 1, 2 * x, x / 3, x**2, 1 - x, 2.0**x):
        assert y.dtype == np.float32


def test_ndarray_on_the_left_gives_a_tensor() -> None:
    y = np.ones(2, np.float32) + pyrt.ones(2, requires_grad=True)
    assert isinstance(y, pyrt.Tensor) and y.requires_grad


def test_reductions_match_numpy(rng) -> None:
    x = rng.standard_normal((3, 4, 5))
    np.testing.assert_allclose(t(x).sum(dim=(0, 2)).data, x.sum(axis=(0, 2)))
    np.testing.assert_allclose(t(x).mean(dim=-1, keepdim=True).data, x.mean(-1, keepdims=True))
    np.testing.assert_allclose(t(x).var(dim=1).data, x.var(axis=1, ddof=1))
    np.testing.assert_allclose(t(x).var(unbiased=False).data, x.var())
    np.testing.assert_allclose(t(x).var(correction=0).data, x.var())
    np.testing.assert_allclose(t(x).max().data, x.max())
    np.testing.assert_allclose(ops.logsumexp(t(x), dim=2).data,
                               np.log(np.exp(x).sum(axis=2)))


def test_max_min_along_dim_return_values_and_indices() -> None:
    x = t([[1.0, 5.0, 3.0], [7.0, 2.0, 7.0]])
    values, indices = x.max(dim=1)
    assert values.tolist() == [5.0, 7.0] and indices.tolist() == [1, 0]
    assert indices.dtype == np.int64
    kept = x.min(dim=0, keepdim=True)
    assert kept.values.shape == (1, 3) and kept.indices.tolist() == [[0, 1, 0]]
    assert x.argmax().item() == 3 and x.argmin(dim=1).tolist() == [0, 1]


def test_max_of_ties_shares_the_gradient() -> None:
    x = t([2.0, 2.0, 1.0], requires_grad=True)
    x.max().backward()
    assert x.grad.tolist() == [0.5, 0.5, 0.0]


def test_reduction_dim_out_of_range_is_an_error() -> None:
    with pytest.raises(IndexError, match=r"dim 2 is out of range for a tensor of shape \(3, 4\)"):
        pyrt.ones(3, 4).sum(dim=2)


def test_max_of_empty_is_an_error() -> None:
    with pytest.raises(RuntimeError, match="empty tensor"):
        pyrt.zeros(0).max()


def test_reductions_over_empty_dims() -> None:
    assert pyrt.zeros(0, 3).sum(dim=0).tolist() == [0.0, 0.0, 0.0]
    assert pyrt.zeros(0).sum().item() == 0.0


def test_logsumexp_is_stable() -> None:
    x = t([1000.0, 1000.0])
    assert abs(ops.logsumexp(x, dim=0).item() - (1000 + np.log(2))) < 1e-3
    assert ops.logsumexp(t([-np.inf, -np.inf]), dim=0).item() == -np.inf


def test_softmax_is_stable_and_normalised() -> None:
    x = t([[1000.0, 0.0, -1000.0]])
    s = F.softmax(x, dim=1)
    assert np.isfinite(s.data).all() and abs(s.sum().item() - 1) < 1e-6
    np.testing.assert_allclose(F.log_softmax(x, dim=1).data, [[0.0, -1000.0, -2000.0]])


def test_sigmoid_never_overflows() -> None:
    s = F.sigmoid(t([-1e4, 0.0, 1e4]))
    assert s.tolist() == [0.0, 0.5, 1.0]


def test_shape_ops() -> None:
    x = pyrt.arange(24).float().reshape(2, 3, 4)
    assert x.permute(2, 0, 1).shape == (4, 2, 3)
    assert x.transpose(0, 2).shape == (4, 3, 2)
    assert x.view(-1, 4).shape == (6, 4)
    assert x.flatten().shape == (24,) and x.flatten(1).shape == (2, 12)
    assert x.unsqueeze(-1).shape == (2, 3, 4, 1) and x.unsqueeze(0).squeeze(0).shape == x.shape
    assert x[:, 1].shape == (2, 4) and x[..., -1].shape == (2, 3)
    assert pyrt.ones(3, 1).expand(-1, 5).shape == (3, 5)
    assert ops.cat([x, x], dim=2).shape == (2, 3, 8)
    assert ops.stack([x, x], dim=-1).shape == (2, 3, 4, 2)
    assert x.T.shape == (4, 3, 2)


def test_shape_errors_name_the_shapes() -> None:
    x = pyrt.ones(2, 3)
    with pytest.raises(ValueError, match=r"cannot reshape a tensor of shape \(2, 3\) into \(4,\)"):
        x.reshape(4)
    with pytest.raises(ValueError, match=r"tensor 1 has shape \(3, 3\) but tensor 0 has shape"):
        ops.cat([x, pyrt.ones(3, 3)], dim=1)
    with pytest.raises(ValueError, match="cannot expand"):
        x.expand(2, 4)
    with pytest.raises(ValueError, match="not a permutation"):
        x.permute(0, 0)
    with pytest.raises(ValueError, match="non-empty"):
        ops.stack([])


def test_where_and_clamp() -> None:
    x = t([-2.0, 0.5, 3.0])
    assert ops.where(x > 0, x, 0.0).tolist() == [0.0, 0.5, 3.0]
    assert x.clamp(-1, 1).tolist() == [-1.0, 0.5, 1.0]
    with pytest.raises(ValueError, match="at least one of min and max"):
        x.clamp()


def test_float32_matmul_op_matches_float64_forward_and_backward(rng) -> None:
    """The float32 path runs our SGEMM in forward and backward; float64 runs numpy."""
    for sa, sb in [((33, 17), (17, 9)), ((3, 5, 7), (7, 4)), ((2, 3, 5, 7), (3, 7, 4))]:
        a64, b64 = rng.standard_normal(sa), rng.standard_normal(sb)
        g64 = rng.standard_normal((*np.broadcast_shapes(sa[:-2], sb[:-2]), sa[-2], sb[-1]))
        results = {}
        for dtype in (np.float32, np.float64):
            a = t(a64.astype(dtype), requires_grad=True)
            b = t(b64.astype(dtype), requires_grad=True)
            out = a @ b
            out.backward(g64.astype(dtype))
            results[dtype] = (out.data, a.grad.data, b.grad.data)
        for ours, ref in zip(results[np.float32], results[np.float64], strict=True):
            np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-4)


def test_float32_linear_matches_float64(rng) -> None:
    x64, w64, b64 = rng.standard_normal((8, 5, 6)), rng.standard_normal((3, 6)), rng.standard_normal(3)
    results = {}
    for dtype in (np.float32, np.float64):
        x, w, b = (t(v.astype(dtype), requires_grad=True) for v in (x64, w64, b64))
        out = F.linear(x, w, b)
        (out * out).sum().backward()
        results[dtype] = (out.data, x.grad.data, w.grad.data, b.grad.data)
    for ours, ref in zip(results[np.float32], results[np.float64], strict=True):
        np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-3)


def test_matmul_errors() -> None:
    with pytest.raises(ValueError, match=r"inner dimensions 784 != 512"):
        pyrt.ones(64, 784) @ pyrt.ones(512, 10)
    with pytest.raises(ValueError, match="do not broadcast"):
        pyrt.ones(2, 3, 4) @ pyrt.ones(3, 4, 5)
    with pytest.raises(TypeError, match="float32 but b is float64"):
        pyrt.ones(2, 2) @ pyrt.ones(2, 2, dtype=np.float64)


def test_linear_errors() -> None:
    with pytest.raises(ValueError, match=r"input is \(4, 5\) float32 but weight is \(3, 6\)"):
        F.linear(pyrt.ones(4, 5), pyrt.ones(3, 6))
    with pytest.raises(ValueError, match=r"bias is \(4,\) float32, expected \(3,\)"):
        F.linear(pyrt.ones(4, 6), pyrt.ones(3, 6), pyrt.ones(4))


def test_cross_entropy_matches_closed_form(rng) -> None:
    logits, target = rng.standard_normal((6, 4)), np.array([0, 3, 1, 1, 2, 0])
    log_p = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    expected = -log_p[np.arange(6), target]
    got = F.cross_entropy(t(logits), t(target), reduction="none")
    np.testing.assert_allclose(got.data, expected)
    np.testing.assert_allclose(F.cross_entropy(t(logits), t(target)).item(), expected.mean())
    np.testing.assert_allclose(F.cross_entropy(t(logits), t(target), reduction="sum").item(),
                               expected.sum())


def test_cross_entropy_errors() -> None:
    logits = pyrt.zeros(3, 4)
    with pytest.raises(IndexError, match="target 4 is out of bounds for 4 classes"):
        F.cross_entropy(logits, t([0, 4, 1]))
    with pytest.raises(ValueError, match=r"target must be \(3,\) class indices"):
        F.cross_entropy(logits, t([0, 1]))
    with pytest.raises(TypeError, match="integer class indices"):
        F.cross_entropy(logits, t([0.0, 1.0, 2.0]))
    with pytest.raises(ValueError, match="reduction must be one of"):
        F.cross_entropy(logits, t([0, 1, 2]), reduction="avg")


def test_binary_losses_match_closed_form_and_are_stable(rng) -> None:
    x, y = rng.standard_normal(10) * 5, (rng.random(10) > 0.5).astype(np.float64)
    p = 1 / (1 + np.exp(-x))
    expected = -(y * np.log(p) + (1 - y) * np.log(1 - p))
    np.testing.assert_allclose(F.binary_cross_entropy_with_logits(t(x), t(y), reduction="none").data,
                               expected, rtol=1e-8)
    np.testing.assert_allclose(F.binary_cross_entropy(t(p), t(y), reduction="none").data,
                               expected, rtol=1e-8)
    huge = F.binary_cross_entropy_with_logits(t([1000.0, -1000.0]), t([0.0, 1.0]))
    assert huge.item() == 1000.0
    assert F.binary_cross_entropy(t([0.0, 1.0]), t([1.0, 0.0])).item() == 100.0
    with pytest.raises(ValueError, match=r"probabilities in \[0, 1\]"):
        F.binary_cross_entropy(t([1.5]), t([1.0]))
    with pytest.raises(ValueError, match="same shape"):
        F.mse_loss(pyrt.ones(2), pyrt.ones(3))


def test_dropout_is_identity_in_eval_and_repeatable_with_seed() -> None:
    x = pyrt.ones(1000)
    assert F.dropout(x, 0.5, training=False) is x
    pyrt.manual_seed(3)
    a = F.dropout(x, 0.5)
    pyrt.manual_seed(3)
    b = F.dropout(x, 0.5)
    assert (a.data == b.data).all() and set(np.unique(a.data)) == {0.0, 2.0}
    assert F.dropout(x, 1.0).sum().item() == 0.0
    with pytest.raises(ValueError, match=r"p must be in \[0, 1\]"):
        F.dropout(x, 1.5)


def test_numpy_scalars_keep_the_tensor_dtype() -> None:
    x = pyrt.ones(2)
    for y in (x * np.float64(2), x / np.sqrt(np.float64(4)), np.float64(2) * x, x + np.array(1.0)):
        assert y.dtype == np.float32


def test_pow_gradient_of_x_to_the_zero_at_zero() -> None:
    x = pyrt.tensor([0.0, 1.0, 2.0], requires_grad=True)
    sum(x**i for i in range(3)).sum().backward()  # 1 + x + x^2
    assert x.grad.tolist() == [1.0, 3.0, 5.0]


@pytest.mark.parametrize("call", [
    lambda: ops.stack([pyrt.ones(2), pyrt.ones(2)], dim=-3),
    lambda: ops.cat([pyrt.ones(2), pyrt.ones(2)], dim=1),
    lambda: pyrt.ones(2, 1).squeeze(5),
    lambda: pyrt.ones(2, 3).transpose(0, 5),
    lambda: pyrt.ones(2, 3).flatten(0, 4),
])
def test_out_of_range_dims_raise_index_error(call) -> None:
    with pytest.raises(IndexError, match="out of range for a tensor of shape"):
        call()
