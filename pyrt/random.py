"""pyrt's random number generator: one seeded stream for init, dropout and shuffling.

``pyrt.manual_seed(s)`` makes every random choice in pyrt repeatable, as
``torch.manual_seed`` does. The generator is the one piece of global state
besides grad mode and the default process group.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import numpy as np

__all__ = ["default_generator", "manual_seed", "normal", "uniform"]

_generator = np.random.default_rng(0)


def manual_seed(seed: int) -> np.random.Generator:
    """Reseed pyrt's generator and return it.

    >>> a = (manual_seed(1), uniform((2,)))[1]
    >>> b = (manual_seed(1), uniform((2,)))[1]
    >>> bool((a == b).all())
    True
    """
    global _generator
    _generator = np.random.default_rng(seed)
    return _generator


def default_generator() -> np.random.Generator:
    """The generator every pyrt random draw comes from.

    >>> isinstance(default_generator(), np.random.Generator)
    True
    """
    return _generator


def uniform(shape: tuple[int, ...], xp: ModuleType = np, low: float = 0.0,
            high: float = 1.0, dtype: Any = np.float32) -> Any:
    """Uniform samples in ``[low, high)``, drawn on the CPU and moved to ``xp``.

    Drawing on the CPU keeps one stream for every device, so a seed gives the
    same model on a GPU as on the CPU.

    >>> uniform((2, 3)).shape
    (2, 3)
    """
    sample = _generator.uniform(low, high, size=shape).astype(dtype)
    return sample if xp is np else xp.asarray(sample)


def normal(shape: tuple[int, ...], xp: ModuleType = np, mean: float = 0.0,
           std: float = 1.0, dtype: Any = np.float32) -> Any:
    """Normal samples, drawn on the CPU and moved to ``xp``.

    >>> normal((4,)).dtype
    dtype('float32')
    """
    sample = _generator.normal(mean, std, size=shape).astype(dtype)
    return sample if xp is np else xp.asarray(sample)
