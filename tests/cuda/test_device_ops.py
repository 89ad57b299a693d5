"""Every public op and layer, forward and backward, on a GPU tensor against the same on the CPU.

Runs on the CPU fake of cupy (tests/fake_cupy.py) always, and on real cupy where a GPU is
there (the ``gpu`` fixture). Each case builds the same inputs (and the same seeded module) on
both devices, backpropagates a fixed random projection of every float output, and checks:
outputs and gradients equal to rtol 1e-6, and every output and gradient array is a cupy
array (a numpy array leaking out of a GPU op fails here, as it would fail later on a GPU).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import fake_cupy
import numpy as np
import pytest

import pyrt
import pyrt.nn.functional as F
from pyrt import nn

# The fake computes with numpy in the CPU's order: equal to rounding. A real GPU adds float32
# reductions and products in another order: a few ulps, near 1e-6 relative, are expected there.
FAKE_TOLERANCE, REAL_TOLERANCE = 1e-6, 2e-5


def _f(rng: np.random.Generator, *shape: int) -> np.ndarray:
    return rng.standard_normal(shape).astype(np.float32)


def _pos(rng: np.random.Generator, *shape: int) -> np.ndarray:
    return rng.uniform(0.5, 2.0, shape).astype(np.float32)


def _ints(rng: np.random.Generator, high: int, *shape: int) -> np.ndarray:
    return rng.integers(0, high, shape).astype(np.int64)


# name -> (inputs from a generator, fn(device, *tensors) -> output(s), or (outputs, module))
Case = tuple[Callable[[np.random.Generator], list[np.ndarray]], Callable[..., Any]]


def _module(make: Callable[[], nn.Module], call: Callable[..., Any] | None = None) -> Callable[..., Any]:
    """A case body that builds ``make()`` from pyrt's seed, moves it to the device and runs it."""

    def run(device: str, *xs: pyrt.Tensor) -> tuple[Any, nn.Module]:
        pyrt.manual_seed(0)
        module = make().to(device)
        return (module(*xs) if call is None else call(module, *xs)), module

    return run


