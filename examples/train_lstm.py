# Run: python examples/train_lstm.py [--epochs 12] [--batch-size 32] [--lr 1e-2] [--seed 0]
# Data-parallel: mpiexec -n 2 python examples/train_lstm.py  (or pass --ddp)
"""Classify the bundled handwritten digits with an LSTM that reads each image row by row.

Each 8x8 image is a sequence of 8 time steps of 8 pixels. One LSTM layer
(64 hidden units) reads the rows top to bottom, and a linear layer classifies
its last hidden state into the 10 digits. Adam with a cosine learning-rate
schedule fits the training split; each epoch reports the training loss and the
accuracy on the held-out test split (a stratified 20% of each class).

Under ``mpiexec`` (detected from the launcher's environment) the same script
trains data-parallel: the global batch is split over the ranks by a
DistributedSampler and DistributedDataParallel averages the gradients, so
the run sees the same batch statistics at any number of ranks.
"""

from __future__ import annotations

import numpy as np
from digits_training import fit, training_flags

import pyrt
from pyrt import nn
from pyrt.datasets import load_digits
from pyrt.utils.data import TensorDataset


class RowLSTM(nn.Module):
    """LSTM over image rows, then a linear classifier on the last hidden state."""

    def __init__(self, row_size: int = 8, hidden_size: int = 64, num_classes: int = 10) -> None:
        super().__init__()
        self.lstm = nn.LSTM(row_size, hidden_size, batch_first=True)
        self.classifier = nn.Linear(hidden_size, num_classes)

    def forward(self, images: pyrt.Tensor) -> pyrt.Tensor:
        _, (h_n, _) = self.lstm(images)  # images: (batch, 8 rows, 8 pixels)
        return self.classifier(h_n[-1])


def digits_sequences() -> tuple[TensorDataset, TensorDataset]:
    """Train and test splits as (N, 8, 8) row sequences, standardised per pixel."""
    x_train, y_train = load_digits("train", flatten=False)
    x_test, y_test = load_digits("test", flatten=False)
    # Statistics of the training split only; +0.01 keeps the almost always blank
    # border pixels from blowing up.
    mean, std = x_train.mean(axis=0), x_train.std(axis=0) + np.float32(0.01)
    train = TensorDataset(pyrt.tensor((x_train - mean) / std), pyrt.tensor(y_train))
    test = TensorDataset(pyrt.tensor((x_test - mean) / std), pyrt.tensor(y_test))
    return train, test


def main() -> None:
    args = training_flags(__doc__.splitlines()[0], epochs=12, lr=1e-2)
    pyrt.manual_seed(args.seed)  # initial weights and shuffling order
    train, test = digits_sequences()
    fit(RowLSTM(), train, test, args)


if __name__ == "__main__":
    main()
