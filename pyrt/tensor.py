"""``Tensor``: an array plus what autograd needs to differentiate through it.

``tensor.data`` is the raw array (numpy on the CPU, cupy on the GPU), as in
Chainer; everything else follows PyTorch's names. Operators and methods are
thin forwards to the functions in ``pyrt.ops``, where each forward sits next
to its backward.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

from pyrt.backend import device_of, get_array_module

if TYPE_CHECKING:
    from pyrt.autograd import Function

__all__ = ["Tensor", "tensor"]

# PyTorch's default dtype: Python floats become float32, Python ints int64.
_DEFAULT_FLOAT = np.float32


def _as_array(data: Any, dtype: Any = None) -> Any:
    if isinstance(data, Tensor):
        data = data.data
    xp = get_array_module(data)
    if isinstance(data, xp.ndarray):
        return data if dtype is None else data.astype(dtype, copy=False)
    array = np.asarray(data, dtype=dtype)
    if dtype is None and array.dtype == np.float64 and not isinstance(data, np.generic):
        array = array.astype(_DEFAULT_FLOAT)
    return array


class Tensor:
    """A multi-dimensional array that can record operations for autograd.

    >>> x = Tensor(np.array([1.0, 2.0]), requires_grad=True)
    >>> (x * x).sum().backward()
    >>> x.grad.numpy().tolist()
    [2.0, 4.0]
    """

    __slots__ = ("_post_accumulate_grad_hooks", "_version", "data", "grad", "grad_fn", "requires_grad")
    # Make numpy defer to Tensor's reflected operators (ndarray + Tensor -> Tensor).
    __array_priority__ = 1000

    def __init__(self, data: Any, requires_grad: bool = False) -> None:
        self.data = _as_array(data)
        self.grad: Tensor | None = None
        self.grad_fn: Function | None = None
        self.requires_grad = False
        self._post_accumulate_grad_hooks: list[Callable[[Tensor], None]] = []
        # Bumped by every in-place change (add_, copy_, optimizer steps): backward
        # refuses to use a graph whose inputs changed after it was recorded.
        self._version = 0
        if requires_grad:
            self.requires_grad_(True)

    @classmethod
    def _from_function(cls, data: Any, fn: Function) -> Tensor:
        out = Tensor(data)
        out.requires_grad = True
        out.grad_fn = fn
        return out

    # --- properties ------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, ...]:
        """The size of each dim, as a tuple.

        >>> tensor([[1, 2, 3]]).shape
        (1, 3)
        """
        return tuple(self.data.shape)

    @property
    def dtype(self) -> np.dtype:
        """The element type (a numpy dtype).

        >>> tensor([1.0]).dtype
        dtype('float32')
        """
        return self.data.dtype

    @property
    def ndim(self) -> int:
        """The number of dims.

        >>> tensor(1.0).ndim
        0
        """
        return self.data.ndim

    @property
    def device(self) -> str:
        """``'cpu'``, or ``'cuda:N'`` for a cupy array.

        >>> tensor([1.0]).device
        'cpu'
        """
        return device_of(self.data)

    @property
    def is_leaf(self) -> bool:
        """True unless an operation recorded in the graph made this tensor.

        >>> tensor([1.0]).is_leaf
        True
        """
        return self.grad_fn is None

    @property
    def T(self) -> Tensor:
        """All dims reversed.

        >>> tensor([[1, 2, 3]]).T.shape
        (3, 1)
        """
        return self.permute(*reversed(range(self.ndim)))

    def size(self, dim: int | None = None) -> tuple[int, ...] | int:
        """The shape, or the size of one dim.

        >>> tensor([[1, 2, 3]]).size(1)
        3
        """
        return self.shape if dim is None else self.shape[dim]

    def dim(self) -> int:
        """The number of dims.

        >>> tensor([[1, 2]]).dim()
        2
        """
        return self.ndim

    def numel(self) -> int:
        """The number of elements.

        >>> tensor([[1, 2], [3, 4]]).numel()
        4
        """
        return int(self.data.size)

    def __len__(self) -> int:
        if self.ndim == 0:
            raise TypeError("len() of a 0-d tensor")
        return self.shape[0]

    def __iter__(self) -> Iterator[Tensor]:
        return (self[i] for i in range(len(self)))

    # Tensors are dictionary keys (optimizer state) by identity, like PyTorch.
    __hash__ = object.__hash__

    # --- autograd ----------------------------------------------------------------
    def requires_grad_(self, requires_grad: bool = True) -> Tensor:
        """Start (or stop, on a leaf) recording operations on this tensor.

        >>> tensor([1.0]).requires_grad_().requires_grad
        True
        """
        if requires_grad and not np.issubdtype(self.data.dtype, np.floating):
            raise RuntimeError(
                f"only floating point tensors can require gradients, got {self.data.dtype}"
            )
        if not requires_grad and self.grad_fn is not None:
            raise RuntimeError("requires_grad_(False) is only valid on leaf tensors; use detach()")
        self.requires_grad = requires_grad
        return self

    def backward(self, gradient: Any = None, retain_graph: bool = False, inputs: Any = None) -> None:
        """Accumulate gradients of this tensor into the ``.grad`` of its leaves (of ``inputs`` if given)."""
        from pyrt.autograd import backward

        backward(self, gradient, retain_graph=retain_graph, inputs=inputs)

    def detach(self) -> Tensor:
        """A tensor sharing this one's data, cut out of the graph."""
        return Tensor(self.data)

    def register_post_accumulate_grad_hook(self, hook: Callable[[Tensor], None]) -> Callable[[], None]:
        """Call ``hook(tensor)`` once this leaf's gradient is final in a backward pass.

        Returns a function that removes the hook. DDP uses this to start
        all-reducing a bucket while the rest of backward runs.

        >>> w = Tensor(np.ones(2), requires_grad=True)
        >>> remove = w.register_post_accumulate_grad_hook(lambda t: print(t.grad.data))
        >>> (w * 3).sum().backward()
        [3. 3.]
        >>> remove()
        """
        if self.grad_fn is not None:
            raise RuntimeError("post-accumulate-grad hooks can only be registered on leaf tensors")
        self._post_accumulate_grad_hooks.append(hook)
        return lambda: self._post_accumulate_grad_hooks.remove(hook)

    # --- conversion ------------------------------------------------------------------
    def numpy(self) -> np.ndarray:
        """The numpy array itself (shared memory); refused while it requires grad, and for a
        GPU tensor (copy it to the host with ``.cpu()`` first), as in PyTorch.

        >>> tensor([1, 2]).numpy()
        array([1, 2])
        """
        if self.requires_grad:
            raise RuntimeError(
                "Can't call numpy() on a Tensor that requires grad. Use tensor.detach().numpy()"
            )
        if self.device != "cpu":
            raise TypeError(f"can't convert {self.device} device type tensor to numpy. Use Tensor.cpu() "
                            "to copy the tensor to host memory first.")
        return self.data

    def item(self) -> float | int | bool:
        """The value of a one-element tensor as a Python number.

        >>> tensor([[2.5]]).item()
        2.5
        """
        if self.data.size != 1:
            raise ValueError(
                f"a Tensor with {self.data.size} elements cannot be converted to a Python scalar"
            )
        return self.data.reshape(()).item()

    def tolist(self) -> Any:
        """Nested Python lists of Python numbers.

        >>> tensor([[1, 2]]).tolist()
        [[1, 2]]
        """
        return self.data.tolist()

    def to(self, *args: Any, **kwargs: Any) -> Tensor:
        """Move and/or cast, as ``torch.Tensor.to``: ``to(dtype)``, ``to(device)``,
        ``to(device, dtype)``, ``to(other_tensor)``, keywords ``device=``, ``dtype=``, ``copy=``.

        A device is ``"cpu"``, ``"cuda"``/``"cuda:N"``, an int ``N`` (``x.to(rank)``) or a
        ``torch.device``; a CUDA device that is not there raises a RuntimeError saying so.
        Moving copies the array (cupy on a GPU, numpy on the CPU) and stays in the graph: the
        gradient flows back to the source device. A tensor already on the device and of the
        dtype is returned itself (unless ``copy=True``), as in PyTorch.

        >>> x = tensor([1.0])
        >>> x.to("cpu") is x, x.to("cpu", "float64").dtype
        (True, dtype('float64'))
        """
        from pyrt.cuda import parse_device, sort_to_args
        from pyrt.ops.device import to_device

        unknown = set(kwargs) - {"device", "dtype", "non_blocking", "copy", "memory_format"}
        if unknown or len(args) > 2:
            raise TypeError(f"Tensor.to() got unexpected arguments: {args} {sorted(unknown)}")
        device, dtype = sort_to_args(args, kwargs.get("device"), kwargs.get("dtype"))
        out = self
        if device is not None:
            out = to_device(out, *parse_device(device))  # raises for an absent CUDA device
        if dtype is not None and np.dtype(dtype) != out.dtype:
            return _ops.cast(out, dtype)
        return _ops.clone(out) if kwargs.get("copy") and out is self else out

    def cuda(self, device: Any = None) -> Tensor:
        """A copy on CUDA device ``device`` (default: the current one); itself when already there.

        >>> import pyrt
        >>> if not pyrt.cuda.is_available():
        ...     tensor([1.0]).cuda()
        Traceback (most recent call last):
        ...
        RuntimeError: CUDA device 0 was requested ('cuda') but this machine has 0 visible CUDA devices ...
        """
        if device is None:
            from pyrt.cuda import current_device, is_available

            device = f"cuda:{current_device()}" if is_available() else "cuda"
        return self.to(device)

    def cpu(self) -> Tensor:
        """A copy in host memory (numpy); itself when already there.

        >>> x = tensor([1.0])
        >>> x.cpu() is x
        True
        """
        return self.to("cpu")

    @property
    def is_cuda(self) -> bool:
        """True when the tensor is on a GPU.

        >>> tensor([1.0]).is_cuda
        False
        """
        return self.device != "cpu"

    def contiguous(self) -> Tensor:
        """This tensor if its array is C-contiguous, else a contiguous copy (in the graph)."""
        if self.data.flags.c_contiguous:
            return self
        return _ops.clone(self)

    def float(self) -> Tensor:
        """Cast to float32.

        >>> tensor([1]).float().dtype
        dtype('float32')
        """
        return self.to(np.float32)

    def double(self) -> Tensor:
        """Cast to float64.

        >>> tensor([1]).double().dtype
        dtype('float64')
        """
        return self.to(np.float64)

    def long(self) -> Tensor:
        """Cast to int64 (truncating toward zero).

        >>> tensor([1.7, -1.7]).long().tolist()
        [1, -1]
        """
        return self.to(np.int64)

    def clone(self) -> Tensor:
        """A copy that stays in the graph.

        >>> tensor([1.0]).clone().tolist()
        [1.0]
        """
        from pyrt.ops import clone

        return clone(self)

    def __bool__(self) -> bool:
        return bool(self.item())

    def __float__(self) -> float:
        return float(self.item())

    def __int__(self) -> int:
        return int(self.item())

    def __repr__(self) -> str:
        body = np.array2string(np.asarray(self.data if get_array_module(self.data) is np
                                          else self.data.get()),
                               separator=", ", prefix="tensor(")
        extras = []
        if self.data.dtype not in (_DEFAULT_FLOAT, np.int64, np.bool_):  # the dtypes PyTorch leaves implied
            extras.append(f"dtype={self.data.dtype}")
        if self.device != "cpu":
            extras.append(f"device='{self.device}'")
        if self.grad_fn is not None:
            extras.append(f"grad_fn={self.grad_fn!r}")
        elif self.requires_grad:
            extras.append("requires_grad=True")
        return f"tensor({', '.join([body, *extras])})"

    # --- operators and methods: forwards to pyrt.ops ------------------------------
    def __add__(self, other: Any) -> Tensor:
        return _ops.add(self, other)

    def __radd__(self, other: Any) -> Tensor:
        return _ops.add(other, self)

    def __sub__(self, other: Any) -> Tensor:
        return _ops.sub(self, other)

    def __rsub__(self, other: Any) -> Tensor:
        return _ops.sub(other, self)

    def __mul__(self, other: Any) -> Tensor:
        return _ops.mul(self, other)

    def __rmul__(self, other: Any) -> Tensor:
        return _ops.mul(other, self)

    def __truediv__(self, other: Any) -> Tensor:
        return _ops.div(self, other)

    def __rtruediv__(self, other: Any) -> Tensor:
        return _ops.div(other, self)

    def __floordiv__(self, other: Any) -> Tensor:
        return _ops.floor_divide(self, other)

    def __rfloordiv__(self, other: Any) -> Tensor:
        return _ops.floor_divide(other, self)

    def __pow__(self, exponent: Any) -> Tensor:
        return _ops.pow(self, exponent)

    def __rpow__(self, base: Any) -> Tensor:
        # The base keeps its own type: 0.7 ** int_tensor is float32, as in PyTorch.
        return _ops.pow(base, self)

    def __neg__(self) -> Tensor:
        return _ops.neg(self)

    def __abs__(self) -> Tensor:
        return _ops.abs(self)

    def __matmul__(self, other: Tensor) -> Tensor:
        return _ops.matmul(self, other)

    def __rmatmul__(self, other: Any) -> Tensor:
        return _ops.matmul(Tensor(other), self)

    def __getitem__(self, index: Any) -> Tensor:
        return _ops.getitem(self, index)

    # Comparisons are not differentiable: they return boolean tensors.
    def _compare(self, other: Any, op: Callable[[Any, Any], Any]) -> Tensor:
        from pyrt.autograd import _on_device, common_device

        other = other.data if isinstance(other, Tensor) else other
        with _on_device(common_device(self.data, other)):
            return Tensor(op(self.data, other))

    def __eq__(self, other: Any) -> Tensor:  # type: ignore[override]
        return self._compare(other, lambda a, b: a == b)

    def __ne__(self, other: Any) -> Tensor:  # type: ignore[override]
        return self._compare(other, lambda a, b: a != b)

    def __lt__(self, other: Any) -> Tensor:
        return self._compare(other, lambda a, b: a < b)

    def __le__(self, other: Any) -> Tensor:
        return self._compare(other, lambda a, b: a <= b)

    def __gt__(self, other: Any) -> Tensor:
        return self._compare(other, lambda a, b: a > b)

    def __ge__(self, other: Any) -> Tensor:
        return self._compare(other, lambda a, b: a >= b)

    # Arithmetic as methods, with PyTorch's keyword arguments.
    def add(self, other: Any, *, alpha: float = 1) -> Tensor:
        """``self + alpha * other``.

        >>> tensor([1.0, 2.0]).add(tensor([1.0, 1.0]), alpha=2).tolist()
        [3.0, 4.0]
        """
        return _ops.add(self, other, alpha=alpha)

    def sub(self, other: Any, *, alpha: float = 1) -> Tensor:
        """``self - alpha * other``.

        >>> tensor([3.0]).sub(1.0).tolist()
        [2.0]
        """
        return _ops.sub(self, other, alpha=alpha)

    def mul(self, other: Any) -> Tensor:
        """``self * other``.

        >>> tensor([3.0]).mul(2).tolist()
        [6.0]
        """
        return _ops.mul(self, other)

    def div(self, other: Any, *, rounding_mode: str | None = None) -> Tensor:
        """``self / other``; ``rounding_mode`` 'trunc' or 'floor' rounds the quotient.

        >>> tensor([-7, 7]).div(2, rounding_mode="trunc").tolist()
        [-3, 3]
        """
        return _ops.div(self, other, rounding_mode=rounding_mode)

    def floor_divide(self, other: Any) -> Tensor:
        """``self // other``.

        >>> tensor([-7.0]).floor_divide(2).tolist()
        [-4.0]
        """
        return _ops.floor_divide(self, other)

    def neg(self) -> Tensor:
        """``-self``.

        >>> tensor([1, -2]).neg().tolist()
        [-1, 2]
        """
        return _ops.neg(self)

    def lerp(self, end: Tensor, weight: Any) -> Tensor:
        """``self + weight * (end - self)``.

        >>> tensor([0.0]).lerp(tensor([4.0]), 0.25).tolist()
        [1.0]
        """
        return _ops.lerp(self, end, weight)

    def masked_fill(self, mask: Any, value: Any) -> Tensor:
        """A copy with ``value`` where ``mask`` is True.

        >>> tensor([1.0, 2.0]).masked_fill(tensor([False, True]), 0.0).tolist()
        [1.0, 0.0]
        """
        return _ops.masked_fill(self, mask, value)

    # Logical/bitwise operators for masks (``~mask``, ``a & b``): bool and integer tensors only, not
    # differentiable; the operand dtypes promote as for arithmetic.
    def _bitwise(self, other: Any, name: str, op: Callable[[Any, Any], Any]) -> Tensor:
        from pyrt.ops.elementwise import promoted
        from pyrt.ops.promotion import FLOATING, category

        a, b = (x.data if isinstance(x, Tensor) else x for x in promoted(self, other))
        if category(a.dtype) == FLOATING:
            raise RuntimeError(f"{name} is only supported for integer and bool tensors, got {a.dtype}")
        return Tensor(op(a, b))

    def __and__(self, other: Any) -> Tensor:
        """Elementwise logical (bool) or bitwise (integer) and.

        >>> (tensor([True, True]) & tensor([True, False])).tolist()
        [True, False]
        """
        return self._bitwise(other, "&", lambda a, b: a & b)

    __rand__ = __and__

    def __or__(self, other: Any) -> Tensor:
        """Elementwise logical (bool) or bitwise (integer) or.

        >>> (tensor([True, False]) | False).tolist()
        [True, False]
        """
        return self._bitwise(other, "|", lambda a, b: a | b)

    __ror__ = __or__

    def __xor__(self, other: Any) -> Tensor:
        """Elementwise logical (bool) or bitwise (integer) exclusive or.

        >>> (tensor([True, False]) ^ True).tolist()
        [False, True]
        """
        return self._bitwise(other, "^", lambda a, b: a ^ b)

    __rxor__ = __xor__

    def __invert__(self) -> Tensor:
        """``~mask``: logical not of a bool tensor, bitwise not of an integer one.

        >>> (~tensor([True, False])).tolist()
        [False, True]
        """
        if np.issubdtype(self.dtype, np.floating):
            raise RuntimeError(f"~ (bitwise_not) is only supported for integer and bool tensors, got "
                               f"{self.dtype}")
        return Tensor(~self.data)

    def exp(self) -> Tensor:
        """``e ** self`` (integers give float32).

        >>> tensor([0]).exp().tolist()
        [1.0]
        """
        return _ops.exp(self)

    def exp2(self) -> Tensor:
        """``2 ** self``.

        >>> tensor([0, 1, 2]).exp2().tolist()
        [1.0, 2.0, 4.0]
        """
        return _ops.exp2(self)

    def log2(self) -> Tensor:
        """Base-2 logarithm.

        >>> tensor([1.0, 4.0]).log2().tolist()
        [0.0, 2.0]
        """
        return _ops.log2(self)

    def rsqrt(self) -> Tensor:
        """``1 / sqrt(self)``.

        >>> tensor([4.0]).rsqrt().tolist()
        [0.5]
        """
        return _ops.rsqrt(self)

    def sin(self) -> Tensor:
        """Sine.

        >>> tensor([0.0]).sin().tolist()
        [0.0]
        """
        return _ops.sin(self)

    def cos(self) -> Tensor:
        """Cosine.

        >>> tensor([0.0]).cos().tolist()
        [1.0]
        """
        return _ops.cos(self)

    def sign(self) -> Tensor:
        """-1, 0 or 1 by sign.

        >>> tensor([-3, 0, 2]).sign().tolist()
        [-1, 0, 1]
        """
        return _ops.sign(self)

    def floor(self) -> Tensor:
        """Round down.

        >>> tensor([-0.5, 0.5]).floor().tolist()
        [-1.0, 0.0]
        """
        return _ops.floor(self)

    def ceil(self) -> Tensor:
        """Round up.

        >>> tensor([-0.5, 0.5]).ceil().tolist()
        [-0.0, 1.0]
        """
        return _ops.ceil(self)

    def round(self, *, decimals: int = 0) -> Tensor:
        """Round half to even, to ``decimals`` places.

        >>> tensor([0.5, 1.5]).round().tolist()
        [0.0, 2.0]
        """
        return _ops.round(self, decimals=decimals)

    def log(self) -> Tensor:
        """Natural logarithm.

        >>> tensor([1.0]).log().tolist()
        [0.0]
        """
        return _ops.log(self)

    def sqrt(self) -> Tensor:
        """Square root.

        >>> tensor([9.0]).sqrt().tolist()
        [3.0]
        """
        return _ops.sqrt(self)

    def abs(self) -> Tensor:
        """Absolute value.

        >>> tensor([-2, 3]).abs().tolist()
        [2, 3]
        """
        return _ops.abs(self)

    def pow(self, exponent: Any) -> Tensor:
        """``self ** exponent``.

        >>> tensor([2.0]).pow(3).tolist()
        [8.0]
        """
        return _ops.pow(self, exponent)

    def clamp(self, min: Any = None, max: Any = None) -> Tensor:
        """Limit values to ``[min, max]`` (numbers or tensors).

        >>> tensor([-2.0, 0.5, 2.0]).clamp(min=0.0).tolist()
        [0.0, 0.5, 2.0]
        """
        return _ops.clamp(self, min, max)

    def clip(self, min: Any = None, max: Any = None) -> Tensor:
        """Alias of ``clamp``.

        >>> tensor([-2.0, 2.0]).clip(-1, 1).tolist()
        [-1.0, 1.0]
        """
        return _ops.clamp(self, min, max)

    def relu(self) -> Tensor:
        """``max(self, 0)``.

        >>> tensor([-1.0, 2.0]).relu().tolist()
        [0.0, 2.0]
        """
        return _ops.relu(self)

    def sigmoid(self) -> Tensor:
        """``1 / (1 + exp(-self))``.

        >>> tensor([0.0]).sigmoid().tolist()
        [0.5]
        """
        return _ops.sigmoid(self)

    def tanh(self) -> Tensor:
        """Hyperbolic tangent.

        >>> tensor([0.0]).tanh().tolist()
        [0.0]
        """
        return _ops.tanh(self)

    def softmax(self, dim: int = -1) -> Tensor:
        """Softmax along ``dim``.

        >>> tensor([0.0, 0.0]).softmax(0).tolist()
        [0.5, 0.5]
        """
        return _ops.softmax(self, dim)

    def log_softmax(self, dim: int = -1) -> Tensor:
        """Log of the softmax along ``dim``.

        >>> round(tensor([0.0, 0.0]).log_softmax(0).tolist()[0], 4)
        -0.6931
        """
        return _ops.log_softmax(self, dim)

    def sum(self, dim: Any = None, keepdim: bool = False, *, dtype: Any = None) -> Tensor:
        """Sum over ``dim`` (all dims if None); ``dtype`` casts before summing.

        >>> tensor([[1, 2], [3, 4]]).sum(1).tolist()
        [3, 7]
        """
        return _ops.sum(self, dim, keepdim, dtype=dtype)

    def prod(self, dim: int | None = None, keepdim: bool = False, *, dtype: Any = None) -> Tensor:
        """Product over one ``dim`` (all elements if None).

        >>> tensor([[1.0, 2.0], [3.0, 4.0]]).prod(0).tolist()
        [3.0, 8.0]
        """
        return _ops.prod(self, dim, keepdim, dtype=dtype)

    def cumsum(self, dim: int, *, dtype: Any = None) -> Tensor:
        """Running sum along ``dim``.

        >>> tensor([1.0, 2.0, 3.0]).cumsum(0).tolist()
        [1.0, 3.0, 6.0]
        """
        return _ops.cumsum(self, dim, dtype=dtype)

    def any(self, dim: Any = None, keepdim: bool = False) -> Tensor:
        """Whether any element (over ``dim``) is nonzero.

        >>> tensor([0, 1]).any().item()
        True
        """
        return _ops.any(self, dim, keepdim)

    def all(self, dim: Any = None, keepdim: bool = False) -> Tensor:
        """Whether every element (over ``dim``) is nonzero.

        >>> tensor([0, 1]).all().item()
        False
        """
        return _ops.all(self, dim, keepdim)

    def mean(self, dim: Any = None, keepdim: bool = False) -> Tensor:
        """Mean over ``dim`` (all dims if None); floating point only.

        >>> tensor([[1.0, 2.0], [3.0, 4.0]]).mean(0).tolist()
        [2.0, 3.0]
        """
        return _ops.mean(self, dim, keepdim)

    def max(self, dim: int | None = None, keepdim: bool = False) -> Any:
        """The maximum, or ``(values, indices)`` along ``dim``.

        >>> tensor([[1, 5], [7, 2]]).max(dim=1).values.tolist()
        [5, 7]
        """
        return _ops.max(self, dim, keepdim)

    def min(self, dim: int | None = None, keepdim: bool = False) -> Any:
        """The minimum, or ``(values, indices)`` along ``dim``.

        >>> tensor([3, 1, 2]).min().item()
        1
        """
        return _ops.min(self, dim, keepdim)

    def argmax(self, dim: int | None = None, keepdim: bool = False) -> Tensor:
        """Index of the maximum (of the flattened tensor if ``dim`` is None).

        >>> tensor([3, 1, 5]).argmax().item()
        2
        """
        return _ops.argmax(self, dim, keepdim)

    def argmin(self, dim: int | None = None, keepdim: bool = False) -> Tensor:
        """Index of the minimum (of the flattened tensor if ``dim`` is None).

        >>> tensor([3, 1, 5]).argmin().item()
        1
        """
        return _ops.argmin(self, dim, keepdim)

    def var(self, dim: Any = None, unbiased: bool | None = None, keepdim: bool = False,
            *, correction: int | None = None) -> Tensor:
        """Variance (``correction=1`` by default, as in PyTorch).

        >>> tensor([1.0, 3.0]).var().item()
        2.0
        """
        return _ops.var(self, dim, unbiased, keepdim, correction=correction)

    def std(self, dim: Any = None, unbiased: bool | None = None, keepdim: bool = False,
            *, correction: int | None = None) -> Tensor:
        """Standard deviation (``correction=1`` by default, as in PyTorch).

        >>> tensor([1.0, 3.0]).std(correction=0).item()
        1.0
        """
        return _ops.std(self, dim, unbiased, keepdim, correction=correction)

    def logsumexp(self, dim: Any, keepdim: bool = False) -> Tensor:
        """``log(sum(exp(self)))`` over ``dim``, stable.

        >>> round(tensor([0.0, 0.0]).logsumexp(0).item(), 4)
        0.6931
        """
        return _ops.logsumexp(self, dim, keepdim)

    def matmul(self, other: Tensor) -> Tensor:
        """Matrix product, as ``@``.

        >>> tensor([[1.0, 2.0]]).matmul(tensor([[3.0], [4.0]])).tolist()
        [[11.0]]
        """
        return _ops.matmul(self, other)

    def reshape(self, *shape: Any) -> Tensor:
        """The same elements in a new shape (one dim may be -1).

        >>> tensor([1, 2, 3, 4]).reshape(2, -1).tolist()
        [[1, 2], [3, 4]]
        """
        return _ops.reshape(self, *shape)

    def view(self, *shape: Any) -> Tensor:
        """As ``reshape`` (it may copy, where PyTorch's view never does).

        >>> tensor([1, 2, 3, 4]).view(2, 2).shape
        (2, 2)
        """
        return _ops.reshape(self, *shape)

    def flatten(self, start_dim: int = 0, end_dim: int = -1) -> Tensor:
        """Merge dims ``start_dim..end_dim``.

        >>> tensor([[1, 2], [3, 4]]).flatten().tolist()
        [1, 2, 3, 4]
        """
        return _ops.flatten(self, start_dim, end_dim)

    def permute(self, *dims: Any) -> Tensor:
        """Reorder the dims.

        >>> tensor([[1, 2, 3]]).permute(1, 0).shape
        (3, 1)
        """
        return _ops.permute(self, *dims)

    def transpose(self, dim0: int, dim1: int) -> Tensor:
        """Swap two dims.

        >>> tensor([[1, 2, 3]]).transpose(0, 1).shape
        (3, 1)
        """
        return _ops.transpose(self, dim0, dim1)

    def t(self) -> Tensor:
        """Transpose a tensor of at most 2 dims.

        >>> tensor([[1, 2]]).t().tolist()
        [[1], [2]]
        """
        if self.ndim > 2:
            raise ValueError(f"t() expects a tensor with <= 2 dims, got shape {self.shape}")
        return self.T

    def squeeze(self, dim: int | None = None) -> Tensor:
        """Drop size-1 dims (only ``dim`` if given).

        >>> tensor([[1, 2]]).squeeze().shape
        (2,)
        """
        return _ops.squeeze(self, dim)

    def unsqueeze(self, dim: int) -> Tensor:
        """Insert a size-1 dim at ``dim``.

        >>> tensor([1, 2]).unsqueeze(-1).shape
        (2, 1)
        """
        return _ops.unsqueeze(self, dim)

    def expand(self, *shape: Any) -> Tensor:
        """Broadcast to a larger shape without copying (-1 keeps a dim).

        >>> tensor([[1], [2]]).expand(2, 3).tolist()
        [[1, 1, 1], [2, 2, 2]]
        """
        return _ops.expand(self, *shape)

    def unflatten(self, dim: int, sizes: Any) -> Tensor:
        """Split ``dim`` into ``sizes``.

        >>> tensor([1, 2, 3, 4]).unflatten(0, (2, 2)).tolist()
        [[1, 2], [3, 4]]
        """
        return _ops.unflatten(self, dim, sizes)

    def flip(self, *dims: Any) -> Tensor:
        """Reverse along ``dims``.

        >>> tensor([1, 2, 3]).flip(0).tolist()
        [3, 2, 1]
        """
        flat = dims[0] if len(dims) == 1 and not isinstance(dims[0], int) else dims
        return _ops.flip(self, flat)

    def roll(self, shifts: Any, dims: Any = None) -> Tensor:
        """Shift cyclically along ``dims`` (the flattened tensor if None).

        >>> tensor([1, 2, 3]).roll(-1).tolist()
        [2, 3, 1]
        """
        return _ops.roll(self, shifts, dims)

    def repeat(self, *sizes: Any) -> Tensor:
        """Tile ``sizes[d]`` times along each dim.

        >>> tensor([1, 2]).repeat(2).tolist()
        [1, 2, 1, 2]
        """
        return _ops.repeat(self, *sizes)

    def chunk(self, chunks: int, dim: int = 0) -> tuple[Tensor, ...]:
        """``chunks`` nearly equal pieces along ``dim``.

        >>> [t.tolist() for t in tensor([1, 2, 3]).chunk(2)]
        [[1, 2], [3]]
        """
        return _ops.chunk(self, chunks, dim)

    def split(self, split_size: Any, dim: int = 0) -> tuple[Tensor, ...]:
        """Pieces of ``split_size`` (an int, or a list of sizes) along ``dim``.

        >>> [t.tolist() for t in tensor([1, 2, 3]).split([1, 2])]
        [[1], [2, 3]]
        """
        return _ops.split(self, split_size, dim)

    def gather(self, dim: int, index: Tensor) -> Tensor:
        """Pick along ``dim`` by ``index``.

        >>> tensor([[1, 2], [3, 4]]).gather(1, tensor([[1], [0]])).tolist()
        [[2], [3]]
        """
        return _ops.gather(self, dim, index)

    def diagonal(self, offset: int = 0, dim1: int = 0, dim2: int = 1) -> Tensor:
        """The diagonal of the (``dim1``, ``dim2``) planes.

        >>> tensor([[1, 2], [3, 4]]).diagonal().tolist()
        [1, 4]
        """
        return _ops.diagonal(self, offset, dim1, dim2)

    def tril(self, diagonal: int = 0) -> Tensor:
        """Lower triangle, the rest zero.

        >>> tensor([[1, 2], [3, 4]]).tril().tolist()
        [[1, 0], [3, 4]]
        """
        return _ops.tril(self, diagonal)

    def triu(self, diagonal: int = 0) -> Tensor:
        """Upper triangle, the rest zero.

        >>> tensor([[1, 2], [3, 4]]).triu(1).tolist()
        [[0, 2], [0, 0]]
        """
        return _ops.triu(self, diagonal)

    # --- in-place updates (outside autograd: optimizers, initialisers) ---------------
    def _check_inplace(self, name: str) -> None:
        from pyrt.autograd import is_grad_enabled

        self._version += 1
        if self.requires_grad and is_grad_enabled():
            raise RuntimeError(
                f"{name}: a tensor that requires grad cannot be modified in place while "
                "grad mode is on; wrap the update in `with pyrt.no_grad():`"
            )

    def zero_(self) -> Tensor:
        """Set every element to 0, in place.

        >>> tensor([1.0, 2.0]).zero_().tolist()
        [0.0, 0.0]
        """
        self._check_inplace("zero_")
        with _on_device_of(self):
            self.data[...] = 0
        return self

    def fill_(self, value: float) -> Tensor:
        """Set every element to ``value``, in place.

        >>> tensor([1.0, 2.0]).fill_(3.0).tolist()
        [3.0, 3.0]
        """
        self._check_inplace("fill_")
        with _on_device_of(self):
            self.data[...] = value
        return self

    def copy_(self, src: Tensor | Any) -> Tensor:
        """Copy ``src``'s values into this tensor, in place.

        >>> tensor([1.0, 2.0]).copy_(tensor([5.0, 6.0])).tolist()
        [5.0, 6.0]
        """
        from pyrt.backend import move_array
        from pyrt.cuda import parse_device

        self._check_inplace("copy_")
        value = src.data if isinstance(src, Tensor) else src
        if hasattr(value, "shape"):  # from another device too, as in PyTorch
            value = move_array(value, *parse_device(self.device))
        with _on_device_of(self):
            self.data[...] = value
        return self

    def add_(self, other: Tensor | Any, alpha: float = 1.0) -> Tensor:
        """``self += alpha * other``, in place.

        >>> tensor([1.0]).add_(tensor([2.0]), alpha=0.5).tolist()
        [2.0]
        """
        self._check_inplace("add_")
        other = other.data if isinstance(other, Tensor) else other
        with _on_device_of(self):
            self.data += other if alpha == 1.0 else alpha * other
        return self

    def mul_(self, other: Tensor | Any) -> Tensor:
        """``self *= other``, in place.

        >>> tensor([2.0]).mul_(3.0).tolist()
        [6.0]
        """
        self._check_inplace("mul_")
        with _on_device_of(self):
            self.data *= other.data if isinstance(other, Tensor) else other
        return self


