"""Sparse execution of pruned layers: ``SparseLinear`` on our CSR SpMM, ``to_sparse``, ``sparsify``.

PyTorch's pruning only multiplies the weight by a mask, so a 90%-pruned layer
costs what a dense one does. Here a pruned ``nn.Linear`` becomes a
``SparseLinear`` holding only its nonzeros in CSR and running
``pyrt.kernels.spmm``; it trains (the values get gradients, the pattern stays)
and saves like any module. ``sparsify`` converts a whole model's layers where
that is faster on this machine.

>>> import pyrt
>>> from pyrt import nn
>>> from pyrt.nn.utils import prune
>>> fc = nn.Linear(8, 4)
>>> _ = prune.l1_unstructured(fc, "weight", amount=0.75)
>>> sparse = to_sparse(fc)
>>> sparse
SparseLinear(in_features=8, out_features=4, bias=True, nnz=8, sparsity=0.750)
>>> x = pyrt.randn(3, 8)
>>> bool(abs(sparse(x).data - fc(x).data).max() < 1e-6)
True
"""

from __future__ import annotations

import functools
import math
import time
from typing import Any

import numpy as np

from pyrt import kernels
from pyrt.autograd import Function
from pyrt.backend import describe, get_array_module, move_array
from pyrt.nn.linear import Linear
from pyrt.nn.module import Module
from pyrt.nn.parameter import Parameter
from pyrt.tensor import Tensor

__all__ = ["SparseLinear", "break_even_sparsity", "sparsify", "to_sparse"]


class _PatternCache:
    """What backward derives from the sparsity pattern alone, computed once per pattern.

    The pattern is fixed while fine-tuning (only ``values`` change), so the
    row of each nonzero and the CSR of W.T (W's CSC: a row pointer and a
    permutation of the values, validated once as a ``CSRPattern``) are built
    on the first backward and reused. The layer's ``CSRPattern`` is immutable
    and is rebuilt whenever ``indptr``/``indices`` change or the layer moves to
    another device, so its identity says whether the pattern is still the one
    these were derived from. The index arrays live on the pattern's device
    (cupy arrays on a GPU), beside the values they index.
    """

    def __init__(self) -> None:
        self.source: kernels.CSRPattern | None = None

    def get(self, csr: kernels.CSRPattern) -> _PatternCache:
        if self.source is not csr:
            self.source = csr
            out_features, in_features = csr.shape
            indptr, indices = csr.indptr, csr.indices  # the validated host copies
            rows = np.repeat(np.arange(out_features, dtype=np.int64), np.diff(indptr))
            # A stable sort by column keeps each column's nonzeros in row order, so the rows
            # of W.T come out with sorted column indices, as CSR requires.
            perm = np.argsort(indices, kind="stable")
            flat = rows * in_features + indices  # each nonzero's offset in the dense (out, in)
            t_indptr = np.zeros(in_features + 1, dtype=np.int64)
            np.cumsum(np.bincount(indices, minlength=in_features), out=t_indptr[1:])
            self.transposed = kernels.CSRPattern(t_indptr, rows[perm], (in_features, out_features)).to(
                csr.device)
            kind, _, index = csr.device.partition(":")
            self.rows, self.perm, self.flat, self.cols = (
                move_array(a, kind, int(index) if index else None) for a in (rows, perm, flat, indices))
        return self


# Below this density grad_values is computed nonzero by nonzero, above it as the dense product
# read at the pattern. Measured here (1024x1024, batch 64, 2 threads): per-nonzero 0.59 ms vs
# dense 1.9 ms at 1% density, 3.1 vs 2.0 ms at 5%, 5.6 vs 1.4 ms at 10%: the SGEMM runs near
# FMA peak while the per-nonzero dots are bound by gathering two rows per nonzero.
_PATTERN_DOT_MAX_DENSITY = 0.03


