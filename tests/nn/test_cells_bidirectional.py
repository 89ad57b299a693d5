"""``LSTMCell``/``GRUCell``, ``bidirectional=True`` LSTM/GRU and ``BatchNorm3d`` against PyTorch with
copied weights: parameter names and shapes, outputs, final states and every gradient
(inputs, initial states, parameters), batched and unbatched; float64 gradchecks."""

from __future__ import annotations

import numpy as np
import pytest
from torch_parity import assert_module_matches_torch

import pyrt
from pyrt import nn

torch = pytest.importorskip("torch")
IN, H = 5, 4


def _rand(*shape: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape)


@pytest.mark.parametrize("kind", ["LSTMCell", "GRUCell"])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("batched", [True, False])
@pytest.mark.parametrize("with_state", [True, False])
def test_cells_match_torch(kind, bias, batched, with_state) -> None:
    theirs = getattr(torch.nn, kind)(IN, H, bias=bias, dtype=torch.float64)
    ours = getattr(nn, kind)(IN, H, bias=bias, dtype=np.float64)
    assert [(n, p.shape) for n, p in ours.named_parameters()] == [
        (n, tuple(p.shape)) for n, p in theirs.named_parameters()]
    assert repr(ours) == repr(theirs)
    lead = (3,) if batched else ()
    lstm = kind == "LSTMCell"
    arrays = [_rand(*lead, IN)]
    if with_state:
        arrays += [_rand(*lead, H, seed=1)] + ([_rand(*lead, H, seed=2)] if lstm else [])

    def call(module, x, *state):
        if not state:
            return module(x)
        return module(x, tuple(state)) if lstm else module(x, state[0])

    assert_module_matches_torch(ours, theirs, arrays, call)


def test_cells_gradcheck_and_errors() -> None:
    cell = nn.LSTMCell(3, 2, dtype=np.float64)
    x = pyrt.tensor(_rand(2, 3), requires_grad=True)
    h, c = (pyrt.tensor(_rand(2, 2, seed=s), requires_grad=True) for s in (1, 2))
    assert pyrt.gradcheck(lambda x, h, c: cell(x, (h, c))[1], [x, h, c])
    gru = nn.GRUCell(3, 2, dtype=np.float64)
    assert pyrt.gradcheck(lambda x, h: gru(x, h), [x, h])
    with pytest.raises(ValueError, match=r"expected input \(batch, 3\) or \(3,\)"):
        cell(pyrt.tensor(_rand(2, 4)))
    with pytest.raises(ValueError, match=r"expected h of shape \(2, 2\)"):
        cell(x, (pyrt.tensor(_rand(3, 2)), c))


@pytest.mark.parametrize("kind", ["LSTM", "GRU"])
@pytest.mark.parametrize("num_layers", [1, 2])
@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("with_state", [False, True])
def test_bidirectional_matches_torch(kind, num_layers, batch_first, with_state) -> None:
    theirs = getattr(torch.nn, kind)(IN, H, num_layers=num_layers, batch_first=batch_first,
                                     bidirectional=True, dtype=torch.float64)
    ours = getattr(nn, kind)(IN, H, num_layers=num_layers, batch_first=batch_first, bidirectional=True,
                             dtype=np.float64)
    assert [(n, p.shape) for n, p in ours.named_parameters()] == [
        (n, tuple(p.shape)) for n, p in theirs.named_parameters()]
    assert repr(ours) == repr(theirs)
    T, B = 6, 3
    lstm = kind == "LSTM"
    arrays = [_rand(*((B, T, IN) if batch_first else (T, B, IN)))]
    if with_state:
        arrays += [_rand(2 * num_layers, B, H, seed=s) for s in ((1, 2) if lstm else (1,))]

    def call(module, x, *state):
        if not state:
            out, final = module(x)
        else:
            out, final = module(x, tuple(state) if lstm else state[0])
        return (out, *final) if lstm else (out, final)

    assert_module_matches_torch(ours, theirs, arrays, call)


@pytest.mark.parametrize("kind", ["LSTM", "GRU"])
def test_bidirectional_unbatched_and_gradcheck(kind) -> None:
    theirs = getattr(torch.nn, kind)(IN, H, bidirectional=True, dtype=torch.float64)
    ours = getattr(nn, kind)(IN, H, bidirectional=True, dtype=np.float64)
    assert_module_matches_torch(ours, theirs, [_rand(4, IN)], lambda m, x: m(x)[0])
    x = pyrt.tensor(_rand(3, 2, IN), requires_grad=True)
    assert pyrt.gradcheck(lambda x: ours(x)[0], [x])
    with pytest.raises(ValueError, match=r"expected h(0|x) of shape \(2, 2, 4\)"):
        ours(x, (pyrt.tensor(_rand(1, 2, H)),) * 2 if kind == "LSTM" else pyrt.tensor(_rand(1, 2, H)))


@pytest.mark.parametrize("training", [True, False])
def test_batchnorm3d_matches_torch(training) -> None:
    theirs = torch.nn.BatchNorm3d(3, dtype=torch.float64)
    ours = nn.BatchNorm3d(3, dtype=np.float64)
    assert repr(ours) == repr(theirs)
    with torch.no_grad():
        theirs.weight.uniform_(0.5, 1.5)
        theirs.bias.uniform_(-0.5, 0.5)
        theirs.running_mean.uniform_(-1, 1)
    ours.train(training)
    theirs.train(training)
    x = _rand(2, 3, 4, 3, 5)
    assert_module_matches_torch(ours, theirs, [x])
    np.testing.assert_allclose(ours.running_mean.data, theirs.running_mean.numpy(), rtol=1e-12)
    np.testing.assert_allclose(ours.running_var.data, theirs.running_var.numpy(), rtol=1e-12)
    with pytest.raises(ValueError, match="expected 5D input"):
        ours(pyrt.ones(2, 3, 4, 4))
