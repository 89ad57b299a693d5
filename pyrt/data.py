"""Datasets, samplers and ``DataLoader`` (PyTorch's ``torch.utils.data``, single process).

A ``DataLoader`` asks a batch sampler for lists of indices and turns each list
into a batch. For a ``TensorDataset`` with the default collate it indexes every
tensor once with the whole index array, so a batch costs a few numpy gathers
instead of a Python call per sample; any other dataset is read sample by sample
and stacked by ``default_collate``.

Shuffling draws from pyrt's generator at the start of each epoch (or from the
``generator`` given), so ``pyrt.manual_seed`` makes the order repeatable.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence, Sized
from typing import Any, Generic, TypeVar

import numpy as np

from pyrt import random
from pyrt.tensor import Tensor

__all__ = [
    "BatchSampler", "DataLoader", "Dataset", "DistributedSampler", "RandomSampler", "Sampler",
    "SequentialSampler", "Subset", "TensorDataset", "default_collate",
]

T = TypeVar("T")


# --- datasets ----------------------------------------------------------------------

class Dataset(Generic[T]):
    """A map-style dataset: subclasses define ``__getitem__(index)`` and ``__len__``.

    >>> class Squares(Dataset):
    ...     def __len__(self):
    ...         return 4
    ...     def __getitem__(self, i):
    ...         return i * i
    >>> [Squares()[i] for i in range(4)]
    [0, 1, 4, 9]
    """

    def __getitem__(self, index: int) -> T:
        raise NotImplementedError(f"{type(self).__name__} must implement __getitem__")


class TensorDataset(Dataset[tuple[Tensor, ...]]):
    """Samples are the rows of one or more tensors with the same first dimension.

    >>> import pyrt
    >>> ds = TensorDataset(pyrt.zeros(5, 3), pyrt.arange(5))
    >>> len(ds), [t.shape for t in ds[2]]
    (5, [(3,), ()])
    """

    def __init__(self, *tensors: Tensor | np.ndarray) -> None:
        if not tensors:
            raise ValueError("TensorDataset needs at least one tensor")
        self.tensors = tuple(t if isinstance(t, Tensor) else Tensor(t) for t in tensors)
        for i, t in enumerate(self.tensors):
            if t.ndim == 0:
                raise ValueError(f"TensorDataset: tensor {i} is 0-d; every tensor needs a first "
                                 "(sample) dimension")
        sizes = [t.shape[0] for t in self.tensors]
        if any(n != sizes[0] for n in sizes):
            raise ValueError(f"Size mismatch between tensors: first dimensions are {sizes}")

    def __getitem__(self, index: Any) -> tuple[Tensor, ...]:
        # ``index`` may be one int or an index array (the DataLoader's batch path).
        return tuple(t[index] for t in self.tensors)

    def __len__(self) -> int:
        return self.tensors[0].shape[0]


class Subset(Dataset[T]):
    """The samples of ``dataset`` at ``indices``, in that order.

    >>> import pyrt
    >>> part = Subset(TensorDataset(pyrt.arange(10)), [7, 3])
    >>> len(part), part[0][0].item()
    (2, 7)
    """

    def __init__(self, dataset: Dataset[T], indices: Sequence[int]) -> None:
        self.dataset = dataset
        self.indices = indices

    def __getitem__(self, index: int) -> T:
        return self.dataset[self.indices[index]]

    def __len__(self) -> int:
        return len(self.indices)


# --- samplers ----------------------------------------------------------------------

class Sampler(Generic[T]):
    """Yields the indices (or batches of indices) a ``DataLoader`` reads, in order.

    >>> class Evens(Sampler):
    ...     def __iter__(self):
    ...         return iter(range(0, 6, 2))
    ...     def __len__(self):
    ...         return 3
    >>> list(Evens())
    [0, 2, 4]
    """

    def __iter__(self) -> Iterator[T]:
        raise NotImplementedError(f"{type(self).__name__} must implement __iter__")


class _EpochSampler(Sampler[int]):
    """A sampler whose epoch is one index array, and which knows how far into it the job got.

    ``state_dict()`` records the epoch's position (and what is needed to draw
    the same order again); after ``load_state_dict`` the next epoch started
    is the saved one, from the first index not yet handed out, which is how a
    job killed mid-epoch resumes exactly (``pyrt.utils.checkpoint``).
    """

    _consumed = 0  # indices of the current epoch handed out so far
    _resume_at: int | None = None

    def _draw(self) -> np.ndarray:
        raise NotImplementedError

    def indices(self) -> np.ndarray:
        """This epoch's indices as one array (what ``BatchSampler`` slices)."""
        order = self._draw()
        self._consumed, self._resume_at = self._resume_at or 0, None
        return order[self._consumed:]

    def __iter__(self) -> Iterator[int]:
        for index in self.indices().tolist():
            self._consumed += 1
            yield index

    def _mark_consumed(self, count: int) -> None:
        self._consumed += count

    def state_dict(self) -> dict[str, Any]:
        """The position in the current epoch: ``{"consumed": n, ...}``."""
        return {"consumed": self._consumed}

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Make the next epoch continue the saved one after its first ``consumed`` indices."""
        consumed = state_dict["consumed"]
        if isinstance(consumed, bool) or not isinstance(consumed, int) or consumed < 0:
            raise ValueError(f"{type(self).__name__}.load_state_dict: consumed must be a "
                             f"non-negative int, got {consumed!r}")
        self._resume_at = consumed


class SequentialSampler(_EpochSampler):
    """``0, 1, ..., len(data_source) - 1``.

    >>> list(SequentialSampler(range(3)))
    [0, 1, 2]
    """

    def __init__(self, data_source: Sized) -> None:
        self.data_source = data_source

    def _draw(self) -> np.ndarray:
        return np.arange(len(self.data_source))

    def __len__(self) -> int:
        return len(self.data_source)


class RandomSampler(_EpochSampler):
    """A fresh random permutation every epoch (or draws with replacement).

    Draws from ``generator`` if given, else from pyrt's generator at the start
    of each epoch, so ``pyrt.manual_seed`` fixes the order.

    >>> import pyrt
    >>> _ = pyrt.manual_seed(0)
    >>> sorted(RandomSampler(range(5)))
    [0, 1, 2, 3, 4]
    """

    def __init__(self, data_source: Sized, replacement: bool = False,
                 num_samples: int | None = None,
                 generator: np.random.Generator | None = None) -> None:
        if not isinstance(replacement, bool):
            raise TypeError(f"replacement should be a boolean value, got {replacement!r}")
        self.data_source = data_source
        self.replacement = replacement
        self._num_samples = num_samples
        self.generator = generator
        self._drawn_from: dict[str, Any] | None = None  # bit-generator state before this epoch's draw
        if not isinstance(self.num_samples, int) or self.num_samples < 0:
            raise ValueError(f"num_samples should be a non-negative integer, got {num_samples!r}")

    @property
    def num_samples(self) -> int:
        return len(self.data_source) if self._num_samples is None else self._num_samples

    def _draw(self) -> np.ndarray:
        rng = self.generator if self.generator is not None else random.default_generator()
        if self._resume_at is not None and self._drawn_from is not None:
            # Draw the interrupted epoch's order again from a copy of the generator as it
            # was then; the generator itself is where the checkpoint left it.
            replay = np.random.Generator(type(rng.bit_generator)())
            replay.bit_generator.state = self._drawn_from
            rng = replay
        self._drawn_from = rng.bit_generator.state
        n = len(self.data_source)
        if self.replacement:
            return rng.integers(0, n, size=self.num_samples, dtype=np.int64)
        # Whole permutations, concatenated when num_samples > n, as in PyTorch.
        rounds = max(math.ceil(self.num_samples / n), 1) if n else 1
        order = np.concatenate([rng.permutation(n) for _ in range(rounds)])
        return order[:self.num_samples]

    def state_dict(self) -> dict[str, Any]:
        """The position in the epoch and the generator's state before the epoch's draw."""
        drawn_from = None if self._drawn_from is None else json.dumps(self._drawn_from)
        return {**super().state_dict(), "drawn_from": drawn_from}

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        drawn_from = state_dict["drawn_from"]
        if drawn_from is None and state_dict["consumed"]:
            raise ValueError("RandomSampler.load_state_dict: the state has indices consumed but no "
                             "generator state to draw their epoch again")
        super().load_state_dict(state_dict)
        self._drawn_from = None if drawn_from is None else json.loads(drawn_from)

    def __len__(self) -> int:
        return self.num_samples


class DistributedSampler(_EpochSampler):
    """Rank ``rank``'s share of the dataset: every ``num_replicas``-th index of one order.

    All ranks shuffle with the same seed (``seed + epoch``, so call
    ``set_epoch`` each epoch for a new order) and take interleaved slices, so
    together they cover the dataset once per epoch. Without ``drop_last`` the
    order is padded by repeating its start until it divides evenly; with it,
    the tail is dropped. ``num_replicas`` and ``rank`` default to the default
    process group's.

    >>> [list(DistributedSampler(range(5), num_replicas=2, rank=r, shuffle=False)) for r in (0, 1)]
    [[0, 2, 4], [1, 3, 0]]
    >>> len(DistributedSampler(range(5), num_replicas=2, rank=1, drop_last=True))
    2
    """

    def __init__(self, dataset: Sized, num_replicas: int | None = None, rank: int | None = None,
                 shuffle: bool = True, seed: int = 0, drop_last: bool = False) -> None:
        if num_replicas is None or rank is None:
            from pyrt import distributed  # only now: single-process users never load MPI

            num_replicas = distributed.get_world_size() if num_replicas is None else num_replicas
            rank = distributed.get_rank() if rank is None else rank
        if num_replicas < 1 or not 0 <= rank < num_replicas:
            raise ValueError(
                f"DistributedSampler: invalid rank {rank} for num_replicas {num_replicas}; "
                f"rank must be in [0, {num_replicas - 1}]"
            )
        self.dataset = dataset
        self.num_replicas, self.rank = num_replicas, rank
        self.shuffle, self.seed, self.drop_last = shuffle, seed, drop_last
        self.epoch = 0
        n = len(dataset)
        if drop_last and n % num_replicas:
            self.num_samples = math.ceil((n - num_replicas) / num_replicas)
        else:
            self.num_samples = math.ceil(n / num_replicas)
        self.total_size = self.num_samples * num_replicas

    def set_epoch(self, epoch: int) -> None:
        """Choose this epoch's shuffle (the same on every rank)."""
        if epoch != self.epoch:
            self._resume_at = None  # a loaded position belongs to the epoch it was saved in
        self.epoch = epoch

    def state_dict(self) -> dict[str, Any]:
        """The epoch and the position in it (the order itself follows from seed and epoch)."""
        return {**super().state_dict(), "epoch": self.epoch, "seed": self.seed,
                "num_replicas": self.num_replicas}

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        saved = (state_dict["seed"], state_dict["num_replicas"])
        if saved != (self.seed, self.num_replicas):
            raise ValueError(f"DistributedSampler.load_state_dict: the state is for seed {saved[0]} "
                             f"over {saved[1]} replicas; this sampler has seed {self.seed} over "
                             f"{self.num_replicas} (the order would differ)")
        self.epoch = state_dict["epoch"]
        super().load_state_dict(state_dict)

    def _draw(self) -> np.ndarray:
        n = len(self.dataset)
        if self.shuffle:
            order = np.random.default_rng(self.seed + self.epoch).permutation(n)
        else:
            order = np.arange(n)
        if self.drop_last:
            order = order[:self.total_size]
        elif self.total_size > n and n > 0:
            order = np.resize(order, self.total_size)  # repeats the start as padding
        return order[self.rank:self.total_size:self.num_replicas]

    def __len__(self) -> int:
        return self.num_samples


