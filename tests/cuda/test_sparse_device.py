"""The CUDA SpMM and reductions through pyrt.kernels, and ``SparseLinear`` on ``"cuda"``.

On the CPU fake of cupy (tests/fake_cupy.py, whose kernels are pyrt._cuda_emulator: the CUDA
source run on the CPU) always, and on real cupy where a GPU is there (the ``gpu`` fixture):
the entry points' checks, device handling and pointer/stride passing, and a sparsified MLP
that trains to the CPU's losses on the GPU.
"""

from __future__ import annotations

import numpy as np
import pytest
from classifier_steps import train_steps

import pyrt
from pyrt import kernels, nn
from pyrt.nn.utils import prune
from pyrt.sparse import SparseLinear, sparsify, to_sparse


def _csr(rng: np.random.Generator, m: int, k: int, density: float):
    dense = rng.uniform(-1, 1, size=(m, k)).astype(np.float32) * (rng.random((m, k)) < density)
    rows, cols = np.nonzero(dense)
    indptr = np.zeros(m + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=m), out=indptr[1:])
    return dense, indptr, cols.astype(np.int64), dense[rows, cols]


def test_spmm_on_cupy_arrays_matches_numpy(gpu) -> None:
    rng = np.random.default_rng(0)
    _, indptr, indices, values = _csr(rng, 13, 37, 0.3)
    b = rng.standard_normal((37, 20)).astype(np.float32)
    want = kernels.spmm(indptr, indices, values, (13, 37), b)
    got = kernels.spmm(gpu.asarray(indptr), gpu.asarray(indices), gpu.asarray(values), (13, 37),
                       gpu.asarray(b))
    assert isinstance(got, gpu.ndarray) and got.device.id == 0
    np.testing.assert_allclose(got.get(), want, rtol=1e-5, atol=1e-6)
    # A transposed b (column stride != 1) is copied to rows first; an offset view is passed as is.
    b_t = gpu.asarray(np.ascontiguousarray(b.T)).T
    np.testing.assert_allclose(kernels.spmm(gpu.asarray(indptr), gpu.asarray(indices), gpu.asarray(values),
                                            (13, 37), b_t).get(), want, rtol=1e-5, atol=1e-6)
    # Host structure, device values and b: the structure is copied to the GPU for the product.
    mixed = kernels.spmm(indptr, indices, gpu.asarray(values), (13, 37), gpu.asarray(b))
    np.testing.assert_allclose(mixed.get(), want, rtol=1e-5, atol=1e-6)
    wide = gpu.asarray(np.concatenate([np.zeros((37, 1), np.float32), b], axis=1))
    np.testing.assert_allclose(kernels.spmm(gpu.asarray(indptr), gpu.asarray(indices), gpu.asarray(values),
                                            (13, 37), wide[:, 1:]).get(), want, rtol=1e-5, atol=1e-6)


def test_csr_pattern_lives_on_a_device(gpu) -> None:
    rng = np.random.default_rng(1)
    dense, indptr, indices, values = _csr(rng, 9, 11, 0.4)
    b = rng.standard_normal((11, 6)).astype(np.float32)
    host = kernels.CSRPattern(indptr, indices, (9, 11))
    assert host.device == "cpu" and host.to("cpu") is host
    on_gpu = host.to("cuda")
    assert on_gpu.device == "cuda:0" and on_gpu.to(0) is on_gpu and on_gpu.to("cpu").device == "cpu"
    assert on_gpu.indptr is host.indptr  # the validated host arrays are shared, not checked again
    got = on_gpu.matmul(gpu.asarray(values), gpu.asarray(b))
    np.testing.assert_allclose(got.get(), dense.astype(np.float64) @ b, rtol=1e-5, atol=1e-6)
    bias = rng.standard_normal(9).astype(np.float32)
    with_bias = on_gpu.matmul(gpu.asarray(values), gpu.asarray(b), bias=gpu.asarray(bias))
    np.testing.assert_allclose(with_bias.get(), got.get() + bias[:, None], rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="different devices"):
        on_gpu.matmul(gpu.asarray(values), gpu.asarray(b), bias=bias)
    with pytest.raises(ValueError, match="different devices"):
        on_gpu.matmul(values, b, bias=gpu.asarray(bias))
    # The product runs where its operands are: a CPU pattern makes its GPU copy on first use.
    np.testing.assert_array_equal(host.matmul(gpu.asarray(values), gpu.asarray(b)).get(), got.get())
    np.testing.assert_array_equal(on_gpu.matmul(values, b), host.matmul(values, b))
    built = kernels.CSRPattern(gpu.asarray(indptr), gpu.asarray(indices), (9, 11))  # from cupy arrays
    assert built.device == "cuda:0" and isinstance(built.indptr, np.ndarray)
    empty = kernels.CSRPattern(np.zeros(4, np.int64), np.zeros(0, np.int64), (3, 5)).to("cuda")
    out = empty.matmul(gpu.zeros(0, dtype=np.float32), gpu.ones((5, 2), dtype=np.float32))
    assert (out.get() == 0).all()  # nnz == 0: every row empty


