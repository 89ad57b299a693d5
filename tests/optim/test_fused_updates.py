"""The optimizer kernels: the native float32 pass against the plain reference
(``pyrt.kernel_reference``), which ``pyrt.kernels`` runs for every other array."""

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
    reference = train(OPTIMIZERS[name], np.float64)  # float64 takes the reference path
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


# --- kernel level: one entry point, two paths that must agree ----------------------------

SGD_CASES = {
    "plain": dict(lr=0.1),
    "momentum_dampening": dict(lr=0.1, momentum=0.9, dampening=0.3),
    "nesterov_weight_decay": dict(lr=0.05, momentum=0.8, nesterov=True, weight_decay=0.01),
    "maximize_momentum_weight_decay": dict(lr=0.1, momentum=0.5, maximize=True, weight_decay=0.1),
    "weight_decay_only": dict(lr=0.2, weight_decay=0.5),
}

ADAM_CASES = {
    "adam": dict(lr=0.01, weight_decay=0.0),
    "adam_weight_decay": dict(lr=0.01, weight_decay=0.1),
    "amsgrad": dict(lr=0.01, weight_decay=0.1, amsgrad=True),
    "adamw": dict(lr=0.01, weight_decay=0.1, decoupled_weight_decay=True),
    "adamw_amsgrad_maximize": dict(lr=0.01, weight_decay=0.1, decoupled_weight_decay=True,
                                   amsgrad=True, maximize=True),
}


def strided_copy(x: np.ndarray) -> np.ndarray:
    """A copy of x laid out as every other element of a larger buffer: not C-contiguous."""
    base = np.full((x.size, 2), np.nan, x.dtype)
    view = base[:, 0].reshape(x.shape)
    view[...] = x
    assert not view.flags.c_contiguous
    return view


LAYOUTS = {
    "float32 native": lambda x: x.copy(),
    "float64 reference": lambda x: x.astype(np.float64),
    "float32 strided reference": strided_copy,
}


def run_sgd(layout, options, start, grads):
    p = layout(start)
    momentum = options.get("momentum", 0.0)
    buf = layout(np.zeros_like(start)) if momentum else None
    for step, g in enumerate(grads):
        kernels.sgd_step(p, layout(g), buf, first_step=step == 0, **options)
    return p, buf


@pytest.mark.parametrize("case", list(SGD_CASES))
def test_sgd_step_native_and_reference_agree(case, rng, reference_calls) -> None:
    options = SGD_CASES[case]
    start = rng.standard_normal((13, 7)).astype(np.float32)
    grads = [rng.standard_normal((13, 7)).astype(np.float32) for _ in range(4)]
    results = {}
    for name, layout in LAYOUTS.items():
        before = reference_calls.get("sgd_step", 0)
        results[name] = run_sgd(layout, options, start, grads)
        # the float32 contiguous run is the native kernel's, the others the reference's
        assert reference_calls.get("sgd_step", 0) - before == (0 if name == "float32 native" else 4)
    native = results["float32 native"]
    for name in ("float64 reference", "float32 strided reference"):
        for ours, ref in zip(native, results[name], strict=True):
            if ref is not None:
                np.testing.assert_allclose(ours, ref, rtol=2e-6, atol=2e-6, err_msg=f"{case} {name}")
    if options.get("momentum"):
        # The first step sets the buffer to the (decayed, signed) gradient, not to momentum * 0 + g.
        _, buf = run_sgd(LAYOUTS["float64 reference"], options, start, grads[:1])
        g = (-1 if options.get("maximize") else 1) * grads[0].astype(np.float64)
        g = g + options.get("weight_decay", 0.0) * start.astype(np.float64)
        np.testing.assert_array_equal(buf, g)


def run_adam(layout, options, start, grads):
    options = dict(options)
    amsgrad = options.pop("amsgrad", False)
    p = layout(start)
    state = [layout(np.zeros_like(start)) for _ in range(3 if amsgrad else 2)]
    for step, g in enumerate(grads, start=1):
        kernels.adam_step(p, layout(g), state[0], state[1], state[2] if amsgrad else None, beta1=0.9,
                          beta2=0.999, eps=1e-8, step=step, **options)
    return [p, *state]


@pytest.mark.parametrize("case", list(ADAM_CASES))
def test_adam_step_native_and_reference_agree(case, rng, reference_calls) -> None:
    start = rng.standard_normal((9, 11)).astype(np.float32)
    # Gradients of varying size, so AMSGrad's running maximum differs from the second moment.
    grads = [(rng.standard_normal((9, 11)) * (3.0 if i == 1 else 0.3)).astype(np.float32)
             for i in range(5)]
    results = {}
    for name, layout in LAYOUTS.items():
        before = reference_calls.get("adam_step", 0)
        results[name] = run_adam(layout, ADAM_CASES[case], start, grads)
        assert reference_calls.get("adam_step", 0) - before == (0 if name == "float32 native" else 5)
    for name in ("float64 reference", "float32 strided reference"):
        for ours, ref in zip(results["float32 native"], results[name], strict=True):
            np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-6, err_msg=f"{case} {name}")


def test_fused_kernels_check_their_arrays() -> None:
    p = np.zeros(4, np.float32)
    with pytest.raises(ValueError, match=r"one shape, got p \(4,\) float32, grad \(3,\) float32"):
        kernels.sgd_step(p, np.zeros(3, np.float32), None, lr=0.1)
    with pytest.raises(ValueError, match=r"one shape, got p \(4,\) float64, grad \(3,\) float64"):
        kernels.sgd_step(np.zeros(4), np.zeros(3), None, lr=0.1)  # checked on the reference path too
    with pytest.raises(TypeError, match=r"one floating dtype.*float64"):
        kernels.adam_step(p, np.zeros(4), np.zeros(4, np.float32), np.zeros(4, np.float32), None,
                          lr=0.1, beta1=0.9, beta2=0.99, eps=1e-8, weight_decay=0.0, step=1)
    with pytest.raises(TypeError, match=r"one floating dtype.*int64"):
        kernels.sgd_step(np.zeros(4, np.int64), np.zeros(4, np.int64), None, lr=0.1)
    with pytest.raises(ValueError, match="momentum needs a buffer"):
        kernels.sgd_step(np.zeros(4), np.zeros(4), None, lr=0.1, momentum=0.9)
    with pytest.raises(ValueError, match="step counts from 1"):
        kernels.adam_step(p, p.copy(), p.copy(), p.copy(), None, lr=0.1, beta1=0.9, beta2=0.99,
                          eps=1e-8, weight_decay=0.0, step=0)


def test_non_contiguous_float32_params_take_the_reference_path() -> None:
    base = np.ones((4, 6), np.float32)
    p = pyrt.tensor(base)
    p.data = base[:, ::2]  # a strided view: the native kernel does not apply
    p.requires_grad_(True)
    p.grad = pyrt.tensor(np.ones((4, 3), np.float32))
    pyrt.optim.SGD([p], lr=0.5, momentum=0.9).step()
    assert (base[:, ::2] == 0.5).all() and (base[:, 1::2] == 1).all()
