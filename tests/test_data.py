"""Datasets, samplers, collation and DataLoader; the bundled digits dataset."""

from __future__ import annotations

from collections import namedtuple
from typing import Any

import numpy as np
import pytest

import pyrt
from pyrt.datasets import DigitsDataset, load_digits
from pyrt.utils.data import (
    BatchSampler,
    DataLoader,
    Dataset,
    DistributedSampler,
    RandomSampler,
    SequentialSampler,
    Subset,
    TensorDataset,
    default_collate,
)


class ListDataset(Dataset):
    """A map-style dataset of arbitrary Python samples (the per-sample path)."""

    def __init__(self, samples: list[Any]) -> None:
        self.samples = samples

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> Any:
        return self.samples[index]


def _labels(loader: DataLoader) -> list[list[int]]:
    return [batch[-1].tolist() for batch in loader]


# --- TensorDataset ---------------------------------------------------------------

def test_tensor_dataset_items_and_len() -> None:
    x, y = pyrt.arange(12).reshape(6, 2), pyrt.arange(6)
    ds = TensorDataset(x, y)
    assert len(ds) == 6
    xi, yi = ds[4]
    assert xi.tolist() == [8, 9] and yi.item() == 4


def test_tensor_dataset_accepts_arrays() -> None:
    ds = TensorDataset(np.zeros((3, 2), np.float32))
    assert isinstance(ds.tensors[0], pyrt.Tensor) and len(ds) == 3


def test_tensor_dataset_size_mismatch() -> None:
    with pytest.raises(ValueError, match=r"Size mismatch between tensors: first dimensions are "
                                         r"\[5, 4\]"):
        TensorDataset(pyrt.zeros(5, 2), pyrt.zeros(4))
    with pytest.raises(ValueError, match="at least one"):
        TensorDataset()
    with pytest.raises(ValueError, match="0-d"):
        TensorDataset(pyrt.tensor(1.0))


def test_subset() -> None:
    part = Subset(TensorDataset(pyrt.arange(10)), [9, 0, 5])
    assert len(part) == 3 and [part[i][0].item() for i in range(3)] == [9, 0, 5]


# --- samplers ------------------------------------------------------------------------

def test_sequential_and_batch_sampler() -> None:
    assert list(SequentialSampler(range(4))) == [0, 1, 2, 3]
    sampler = BatchSampler(SequentialSampler(range(10)), 4, drop_last=False)
    assert list(sampler) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]] and len(sampler) == 3
    sampler = BatchSampler(range(10), 4, drop_last=True)  # any iterable of indices
    assert list(sampler) == [[0, 1, 2, 3], [4, 5, 6, 7]] and len(sampler) == 2


@pytest.mark.parametrize("batch_size", [0, -1, 1.5, True])
def test_batch_sampler_rejects_bad_batch_size(batch_size: Any) -> None:
    with pytest.raises(ValueError, match="positive integer"):
        BatchSampler(range(3), batch_size, False)


def test_random_sampler_permutation_and_seed() -> None:
    pyrt.manual_seed(5)
    a = list(RandomSampler(range(20)))
    pyrt.manual_seed(5)
    b = list(RandomSampler(range(20)))
    assert a == b and sorted(a) == list(range(20)) and a != list(range(20))


def test_random_sampler_num_samples_and_replacement() -> None:
    # More samples than data: whole permutations back to back, so counts differ by <= 1.
    assert sorted(np.bincount(list(RandomSampler(range(3), num_samples=7)))) == [2, 2, 3]
    drawn = list(RandomSampler(range(3), replacement=True, num_samples=50))
    assert len(drawn) == 50 and set(drawn) <= {0, 1, 2}
    gen = np.random.default_rng(0)
    assert list(RandomSampler(range(5), generator=gen)) == np.random.default_rng(0).permutation(
        5).tolist()
    with pytest.raises(ValueError, match="num_samples"):
        RandomSampler(range(3), num_samples=-1)


# --- DataLoader ---------------------------------------------------------------------------

@pytest.mark.parametrize(("n", "batch_size", "drop_last", "expected_len"),
                         [(10, 3, False, 4), (10, 3, True, 3), (9, 3, False, 3), (9, 3, True, 3),
                          (2, 5, False, 1), (2, 5, True, 0), (0, 4, False, 0), (7, 1, False, 7)])
