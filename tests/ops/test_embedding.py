"""``embedding`` and ``nn.Embedding``: lookup, gradient accumulation over repeated
indices (against np.add.at), padding_idx, index dtypes and bounds, and PyTorch parity."""

from __future__ import annotations

import numpy as np
import pytest

import pyrt
import pyrt.nn.functional as F
from pyrt import nn


def _table(rows: int = 7, dim: int = 3, dtype=np.float64) -> pyrt.Tensor:
    rng = np.random.default_rng(0)
    return pyrt.tensor(rng.standard_normal((rows, dim)).astype(dtype), requires_grad=True)


@pytest.mark.parametrize("index_dtype", [np.int32, np.int64])
def test_lookup_shape_and_values(index_dtype) -> None:
    weight = _table()
    idx = np.array([[0, 6, 2], [2, 2, 1]], dtype=index_dtype)
    out = F.embedding(pyrt.tensor(idx), weight)
    assert out.shape == (2, 3, 3)
    np.testing.assert_array_equal(out.data, weight.data[idx])


@pytest.mark.parametrize("shape", [(0,), (1,), (5,), (4, 13), (2, 3, 5)])
def test_gradient_accumulates_repeated_indices(shape: tuple[int, ...]) -> None:
    rng = np.random.default_rng(1)
    weight = _table(rows=5, dim=4)
    idx = rng.integers(0, 5, size=shape)  # many repeats
    g = rng.standard_normal((*shape, 4))
    F.embedding(idx, weight).backward(g)
    expected = np.zeros((5, 4))
    np.add.at(expected, idx.reshape(-1), g.reshape(-1, 4))
    np.testing.assert_allclose(weight.grad.data, expected, atol=1e-12)


def test_gradcheck() -> None:
    weight = _table(rows=4, dim=3)
    idx = np.array([[3, 0, 3], [1, 3, 0]])
    assert pyrt.gradcheck(lambda w: F.embedding(idx, w).tanh(), [weight])


def test_padding_idx_gets_no_gradient() -> None:
    weight = _table(rows=4, dim=2)
    idx = np.array([0, 1, 1, 3])
    F.embedding(idx, weight, padding_idx=1).sum().backward()
    np.testing.assert_array_equal(weight.grad.data, [[1, 1], [0, 0], [0, 0], [1, 1]])
    weight.grad = None
    F.embedding(idx, weight, padding_idx=-1).sum().backward()  # -1 is row 3
    np.testing.assert_array_equal(weight.grad.data[3], [0, 0])


def test_bad_indices_raise_clear_errors() -> None:
    weight = _table(rows=4)
    with pytest.raises(IndexError, match=r"index 4 is out of range for a table of 4 rows \(valid 0..3\)"):
        F.embedding(np.array([0, 4]), weight)
    with pytest.raises(IndexError, match="index -1 is out of range"):
        F.embedding(np.array([-1, 2]), weight)
    with pytest.raises(TypeError, match=r"indices must be int32 or int64, got .* float32"):
        F.embedding(np.array([0.0, 1.0], dtype=np.float32), weight)
    with pytest.raises(ValueError, match="padding_idx 9 is out of range"):
        F.embedding(np.array([0]), weight, padding_idx=9)


def test_module_init_padding_and_repr() -> None:
    pyrt.manual_seed(0)
    emb = nn.Embedding(1000, 8, padding_idx=3)
    assert repr(emb) == "Embedding(1000, 8, padding_idx=3)"
    assert emb.weight.shape == (1000, 8) and emb.weight.dtype == np.float32
    np.testing.assert_array_equal(emb.weight.data[3], 0)
    others = np.delete(emb.weight.data, 3, axis=0)
    assert abs(others.mean()) < 0.05 and abs(others.std() - 1) < 0.05  # N(0, 1)
    out = emb(pyrt.tensor(np.array([[3, 5]], dtype=np.int32)))
    out.sum().backward()
    assert emb.weight.grad.data[3].tolist() == [0.0] * 8
    assert emb.weight.grad.data[5].tolist() == [1.0] * 8
    with pytest.raises(ValueError, match="padding_idx 1000 must be within num_embeddings"):
        nn.Embedding(1000, 8, padding_idx=1000)


def test_matches_torch() -> None:
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(2)
    idx = rng.integers(0, 50, size=(6, 9))
    ours = nn.Embedding(50, 5, padding_idx=7)
    theirs = torch.nn.Embedding(50, 5, padding_idx=7)
    with torch.no_grad():
        theirs.weight.copy_(torch.from_numpy(ours.weight.data))
    g = rng.standard_normal((6, 9, 5)).astype(np.float32)
    out = ours(idx)
    out.backward(g)
    out_t = theirs(torch.from_numpy(idx))
    out_t.backward(torch.from_numpy(g))
    np.testing.assert_array_equal(out.data, out_t.detach().numpy())
    np.testing.assert_allclose(ours.weight.grad.data, theirs.weight.grad.numpy(), atol=1e-5)