class BatchSampler(Sampler[list[int]]):
    """Group the indices of ``sampler`` into lists of ``batch_size``.

    >>> list(BatchSampler(SequentialSampler(range(7)), batch_size=3, drop_last=False))
    [[0, 1, 2], [3, 4, 5], [6]]
    >>> list(BatchSampler(SequentialSampler(range(7)), batch_size=3, drop_last=True))
    [[0, 1, 2], [3, 4, 5]]
    """

    def __init__(self, sampler: Sampler[int] | Iterable[int], batch_size: int,
                 drop_last: bool) -> None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size <= 0:
            raise ValueError(f"batch_size should be a positive integer value, got {batch_size!r}")
        if not isinstance(drop_last, bool):
            raise ValueError(f"drop_last should be a boolean value, got {drop_last!r}")
        self.sampler = sampler
        self.batch_size = batch_size
        self.drop_last = drop_last

    def __iter__(self) -> Iterator[list[int]]:
        size = self.batch_size
        if isinstance(self.sampler, _EpochSampler):
            # These hand over the whole epoch as one array: slice it rather
            # than building each batch an int at a time.
            order = self.sampler.indices()
            stop = len(order) - len(order) % size if self.drop_last else len(order)
            for start in range(0, stop, size):
                batch = order[start:start + size]
                self.sampler._mark_consumed(len(batch))
                yield batch.tolist()
            return
        batch: list[int] = []
        for index in self.sampler:
            batch.append(index)
            if len(batch) == size:
                yield batch
                batch = []
        if batch and not self.drop_last:
            yield batch

    def __len__(self) -> int:
        n = len(self.sampler)  # type: ignore[arg-type]
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)


