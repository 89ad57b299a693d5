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
import functools
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from pyrt.backend import get_array_module, is_cuda_array
from pyrt.profiler import recorder as _profiling

if TYPE_CHECKING:
    from pyrt.tensor import Tensor

__all__ = [
    "Function",
    "WeightGradients",
    "backward",
    "backward_input",
    "common_device",
    "enable_grad",
    "gradcheck",
    "is_grad_enabled",
    "no_grad",
    "on_device_of",
    "runs_on_input_device",
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

_tensor_type: Any = None  # pyrt.tensor.Tensor once _load_tensor_type ran


def _load_tensor_type() -> Any:
    """``pyrt.tensor.Tensor``, imported on first use (pyrt.tensor imports this module) and kept in a
    global: a ``from pyrt.tensor import Tensor`` in a function costs ~1.6 us per call, and
    ``Function.apply`` and the device guards run on every op."""
    global _tensor_type
    from pyrt.tensor import Tensor

    _tensor_type = Tensor
    return Tensor


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
    _grad_mask: tuple[bool, ...] | None = None  # set by the engine around one backward call
    _device: int | None = None  # the CUDA device its arrays are on (None: the CPU)

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
        """Which positional inputs want a gradient, so backward can skip the others' work.

        During a split backward the engine narrows this: the input pass asks
        for the gradients of non-leaves and of ``inputs``, the weight pass for
        the other leaves' (the parameters).
        """
        if self._grad_mask is not None:
            return self._grad_mask
        return tuple(t is not None for t in self.inputs)

    def release(self) -> None:
        """Drop saved arrays; a later backward through this node raises."""
        self._saved = None
        self._released = True

    @classmethod
    def apply(cls, *args: Any, **kwargs: Any) -> Tensor:
        Tensor = _tensor_type or _load_tensor_type()
        fn = cls()
        arrays = []
        on_cpu = True
        for a in args:
            if isinstance(a, Tensor):
                a = a.data
                on_cpu = on_cpu and type(a) is np.ndarray
            arrays.append(a)
        # Tensors only, as PyTorch checks: a numpy index array may index a GPU tensor. With numpy
        # arrays in every tensor (any op of a CPU model) common_device would say None: skipped.
        device = None if on_cpu else common_device(*[a.data for a in args if isinstance(a, Tensor)])
        if device is None:  # the CPU: no guard to enter (this path runs once per op)
            out = fn._run_forward(arrays, kwargs)
        else:
            with _on_device(device):
                out = fn._run_forward(arrays, kwargs)
        if _grad_mode.enabled and any(isinstance(a, Tensor) and a.requires_grad for a in args):
            fn.inputs = tuple(
                a if isinstance(a, Tensor) and a.requires_grad else None for a in args
            )
            fn._input_versions = tuple(t._version if t is not None else 0 for t in fn.inputs)
            fn._device = device
            return Tensor._from_function(out, fn)
        fn.release()
        return Tensor(out)

    def _run_forward(self, arrays: list[Any], kwargs: dict[str, Any]) -> Any:
        if _profiling.active is None:
            return self.forward(*arrays, **kwargs)
        return _profiling.active.call(type(self).__name__, "forward", self.forward, *arrays, **kwargs)

    def __repr__(self) -> str:
        return f"<{type(self).__name__}Backward>"


def common_device(*arrays: Any) -> int | None:
    """The CUDA device index all arrays among ``arrays`` are on, or None when they are on the
    CPU (numbers and other arguments are ignored); mixing devices is PyTorch's RuntimeError.

    Every op goes through ``Function.apply``, so this one check covers them all.

    >>> common_device(np.zeros(2), 3.0, np.ones(1)) is None
    True
    """
    first: Any = None
    for a in arrays:
        if type(a) is np.ndarray:
            where: Any = "cpu"
        elif is_cuda_array(a):
            where = a.device.id
        elif isinstance(a, np.ndarray):
            where = "cpu"
        else:  # numbers and numpy scalars go with any device
            continue
        if first is None:
            first = where
        elif where != first:
            names = [w if w == "cpu" else f"cuda:{w}" for w in (first, where)]
            raise RuntimeError("Expected all tensors to be on the same device, but found at least two "
                               f"devices, {names[0]} and {names[1]}!")
    return None if first in (None, "cpu") else first


def _on_device(device: int | None) -> Any:
    """A context making CUDA device ``device`` current (as PyTorch's device guard does), so an
    op on ``cuda:1`` tensors allocates and launches there; nothing for the CPU."""
    if device is None:
        return contextlib.nullcontext()
    import cupy

    return cupy.cuda.Device(device)


def _first_cuda_device(values: Any) -> int | None:
    """The device of the first GPU tensor or array among ``values`` (and inside lists/tuples)."""
    Tensor = _tensor_type or _load_tensor_type()
    for v in values:
        if isinstance(v, Tensor):
            v = v.data
        if type(v) is np.ndarray or v is None:  # the CPU's arguments, settled first: runs per op call
            continue
        if isinstance(v, list | tuple):
            found = _first_cuda_device(v)
            if found is not None:
                return found
        elif is_cuda_array(v):
            return int(v.device.id)
    return None


def on_device_of(*values: Any) -> contextlib.AbstractContextManager[Any]:
    """A context with the GPU of the first GPU tensor (or array) among ``values`` current, as
    PyTorch's device guard: code outside ``Function.apply`` that computes on a tensor's
    arrays (argument checks, in-place updates) runs on that tensor's device. Nothing on the CPU.

    >>> import pyrt
    >>> with on_device_of(pyrt.ones(2)):
    ...     pass
    """
    return _on_device(_first_cuda_device(values))


def runs_on_input_device(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Decorate an op so it runs with its first GPU input's device current (see ``on_device_of``).

    >>> import pyrt
    >>> runs_on_input_device(lambda x: x + 1)(pyrt.ones(1)).tolist()
    [2.0]
    """

    @functools.wraps(fn)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        device = _first_cuda_device(args)
        if device is None and kwargs:
            device = _first_cuda_device(kwargs.values())
        if device is None:
            return fn(*args, **kwargs)
        with _on_device(device):
            return fn(*args, **kwargs)

    return guarded


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


def _topological_order(roots: Sequence[Function]) -> list[Function]:
    """Functions reachable from ``roots``, each before every function it feeds from."""
    order: list[Function] = []
    visited: set[int] = set()
    # Each stack entry is (function, iterator over its parents); a function is
    # appended once all its parents are done (post-order). Reversing a post-order
    # of a DAG, even one walked from several roots, is a topological order.
    for root in roots:
        if id(root) in visited:
            continue
        visited.add(id(root))
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


def _as_tensor_list(tensors: Tensor | Sequence[Tensor], what: str) -> list[Tensor]:
    from pyrt.tensor import Tensor

    listed = [tensors] if isinstance(tensors, Tensor) else list(tensors)
    for i, t in enumerate(listed):
        if not isinstance(t, Tensor):
            raise TypeError(f"{what}: element {i} is a {type(t).__name__}, not a Tensor")
    return listed


def _seed_gradients(roots: list[Tensor], grad_tensors: Any) -> list[Any]:
    """The gradient each root starts from: ones for a scalar, else the one given (copied)."""
    from pyrt.tensor import Tensor

    if grad_tensors is None or isinstance(grad_tensors, Tensor) or hasattr(grad_tensors, "shape"):
        grad_tensors = [grad_tensors] * len(roots) if grad_tensors is None else [grad_tensors]
    grad_tensors = list(grad_tensors)
    if len(grad_tensors) != len(roots):
        raise RuntimeError(f"backward: got {len(grad_tensors)} gradients for {len(roots)} tensors")
    seeds = []
    for i, (root, grad) in enumerate(zip(roots, grad_tensors, strict=True)):
        if not root.requires_grad:
            raise RuntimeError(
                f"element {i} of tensors does not require grad and does not have a grad_fn"
            )
        xp = get_array_module(root.data)
        if grad is None:
            if root.data.size != 1:
                raise RuntimeError(
                    "grad can be implicitly created only for scalar outputs; "
                    f"got an output of shape {tuple(root.shape)}. Pass a gradient to backward()"
                )
            with _on_device(common_device(root.data)):
                seeds.append(xp.ones_like(root.data))
            continue
        grad = grad.data if isinstance(grad, Tensor) else grad
        if tuple(grad.shape) != tuple(root.shape):
            raise RuntimeError(
                f"backward: grad has shape {tuple(grad.shape)} but the output has shape "
                f"{tuple(root.shape)}"
            )
        with _on_device(common_device(root.data)):
            seeds.append(xp.array(grad, dtype=root.dtype, copy=True))
    return seeds


def _check_graph_usable(order: list[Function]) -> None:
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


class _Leaves:
    """The leaves one backward pass writes: gradient accumulation and post-accumulate hooks.

    A leaf's hooks run once the last gradient this pass will give it has been
    accumulated; ``pending`` counts the edges (and root seeds) still to deliver.
    """

    def __init__(self, wanted: set[int] | None, handed: set[int]) -> None:
        self.wanted = wanted
        self.pending: dict[int, int] = {}
        # Gradient arrays some leaf already owns, shared by a split backward's two
        # passes: two leaves must never end up holding one array.
        self.handed = handed

    def receives(self, t: Tensor) -> bool:
        return self.wanted is None or id(t) in self.wanted

    def expect(self, t: Tensor) -> None:
        self.pending[id(t)] = self.pending.get(id(t), 0) + 1

    def deliver(self, t: Tensor, g: Any | None) -> None:
        """Accumulate ``g`` (None: this edge carried nothing) and fire hooks when ``t`` is done."""
        if g is not None:
            _accumulate_leaf(t, sum_to_shape(g, tuple(t.shape)), self.handed)
        self.pending[id(t)] -= 1
        if self.pending[id(t)] == 0:
            _run_leaf_hooks(t)


class WeightGradients:
    """The deferred half of a split backward: the gradients of the leaves ``backward_input`` skipped.

    ``run()`` computes them (each recorded function's backward restricted to
    those leaves, from the output gradient kept since the input pass),
    accumulates them into ``.grad``, fires the leaves' hooks and frees the
    graph. A function whose backward computed them in the input pass anyway
    (an LSTM's backpropagation through time yields the weight gradients with
    the input's) hands them over instead, and is not run twice.
    """

    def __init__(self, leaves: _Leaves, retain_graph: bool) -> None:
        self._leaves = leaves
        self._retain_graph = retain_graph
        self._seeds: list[tuple[Tensor, Any]] = []  # leaf roots outside ``inputs``
        # (function, its output gradient or None when nothing is left to compute,
        #  the deferred inputs' gradients computed already, which inputs are deferred)
        self._work: list[tuple[Function, Any, list[Any], tuple[bool, ...]]] = []
        self._done = False

    def __len__(self) -> int:
        return len(self._work) + len(self._seeds)

    def _defer(self, fn: Function, grad_out: Any, computed: Sequence[Any],
               deferred: tuple[bool, ...]) -> None:
        kept = [g if d else None for g, d in zip(computed, deferred, strict=True)]
        missing = grad_out is not None and any(d and g is None for d, g in zip(deferred, kept, strict=True))
        self._work.append((fn, grad_out if missing else None, kept, deferred))
        if not missing and not self._retain_graph:
            fn.release()

    def run(self) -> None:
        """Compute and accumulate the deferred gradients (once)."""
        if self._done:
            raise RuntimeError("WeightGradients.run(): the weight gradients were already computed")
        self._done = True
        _check_graph_usable([fn for fn, grad_out, _, _ in self._work if grad_out is not None])
        for leaf, seed in self._seeds:
            self._leaves.deliver(leaf, seed)
        for fn, grad_out, kept, deferred in self._work:
            with _on_device(fn._device):
                computed = kept if grad_out is None else _call_backward(fn, grad_out, deferred)
                for t, d, g_kept, g in zip(fn.inputs, deferred, kept, computed, strict=True):
                    if d:
                        self._leaves.deliver(t, g_kept if g_kept is not None else g)
            if not self._retain_graph:
                fn.release()
        self._work.clear()
        self._seeds.clear()


def _call_backward(fn: Function, grad_out: Any, mask: tuple[bool, ...]) -> Sequence[Any]:
    """``fn.backward`` told (``needs_input_grad``) to compute only the inputs in ``mask``.

    Returns what backward returned: a function may compute more than it was
    asked for, and the caller decides what to use.
    """
    fn._grad_mask = mask
    try:  # (callers run this with fn's device current)
        grads = (fn.backward(grad_out) if _profiling.active is None else
                 _profiling.active.call(f"{type(fn).__name__}Backward", "backward", fn.backward, grad_out))
    finally:
        fn._grad_mask = None
    if len(grads) != len(fn.inputs):
        raise RuntimeError(
            f"{type(fn).__name__}.backward returned {len(grads)} gradients for {len(fn.inputs)} inputs"
        )
    return grads


def _wanted_leaves(inputs: Sequence[Tensor] | None) -> set[int] | None:
    if inputs is None:
        return None
    listed = _as_tensor_list(inputs, "backward: inputs")
    for i, t in enumerate(listed):
        if t.grad_fn is not None or not t.requires_grad:
            raise ValueError(
                f"backward: inputs[{i}] (shape {t.shape}) must be a leaf that requires grad; "
                "pyrt accumulates gradients into leaves only")
    return {id(t) for t in listed}


def _run_backward(tensors: Tensor | Sequence[Tensor], grad_tensors: Any, retain_graph: bool,
                  inputs: Sequence[Tensor] | None, defer_weights: bool) -> WeightGradients:
    """The one backward pass behind ``backward`` and ``backward_input``.

    With ``defer_weights`` the gradients of leaves outside ``inputs`` are not
    computed now: each function that has such a leaf input keeps its saved
    arrays and its output gradient for ``WeightGradients.run()``.
    """
    roots = _as_tensor_list(tensors, "backward")
    if not roots:
        raise RuntimeError("backward: no tensors to differentiate")
    seeds = _seed_gradients(roots, grad_tensors)
    order = _topological_order([r.grad_fn for r in roots if r.grad_fn is not None])
    _check_graph_usable(order)
    handed: set[int] = set()
    now = _Leaves(_wanted_leaves(inputs), handed)
    later = _Leaves(None, handed) if defer_weights else None
    deferred = WeightGradients(later or now, retain_graph)

    def owner(t: Tensor) -> _Leaves | None:
        """Which pass gives leaf ``t`` its gradient (None: nobody asked for it)."""
        return now if now.receives(t) else later

    leaf_roots = [r for r in roots if r.grad_fn is None]
    for t in leaf_roots + [t for fn in order for t in fn.inputs if t is not None and t.grad_fn is None]:
        if (leaves := owner(t)) is not None:
            leaves.expect(t)

    grads: dict[int, Any] = {}
    for root, seed in zip(roots, seeds, strict=True):
        with _on_device(common_device(root.data)):
            if root.grad_fn is not None:
                key = id(root.grad_fn)
                grads[key] = seed if key not in grads else grads[key] + seed
            elif owner(root) is now:
                now.deliver(root, seed)
            elif owner(root) is not None:
                deferred._seeds.append((root, seed))

    for fn in order:
        # The gradients of fn's inputs are on fn's device: sum them there (a GPU graph may
        # span devices through .to()).
        if fn._device is None:
            _backward_step(fn, grads, now, later, owner, deferred, retain_graph)
        else:
            with _on_device(fn._device):
                _backward_step(fn, grads, now, later, owner, deferred, retain_graph)
    return deferred


def _backward_step(fn: Function, grads: dict[int, Any], now: _Leaves, later: _Leaves | None,
                   owner: Callable[[Tensor], _Leaves | None], deferred: WeightGradients,
                   retain_graph: bool) -> None:
    """One function of a backward pass: its backward, then its inputs' gradients handed on."""
    grad_out = grads.pop(id(fn), None)
    leaf = [t is not None and t.grad_fn is None for t in fn.inputs]
    later_leaf = tuple(is_leaf and later is not None and owner(t) is later
                       for t, is_leaf in zip(fn.inputs, leaf, strict=True))
    now_mask = tuple((t is not None and not is_leaf) or (is_leaf and owner(t) is now)
                     for t, is_leaf in zip(fn.inputs, leaf, strict=True))
    computed = (None,) * len(fn.inputs) if grad_out is None else _call_backward(fn, grad_out, now_mask)
    if any(later_leaf):
        deferred._defer(fn, grad_out, computed, later_leaf)
    elif not retain_graph:
        fn.release()
    for t, g, wanted, is_leaf in zip(fn.inputs, computed, now_mask, leaf, strict=True):
        if not wanted:
            continue
        if is_leaf:
            now.deliver(t, g)
        elif g is not None:
            g = sum_to_shape(g, tuple(t.shape))
            key = id(t.grad_fn)
            grads[key] = g if key not in grads else grads[key] + g


def backward(tensors: Tensor | Sequence[Tensor], grad_tensors: Any = None,
             retain_graph: bool = False, inputs: Sequence[Tensor] | None = None) -> None:
    """Accumulate the gradient of ``tensors`` into ``leaf.grad`` for every leaf that requires grad.

    PyTorch's ``torch.autograd.backward``: ``tensors`` is one tensor or several
    (their gradients add up, as a middle pipeline stage needs when it runs
    backward from its output with the gradient the next stage sent it);
    ``grad_tensors`` gives each one's output gradient (omitted for scalars);
    ``inputs``, when given, limits accumulation to those leaves.

    A backward may hand one array to several inputs (``a + b`` passes its
    gradient to both), so a leaf's first gradient is copied when it is a view
    or already owned by another leaf, and a later gradient is added in place
    only into an array that nothing but the leaf references (see
    ``_accumulate_leaf``).

    >>> import pyrt
    >>> x = pyrt.tensor([2.0], requires_grad=True)
    >>> backward([(x * x).sum(), x * 3], [None, pyrt.tensor([1.0])])
    >>> x.grad.item()
    7.0
    """
    with _profiling.range_if_active("backward", "autograd"):
        _run_backward(tensors, grad_tensors, retain_graph, inputs, defer_weights=False)


def backward_input(tensors: Tensor | Sequence[Tensor], grad_tensors: Any = None,
                   inputs: Sequence[Tensor] = (), retain_graph: bool = False) -> WeightGradients:
    """The input half of a split backward (zero-bubble's B): gradients for ``inputs`` only.

    Gradients flow through the whole graph and are accumulated into the
    ``.grad`` of ``inputs``; every other leaf (the parameters) is skipped, and
    the returned ``WeightGradients`` computes those later (zero-bubble's W),
    so the weight-gradient GEMMs can fill a pipeline bubble.

    >>> import pyrt
    >>> x = pyrt.tensor([[1.0, 2.0]], requires_grad=True)
    >>> w = pyrt.tensor([[3.0, 4.0]], requires_grad=True)
    >>> weights = backward_input(pyrt.nn.functional.linear(x, w).sum(), inputs=[x])
    >>> x.grad.tolist(), w.grad
    ([[3.0, 4.0]], None)
    >>> weights.run()
    >>> w.grad.tolist()
    [[1.0, 2.0]]
    """
    with _profiling.range_if_active("backward_input", "autograd"):
        return _run_backward(tensors, grad_tensors, retain_graph, inputs, defer_weights=True)


def _accumulate_leaf(t: Tensor, g: Any, handed_to_leaves: set[int]) -> None:
    from pyrt.tensor import Tensor

    if g.dtype != t.dtype:
        g = g.astype(t.dtype)
    if t.grad is None:
        if not g.flags.owndata or id(g) in handed_to_leaves:
            g = g.copy()
        handed_to_leaves.add(id(g))
        t.grad = Tensor(g)
        return
    current = t.grad.data
    # Add in place, as PyTorch does, when the array is this leaf's alone (micro-batches
    # accumulating into a 1 MB weight gradient spent a sixth of a pipeline stage's GEMM
    # time allocating fresh sums). An array handed over in this pass may still be some
    # node's pending gradient; one referenced from anywhere else (a function that saved
    # it, a deferred weight pass, a send in flight, user code) must not change under it.
    # Three references: t.grad's slot, ``current`` and getrefcount's own argument.
    # (cupy's flags have no ``writeable``: device arrays always are.)
    if (id(current) not in handed_to_leaves and current.flags.owndata
            and getattr(current.flags, "writeable", True)
            and current.shape == g.shape and sys.getrefcount(current) <= 3):
        current += g
    else:
        t.grad.data = current + g


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
        t.data = np.ascontiguousarray(t.data).reshape(t.shape)  # numpy makes 0-d arrays 1-d
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


