"""Loss modules against numpy closed forms, gradchecked in float64, and their options."""

from __future__ import annotations

import numpy as np
import pytest

import pyrt
from pyrt import nn

REDUCTIONS = ["mean", "sum", "none"]


def _reduce(losses: np.ndarray, reduction: str) -> np.ndarray:
    return {"mean": losses.mean, "sum": losses.sum}.get(reduction, lambda: losses)()


def _log_softmax(x: np.ndarray) -> np.ndarray:
    shifted = x - x.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def _f64(rng: np.random.Generator, *shape: int) -> pyrt.Tensor:
    return pyrt.tensor(rng.standard_normal(shape), requires_grad=True)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_mse_loss(rng: np.random.Generator, reduction: str) -> None:
    x, t = rng.standard_normal((4, 3)), rng.standard_normal((4, 3))
    out = nn.MSELoss(reduction=reduction)(pyrt.tensor(x), pyrt.tensor(t))
    np.testing.assert_allclose(out.data, _reduce((x - t) ** 2, reduction), rtol=1e-12)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_cross_entropy_loss(rng: np.random.Generator, reduction: str) -> None:
    logits, target = rng.standard_normal((5, 7)), rng.integers(0, 7, 5)
    out = nn.CrossEntropyLoss(reduction=reduction)(pyrt.tensor(logits), pyrt.tensor(target))
    expected = -_log_softmax(logits)[np.arange(5), target]
    np.testing.assert_allclose(out.data, _reduce(expected, reduction), rtol=1e-12)


def test_cross_entropy_ignore_index_excluded_from_mean(rng: np.random.Generator) -> None:
    logits = rng.standard_normal((4, 3))
    target = np.array([0, -1, 2, -1])
    out = nn.CrossEntropyLoss(ignore_index=-1)(pyrt.tensor(logits), pyrt.tensor(target))
    per_row = -_log_softmax(logits)[[0, 2], [0, 2]]
    np.testing.assert_allclose(out.item(), per_row.mean(), rtol=1e-12)


def test_cross_entropy_large_logits_stable() -> None:
    out = nn.CrossEntropyLoss()(pyrt.tensor([[1000.0, 0.0]]), pyrt.tensor([1]))
    assert out.item() == pytest.approx(1000.0)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_nll_loss(rng: np.random.Generator, reduction: str) -> None:
    log_probs, target = _log_softmax(rng.standard_normal((6, 4))), rng.integers(0, 4, 6)
    out = nn.NLLLoss(reduction=reduction)(pyrt.tensor(log_probs), pyrt.tensor(target))
    np.testing.assert_allclose(out.data, _reduce(-log_probs[np.arange(6), target], reduction),
                               rtol=1e-12)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_bce_loss(rng: np.random.Generator, reduction: str) -> None:
    p, t = rng.uniform(0.05, 0.95, (3, 4)), rng.uniform(0, 1, (3, 4))
    out = nn.BCELoss(reduction=reduction)(pyrt.tensor(p), pyrt.tensor(t))
    expected = -(t * np.log(p) + (1 - t) * np.log(1 - p))
    np.testing.assert_allclose(out.data, _reduce(expected, reduction), rtol=1e-12)


def test_bce_loss_clamps_log_at_minus_100() -> None:
    out = nn.BCELoss()(pyrt.tensor([0.0, 1.0]), pyrt.tensor([1.0, 0.0]))
    assert out.item() == pytest.approx(100.0)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_bce_with_logits_loss(rng: np.random.Generator, reduction: str) -> None:
    x, t = rng.standard_normal((3, 4)) * 3, rng.uniform(0, 1, (3, 4))
    out = nn.BCEWithLogitsLoss(reduction=reduction)(pyrt.tensor(x), pyrt.tensor(t))
    sig = 1 / (1 + np.exp(-x))
    expected = -(t * np.log(sig) + (1 - t) * np.log(1 - sig))
    np.testing.assert_allclose(out.data, _reduce(expected, reduction), rtol=1e-10)


def test_bce_with_logits_extreme_logits_finite() -> None:
    out = nn.BCEWithLogitsLoss()(pyrt.tensor([1000.0, -1000.0]), pyrt.tensor([0.0, 1.0]))
    assert out.item() == pytest.approx(1000.0)


# --- gradients (float64 gradcheck) --------------------------------------------------

@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_mse_loss_gradcheck(rng: np.random.Generator, reduction: str) -> None:
    x, t = _f64(rng, 3, 2), pyrt.tensor(rng.standard_normal((3, 2)))
    assert pyrt.gradcheck(lambda x: nn.MSELoss(reduction=reduction)(x, t), [x])


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_cross_entropy_loss_gradcheck(rng: np.random.Generator, reduction: str) -> None:
    x, t = _f64(rng, 4, 5), pyrt.tensor(np.array([0, 4, -100, 2]))
    assert pyrt.gradcheck(lambda x: nn.CrossEntropyLoss(reduction=reduction)(x, t), [x])


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_nll_loss_gradcheck(rng: np.random.Generator, reduction: str) -> None:
    x, t = _f64(rng, 4, 3), pyrt.tensor(np.array([2, 0, 1, 1]))
    assert pyrt.gradcheck(lambda x: nn.NLLLoss(reduction=reduction)(x.log_softmax(1), t), [x])


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_bce_loss_gradcheck(rng: np.random.Generator, reduction: str) -> None:
    p = pyrt.tensor(rng.uniform(0.1, 0.9, (3, 3)), requires_grad=True)
    t = pyrt.tensor(rng.uniform(0, 1, (3, 3)))
    assert pyrt.gradcheck(lambda p: nn.BCELoss(reduction=reduction)(p, t), [p])


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_bce_with_logits_loss_gradcheck(rng: np.random.Generator, reduction: str) -> None:
    x, t = _f64(rng, 2, 5), pyrt.tensor(rng.uniform(0, 1, (2, 5)))
    assert pyrt.gradcheck(lambda x: nn.BCEWithLogitsLoss(reduction=reduction)(x, t), [x])


def test_cross_entropy_grad_is_softmax_minus_onehot(rng: np.random.Generator) -> None:
    logits, target = rng.standard_normal((3, 4)), np.array([1, 0, 3])
    x = pyrt.tensor(logits, requires_grad=True)
    nn.CrossEntropyLoss(reduction="sum")(x, pyrt.tensor(target)).backward()
    softmax = np.exp(_log_softmax(logits))
    np.testing.assert_allclose(x.grad.data, softmax - np.eye(4)[target], rtol=1e-12, atol=1e-15)


# --- options ---------------------------------------------------------------------------

@pytest.mark.parametrize("loss", [nn.MSELoss, nn.CrossEntropyLoss, nn.NLLLoss, nn.BCELoss,
                                  nn.BCEWithLogitsLoss])
def test_bad_reduction_rejected_at_construction(loss: type[nn.Module]) -> None:
    with pytest.raises(ValueError, match="reduction must be one of"):
        loss(reduction="avg")


def test_loss_modules_have_no_parameters_and_plain_repr() -> None:
    loss = nn.CrossEntropyLoss()
    assert list(loss.parameters()) == [] and repr(loss) == "CrossEntropyLoss()"


def test_cross_entropy_target_out_of_range_is_clear() -> None:
    with pytest.raises(IndexError, match="target 5 is out of bounds for 3 classes"):
        nn.CrossEntropyLoss()(pyrt.zeros(2, 3), pyrt.tensor([0, 5]))