CASES: dict[str, Case] = {
    # elementwise, with broadcasting
    "add": (lambda r: [_f(r, 3, 4), _f(r, 4)], lambda d, a, b: a + b),
    "add_scalar_alpha": (lambda r: [_f(r, 3, 4), _f(r, 3, 4)], lambda d, a, b: pyrt.add(a, b, alpha=0.5) + 2),
    "sub_rsub": (lambda r: [_f(r, 3, 4), _f(r, 3, 1)], lambda d, a, b: (a - b, 1.0 - a)),
    "mul_div": (lambda r: [_f(r, 2, 3), _pos(r, 2, 3)], lambda d, a, b: (a * b, a / b, 2 / b)),
    "pow": (lambda r: [_pos(r, 5), _f(r, 5)], lambda d, a, b: (a ** 2, a ** b, 2.0 ** b)),
    "neg_abs": (lambda r: [_f(r, 6)], lambda d, a: (-a, a.abs())),
    "clamp": (lambda r: [_f(r, 4, 5)], lambda d, a: (a.clamp(-0.5, 0.5), a.clamp(min=0.0))),
    "clamp_tensor_bounds": (lambda r: [_f(r, 4, 5), _f(r, 5)], lambda d, a, lo: a.clamp(min=lo)),
    "maximum_minimum": (lambda r: [_f(r, 4, 5), _f(r, 4, 5)],
                        lambda d, a, b: (pyrt.maximum(a, b), pyrt.minimum(a, b))),
    "where": (lambda r: [_f(r, 4, 5), _f(r, 4, 5)], lambda d, a, b: pyrt.where(a > 0, a, b)),
    "masked_fill": (lambda r: [_f(r, 4, 5)], lambda d, a: pyrt.masked_fill(a, a < 0, 0.5)),
    "lerp": (lambda r: [_f(r, 4), _f(r, 4)], lambda d, a, b: pyrt.lerp(a, b, 0.3)),
    "floor_divide": (lambda r: [_f(r, 4) * 5, _pos(r, 4)], lambda d, a, b: a // b),
    "cast_clone": (lambda r: [_f(r, 3, 3)], lambda d, a: (a.double() * 2, a.clone(), a.long())),
    "compare": (lambda r: [_f(r, 3, 3), _f(r, 3, 3)], lambda d, a, b: ((a < b).float() * a, a == b)),
    # unary
    "unary": (lambda r: [_pos(r, 3, 4)], lambda d, a: (a.exp(), a.log(), a.sqrt(), a.rsqrt(), a.sin(),
                                                        a.cos(), a.log2(), a.exp2() if hasattr(a, "exp2")
                                                        else pyrt.exp2(a))),
    "rounding": (lambda r: [_f(r, 3, 4) * 3], lambda d, a: (a.sign(), a.floor(), a.ceil(), a.round(),
                                                             a.round(decimals=1))),
    # activations
    "activations": (lambda r: [_f(r, 4, 6)], lambda d, a: (
        F.relu(a), F.sigmoid(a), F.tanh(a), F.gelu(a), F.gelu(a, approximate="tanh"), F.silu(a),
        F.elu(a), F.leaky_relu(a, 0.1), F.softplus(a), F.hardtanh(a), F.relu6(a), F.logsigmoid(a),
        F.hardswish(a))),
    "softmax": (lambda r: [_f(r, 3, 5)], lambda d, a: (F.softmax(a, dim=-1), F.log_softmax(a, dim=0))),
    "dropout": (lambda r: [_f(r, 8, 8)], lambda d, a: F.dropout(a, 0.5, training=True)),
    "activation_modules": (lambda r: [_f(r, 2, 7)], _module(lambda: nn.Sequential(
        nn.ReLU(), nn.LeakyReLU(0.2), nn.GELU(), nn.SiLU(), nn.ELU(), nn.Softplus(), nn.Tanh(),
        nn.Sigmoid(), nn.Hardtanh(), nn.ReLU6(), nn.LogSigmoid(), nn.Hardswish(), nn.Softmax(-1),
        nn.LogSoftmax(-1)))),
    # reductions
    "sum_mean": (lambda r: [_f(r, 3, 4, 5)], lambda d, a: (a.sum(), a.sum(1), a.sum((0, 2), keepdim=True),
                                                            a.mean(), a.mean(-1))),
    "prod_cumsum": (lambda r: [_pos(r, 3, 4)], lambda d, a: (a.prod(), a.prod(1), a.cumsum(0))),
    "max_min": (lambda r: [_f(r, 4, 5)], lambda d, a: (a.max(), a.min(), a.max(dim=1).values,
                                                        a.min(dim=0, keepdim=True).values,
                                                        a.max(dim=1).indices)),
    "argmax_any_all": (lambda r: [_f(r, 4, 5)], lambda d, a: (a.argmax(), a.argmin(1), (a > 0).any(),
                                                               (a > -5).all(1))),
    "var_std_logsumexp": (lambda r: [_f(r, 4, 5)], lambda d, a: (a.var(), a.std(1), a.var(0, correction=0),
                                                                  a.logsumexp(1))),
    # shape
    "reshape_permute": (lambda r: [_f(r, 2, 3, 4)], lambda d, a: (a.reshape(6, 4), a.permute(2, 0, 1),
                                                                   a.transpose(0, 2), a.flatten(1), a.T,
                                                                   a.view(-1))),
    "squeeze_expand": (lambda r: [_f(r, 3, 1, 4)], lambda d, a: (a.squeeze(), a.unsqueeze(0),
                                                                  a.expand(3, 5, 4), a.unflatten(2, (2, 2)))),
    "cat_stack": (lambda r: [_f(r, 2, 3), _f(r, 4, 3)], lambda d, a, b: (pyrt.cat([a, b]),
                                                                          pyrt.stack([a, a * 2], 1))),
    "split_chunk": (lambda r: [_f(r, 6, 4)], lambda d, a: (*a.split(2), *a.chunk(3, 1), *a.split([1, 5]))),
    "flip_roll_repeat": (lambda r: [_f(r, 3, 4)], lambda d, a: (a.flip(0), a.flip(0, 1), a.roll(1, 1),
                                                                 a.roll(2), a.repeat(2, 1))),
    "getitem_basic": (lambda r: [_f(r, 4, 5, 6)], lambda d, a: (a[1], a[:, 2:4], a[..., ::2], a[None, 1, -1],
                                                                 a[1, 2, 3])),
    "getitem_advanced": (lambda r: [_f(r, 5, 6)], lambda d, a: (
        a[pyrt.tensor([0, 2, 2], device=d)], a[:, [1, 3]], a[a > 0], a[pyrt.tensor([4, 0], device=d), 1:3],
        a[np.array([1, 1, 0])])),
    # indexing
    "gather": (lambda r: [_f(r, 4, 5), _ints(r, 5, 4, 3)], lambda d, a, i: a.gather(1, i)),
    "diagonal_tril_triu": (lambda r: [_f(r, 4, 4)], lambda d, a: (a.diagonal(), a.diagonal(1), a.tril(),
                                                                   a.triu(1))),
    # linear algebra
    "matmul_2d": (lambda r: [_f(r, 5, 7), _f(r, 7, 3)], lambda d, a, b: a @ b),
    "matmul_batched": (lambda r: [_f(r, 2, 5, 7), _f(r, 7, 3)], lambda d, a, b: pyrt.matmul(a, b)),
    "matmul_vector": (lambda r: [_f(r, 7), _f(r, 4, 7, 3)], lambda d, a, b: (a @ b, b.transpose(1, 2) @ a)),
    "matmul_float64": (lambda r: [_f(r, 3, 4).astype(np.float64), _f(r, 4, 2).astype(np.float64)],
                       lambda d, a, b: a @ b),
    "linear": (lambda r: [_f(r, 5, 4), _f(r, 3, 4), _f(r, 3)], lambda d, x, w, b: F.linear(x, w, b)),
    "einsum": (lambda r: [_f(r, 2, 3, 4), _f(r, 2, 4, 5)], lambda d, a, b: (
        pyrt.einsum("bij,bjk->bik", a, b), pyrt.einsum("bij->j", a), pyrt.einsum("bij,bjk->", a, b))),
    # layers
    "Linear": (lambda r: [_f(r, 6, 4)], _module(lambda: nn.Linear(4, 3))),
    "Conv2d": (lambda r: [_f(r, 2, 3, 7, 6)], _module(lambda: nn.Conv2d(3, 4, 3, stride=2, padding=1))),
    "Conv2d_dilated_groups": (lambda r: [_f(r, 1, 4, 8, 8)],
                              _module(lambda: nn.Conv2d(4, 4, 3, dilation=2, groups=2, bias=False))),
    "Conv1d": (lambda r: [_f(r, 2, 3, 9)], _module(lambda: nn.Conv1d(3, 2, 3, padding="same"))),
    "ConvTranspose2d": (lambda r: [_f(r, 1, 2, 4, 4)],
                        _module(lambda: nn.ConvTranspose2d(2, 3, 3, stride=2))),
    "MaxPool2d_Flatten": (lambda r: [_f(r, 2, 3, 6, 6)], _module(lambda: nn.Sequential(
        nn.MaxPool2d(2), nn.Flatten()))),
    "pools": (lambda r: [_f(r, 2, 2, 7, 7)], lambda d, x: (F.max_pool2d(x, 3, stride=2, padding=1),
                                                            F.avg_pool2d(x, 2), F.avg_pool2d(x, 3, 1, 1))),
    "Embedding": (lambda r: [_ints(r, 10, 3, 4)], _module(lambda: nn.Embedding(10, 5, padding_idx=0))),
    "embedding_one_hot": (lambda r: [_f(r, 6, 3), _ints(r, 6, 5)], lambda d, w, i: (
        F.embedding(i, w), F.one_hot(i, 6))),
    "LSTM": (lambda r: [_f(r, 5, 2, 3)], _module(lambda: nn.LSTM(3, 4, num_layers=2), lambda m, x: m(x)[0])),
    "LSTM_bidirectional": (lambda r: [_f(r, 2, 5, 3)], _module(
        lambda: nn.LSTM(3, 4, batch_first=True, bidirectional=True), lambda m, x: m(x)[0])),
    "GRU": (lambda r: [_f(r, 5, 2, 3)], _module(lambda: nn.GRU(3, 4), lambda m, x: m(x)[0])),
    "cells": (lambda r: [_f(r, 2, 3)], _module(lambda: nn.ModuleList([nn.LSTMCell(3, 4), nn.GRUCell(3, 4)]),
                                               lambda m, x: (m[0](x)[0], m[1](x)))),
    "BatchNorm2d_train": (lambda r: [_f(r, 4, 3, 2, 2)], _module(lambda: nn.BatchNorm2d(3))),
    "BatchNorm1d_eval": (lambda r: [_f(r, 4, 3)], _module(lambda: nn.BatchNorm1d(3).eval())),
    "LayerNorm": (lambda r: [_f(r, 2, 3, 5)], _module(lambda: nn.LayerNorm(5))),
    "layer_norm_fn": (lambda r: [_f(r, 2, 6), _f(r, 6), _f(r, 6)],
                      lambda d, x, w, b: F.layer_norm(x, (6,), w, b)),
    "sdpa": (lambda r: [_f(r, 2, 4, 3), _f(r, 2, 5, 3), _f(r, 2, 5, 3)],
             lambda d, q, k, v: F.scaled_dot_product_attention(q, k, v)),
    "sdpa_causal": (lambda r: [_f(r, 2, 4, 3), _f(r, 2, 4, 3), _f(r, 2, 4, 3)],
                    lambda d, q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True)),
    "MultiheadAttention": (lambda r: [_f(r, 2, 5, 8)], _module(
        lambda: nn.MultiheadAttention(8, 2, batch_first=True), lambda m, x: m(x, x, x)[0])),
    "TransformerEncoderLayer": (lambda r: [_f(r, 2, 5, 8)], _module(
        lambda: nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=True, norm_first=True,
                                           activation="gelu"))),
    "TransformerEncoder": (lambda r: [_f(r, 2, 4, 8)], _module(
        lambda: nn.TransformerEncoder(nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=True),
                                      num_layers=2, norm=nn.LayerNorm(8)))),
    "pool_norm_modules": (lambda r: [_f(r, 2, 3, 2, 4, 4)], _module(lambda: nn.BatchNorm3d(3), lambda m, x: (
        nn.AvgPool2d(2)(m(x).flatten(1, 2)), nn.Identity()(x)))),
    "Dropout_module": (lambda r: [_f(r, 6, 6)], _module(lambda: nn.Dropout(0.3))),
    # padding
    "pad": (lambda r: [_f(r, 1, 2, 4, 5)], lambda d, x: (F.pad(x, (1, 2)), F.pad(x, (1, 1, 2, 0), value=0.5),
                                                          F.pad(x, (2, 1, 1, 2), mode="reflect"),
                                                          F.pad(x, (1, 1, 1, 1), mode="replicate"),
                                                          F.pad(x, (1, 2, 2, 1), mode="circular"))),
    # losses
    "mse": (lambda r: [_f(r, 4, 3), _f(r, 4, 3)], lambda d, a, b: (F.mse_loss(a, b),
                                                                    F.mse_loss(a, b, reduction="none"))),
    "cross_entropy": (lambda r: [_f(r, 6, 5), _ints(r, 5, 6)], lambda d, x, y: (
        F.cross_entropy(x, y), F.cross_entropy(x, y, reduction="sum", label_smoothing=0.1),
        F.cross_entropy(x, y, ignore_index=2), F.cross_entropy(x, y, reduction="none"))),
    "cross_entropy_weighted_probs": (lambda r: [_f(r, 4, 3), _pos(r, 3), _pos(r, 4, 3)], lambda d, x, w, p: (
        F.cross_entropy(x, pyrt.tensor([0, 2, 1, 1], device=d), weight=w), F.cross_entropy(x, p / p.sum(1,
                                                                                                keepdim=True)))),
    "cross_entropy_nd": (lambda r: [_f(r, 2, 4, 3, 3), _ints(r, 4, 2, 3, 3)],
                         lambda d, x, y: F.cross_entropy(x, y)),
    "nll": (lambda r: [_f(r, 5, 4), _ints(r, 4, 5)], lambda d, x, y: F.nll_loss(F.log_softmax(x, 1), y)),
    "bce": (lambda r: [_f(r, 4, 3), r.uniform(0, 1, (4, 3)).astype(np.float32)], lambda d, x, y: (
        F.binary_cross_entropy(x.sigmoid(), y), F.binary_cross_entropy_with_logits(x, y),
        F.binary_cross_entropy_with_logits(x, y, pos_weight=pyrt.full((3,), 2.0, device=d)))),
    "loss_modules": (lambda r: [_f(r, 4, 3), _ints(r, 3, 4)], lambda d, x, y: (
        nn.CrossEntropyLoss()(x, y), nn.MSELoss()(x, x * 0.5), nn.NLLLoss()(x.log_softmax(1), y),
        nn.BCEWithLogitsLoss()(x, (x > 0).float()), nn.BCELoss()(x.sigmoid(), (x > 0).float()))),
    # factories on the device
    "factories": (lambda r: [_f(r, 2, 3)], lambda d, a: (
        a + pyrt.zeros(2, 3, device=d) + pyrt.ones(3, device=d) + pyrt.full((2, 3), 2.0, device=d),
        a * pyrt.zeros_like(a) + pyrt.ones_like(a) + pyrt.arange(3, device=d) + pyrt.rand(2, 3, device=d),
        pyrt.randn_like(a) + a, pyrt.empty(2, device=d).shape == (2,) and a.sum())),
}