# --- collation ---------------------------------------------------------------------

def default_collate(batch: Sequence[Any]) -> Any:
    """Stack a list of samples into a batch, recursing into tuples, lists and dicts.

    Tensors and arrays are stacked (dtype kept); Python ints become int64,
    floats float64 and bools bool tensors, as in PyTorch; strings stay a list.
    A tuple sample gives a list of batched fields.

    >>> import pyrt
    >>> x, y = default_collate([(np.zeros(3, np.float32), 1), (np.ones(3, np.float32), 0)])
    >>> x.shape, y.tolist(), y.dtype
    ((2, 3), [1, 0], dtype('int64'))
    """
    if len(batch) == 0:
        raise ValueError("default_collate: got an empty batch")
    elem = batch[0]
    if isinstance(elem, Tensor):
        return Tensor(np.stack([_array_of(b, elem) for b in batch]))
    if isinstance(elem, (np.ndarray, np.generic)):
        if elem.dtype.kind in "OUSV":
            raise TypeError(f"default_collate: cannot batch numpy arrays of dtype {elem.dtype}")
        return Tensor(np.stack([np.asarray(b) for b in batch]))
    if isinstance(elem, bool):
        return Tensor(np.array(batch, dtype=np.bool_))
    if isinstance(elem, int):
        return Tensor(np.array(batch, dtype=np.int64))
    if isinstance(elem, float):
        return Tensor(np.array(batch, dtype=np.float64))
    if isinstance(elem, (str, bytes)):
        return list(batch)
    if isinstance(elem, Mapping):
        return type(elem)({key: default_collate([d[key] for d in batch]) for key in elem})  # type: ignore[call-arg]
    if isinstance(elem, tuple) and hasattr(elem, "_fields"):  # namedtuple
        return type(elem)(*(default_collate(list(field)) for field in zip(*batch, strict=True)))
    if isinstance(elem, Sequence):
        if any(len(sample) != len(elem) for sample in batch):
            raise RuntimeError("each element in list of batch should be of equal size")
        return [default_collate(list(field)) for field in zip(*batch, strict=True)]
    raise TypeError(
        "default_collate: batch must contain tensors, numpy arrays, numbers, dicts or lists; "
        f"found {type(elem).__name__}"
    )


