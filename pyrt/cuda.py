"""``pyrt.cuda``: whether a GPU is there, as ``torch.cuda`` answers it.

pyrt computes on a GPU through cupy arrays (and its own ``pyrt._cuda``
kernels), so a GPU counts when either reports one. Without a GPU (or without
cupy and ``pyrt._cuda``) ``is_available()`` is False and ``device_count()`` is
0, and asking for a CUDA device raises an error that says so instead of
failing later inside an array library.

>>> is_available() == (device_count() > 0)
True
"""

from __future__ import annotations

from typing import Any

from pyrt import kernels

__all__ = ["current_device", "device_count", "is_available", "is_device", "parse_device", "set_device",
           "sort_to_args"]


def _cupy_device_count() -> int:
    try:
        import cupy
    except ImportError:
        return 0
    try:
        return int(cupy.cuda.runtime.getDeviceCount())
    except Exception:  # no driver, or a driver too old for the runtime: no usable device
        return 0


def device_count() -> int:
    """Number of visible CUDA devices (0 without a GPU, a driver, or cupy and ``pyrt._cuda``).

    >>> device_count() >= 0
    True
    """
    counted = _cupy_device_count()
    if counted == 0 and kernels.cuda_available():
        counted = int(kernels._cuda().device_count())
    return counted


def is_available() -> bool:
    """True when at least one CUDA device is visible.

    >>> isinstance(is_available(), bool)
    True
    """
    return device_count() > 0


def _absent(request: Any, index: int) -> RuntimeError:
    count = device_count()
    return RuntimeError(
        f"CUDA device {index} was requested ({request!r}) but this machine has "
        f"{count} visible CUDA device{'s' if count != 1 else ''}"
        + (" (no GPU, no driver, or neither cupy nor pyrt._cuda installed); keep the model on the "
           "CPU (drop the .to(...) call, or use .to('cpu')), or run where a GPU is visible"
           if count == 0 else f"; valid indices are 0..{count - 1}"))


def is_device(value: Any) -> bool:
    """Whether ``.to(value)`` names a device: an int, a string that is not a dtype name
    (``"cpu"``, ``"cuda:1"``; ``parse_device`` checks it), or a device object (``torch.device``).

    >>> is_device(0), is_device("cuda:1"), is_device("float32"), is_device(True)
    (True, True, False, False)
    """
    import numpy as np

    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return True
    if isinstance(value, str):
        try:
            np.dtype(value)
        except TypeError:
            return True
        return False
    return hasattr(value, "type") and hasattr(value, "index")


def sort_to_args(args: tuple[Any, ...], device: Any = None, dtype: Any = None) -> tuple[Any, Any]:
    """``.to(*args, device=, dtype=)``'s positional arguments sorted into (device, dtype), as
    PyTorch reads them: a device, a dtype, or a tensor standing for both.

    >>> sort_to_args(("cpu", "float64"))
    ('cpu', 'float64')
    """
    from pyrt.tensor import Tensor  # pyrt.tensor imports this module lazily too

    for value in args:
        if isinstance(value, Tensor):  # to(other): its device and dtype
            device, dtype = value.device, value.dtype
        elif is_device(value):
            device = value
        else:
            dtype = value
    return device, dtype


def parse_device(device: Any) -> tuple[str, int | None]:
    """``("cpu", None)`` or ``("cuda", index)`` for an int, a string like ``"cuda:1"``, or a
    device object with ``type`` and ``index`` (``torch.device``); checks the device exists.

    >>> parse_device("cpu")
    ('cpu', None)
    >>> parse_device("mps")
    Traceback (most recent call last):
    ...
    ValueError: unsupported device 'mps': pyrt runs on 'cpu' and 'cuda[:N]'
    """
    if isinstance(device, bool):
        raise TypeError(f"a device must be an int, a string or a device object, got {device!r}")
    if isinstance(device, int):
        kind, index = "cuda", device
    elif isinstance(device, str):
        kind, _, number = device.partition(":")
        if kind not in ("cpu", "cuda") or (number and not number.isdigit()):
            raise ValueError(f"unsupported device {device!r}: pyrt runs on 'cpu' and 'cuda[:N]'")
        index = int(number) if number else (0 if kind == "cuda" else None)
    elif hasattr(device, "type"):  # torch.device and look-alikes
        kind = str(device.type)
        raw = getattr(device, "index", None)
        index = raw if raw is not None or kind != "cuda" else 0
        if kind not in ("cpu", "cuda"):
            raise ValueError(f"unsupported device {device!r}: pyrt runs on 'cpu' and 'cuda[:N]'")
    else:
        raise TypeError(f"a device must be an int, a string or a device object, got {device!r}")
    if kind == "cpu":
        return "cpu", None
    if index is None or index < 0 or index >= device_count():
        raise _absent(device, -1 if index is None else index)
    return "cuda", int(index)


def set_device(device: Any) -> None:
    """Make ``device`` the current CUDA device for new arrays; an error when it is absent.

    >>> if not is_available():
    ...     set_device(0)
    Traceback (most recent call last):
    ...
    RuntimeError: CUDA device 0 was requested (0) but this machine has 0 visible CUDA devices ...
    """
    kind, index = parse_device(device)
    if kind == "cuda":
        import cupy

        cupy.cuda.Device(index).use()


def current_device() -> int:
    """Index of the current CUDA device; an error without one.

    >>> if not is_available():
    ...     current_device()
    Traceback (most recent call last):
    ...
    RuntimeError: CUDA device 0 was requested ('current_device') but this machine has 0 visible ...
    """
    if not is_available():
        raise _absent("current_device", 0)
    import cupy

    return int(cupy.cuda.runtime.getDevice())
