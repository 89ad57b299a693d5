"""A few steps of classifier training on random data, on any device: what the GPU tests compare
with the same steps on the CPU."""

from __future__ import annotations

import numpy as np

import pyrt
from pyrt import nn


def train_steps(model: nn.Module, optimizer: pyrt.optim.Optimizer, device: str, steps: int, batch: int,
                features: int, classes: int, seed: int) -> tuple[list[float], list[np.ndarray]]:
    """Train ``model`` (already on ``device``) for ``steps`` cross-entropy steps on random
    (batch, features) inputs and labels below ``classes``, drawn from ``seed``; returns the losses and
    the final parameters (on the host).

    >>> model = nn.Linear(3, 2)
    >>> optimizer = pyrt.optim.SGD(model.parameters(), lr=0.1)
    >>> losses, params = train_steps(model, optimizer, "cpu", steps=2, batch=4, features=3, classes=2, seed=0)
    >>> len(losses), [p.shape for p in params]
    (2, [(2, 3), (2,)])
    """
    rng = np.random.default_rng(seed)
    losses = []
    for _ in range(steps):
        x = pyrt.tensor(rng.standard_normal((batch, features)).astype(np.float32), device=device)
        y = pyrt.tensor(rng.integers(0, classes, batch), device=device)
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses, [p.detach().cpu().numpy() for p in model.parameters()]

