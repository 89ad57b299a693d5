"""pyrt's random number generator: one seeded stream for init, dropout and shuffling.

``pyrt.manual_seed(s)`` makes every random choice in pyrt repeatable, as
``torch.manual_seed`` does. The generator is the one piece of global state
besides grad mode and the default process group.
"""

from __future__ import annotations

import json
from types import ModuleType
from typing import Any

import numpy as np

__all__ = ["default_generator", "get_rng_state", "manual_seed", "normal", "set_rng_state", "uniform"]

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


def get_rng_state() -> Any:
    """The generator's state as a ``uint8`` tensor, for ``set_rng_state`` (as in PyTorch).

    The bytes are the JSON of numpy's bit-generator state, so they survive
    ``pyrt.save`` and never need unpickling.

    >>> import pyrt
    >>> state = pyrt.get_rng_state()
    >>> a = pyrt.rand(3)
    >>> pyrt.set_rng_state(state)
    >>> pyrt.rand(3).tolist() == a.tolist()
    True
    """
    from pyrt.tensor import Tensor  # pyrt.tensor imports this module

    raw = json.dumps(_generator.bit_generator.state).encode("utf-8")
    return Tensor(np.frombuffer(raw, dtype=np.uint8).copy())


def set_rng_state(new_state: Any) -> None:
    """Restore a state returned by ``get_rng_state``; later draws repeat those that followed it.

    >>> import pyrt
    >>> pyrt.set_rng_state(pyrt.get_rng_state())
    """
    array = np.asarray(getattr(new_state, "data", new_state))
    if array.dtype != np.uint8 or array.ndim != 1:
        raise TypeError(f"set_rng_state: expected the 1-d uint8 tensor get_rng_state returns, got "
                        f"{array.dtype} {array.shape}")
    try:
        state = json.loads(array.tobytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"set_rng_state: not a state from get_rng_state ({exc})") from None
    bit_generator = _generator.bit_generator
    name = type(bit_generator).__name__
    if not isinstance(state, dict) or state.get("bit_generator") != name:
        raise ValueError(f"set_rng_state: the state is not a {name} generator's "
                         f"(got {str(state)[:80]})")
    try:
        bit_generator.state = state
    except (TypeError, ValueError, KeyError) as exc:
        raise ValueError(f"set_rng_state: malformed {name} state ({exc})") from None


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