def tensor(data: Any, dtype: Any = None, requires_grad: bool = False, *, device: Any = None) -> Tensor:
    """Create a tensor from a list, scalar or array (copied, like ``torch.tensor``).

    Python floats become float32 and Python ints int64; numpy arrays keep their dtype.
    ``device`` (``"cpu"``, ``"cuda[:N]"``, an int, a ``torch.device``) places it; by default it
    stays where ``data`` is (a cupy array on its GPU, anything else on the CPU).

    >>> tensor([[1.0, 2.0]]).dtype
    dtype('float32')
    >>> tensor(np.arange(3), device="cpu").dtype
    dtype('int64')
    """
    from pyrt.backend import move_array

    if isinstance(data, Tensor):
        data = data.data
    xp = get_array_module(data)
    if isinstance(data, xp.ndarray):
        with _on_device_of(data):  # the copy stays on data's GPU
            array = xp.array(data, dtype=dtype, copy=True)
    else:
        array = np.array(data, dtype=dtype)
        if dtype is None and array.dtype == np.float64:
            array = array.astype(_DEFAULT_FLOAT)
    if device is not None:
        from pyrt.cuda import parse_device

        array = move_array(array, *parse_device(device))
    return Tensor(array, requires_grad=requires_grad)


# Imported last: the ops modules import Tensor from this (by now complete) module.
from pyrt import ops as _ops  # noqa: E402
from pyrt.autograd import on_device_of as _on_device_of  # noqa: E402
