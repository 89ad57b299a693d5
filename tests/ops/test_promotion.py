"""Type promotion as a grid against PyTorch: bool/int/float tensors x Python numbers x 0-d tensors
x tensors, for ``result_type`` and for the ops that use it (dtype and values both)."""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

import pyrt
from pyrt.ops.promotion import promote_types, result_type

torch = pytest.importorskip("torch")

DTYPES = ["bool", "uint8", "int8", "int16", "int32", "int64", "float16", "float32", "float64"]
# Python numbers as a user writes them; np.float64 counts as a Python float in both libraries.
SCALARS: list[Any] = [True, False, 3, 2.5, np.float64(0.5)]


def _pair(dtype: str, values: list[Any], shape: tuple[int, ...] = (3,)) -> tuple[pyrt.Tensor, Any]:
    array = np.asarray(values, dtype=dtype).reshape(shape)
    return pyrt.tensor(array), torch.tensor(array)


def _tensor(dtype: str, ndim: int) -> tuple[pyrt.Tensor, Any]:
    if ndim == 0:
        return _pair(dtype, [True] if dtype == "bool" else [2], ())
    return _pair(dtype, [True, False, True] if dtype == "bool" else [1, 2, 3])


def _operands() -> list[tuple[str, Any, Any]]:
    """(label, pyrt operand, torch operand): Python numbers, 0-d tensors and 1-D tensors of every dtype."""
    out: list[tuple[str, Any, Any]] = [(repr(s), s, s) for s in SCALARS]
    for ndim in (0, 1):
        for dtype in DTYPES:
            p, t = _tensor(dtype, ndim)
            out.append((f"{dtype}[{'0-d' if ndim == 0 else '1-d'}]", p, t))
    return out


def _dtype_name(x: Any) -> str:
    return str(x.dtype).replace("torch.", "")


def test_promote_types_table_matches_torch() -> None:
    for a in DTYPES:
        for b in DTYPES:
            expected = str(torch.promote_types(getattr(torch, a), getattr(torch, b))).replace("torch.", "")
            assert str(promote_types(a, b)) == expected, (a, b)


@pytest.mark.parametrize("left_ndim", [0, 1])
@pytest.mark.parametrize("left_dtype", DTYPES)
def test_result_type_grid_matches_torch(left_dtype: str, left_ndim: int) -> None:
    left, left_torch = _tensor(left_dtype, left_ndim)
    for label, right, right_torch in _operands():
        expected = str(torch.result_type(left_torch, right_torch)).replace("torch.", "")
        assert str(result_type(left, right)) == expected, (left_dtype, left_ndim, label)
        assert str(result_type(right, left)) == expected, (label, left_dtype, left_ndim)
    for a in SCALARS:  # two Python numbers: the number rule alone
        for b in SCALARS:
            assert str(result_type(a, b)) == str(torch.result_type(a, b)).replace("torch.", ""), (a, b)


BINARY: dict[str, tuple[Callable[..., Any], Callable[..., Any]]] = {
    "add": (operator.add, operator.add),
    "sub": (operator.sub, operator.sub),
    "mul": (operator.mul, operator.mul),
    "truediv": (operator.truediv, operator.truediv),
    "floordiv": (operator.floordiv, operator.floordiv),
    "pow": (operator.pow, operator.pow),
    "maximum": (pyrt.maximum, torch.maximum),
    "where": (lambda a, b: pyrt.where(pyrt.tensor([True, False, True]), a, b),
              lambda a, b: torch.where(torch.tensor([True, False, True]), a, b)),
}


def _run(fn: Callable[..., Any], *args: Any) -> Any:
    try:
        return fn(*args)
    except (RuntimeError, TypeError) as exc:
        return exc


@pytest.mark.parametrize("name", list(BINARY))
@pytest.mark.parametrize("left_dtype", DTYPES)
def test_binary_op_grid_matches_torch(name: str, left_dtype: str) -> None:
    """Both orders (tensor op other, other op tensor); dtype, values, and which combinations raise."""
    ours, theirs = BINARY[name]
    left, left_torch = _tensor(left_dtype, 1)
    for label, right, right_torch in _operands():
        for order, args, torch_args in (("tensor op other", (left, right), (left_torch, right_torch)),
                                        ("other op tensor", (right, left), (right_torch, left_torch))):
            if name == "maximum" and not all(isinstance(a, pyrt.Tensor) for a in args):
                continue  # torch.maximum takes tensors only
            if name in ("floordiv", "truediv") and torch_args[1] is False:
                continue  # division by zero: inf/nan patterns are not the point here
            expected = _run(theirs, *torch_args)
            got = _run(ours, *args)
            where = f"{name}: {order}, tensor {left_dtype}, other {label}"
            if isinstance(expected, Exception):
                assert isinstance(got, RuntimeError), f"{where}: torch raised {expected!r}, pyrt gave {got!r}"
                continue
            assert isinstance(got, pyrt.Tensor), f"{where}: pyrt raised {got!r}, torch gave {expected}"
            assert _dtype_name(got) == _dtype_name(expected), where
            np.testing.assert_allclose(got.numpy().astype(np.float64),
                                       expected.numpy().astype(np.float64), rtol=2e-3, err_msg=where)