def test_len_and_batch_sizes(n: int, batch_size: int, drop_last: bool, expected_len: int) -> None:
    ds = TensorDataset(pyrt.zeros(n, 2), pyrt.arange(n))
    loader = DataLoader(ds, batch_size=batch_size, drop_last=drop_last)
    batches = list(loader)
    assert len(loader) == expected_len == len(batches)
    sizes = [len(y) for _, y in batches]
    assert all(s == batch_size for s in sizes[:-1])
    assert sum(sizes) == (n // batch_size * batch_size if drop_last else n)


def test_batches_are_in_order_without_shuffle() -> None:
    loader = DataLoader(TensorDataset(pyrt.arange(7)), batch_size=3)
    assert _labels(loader) == [[0, 1, 2], [3, 4, 5], [6]]


def test_tensor_dataset_batch_values_and_dtypes() -> None:
    x = np.arange(20, dtype=np.float32).reshape(10, 2)
    loader = DataLoader(TensorDataset(pyrt.tensor(x), pyrt.arange(10)), batch_size=4)
    xb, yb = next(iter(loader))
    assert isinstance(xb, pyrt.Tensor) and xb.dtype == np.float32 and yb.dtype == np.int64
    np.testing.assert_array_equal(xb.data, x[:4])


def test_shuffle_repeatable_with_manual_seed_and_changes_per_epoch() -> None:
    ds = TensorDataset(pyrt.arange(50))
    pyrt.manual_seed(11)
    loader = DataLoader(ds, batch_size=8, shuffle=True)
    first, second = _labels(loader), _labels(loader)
    pyrt.manual_seed(11)
    assert _labels(DataLoader(ds, batch_size=8, shuffle=True)) == first
    assert first != second  # a new permutation each epoch
    assert sorted(i for batch in first for i in batch) == list(range(50))


def test_shuffle_with_explicit_generator() -> None:
    ds = TensorDataset(pyrt.arange(30))
    a = _labels(DataLoader(ds, batch_size=7, shuffle=True, generator=np.random.default_rng(3)))
    b = _labels(DataLoader(ds, batch_size=7, shuffle=True, generator=np.random.default_rng(3)))
    assert a == b and sorted(i for batch in a for i in batch) == list(range(30))
    with pytest.raises(TypeError, match=r"numpy\.random\.Generator"):
        DataLoader(ds, shuffle=True, generator=3)  # type: ignore[arg-type]


def test_fast_path_matches_per_sample_path() -> None:
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((23, 3)).astype(np.float32), rng.integers(0, 5, 23)
    ds = TensorDataset(pyrt.tensor(x), pyrt.tensor(y))
    samples = ListDataset([(x[i], int(y[i])) for i in range(23)])
    for batched, general in zip(DataLoader(ds, batch_size=5), DataLoader(samples, batch_size=5),
                                strict=True):
        np.testing.assert_array_equal(batched[0].data, general[0].data)
        np.testing.assert_array_equal(batched[1].data, general[1].data)


def test_fast_path_gathers_once_per_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    ds = TensorDataset(pyrt.arange(100))
    calls: list[Any] = []
    original = TensorDataset.__getitem__

    def counting(self: TensorDataset, index: Any) -> Any:
        calls.append(index)
        return original(self, index)

    monkeypatch.setattr(TensorDataset, "__getitem__", counting)
    # (monkeypatching replaced __getitem__, so re-point the loader's check at it)
    loader = DataLoader(ds, batch_size=25)
    loader._gather_batches = True
    assert len(list(loader)) == 4 and len(calls) == 4


def test_subclass_overriding_getitem_takes_per_sample_path() -> None:
    class Doubled(TensorDataset):
        def __getitem__(self, index: int) -> Any:
            (x,) = super().__getitem__(index)
            return (x * 2,)

    assert _labels(DataLoader(Doubled(pyrt.arange(4)), batch_size=4)) == [[0, 2, 4, 6]]


def test_custom_collate_fn_gets_list_of_samples() -> None:
    loader = DataLoader(TensorDataset(pyrt.arange(5)), batch_size=2,
                        collate_fn=lambda samples: len(samples))
    assert list(loader) == [2, 2, 1]


def test_custom_sampler_and_batch_sampler() -> None:
    ds = TensorDataset(pyrt.arange(6))
    assert _labels(DataLoader(ds, batch_size=2, sampler=[5, 4, 3, 2, 1, 0])) == [[5, 4], [3, 2],
                                                                                [1, 0]]
    assert _labels(DataLoader(ds, batch_sampler=[[0, 5], [2]])) == [[0, 5], [2]]


def test_batch_size_none_yields_samples_as_tensors() -> None:
    loader = DataLoader(ListDataset([np.ones(2), np.zeros(2)]), batch_size=None)
    items = list(loader)
    assert len(loader) == 2 and all(isinstance(t, pyrt.Tensor) for t in items)


def test_mutually_exclusive_options() -> None:
    ds = TensorDataset(pyrt.arange(4))
    with pytest.raises(ValueError, match="sampler option is mutually exclusive with shuffle"):
        DataLoader(ds, sampler=[0, 1], shuffle=True)
    with pytest.raises(ValueError, match="batch_sampler option is mutually exclusive"):
        DataLoader(ds, batch_size=2, batch_sampler=[[0]])
    with pytest.raises(ValueError, match="drop_last"):
        DataLoader(ds, batch_size=None, drop_last=True)


def test_dataset_without_getitem() -> None:
    with pytest.raises(NotImplementedError, match="__getitem__"):
        Dataset()[0]


# --- default_collate ---------------------------------------------------------------

def test_collate_numbers_follow_pytorch_dtypes() -> None:
    assert default_collate([1, 2]).dtype == np.int64
    assert default_collate([1.0, 2.5]).dtype == np.float64
    assert default_collate([True, False]).dtype == np.bool_
    assert default_collate([np.float32(1), np.float32(2)]).dtype == np.float32


def test_collate_arrays_and_tensors_stack_keep_dtype() -> None:
    out = default_collate([np.zeros((2, 3), np.uint8), np.ones((2, 3), np.uint8)])
    assert out.shape == (2, 2, 3) and out.dtype == np.uint8
    out = default_collate([pyrt.ones(3), pyrt.zeros(3)])
    assert out.shape == (2, 3) and out.dtype == np.float32
    with pytest.raises(RuntimeError, match="equal size"):
        default_collate([pyrt.ones(3), pyrt.ones(4)])


def test_collate_nested_structures() -> None:
    pair = default_collate([(np.zeros(2), 1), (np.ones(2), 0)])
    assert isinstance(pair, list) and pair[0].shape == (2, 2) and pair[1].tolist() == [1, 0]
    d = default_collate([{"x": 1.0, "name": "a"}, {"x": 2.0, "name": "b"}])
    assert d["x"].tolist() == [1.0, 2.0] and d["name"] == ["a", "b"]
    Point = namedtuple("Point", "x y")
    p = default_collate([Point(1, 2.0), Point(3, 4.0)])
    assert isinstance(p, Point) and p.x.tolist() == [1, 3]


def test_collate_errors() -> None:
    with pytest.raises(RuntimeError, match="equal size"):
        default_collate([[1, 2], [1]])
    with pytest.raises(TypeError, match="found object"):
        default_collate([object()])
    with pytest.raises(TypeError, match="dtype"):
        default_collate([np.array(["a"]), np.array(["b"])])
    with pytest.raises(ValueError, match="empty"):
        default_collate([])


# --- the bundled digits -------------------------------------------------------------

def test_digits_all_shapes_dtypes_and_values() -> None:
    x, y = load_digits("all")
    assert x.shape == (1797, 64) and x.dtype == np.float32
    assert y.shape == (1797,) and y.dtype == np.int64
    assert x.min() == 0.0 and x.max() == 1.0
    assert np.bincount(y).tolist() == [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]


def test_digits_raw_images() -> None:
    images, _ = load_digits("all", normalize=False, flatten=False)
    assert images.shape == (1797, 8, 8) and images.dtype == np.uint8 and images.max() == 16
    # sklearn's first digit is a 0: a ring of ink around an empty centre.
    assert images[0, 3, 4] == 0 and images[0, 1, 3] > 8


def test_digits_split_is_stratified_disjoint_and_complete() -> None:
    x_all, y_all = load_digits("all", normalize=False)
    _, y_tr = load_digits("train", normalize=False)
    x_te, y_te = load_digits("test", normalize=False)
    assert len(y_tr) + len(y_te) == 1797 and len(y_te) == 359
    counts = np.bincount(y_all)
    np.testing.assert_array_equal(np.bincount(y_te), np.round(counts * 0.2).astype(int))
    rows = {r.tobytes() for r in x_te}
    # Disjoint by index; (a few digits are pixel-identical, so compare index sets via the
    # split helper rather than pixel content.)
    from pyrt.datasets.digits import _split_indices

    train_idx, test_idx = _split_indices(y_all, 0.2, 0)
    assert not set(train_idx) & set(test_idx) and len(rows) > 300
    np.testing.assert_array_equal(x_all[test_idx], x_te)


def test_digits_split_deterministic_and_seeded() -> None:
    a, b = load_digits("test", seed=0)[1], load_digits("test", seed=0)[1]
    np.testing.assert_array_equal(a, b)
    x0, x1 = load_digits("test", seed=0)[0], load_digits("test", seed=1)[0]
    assert not np.array_equal(x0, x1)
    counts = np.bincount(load_digits("all")[1])
    assert len(load_digits("test", test_fraction=0.5)[1]) == np.round(counts * 0.5).sum()


def test_digits_returns_copies() -> None:
    x, y = load_digits("all", normalize=False)
    x[...] = 99
    y[...] = 99
    assert load_digits("all", normalize=False)[0].max() == 16


def test_digits_bad_arguments() -> None:
    with pytest.raises(ValueError, match="split must be one of"):
        load_digits("validation")
    with pytest.raises(ValueError, match="test_fraction"):
        load_digits("train", test_fraction=1.0)


def test_digits_dataset_feeds_the_fast_loader() -> None:
    ds = DigitsDataset("test")
    assert isinstance(ds, TensorDataset) and len(ds) == 359
    loader = DataLoader(ds, batch_size=100)
    assert loader._gather_batches
    x, y = next(iter(loader))
    assert x.shape == (100, 64) and x.dtype == np.float32 and y.dtype == np.int64


# --- DistributedSampler ---------------------------------------------------------------

@pytest.mark.parametrize("n", [0, 1, 5, 12, 13])
@pytest.mark.parametrize("replicas", [1, 2, 4])
@pytest.mark.parametrize("shuffle", [False, True])
def test_distributed_sampler_covers_the_dataset_once(n, replicas, shuffle) -> None:
    from pyrt.utils.data import DistributedSampler

    shards = [list(DistributedSampler(range(n), replicas, r, shuffle=shuffle, seed=3))
              for r in range(replicas)]
    sizes = {len(s) for s in shards}
    assert sizes == {-(-n // replicas)}  # equal shards, padded up
    flat = [i for s in shards for i in s]
    assert set(flat) == set(range(n))
    assert len(flat) - n == (-n) % replicas  # only the padding repeats


@pytest.mark.parametrize("n", [5, 12, 13])
def test_distributed_sampler_drop_last_gives_disjoint_equal_shards(n) -> None:
    from pyrt.utils.data import DistributedSampler

    shards = [list(DistributedSampler(range(n), 4, r, drop_last=True)) for r in range(4)]
    flat = [i for s in shards for i in s]
    assert len({len(s) for s in shards}) == 1 and len(flat) == len(set(flat)) == n // 4 * 4


def test_distributed_sampler_epochs_reshuffle_identically_on_every_rank() -> None:
    from pyrt.utils.data import DistributedSampler

    samplers = [DistributedSampler(range(100), 2, r, seed=7) for r in range(2)]
    first = [list(s) for s in samplers]
    for s in samplers:
        s.set_epoch(1)
    second = [list(s) for s in samplers]
    assert first != second
    assert sorted(first[0] + first[1]) == sorted(second[0] + second[1]) == list(range(100))
    again = DistributedSampler(range(100), 2, 0, seed=7)
    again.set_epoch(1)
    assert list(again) == second[0]


def test_distributed_sampler_rejects_bad_ranks() -> None:
    from pyrt.utils.data import DistributedSampler

    with pytest.raises(ValueError, match=r"invalid rank 2 for num_replicas 2"):
        DistributedSampler(range(4), num_replicas=2, rank=2)


# --- sampler state: resuming an epoch where it stopped --------------------------------

def _resume_after(sampler_factory: Any, consumed_batches: int, batch_size: int = 3) -> tuple[list, list]:
    """The epoch's batches uninterrupted, and: first part + the rest after a state round trip."""
    pyrt.manual_seed(5)
    whole = list(BatchSampler(sampler_factory(), batch_size, drop_last=False))
    pyrt.manual_seed(5)
    sampler = sampler_factory()
    batches = iter(BatchSampler(sampler, batch_size, drop_last=False))
    first = [next(batches) for _ in range(consumed_batches)]
    state, rng = sampler.state_dict(), pyrt.get_rng_state()
    pyrt.manual_seed(99)  # a new process...
    fresh = sampler_factory()
    fresh.load_state_dict(state)
    pyrt.set_rng_state(rng)  # ...restores both, as load_checkpoint does
    return whole, first + list(BatchSampler(fresh, batch_size, drop_last=False))


@pytest.mark.parametrize("factory", [
    lambda: SequentialSampler(range(11)),
    lambda: RandomSampler(range(11)),
    lambda: RandomSampler(range(11), generator=np.random.default_rng(3)),
    lambda: RandomSampler(range(5), replacement=True, num_samples=11),
    lambda: DistributedSampler(range(11), num_replicas=2, rank=1, seed=4),
    lambda: DistributedSampler(range(11), num_replicas=3, rank=0, shuffle=False),
])
@pytest.mark.parametrize("consumed_batches", [0, 1, 2])
def test_sampler_state_resumes_the_epoch_where_it_stopped(factory: Any, consumed_batches: int) -> None:
    whole, resumed = _resume_after(factory, consumed_batches)
    assert resumed == whole


def test_sampler_state_counts_only_what_was_handed_out() -> None:
    sampler = DistributedSampler(range(10), num_replicas=2, rank=0, seed=1)
    iterator = iter(sampler)
    next(iterator), next(iterator)
    assert sampler.state_dict()["consumed"] == 2
    loader = DataLoader(TensorDataset(pyrt.arange(10)), batch_size=4, shuffle=True)
    next(iter(loader))
    assert loader.sampler.state_dict()["consumed"] == 4


def test_distributed_sampler_state_belongs_to_its_epoch() -> None:
    sampler = DistributedSampler(range(12), num_replicas=2, rank=0, seed=1)
    sampler.set_epoch(3)
    first = list(sampler)
    sampler.load_state_dict({**sampler.state_dict(), "consumed": 2})
    sampler.set_epoch(3)  # the loop's usual call keeps the position...
    assert list(sampler) == first[2:]
    sampler.load_state_dict({**sampler.state_dict(), "consumed": 2})
    sampler.set_epoch(4)  # ...a different epoch starts from its beginning
    assert len(list(sampler)) == 6
    with pytest.raises(ValueError, match="seed 1 over 2 replicas; this sampler has seed 1 over 3"):
        DistributedSampler(range(12), num_replicas=3, rank=0, seed=1).load_state_dict(sampler.state_dict())
    with pytest.raises(ValueError, match="consumed must be a non-negative int"):
        SequentialSampler(range(3)).load_state_dict({"consumed": -1})


def test_rng_state_round_trip_and_errors() -> None:
    pyrt.manual_seed(0)
    state = pyrt.get_rng_state()
    assert state.dtype == np.uint8 and state.ndim == 1
    drawn = pyrt.randn(5).tolist()
    pyrt.manual_seed(123)
    pyrt.set_rng_state(state)
    assert pyrt.randn(5).tolist() == drawn
    with pytest.raises(TypeError, match="uint8"):
        pyrt.set_rng_state(np.zeros(3, np.float32))
    with pytest.raises(ValueError, match="not a state from get_rng_state"):
        pyrt.set_rng_state(np.frombuffer(b"\xff\xfe", np.uint8))
    with pytest.raises(ValueError, match="not a PCG64 generator's"):
        pyrt.set_rng_state(np.frombuffer(b'{"bit_generator": "MT19937"}', np.uint8))
