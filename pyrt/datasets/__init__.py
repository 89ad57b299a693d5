"""Real datasets bundled inside the package (no download): ``load_digits``, ``DigitsDataset``.

>>> from pyrt.datasets import load_digits
>>> x, y = load_digits("all")
>>> x.shape, sorted(set(y.tolist())) == list(range(10))
((1797, 64), True)
"""

from pyrt.datasets.digits import DigitsDataset, load_digits

__all__ = ["DigitsDataset", "load_digits"]
