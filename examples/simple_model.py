# Run: python examples/simple_model.py
"""The smallest complete training loop: fit ``Linear(10, 1)`` to noisy linear data.

Reads like the PyTorch original: build a model, a loss and an optimizer, then
repeat zero_grad / forward / backward / step and watch the loss fall.
"""

from __future__ import annotations

import pyrt
from pyrt import nn, optim


def main() -> None:
    pyrt.manual_seed(0)
    x = pyrt.randn(64, 10)
    true_weight = pyrt.randn(10, 1)
    y = x @ true_weight + 0.1 * pyrt.randn(64, 1)  # a linear target plus noise

    model = nn.Linear(10, 1)
    loss_fn = nn.MSELoss()
    optimizer = optim.SGD(model.parameters(), lr=0.05)

    for step in range(100):
        optimizer.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        optimizer.step()
        if step % 10 == 0 or step == 99:
            print(f"step {step:3d}  loss {loss.item():.4f}")


if __name__ == "__main__":
    main()