def test_reported_silent_wrong_answers() -> None:
    """The issue's examples, each against its PyTorch value and dtype."""
    cases = [
        (lambda m: 0.7 ** m.tensor([1, 2, 3])),
        (lambda m: 2.5 ** m.tensor([1, 2])),
        (lambda m: m.tensor(1) + 0.5),
        (lambda m: m.tensor([1, 2]) / m.tensor([2, 4])),
        (lambda m: m.tensor([3, 4]) / 2),
        (lambda m: m.tensor([1, 2]).exp()),
        (lambda m: m.tensor([1, 2], dtype=m.int32) ** 1.5),
        (lambda m: m.tensor([2, 3]) ** m.tensor([-1, 2])),
        (lambda m: m.tensor([1, -1, 2, 0]) ** m.tensor([-3, -3, 0, 2])),
        (lambda m: 2 ** m.tensor([-1, 2])),
        (lambda m: m.full((2, 2), 4)),
        (lambda m: m.full((2,), True)),
        (lambda m: m.full((2,), 0.5)),
    ]
    for case in cases:
        got, expected = case(pyrt), case(torch)
        assert _dtype_name(got) == _dtype_name(expected)
        np.testing.assert_allclose(got.numpy(), expected.numpy(), rtol=1e-6)
    for exponent in (-1, -2):
        with pytest.raises(RuntimeError, match="Integers to negative integer powers are not allowed"):
            pyrt.tensor([2, 3]) ** exponent
        with pytest.raises(RuntimeError, match="Integers to negative integer powers are not allowed"):
            torch.tensor([2, 3]) ** exponent


@pytest.mark.parametrize("dtype", DTYPES)
def test_float_math_on_integers_gives_the_default_float(dtype: str) -> None:
    x, x_torch = _tensor(dtype, 1)
    for name in ("exp", "log", "sqrt", "rsqrt", "sin", "cos", "log2", "exp2"):
        got, expected = getattr(x, name)(), getattr(x_torch, name)()
        assert _dtype_name(got) == _dtype_name(expected), (name, dtype)
        np.testing.assert_allclose(got.numpy().astype(np.float64), expected.numpy().astype(np.float64),
                                   rtol=2e-3, err_msg=f"{name}({dtype})")
    for name in ("sign", "floor", "ceil", "round", "abs"):
        if dtype == "bool" and name in ("floor", "ceil", "round", "abs"):
            continue  # torch has no bool kernel for these
        got, expected = getattr(x, name)(), getattr(x_torch, name)()
        assert _dtype_name(got) == _dtype_name(expected), (name, dtype)
        assert got.tolist() == expected.tolist(), (name, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_reductions_accumulate_like_torch(dtype: str) -> None:
    x, x_torch = _tensor(dtype, 1)
    for name in ("sum", "prod", "cumsum"):
        args = (0,) if name == "cumsum" else ()
        got, expected = getattr(x, name)(*args), getattr(x_torch, name)(*args)
        assert _dtype_name(got) == _dtype_name(expected), (name, dtype)
        np.testing.assert_allclose(got.numpy().astype(np.float64), expected.numpy().astype(np.float64))
    assert _dtype_name(x.sum(dtype=pyrt.float64)) == "float64"
    assert x.any().dtype == np.bool_ and x.all().dtype == np.bool_


def test_clamp_masked_fill_lerp_promotion() -> None:
    cases = [
        (lambda m: m.tensor([1, 2, 3]).clamp(1.5)),
        (lambda m: m.tensor([1, 2, 3]).clamp(max=2)),
        (lambda m: m.tensor([1, 2, 3]).clip(0.5, 2.5)),
        (lambda m: m.tensor([1, 2]).masked_fill(m.tensor([True, False]), 2.5)),
        (lambda m: m.tensor([1.0, 2.0]).masked_fill(m.tensor([True, False]), m.tensor(2.5, dtype=m.float64))),
        (lambda m: m.tensor([0.0, 2.0]).lerp(m.tensor([1.0, 4.0]), 0.5)),
        (lambda m: m.tensor([1, 2], dtype=m.uint8) + 300),
    ]
    for case in cases:
        got, expected = case(pyrt), case(torch)
        assert _dtype_name(got) == _dtype_name(expected)
        np.testing.assert_allclose(got.numpy(), expected.numpy())


def test_mixed_float_gradients_come_back_in_each_inputs_dtype() -> None:
    a = pyrt.tensor([1.0, 2.0], requires_grad=True)  # float32
    b = pyrt.tensor(np.array([3.0, 4.0]), requires_grad=True)  # float64
    out = a * b
    assert out.dtype == np.float64
    out.sum().backward()
    assert a.grad.dtype == np.float32 and b.grad.dtype == np.float64
    assert a.grad.tolist() == [3.0, 4.0] and b.grad.tolist() == [1.0, 2.0]


def test_the_documented_table_is_what_pyrt_does() -> None:
    """docs/type_promotion.md's result_type table, cell by cell."""
    from pathlib import Path

    doc = Path(__file__).resolve().parents[2] / "docs" / "type_promotion.md"
    lines = [ln for ln in doc.read_text().splitlines() if ln.startswith("| tensor \\ other")]
    assert len(lines) == 1
    rows = doc.read_text().split(lines[0])[1].strip().splitlines()[1:]
    others: list[Any] = [True, 3, 2.5]
    others += [_tensor(d, 0)[0] for d in ("bool", "int64", "float64")]
    others += [_tensor(d, 1)[0] for d in ("int32", "float16", "float64")]
    checked = 0
    for row in rows:
        if not row.startswith("|"):
            break
        cells = [c.strip() for c in row.strip("|").split("|")]
        left = _tensor(cells[0], 1)[0]
        for other, expected in zip(others, cells[1:], strict=True):
            assert str(result_type(left, other)) == expected, (cells[0], other)
            checked += 1
    assert checked == 7 * 9
