"""The autograd engine: grad mode, ``Function``, and the backward pass.

A ``Function`` computes on raw arrays. ``forward`` gets arrays (and plain
Python arguments) and returns one array; ``backward`` gets the gradient of the
loss with respect to that output and returns one gradient per positional
input (``None`` where there is none). ``Function.apply`` is the bridge to
tensors: it unwraps the inputs, runs ``forward``, and, when grad mode is on and
some input requires a gradient, records the function as the output's
``grad_fn`` so ``backward`` can find it later.

Broadcasting is handled once, here: a gradient whose shape differs from its
input's shape is summed back down to it (``sum_to_shape``), so no op repeats
that bookkeeping.

The backward pass is iterative (a topological sort with an explicit stack), so
a graph of any depth works without touching Python's recursion limit.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from pyrt.backend import get_array_module

if TYPE_CHECKING:
    from pyrt.tensor import Tensor

__all__ = [
    "Function",
    "backward",
    "enable_grad",
    "gradcheck",
    "is_grad_enabled",
    "no_grad",
    "set_grad_enabled",
    "sum_to_shape",
]


# --- grad mode ---------------------------------------------------------------

class _GradMode(threading.local):
    # Thread-local like PyTorch's: a communication thread never changes what the
    # training thread records.
    enabled = True


_grad_mode = _GradMode()


def is_grad_enabled() -> bool:
    """True when operations are being recorded for backward.

    >>> is_grad_enabled()
    True
    """
    return _grad_mode.enabled


class set_grad_enabled(contextlib.ContextDecorator):
    """Context manager (and decorator) that turns recording on or off.

    >>> with set_grad_enabled(False):
    ...     is_grad_enabled()
    False
    """

    def __init__(self, mode: bool) -> None:
        self.mode = bool(mode)
        self.previous: list[bool] = []

    def __enter__(self) -> None:
        self.previous.append(_grad_mode.enabled)
        _grad_mode.enabled = self.mode

    def __exit__(self, *exc: object) -> None:
        _grad_mode.enabled = self.previous.pop()


class no_grad(set_grad_enabled):
    """Disable graph recording, for evaluation and parameter updates.

    >>> import pyrt
    >>> x = pyrt.tensor([1.0], requires_grad=True)
    >>> with no_grad():
    ...     y = x * 2
    >>> y.requires_grad
    False
    """

    def __init__(self) -> None:
        super().__init__(False)


class enable_grad(set_grad_enabled):
    """Re-enable graph recording inside a ``no_grad`` block.

    >>> with no_grad(), enable_grad():
    ...     is_grad_enabled()
    True
    """

    def __init__(self) -> None:
        super().__init__(True)


# --- Function ------------------------------------------------------------------

class Function:
    """Base class of every differentiable operation.

    Subclasses implement ``forward(self, *args)`` on arrays and
    ``backward(self, grad)`` returning one gradient per positional argument.
    Arrays needed by ``backward`` go through ``save_for_backward`` so the engine
    can free them once the graph has been used.

    >>> class Square(Function):
    ...     def forward(self, x):
    ...         self.save_for_backward(x)
    ...         return x * x
    ...     def backward(self, grad):
    ...         (x,) = self.saved_tensors
    ...         return (2 * x * grad,)
    >>> import pyrt
    >>> x = pyrt.tensor([3.0], requires_grad=True)
    >>> Square.apply(x).backward(pyrt.tensor([1.0]).data)
    >>> x.grad.item()
    6.0
    """

    # Set by ``apply`` when the call is recorded.
    inputs: tuple[Tensor | None, ...] = ()
    _input_versions: tuple[int, ...] = ()
    _saved: tuple[Any, ...] | None = ()
    _released = False

    def forward(self, *args: Any) -> Any:
        raise NotImplementedError(f"{type(self).__name__} must implement forward")

    def backward(self, grad: Any) -> Sequence[Any]:
        raise NotImplementedError(f"{type(self).__name__} does not support backward")

    def save_for_backward(self, *arrays: Any) -> None:
        self._saved = arrays

    @property
    def saved_tensors(self) -> tuple[Any, ...]:
        if self._saved is None:
            raise RuntimeError(_FREED_GRAPH_MESSAGE)
        return self._saved

    @property
    def needs_input_grad(self) -> tuple[bool, ...]:
        """Which positional inputs want a gradient, so backward can skip the others' work."""
        return tuple(t is not None for t in self.inputs)

    def release(self) -> None:
        """Drop saved arrays; a later backward through this node raises."""
        self._saved = None
        self._released = True

    @classmethod
    def apply(cls, *args: Any, **kwargs: Any) -> Tensor:
        from pyrt.tensor import Tensor

        fn = cls()
        arrays = [a.data if isinstance(a, Tensor) else a for a in args]
        out = fn.forward(*arrays, **kwargs)
        if _grad_mode.enabled and any(isinstance(a, Tensor) and a.requires_grad for a in args):
            fn.inputs = tuple(
                a if isinstance(a, Tensor) and a.requires_grad else None for a in args
            )
            fn._input_versions = tuple(t._version if t is not None else 0 for t in fn.inputs)
            return Tensor._from_function(out, fn)
        fn.release()
        return Tensor(out)

    def __repr__(self) -> str:
        return f"<{type(self).__name__}Backward>"


