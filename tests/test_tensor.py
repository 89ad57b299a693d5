"""Tensor construction, conversion, properties and factories."""

from __future__ import annotations

import numpy as np
import pytest

import pyrt


def test_tensor_dtypes_follow_pytorch() -> None:
    assert pyrt.tensor([1.0, 2.0]).dtype == np.float32
    assert pyrt.tensor([1, 2]).dtype == np.int64
    assert pyrt.tensor(np.zeros(2)).dtype == np.float64
    assert pyrt.tensor([1, 2], dtype=pyrt.float32).dtype == np.float32
    assert pyrt.tensor(True).dtype == np.bool_


def test_tensor_copies_but_from_numpy_shares() -> None:
    a = np.zeros(3, np.float32)
    copied, shared = pyrt.tensor(a), pyrt.from_numpy(a)
    a[0] = 5
    assert copied.data[0] == 0 and shared.data[0] == 5


def test_properties_and_conversions() -> None:
    x = pyrt.tensor([[1.0, 2.0, 3.0]], requires_grad=True)
    assert x.shape == (1, 3) and x.ndim == 2 and x.size() == (1, 3) and x.size(1) == 3
    assert x.numel() == 3 and x.dim() == 2 and x.device == "cpu" and x.is_leaf and len(x) == 1
    with pytest.raises(RuntimeError, match=r"detach\(\).numpy\(\)"):
        x.numpy()
    assert x.detach().numpy().tolist() == [[1.0, 2.0, 3.0]]
    assert x.sum().item() == 6.0 and float(x.sum()) == 6.0
    with pytest.raises(ValueError, match="3 elements cannot be converted"):
        x.item()
    assert x.double().dtype == np.float64 and x.long().dtype == np.int64


def test_repr() -> None:
    assert repr(pyrt.tensor([1.0, 2.0])) == "tensor([1., 2.])"
    assert "requires_grad=True" in repr(pyrt.tensor([1.0], requires_grad=True))
    assert "grad_fn=<MulBackward>" in repr(pyrt.tensor([1.0], requires_grad=True) * 2)
    assert "dtype=float64" in repr(pyrt.tensor(np.ones(1)))
    assert repr(pyrt.tensor([True, False])) == "tensor([ True, False])"
    assert repr(pyrt.tensor([1, 2])) == "tensor([1, 2])"
    assert "dtype=int32" in repr(pyrt.tensor([1], dtype=pyrt.int32))


def test_comparisons_return_bool_tensors() -> None:
    x = pyrt.tensor([1.0, 2.0, 3.0])
    assert (x > 1.5).tolist() == [False, True, True]
    assert (x == pyrt.tensor([1.0, 0.0, 3.0])).tolist() == [True, False, True]


def test_tensors_hash_by_identity() -> None:
    a, b = pyrt.ones(1), pyrt.ones(1)
    assert len({a: 1, b: 2}) == 2


def test_factories() -> None:
    assert pyrt.zeros(2, 3).tolist() == [[0.0] * 3] * 2
    assert pyrt.ones((2,)).dtype == np.float32
    assert pyrt.full((2,), 3.0).tolist() == [3.0, 3.0]
    assert pyrt.arange(1, 7, 2).tolist() == [1, 3, 5]
    assert pyrt.arange(0.0, 1.0, 0.5).dtype == np.float32
    assert pyrt.zeros_like(pyrt.ones(2, dtype=np.float64)).dtype == np.float64
    pyrt.manual_seed(7)
    a = pyrt.randn(4, 4)
    pyrt.manual_seed(7)
    assert (pyrt.randn(4, 4).data == a.data).all()
    r = pyrt.rand(1000)
    assert 0 <= r.data.min() and r.data.max() < 1
    assert pyrt.randint(0, 3, (100,)).data.max() <= 2
    with pytest.raises(TypeError, match=r"expected a numpy\.ndarray"):
        pyrt.from_numpy([1, 2])


