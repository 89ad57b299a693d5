"""``pyrt.optim``: optimizers with PyTorch's names, hyperparameters and update equations.

>>> import pyrt
>>> from pyrt import nn, optim
>>> model = nn.Linear(4, 1)
>>> opt = optim.Adam(model.parameters(), lr=1e-3)
>>> model(pyrt.ones(2, 4)).sum().backward()
>>> opt.step()
>>> opt.zero_grad()
"""

from pyrt.optim.adam import Adam, AdamW
from pyrt.optim.optimizer import Optimizer
from pyrt.optim.sgd import SGD

__all__ = ["SGD", "Adam", "AdamW", "Optimizer"]