def _run(case: Case, device: str) -> tuple[list[pyrt.Tensor], list[pyrt.Tensor]]:
    """Outputs and gradients (of the inputs, then of the module's parameters) of one case."""
    make_inputs, body = case
    rng = np.random.default_rng(0)
    arrays = make_inputs(rng)
    inputs = [pyrt.tensor(a, device=device, requires_grad=a.dtype.kind == "f") for a in arrays]
    pyrt.manual_seed(0)
    result = body(device, *inputs)
    module = None
    if isinstance(result, tuple) and len(result) == 2 and isinstance(result[1], nn.Module):
        result, module = result
    listed = result if isinstance(result, tuple | list) else (result,)
    outputs = [o for o in listed if isinstance(o, pyrt.Tensor)]
    differentiable = [o for o in outputs if o.requires_grad]
    if differentiable:
        total = None
        for o in differentiable:
            weight = pyrt.tensor(rng.standard_normal(o.shape).astype(o.dtype), device=device)
            term = (o * weight).sum()
            total = term if total is None else total + term
        total.backward()
    params = list(module.parameters()) if module is not None else []
    grads = [t.grad for t in [*inputs, *params] if t.requires_grad]
    return outputs, grads


def _host(t: pyrt.Tensor | None) -> np.ndarray | None:
    return None if t is None else t.detach().cpu().numpy()


