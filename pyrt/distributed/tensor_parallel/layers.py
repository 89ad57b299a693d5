"""Megatron-LM's tensor-parallel layers: one layer's weight split over the ranks of a group.

With ``t`` ranks in the tensor-parallel group, for a layer ``y = x @ W.T + b``
with ``W`` (out, in):

- ``ColumnParallelLinear`` keeps rows ``W[r*out/t:(r+1)*out/t]`` (output
  features): rank r computes its block of ``y`` from the whole ``x``.
- ``RowParallelLinear`` keeps columns ``W[:, r*in/t:(r+1)*in/t]`` (input
  features): rank r multiplies its block of ``x``, and the partial products
  are summed by an all-reduce; the bias is added once, after it.
- ``TensorParallelMLP`` chains the two (column, activation, row) so that the
  hidden activation never leaves its rank: one all-reduce forward (the row
  layer's output) and one backward (the column layer's input gradient), each
  of the block's input size (b x s x h elements).
- ``VocabParallelEmbedding`` keeps rows ``[r*V/t, (r+1)*V/t)`` of the table,
  the vocabulary padded to a multiple of ``t``; ids outside a rank's range
  look up zeros there, and an all-reduce sums the one rank that had the row.

Parameters are initialised from the full serial layer and sliced: every rank
of the group draws the whole weight from the same generator (call
``pyrt.manual_seed`` with one seed on every rank first) and keeps its block.
A tensor-parallel model therefore starts equal to its serial twin built from
the same seed, layer for layer, and construction checks that the ranks drew
the same weights.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

from pyrt.distributed.collectives import all_gather_into_tensor
from pyrt.distributed.device_mesh import DeviceMesh
from pyrt.distributed.functional import (
    copy_to_parallel,
    gather_from_parallel,
    reduce_from_parallel,
    scatter_to_parallel,
)
from pyrt.distributed.process_group import ProcessGroup, resolve_group
from pyrt.nn import functional as F
from pyrt.nn.activation import ReLU
from pyrt.nn.embedding import Embedding
from pyrt.nn.linear import Linear
from pyrt.nn.module import Module
from pyrt.nn.parameter import Parameter
from pyrt.tensor import Tensor

__all__ = [
    "ColumnParallelLinear", "RowParallelLinear", "TensorParallelMLP", "VocabParallelEmbedding",
    "pad_vocab_size", "tensor_parallel_group", "vocab_range",
]


def tensor_parallel_group(group: ProcessGroup | DeviceMesh | None, what: str) -> ProcessGroup:
    """The process group a tensor-parallel layer splits over: a group, a 1-d mesh, or the world.

    Example: ``tensor_parallel_group(mesh["tp"], "MyLayer")`` is ``mesh.get_group("tp")``.
    """
    if isinstance(group, DeviceMesh):
        if group.ndim != 1:
            raise ValueError(f"{what}: a tensor-parallel layer splits over one mesh dimension; got a "
                             f"{group.ndim}-d mesh {group.mesh_dim_names or group.shape} "
                             "(pass mesh['tp'])")
        group = group.get_group()
    return resolve_group(group, what)


def _describe_group(pg: ProcessGroup) -> str:
    return f"{pg.name} (global ranks {pg.global_ranks})"


def _split_evenly(features: int, pg: ProcessGroup, what: str, name: str) -> int:
    if features % pg.size():
        raise ValueError(
            f"{what}: {name}={features} is not divisible by the {pg.size()} ranks of the "
            f"tensor-parallel group {_describe_group(pg)}")
    return features // pg.size()


def _check_same_weights(pg: ProcessGroup, arrays: list[np.ndarray], what: str) -> None:
    """Every rank must have drawn the same full weights, or the slices belong to different models."""
    if pg.size() == 1:
        return
    digest = hashlib.sha1(b"".join(np.ascontiguousarray(a).tobytes() for a in arrays)).digest()
    mine = np.frombuffer(digest, dtype=np.uint8)
    every = np.empty((pg.size(), mine.size), dtype=np.uint8)
    # A checked collective, not a raw MPI call: a rank that is in another collective is named
    # at once, and one that never comes is reported by the watchdog, instead of a silent wait.
    all_gather_into_tensor(every, mine, group=pg)
    differ = [pg.global_ranks[r] for r in range(pg.size()) if (every[r] != every[0]).any()]
    if differ:
        raise RuntimeError(
            f"{what}: ranks {differ} drew different initial weights from global rank {pg.global_ranks[0]} "
            f"in the tensor-parallel group {_describe_group(pg)}; call pyrt.manual_seed with the same "
            "seed on every rank before building the model")


class ColumnParallelLinear(Module):
    """``y = x @ W.T + b`` with W's output features (rows) split over the group.

    Rank r holds ``weight`` (out/t, in) and ``bias`` (out/t,): its block of
    the serial layer's. The input is the whole ``x`` (its gradient is summed
    over the group). With ``gather_output`` (Megatron's default) the blocks
    are all-gathered into the full ``y``; without, rank r returns its block,
    ready for a ``RowParallelLinear(input_is_parallel=True)``.

    Example (under ``mpiexec -n 2``)::

        pyrt.manual_seed(0)
        layer = ColumnParallelLinear(16, 64, gather_output=False)   # weight (32, 16) per rank
        layer(pyrt.ones(8, 16)).shape                                # (8, 32)
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, gather_output: bool = True,
                 group: ProcessGroup | DeviceMesh | None = None, dtype: Any = None) -> None:
        super().__init__()
        pg = tensor_parallel_group(group, "ColumnParallelLinear")
        part = _split_evenly(out_features, pg, "ColumnParallelLinear", "out_features")
        # The serial layer's draws, in its order (weight, then bias), sliced.
        full = Linear(in_features, out_features, bias=bias, dtype=dtype)
        _check_same_weights(pg, [p.data for p in full.parameters()], "ColumnParallelLinear")
        rows = slice(pg.rank() * part, (pg.rank() + 1) * part)
        self.in_features, self.out_features = in_features, out_features
        self.gather_output = gather_output
        self.group = pg
        self.weight = Parameter(full.weight.data[rows].copy())
        if bias:
            self.bias = Parameter(full.bias.data[rows].copy())
        else:
            self.register_parameter("bias", None)

    def forward(self, input: Tensor) -> Tensor:
        x = copy_to_parallel(input, self.group)
        y = F.linear(x, self.weight, self.bias)
        return gather_from_parallel(y, self.group) if self.gather_output else y

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features} "
                f"({self.weight.shape[0]} here), bias={self.bias is not None}, "
                f"gather_output={self.gather_output}, group={self.group.name}")


