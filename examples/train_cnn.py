# Run: python examples/train_cnn.py [--epochs 15] [--batch-size 32] [--lr 2e-3] [--seed 0] [--device cuda]
#  or: mpiexec -n 2 python examples/train_cnn.py   (data-parallel; --ddp forces it)
"""Train a small CNN on the bundled handwritten digits (1x8x8 images, 10 classes).

Two conv blocks (3x3 convolution, batch norm, ReLU, 2x2 max pool) take the
8x8 image to 64 channels of 2x2, and one linear layer classifies them.
Adam with a cosine learning-rate schedule fits it under cross-entropy; each
epoch reports the training loss and the held-out test accuracy.

Launched by mpiexec on more than one rank (or with --ddp), the same loop runs
data-parallel: a DistributedSampler gives each rank its share of every global
batch and DistributedDataParallel averages the gradients (and hands every
rank rank 0's batch-norm statistics at each step), as in ddp_mlp.py.
"""

from __future__ import annotations

from digits_training import fit, training_flags

import pyrt
from pyrt import nn
from pyrt.datasets import load_digits
from pyrt.utils.data import TensorDataset


def build_model() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),   # 32x4x4
        nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2),  # 64x2x2
        nn.Flatten(), nn.Dropout(0.2), nn.Linear(64 * 2 * 2, 10),
    )


def digits_datasets() -> tuple[TensorDataset, TensorDataset]:
    """Train and test images as (N, 1, 8, 8), standardised with the training split's statistics."""
    x_train, y_train = load_digits("train", flatten=False)
    x_test, y_test = load_digits("test", flatten=False)
    # One mean and std for all pixels: a conv shares its weights across
    # positions, so per-pixel scaling (as the MLP uses) would distort the edges.
    mean, std = x_train.mean(), x_train.std()
    train = TensorDataset(pyrt.tensor((x_train[:, None] - mean) / std), pyrt.tensor(y_train))
    test = TensorDataset(pyrt.tensor((x_test[:, None] - mean) / std), pyrt.tensor(y_test))
    return train, test


def main() -> None:
    args = training_flags(__doc__.splitlines()[0], epochs=15, lr=2e-3)
    pyrt.manual_seed(args.seed)  # fixes initial weights, shuffling order and dropout masks
    train, test = digits_datasets()
    fit(build_model(), train, test, args)


if __name__ == "__main__":
    main()
