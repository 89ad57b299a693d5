"""``pyrt.nn.utils``: helpers over modules, as ``torch.nn.utils`` (``prune`` for now).

>>> from pyrt.nn.utils import prune
>>> prune.is_pruned(prune.identity(__import__("pyrt").nn.Linear(2, 2), "weight"))
True
"""

from pyrt.nn.utils import prune

__all__ = ["prune"]
