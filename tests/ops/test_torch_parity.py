"""The ops a PyTorch user reaches for first, against PyTorch: values and gradients in float64, on
edge cases (empty, 0-d, non-contiguous, negative dims, broadcasting), plus pyrt's own gradcheck.

Each case is one lambda ``fn(m, *inputs)`` written once for both libraries (``m`` is ``pyrt`` or
``torch``; the methods have the same names and arguments), so a case checks the API as well as the math.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

import pyrt

torch = pytest.importorskip("torch")


def _positive(x: np.ndarray) -> np.ndarray:
    return np.abs(x) + 0.5


def _with_zeros(x: np.ndarray) -> np.ndarray:
    # prod's gradient with one zero in a row (others' product) and two (all zero).
    x = x.copy()
    x.reshape(-1)[[0, 4, 5]] = 0.0
    return x


def _noncontiguous(shape: tuple[int, ...]) -> Callable[[np.ndarray], np.ndarray]:
    """A transposed view with ``shape``: strides that are not C order."""
    def make(_: np.ndarray) -> np.ndarray:
        base = np.random.default_rng(7).standard_normal(shape[::-1])
        return base.T
    return make


# (id, fn(m, *inputs), input shapes, input transform or None, gradcheck?)
Case = tuple[str, Callable[..., Any], list[tuple[int, ...]], Callable[[np.ndarray], np.ndarray] | None, bool]
CASES: list[Case] = [
    # arithmetic with PyTorch's keywords
    ("add_alpha_broadcast", lambda m, a, b: a.add(b, alpha=2.5), [(2, 3), (3,)], None, True),
    ("sub_alpha_0d", lambda m, a, b: a.sub(b, alpha=-1.5), [(2, 3), ()], None, True),
    ("mul_0d_0d", lambda m, a, b: a.mul(b), [(), ()], None, True),
    ("div_broadcast", lambda m, a, b: a.div(b), [(4, 1), (3,)], _positive, True),
    ("top_level_add_sub_mul_div_pow", lambda m, a, b: m.pow(m.div(m.mul(m.add(a, b), m.sub(a, b)), b), 2),
     [(2, 3), (2, 3)], _positive, True),
    ("div_trunc", lambda m, a, b: a.div(b, rounding_mode="trunc"), [(3, 4), (4,)], None, False),
    ("div_floor", lambda m, a, b: a.div(b, rounding_mode="floor"), [(3, 4), (4,)], None, False),
    # torch has no derivative for floor_divide (backward raises), so these compare values only.
    ("floordiv_operator", lambda m, a: a.detach() // 0.3, [(5,)], None, False),
    ("rfloordiv_operator", lambda m, a: 2.0 // a.detach(), [(5,)], _positive, False),
    ("neg", lambda m, a: a.neg(), [(2, 3)], None, True),
    ("rpow_float_base", lambda m, a: 0.7**a, [(4,)], None, True),
    ("rsqrt", lambda m, a: a.rsqrt(), [(3, 2)], _positive, True),
    ("sin_noncontiguous", lambda m, a: a.sin(), [(3, 4)], _noncontiguous((3, 4)), True),
    ("cos", lambda m, a: a.cos(), [(3, 4)], None, True),
    ("log2", lambda m, a: a.log2(), [(3,)], _positive, True),
    ("exp2_0d", lambda m, a: a.exp2(), [()], None, True),
    ("sign", lambda m, a: a.sign(), [(6,)], None, False),
    ("floor", lambda m, a: a.floor(), [(6,)], None, False),
    ("ceil", lambda m, a: a.ceil(), [(6,)], None, False),
    ("round_half_even", lambda m, a: (a * 0 + m.tensor([0.5, 1.5, 2.5, -0.5, -2.5, 3.49],
                                                       dtype=m.float64)).round(), [(6,)], None, False),
    ("round_decimals", lambda m, a: (a * 10).round(decimals=2), [(6,)], None, False),
    ("clip", lambda m, a: a.clip(-0.5, 0.5), [(4, 4)], None, True),
    ("clamp_tensor_bounds", lambda m, a, lo, hi: a.clamp(lo, hi + 1.0), [(3, 4), (4,), (3, 1)], None, True),
    ("lerp_scalar_weight", lambda m, a, b: a.lerp(b, 0.3), [(2, 3), (2, 3)], None, True),
    ("lerp_tensor_weight", lambda m, a, b, w: a.lerp(b, w), [(2, 3), (2, 3), (3,)], None, True),
    ("masked_fill_scalar", lambda m, a: a.masked_fill(a > 0, -1.0), [(3, 4)], None, True),
    ("masked_fill_tensor_value_broadcast_mask",
     lambda m, a, v: a.masked_fill(m.tensor([True, False, True, False]), v), [(3, 4), ()], None, True),
    # reductions
    ("std_all", lambda m, a: a.std(), [(3, 4)], None, True),
    ("std_dim_keepdim_negative", lambda m, a: a.std(dim=-1, keepdim=True), [(3, 4)], None, True),
    ("std_correction0", lambda m, a: a.std(dim=(0, 2), correction=0), [(2, 3, 4)], None, True),
    ("std_unbiased_false", lambda m, a: a.std(0, unbiased=False), [(5, 2)], None, True),
    ("prod_all", lambda m, a: a.prod(), [(2, 3)], None, True),
    ("prod_dim_zeros", lambda m, a: a.prod(dim=1), [(3, 3)], _with_zeros, True),
    ("prod_keepdim_negative", lambda m, a: a.prod(-2, keepdim=True), [(3, 2, 2)], None, True),
    ("prod_0d", lambda m, a: a.prod(), [()], None, True),
    ("prod_empty", lambda m, a: a.prod(dim=0), [(0, 3)], None, False),
    ("cumsum", lambda m, a: a.cumsum(-1), [(3, 4)], None, True),
    ("cumsum_noncontiguous_dim0", lambda m, a: a.cumsum(0), [(4, 3)], _noncontiguous((4, 3)), True),
    ("cumsum_0d", lambda m, a: a.cumsum(0), [()], None, True),
    ("cumsum_empty", lambda m, a: a.cumsum(1), [(2, 0)], None, False),
    ("sum_dtype", lambda m, a: a.float().sum(dim=0, dtype=m.float64), [(3, 2)], None, False),
    # shape
    ("flip_negative_dims", lambda m, a: a.flip(-1, 0), [(2, 3, 4)], None, True),
    ("flip_list", lambda m, a: a.flip([1]), [(2, 3)], _noncontiguous((2, 3)), True),
    ("flip_empty", lambda m, a: a.flip(0), [(0, 2)], None, False),
    ("unflatten", lambda m, a: a.unflatten(-1, (2, -1)), [(3, 6)], None, True),
    ("repeat", lambda m, a: a.repeat(2, 1, 3), [(2, 2)], None, True),
    ("repeat_zero", lambda m, a: a.repeat(0, 2), [(3,)], None, False),
    ("roll_flat", lambda m, a: a.roll(5), [(3, 4)], None, True),
    ("roll_dims", lambda m, a: a.roll((1, -2), (0, -1)), [(3, 4)], _noncontiguous((3, 4)), True),
    ("tril", lambda m, a: a.tril(), [(4, 4)], None, True),
    ("tril_batched_offset", lambda m, a: a.tril(-1), [(2, 3, 4)], None, True),
    ("triu_offset", lambda m, a: a.triu(1), [(3, 5)], None, True),
    ("diagonal", lambda m, a: a.diagonal(), [(3, 3)], None, True),
    ("diagonal_offset_dims", lambda m, a: a.diagonal(offset=1, dim1=-1, dim2=0), [(3, 2, 4)], None, True),
    ("diagonal_negative_offset", lambda m, a: a.diagonal(-1), [(4, 3)], None, True),
    ("diagonal_top_level", lambda m, a: m.diagonal(a, 0, 1, 2), [(2, 3, 3)], None, True),
    ("chunk_uneven", lambda m, a: a.chunk(3, dim=-1), [(2, 7)], None, True),
    ("chunk_more_than_size", lambda m, a: a.chunk(5), [(3, 2)], None, True),
    ("split_int", lambda m, a: a.split(2, dim=1), [(2, 5)], None, True),
    ("split_list", lambda m, a: a.split([1, 0, 3]), [(4, 2)], _noncontiguous((4, 2)), True),
    ("split_top_level", lambda m, a: m.split(a, 3), [(7,)], None, True),
    ("split_empty_dim", lambda m, a: a.split(2), [(0, 3)], None, False),
    ("chunk_empty_dim", lambda m, a: a.chunk(3, 1), [(2, 0)], None, False),
    ("masked_fill_mask_broadcasts_input", lambda m, a: a.masked_fill(m.tensor([[True], [False]]), 0.5),
     [(1, 3)], None, True),
    ("gather_repeated_index", lambda m, a: a.gather(1, m.tensor([[0, 0, 2], [1, 1, 1]])), [(2, 3)], None,
     True),
    ("gather_smaller_index_dim0", lambda m, a: a.gather(0, m.tensor([[2], [0]])), [(3, 4)], None, True),
    ("gather_negative_dim", lambda m, a: a.gather(-1, m.tensor([[3, 0]])), [(2, 4)], None, True),
    # einsum: the common forms
    ("einsum_matmul", lambda m, a, b: m.einsum("ij,jk->ik", a, b), [(2, 3), (3, 4)], None, True),
    ("einsum_batched_matmul", lambda m, a, b: m.einsum("bij,bjk->bik", a, b), [(2, 2, 3), (2, 3, 2)], None,
     True),
    ("einsum_implicit_output", lambda m, a, b: m.einsum("ij,jk", a, b), [(2, 3), (3, 4)], None, True),
    ("einsum_outer", lambda m, a, b: m.einsum("i,j->ij", a, b), [(3,), (4,)], None, True),
    ("einsum_dot", lambda m, a, b: m.einsum("i,i->", a, b), [(5,), (5,)], None, True),
    ("einsum_hadamard_sum_one", lambda m, a, b: m.einsum("ij,ij->i", a, b), [(3, 4), (3, 4)], None, True),
    ("einsum_only_one_has_letter", lambda m, a, b: m.einsum("ij,j->j", a, b), [(3, 4), (4,)], None, True),
    ("einsum_attention_scores", lambda m, q, k: m.einsum("bhqd,bhkd->bhqk", q, k),
     [(1, 2, 3, 4), (1, 2, 5, 4)], None, True),
    ("einsum_ellipsis_broadcast", lambda m, a, b: m.einsum("...ij,...jk->...ik", a, b),
     [(2, 1, 2, 3), (3, 3, 2)], None, True),
    ("einsum_size1_broadcast", lambda m, a, b: m.einsum("ij,ij->ij", a, b), [(2, 1), (2, 3)], None, True),
    ("einsum_three_operands", lambda m, a, b, c: m.einsum("ab,bc,cd->ad", a, b, c), [(2, 3), (3, 4), (4, 2)],
     None, True),
    ("einsum_list_operands", lambda m, a, b: m.einsum("ij,kj->ik", [a, b]), [(2, 3), (4, 3)], None, True),
    ("einsum_transpose", lambda m, a: m.einsum("ij->ji", a), [(2, 3)], _noncontiguous((2, 3)), True),
    ("einsum_sum", lambda m, a: m.einsum("ijk->j", a), [(2, 3, 4)], None, True),
    ("einsum_trace", lambda m, a: m.einsum("ii", a), [(3, 3)], None, True),
    ("einsum_diagonal", lambda m, a: m.einsum("ii->i", a), [(3, 3)], None, True),
    ("einsum_batch_diagonal_repeat", lambda m, a, b: m.einsum("bii,bi->b", a, b), [(2, 3, 3), (2, 3)], None,
     True),
    ("einsum_empty", lambda m, a, b: m.einsum("ij,jk->ik", a, b), [(2, 0), (0, 3)], None, False),
]


def _inputs(shapes: list[tuple[int, ...]], transform: Callable | None, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    arrays = [rng.standard_normal(shape) for shape in shapes]
    return [transform(a) if transform is not None else a for a in arrays]


def _as_list(out: Any) -> list[Any]:
    return list(out) if isinstance(out, tuple | list) else [out]


@pytest.mark.parametrize(("fn", "shapes", "transform", "check"),
                         [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_values_and_gradients_match_torch(fn: Callable, shapes: list, transform: Callable | None,
                                          check: bool) -> None:
    arrays = _inputs(shapes, transform, seed=len(shapes))
    ours = [pyrt.from_numpy(a).requires_grad_() for a in arrays]  # from_numpy keeps the strides
    theirs = [torch.from_numpy(a).requires_grad_() for a in arrays]
    out_ours, out_theirs = _as_list(fn(pyrt, *ours)), _as_list(fn(torch, *theirs))
    assert len(out_ours) == len(out_theirs)
    rng = np.random.default_rng(0)
    loss_ours, loss_theirs = 0.0, 0.0
    for o, t in zip(out_ours, out_theirs, strict=True):
        assert o.shape == tuple(t.shape) and str(o.dtype) == str(t.dtype).replace("torch.", "")
        np.testing.assert_allclose(o.detach().numpy(), t.detach().numpy(), rtol=1e-10, atol=1e-12)
        weight = rng.standard_normal(o.shape)
        loss_ours = loss_ours + (o * pyrt.tensor(weight)).sum()
        loss_theirs = loss_theirs + (t * torch.from_numpy(weight)).sum()
    if not any(o.requires_grad for o in out_ours):
        assert not any(t.requires_grad for t in out_theirs)
        return
    loss_ours.backward()
    loss_theirs.backward()
    for i, (a, b) in enumerate(zip(ours, theirs, strict=True)):
        expected = np.zeros(a.shape) if b.grad is None else b.grad.numpy()
        got = np.zeros(a.shape) if a.grad is None else a.grad.numpy()
        np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-12, err_msg=f"gradient of input {i}")


@pytest.mark.parametrize(("fn", "shapes", "transform"),
                         [c[1:4] for c in CASES if c[4]], ids=[c[0] for c in CASES if c[4]])
def test_gradcheck(fn: Callable, shapes: list, transform: Callable | None) -> None:
    arrays = _inputs(shapes, transform, seed=1)
    # gradcheck makes each input contiguous with np.ascontiguousarray, which turns 0-d into (1,):
    # such inputs travel as (1,) and become 0-d again inside.
    inputs = [pyrt.from_numpy(a.reshape(1) if a.ndim == 0 else a).requires_grad_() for a in arrays]

    def joined(*xs: pyrt.Tensor) -> pyrt.Tensor:
        xs = tuple(x.reshape(()) if a.ndim == 0 else x for x, a in zip(xs, arrays, strict=True))
        return pyrt.cat([o.reshape(-1) for o in _as_list(fn(pyrt, *xs))])

    assert pyrt.gradcheck(joined, inputs)


def test_gradcheck_catches_a_wrong_gradient() -> None:
    """The harness fails on a wrong backward (here einsum's, scaled by 1.01)."""
    einsum_module = importlib.import_module("pyrt.ops.einsum")

    a = pyrt.tensor(np.random.default_rng(0).standard_normal((2, 3)), requires_grad=True)
    b = pyrt.tensor(np.random.default_rng(1).standard_normal((3, 2)), requires_grad=True)
    original = einsum_module.Einsum.backward

    def skewed(self: Any, grad: Any) -> Any:
        return tuple(g * 1.01 if g is not None else None for g in original(self, grad))

    einsum_module.Einsum.backward = skewed
    try:
        assert not pyrt.gradcheck(lambda x, y: pyrt.einsum("ij,jk->ik", x, y), [a, b], raise_exception=False)
    finally:
        einsum_module.Einsum.backward = original


def test_integer_division_and_rounding_modes_match_torch() -> None:
    a, b = [7, -7, 6, -6, 0], [2, 2, -4, -4, 3]
    for mode in (None, "trunc", "floor"):
        for lhs, rhs in ((a, b), ([float(v) for v in a], b), (a, 2), (a, 2.5)):
            ours = pyrt.tensor(lhs).div(pyrt.tensor(rhs) if isinstance(rhs, list) else rhs,
                                        rounding_mode=mode)
            theirs = torch.tensor(lhs).div(torch.tensor(rhs) if isinstance(rhs, list) else rhs,
                                           rounding_mode=mode)
            assert str(ours.dtype) == str(theirs.dtype).replace("torch.", ""), (mode, lhs, rhs)
            np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=1e-6)
    with pytest.raises(RuntimeError, match="ZeroDivisionError"):
        pyrt.tensor([1, 2]) // 0
    with pytest.raises(ValueError, match="rounding_mode"):
        pyrt.tensor([1.0]).div(2, rounding_mode="round")
    assert (7 // pyrt.tensor([2, -2])).tolist() == [3, -4]


def test_any_all_and_argument_errors_match_torch() -> None:
    x = np.array([[0.0, 1.0, 2.0], [0.0, 0.0, 0.0]])
    for dim in (None, 0, 1, -1):
        for name in ("any", "all"):
            kwargs = {} if dim is None else {"dim": dim}
            got, expected = getattr(pyrt.tensor(x), name)(**kwargs), getattr(torch.tensor(x), name)(**kwargs)
            assert got.tolist() == expected.tolist() and got.dtype == np.bool_
    assert pyrt.tensor(np.zeros((0, 2))).all().item() is True
    assert pyrt.tensor(np.zeros((0, 2))).any().item() is False
    with pytest.raises(RuntimeError, match="only support floating point"):
        pyrt.tensor([1, 2]).std()
    with pytest.raises(RuntimeError, match="int64 for index"):
        pyrt.tensor([[1.0]]).gather(0, pyrt.tensor([[0]], dtype=pyrt.int32))
    with pytest.raises(RuntimeError, match="out of bounds"):
        pyrt.tensor([[1.0, 2.0]]).gather(1, pyrt.tensor([[2]]))
    with pytest.raises(RuntimeError, match="floating point"):
        pyrt.tensor([1, 2]).lerp(pyrt.tensor([3, 4]), 0.5)
    with pytest.raises(RuntimeError, match="boolean masks"):
        pyrt.tensor([1.0]).masked_fill(pyrt.tensor([1]), 0.0)
    with pytest.raises(pyrt.ShapeError, match="sum exactly"):
        pyrt.tensor([1, 2, 3]).split([1, 1])
    with pytest.raises(pyrt.ShapeError, match="can not be smaller"):
        pyrt.ones(2, 2).repeat(2)
    with pytest.raises(pyrt.ShapeError, match="multiply up"):
        pyrt.ones(2, 6).unflatten(1, (4, -1))
    with pytest.raises(IndexError, match="out of range"):
        pyrt.ones(2, 2).flip(2)
    with pytest.raises(pyrt.ShapeError, match="at least 2"):
        pyrt.ones(3).tril()
    with pytest.raises(pyrt.ShapeError, match="don't match"):
        pyrt.einsum("ii", pyrt.ones(2, 3))
    with pytest.raises(pyrt.ShapeError):
        pyrt.einsum("ij,jk->ik", pyrt.ones(2, 3), pyrt.ones(4, 2))


@pytest.mark.parametrize(("call", "legacy"), [
    (lambda: pyrt.ones(2, 3) @ pyrt.ones(4, 2), ValueError),
    (lambda: pyrt.ones(2, 3).reshape(4), ValueError),
    (lambda: pyrt.ones(2, 3).view(5, -1), ValueError),
    (lambda: pyrt.ones(2, 3).permute(0), ValueError),
    (lambda: pyrt.ones(2, 3).permute(1, 1), ValueError),
])
def test_shape_errors_are_runtime_errors_and_value_errors(call: Callable, legacy: type) -> None:
    """PyTorch code catches RuntimeError; code written against pyrt's earlier ValueError still works."""
    with pytest.raises(RuntimeError) as info:
        call()
    assert isinstance(info.value, pyrt.ShapeError) and isinstance(info.value, legacy)
