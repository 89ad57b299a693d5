"""``einsum``: Einstein summation over any number of operands, differentiable.

The forward is ``numpy.einsum`` (with ``optimize=True`` for several operands,
so contractions go through BLAS). The gradient of operand i is itself an
einsum: the output gradient contracted with every other operand, written onto
operand i's subscripts. Two cases need more than that one einsum:

- a letter only operand i has (``"ij->i"`` sums j away): its gradient is the
  same for every j, so the einsum leaves it out and it is broadcast back;
- a letter repeated in operand i (``"ii->i"``, the diagonal): the gradient is
  computed over the distinct letters and written onto that diagonal of zeros.

Ellipses (``"...ij,...jk->...ik"``) become letters the equation does not use,
so the backward only ever sees plain letters.
"""

from __future__ import annotations

import string
from collections.abc import Sequence
from typing import Any

from pyrt.autograd import Function, runs_on_input_device
from pyrt.backend import get_array_module
from pyrt.errors import ShapeError
from pyrt.tensor import Tensor

__all__ = ["einsum"]


def _parse(equation: str, ndims: Sequence[int]) -> tuple[list[str], str]:
    """Explicit subscripts for each operand and the output, ellipses replaced by spare letters.

    >>> _parse("ij,jk", [2, 2])
    (['ij', 'jk'], 'ik')
    >>> _parse("...i->...", [3])
    (['ABi'], 'AB')
    """
    equation = equation.replace(" ", "")
    lhs, arrow, rhs = equation.partition("->")
    inputs = lhs.split(",")
    if len(inputs) != len(ndims):
        raise ValueError(f"einsum(): the equation {equation!r} names {len(inputs)} operands but "
                         f"{len(ndims)} were given")
    used = set(equation) - set(".,->")
    if not all(c in string.ascii_letters for c in used):
        raise ValueError(f"einsum(): invalid subscript in {equation!r}; subscripts must be letters")
    spare = [c for c in string.ascii_uppercase + string.ascii_lowercase if c not in used]
    ellipsis_rank = 0
    for sub, ndim in zip(inputs, ndims, strict=True):
        letters = len(sub.replace("...", ""))
        if "..." in sub:
            ellipsis_rank = max(ellipsis_rank, ndim - letters)
        elif letters != ndim:
            raise ShapeError(f"einsum(): the subscripts {sub!r} name {letters} dims but the operand has "
                             f"{ndim}")
    batch = "".join(spare[:ellipsis_rank])
    # An operand with fewer ellipsis dims lines up with the rightmost ones (broadcasting).
    subs = [sub.replace("...", batch[ellipsis_rank - (ndim - len(sub.replace("...", ""))):])
            for sub, ndim in zip(inputs, ndims, strict=True)]
    if arrow:
        out = rhs.replace("...", batch)
    else:  # implicit output: the ellipsis dims, then the letters used once, alphabetically (numpy's rule)
        counts = "".join(inputs)
        out = batch + "".join(sorted(c for c in set(counts) - {"."} if counts.count(c) == 1))
    return subs, out


def _gradient_for(sub: str, shape: tuple[int, ...], out: str, grad: Any,
                  others: list[tuple[str, Any]]) -> Any:
    """The gradient of one operand with subscripts ``sub``: the einsum of everything else onto it."""
    xp = get_array_module(grad)
    distinct = "".join(dict.fromkeys(sub))
    size = {c: shape[sub.index(c)] for c in distinct}
    reached = set(out).union(*(s for s, _ in others))
    kept = "".join(c for c in distinct if c in reached)
    equation = ",".join([out, *(s for s, _ in others)]) + "->" + kept
    g = xp.einsum(equation, grad, *(a for _, a in others), optimize=len(others) > 0)
    # A size-1 dim that broadcast against a larger one sums back to size 1.
    summed = tuple(i for i, c in enumerate(kept) if size[c] == 1 and g.shape[i] != 1)
    if summed:
        g = g.sum(axis=summed, keepdims=True)
    # Letters only this operand had: the gradient does not depend on them, so broadcast it along them.
    g = xp.broadcast_to(g.reshape(g.shape + (1,) * (len(distinct) - len(kept))),
                        tuple(size[c] for c in kept + "".join(c for c in distinct if c not in kept)))
    g = xp.einsum(kept + "".join(c for c in distinct if c not in kept) + "->" + distinct, g)
    if distinct == sub:
        return g
    # Repeated letters: the operand's entries off that diagonal never reached the output.
    grad_x = xp.zeros(shape, dtype=grad.dtype)
    diagonal = xp.einsum(f"{sub}->{distinct}", grad_x)  # numpy returns a writeable view here
    diagonal[...] = g
    return grad_x


class Einsum(Function):
    def forward(self, *operands_and_subscripts: Any) -> Any:
        *arrays, subs, out = operands_and_subscripts
        self.subs, self.out, self.shapes = subs, out, [a.shape for a in arrays]
        self.save_for_backward(*arrays)
        xp = get_array_module(*arrays)
        equation = ",".join(subs) + "->" + out
        return xp.asarray(xp.einsum(equation, *arrays, optimize=len(arrays) > 1))

    def backward(self, grad: Any) -> tuple[Any, ...]:
        arrays = self.saved_tensors
        grads = []
        for i, need in enumerate(self.needs_input_grad[:len(arrays)]):
            others = [(s, a) for j, (s, a) in enumerate(zip(self.subs, arrays, strict=True)) if j != i]
            grads.append(_gradient_for(self.subs[i], self.shapes[i], self.out, grad, others)
                         if need else None)
        return (*grads, None, None)


@runs_on_input_device
def einsum(equation: str, *operands: Tensor | Sequence[Tensor]) -> Tensor:
    """Einstein summation, as ``torch.einsum``: ``einsum("ij,jk->ik", a, b)`` is ``a @ b``.

    Operands may also be passed as one list. Letters repeated across operands
    are multiplied along; letters missing from the output are summed;
    ``...`` stands for broadcast batch dims.

    >>> import pyrt
    >>> a, b = pyrt.tensor([[1.0, 2.0], [3.0, 4.0]]), pyrt.tensor([[1.0], [1.0]])
    >>> einsum("ij,jk->ik", a, b).tolist()
    [[3.0], [7.0]]
    >>> einsum("ii", a).item()
    5.0
    """
    if len(operands) == 1 and isinstance(operands[0], list | tuple):
        operands = tuple(operands[0])
    if not operands:
        raise ValueError("einsum(): must provide at least one operand")
    tensors = [t if isinstance(t, Tensor) else Tensor(t) for t in operands]
    dtypes = {t.dtype for t in tensors}
    if len(dtypes) > 1:
        raise RuntimeError(f"einsum(): expected operands of one dtype, got {[str(t.dtype) for t in tensors]}")
    subs, out = _parse(equation, [t.ndim for t in tensors])
    for sub, t in zip(subs, tensors, strict=True):
        for c in set(sub):
            sizes = {t.shape[i] for i, s in enumerate(sub) if s == c}
            if len(sizes) > 1:
                raise ShapeError(f"einsum(): subscript {c} is repeated for operand of shape {t.shape} but "
                                 f"the sizes don't match, {sorted(sizes)}")
    try:
        return Einsum.apply(*tensors, subs, out)
    except ValueError as exc:  # numpy's shape mismatch between operands
        shapes = [t.shape for t in tensors]
        raise ShapeError(f"einsum(): operands of shapes {shapes} do not fit {equation!r}: {exc}") from exc