def test_to_device_and_contiguous() -> None:
    x = pyrt.tensor(np.ones((3, 4), np.float32), requires_grad=True)
    assert x.to("cpu") is x and x.contiguous() is x
    if not pyrt.cuda.is_available():
        for device in (0, "cuda:0", "cuda"):
            with pytest.raises(RuntimeError, match="CUDA device 0 was requested"):
                x.to(device)
    with pytest.raises(ValueError, match="unsupported device 'mps'"):
        x.to("mps")
    assert x.to(pyrt.float32) is x and x.to(x) is x and x.to(dtype=pyrt.float64).dtype == np.float64
    assert x.to("cpu", copy=True) is not x
    torch = pytest.importorskip("torch")
    assert x.to(torch.device("cpu")) is x
    t = x.T.contiguous()
    assert t.data.flags.c_contiguous and t.shape == (4, 3)
    t.sum().backward()
    assert x.grad.tolist() == [[1.0] * 4] * 3
    assert isinstance(pyrt.nn.Linear(2, 2).to("cpu"), pyrt.nn.Linear)


def test_full_infers_the_fill_values_dtype_like_torch() -> None:
    assert pyrt.full((2, 2), 4).dtype == np.int64 and pyrt.full((2, 2), 4).tolist() == [[4, 4], [4, 4]]
    assert pyrt.full((2,), True).dtype == np.bool_
    assert pyrt.full((2,), 0.5).dtype == np.float32
    assert pyrt.full([3], 1, dtype=pyrt.float64).dtype == np.float64
    assert pyrt.full((), 2).shape == ()


# The methods a PyTorch user reaches for first; test_docstrings runs each one's example, and
# tests/ops/test_torch_parity.py checks their values and gradients against PyTorch.
PYTORCH_METHODS = [
    "add", "sub", "mul", "div", "neg", "rsqrt", "sin", "cos", "log2", "exp2", "sign", "floor", "ceil",
    "round", "clip", "clamp", "std", "var", "prod", "any", "all", "cumsum", "flip", "unflatten", "repeat",
    "roll", "tril", "triu", "diagonal", "chunk", "split", "gather", "masked_fill", "lerp", "sum",
    "floor_divide", "__floordiv__", "__rfloordiv__",
]
PYTORCH_FUNCTIONS = ["add", "sub", "mul", "div", "pow", "einsum", "result_type", "promote_types"]


def test_pytorch_methods_and_functions_exist() -> None:
    missing = [m for m in PYTORCH_METHODS if not callable(getattr(pyrt.Tensor, m, None))]
    missing += [f"pyrt.{f}" for f in PYTORCH_FUNCTIONS if not callable(getattr(pyrt, f, None))]
    assert not missing
    for m in PYTORCH_METHODS:
        if not m.startswith("_"):
            assert getattr(pyrt.Tensor, m).__doc__, f"Tensor.{m} has no docstring"


def test_floor_division_operators() -> None:
    x = pyrt.tensor([7, -7])
    assert (x // 2).tolist() == [3, -4] and (15 // x).tolist() == [2, -3]
    assert (pyrt.tensor([7.5]) // 2).tolist() == [3.0]


def test_pow_with_a_python_base_keeps_its_type() -> None:
    assert (0.7 ** pyrt.tensor([1, 2, 3])).dtype == np.float32
    assert (2 ** pyrt.tensor([1, 2])).tolist() == [2, 4]
    x = pyrt.tensor([1.0, 2.0], requires_grad=True)
    (3.0**x).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), np.log(3) * 3.0 ** np.array([1.0, 2.0]), rtol=1e-6)


def test_mask_operators_match_torch() -> None:
    torch = pytest.importorskip("torch")
    for make in (lambda m: ~m.tensor([True, False]),
                 lambda m: m.tensor([True, False]) & m.tensor([True, True]),
                 lambda m: m.tensor([True, False]) | True, lambda m: m.tensor([6, 3]) ^ m.tensor([3, 3]),
                 lambda m: ~m.tensor([0, 5]), lambda m: False | m.tensor([True, False]),
                 lambda m: m.tensor([True, False]) & m.tensor([7, 6], dtype=m.int32)):
        ours, theirs = make(pyrt), make(torch)
        assert ours.tolist() == theirs.tolist() and str(ours.dtype) == str(theirs.dtype).replace("torch.", "")
    with pytest.raises(RuntimeError, match="integer and bool"):
        ~pyrt.tensor([1.0])
    with pytest.raises(RuntimeError, match="integer and bool"):
        pyrt.tensor([True]) & 0.5