def _grad_at_pattern(g_t: Any, x_t: Any, pattern: _PatternCache) -> Any:
    """``out[k] = g_t[r_k] . x_t[c_k]`` for every nonzero (r_k, c_k): ``grad.T @ x`` at the pattern."""
    xp = get_array_module(g_t)
    cols = pattern.cols
    nnz, size = len(cols), g_t.shape[0] * x_t.shape[0]
    if nnz >= _PATTERN_DOT_MAX_DENSITY * size:
        return kernels.matmul(g_t, x_t.T).ravel()[pattern.flat]
    out = xp.empty(nnz, dtype=np.float32)
    step = max(1, (1 << 18) // max(g_t.shape[1], 1))  # two gathered (step, batch) copies of 1 MiB
    for start in range(0, nnz, step):
        stop = start + step
        rows_g, rows_x = g_t[pattern.rows[start:stop]], x_t[cols[start:stop]]
        if xp is np:
            np.einsum("kb,kb->k", rows_g, rows_x, out=out[start:stop])
        else:  # cupy's einsum has no out=
            out[start:stop] = (rows_g * rows_x).sum(axis=1)
    return out


class SparseLinearFunction(Function):
    """``x @ W.T + bias`` for W in CSR (``indptr``, ``indices``, ``values``), as one node.

    The kernel multiplies a sparse matrix on the left, so the layer computes
    ``y.T = W @ x.T``; the gradients follow from y = x W^T + b:
    ``grad_x = grad @ W`` (as ``(W.T @ grad.T).T`` with W.T's CSR),
    ``grad_values[k] = sum_b grad[b, r_k] * x[b, c_k]`` (dW only at the pattern),
    ``grad_bias = grad.sum(0)``.

    >>> import numpy as np, pyrt
    >>> x, values = pyrt.ones(2, 3, requires_grad=True), pyrt.tensor([1.0, 2.0], requires_grad=True)
    >>> csr = kernels.CSRPattern(np.array([0, 1, 2]), np.array([0, 2]), (2, 3))
    >>> y = SparseLinearFunction.apply(x, values, None, csr=csr, cache=_PatternCache())
    >>> y.sum().backward()
    >>> x.grad.tolist(), values.grad.tolist()
    ([[1.0, 0.0, 2.0], [1.0, 0.0, 2.0]], [2.0, 2.0])
    """

    def forward(self, x: Any, values: Any, bias: Any | None, *, csr: kernels.CSRPattern,
                cache: _PatternCache) -> Any:
        out_features, in_features = csr.shape
        # -1 fails when x is empty; a 2-D x skips the reshapes, a tenth of a batch-1 call
        rows = x if x.ndim == 2 else x.reshape(math.prod(x.shape[:-1]), in_features)
        # spmm needs b = x.T with contiguous rows and copies anything else. Copying once
        # explicitly costs O(batch * in), below the O(nnz * batch) product, and backward
        # reuses that x.T for grad_values, so it is what is saved.
        # A batch of 1 (or a previous SparseLinear's output, itself a transposed view) is
        # already in that layout and is not copied.
        x_t = get_array_module(rows).ascontiguousarray(rows.T)
        # The result is returned as the transposed view of spmm's (out, batch) array:
        # a copy back to row-major would cost as much again, and every consumer (numpy
        # ufuncs, our strided SGEMM, the next SparseLinear) reads any layout.
        out = csr.matmul(values, x_t, bias=bias).T
        self.save_for_backward(x_t, values)
        self.csr, self.cache = csr, cache
        self.x_shape = x.shape
        return out if x.ndim == 2 else out.reshape(*x.shape[:-1], out_features)

    def backward(self, grad: Any) -> tuple[Any | None, Any | None, Any | None]:
        x_t, values = self.saved_tensors
        out_features = self.csr.shape[0]
        need_x, need_values, need_bias = self.needs_input_grad
        grad_rows = grad.reshape(math.prod(grad.shape[:-1]), out_features)
        # (out, batch), rows contiguous for both products
        g_t = get_array_module(grad_rows).ascontiguousarray(grad_rows.T, dtype=np.float32)
        pattern = self.cache.get(self.csr)
        grad_x = grad_values = grad_bias = None
        if need_x:
            # grad_x.T = W.T @ grad.T; W.T's CSR holds W's values in column order.
            grad_x_t = pattern.transposed.matmul(values[pattern.perm], g_t)
            grad_x = grad_x_t.T.reshape(self.x_shape)
        if need_values:
            grad_values = _grad_at_pattern(g_t, x_t, pattern)
        if need_bias:
            grad_bias = grad_rows.sum(axis=0)
        return grad_x, grad_values, grad_bias


class SparseLinear(Module):
    """``y = x @ W.T + bias`` with W (out_features, in_features) stored as CSR, run on our SpMM.

    State: buffers ``indptr`` (out_features + 1,) and ``indices`` (nnz,), both
    int64, the sorted column of each nonzero row by row (SciPy's layout); the
    float32 Parameter ``values`` (nnz,); ``bias`` (out_features,) or None.
    Optimizers see only ``values`` and ``bias``, so training keeps the
    pattern: a pruned entry has no storage to become nonzero in. The pattern is
    validated when the layer is built. Usually made by ``to_sparse``.
    ``to("cuda")`` moves all of it to a GPU, where forward and backward run
    on the CUDA SpMM (the pattern as int32 device arrays, built once per move).

    >>> import numpy as np, pyrt
    >>> layer = SparseLinear(3, 2, indptr=np.array([0, 1, 3]), indices=np.array([2, 0, 1]),
    ...                      values=np.array([1.0, 2.0, 3.0], np.float32))
    >>> layer
    SparseLinear(in_features=3, out_features=2, bias=False, nnz=3, sparsity=0.500)
    >>> layer(pyrt.tensor([[1.0, 1.0, 1.0]])).tolist()
    [[1.0, 5.0]]
    >>> list(layer.state_dict())
    ['values', 'indptr', 'indices']
    """

    def __init__(self, in_features: int, out_features: int, indptr: Any, indices: Any, values: Any,
                 bias: Any | None = None) -> None:
        super().__init__()
        if in_features < 0 or out_features < 0:
            raise ValueError(f"SparseLinear: features must be >= 0, got in_features={in_features}, "
                             f"out_features={out_features}")
        arrays = [a.data if isinstance(a, Tensor) else a for a in (indptr, indices, values, bias)]
        indptr, indices, values, bias = (None if a is None else np.asarray(a) for a in arrays)
        for name, array in (("indptr", indptr), ("indices", indices)):
            if not np.issubdtype(array.dtype, np.integer):
                raise TypeError(f"SparseLinear: {name} must hold integers, got {describe(array)}")
        for name, array in (("values", values), ("bias", bias)):
            if array is not None and array.dtype != np.float32:
                raise TypeError(f"SparseLinear: {name} is {describe(array)}; the SpMM kernel computes in "
                                "float32 (cast with .astype(np.float32))")
        if bias is not None and bias.shape != (out_features,):
            raise ValueError(f"SparseLinear: bias is {describe(bias)} but out_features={out_features}")
        indptr = np.array(indptr, dtype=np.int64)
        indices = np.array(indices, dtype=np.int64)
        # spmm validates the CSR structure (with errors that say what is wrong); an empty b
        # runs just that check, so there is one validator for the layer and the kernel.
        kernels.spmm(indptr, indices, values.astype(np.float32),
                     (out_features, in_features), np.empty((in_features, 0), np.float32))
        self.in_features, self.out_features = in_features, out_features
        self.values = Parameter(np.array(values, dtype=np.float32))
        if bias is not None:
            self.bias = Parameter(np.array(bias, dtype=np.float32))
        else:
            self.register_parameter("bias", None)
        self.register_buffer("indptr", Tensor(indptr))
        self.register_buffer("indices", Tensor(indices))
        self._pattern = _PatternCache()
        self._csr: kernels.CSRPattern | None = None
        self._csr_source: tuple[Any, ...] = ()

    @property
    def nnz(self) -> int:
        """Number of stored nonzeros.

        >>> import numpy as np
        >>> SparseLinear(2, 1, np.array([0, 1]), np.array([0]), np.ones(1, np.float32)).nnz
        1
        """
        return int(self.values.shape[0])

    def forward(self, input: Tensor) -> Tensor:
        if input.ndim == 0 or input.shape[-1] != self.in_features:
            raise ValueError(f"SparseLinear: input is {describe(input.data)} but the layer expects "
                             f"(..., {self.in_features})")
        if input.dtype != np.float32:
            raise TypeError(f"SparseLinear: input is {describe(input.data)}; the SpMM kernel computes "
                            "in float32 (cast the input with .float())")
        return SparseLinearFunction.apply(
            input, self.values, self.bias, csr=self._validated_pattern(), cache=self._pattern,
        )

    def _validated_pattern(self) -> kernels.CSRPattern:
        """The CSR structure, checked once per pattern instead of on every product.

        Rebuilt when a buffer is replaced or changed in place through the
        tensor (``load_state_dict`` bumps its version); writing into ``.data``
        directly bypasses that, as it bypasses PyTorch's version counters.
        """
        # Runs on every forward: a flat identity/version comparison straight off _buffers (the
        # Module attribute lookup and tuple building it replaces were 4 us of a 25 us batch-1 call).
        indptr, indices = self._buffers["indptr"], self._buffers["indices"]
        known = self._csr_source
        if (self._csr is None or not known or known[0] is not indptr or known[1] is not indptr.data
                or known[2] != indptr._version or known[3] is not indices or known[4] is not indices.data
                or known[5] != indices._version):
            self._csr = kernels.CSRPattern(indptr.data, indices.data, (self.out_features, self.in_features))
            self._csr_source = (indptr, indptr.data, indptr._version, indices, indices.data, indices._version)
        return self._csr

    def to_dense(self) -> Linear:
        """The equivalent ``nn.Linear`` (zeros off the pattern); ``to_sparse`` of it gives this layer back.

        >>> import numpy as np
        >>> layer = SparseLinear(2, 2, np.array([0, 1, 1]), np.array([1]), np.array([4.0], np.float32))
        >>> layer.to_dense().weight.data.tolist()
        [[0.0, 4.0], [0.0, 0.0]]
        """
        dense = Linear(self.in_features, self.out_features, bias=self.bias is not None)
        # Built on the host from host copies, then moved to the layer's device.
        indptr, indices, values = (move_array(t.data, "cpu", None) for t in (self.indptr, self.indices,
                                                                            self.values))
        weight = np.zeros((self.out_features, self.in_features), dtype=np.float32)
        rows = np.repeat(np.arange(self.out_features), np.diff(indptr))
        weight[rows, indices] = values
        dense.weight.data[...] = weight
        if self.bias is not None:
            dense.bias.data[...] = move_array(self.bias.data, "cpu", None)
        return dense if self.values.device == "cpu" else dense.to(self.values.device)

    def extra_repr(self) -> str:
        size = self.in_features * self.out_features
        sparsity = 1.0 - self.nnz / size if size else 0.0
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}, nnz={self.nnz}, sparsity={sparsity:.3f}")


