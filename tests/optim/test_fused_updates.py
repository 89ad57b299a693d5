"""The fused float32 optimizer kernels against the whole-array path they replace."""

from __future__ import annotations

import numpy as np
import pytest

import pyrt
from pyrt import kernels


def train(optimizer_factory, dtype, steps=5, seed=0):
    """A few steps on fixed gradients; returns the final parameters as float64."""
    rng = np.random.default_rng(seed)
    params = [pyrt.tensor(rng.standard_normal(shape).astype(dtype), requires_grad=True)
              for shape in [(37, 11), (11,), (1,)]]
    grads = [[rng.standard_normal(p.shape).astype(dtype) for p in params] for _ in range(steps)]
    optimizer = optimizer_factory(params)
    for step_grads in grads:
        for p, g in zip(params, step_grads, strict=True):
            p.grad = pyrt.tensor(g)
        optimizer.step()
    return [p.data.astype(np.float64) for p in params]


OPTIMIZERS = {
    "sgd": lambda ps: pyrt.optim.SGD(ps, lr=0.1),
    "sgd_momentum": lambda ps: pyrt.optim.SGD(ps, lr=0.1, momentum=0.9, dampening=0.1),
    "sgd_nesterov_wd": lambda ps: pyrt.optim.SGD(ps, lr=0.05, momentum=0.8, nesterov=True,
                                                 weight_decay=0.01),
    "sgd_maximize": lambda ps: pyrt.optim.SGD(ps, lr=0.1, momentum=0.5, maximize=True),
    "adam": lambda ps: pyrt.optim.Adam(ps, lr=0.01),
    "adam_wd_amsgrad": lambda ps: pyrt.optim.Adam(ps, lr=0.01, weight_decay=0.1, amsgrad=True),
    "adamw": lambda ps: pyrt.optim.AdamW(ps, lr=0.01, weight_decay=0.1),
    "adamw_maximize": lambda ps: pyrt.optim.AdamW(ps, lr=0.01, maximize=True),
}


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_fused_float32_matches_the_float64_array_path(name) -> None:
    fused = train(OPTIMIZERS[name], np.float32)
    reference = train(OPTIMIZERS[name], np.float64)  # float64 takes the whole-array path
    for ours, ref in zip(fused, reference, strict=True):
        np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_fused_float32_matches_pytorch(name) -> None:
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    start = rng.standard_normal((23, 5)).astype(np.float32)
    grads = [rng.standard_normal((23, 5)).astype(np.float32) for _ in range(4)]
    ours = pyrt.tensor(start.copy(), requires_grad=True)
    theirs = torch.tensor(start.copy(), requires_grad=True)
    optimizer = OPTIMIZERS[name]([ours])
    group = optimizer.param_groups[0]
    torch_cls = {"SGD": torch.optim.SGD, "Adam": torch.optim.Adam, "AdamW": torch.optim.AdamW}
    options = {k: v for k, v in group.items() if k != "params"}
    torch_optimizer = torch_cls[type(optimizer).__name__]([theirs], **options)
    for g in grads:
        ours.grad = pyrt.tensor(g)
        theirs.grad = torch.from_numpy(g.copy())
        optimizer.step()
        torch_optimizer.step()
    np.testing.assert_allclose(ours.data, theirs.detach().numpy(), rtol=1e-6, atol=1e-6)


def test_fused_kernels_check_their_arrays() -> None:
    p = np.zeros(4, np.float32)
    with pytest.raises(TypeError, match=r"grad \(3,\) float32"):
        kernels.sgd_step(p, np.zeros(3, np.float32), None, lr=0.1)
    with pytest.raises(TypeError, match="float64"):
        kernels.adam_step(p, np.zeros(4), np.zeros(4, np.float32), np.zeros(4, np.float32), None,
                          lr=0.1, beta1=0.9, beta2=0.99, eps=1e-8, weight_decay=0.0, step=1)
    with pytest.raises(ValueError, match="momentum needs a buffer"):
        kernels.sgd_step(p, np.zeros(4, np.float32), None, lr=0.1, momentum=0.9)


def test_non_contiguous_float32_params_take_the_array_path() -> None:
    base = np.ones((4, 6), np.float32)
    p = pyrt.tensor(base)
    p.data = base[:, ::2]  # a strided view: the fused kernel does not apply
    p.requires_grad_(True)
    p.grad = pyrt.tensor(np.ones((4, 3), np.float32))
    pyrt.optim.SGD([p], lr=0.5, momentum=0.9).step()
    assert (base[:, ::2] == 0.5).all() and (base[:, 1::2] == 1).all()
