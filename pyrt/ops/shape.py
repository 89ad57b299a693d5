"""Shape ops: reshape/view, transpose/permute, getitem, cat/stack, split/chunk, squeeze/unsqueeze,
expand, repeat, flatten/unflatten, flip, roll. Their backwards move gradients, never compute.

Shapes that do not fit raise ``pyrt.errors.ShapeError`` (a RuntimeError, as in PyTorch, and a
ValueError, as pyrt raised before).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

from pyrt.autograd import Function, runs_on_input_device
from pyrt.backend import get_array_module
from pyrt.errors import ShapeError
from pyrt.tensor import Tensor

__all__ = [
    "cat", "chunk", "expand", "flatten", "flip", "getitem", "permute", "repeat", "reshape", "roll", "split",
    "squeeze", "stack", "transpose", "unflatten", "unsqueeze",
]


class Reshape(Function):
    def forward(self, x: Any, shape: tuple[int, ...]) -> Any:
        self.input_shape = x.shape
        return x.reshape(shape)

    def backward(self, grad: Any) -> tuple[Any, None]:
        return grad.reshape(self.input_shape), None


class Permute(Function):
    def forward(self, x: Any, axes: tuple[int, ...]) -> Any:
        self.axes = axes
        return x.transpose(axes)

    def backward(self, grad: Any) -> tuple[Any, None]:
        xp = get_array_module(grad)
        return grad.transpose(xp.argsort(xp.asarray(self.axes)).tolist()), None


def _is_basic(index: Any) -> bool:
    """Slices, ints, None and Ellipsis only: every element is picked at most once."""
    parts = index if isinstance(index, tuple) else (index,)
    return all(isinstance(i, slice | int) or i is None or i is Ellipsis for i in parts)


class GetItem(Function):
    def forward(self, x: Any, index: Any) -> Any:
        self.shape, self.dtype, self.index = x.shape, x.dtype, index
        return x[index]

    def backward(self, grad: Any) -> tuple[Any, None]:
        xp = get_array_module(grad)
        grad_x = xp.zeros(self.shape, dtype=grad.dtype)
        if _is_basic(self.index):
            grad_x[self.index] = grad  # no repeats possible: a plain write (split/chunk take this path)
        else:
            # add.at accumulates repeated indices (x[[0, 0]]), which plain assignment would drop.
            xp.add.at(grad_x, self.index, grad)
        return grad_x, None


class Flip(Function):
    def forward(self, x: Any, axes: tuple[int, ...]) -> Any:
        self.axes = axes
        return get_array_module(x).flip(x, axes)

    def backward(self, grad: Any) -> tuple[Any, None]:
        return get_array_module(grad).flip(grad, self.axes), None


class Roll(Function):
    def forward(self, x: Any, shifts: tuple[int, ...], axes: tuple[int, ...]) -> Any:
        self.shifts, self.axes = shifts, axes
        return get_array_module(x).roll(x, shifts, axes)

    def backward(self, grad: Any) -> tuple[Any, None, None]:
        return get_array_module(grad).roll(grad, tuple(-s for s in self.shifts), self.axes), None, None


class Repeat(Function):
    """Tile ``x`` ``reps[d]`` times along each dim (``x`` already has ``len(reps)`` dims)."""

    def forward(self, x: Any, reps: tuple[int, ...]) -> Any:
        self.shape, self.reps = x.shape, reps
        return get_array_module(x).tile(x, reps)

    def backward(self, grad: Any) -> tuple[Any, None]:
        # View the output as (r0, n0, r1, n1, ...) and sum the copies away.
        split = [n for pair in zip(self.reps, self.shape, strict=True) for n in pair]
        return grad.reshape(split).sum(axis=tuple(range(0, len(split), 2))), None


class Concatenate(Function):
    def forward(self, *arrays_and_dim: Any) -> Any:
        *arrays, dim = arrays_and_dim
        xp = get_array_module(*arrays)
        self.dim = dim
        self.splits = [a.shape[dim] for a in arrays]
        return xp.concatenate(arrays, axis=dim)

    def backward(self, grad: Any) -> tuple[Any, ...]:
        bounds = [0]
        for n in self.splits:
            bounds.append(bounds[-1] + n)
        parts = []
        for lo, hi in itertools.pairwise(bounds):
            index = [slice(None)] * grad.ndim
            index[self.dim] = slice(lo, hi)
            parts.append(grad[tuple(index)])
        return (*parts, None)


class Expand(Function):
    def forward(self, x: Any, shape: tuple[int, ...]) -> Any:
        return get_array_module(x).broadcast_to(x, shape)

    def backward(self, grad: Any) -> tuple[Any, None]:
        return grad, None  # the engine sums it back to the input's shape


def _axis(name: str, dim: int, ndim: int, shape: tuple[int, ...]) -> int:
    """``dim`` as an index into ``ndim`` axes, or PyTorch's IndexError."""
    rank = max(ndim, 1)  # a 0-d tensor accepts dim 0 and -1
    if not -rank <= dim < rank:
        raise IndexError(f"{name}: dim {dim} is out of range for a tensor of shape {shape}")
    return dim % rank


