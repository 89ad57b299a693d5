"""``pyrt.utils.data``: PyTorch's import path for datasets, samplers and ``DataLoader``.

The implementation lives in ``pyrt.data``; this module only re-exports it.

>>> import pyrt
>>> from pyrt.utils.data import DataLoader, TensorDataset
>>> len(DataLoader(TensorDataset(pyrt.zeros(10, 2)), batch_size=4))
3
"""

from pyrt.data import (
    BatchSampler,
    DataLoader,
    Dataset,
    DistributedSampler,
    RandomSampler,
    Sampler,
    SequentialSampler,
    Subset,
    TensorDataset,
    default_collate,
)

__all__ = [
    "BatchSampler", "DataLoader", "Dataset", "DistributedSampler", "RandomSampler", "Sampler",
    "SequentialSampler", "Subset", "TensorDataset", "default_collate",
]