def _array_of(sample: Any, first: Tensor) -> Any:
    if not isinstance(sample, Tensor) or sample.shape != first.shape:
        raise RuntimeError(
            "default_collate: stack expects each tensor to be equal size, but got "
            f"{first.shape} and {getattr(sample, 'shape', type(sample).__name__)}"
        )
    return sample.data


# --- the loader --------------------------------------------------------------------

class DataLoader(Generic[T]):
    """Iterate over a dataset in batches, optionally shuffled.

    ``num_workers`` and ``pin_memory`` are accepted so PyTorch scripts port
    unchanged; pyrt always loads in the calling process (the batches are the
    same, only not prefetched).

    >>> import pyrt
    >>> ds = TensorDataset(pyrt.arange(10).float(), pyrt.arange(10))
    >>> loader = DataLoader(ds, batch_size=4)
    >>> len(loader), [y.tolist() for _, y in loader]
    (3, [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]])
    """

    def __init__(self, dataset: Dataset[T], batch_size: int | None = 1,
                 shuffle: bool | None = None, sampler: Sampler[Any] | Iterable[Any] | None = None,
                 batch_sampler: Sampler[list[int]] | Iterable[list[int]] | None = None,
                 num_workers: int = 0, collate_fn: Callable[[list[T]], Any] | None = None,
                 pin_memory: bool = False, drop_last: bool = False, *,
                 generator: np.random.Generator | None = None) -> None:
        if num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {num_workers}")
        if sampler is not None and shuffle:
            raise ValueError("sampler option is mutually exclusive with shuffle")
        if batch_sampler is not None:
            if batch_size != 1 or shuffle or sampler is not None or drop_last:
                raise ValueError("batch_sampler option is mutually exclusive with batch_size, "
                                 "shuffle, sampler, and drop_last")
            batch_size, drop_last = None, False
        elif batch_size is None and drop_last:
            raise ValueError("batch_size=None option disables auto-batching and is mutually "
                             "exclusive with drop_last")
        if generator is not None and not isinstance(generator, np.random.Generator):
            raise TypeError("generator must be a numpy.random.Generator, got "
                            f"{type(generator).__name__}")
        if sampler is None:
            sampler = (RandomSampler(dataset, generator=generator) if shuffle  # type: ignore[arg-type]
                       else SequentialSampler(dataset))  # type: ignore[arg-type]
        if batch_size is not None and batch_sampler is None:
            batch_sampler = BatchSampler(sampler, batch_size, drop_last)
        self.dataset = dataset
        self.batch_size = batch_size
        self.drop_last = drop_last
        self.sampler = sampler
        self.batch_sampler = batch_sampler
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.generator = generator
        self.collate_fn = collate_fn
        # A TensorDataset batch is gathered in one indexing per tensor; a custom
        # collate_fn expects a list of samples, so it takes the general path.
        # A subclass that overrides __getitem__ (e.g. to transform samples) may
        # not accept an index array, so it takes the general path as well.
        self._gather_batches = (isinstance(dataset, TensorDataset) and collate_fn is None
                                and type(dataset).__getitem__ is TensorDataset.__getitem__)

    def __iter__(self) -> Iterator[Any]:
        if self.batch_sampler is None:  # auto-batching off: one sample at a time
            convert = self.collate_fn or _to_tensors
            for index in self.sampler:
                yield convert(self.dataset[index])
            return
        collate = self.collate_fn or default_collate
        for indices in self.batch_sampler:
            if self._gather_batches:
                yield list(self.dataset[np.asarray(indices, dtype=np.int64)])  # type: ignore[index]
            else:
                yield collate([self.dataset[i] for i in indices])

    def __len__(self) -> int:
        if self.batch_sampler is not None:
            return len(self.batch_sampler)  # type: ignore[arg-type]
        return len(self.sampler)  # type: ignore[arg-type]


def _to_tensors(sample: Any) -> Any:
    """What PyTorch's loader does to a sample when auto-batching is off: arrays become tensors."""
    if isinstance(sample, np.ndarray) and sample.dtype.kind not in "OUSV":
        return Tensor(sample)
    if isinstance(sample, tuple) and not hasattr(sample, "_fields"):
        return tuple(_to_tensors(s) for s in sample)
    if isinstance(sample, list):
        return [_to_tensors(s) for s in sample]
    if isinstance(sample, Mapping):
        return {key: _to_tensors(value) for key, value in sample.items()}
    return sample