def _resolve_shape(shape: tuple[Any, ...]) -> tuple[int, ...]:
    if len(shape) == 1 and isinstance(shape[0], Sequence):
        shape = tuple(shape[0])
    return tuple(int(n) for n in shape)


def reshape(x: Tensor, *shape: int | Sequence[int]) -> Tensor:
    """Same data in a new shape (one dimension may be -1).

    >>> import pyrt
    >>> reshape(pyrt.tensor([1.0, 2.0, 3.0, 4.0]), 2, -1).shape
    (2, 2)
    """
    target = _resolve_shape(shape)
    try:
        return Reshape.apply(x, target)
    except ValueError as exc:
        raise ShapeError(f"reshape: cannot reshape a tensor of shape {x.shape} into {target} "
                         f"(shape {list(target)} is invalid for input of size {x.numel()})") from exc


def flatten(x: Tensor, start_dim: int = 0, end_dim: int = -1) -> Tensor:
    """Merge dims ``start_dim..end_dim`` into one.

    >>> import pyrt
    >>> flatten(pyrt.zeros(2, 3, 4), 1).shape
    (2, 12)
    """
    if x.ndim == 0:
        return reshape(x, 1)
    start = _axis("flatten", start_dim, x.ndim, x.shape)
    end = _axis("flatten", end_dim, x.ndim, x.shape)
    if start > end:
        raise ValueError(f"flatten: start_dim {start_dim} comes after end_dim {end_dim}")
    merged = 1
    for n in x.shape[start:end + 1]:
        merged *= n
    return reshape(x, (*x.shape[:start], merged, *x.shape[end + 1:]))


def permute(x: Tensor, *dims: int | Sequence[int]) -> Tensor:
    """Reorder dimensions.

    >>> import pyrt
    >>> permute(pyrt.zeros(2, 3, 4), 2, 0, 1).shape
    (4, 2, 3)
    """
    axes = _resolve_shape(dims)
    if len(axes) != x.ndim:
        raise ShapeError(f"permute: {axes} is not a permutation of the dims of a {x.ndim}-D tensor "
                         f"(shape {x.shape})")
    axes = tuple(_axis("permute", a, x.ndim, x.shape) for a in axes)
    if sorted(axes) != list(range(x.ndim)):
        raise ShapeError(f"permute: {dims} repeats a dim, so it is not a permutation of the {x.ndim} dims")
    return Permute.apply(x, axes)


def transpose(x: Tensor, dim0: int, dim1: int) -> Tensor:
    """Swap two dimensions.

    >>> import pyrt
    >>> transpose(pyrt.zeros(2, 3), 0, 1).shape
    (3, 2)
    """
    axes = list(range(x.ndim))
    dim0, dim1 = _axis("transpose", dim0, x.ndim, x.shape), _axis("transpose", dim1, x.ndim, x.shape)
    axes[dim0], axes[dim1] = axes[dim1], axes[dim0]
    return Permute.apply(x, tuple(axes))


@runs_on_input_device
def getitem(x: Tensor, index: Any) -> Tensor:
    """``x[index]`` with numpy indexing; the gradient is scattered back (repeats add up).

    >>> import pyrt
    >>> getitem(pyrt.tensor([1.0, 2.0, 3.0]), slice(1, None)).tolist()
    [2.0, 3.0]
    """
    if isinstance(index, Tensor):
        index = index.data
    elif isinstance(index, tuple):
        index = tuple(i.data if isinstance(i, Tensor) else i for i in index)
    return GetItem.apply(x, index)


def cat(tensors: Sequence[Tensor], dim: int = 0) -> Tensor:
    """Join tensors along an existing dimension.

    >>> import pyrt
    >>> cat([pyrt.ones(2, 1), pyrt.zeros(2, 3)], dim=1).shape
    (2, 4)
    """
    if len(tensors) == 0:
        raise ValueError("cat: expected a non-empty list of tensors")
    first = tensors[0]
    axis = _axis("cat", dim, first.ndim, first.shape)
    for i, t in enumerate(tensors):
        if t.ndim != first.ndim or any(
            a != b for d, (a, b) in enumerate(zip(t.shape, first.shape, strict=True)) if d != axis
        ):
            raise ShapeError(
                f"cat: tensor {i} has shape {t.shape} but tensor 0 has shape {first.shape}; "
                f"all dims except dim {dim} must match"
            )
    return Concatenate.apply(*tensors, axis)


