# Run: python examples/train_mlp.py [--epochs 30] [--batch-size 32] [--lr 1e-3] [--seed 0]
"""Train a small MLP on the bundled handwritten digits (8x8 images, 10 classes).

The PyTorch training loop, with ``torch`` replaced by ``pyrt``: a DataLoader
shuffles the training split, Adam fits a 64-128-64-10 ReLU network under
cross-entropy, and each epoch reports the training loss and the accuracy on
the held-out test split (a stratified 20% of each class).
"""

from __future__ import annotations

import argparse
import time

import pyrt
from pyrt import nn, optim
from pyrt.datasets import DigitsDataset
from pyrt.utils.data import DataLoader


def build_model() -> nn.Module:
    return nn.Sequential(
        nn.Linear(64, 128), nn.ReLU(),
        nn.Linear(128, 64), nn.ReLU(),
        nn.Linear(64, 10),
    )


def evaluate(model: nn.Module, loader: DataLoader) -> float:
    model.eval()
    correct = total = 0
    with pyrt.no_grad():
        for x, y in loader:
            correct += int((model(x).argmax(dim=1) == y).data.sum())
            total += len(y)
    model.train()
    return correct / total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    pyrt.manual_seed(args.seed)  # fixes the initial weights and the shuffling order
    train_loader = DataLoader(DigitsDataset("train"), batch_size=args.batch_size, shuffle=True)
    test_loader = DataLoader(DigitsDataset("test"), batch_size=256)
    model = build_model()
    loss_fn = nn.CrossEntropyLoss()
    optimizer = optim.Adam(model.parameters(), lr=args.lr)
    print(model)

    start = time.perf_counter()
    for epoch in range(1, args.epochs + 1):
        total_loss, batches = 0.0, 0
        for x, y in train_loader:
            optimizer.zero_grad()
            loss = loss_fn(model(x), y)
            loss.backward()
            optimizer.step()
            total_loss += loss.item()
            batches += 1
        accuracy = evaluate(model, test_loader)
        print(f"epoch {epoch:3d}  loss {total_loss / batches:.4f}  test accuracy {accuracy:.4f}")
    print(f"trained {args.epochs} epochs in {time.perf_counter() - start:.2f}s")
    print(f"test accuracy: {evaluate(model, test_loader):.4f}")


if __name__ == "__main__":
    main()