_FREED_GRAPH_MESSAGE = (
    "Trying to backward through the graph a second time (or to use saved arrays after "
    "they were freed). Pass retain_graph=True to the first backward() if you need to "
    "backward through the graph again."
)


# --- the backward pass -----------------------------------------------------------

def sum_to_shape(grad: Any, shape: tuple[int, ...]) -> Any:
    """Sum ``grad`` over the axes that broadcasting expanded, giving ``shape``.

    >>> sum_to_shape(np.ones((4, 2, 3)), (2, 1)).tolist()
    [[12.0], [12.0]]
    """
    if grad.shape == shape:
        return grad
    lead = grad.ndim - len(shape)
    axes = tuple(range(lead)) + tuple(
        i + lead for i, n in enumerate(shape) if n == 1 and grad.shape[i + lead] != 1
    )
    summed = grad.sum(axis=axes, keepdims=True) if axes else grad
    return summed.reshape(shape)


def _topological_order(root: Function) -> list[Function]:
    """Functions reachable from ``root``, each before every function it feeds from."""
    order: list[Function] = []
    visited: set[int] = {id(root)}
    # Each stack entry is (function, iterator over its parents); a function is
    # appended once all its parents are done (post-order), then reversed.
    stack: list[tuple[Function, Iterator[Tensor | None]]] = [(root, iter(root.inputs))]
    while stack:
        fn, parents = stack[-1]
        for t in parents:
            if t is not None and t.grad_fn is not None and id(t.grad_fn) not in visited:
                visited.add(id(t.grad_fn))
                stack.append((t.grad_fn, iter(t.grad_fn.inputs)))
                break
        else:
            stack.pop()
            order.append(fn)
    order.reverse()
    return order


def _count_leaf_edges(order: list[Function]) -> dict[int, int]:
    """How many gradients each leaf will receive in this pass (for its hooks)."""
    pending: dict[int, int] = {}
    for fn in order:
        for t in fn.inputs:
            if t is not None and t.grad_fn is None:
                pending[id(t)] = pending.get(id(t), 0) + 1
    return pending


def backward(root: Tensor, grad: Any | None = None, retain_graph: bool = False) -> None:
    """Accumulate d(root)/d(leaf) into ``leaf.grad`` for every leaf that requires grad.

    The engine never writes into a gradient array in place while the pass
    runs: a backward may hand the same array to several inputs (``a + b``
    passes its gradient to both), so accumulation is always out of place, and a
    leaf's first gradient is copied when it is a view or already owned by
    another leaf.

    >>> import pyrt
    >>> x = pyrt.tensor([2.0], requires_grad=True)
    >>> backward((x * x).sum())
    >>> x.grad.item()
    4.0
    """
    from pyrt.tensor import Tensor

    if not root.requires_grad:
        raise RuntimeError(
            "element 0 of tensors does not require grad and does not have a grad_fn"
        )
    xp = get_array_module(root.data)
    if grad is None:
        if root.data.size != 1:
            raise RuntimeError(
                "grad can be implicitly created only for scalar outputs; "
                f"got an output of shape {tuple(root.shape)}. Pass a gradient to backward()"
            )
        grad = xp.ones_like(root.data)
    else:
        grad = grad.data if isinstance(grad, Tensor) else grad
        if tuple(grad.shape) != tuple(root.shape):
            raise RuntimeError(
                f"backward: grad has shape {tuple(grad.shape)} but the output has shape "
                f"{tuple(root.shape)}"
            )
        grad = xp.array(grad, dtype=root.dtype, copy=True)

    if root.grad_fn is None:
        _accumulate_leaf(root, grad, set())
        _run_leaf_hooks(root)
        return

    order = _topological_order(root.grad_fn)
    for fn in order:
        if fn._released:
            raise RuntimeError(_FREED_GRAPH_MESSAGE)
        # Only a function that saved arrays for backward can compute with stale values.
        for t, version in zip(fn.inputs, fn._input_versions, strict=True) if fn._saved else ():
            if t is not None and t._version != version:
                raise RuntimeError(
                    f"one of the tensors needed for gradient computation, of shape {t.shape}, was "
                    f"modified in place after {fn!r} used it (version {version} -> {t._version}); "
                    "an optimizer step between two backward passes of one graph does this. "
                    "Run backward before changing it, or recompute the forward pass"
                )
    pending = _count_leaf_edges(order)
    grads: dict[int, Any] = {id(root.grad_fn): grad}
    handed_to_leaves: set[int] = set()
    for fn in order:
        grad_out = grads.pop(id(fn), None)
        if grad_out is None:  # no path from root carried a gradient here
            input_grads: Sequence[Any] = (None,) * len(fn.inputs)
        else:
            input_grads = fn.backward(grad_out)
            if len(input_grads) != len(fn.inputs):
                raise RuntimeError(
                    f"{type(fn).__name__}.backward returned {len(input_grads)} gradients "
                    f"for {len(fn.inputs)} inputs"
                )
        if not retain_graph:
            fn.release()
        for t, g in zip(fn.inputs, input_grads, strict=True):
            if t is None:
                continue
            if g is not None:
                g = sum_to_shape(g, tuple(t.shape))
                if t.grad_fn is None:
                    _accumulate_leaf(t, g, handed_to_leaves)
                else:
                    key = id(t.grad_fn)
                    grads[key] = g if key not in grads else grads[key] + g
            if t.grad_fn is None:
                pending[id(t)] -= 1
                if pending[id(t)] == 0:
                    _run_leaf_hooks(t)