class RowParallelLinear(Module):
    """``y = x @ W.T + b`` with W's input features (columns) split over the group.

    Rank r holds ``weight`` (out, in/t) and the whole ``bias`` (out,). With
    ``input_is_parallel`` the input is already rank r's block of features
    (a ``ColumnParallelLinear(gather_output=False)``'s output); otherwise
    (Megatron's default) the whole ``x`` is split here. The partial products
    are all-reduced; the bias is added once, after.

    Example (under ``mpiexec -n 2``)::

        pyrt.manual_seed(0)
        layer = RowParallelLinear(64, 16, input_is_parallel=True)   # weight (16, 32) per rank
        layer(pyrt.ones(8, 32)).shape                                # (8, 16), same on both ranks
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True,
                 input_is_parallel: bool = False, group: ProcessGroup | DeviceMesh | None = None,
                 dtype: Any = None) -> None:
        super().__init__()
        pg = tensor_parallel_group(group, "RowParallelLinear")
        part = _split_evenly(in_features, pg, "RowParallelLinear", "in_features")
        full = Linear(in_features, out_features, bias=bias, dtype=dtype)
        _check_same_weights(pg, [p.data for p in full.parameters()], "RowParallelLinear")
        cols = slice(pg.rank() * part, (pg.rank() + 1) * part)
        self.in_features, self.out_features = in_features, out_features
        self.input_is_parallel = input_is_parallel
        self.group = pg
        self.weight = Parameter(np.ascontiguousarray(full.weight.data[:, cols]))
        if bias:
            self.bias = Parameter(full.bias.data.copy())
        else:
            self.register_parameter("bias", None)

    def forward(self, input: Tensor) -> Tensor:
        if self.input_is_parallel:
            part = self.weight.shape[1]
            if input.ndim == 0 or input.shape[-1] != part:
                raise ValueError(
                    f"RowParallelLinear: input_is_parallel, so rank {self.group.rank()} of "
                    f"{_describe_group(self.group)} expects its {part} of {self.in_features} input "
                    f"features, got an input of shape {input.shape}")
            x = input
        else:
            x = scatter_to_parallel(input, self.group)
        y = reduce_from_parallel(F.linear(x, self.weight), self.group)
        return y if self.bias is None else y + self.bias

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features} ({self.weight.shape[1]} here), "
                f"out_features={self.out_features}, bias={self.bias is not None}, "
                f"input_is_parallel={self.input_is_parallel}, group={self.group.name}")


class TensorParallelMLP(Module):
    """Megatron's parallel MLP block: ``fc2(activation(fc1(x)))`` with one all-reduce each way.

    ``fc1`` is a ``ColumnParallelLinear(hidden, ffn_hidden, gather_output=False)``
    and ``fc2`` a ``RowParallelLinear(ffn_hidden, hidden, input_is_parallel=True)``:
    the (…, ffn_hidden/t) activation stays on its rank, so a forward and
    backward move exactly two all-reduces of x's size. ``activation`` must be
    elementwise (default ``nn.ReLU()``). Its serial twin, from the same seed, is
    ``nn.Sequential(nn.Linear(hidden, ffn_hidden), activation, nn.Linear(ffn_hidden, hidden))``.

    Example (under ``mpiexec -n 2``)::

        pyrt.manual_seed(0)
        block = TensorParallelMLP(64, 256, group=mesh["tp"])
        y = block(x)                     # x (b, s, 64) -> y (b, s, 64), the same on every tp rank
    """

    def __init__(self, hidden_size: int, ffn_hidden_size: int, bias: bool = True,
                 activation: Module | None = None, group: ProcessGroup | DeviceMesh | None = None,
                 dtype: Any = None) -> None:
        super().__init__()
        pg = tensor_parallel_group(group, "TensorParallelMLP")
        self.fc1 = ColumnParallelLinear(hidden_size, ffn_hidden_size, bias=bias, gather_output=False,
                                        group=pg, dtype=dtype)
        self.activation = ReLU() if activation is None else activation
        self.fc2 = RowParallelLinear(ffn_hidden_size, hidden_size, bias=bias, input_is_parallel=True,
                                     group=pg, dtype=dtype)

    def forward(self, input: Tensor) -> Tensor:
        return self.fc2(self.activation(self.fc1(input)))


def pad_vocab_size(vocab_size: int, group_size: int) -> int:
    """``vocab_size`` rounded up to a multiple of the group size, so every rank holds as many rows.

    >>> pad_vocab_size(10, 4)
    12
    >>> pad_vocab_size(12, 4)
    12
    """
    if vocab_size < 1 or group_size < 1:
        raise ValueError(f"pad_vocab_size: need vocab_size >= 1 and group_size >= 1, got {vocab_size} "
                         f"and {group_size}")
    return -(-vocab_size // group_size) * group_size


def vocab_range(padded_vocab_size: int, rank: int, group_size: int) -> tuple[int, int]:
    """The ids ``[start, end)`` rank ``rank`` holds of a vocabulary padded for ``group_size`` ranks.

    >>> [vocab_range(12, r, 4) for r in range(4)]
    [(0, 3), (3, 6), (6, 9), (9, 12)]
    """
    if padded_vocab_size % group_size:
        raise ValueError(f"vocab_range: {padded_vocab_size} rows do not split over {group_size} ranks; "
                         "pad with pad_vocab_size first")
    if not 0 <= rank < group_size:
        raise ValueError(f"vocab_range: rank {rank} is outside a group of {group_size}")
    part = padded_vocab_size // group_size
    return rank * part, (rank + 1) * part


class VocabParallelEmbedding(Module):
    """An ``nn.Embedding(num_embeddings, embedding_dim)`` whose rows are split over the group.

    The vocabulary is padded to a multiple of the group size with zero rows
    (never looked up: ids must lie in ``[0, num_embeddings)``). Rank r holds
    rows ``[vocab_start_index, vocab_end_index)`` as ``weight``; an id outside
    them looks up zeros here, and an all-reduce sums the one rank that holds
    its row. The backward needs no communication: each rank's rows get the
    gradient of the positions that used them.

    Example (under ``mpiexec -n 4``)::

        pyrt.manual_seed(0)
        emb = VocabParallelEmbedding(10, 8)          # padded to 12 rows, 3 per rank
        emb(pyrt.tensor(np.array([[1, 9]]))).shape   # (1, 2, 8), the same on every rank
    """

    def __init__(self, num_embeddings: int, embedding_dim: int, padding_idx: int | None = None,
                 group: ProcessGroup | DeviceMesh | None = None, dtype: Any = None) -> None:
        super().__init__()
        pg = tensor_parallel_group(group, "VocabParallelEmbedding")
        full = Embedding(num_embeddings, embedding_dim, padding_idx=padding_idx, dtype=dtype)
        _check_same_weights(pg, [full.weight.data], "VocabParallelEmbedding")
        self.num_embeddings, self.embedding_dim = num_embeddings, embedding_dim
        self.padding_idx = full.padding_idx
        self.num_embeddings_padded = pad_vocab_size(num_embeddings, pg.size())
        self.vocab_start_index, self.vocab_end_index = vocab_range(
            self.num_embeddings_padded, pg.rank(), pg.size())
        self.group = pg
        table = np.zeros((self.num_embeddings_padded, embedding_dim), dtype=full.weight.dtype)
        table[:num_embeddings] = full.weight.data
        self.weight = Parameter(table[self.vocab_start_index:self.vocab_end_index].copy())

    def forward(self, input: Tensor | Any) -> Tensor:
        ids = np.asarray(input.data if isinstance(input, Tensor) else input)
        if ids.dtype not in (np.int32, np.int64):
            raise TypeError(f"VocabParallelEmbedding: ids must be int32 or int64, got {ids.dtype}")
        if ids.size and (ids.min() < 0 or ids.max() >= self.num_embeddings):
            bad = int(ids.min()) if ids.min() < 0 else int(ids.max())
            raise IndexError(f"VocabParallelEmbedding: id {bad} is out of range for a vocabulary of "
                             f"{self.num_embeddings} (valid 0..{self.num_embeddings - 1})")
        start, end = self.vocab_start_index, self.vocab_end_index
        here = (ids >= start) & (ids < end)
        # Ids held elsewhere look up local row 0 and are then zeroed, so they
        # add nothing here, forward or backward.
        local = np.where(here, ids - start, 0)
        held = self.padding_idx is not None and start <= self.padding_idx < end
        padding = self.padding_idx - start if held else None
        rows = F.embedding(local, self.weight, padding)
        if self.group.size() == 1:
            return rows
        rows = rows * Tensor(here[..., None].astype(self.weight.dtype))
        return reduce_from_parallel(rows, self.group)

    def extra_repr(self) -> str:
        text = (f"{self.num_embeddings}, {self.embedding_dim}, rows [{self.vocab_start_index}, "
                f"{self.vocab_end_index}) of {self.num_embeddings_padded} here")
        return text if self.padding_idx is None else f"{text}, padding_idx={self.padding_idx}"