def _current_weight(linear: Linear) -> np.ndarray:
    """The weight the layer's forward would use now.

    For a layer pruned by ``pyrt.nn.utils.prune`` that is ``weight_orig *
    weight_mask``, which the pre-hook assigns to ``weight`` before each
    forward; recomputing it here means an optimizer step taken since the last
    forward is not missed.
    """
    orig, mask = getattr(linear, "weight_orig", None), getattr(linear, "weight_mask", None)
    if isinstance(orig, Tensor) and isinstance(mask, Tensor):
        return orig.data * mask.data
    return linear.weight.data


def _check_linear(fn: str, linear: Any) -> None:
    if not isinstance(linear, Linear):
        raise TypeError(f"{fn}: expected a pyrt.nn.Linear, got {type(linear).__name__}")


def to_sparse(linear: Linear) -> SparseLinear:
    """A ``SparseLinear`` holding exactly the nonzeros of ``linear``'s (pruned) weight, and its bias.

    A layer pruned with ``pyrt.nn.utils.prune`` contributes its pruned weight
    (``weight_orig * weight_mask``); the arrays are copied, so the result is
    independent of ``linear``. Only float32 layers are accepted (the kernel
    computes in float32).

    >>> import pyrt
    >>> from pyrt import nn
    >>> fc = nn.Linear(4, 3)
    >>> fc.weight.data[:, :2] = 0.0
    >>> to_sparse(fc).nnz
    6
    >>> bool((to_sparse(fc).to_dense().weight.data == fc.weight.data).all())
    True
    """
    _check_linear("to_sparse", linear)
    weight = _current_weight(linear)
    bias = None if linear.bias is None else linear.bias.data
    for name, array in (("weight", weight), ("bias", bias)):
        if array is not None and array.dtype != np.float32:
            raise TypeError(f"to_sparse: {name} is {describe(array)}; SparseLinear runs on the float32 SpMM "
                            "kernel (convert the layer with .float() first)")
    if not isinstance(weight, np.ndarray):
        raise TypeError(f"to_sparse: weight is {describe(weight)}; only numpy (CPU) weights are supported")
    rows, cols = np.nonzero(weight)  # row-major order: exactly CSR's order, columns sorted per row
    indptr = np.zeros(weight.shape[0] + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=weight.shape[0]), out=indptr[1:])
    return SparseLinear(linear.in_features, linear.out_features, indptr, cols.astype(np.int64),
                        weight[rows, cols], None if bias is None else bias.copy())