def test_spmm_device_errors(fake_gpu) -> None:
    rng = np.random.default_rng(2)
    _, indptr, indices, values = _csr(rng, 4, 5, 0.5)
    cp = fake_gpu
    host = kernels.CSRPattern(indptr, indices, (4, 5))
    b = cp.ones((5, 3), dtype=np.float32)
    with pytest.raises(ValueError, match=r"different devices \(values: cpu, b: cuda:0\)"):
        host.matmul(values, b)
    on_gpu = host.to("cuda:0")
    with cp.cuda.Device(1):
        b1 = cp.ones((5, 3), dtype=np.float32)
    with pytest.raises(ValueError, match=r"different devices \(values: cuda:0, b: cuda:1\)"):
        on_gpu.matmul(cp.asarray(values), b1)
    with pytest.raises(ValueError, match=r"values: cuda:0, b: cuda:0, out: cpu"):
        on_gpu.matmul(cp.asarray(values), b, out=np.empty((4, 3), np.float32))
    with pytest.raises(TypeError, match=r"values must be \(\d+,\) float32"):
        on_gpu.matmul(cp.asarray(values.astype(np.float64)), b)
    with pytest.raises(ValueError, match="inner dimensions 5 != 4"):
        on_gpu.matmul(cp.asarray(values), cp.ones((4, 3), dtype=np.float32))
    with pytest.raises(ValueError, match="out is"):
        on_gpu.matmul(cp.asarray(values), b, out=cp.empty((4, 4), dtype=np.float32))
    with pytest.raises(ValueError, match="indptr is on cuda:0 but indices is on cpu"):
        kernels.CSRPattern(cp.asarray(indptr), indices, (4, 5))
    with pytest.raises(ValueError, match="invalid CSR matrix"):  # checked on the host, as on the CPU
        kernels.CSRPattern(cp.asarray(indptr), cp.asarray(indices + 10), (4, 5))


def test_int32_limit_of_the_device_pattern(fake_gpu, monkeypatch) -> None:
    _, indptr, indices, _ = _csr(np.random.default_rng(3), 4, 5, 1.0)
    monkeypatch.setattr(kernels, "_INT32_MAX", 19)  # 20 nonzeros: one past the (lowered) limit
    with pytest.raises(ValueError, match=r"int32 indices.*nnz=20"):
        kernels.CSRPattern(indptr, indices, (4, 5)).to("cuda")


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int32, np.int64])
@pytest.mark.parametrize("op", ["sum", "prod", "max", "min"])
def test_reduce_inplace_on_cupy_arrays(gpu, dtype, op) -> None:
    rng = np.random.default_rng(4)
    a = (rng.standard_normal(41) * 100).astype(dtype)
    b = (rng.standard_normal(41) * 100).astype(dtype)
    dst, src = gpu.asarray(a), gpu.asarray(b)
    assert kernels.reduce_inplace(dst[1:], src[1:], op) is not None  # offset views: the loose path
    want = a.copy()
    want[1:] = {"sum": np.add, "prod": np.multiply, "max": np.maximum, "min": np.minimum}[op](a[1:], b[1:])
    np.testing.assert_array_equal(dst.get(), want)