@pytest.mark.parametrize("device", ["cuda", "cuda:1"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_op_on_gpu_equals_cpu(gpu, name: str, device: str) -> None:
    """On cuda:1 while device 0 is current, too: ops and backward must make the tensors' GPU
    current (cupy refuses kernels on arrays of another device)."""
    if device == "cuda:1" and gpu.cuda.runtime.getDeviceCount() < 2:
        pytest.skip("needs two GPUs")
    case = CASES[name]
    want_out, want_grad = _run(case, "cpu")
    got_out, got_grad = _run(case, device)
    assert gpu.cuda.runtime.getDevice() == 0  # nothing left another device current
    assert len(got_out) == len(want_out) and len(got_grad) == len(want_grad)
    for i, (got, want) in enumerate(zip(got_out + got_grad, want_out + want_grad, strict=True)):
        what = f"output {i}" if i < len(got_out) else f"gradient {i - len(got_out)}"
        if want is None:
            assert got is None, what
            continue
        assert got is not None, what
        assert isinstance(got.data, gpu.ndarray), f"{what} is a {type(got.data)}, not a cupy array"
        assert got.device == ("cuda:0" if device == "cuda" else device), what
        assert got.dtype == want.dtype and got.shape == want.shape, what
        tolerance = FAKE_TOLERANCE if gpu.ndarray is fake_cupy.ndarray else REAL_TOLERANCE
        np.testing.assert_allclose(_host(got), _host(want), rtol=tolerance, atol=tolerance, err_msg=what)