def _sparsity(linear: Linear) -> float:
    weight = _current_weight(linear)
    return float(np.count_nonzero(weight == 0) / weight.size) if weight.size else 0.0


# The calibration problem: a 1024x1024 layer at batch 64 is a typical MLP hidden layer in
# training; nnz-proportional SpMM cost against a fixed GEMM cost puts the crossover where
# it matters for the layers users prune. Up to 0.99 so a slow SpMM still finds a point.
_CALIBRATION_SPARSITIES = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99)


@functools.cache
def break_even_sparsity() -> float:
    """The lowest sparsity at which ``SparseLinear`` beats a dense ``Linear`` on this machine.

    Measured once per process (about half a second; the result is cached): a
    random 1024x1024 weight at batch 64 is multiplied both as the two layers
    do it (``kernels.matmul(x, W.T)`` against the copy of ``x.T`` plus
    ``kernels.spmm``), at each sparsity in 0.5, 0.6, ... 0.95, 0.99, taking the
    fastest of 15 interleaved runs of each so that a busy machine disturbs
    both sides alike. The answer is the lowest sparsity from which sparse wins
    at every measured sparsity above it too (a single lucky timing cannot pull
    it down). It depends on the CPU, the thread count and the kernels, which
    is why it is measured rather than a constant; 1.0 means sparse never won.

    >>> 0.0 < break_even_sparsity() <= 1.0   # doctest: +SKIP
    True
    """
    rng = np.random.default_rng(0)  # its own generator: calibrating must not move pyrt's seed
    out_features = in_features = 1024
    batch = 64
    x = rng.standard_normal((batch, in_features), dtype=np.float32)
    wins = []
    for sparsity in _CALIBRATION_SPARSITIES:
        weight = rng.standard_normal((out_features, in_features), dtype=np.float32)
        weight[rng.random(weight.shape) < sparsity] = 0.0
        rows, cols = np.nonzero(weight)
        indptr = np.zeros(out_features + 1, dtype=np.int64)
        np.cumsum(np.bincount(rows, minlength=out_features), out=indptr[1:])
        indices, values = cols.astype(np.int64), weight[rows, cols]
        dense_s = sparse_s = math.inf
        for _ in range(15):
            start = time.perf_counter()
            kernels.matmul(x, weight.T)
            middle = time.perf_counter()
            kernels.spmm(indptr, indices, values, weight.shape, np.ascontiguousarray(x.T))
            end = time.perf_counter()
            dense_s, sparse_s = min(dense_s, middle - start), min(sparse_s, end - middle)
        wins.append(sparse_s < dense_s)
    threshold = 1.0
    for sparsity, won in zip(reversed(_CALIBRATION_SPARSITIES), reversed(wins), strict=True):
        if not won:
            break
        threshold = sparsity
    return threshold