def test_reduction_device_errors(fake_gpu) -> None:
    cp = fake_gpu
    x = cp.ones(4, dtype=np.float32)
    with cp.cuda.Device(1):
        y = cp.ones(4, dtype=np.float32)
    with pytest.raises(ValueError, match=r"different devices \(cuda:0, cuda:1\)"):
        kernels.reduce_inplace(x, y)
    with pytest.raises(ValueError, match=r"different devices \(cuda:0, cpu\)"):
        kernels.reduce_inplace(x, np.ones(4, np.float32))
    with pytest.raises(ValueError, match="partly overlap"):
        kernels.reduce_inplace(x[1:], x[:-1])
    with pytest.raises(TypeError, match="contiguous array"):
        kernels.reduce_inplace(x[::2], x[1::2])


# --- SparseLinear on the GPU --------------------------------------------------------------------

# 0.8: grad of the values as a dense product read at the pattern; 0.99: nonzero by nonzero
# (below pyrt.sparse's 3% density switch).
@pytest.mark.parametrize("amount", [0.8, 0.99])
def test_sparse_linear_forward_and_backward_on_the_gpu(gpu, amount: float) -> None:
    pyrt.manual_seed(0)
    fc = nn.Linear(40, 24)
    prune.l1_unstructured(fc, "weight", amount=amount)
    layer = to_sparse(fc)
    x = pyrt.randn(6, 40)
    results = []
    for device in ("cpu", "cuda"):
        layer.to(device)
        layer.zero_grad()
        xd = x.to(device).detach().requires_grad_()
        y = layer(xd)
        assert y.device == ("cpu" if device == "cpu" else "cuda:0")
        (y * y).sum().backward()
        results.append([t.detach().cpu().numpy() for t in (y, xd.grad, layer.values.grad, layer.bias.grad)])
    assert layer.values.device == "cuda:0" and layer.indptr.device == "cuda:0"
    for got, want in zip(results[1], results[0], strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    dense = layer.to_dense()  # on the layer's device too
    assert dense.weight.device == "cuda:0"
    y_dense = dense(x.to("cuda")).detach().cpu().numpy()
    np.testing.assert_allclose(y_dense, results[0][0], rtol=1e-5, atol=1e-5)


def _train_sparse_mlp(device: str, steps: int = 4) -> tuple[list[float], list[np.ndarray]]:
    pyrt.manual_seed(0)
    model = nn.Sequential(nn.Linear(20, 48), nn.ReLU(), nn.Linear(48, 48), nn.ReLU(), nn.Linear(48, 5))
    for layer in (model[0], model[2]):
        prune.l1_unstructured(layer, "weight", amount=0.85)
    sparsify(model, min_sparsity=0.8)
    assert isinstance(model[0], SparseLinear) and isinstance(model[2], SparseLinear)
    model.to(device)
    optimizer = pyrt.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    return train_steps(model, optimizer, device, steps, batch=16, features=20, classes=5, seed=5)


def test_sparsified_mlp_trains_the_same_on_the_gpu(gpu) -> None:
    want_losses, want_params = _train_sparse_mlp("cpu")
    got_losses, got_params = _train_sparse_mlp("cuda")
    assert want_losses[-1] < want_losses[0]  # it does train
    np.testing.assert_allclose(got_losses, want_losses, rtol=1e-5)
    for got, want in zip(got_params, want_params, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)


def test_fake_kernels_agree_with_the_emulator(fake_gpu, monkeypatch) -> None:
    """tests/fake_cupy.FakeCudaKernels (numpy on the pointers, for suites too slow for the
    emulator) computes what the CUDA kernels compute: the sparse MLP trains to the same losses."""
    import fake_cupy

    want_losses, _ = _train_sparse_mlp("cuda", steps=2)
    fake = fake_cupy.FakeCudaKernels()
    monkeypatch.setattr(kernels, "_cuda_module", fake)
    got_losses, _ = _train_sparse_mlp("cuda", steps=2)
    assert "spmm" in fake.calls
    np.testing.assert_allclose(got_losses, want_losses, rtol=1e-5)
    x, y = fake_gpu.arange(5, dtype=np.int32), fake_gpu.full(5, 3, dtype=np.int32)
    np.testing.assert_array_equal(kernels.reduce_inplace(x, y, "prod").get(), np.arange(5) * 3)
