"""pyrt.sparse: SparseLinear against the dense Linear holding the same (pruned) weight.

The oracle is pyrt's own dense layer (its SGEMM is tested against numpy and
torch elsewhere): forward outputs, gradients restricted to the pattern and a
few training steps must agree to float32 rounding.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

import pyrt
from pyrt import nn
from pyrt.nn.utils import prune
from pyrt.sparse import SparseLinear, break_even_sparsity, sparsify, to_sparse

RTOL, ATOL = 1e-5, 1e-5

# (in_features, out_features): ones, primes, sizes that are not multiples of any tile.
SHAPES = [(1, 1), (1, 7), (13, 1), (17, 5), (64, 33), (100, 257)]
LEADING = [(0,), (1,), (3,), (65,), (2, 5)]  # batch 0, 1, small, past a tile, and a 3-D input


def _pruned_linear(in_features: int, out_features: int, sparsity: float = 0.7, seed: int = 0,
                   bias: bool = True) -> nn.Linear:
    """A dense Linear whose weight has ``sparsity`` exact zeros (no hooks: a plain oracle)."""
    pyrt.manual_seed(seed)
    layer = nn.Linear(in_features, out_features, bias=bias)
    rng = np.random.default_rng(seed)
    layer.weight.data[rng.random(layer.weight.shape) < sparsity] = 0.0
    return layer


def _pattern(sparse: SparseLinear) -> tuple[np.ndarray, np.ndarray]:
    rows = np.repeat(np.arange(sparse.out_features), np.diff(sparse.indptr.data))
    return rows, sparse.indices.data


@pytest.mark.parametrize("in_features,out_features", SHAPES)
@pytest.mark.parametrize("leading", LEADING)
def test_forward_equals_dense(in_features: int, out_features: int, leading: tuple[int, ...]) -> None:
    dense = _pruned_linear(in_features, out_features)
    sparse = to_sparse(dense)
    x = pyrt.randn(*leading, in_features)
    out = sparse(x)
    assert out.shape == (*leading, out_features) and out.dtype == np.float32
    np.testing.assert_allclose(out.data, dense(x).data, rtol=RTOL, atol=ATOL)


# 0.7 computes grad_values as the dense product read at the pattern, 0.99 nonzero by nonzero.
@pytest.mark.parametrize("sparsity", [0.7, 0.99])
@pytest.mark.parametrize("in_features,out_features", SHAPES)
@pytest.mark.parametrize("leading", LEADING)
def test_backward_equals_dense_at_the_pattern(in_features: int, out_features: int,
                                              leading: tuple[int, ...], sparsity: float) -> None:
    dense = _pruned_linear(in_features, out_features, sparsity=sparsity)
    sparse = to_sparse(dense)
    x_np = np.random.default_rng(1).standard_normal((*leading, in_features)).astype(np.float32)
    weights = np.random.default_rng(2).standard_normal((*leading, out_features)).astype(np.float32)
    grads = []
    for layer in (sparse, dense):
        x = pyrt.tensor(x_np, requires_grad=True)
        (layer(x) * pyrt.tensor(weights)).sum().backward()
        grads.append(x.grad.data)
    np.testing.assert_allclose(grads[0], grads[1], rtol=RTOL, atol=ATOL)
    rows, cols = _pattern(sparse)
    np.testing.assert_allclose(sparse.values.grad.data, dense.weight.grad.data[rows, cols],
                               rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(sparse.bias.grad.data, dense.bias.grad.data, rtol=RTOL, atol=ATOL)


def test_backward_against_finite_differences() -> None:
    """An oracle independent of our dense layer: central differences in float64 on the CSR math."""
    sparse = to_sparse(_pruned_linear(6, 4, sparsity=0.5))
    x_np = np.random.default_rng(3).standard_normal((5, 6)).astype(np.float32)
    x = pyrt.tensor(x_np, requires_grad=True)
    (sparse(x) ** 2).sum().backward()
    rows, cols = _pattern(sparse)
    values = sparse.values.data.astype(np.float64)

    def loss(vals: np.ndarray) -> float:
        weight = np.zeros((4, 6))
        weight[rows, cols] = vals
        return float(((x_np @ weight.T + sparse.bias.data) ** 2).sum())

    eps = 1e-6
    numeric = np.array([(loss(values + eps * e) - loss(values - eps * e)) / (2 * eps)
                        for e in np.eye(len(values))])
    np.testing.assert_allclose(sparse.values.grad.data, numeric, rtol=1e-3, atol=1e-3)


def test_non_contiguous_input_and_chained_layers() -> None:
    first, second = _pruned_linear(9, 11, seed=1), _pruned_linear(11, 4, seed=2)
    model = nn.Sequential(to_sparse(first), nn.ReLU(), to_sparse(second))
    reference = nn.Sequential(first, nn.ReLU(), second)
    x = pyrt.tensor(np.random.default_rng(4).standard_normal((9, 6)).astype(np.float32).T)  # a view
    np.testing.assert_allclose(model(x).data, reference(x).data, rtol=RTOL, atol=ATOL)
    model(x).sum().backward()  # the input needs no gradient: only the weights' are computed
    reference(x).sum().backward()
    rows, cols = _pattern(model[0])
    np.testing.assert_allclose(model[0].values.grad.data, first.weight.grad.data[rows, cols],
                               rtol=RTOL, atol=ATOL)


def _train(model: nn.Module, optimizer: pyrt.optim.Optimizer, steps: int = 5) -> None:
    rng = np.random.default_rng(5)
    for _ in range(steps):
        x = pyrt.tensor(rng.standard_normal((8, 12)).astype(np.float32))
        target = pyrt.tensor(rng.standard_normal((8, 3)).astype(np.float32))
        optimizer.zero_grad()
        nn.MSELoss()(model(x), target).backward()
        optimizer.step()


@pytest.mark.parametrize("make_optimizer", [
    lambda params: pyrt.optim.SGD(params, lr=0.1, momentum=0.9),
    lambda params: pyrt.optim.Adam(params, lr=0.01),
], ids=["sgd", "adam"])
def test_fine_tuning_keeps_the_pattern_and_matches_masked_dense(make_optimizer) -> None:
    def masked_model() -> nn.Sequential:
        pyrt.manual_seed(0)
        model = nn.Sequential(nn.Linear(12, 10), nn.ReLU(), nn.Linear(10, 3))
        for layer in (model[0], model[2]):
            prune.l1_unstructured(layer, "weight", amount=0.8)
        return model

    dense = masked_model()
    sparse = sparsify(masked_model(), min_sparsity=0.5)
    assert isinstance(sparse[0], SparseLinear) and isinstance(sparse[2], SparseLinear)
    patterns = [(m.indptr.data.copy(), m.indices.data.copy()) for m in (sparse[0], sparse[2])]
    sparse_optimizer = make_optimizer(sparse.parameters())
    # Only the values and biases are trainable; the pattern is buffers.
    assert sorted(n for n, _ in sparse.named_parameters()) == ["0.bias", "0.values", "2.bias", "2.values"]
    _train(dense, make_optimizer(dense.parameters()))
    _train(sparse, sparse_optimizer)
    for index, (indptr, indices) in zip((0, 2), patterns, strict=True):
        layer = sparse[index]
        np.testing.assert_array_equal(layer.indptr.data, indptr)
        np.testing.assert_array_equal(layer.indices.data, indices)
        trained = layer.to_dense().weight.data
        pruned = dense[index].weight_orig.data * dense[index].weight_mask.data
        assert np.all(trained[dense[index].weight_mask.data == 0] == 0)  # zeros stay zero
        np.testing.assert_allclose(trained, pruned, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(layer.bias.data, dense[index].bias.data, rtol=1e-4, atol=1e-5)


def test_to_sparse_of_a_pruned_linear() -> None:
    pyrt.manual_seed(0)
    layer = nn.Linear(50, 30)
    prune.l1_unstructured(layer, "weight", amount=0.9)
    sparse = to_sparse(layer)
    assert sparse.nnz == np.count_nonzero(layer.weight.data) == 150
    assert sparse.indptr.data.dtype == sparse.indices.data.dtype == np.int64
    assert sparse.values.data.dtype == np.float32 and isinstance(sparse.values, nn.Parameter)
    assert repr(sparse) == "SparseLinear(in_features=50, out_features=30, bias=True, nnz=150, sparsity=0.900)"
    back = sparse.to_dense()
    assert isinstance(back, nn.Linear) and back.weight.dtype == np.float32
    np.testing.assert_array_equal(back.weight.data, layer.weight.data)  # the round trip is exact
    np.testing.assert_array_equal(back.bias.data, layer.bias.data)
    again = to_sparse(back)
    for name in ("indptr", "indices", "values", "bias"):
        np.testing.assert_array_equal(getattr(again, name).data, getattr(sparse, name).data)
    x = pyrt.randn(4, 50)
    np.testing.assert_allclose(sparse(x).data, layer(x).data, rtol=RTOL, atol=ATOL)
    # The copy is independent, and reflects weight_orig changed since the last forward.
    layer.weight_orig.data *= 2.0
    np.testing.assert_array_equal(to_sparse(layer).values.data, 2.0 * sparse.values.data)


def test_to_sparse_without_bias_and_fully_zero_or_dense_weights() -> None:
    zero = nn.Linear(3, 2, bias=False)
    zero.weight.data[...] = 0.0
    sparse = to_sparse(zero)
    assert sparse.nnz == 0 and sparse.bias is None
    assert sparse(pyrt.ones(4, 3)).data.tolist() == [[0.0, 0.0]] * 4
    full = nn.Linear(3, 2)
    x = pyrt.randn(5, 3)
    np.testing.assert_allclose(to_sparse(full)(x).data, full(x).data, rtol=RTOL, atol=ATOL)


def test_state_dict_round_trip_and_a_reloaded_pattern(tmp_path) -> None:
    source = to_sparse(_pruned_linear(20, 10, seed=1))
    assert list(source.state_dict()) == ["values", "bias", "indptr", "indices"]
    path = tmp_path / "sparse.npz"
    pyrt.save(source.state_dict(), path)
    # Same nnz, different pattern and values: load_state_dict rewrites the buffers in place.
    target = to_sparse(_pruned_linear(20, 10, seed=1))
    target.values.data[...] = 0.0
    target.indices.data[...] = 0  # wrong on purpose: the load must overwrite it
    target.load_state_dict(pyrt.load(path))
    x = pyrt.randn(3, 20)
    np.testing.assert_array_equal(target(x).data, source(x).data)

    # A backward before and after loading another pattern of the same nnz: the cached
    # transpose must follow the new pattern.
    other = nn.Linear(20, 10)
    other.weight.data[...] = 0.0
    rows, cols = np.nonzero(source.to_dense().weight.data)
    other.weight.data[(rows + 3) % 10, cols] = np.arange(1, len(rows) + 1, dtype=np.float32)
    other_sparse = to_sparse(other)
    assert other_sparse.nnz == source.nnz
    x = pyrt.randn(3, 20, requires_grad=True)
    weights = pyrt.randn(3, 10)
    (target(x) * weights).sum().backward()
    target.load_state_dict(other_sparse.state_dict())
    x.grad = target.values.grad = None
    (target(x) * weights).sum().backward()
    dense_x = pyrt.tensor(x.data, requires_grad=True)
    (other(dense_x) * weights).sum().backward()
    np.testing.assert_allclose(x.grad.data, dense_x.grad.data, rtol=RTOL, atol=ATOL)
    rows, cols = _pattern(target)
    np.testing.assert_allclose(target.values.grad.data, other.weight.grad.data[rows, cols],
                               rtol=RTOL, atol=ATOL)


def test_sparsify_converts_exactly_the_layers_over_the_threshold() -> None:
    model = nn.Sequential(_pruned_linear(16, 16, sparsity=0.95), nn.ReLU(),
                          _pruned_linear(16, 16, sparsity=0.1),
                          nn.Sequential(_pruned_linear(16, 8, sparsity=0.6)))
    measured = [float(np.mean(layer.weight.data == 0)) for layer in (model[0], model[2], model[3][0])]
    x = pyrt.randn(5, 16)
    expected = model(x).data
    assert sparsify(model, min_sparsity=0.5) is model  # in place
    kinds = [type(m).__name__ for m in (model[0], model[2], model[3][0])]
    assert kinds == ["SparseLinear" if s >= 0.5 else "Linear" for s in measured]
    assert kinds == ["SparseLinear", "Linear", "SparseLinear"]
    np.testing.assert_allclose(model(x).data, expected, rtol=RTOL, atol=ATOL)
    # Exactly at the threshold converts (>=); a layer shared twice stays shared.
    shared = _pruned_linear(4, 4, sparsity=0.0)
    shared.weight.data[:2] = 0.0
    tied = sparsify(nn.Sequential(shared, shared), min_sparsity=0.5)
    assert isinstance(tied[0], SparseLinear) and tied[0] is tied[1]
    # A model that is itself a qualifying Linear comes back replaced.
    assert isinstance(sparsify(shared, min_sparsity=0.5), SparseLinear)
    assert sparsify(shared, min_sparsity=0.75) is shared


def test_sparsify_default_threshold_is_the_measured_break_even() -> None:
    empty = nn.Linear(8, 8)
    empty.weight.data[...] = 0.0  # sparsity 1.0: past any break-even
    model = sparsify(nn.Sequential(empty, nn.Linear(8, 8)))
    assert isinstance(model[0], SparseLinear) and isinstance(model[1], nn.Linear)


def test_break_even_sparsity_is_measured_once_per_process() -> None:
    first = break_even_sparsity()
    assert 0.0 < first <= 1.0  # 1.0 would mean sparse never won here
    start = time.perf_counter()
    assert break_even_sparsity() == first
    assert time.perf_counter() - start < 0.01
    assert break_even_sparsity.cache_info().hits >= 1


def test_errors_name_the_problem() -> None:
    with pytest.raises(TypeError, match=r"expected a pyrt.nn.Linear, got Conv2d"):
        to_sparse(nn.Conv2d(1, 1, 3))
    with pytest.raises(TypeError, match=r"weight is .*float64"):
        to_sparse(nn.Linear(3, 2).double())
    with pytest.raises(TypeError, match=r"model must be a pyrt.nn.Module"):
        sparsify("not a model")
    with pytest.raises(ValueError, match="min_sparsity must be within"):
        sparsify(nn.Linear(2, 2), min_sparsity=1.5)
    sparse = to_sparse(nn.Linear(3, 2))
    with pytest.raises(ValueError, match=r"expects \(\.\.\., 3\)"):
        sparse(pyrt.ones(2, 4))
    with pytest.raises(TypeError, match="float64"):
        sparse(pyrt.ones(2, 3).double())
    with pytest.raises(ValueError, match="invalid CSR"):
        SparseLinear(3, 2, np.array([0, 2, 1]), np.array([0]), np.ones(1, np.float32))
    with pytest.raises(ValueError, match="invalid CSR"):
        SparseLinear(3, 1, np.array([0, 1]), np.array([5]), np.ones(1, np.float32))
    with pytest.raises(TypeError, match=r"values is .*float64"):
        SparseLinear(3, 1, np.array([0, 1]), np.array([0]), np.ones(1))
