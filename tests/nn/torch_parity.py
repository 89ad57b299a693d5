"""One comparison used by the nn tests: the same function in pyrt and in PyTorch on the same
arrays, forward values and the gradient of every floating input, through a random projection
of every floating output (so every Jacobian entry counts)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pytest

import pyrt


def _outputs(result: Any) -> list[Any]:
    items = list(result) if isinstance(result, tuple | list) else [result]
    return [o for o in items if o is not None]


def assert_matches_torch(ours: Callable[..., Any], theirs: Callable[..., Any], arrays: Sequence[np.ndarray],
                         requires_grad: Sequence[bool] | None = None, rtol: float = 1e-9,
                         atol: float = 1e-11, seed: int = 0) -> None:
    """``ours(*pyrt tensors)`` equals ``theirs(*torch tensors)``: values, dtypes, input gradients."""
    torch = pytest.importorskip("torch")
    if requires_grad is None:
        requires_grad = [np.issubdtype(a.dtype, np.floating) for a in arrays]
    ours_in = [pyrt.tensor(a, requires_grad=bool(g)) for a, g in zip(arrays, requires_grad, strict=True)]
    theirs_in = [torch.tensor(a, requires_grad=bool(g)) for a, g in zip(arrays, requires_grad, strict=True)]
    ours_out, theirs_out = _outputs(ours(*ours_in)), _outputs(theirs(*theirs_in))
    assert len(ours_out) == len(theirs_out)
    rng = np.random.default_rng(seed)
    ours_loss, theirs_loss = None, None
    for o, t in zip(ours_out, theirs_out, strict=True):
        expected = t.detach().numpy()
        assert o.shape == expected.shape, (o.shape, expected.shape)
        assert o.dtype == expected.dtype, (o.dtype, expected.dtype)
        np.testing.assert_allclose(o.data, expected, rtol=rtol, atol=atol)
        if np.issubdtype(o.dtype, np.floating) and o.requires_grad:
            w = rng.standard_normal(o.shape).astype(o.dtype)
            term_o, term_t = (o * pyrt.tensor(w)).sum(), (t * torch.tensor(w)).sum()
            ours_loss = term_o if ours_loss is None else ours_loss + term_o
            theirs_loss = term_t if theirs_loss is None else theirs_loss + term_t
    if ours_loss is None:
        return
    ours_loss.backward()
    theirs_loss.backward()
    for index, (o, t) in enumerate(zip(ours_in, theirs_in, strict=True)):
        if not o.requires_grad:
            continue
        expected = np.zeros(o.shape, o.dtype) if t.grad is None else t.grad.numpy()
        got = np.zeros(o.shape, o.dtype) if o.grad is None else o.grad.data
        np.testing.assert_allclose(got, expected, rtol=rtol, atol=atol, err_msg=f"gradient of input {index}")


def copy_torch_weights(ours: pyrt.nn.Module, theirs: Any) -> None:
    """Load a torch module's state into ours (same keys and shapes, or the load fails)."""
    ours.load_state_dict({k: v.detach().numpy() for k, v in theirs.state_dict().items()})


def assert_module_matches_torch(ours: pyrt.nn.Module, theirs: Any, arrays: Sequence[np.ndarray],
                                call: Callable[..., Any] | None = None,
                                requires_grad: Sequence[bool] | None = None, rtol: float = 1e-9,
                                atol: float = 1e-11) -> None:
    """As ``assert_matches_torch`` for ``call(module, *inputs)``, plus every parameter's gradient.

    The torch module's weights are copied into ours first.
    """
    copy_torch_weights(ours, theirs)
    call = call or (lambda module, *inputs: module(*inputs))
    theirs.zero_grad()
    for p in ours.parameters():
        p.grad = None
    assert_matches_torch(lambda *xs: call(ours, *xs), lambda *xs: call(theirs, *xs), arrays,
                         requires_grad=requires_grad, rtol=rtol, atol=atol)
    ours_params = dict(ours.named_parameters())
    for name, p in theirs.named_parameters():
        got = ours_params[name].grad
        expected = np.zeros(tuple(p.shape)) if p.grad is None else p.grad.numpy()
        np.testing.assert_allclose(np.zeros(expected.shape) if got is None else got.data, expected,
                                   rtol=rtol, atol=atol, err_msg=f"gradient of {name}")