def sparsify(model: Module, min_sparsity: float | None = None) -> Module:
    """Replace, in place, every ``nn.Linear`` whose weight has at least ``min_sparsity`` zeros.

    Sparsity is the fraction of exact zeros in the layer's current weight
    (the pruned one for a layer pruned by ``pyrt.nn.utils.prune``). The
    default threshold, ``break_even_sparsity()``, is where sparse execution
    starts to beat dense on this machine, measured once per process, so by
    default only layers that get faster are converted. Children are replaced
    recursively; a layer shared by several parents becomes one shared
    ``SparseLinear``. Returns ``model`` (or, when ``model`` is itself a
    Linear that qualifies, its replacement, since there is no parent to put
    it in).

    >>> from pyrt import nn
    >>> model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
    >>> model[0].weight.data[:3] = 0.0
    >>> sparsify(model, min_sparsity=0.5)
    Sequential(
      (0): SparseLinear(in_features=4, out_features=4, bias=True, nnz=4, sparsity=0.750)
      (1): ReLU()
      (2): Linear(in_features=4, out_features=2, bias=True)
    )
    """
    if not isinstance(model, Module):
        raise TypeError(f"sparsify: model must be a pyrt.nn.Module, got {type(model).__name__}")
    if min_sparsity is None:
        min_sparsity = break_even_sparsity()
    if not 0.0 <= min_sparsity <= 1.0:
        raise ValueError(f"sparsify: min_sparsity must be within [0, 1], got {min_sparsity}")
    converted: dict[int, SparseLinear] = {}

    def convert(module: Module) -> Module:
        if isinstance(module, Linear) and _sparsity(module) >= min_sparsity:
            if id(module) not in converted:
                converted[id(module)] = to_sparse(module)
            return converted[id(module)]
        for name, child in list(module._modules.items()):
            if child is not None:
                replacement = convert(child)
                if replacement is not child:
                    setattr(module, name, replacement)
        return module

    return convert(model)