def stack(tensors: Sequence[Tensor], dim: int = 0) -> Tensor:
    """Join same-shaped tensors along a new dimension.

    >>> import pyrt
    >>> stack([pyrt.ones(3), pyrt.zeros(3)]).shape
    (2, 3)
    """
    if len(tensors) == 0:
        raise ValueError("stack: expected a non-empty list of tensors")
    for i, t in enumerate(tensors):
        if t.shape != tensors[0].shape:
            raise ShapeError(f"stack: tensor {i} has shape {t.shape} but tensor 0 has {tensors[0].shape}")
    axis = _axis("stack", dim, tensors[0].ndim + 1, tensors[0].shape)
    return cat([unsqueeze(t, axis) for t in tensors], dim=axis)


def squeeze(x: Tensor, dim: int | None = None) -> Tensor:
    """Drop size-1 dimensions (only ``dim`` if given and of size 1).

    >>> import pyrt
    >>> squeeze(pyrt.zeros(1, 3, 1)).shape
    (3,)
    """
    if dim is None:
        shape = tuple(n for n in x.shape if n != 1)
    else:
        axis = _axis("squeeze", dim, x.ndim, x.shape)
        shape = x.shape if x.ndim == 0 or x.shape[axis] != 1 else x.shape[:axis] + x.shape[axis + 1:]
    return Reshape.apply(x, shape)


def unsqueeze(x: Tensor, dim: int) -> Tensor:
    """Insert a size-1 dimension at ``dim``.

    >>> import pyrt
    >>> unsqueeze(pyrt.zeros(3), 0).shape
    (1, 3)
    """
    if not -x.ndim - 1 <= dim <= x.ndim:
        raise IndexError(f"unsqueeze: dim {dim} is out of range for a tensor of shape {x.shape}")
    axis = dim % (x.ndim + 1)
    return Reshape.apply(x, (*x.shape[:axis], 1, *x.shape[axis:]))


def expand(x: Tensor, *shape: int | Sequence[int]) -> Tensor:
    """Broadcast to a larger shape without copying (-1 keeps a dimension).

    >>> import pyrt
    >>> expand(pyrt.zeros(3, 1), 3, 4).shape
    (3, 4)
    """
    target = list(_resolve_shape(shape))
    offset = len(target) - x.ndim
    if offset < 0:
        raise ShapeError(f"expand: cannot expand shape {x.shape} to {tuple(target)}")
    for i, n in enumerate(x.shape):
        if target[i + offset] == -1:
            target[i + offset] = n
        elif n != 1 and n != target[i + offset]:
            raise ShapeError(f"expand: cannot expand shape {x.shape} to {tuple(target)}")
    return Expand.apply(x, tuple(target))


def _dims(name: str, dims: int | Sequence[int], x: Tensor) -> tuple[int, ...]:
    dims = (dims,) if isinstance(dims, int) else tuple(dims)
    axes = tuple(_axis(name, d, x.ndim, x.shape) for d in dims)
    if len(set(axes)) != len(axes):
        raise RuntimeError(f"{name}: dim {dims} appears multiple times in the list of dims")
    return axes


def flip(x: Tensor, dims: int | Sequence[int]) -> Tensor:
    """Reverse the order of elements along ``dims``.

    >>> import pyrt
    >>> flip(pyrt.tensor([[1, 2], [3, 4]]), [0, 1]).tolist()
    [[4, 3], [2, 1]]
    """
    axes = tuple(a for a in _dims("flip", dims, x) if a < x.ndim)
    return Flip.apply(x, axes)


def roll(x: Tensor, shifts: int | Sequence[int], dims: int | Sequence[int] | None = None) -> Tensor:
    """Shift elements along ``dims`` cyclically (over the flattened tensor when ``dims`` is None).

    >>> import pyrt
    >>> roll(pyrt.tensor([1, 2, 3, 4]), 1).tolist()
    [4, 1, 2, 3]
    >>> roll(pyrt.tensor([[1, 2], [3, 4]]), shifts=(1, -1), dims=(0, 1)).tolist()
    [[4, 3], [2, 1]]
    """
    shift_list = (shifts,) if isinstance(shifts, int) else tuple(shifts)
    if dims is None:
        if len(shift_list) != 1:
            raise RuntimeError(f"roll: shifts {shifts} needs dims of the same length")
        return reshape(Roll.apply(reshape(x, -1), shift_list, (0,)), x.shape)
    dim_list = (dims,) if isinstance(dims, int) else tuple(dims)
    if len(shift_list) != len(dim_list):
        raise RuntimeError(f"roll: shifts {shifts} and dims {dims} must have the same length")
    if x.ndim == 0:
        return Roll.apply(x, (), ())
    return Roll.apply(x, shift_list, tuple(_axis("roll", d, x.ndim, x.shape) for d in dim_list))


