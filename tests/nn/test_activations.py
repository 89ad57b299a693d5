"""The pointwise activations of ``pyrt.nn.functional`` and their modules: float64 gradchecks away
from kinks, and values and gradients equal to PyTorch's everywhere, kinks, thresholds and
saturated inputs included (PyTorch's one-sided derivative at each boundary point)."""

from __future__ import annotations

import numpy as np
import pytest
from torch_parity import assert_matches_torch

import pyrt
import pyrt.nn.functional as F
from pyrt import nn

# Edge points: the kinks of every activation here, and values far out on both sides.
EDGES = np.array([-100.0, -20.0, -6.0, -3.0, -1.0, -1e-8, 0.0, 1e-8, 1.0, 3.0, 6.0, 20.0, 20.5, 100.0])

CASES = [
    ("leaky_relu", lambda x: F.leaky_relu(x), "leaky_relu", {}),
    ("leaky_relu_slope", lambda x: F.leaky_relu(x, 0.2), "leaky_relu", {"negative_slope": 0.2}),
    ("gelu", lambda x: F.gelu(x), "gelu", {}),
    ("gelu_tanh", lambda x: F.gelu(x, approximate="tanh"), "gelu", {"approximate": "tanh"}),
    ("silu", F.silu, "silu", {}),
    ("elu", F.elu, "elu", {}),
    ("elu_alpha", lambda x: F.elu(x, alpha=0.5), "elu", {"alpha": 0.5}),
    ("softplus", F.softplus, "softplus", {}),
    ("softplus_beta", lambda x: F.softplus(x, beta=2.0, threshold=10.0), "softplus",
     {"beta": 2.0, "threshold": 10.0}),
    ("softplus_negative_beta", lambda x: F.softplus(x, beta=-1.5), "softplus", {"beta": -1.5}),
    ("relu6", F.relu6, "relu6", {}),
    ("hardtanh", F.hardtanh, "hardtanh", {}),
    ("hardtanh_range", lambda x: F.hardtanh(x, -3.0, 6.0), "hardtanh", {"min_val": -3.0, "max_val": 6.0}),
    ("logsigmoid", F.logsigmoid, "logsigmoid", {}),
    ("hardswish", F.hardswish, "hardswish", {}),
]


@pytest.mark.parametrize(("name", "ours", "torch_name", "kwargs"), CASES, ids=[c[0] for c in CASES])
def test_gradcheck(name, ours, torch_name, kwargs) -> None:
    rng = np.random.default_rng(0)
    x = rng.uniform(-5, 5, size=(4, 7))
    # Finite differences need smoothness: stay 0.05 away from every kink (0, +-1, +-3, 6, thresholds).
    kinks = np.array([0.0, -1.0, 1.0, -3.0, 3.0, 6.0, 5.0])
    near = np.abs(x[..., None] - kinks).min(axis=-1) < 0.05
    x = np.where(near, x + 0.1, x)
    assert pyrt.gradcheck(ours, [pyrt.tensor(x, requires_grad=True)])


@pytest.mark.parametrize(("name", "ours", "torch_name", "kwargs"), CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_matches_torch_at_edges(name, ours, torch_name, kwargs, dtype) -> None:
    torch = pytest.importorskip("torch")
    x = np.concatenate([EDGES, np.random.default_rng(1).standard_normal(20) * 4]).astype(dtype)
    tol = {"rtol": 1e-12, "atol": 1e-14} if dtype == np.float64 else {"rtol": 2e-6, "atol": 1e-6}
    assert_matches_torch(ours, lambda t: getattr(torch.nn.functional, torch_name)(t, **kwargs), [x], **tol)


def test_gelu_without_scipy_uses_exact_math_erf(monkeypatch) -> None:
    # The fallback when scipy is absent must give the same values (exact, only slower).
    import sys

    x = np.linspace(-6, 6, 41)
    with_scipy = F.gelu(pyrt.tensor(x)).data
    monkeypatch.setitem(sys.modules, "scipy.special", None)  # makes `import scipy.special` fail
    without = F.gelu(pyrt.tensor(x)).data
    np.testing.assert_allclose(without, with_scipy, rtol=1e-15, atol=1e-16)
    assert without.dtype == np.float64


def test_float32_stays_float32_and_integers_are_rejected() -> None:
    x = pyrt.tensor([-1.0, 2.0])
    for fn in (F.leaky_relu, F.gelu, F.silu, F.elu, F.softplus, F.relu6, F.hardtanh, F.logsigmoid,
               F.hardswish):
        assert fn(x).dtype == np.float32
        with pytest.raises(TypeError, match="floating point"):
            fn(pyrt.tensor([1, 2]))


def test_argument_errors() -> None:
    with pytest.raises(ValueError, match="approximate must be 'none' or 'tanh'"):
        F.gelu(pyrt.zeros(2), approximate="erf")
    with pytest.raises(ValueError, match=r"min_val 2\.0 must not exceed max_val 1\.0"):
        F.hardtanh(pyrt.zeros(2), 2.0, 1.0)
    with pytest.raises(ValueError, match="beta must be nonzero"):
        F.softplus(pyrt.zeros(2), beta=0)


MODULES = [
    (nn.LeakyReLU(0.1), "LeakyReLU(negative_slope=0.1)", "LeakyReLU", (0.1,)),
    (nn.GELU(), "GELU(approximate='none')", "GELU", ()),
    (nn.GELU("tanh"), "GELU(approximate='tanh')", "GELU", ("tanh",)),
    (nn.SiLU(), "SiLU()", "SiLU", ()),
    (nn.ELU(0.7), "ELU(alpha=0.7)", "ELU", (0.7,)),
    (nn.Softplus(2.0, 5.0), "Softplus(beta=2.0, threshold=5.0)", "Softplus", (2.0, 5.0)),
    (nn.ReLU6(), "ReLU6()", "ReLU6", ()),
    (nn.Hardtanh(-2.0, 2.0), "Hardtanh(min_val=-2.0, max_val=2.0)", "Hardtanh", (-2.0, 2.0)),
    (nn.LogSigmoid(), "LogSigmoid()", "LogSigmoid", ()),
    (nn.Hardswish(), "Hardswish()", "Hardswish", ()),
]


@pytest.mark.parametrize(("module", "text", "torch_name", "args"), MODULES, ids=[m[2] for m in MODULES])
def test_modules_match_torch_and_repr(module, text, torch_name, args) -> None:
    torch = pytest.importorskip("torch")
    assert repr(module) == text == repr(getattr(torch.nn, torch_name)(*args))
    assert list(module.parameters()) == []
    x = np.concatenate([EDGES, np.linspace(-7, 7, 15)]).reshape(29, 1)
    assert_matches_torch(module, getattr(torch.nn, torch_name)(*args), [x], rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("dim", [-1, 0])
def test_softmax_of_a_0d_tensor_matches_torch(dim) -> None:
    torch = pytest.importorskip("torch")
    x = np.array(2.5)
    for ours, theirs in ((F.softmax, torch.softmax), (F.log_softmax, torch.log_softmax)):
        assert_matches_torch(lambda t, f=ours: f(t, dim), lambda t, f=theirs: f(t, dim), [x])
    assert nn.Softmax(dim=dim)(pyrt.tensor(x)).item() == 1.0
    with pytest.raises(IndexError, match="dim 1 is out of range"):
        F.softmax(pyrt.tensor(x), 1)
