"""The loss arguments PyTorch users reach for: ``cross_entropy`` with class ``weight``,
``ignore_index``, ``label_smoothing``, class-probability targets, K-dimensional (N, C, d1, ...)
and unbatched (C,) inputs; ``nll_loss(weight=)``; ``binary_cross_entropy_with_logits`` with
``weight`` and ``pos_weight``. Each: float64 gradcheck and values and gradients equal to
PyTorch's, every reduction, and edge cases (all targets ignored, saturated logits)."""

from __future__ import annotations

import numpy as np
import pytest
from torch_parity import assert_matches_torch

import pyrt
import pyrt.nn.functional as F
from pyrt import nn

torch = pytest.importorskip("torch")
TF = torch.nn.functional
C = 5


def _case(shape: tuple[int, ...], seed: int = 0, ignore: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Logits of ``shape`` (class dim 1, or 0 when 1-D) and matching class indices, one ignored."""
    rng = np.random.default_rng(seed)
    logits = rng.standard_normal(shape) * 3
    target_shape = () if len(shape) == 1 else (shape[0], *shape[2:])
    target = rng.integers(0, shape[0 if len(shape) == 1 else 1], target_shape)
    if ignore and target.ndim:
        target.reshape(-1)[1] = -100
    return logits, target


SHAPES = [(4, C), (C,), (3, C, 4), (2, C, 3, 2)]
OPTIONS = [
    {}, {"label_smoothing": 0.2}, {"weight": True}, {"weight": True, "label_smoothing": 0.3},
    {"ignore_index": 2}, {"ignore_index": 2, "label_smoothing": 0.1, "weight": True},
]


def _call(fn, options: dict, weight_array: np.ndarray, module):
    kwargs = dict(options)
    if kwargs.pop("weight", False):
        kwargs["weight"] = module.tensor(weight_array)
    return lambda x, t: fn(x, t, **kwargs)


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("options", OPTIONS, ids=str)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cross_entropy_class_indices_match_torch(shape, options, reduction) -> None:
    logits, target = _case(shape)
    target[target == -100] = options.get("ignore_index", -100)
    weight = np.random.default_rng(9).uniform(0.2, 2.0, C)
    options = {**options, "reduction": reduction}
    assert_matches_torch(_call(F.cross_entropy, options, weight, pyrt),
                         _call(TF.cross_entropy, options, weight, torch), [logits, target],
                         rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("shape", [(4, C), (C,), (2, C, 3)], ids=str)
@pytest.mark.parametrize("options", [{}, {"label_smoothing": 0.25}, {"weight": True},
                                     {"weight": True, "label_smoothing": 0.1}], ids=str)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cross_entropy_probabilities_match_torch_with_target_gradient(shape, options, reduction) -> None:
    rng = np.random.default_rng(3)
    logits = rng.standard_normal(shape)
    probs = rng.dirichlet(np.ones(C), size=int(np.prod(shape)) // C)
    axis = 0 if len(shape) == 1 else 1
    target = np.moveaxis(probs.reshape(*[s for i, s in enumerate(shape) if i != axis], C), -1, axis)
    weight = rng.uniform(0.2, 2.0, C)
    options = {**options, "reduction": reduction}
    # The target requires a gradient too: soft targets can be learned (distillation).
    assert_matches_torch(_call(F.cross_entropy, options, weight, pyrt),
                         _call(TF.cross_entropy, options, weight, torch), [logits, target],
                         requires_grad=[True, True], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("options", [{"label_smoothing": 0.2, "weight": True}, {}])
def test_cross_entropy_gradcheck(options) -> None:
    logits, target = _case((2, C, 3), seed=4)
    weight = np.random.default_rng(9).uniform(0.2, 2.0, C)
    fn = _call(F.cross_entropy, options, weight, pyrt)
    assert pyrt.gradcheck(lambda x: fn(x, pyrt.tensor(target)), [pyrt.tensor(logits, requires_grad=True)])
    probs = np.random.default_rng(5).dirichlet(np.ones(C), size=4)
    x = pyrt.tensor(np.random.default_rng(6).standard_normal((4, C)), requires_grad=True)
    p = pyrt.tensor(probs, requires_grad=True)
    assert pyrt.gradcheck(lambda x, p: fn(x, p), [x, p])


def test_cross_entropy_every_target_ignored_is_nan_forward_zero_backward() -> None:
    x = pyrt.tensor(np.zeros((2, C)), requires_grad=True)
    for smoothing in (0.0, 0.1):
        loss = F.cross_entropy(x, pyrt.tensor([-100, -100]), label_smoothing=smoothing)
        theirs = TF.cross_entropy(torch.zeros(2, C, dtype=torch.float64, requires_grad=True),
                                  torch.tensor([-100, -100]), label_smoothing=smoothing)
        assert np.isnan(loss.item()) and np.isnan(theirs.item())
        x.grad = None
        loss.backward()
        assert np.array_equal(x.grad.data, np.zeros((2, C)))


def test_cross_entropy_saturated_logits_are_finite() -> None:
    x = np.array([[1000.0, -1000.0, 0.0]])
    assert_matches_torch(lambda x, t: F.cross_entropy(x, t, label_smoothing=0.1),
                         lambda x, t: TF.cross_entropy(x, t, label_smoothing=0.1), [x, np.array([1])])


def test_cross_entropy_errors() -> None:
    with pytest.raises(ValueError, match=r"target must be \(2, 4\) class indices"):
        F.cross_entropy(pyrt.zeros(2, C, 4), pyrt.tensor([[0, 1, 2]]))
    with pytest.raises(ValueError, match=r"weight is \(3,\) float32 .* expected \(5,\)"):
        F.cross_entropy(pyrt.zeros(2, C), pyrt.tensor([0, 1]), weight=pyrt.ones(3))
    with pytest.raises(ValueError, match=r"label_smoothing must be in \[0, 1\]"):
        F.cross_entropy(pyrt.zeros(2, C), pyrt.tensor([0, 1]), label_smoothing=1.5)
    with pytest.raises(TypeError, match="must be floating point"):
        F.cross_entropy(pyrt.zeros(2, C), pyrt.tensor(np.zeros((2, C), np.int64)))
    with pytest.raises(IndexError, match="target 7 is out of bounds for 5 classes"):
        F.cross_entropy(pyrt.zeros(2, C, 2), pyrt.tensor([[0, 7], [1, 1]]))


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_nll_loss_weight_matches_torch(shape, reduction) -> None:
    logits, target = _case(shape, seed=7)
    weight = np.random.default_rng(9).uniform(0.2, 2.0, C)
    assert_matches_torch(lambda x, t: F.nll_loss(x, t, pyrt.tensor(weight), reduction=reduction),
                         lambda x, t: TF.nll_loss(x, t, torch.tensor(weight), reduction=reduction),
                         [logits, target], rtol=1e-12, atol=1e-14)
    w = pyrt.tensor(weight)
    assert pyrt.gradcheck(lambda x: F.nll_loss(x, pyrt.tensor(target), w, reduction=reduction),
                          [pyrt.tensor(logits, requires_grad=True)])


BCE = [
    {}, {"pos_weight": (3,)}, {"weight": (4, 3)}, {"weight": (3,), "pos_weight": (3,)},
    {"weight": (4, 1), "pos_weight": (1,)},
]


@pytest.mark.parametrize("options", BCE, ids=str)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_bce_with_logits_weights_match_torch(options, reduction) -> None:
    rng = np.random.default_rng(2)
    x = np.concatenate([rng.standard_normal((3, 3)) * 3, [[-200.0, 0.0, 200.0]]])  # saturated logits too
    target = rng.uniform(0, 1, (4, 3))
    extra = {name: rng.uniform(0.3, 3.0, shape) for name, shape in options.items()}
    names = list(extra)

    def call(fn, module):
        return lambda x, t, *ws: fn(x, t, reduction=reduction,
                                    **{n: w for n, w in zip(names, ws, strict=True)})

    # Gradients for input and target against torch's (torch does not differentiate weight or
    # pos_weight; ours does, and the gradcheck below covers them).
    assert_matches_torch(call(F.binary_cross_entropy_with_logits, pyrt),
                         call(TF.binary_cross_entropy_with_logits, torch), [x, target, *extra.values()],
                         requires_grad=[True, True, *(False for _ in names)],
                         rtol=1e-10, atol=1e-12)
    inputs = [pyrt.tensor(a[:3], requires_grad=True) for a in (x, target)] + [
        pyrt.tensor(w if w.shape[0] != 4 else w[:3], requires_grad=True) for w in extra.values()]
    assert pyrt.gradcheck(call(F.binary_cross_entropy_with_logits, pyrt), inputs)


def test_bce_with_logits_errors() -> None:
    with pytest.raises(ValueError, match=r"pos_weight is .* it must broadcast to the input"):
        F.binary_cross_entropy_with_logits(pyrt.zeros(2, 3), pyrt.zeros(2, 3), pos_weight=pyrt.ones(2))


def test_loss_modules_take_the_new_options() -> None:
    rng = np.random.default_rng(0)
    logits, target = _case((3, C, 2), seed=8, ignore=False)
    target[0, 0] = 1  # the ignore_index below
    weight = rng.uniform(0.5, 2, C)
    ours = nn.CrossEntropyLoss(pyrt.tensor(weight), ignore_index=1, label_smoothing=0.2)
    theirs = torch.nn.CrossEntropyLoss(torch.tensor(weight), ignore_index=1, label_smoothing=0.2)
    assert_matches_torch(ours, theirs, [logits, target])
    assert list(ours.state_dict()) == list(theirs.state_dict()) == ["weight"]
    assert list(ours.parameters()) == []
    assert_matches_torch(nn.NLLLoss(pyrt.tensor(weight), reduction="sum"),
                         torch.nn.NLLLoss(torch.tensor(weight), reduction="sum"), [logits, target])
    x, t = rng.standard_normal((4, 3)), rng.uniform(0, 1, (4, 3))
    pos = rng.uniform(0.5, 2, 3)
    assert_matches_torch(nn.BCEWithLogitsLoss(pos_weight=pyrt.tensor(pos)),
                         torch.nn.BCEWithLogitsLoss(pos_weight=torch.tensor(pos)), [x, t])
    with pytest.raises(TypeError, match="deprecated"):
        nn.CrossEntropyLoss(size_average=True)
