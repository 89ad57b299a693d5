"""The handwritten digits bundled with pyrt: 1,797 real 8x8 images of 10 classes.

The file ``digits.npz`` next to this module holds ``images`` (uint8, (1797, 8, 8),
pixel counts 0..16) and ``labels`` (int64, (1797,)). It is the UCI "Optical
Recognition of Handwritten Digits" test set as shipped by scikit-learn
(BSD-3-Clause; the UCI original is CC BY 4.0), produced by ``make_digits.py``;
see ``DIGITS_LICENSE.txt`` for provenance and citation.
"""

from __future__ import annotations

import functools
import os

import numpy as np

from pyrt.data import TensorDataset
from pyrt.tensor import Tensor

__all__ = ["DigitsDataset", "load_digits"]

DIGITS_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "digits.npz")
NUM_CLASSES = 10
_SPLITS = ("train", "test", "all")


@functools.lru_cache(maxsize=1)
def _raw() -> tuple[np.ndarray, np.ndarray]:
    with np.load(DIGITS_PATH, allow_pickle=False) as archive:
        images, labels = archive["images"], archive["labels"]
    images.setflags(write=False)  # cached and shared: callers get copies
    labels.setflags(write=False)
    return images, labels


def _split_indices(labels: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray,
                                                                                  np.ndarray]:
    # Stratified: each class gives round(n_class * test_fraction) samples to the
    # test split, so both splits keep the class balance whatever the seed.
    rng = np.random.default_rng(seed)
    test = []
    for cls in range(NUM_CLASSES):
        members = np.flatnonzero(labels == cls)
        test.append(rng.permutation(members)[:round(len(members) * test_fraction)])
    test_indices = np.sort(np.concatenate(test))
    train_mask = np.ones(len(labels), dtype=bool)
    train_mask[test_indices] = False
    return np.flatnonzero(train_mask), test_indices


def load_digits(split: str = "train", test_fraction: float = 0.2, seed: int = 0,
                normalize: bool = True, flatten: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Images and labels of the bundled digits as numpy arrays.

    ``split`` is ``"train"``, ``"test"`` (a stratified ``test_fraction`` of each
    class, chosen by ``seed``; the two never overlap) or ``"all"``. Images are
    float32 in [0, 1] when ``normalize`` (pixel / 16), else the raw uint8 counts
    0..16; shape (N, 64) when ``flatten``, else (N, 8, 8). Labels are int64 0..9.

    >>> x, y = load_digits("test")
    >>> x.shape, x.dtype, y.dtype
    ((359, 64), dtype('float32'), dtype('int64'))
    """
    if split not in _SPLITS:
        raise ValueError(f"load_digits: split must be one of {_SPLITS}, got {split!r}")
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"load_digits: test_fraction must be in (0, 1), got {test_fraction}")
    images, labels = _raw()
    if split == "all":
        indices = np.arange(len(labels))
    else:
        train, test = _split_indices(labels, test_fraction, seed)
        indices = train if split == "train" else test
    x = images[indices]  # fancy indexing copies, so the cache stays untouched
    if normalize:
        x = x.astype(np.float32) / np.float32(16.0)
    if flatten:
        x = x.reshape(len(indices), -1)
    return x, labels[indices].copy()


class DigitsDataset(TensorDataset):
    """The bundled digits as a ``TensorDataset`` of (image, label) tensors.

    Arguments are those of ``load_digits``. Being a ``TensorDataset``, it takes
    the ``DataLoader``'s one-gather-per-batch path.

    >>> ds = DigitsDataset("train")
    >>> len(ds), ds[0][0].shape, ds[0][1].dtype
    (1438, (64,), dtype('int64'))
    """

    def __init__(self, split: str = "train", test_fraction: float = 0.2, seed: int = 0,
                 normalize: bool = True, flatten: bool = True) -> None:
        x, y = load_digits(split, test_fraction, seed, normalize, flatten)
        super().__init__(Tensor(x), Tensor(y))
