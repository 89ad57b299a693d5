# Run: python examples/train_mlp.py [--epochs 40] [--batch-size 32] [--lr 1e-3] [--seed 0] [--device cuda]
"""Train an MLP on the bundled handwritten digits (8x8 images, 10 classes).

A 64-256-128-10 ReLU network with dropout, fitted by the PyTorch-style loop
in ``digits_training.py`` (a shuffling DataLoader, Adam under cross-entropy, a
cosine learning rate), which reports the training loss and the accuracy on
the held-out test split (a stratified 20% of each class) every epoch. Under
``mpiexec`` the same script trains data-parallel; ``ddp_mlp.py`` spells that
out step by step.
"""

from __future__ import annotations

from digits_training import fit, training_flags

import pyrt
from pyrt import nn
from pyrt.datasets import load_digits
from pyrt.utils.data import TensorDataset


def build_model() -> nn.Module:
    return nn.Sequential(
        nn.Linear(64, 256), nn.ReLU(), nn.Dropout(0.2),
        nn.Linear(256, 128), nn.ReLU(), nn.Dropout(0.2),
        nn.Linear(128, 10),
    )


def digits_datasets() -> tuple[TensorDataset, TensorDataset]:
    """The train and test splits, standardised."""
    x_train, y_train = load_digits("train")
    x_test, y_test = load_digits("test")
    # Standardise each pixel with statistics of the training split only; the
    # +0.01 keeps border pixels that are almost always blank from blowing up.
    mean, std = x_train.mean(axis=0), x_train.std(axis=0) + 0.01
    train = TensorDataset(pyrt.tensor((x_train - mean) / std), pyrt.tensor(y_train))
    test = TensorDataset(pyrt.tensor((x_test - mean) / std), pyrt.tensor(y_test))
    return train, test


def main() -> None:
    args = training_flags(__doc__.splitlines()[0], epochs=40, lr=1e-3)
    pyrt.manual_seed(args.seed)  # fixes initial weights, shuffling order and dropout masks
    train, test = digits_datasets()
    fit(build_model(), train, test, args)


if __name__ == "__main__":
    main()
