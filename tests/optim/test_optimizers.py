"""SGD, Adam and AdamW against numpy transcriptions of PyTorch's documented algorithms
(and against torch itself when it is importable), plus the Optimizer base class."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

import pyrt
from pyrt import nn, optim

STEPS = 6
SHAPES = [(3, 4), (5,), (1,)]


# --- references: PyTorch's algorithm boxes, line by line, in float64 numpy ---------

def sgd_reference(params: list[np.ndarray], grads: list[list[np.ndarray]], lr: float,
                  momentum: float = 0.0, dampening: float = 0.0, weight_decay: float = 0.0,
                  nesterov: bool = False, maximize: bool = False) -> list[np.ndarray]:
    params = [p.copy() for p in params]
    bufs: list[np.ndarray | None] = [None] * len(params)
    for step_grads in grads:
        for i, g in enumerate(step_grads):
            g = -g if maximize else g
            if weight_decay:
                g = g + weight_decay * params[i]
            if momentum:
                bufs[i] = g.copy() if bufs[i] is None else momentum * bufs[i] + (1 - dampening) * g
                g = g + momentum * bufs[i] if nesterov else bufs[i]
            params[i] = params[i] - lr * g
    return params


def adam_reference(params: list[np.ndarray], grads: list[list[np.ndarray]], lr: float,
                   betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                   weight_decay: float = 0.0, amsgrad: bool = False,
                   decoupled: bool = False) -> list[np.ndarray]:
    beta1, beta2 = betas
    params = [p.copy() for p in params]
    m = [np.zeros_like(p) for p in params]
    v = [np.zeros_like(p) for p in params]
    v_max = [np.zeros_like(p) for p in params]
    for t, step_grads in enumerate(grads, start=1):
        for i, g in enumerate(step_grads):
            if weight_decay and decoupled:
                params[i] = params[i] * (1 - lr * weight_decay)
            elif weight_decay:
                g = g + weight_decay * params[i]
            m[i] = beta1 * m[i] + (1 - beta1) * g
            v[i] = beta2 * v[i] + (1 - beta2) * g * g
            m_hat = m[i] / (1 - beta1**t)
            if amsgrad:
                v_max[i] = np.maximum(v_max[i], v[i])
                v_hat = v_max[i] / (1 - beta2**t)
            else:
                v_hat = v[i] / (1 - beta2**t)
            params[i] = params[i] - lr * m_hat / (np.sqrt(v_hat) + eps)
    return params


def adamw_reference(params: list[np.ndarray], grads: list[list[np.ndarray]],
                    weight_decay: float = 1e-2, **kwargs: Any) -> list[np.ndarray]:
    return adam_reference(params, grads, weight_decay=weight_decay, decoupled=True, **kwargs)


def _problem(seed: int = 0) -> tuple[list[np.ndarray], list[list[np.ndarray]]]:
    rng = np.random.default_rng(seed)
    params = [rng.standard_normal(s) for s in SHAPES]
    grads = [[rng.standard_normal(s) for s in SHAPES] for _ in range(STEPS)]
    return params, grads


def _run_pyrt(make: Callable[[list[pyrt.Tensor]], optim.Optimizer], params: list[np.ndarray],
              grads: list[list[np.ndarray]], dtype: Any = np.float64) -> list[np.ndarray]:
    tensors = [nn.Parameter(pyrt.tensor(p.astype(dtype))) for p in params]
    opt = make(tensors)
    for step_grads in grads:
        for t, g in zip(tensors, step_grads, strict=True):
            t.grad = pyrt.tensor(g.astype(dtype))
        opt.step()
    return [t.data for t in tensors]


CASES: list[tuple[str, Callable[..., optim.Optimizer], Callable[..., list[np.ndarray]],
                  dict[str, Any]]] = [
    ("sgd", optim.SGD, sgd_reference, dict(lr=0.1)),
    ("sgd_momentum", optim.SGD, sgd_reference, dict(lr=0.1, momentum=0.9)),
    ("sgd_dampening", optim.SGD, sgd_reference, dict(lr=0.05, momentum=0.8, dampening=0.3)),
    ("sgd_nesterov_wd", optim.SGD, sgd_reference,
     dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.01)),
    ("sgd_maximize", optim.SGD, sgd_reference, dict(lr=0.1, momentum=0.5, maximize=True)),
    ("adam", optim.Adam, adam_reference, dict(lr=1e-2)),
    ("adam_betas_eps", optim.Adam, adam_reference, dict(lr=3e-2, betas=(0.5, 0.9), eps=1e-3)),
    ("adam_l2", optim.Adam, adam_reference, dict(lr=1e-2, weight_decay=0.1)),
    ("adam_amsgrad", optim.Adam, adam_reference, dict(lr=1e-2, amsgrad=True)),
    ("adamw", optim.AdamW, adamw_reference, dict(lr=1e-2)),
    ("adamw_wd_amsgrad", optim.AdamW, adamw_reference,
     dict(lr=1e-2, weight_decay=0.3, amsgrad=True)),
]


@pytest.mark.parametrize(("name", "cls", "reference", "kwargs"), CASES, ids=[c[0] for c in CASES])
def test_matches_reference_float64(name: str, cls: Any, reference: Any,
                                   kwargs: dict[str, Any]) -> None:
    params, grads = _problem()
    got = _run_pyrt(lambda ps: cls(ps, **kwargs), params, grads)
    for g, e in zip(got, reference(params, grads, **kwargs), strict=True):
        np.testing.assert_allclose(g, e, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize(("name", "cls", "reference", "kwargs"), CASES, ids=[c[0] for c in CASES])
def test_matches_reference_float32(name: str, cls: Any, reference: Any,
                                   kwargs: dict[str, Any]) -> None:
    params, grads = _problem(1)
    got = _run_pyrt(lambda ps: cls(ps, **kwargs), params, grads, dtype=np.float32)
    assert all(g.dtype == np.float32 for g in got)
    for g, e in zip(got, reference(params, grads, **kwargs), strict=True):
        np.testing.assert_allclose(g, e, rtol=2e-5, atol=2e-6)


@pytest.mark.parametrize(("name", "cls", "reference", "kwargs"), CASES, ids=[c[0] for c in CASES])
def test_matches_torch(name: str, cls: Any, reference: Any, kwargs: dict[str, Any]) -> None:
    torch = pytest.importorskip("torch")
    params, grads = _problem(2)
    got = _run_pyrt(lambda ps: cls(ps, **kwargs), params, grads)
    tensors = [torch.tensor(p, requires_grad=True) for p in params]
    opt = getattr(torch.optim, cls.__name__)(tensors, **kwargs)
    for step_grads in grads:
        for t, g in zip(tensors, step_grads, strict=True):
            t.grad = torch.tensor(g)
        opt.step()
    for g, t in zip(got, tensors, strict=True):
        np.testing.assert_allclose(g, t.detach().numpy(), rtol=1e-10, atol=1e-12)


# --- behaviour --------------------------------------------------------------------

def test_updates_in_place_and_skips_params_without_grad() -> None:
    a, b = nn.Parameter(pyrt.ones(2)), nn.Parameter(pyrt.ones(2))
    array = a.data
    opt = optim.Adam([a, b], lr=0.1)
    a.grad = pyrt.ones(2)
    opt.step()
    assert a.data is array and (array < 1).all()
    np.testing.assert_array_equal(b.data, np.ones(2))
    assert b not in opt.state


def test_sgd_first_momentum_buffer_is_gradient_copy() -> None:
    p = nn.Parameter(pyrt.zeros(2))
    p.grad = pyrt.tensor([1.0, 2.0])
    opt = optim.SGD([p], lr=1.0, momentum=0.9, dampening=0.5)
    opt.step()
    buf = opt.state[p]["momentum_buffer"]
    np.testing.assert_array_equal(buf.data, [1.0, 2.0])  # no dampening on the first step
    assert buf.data is not p.grad.data
    np.testing.assert_array_equal(p.data, [-1.0, -2.0])


def test_adam_step_counter_and_state_shapes() -> None:
    p = nn.Parameter(pyrt.zeros(3, 2))
    opt = optim.Adam([p], amsgrad=True)
    for _ in range(3):
        p.grad = pyrt.ones(3, 2)
        opt.step()
    state = opt.state[p]
    assert state["step"] == 3
    assert {k for k in state if k != "step"} == {"exp_avg", "exp_avg_sq", "max_exp_avg_sq"}
    assert all(state[k].shape == (3, 2) for k in state if k != "step")


def test_training_reduces_loss_end_to_end() -> None:
    x = pyrt.randn(64, 5)
    y = x @ pyrt.randn(5, 1)
    for make in (lambda ps: optim.SGD(ps, lr=0.1, momentum=0.9),
                 lambda ps: optim.Adam(ps, lr=0.05), lambda ps: optim.AdamW(ps, lr=0.05)):
        model = nn.Linear(5, 1)
        opt = make(model.parameters())
        losses = []
        for _ in range(50):
            opt.zero_grad()
            loss = nn.MSELoss()(model(x), y)
            loss.backward()
            opt.step()
            losses.append(loss.item())
        assert losses[-1] < 0.05 * losses[0]


def test_step_with_closure_returns_loss() -> None:
    p = nn.Parameter(pyrt.tensor([2.0]))
    opt = optim.SGD([p], lr=0.25)

    def closure() -> pyrt.Tensor:
        opt.zero_grad()
        loss = (p * p).sum()
        loss.backward()
        return loss

    with pyrt.no_grad():  # the closure re-enables grad itself
        assert opt.step(closure).item() == 4.0
    assert p.item() == 1.0


def test_zero_grad_modes() -> None:
    p = nn.Parameter(pyrt.ones(2))
    p.grad = pyrt.ones(2)
    opt = optim.SGD([p], lr=0.1)
    opt.zero_grad(set_to_none=False)
    np.testing.assert_array_equal(p.grad.data, [0.0, 0.0])
    opt.zero_grad()
    assert p.grad is None


def test_param_groups_defaults_and_overrides() -> None:
    model = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 1))
    opt = optim.SGD([{"params": model[0].parameters()},
                     {"params": model[1].parameters(), "lr": 0.5, "momentum": 0.9}], lr=0.1)
    assert [g["lr"] for g in opt.param_groups] == [0.1, 0.5]
    assert [g["momentum"] for g in opt.param_groups] == [0.0, 0.9]
    assert all(len(g["params"]) == 2 for g in opt.param_groups)


def test_add_param_group_rejects_duplicates() -> None:
    a, b = nn.Parameter(pyrt.ones(1)), nn.Parameter(pyrt.ones(1))
    opt = optim.SGD([a], lr=0.1)
    with pytest.raises(ValueError, match="more than one parameter group"):
        opt.add_param_group({"params": [a]})
    with pytest.raises(ValueError, match="duplicate parameters"):
        opt.add_param_group({"params": [b, b]})
    opt.add_param_group({"params": b, "lr": 0.01})
    assert opt.param_groups[1]["params"] == [b] and opt.param_groups[1]["lr"] == 0.01


@pytest.mark.parametrize(("make", "message"), [
    (lambda ps: optim.SGD(ps, lr=-0.1), "Invalid learning rate"),
    (lambda ps: optim.SGD(ps, lr=0.1, momentum=-1), "Invalid momentum"),
    (lambda ps: optim.SGD(ps, lr=0.1, weight_decay=-1), "Invalid weight_decay"),
    (lambda ps: optim.SGD(ps, lr=0.1, nesterov=True), "Nesterov momentum requires"),
    (lambda ps: optim.SGD(ps, lr=0.1, momentum=0.9, dampening=0.1, nesterov=True),
     "zero dampening"),
    (lambda ps: optim.Adam(ps, lr=-1e-3), "Invalid learning rate"),
    (lambda ps: optim.Adam(ps, betas=(1.0, 0.999)), "beta parameter at index 0"),
    (lambda ps: optim.Adam(ps, betas=(0.9, -0.1)), "beta parameter at index 1"),
    (lambda ps: optim.Adam(ps, eps=-1.0), "Invalid epsilon"),
    (lambda ps: optim.AdamW(ps, weight_decay=-0.1), "Invalid weight_decay"),
])
def test_invalid_hyperparameters(make: Callable[[list[pyrt.Tensor]], Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make([nn.Parameter(pyrt.ones(1))])


def test_invalid_params_argument() -> None:
    with pytest.raises(ValueError, match="empty parameter list"):
        optim.SGD([], lr=0.1)
    with pytest.raises(TypeError, match="iterable of Tensors"):
        optim.SGD(nn.Parameter(pyrt.ones(1)), lr=0.1)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="can only optimize Tensors"):
        optim.SGD([np.ones(1)], lr=0.1)  # type: ignore[list-item]
    leaf = pyrt.ones(1, requires_grad=True)
    with pytest.raises(ValueError, match="non-leaf"):
        optim.SGD([leaf * 2], lr=0.1)


def test_adamw_default_weight_decay() -> None:
    assert optim.AdamW([nn.Parameter(pyrt.ones(1))]).defaults["weight_decay"] == 1e-2
    assert optim.Adam([nn.Parameter(pyrt.ones(1))]).defaults["weight_decay"] == 0.0


# --- state dict -------------------------------------------------------------------

def _trained(opt_cls: Any, **kwargs: Any) -> tuple[nn.Module, optim.Optimizer]:
    pyrt.manual_seed(0)
    model = nn.Linear(3, 2)
    opt = opt_cls(model.parameters(), **kwargs)
    for _ in range(3):
        opt.zero_grad()
        model(pyrt.ones(4, 3)).pow(2).sum().backward()
        opt.step()
    return model, opt


def test_state_dict_layout_uses_indices() -> None:
    _, opt = _trained(optim.Adam, lr=0.01)
    state = opt.state_dict()
    assert state["param_groups"][0]["params"] == [0, 1]
    assert state["param_groups"][0]["lr"] == 0.01
    assert set(state["state"]) == {0, 1} and state["state"][0]["step"] == 3


@pytest.mark.parametrize(("opt_cls", "kwargs"), [(optim.SGD, dict(lr=0.1, momentum=0.9)),
                                                  (optim.Adam, dict(lr=0.01, amsgrad=True)),
                                                  (optim.AdamW, dict(lr=0.01))])
def test_state_dict_resume_continues_identically(opt_cls: Any, kwargs: dict[str, Any]) -> None:
    model_a, opt_a = _trained(opt_cls, **kwargs)
    model_b = nn.Linear(3, 2)
    model_b.load_state_dict(model_a.state_dict())
    opt_b = opt_cls(model_b.parameters(), lr=123.0)
    opt_b.load_state_dict(opt_a.state_dict())
    assert opt_b.param_groups[0]["lr"] == kwargs["lr"]
    for model, opt in ((model_a, opt_a), (model_b, opt_b)):
        opt.zero_grad()
        model(pyrt.ones(4, 3)).pow(2).sum().backward()
        opt.step()
    np.testing.assert_array_equal(model_a.weight.data, model_b.weight.data)
    # The loaded state is a copy: stepping one optimizer leaves the other alone.
    key = next(k for k in opt_a.state[model_a.weight] if k != "step")
    assert opt_a.state[model_a.weight][key].data is not opt_b.state[model_b.weight][key].data


def test_load_state_dict_size_mismatch() -> None:
    _, opt = _trained(optim.Adam)
    other = optim.Adam([nn.Parameter(pyrt.ones(1))])
    with pytest.raises(ValueError, match="doesn't match the size of optimizer's group"):
        other.load_state_dict(opt.state_dict())
    with pytest.raises(ValueError, match="parameter groups"):
        other.load_state_dict({"state": {}, "param_groups": []})
    with pytest.raises(ValueError, match="'state' and 'param_groups'"):
        other.load_state_dict({})


def test_load_state_dict_shape_mismatch() -> None:
    _, opt = _trained(optim.Adam)
    other = optim.Adam([nn.Parameter(pyrt.ones(2, 3)), nn.Parameter(pyrt.ones(5))])
    with pytest.raises(ValueError, match=r"exp_avg' has shape \(2,\) but its parameter has "
                                         r"shape \(5,\)"):
        other.load_state_dict(opt.state_dict())


def test_repr_lists_groups() -> None:
    text = repr(optim.SGD([nn.Parameter(pyrt.ones(1))], lr=0.1))
    assert text.startswith("SGD (\nParameter Group 0\n") and "    lr: 0.1" in text


def test_reference_sanity() -> None:
    # The reference itself: one plain Adam step moves each weight by ~lr against the gradient.
    (p,) = adam_reference([np.zeros(1)], [[np.array([3.0])]], lr=0.1)
    assert p[0] == pytest.approx(-0.1, rel=1e-6)
    assert math.isclose(sgd_reference([np.ones(1)], [[np.ones(1)]], lr=0.5)[0][0], 0.5)