def _accumulate_leaf(t: Tensor, g: Any, handed_to_leaves: set[int]) -> None:
    from pyrt.tensor import Tensor

    if g.dtype != t.dtype:
        g = g.astype(t.dtype)
    if t.grad is None:
        if not g.flags.owndata or id(g) in handed_to_leaves:
            g = g.copy()
        handed_to_leaves.add(id(g))
        t.grad = Tensor(g)
    else:
        t.grad.data = t.grad.data + g


def _run_leaf_hooks(t: Tensor) -> None:
    for hook in t._post_accumulate_grad_hooks:
        hook(t)


# --- gradient checking ---------------------------------------------------------

def gradcheck(
    fn: Callable[..., Tensor],
    inputs: Sequence[Tensor],
    eps: float = 1e-6,
    atol: float = 1e-5,
    rtol: float = 1e-3,
    raise_exception: bool = True,
) -> bool:
    """Compare the analytic gradients of ``fn`` with central finite differences.

    ``inputs`` should be float64 tensors; those with ``requires_grad=True`` are
    checked. ``fn`` may return a tensor of any shape: each output is checked
    through a random projection ``sum(fn(x) * w)``, which tests every
    Jacobian row at the cost of one backward.

    >>> import pyrt
    >>> x = pyrt.tensor(np.array([0.5, -1.5]), requires_grad=True)
    >>> gradcheck(lambda t: (t * t).exp(), [x])
    True
    """
    from pyrt.tensor import Tensor

    checked = [t for t in inputs if t.requires_grad]
    for t in checked:
        if t.dtype != np.float64:
            raise TypeError(f"gradcheck: inputs must be float64 for accurate differences, got {t.dtype}")
    rng = np.random.default_rng(0)
    with no_grad():
        out = fn(*inputs)
    weight = rng.standard_normal(out.shape)

    def objective() -> float:
        with no_grad():
            return float((fn(*inputs).data * weight).sum())

    for t in checked:
        t.grad = None
    out = fn(*inputs)
    backward((out * Tensor(weight)).sum())

    for index, t in enumerate(checked):
        t.data = np.ascontiguousarray(t.data)
        numeric = np.zeros_like(t.data)
        flat = t.data.reshape(-1)  # a view: writing it perturbs the input in place
        for i in range(flat.size):
            original = flat[i]
            flat[i] = original + eps
            plus = objective()
            flat[i] = original - eps
            minus = objective()
            flat[i] = original
            numeric.reshape(-1)[i] = (plus - minus) / (2 * eps)
        analytic = np.zeros_like(t.data) if t.grad is None else t.grad.data
        if not np.allclose(analytic, numeric, atol=atol, rtol=rtol):
            if not raise_exception:
                return False
            worst = np.unravel_index(np.argmax(np.abs(analytic - numeric)), t.shape)
            raise AssertionError(
                f"gradcheck: gradient of input {index} (shape {tuple(t.shape)}) differs from "
                f"finite differences; worst at {tuple(int(i) for i in worst)}: analytic "
                f"{analytic[worst]:.6g} vs numeric {numeric[worst]:.6g}\n"
                f"analytic:\n{analytic}\nnumeric:\n{numeric}"
            )
    return True