def repeat(x: Tensor, *sizes: int | Sequence[int]) -> Tensor:
    """Tile the tensor: ``sizes[d]`` copies along dim d (extra leading sizes add dims), like
    ``torch.Tensor.repeat`` (numpy's ``tile``, not numpy's ``repeat``).

    >>> import pyrt
    >>> repeat(pyrt.tensor([1, 2]), 2, 2).tolist()
    [[1, 2, 1, 2], [1, 2, 1, 2]]
    """
    reps = _resolve_shape(sizes)
    if len(reps) < x.ndim:
        raise ShapeError(f"repeat: number of repeat dims ({len(reps)}) can not be smaller than the "
                         f"number of dims of the tensor ({x.ndim}, shape {x.shape})")
    if any(r < 0 for r in reps):
        raise RuntimeError(f"repeat: repeats {reps} must be non-negative")
    padded = reshape(x, (1,) * (len(reps) - x.ndim) + x.shape)
    return Repeat.apply(padded, reps)


def unflatten(x: Tensor, dim: int, sizes: Sequence[int]) -> Tensor:
    """Split dim ``dim`` into ``sizes`` (one of which may be -1).

    >>> import pyrt
    >>> unflatten(pyrt.zeros(2, 12), 1, (3, -1)).shape
    (2, 3, 4)
    """
    axis = _axis("unflatten", dim, x.ndim, x.shape)
    sizes = tuple(int(n) for n in sizes)
    if len(sizes) == 0:
        raise RuntimeError("unflatten: sizes must be non-empty")
    known = 1
    for n in sizes:
        known *= n if n != -1 else 1
    if sizes.count(-1) > 1 or (sizes.count(-1) == 0 and known != x.shape[axis]) or (
            sizes.count(-1) == 1 and (known == 0 or x.shape[axis] % known != 0)):
        raise ShapeError(f"unflatten: provided sizes {list(sizes)} don't multiply up to the size of dim "
                         f"{dim} ({x.shape[axis]}) in the input tensor of shape {x.shape}")
    return reshape(x, (*x.shape[:axis], *sizes, *x.shape[axis + 1:]))


def split(x: Tensor, split_size_or_sections: int | Sequence[int], dim: int = 0) -> tuple[Tensor, ...]:
    """Pieces along ``dim``: of ``split_size`` each (the last may be smaller), or of the listed sizes.

    >>> import pyrt
    >>> [t.tolist() for t in split(pyrt.tensor([1, 2, 3, 4, 5]), 2)]
    [[1, 2], [3, 4], [5]]
    >>> [t.shape for t in split(pyrt.zeros(5, 2), [1, 4])]
    [(1, 2), (4, 2)]
    """
    if x.ndim == 0:
        raise RuntimeError("split: a 0-d tensor has no dim to split")
    axis = _axis("split", dim, x.ndim, x.shape)
    n = x.shape[axis]
    if isinstance(split_size_or_sections, int):
        size = split_size_or_sections
        if size < 0 or (size == 0 and n != 0):
            raise RuntimeError(f"split: split_size must be positive for a dim of size {n}, got {size}")
        # An empty dim still gives one (empty) piece, as in PyTorch.
        sizes = [size] * (n // size) + ([n % size] if n % size else []) if n else [0]
    else:
        sizes = [int(s) for s in split_size_or_sections]
        if sum(sizes) != n or any(s < 0 for s in sizes):
            raise ShapeError(f"split: split_with_sizes expects split_sizes {sizes} to sum exactly to {n} "
                             f"(input tensor's size at dim {dim}, shape {x.shape})")
    pieces, start = [], 0
    for size in sizes:
        index = (slice(None),) * axis + (slice(start, start + size),)
        pieces.append(getitem(x, index))
        start += size
    return tuple(pieces)


def chunk(x: Tensor, chunks: int, dim: int = 0) -> tuple[Tensor, ...]:
    """``chunks`` pieces along ``dim`` of ``ceil(n / chunks)`` each; fewer if ``n`` runs out first.

    >>> import pyrt
    >>> [t.tolist() for t in chunk(pyrt.tensor([1, 2, 3, 4, 5]), 3)]
    [[1, 2], [3, 4], [5]]
    """
    if chunks <= 0:
        raise RuntimeError(f"chunk expects `chunks` to be greater than 0, got: {chunks}")
    if x.ndim == 0:
        raise RuntimeError("chunk expects at least a 1-dimensional tensor")
    n = x.shape[_axis("chunk", dim, x.ndim, x.shape)]
    return split(x, -(-n // chunks) if n else 0, dim) if n else split(x, [0] * chunks, dim)

