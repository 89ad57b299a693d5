"""Parameter initialisers with PyTorch's names and formulas (``torch.nn.init``).

Each fills a tensor's array in place from pyrt's generator, so
``pyrt.manual_seed`` makes a freshly built model repeatable. They write
``tensor.data`` directly: initialisation is not part of any graph.
"""

from __future__ import annotations

import math

from pyrt import random
from pyrt.autograd import no_grad, runs_on_input_device
from pyrt.backend import get_array_module
from pyrt.tensor import Tensor

__all__ = [
    "calculate_gain", "constant_", "kaiming_normal_", "kaiming_uniform_", "normal_", "ones_",
    "uniform_", "xavier_normal_", "xavier_uniform_", "zeros_",
]


def calculate_gain(nonlinearity: str, param: float | None = None) -> float:
    """The recommended scale for weights feeding ``nonlinearity``.

    >>> round(calculate_gain("relu"), 4)
    1.4142
    """
    linear = ("linear", "conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d",
              "conv_transpose3d", "sigmoid")
    if nonlinearity in linear:
        return 1.0
    if nonlinearity == "tanh":
        return 5.0 / 3
    if nonlinearity == "relu":
        return math.sqrt(2.0)
    if nonlinearity == "leaky_relu":
        slope = 0.01 if param is None else param
        if isinstance(slope, bool) or not isinstance(slope, (int, float)):
            raise ValueError(f"negative_slope {slope} is not a valid number")
        return math.sqrt(2.0 / (1 + slope**2))
    if nonlinearity == "selu":
        return 3.0 / 4
    raise ValueError(f"Unsupported nonlinearity {nonlinearity}")


def _calculate_fan_in_and_fan_out(tensor: Tensor) -> tuple[int, int]:
    if tensor.ndim < 2:
        raise ValueError(
            f"Fan in and fan out can not be computed for tensor with fewer than 2 dimensions "
            f"(got shape {tensor.shape})"
        )
    # Conv weights are (out, in, *kernel): every kernel tap is one more input.
    receptive_field = math.prod(tensor.shape[2:])
    return tensor.shape[1] * receptive_field, tensor.shape[0] * receptive_field


@runs_on_input_device  # the tensor may be on another GPU than the current one
def _fill_uniform(tensor: Tensor, low: float, high: float) -> Tensor:
    with no_grad():
        xp = get_array_module(tensor.data)
        tensor.data[...] = random.uniform(tensor.shape, xp, low, high, dtype=tensor.dtype)
    return tensor


@runs_on_input_device
def _fill_normal(tensor: Tensor, mean: float, std: float) -> Tensor:
    with no_grad():
        xp = get_array_module(tensor.data)
        tensor.data[...] = random.normal(tensor.shape, xp, mean, std, dtype=tensor.dtype)
    return tensor


def uniform_(tensor: Tensor, a: float = 0.0, b: float = 1.0) -> Tensor:
    """Fill with samples from U(a, b).

    >>> import pyrt
    >>> bool((uniform_(pyrt.empty(100), -1, 1).data.__abs__() <= 1).all())
    True
    """
    return _fill_uniform(tensor, a, b)


def normal_(tensor: Tensor, mean: float = 0.0, std: float = 1.0) -> Tensor:
    """Fill with samples from N(mean, std**2).

    >>> import pyrt
    >>> normal_(pyrt.empty(3), std=0.02).shape
    (3,)
    """
    return _fill_normal(tensor, mean, std)


@runs_on_input_device
def constant_(tensor: Tensor, val: float) -> Tensor:
    """Fill with ``val``.

    >>> import pyrt
    >>> constant_(pyrt.empty(2), 0.5).tolist()
    [0.5, 0.5]
    """
    with no_grad():
        tensor.data[...] = val
    return tensor


def zeros_(tensor: Tensor) -> Tensor:
    """Fill with zeros.

    >>> import pyrt
    >>> zeros_(pyrt.ones(2)).tolist()
    [0.0, 0.0]
    """
    return constant_(tensor, 0.0)


def ones_(tensor: Tensor) -> Tensor:
    """Fill with ones.

    >>> import pyrt
    >>> ones_(pyrt.zeros(2)).tolist()
    [1.0, 1.0]
    """
    return constant_(tensor, 1.0)


def xavier_uniform_(tensor: Tensor, gain: float = 1.0) -> Tensor:
    """Glorot uniform: U(-b, b) with ``b = gain * sqrt(6 / (fan_in + fan_out))``.

    >>> import pyrt
    >>> w = xavier_uniform_(pyrt.empty(20, 30))
    >>> bool((abs(w.data) <= (6 / 50) ** 0.5).all())
    True
    """
    fan_in, fan_out = _calculate_fan_in_and_fan_out(tensor)
    bound = gain * math.sqrt(6.0 / float(fan_in + fan_out))
    return _fill_uniform(tensor, -bound, bound)


def xavier_normal_(tensor: Tensor, gain: float = 1.0) -> Tensor:
    """Glorot normal: N(0, std**2) with ``std = gain * sqrt(2 / (fan_in + fan_out))``.

    >>> import pyrt
    >>> xavier_normal_(pyrt.empty(4, 5)).shape
    (4, 5)
    """
    fan_in, fan_out = _calculate_fan_in_and_fan_out(tensor)
    return _fill_normal(tensor, 0.0, gain * math.sqrt(2.0 / float(fan_in + fan_out)))


def _kaiming_std(tensor: Tensor, a: float, mode: str, nonlinearity: str) -> float:
    if mode not in ("fan_in", "fan_out"):
        raise ValueError(f"Mode {mode} not supported, please use one of fan_in, fan_out")
    fan_in, fan_out = _calculate_fan_in_and_fan_out(tensor)
    fan = fan_in if mode == "fan_in" else fan_out
    if fan == 0:
        raise ValueError(f"kaiming init: {mode} is 0 for a tensor of shape {tensor.shape}")
    return calculate_gain(nonlinearity, a) / math.sqrt(fan)


def kaiming_uniform_(tensor: Tensor, a: float = 0.0, mode: str = "fan_in",
                     nonlinearity: str = "leaky_relu") -> Tensor:
    """He uniform: U(-b, b) with ``b = gain(nonlinearity, a) * sqrt(3 / fan)``.

    ``nn.Linear`` uses ``a=sqrt(5)``, which makes ``b = 1 / sqrt(fan_in)``.

    >>> import math, pyrt
    >>> w = kaiming_uniform_(pyrt.empty(10, 25), a=math.sqrt(5))
    >>> bool((abs(w.data) <= 1 / 5).all())
    True
    """
    if tensor.numel() == 0:
        return tensor  # nothing to fill; PyTorch treats this as a no-op too
    bound = math.sqrt(3.0) * _kaiming_std(tensor, a, mode, nonlinearity)
    return _fill_uniform(tensor, -bound, bound)


def kaiming_normal_(tensor: Tensor, a: float = 0.0, mode: str = "fan_in",
                    nonlinearity: str = "leaky_relu") -> Tensor:
    """He normal: N(0, std**2) with ``std = gain(nonlinearity, a) / sqrt(fan)``.

    >>> import pyrt
    >>> kaiming_normal_(pyrt.empty(3, 4), nonlinearity="relu").shape
    (3, 4)
    """
    if tensor.numel() == 0:
        return tensor
    return _fill_normal(tensor, 0.0, _kaiming_std(tensor, a, mode, nonlinearity))
