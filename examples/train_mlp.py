# Run: python examples/train_mlp.py [--epochs 40] [--batch-size 32] [--lr 1e-3] [--seed 0]
"""Train an MLP on the bundled handwritten digits (8x8 images, 10 classes).

The PyTorch training loop with ``torch`` replaced by ``pyrt``: a DataLoader
shuffles the training split, Adam fits a 64-256-128-10 ReLU network with
dropout under cross-entropy, the learning rate follows a cosine schedule, and
each epoch reports the training loss and the accuracy on the held-out test
split (a stratified 20% of each class, never seen in training).
"""

from __future__ import annotations

import argparse
import math
import time

import pyrt
from pyrt import nn, optim
from pyrt.datasets import load_digits
from pyrt.utils.data import DataLoader, TensorDataset


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


def cosine_lr(optimizer: optim.Optimizer, base_lr: float, epoch: int, epochs: int) -> None:
    """Cosine decay from ``base_lr`` to 0: large steps early, fine ones at the end."""
    for group in optimizer.param_groups:
        group["lr"] = base_lr * 0.5 * (1 + math.cos(math.pi * epoch / epochs))


def evaluate(model: nn.Module, loader: DataLoader) -> float:
    model.eval()  # dropout off
    correct = total = 0
    with pyrt.no_grad():
        for x, y in loader:
            correct += int((model(x).argmax(dim=1) == y).data.sum())
            total += len(y)
    model.train()
    return correct / total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    pyrt.manual_seed(args.seed)  # fixes initial weights, shuffling order and dropout masks
    train, test = digits_datasets()
    train_loader = DataLoader(train, batch_size=args.batch_size, shuffle=True)
    test_loader = DataLoader(test, batch_size=512)
    model = build_model()
    loss_fn = nn.CrossEntropyLoss()
    optimizer = optim.Adam(model.parameters(), lr=args.lr)
    print(model)

    start = time.perf_counter()
    for epoch in range(args.epochs):
        cosine_lr(optimizer, args.lr, epoch, args.epochs)
        total_loss, batches = 0.0, 0
        for x, y in train_loader:
            optimizer.zero_grad()
            loss = loss_fn(model(x), y)
            loss.backward()
            optimizer.step()
            total_loss += loss.item()
            batches += 1
        accuracy = evaluate(model, test_loader)
        print(f"epoch {epoch + 1:3d}  loss {total_loss / batches:.4f}  test accuracy {accuracy:.4f}")
    print(f"trained {args.epochs} epochs in {time.perf_counter() - start:.2f}s")
    print(f"test accuracy: {evaluate(model, test_loader):.4f}")


if __name__ == "__main__":
    main()
