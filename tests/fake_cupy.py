"""A CPU stand-in for cupy 14, so pyrt's whole Python GPU path runs on a machine without a GPU.

Test infrastructure, never shipped. ``make_cupy()`` builds module objects that the ``fake_gpu``
fixture (tests/conftest.py) installs as ``sys.modules["cupy"]`` and ``["cupyx"]``.

The point is to fail where real cupy fails, so a numpy leak in pyrt's GPU path shows up here:

* ``ndarray`` wraps a numpy array (it is not a numpy subclass). ``np.asarray(x)`` raises
  TypeError (``__array__``, cupy's message), and so does any operator, ufunc or cupy function
  that mixes it with a numpy array (0-d included: cupy accepts numpy *scalars* only).
* Reductions, full integer indexing and ufuncs return 0-d arrays, never numpy scalars.
* ``np.*`` calls on it dispatch as cupy's do: ``__array_ufunc__`` to the cupy ufunc of that name,
  ``__array_function__`` to the cupy function of that name (TypeError when cupy has none).
* Only names real cupy 14 has exist (``tests/cupy14_api.json``, read from the cupy-cuda13x
  14.2 wheel): ``cupy.errstate`` or ``x.flags.writeable`` raise AttributeError, as on a GPU.
* Arrays live on a device (``x.device.id``); kernels (operators, ufuncs, reductions,
  ``__setitem__``) refuse arrays not on the current device, with cupy's ValueError.
* ``x.data.ptr`` is the host address of the first element, so a kernel emulator that takes
  pointers (``pyrt._cuda_emulator``, or ``FakeCudaKernels`` here) computes on the real data.

Known differences from real cupy: memory is host memory (a "device" pointer can be read by
numpy), nothing is asynchronous (streams are labels, ``synchronize`` does nothing), moving an
array between fake devices through ``cupy.asarray`` of another device's array returns it
unchanged (as cupy does) but the data is reachable from both, dtype rules are numpy's (cupy
follows numpy 2's promotion too), and a cupy function forwards to numpy's of the same name,
so a cupy-only signature difference (a keyword cupy lacks) is not caught.

>>> cupy, cupyx = make_cupy(device_count=2)
>>> x = cupy.asarray(np.arange(3.0))
>>> (x * 2).sum()
array(6.)
>>> np.asarray(x)  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
TypeError: Implicit conversion to a NumPy array is not allowed. Please use `.get()` to construct ...
"""

from __future__ import annotations

import itertools
import json
import math
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

_API: dict[str, list[str]] = json.loads(Path(__file__).with_name("cupy14_api.json").read_text())
_CUPY_NAMES = frozenset(_API["cupy"])
_SAME_AS_NUMPY = frozenset(_API["same_as_numpy"])  # numpy's own objects re-exported (dtypes, finfo...)
_UFUNCS = frozenset(_API["ufuncs"])
# Parameter names of cupy 14's Python-level functions (read from the wheel's .py files; functions
# written in Cython, or taking **kwargs, are not listed): a keyword numpy has but cupy lacks
# (``as_strided(writeable=)``, ``indices(sparse=)``) raises TypeError here as on a GPU.
_KEYWORDS = {name: frozenset(names) for name, names in _API["keywords"].items()}
_NDARRAY_NAMES = frozenset(_API["ndarray"])
# Methods that return a view: no kernel runs, so cupy neither checks nor changes the device.
# (``copy``/``astype`` launch a copy kernel onto the current device: checked like any kernel.)
_VIEW_METHODS = frozenset({"reshape", "view", "transpose", "swapaxes", "squeeze", "ravel", "diagonal",
                           "get", "item", "tolist", "tobytes"})
# Functions that take host data (numpy arrays, lists) and copy it to the device.
_HOST_TO_DEVICE = frozenset({"asarray", "array", "asanyarray"})
_SCALARS = (bool, int, float, complex, np.generic)


class _State:
    """The fake runtime: how many devices, which is current, which stream is current."""

    def __init__(self, device_count: int) -> None:
        self.device_count = device_count
        self.device = 0
        self.stream: Stream | None = None


_state = _State(1)


def _unsupported(obj: Any) -> TypeError:
    return TypeError(f"Unsupported type {type(obj)}")


def _check_device(arrays: list[ndarray]) -> None:
    for a in arrays:
        if a._device != _state.device:
            raise ValueError(f"Array device must be same as the current device: array device = "
                             f"{a._device} while current = {_state.device}")


def _unwrap(obj: Any, found: list[ndarray], host_ok: bool = False) -> Any:
    """``obj`` with fake arrays replaced by their numpy arrays (collected in ``found``);
    a numpy array raises TypeError unless ``host_ok``."""
    if type(obj) is ndarray:
        found.append(obj)
        return obj._array
    if isinstance(obj, np.ndarray):
        if host_ok:
            return obj
        raise _unsupported(obj)
    if type(obj) in (list, tuple):
        return type(obj)(_unwrap(o, found, host_ok) for o in obj)
    if type(obj) is dict:
        return {k: _unwrap(v, found, host_ok) for k, v in obj.items()}
    return obj


def _wrap(obj: Any, device: int | None = None) -> Any:
    """numpy results as fake arrays (numpy scalars become 0-d arrays, as cupy returns them)."""
    if isinstance(obj, np.ndarray):
        return ndarray._of(obj, device)
    if isinstance(obj, np.generic):
        return ndarray._of(np.asarray(obj), device)
    if type(obj) in (list, tuple):
        return type(obj)(_wrap(o, device) for o in obj)
    return obj


def _kernel(func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any],
            host_ok: bool = False) -> Any:
    """Run a numpy function as a cupy kernel: device arrays only, on the current device."""
    found: list[ndarray] = []
    args = _unwrap(args, found, host_ok)
    kwargs = _unwrap(kwargs, found, host_ok)
    _check_device(found)
    return _wrap(func(*args, **kwargs))


# --- cupy.cuda ---------------------------------------------------------------------------

class Device:
    """``cupy.cuda.Device``: ``.id``, ``.use()``, a context manager that makes it current."""

    def __init__(self, device: int | None = None) -> None:
        self.id = _state.device if device is None else int(device)
        self._previous: list[int] = []

    def _checked(self) -> int:
        if not 0 <= self.id < _state.device_count:
            raise RuntimeError("cudaErrorInvalidDevice: invalid device ordinal")
        return self.id

    def use(self) -> None:
        _state.device = self._checked()

    def synchronize(self) -> None:
        self._checked()

    @property
    def compute_capability(self) -> str:
        return "90"

    def __enter__(self) -> Device:
        self._previous.append(_state.device)
        self.use()
        return self

    def __exit__(self, *exc: object) -> None:
        _state.device = self._previous.pop()

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Device) and other.id == self.id

    def __hash__(self) -> int:
        return hash(self.id)

    def __repr__(self) -> str:
        return f"<CUDA Device {self.id}>"


_stream_ids = itertools.count(0x1000, 0x10)


class Stream:
    """``cupy.cuda.Stream``: a ``.ptr``, ``synchronize()``, ``use()`` and ``with stream:``."""

    def __init__(self, null: bool = False, non_blocking: bool = False, ptds: bool = False) -> None:
        self.ptr = 0 if null else next(_stream_ids)
        self.device_id = _state.device
        self._previous: list[Stream | None] = []

    def synchronize(self) -> None:
        pass  # everything already ran: the fake is synchronous

    def use(self) -> Stream:
        _state.stream = self
        return self

    def __enter__(self) -> Stream:
        self._previous.append(_state.stream)
        _state.stream = self
        return self

    def __exit__(self, *exc: object) -> None:
        _state.stream = self._previous.pop()


def get_current_stream(device_id: int | None = None) -> Stream:
    if _state.stream is None:
        _state.stream = Stream(null=True)
    return _state.stream


def alloc_pinned_memory(size: int) -> memoryview:
    """Host memory ``np.frombuffer`` can read, as cupy's ``PinnedMemoryPointer`` (a buffer)."""
    return memoryview(bytearray(size))


class MemoryPointer:
    """``x.data``: ``.ptr`` is the address of the first element (host memory here)."""

    def __init__(self, array: np.ndarray, device: int) -> None:
        self.ptr = int(array.__array_interface__["data"][0])
        self.device_id = device

    @property
    def device(self) -> Device:
        return Device(self.device_id)


class Flags:
    """``x.flags``: cupy's three flags only (no ``writeable``: cupy arrays are always writable)."""

    def __init__(self, array: np.ndarray, owndata: bool) -> None:
        self.c_contiguous = bool(array.flags.c_contiguous)
        self.f_contiguous = bool(array.flags.f_contiguous)
        self.owndata = owndata

    def __getitem__(self, name: str) -> bool:
        return {"C_CONTIGUOUS": self.c_contiguous, "F_CONTIGUOUS": self.f_contiguous,
                "OWNDATA": self.owndata}[name]


# --- ndarray -----------------------------------------------------------------------------

def _operand(self: ndarray, other: Any) -> Any:
    """``other`` as a numpy operand of a cupy operator, or NotImplemented to defer to it."""
    if type(other) is ndarray:
        _check_device([self, other])
        return other._array
    if isinstance(other, np.ndarray):
        raise _unsupported(other)
    if isinstance(other, _SCALARS):
        _check_device([self])
        return other
    if getattr(other, "__array_priority__", 0) > ndarray.__array_priority__:
        return NotImplemented  # a Tensor: its reflected operator runs
    raise _unsupported(other)


def _binary(dunder: str) -> Callable[[ndarray, Any], Any]:
    def method(self: ndarray, other: Any) -> Any:
        operand = _operand(self, other)
        if operand is NotImplemented:
            return NotImplemented
        return _wrap(getattr(self._array, dunder)(operand))

    method.__name__ = dunder
    return method


def _inplace(dunder: str) -> Callable[[ndarray, Any], Any]:
    def method(self: ndarray, other: Any) -> Any:
        operand = _operand(self, other)
        if operand is NotImplemented:
            return NotImplemented
        getattr(self._array, dunder)(operand)
        return self

    method.__name__ = dunder
    return method


def _unary(dunder: str) -> Callable[[ndarray], Any]:
    def method(self: ndarray) -> Any:
        _check_device([self])
        return _wrap(getattr(self._array, dunder)())

    method.__name__ = dunder
    return method


class ndarray:
    """``cupy.ndarray`` on the CPU: wraps a numpy array, lives on a fake device."""

    __slots__ = ("_array", "_device", "_owndata")
    __array_priority__ = 100  # cupy's

    def __init__(self, shape: Any, dtype: Any = float, memptr: Any = None, strides: Any = None,
                 order: str = "C") -> None:
        self._array = np.empty(shape, dtype=dtype, order=order)
        self._device = _state.device
        self._owndata = True

    @classmethod
    def _of(cls, array: np.ndarray, device: int | None = None, owndata: bool | None = None) -> ndarray:
        obj = cls.__new__(cls)
        obj._array = array
        obj._device = _state.device if device is None else device
        obj._owndata = array.base is None if owndata is None else owndata
        return obj

    # --- conversions cupy refuses or performs explicitly
    def __array__(self, *args: Any, **kwargs: Any) -> np.ndarray:
        raise TypeError("Implicit conversion to a NumPy array is not allowed. "
                        "Please use `.get()` to construct a NumPy array explicitly.")

    def get(self, stream: Any = None, order: str = "C", out: Any = None, blocking: bool = True) -> np.ndarray:
        if out is not None:
            out[...] = self._array
            return out
        return np.array(self._array, copy=True, order=order)

    def set(self, arr: np.ndarray, stream: Any = None) -> None:
        if not isinstance(arr, np.ndarray) or arr.shape != self._array.shape:
            raise ValueError("Shape mismatch" if isinstance(arr, np.ndarray)
                             else "Only numpy.ndarray is supported")
        self._array[...] = arr

    def __array_ufunc__(self, ufunc: np.ufunc, method: str, *inputs: Any, **kwargs: Any) -> Any:
        if ufunc.__name__ not in _UFUNCS:
            return NotImplemented
        wrapped = _Ufunc(ufunc)
        if method == "__call__":
            return wrapped(*inputs, **kwargs)
        return getattr(wrapped, method)(*inputs, **kwargs)

    def __array_function__(self, func: Any, types: Any, args: Any, kwargs: Any) -> Any:
        target: Any = _module
        try:
            for part in func.__module__.split(".")[1:]:
                target = getattr(target, part)
            cupy_func = getattr(target, func.__name__)
        except AttributeError:
            return NotImplemented
        return cupy_func(*args, **kwargs)

    # --- attributes
    @property
    def shape(self) -> tuple[int, ...]:
        return self._array.shape

    @shape.setter
    def shape(self, value: Any) -> None:
        self._array.shape = value

    @property
    def dtype(self) -> np.dtype:
        return self._array.dtype

    @property
    def ndim(self) -> int:
        return self._array.ndim

    @property
    def size(self) -> int:
        return self._array.size

    @property
    def strides(self) -> tuple[int, ...]:
        return self._array.strides

    @property
    def itemsize(self) -> int:
        return self._array.itemsize

    @property
    def nbytes(self) -> int:
        return self._array.nbytes

    @property
    def flags(self) -> Flags:
        return Flags(self._array, self._owndata)

    @property
    def base(self) -> ndarray | None:
        base = self._array.base
        return ndarray._of(base, self._device) if isinstance(base, np.ndarray) and not self._owndata else None

    @property
    def T(self) -> ndarray:
        return ndarray._of(self._array.T, self._device, owndata=False)

    @property
    def mT(self) -> ndarray:
        return ndarray._of(np.swapaxes(self._array, -1, -2), self._device, owndata=False)

    @property
    def device(self) -> Device:
        return Device(self._device)

    @property
    def data(self) -> MemoryPointer:
        return MemoryPointer(self._array, self._device)

    @property
    def __cuda_array_interface__(self) -> dict[str, Any]:
        """What a CUDA-aware library (mpi4py) reads the "device" pointer from; here it is host
        memory, so an MPI that is not CUDA-aware can still serve the CUDA-aware code path."""
        contiguous = self._array.flags.c_contiguous
        return {"shape": self.shape, "typestr": self.dtype.str, "version": 3, "stream": None,
                "data": (self.data.ptr, False), "strides": None if contiguous else self.strides}

    @property
    def real(self) -> ndarray:
        return ndarray._of(self._array.real, self._device, owndata=False)

    @property
    def imag(self) -> ndarray:
        return ndarray._of(self._array.imag, self._device, owndata=False)

    def __getattr__(self, name: str) -> Any:
        if name not in _NDARRAY_NAMES or not hasattr(self._array, name):
            raise AttributeError(f"'cupy.ndarray' object has no attribute '{name}'")
        method = getattr(self._array, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            found: list[ndarray] = []
            args, kwargs = _unwrap(args, found), _unwrap(kwargs, found)
            if name in _VIEW_METHODS:
                result = method(*args, **kwargs)
                if name in ("get", "item", "tolist", "tobytes"):
                    return result
                if isinstance(result, np.ndarray):
                    shares = result.base is not None and np.may_share_memory(result, self._array)
                    return ndarray._of(result, self._device, owndata=not shares)
                return _wrap(result, self._device)
            if name == "astype" and kwargs.get("copy", True) is False and np.dtype(args[0]) == self.dtype:
                return self  # no cast, no copy: the array itself
            _check_device([self, *found])
            return _wrap(method(*args, **kwargs))

        return call

    # --- Python protocol
    def __len__(self) -> int:
        return len(self._array)

    def __iter__(self) -> Iterator[ndarray]:
        if self.ndim == 0:
            raise TypeError("iteration over a 0-d array")
        return (self[i] for i in range(len(self)))

    def __bool__(self) -> bool:
        return bool(self._array)

    def __int__(self) -> int:
        return int(self._array)

    def __float__(self) -> float:
        return float(self._array)

    def __complex__(self) -> complex:
        return complex(self._array)

    def __repr__(self) -> str:
        return repr(self._array)

    def __str__(self) -> str:
        return str(self._array)

    def __copy__(self) -> ndarray:
        return ndarray._of(self._array.copy(), self._device)

    def __deepcopy__(self, memo: dict[int, Any]) -> ndarray:
        return ndarray._of(self._array.copy(), self._device)

    def __reduce__(self) -> Any:
        raise TypeError("the fake cupy does not pickle arrays")

    def __getitem__(self, key: Any) -> ndarray:
        found: list[ndarray] = []
        key = _unwrap(key, found, host_ok=True)  # cupy copies numpy/list indices to the device
        advanced = found or isinstance(key, np.ndarray | list) or (
            isinstance(key, tuple) and any(isinstance(k, np.ndarray | list) for k in key))
        result = self._array[key]
        if advanced:  # a gather kernel
            _check_device([self, *found])
            return _wrap(result)
        return ndarray._of(np.asarray(result) if isinstance(result, np.generic) else result,
                           self._device, owndata=False)

    def __setitem__(self, key: Any, value: Any) -> None:
        # cupy copies a host value to the device only under advanced indexing; with basic
        # indexing it calls fill(), which refuses a non-scalar numpy array (cupy gh-2079).
        keys = key if isinstance(key, tuple) else (key,)
        advanced = any(isinstance(k, (list, np.ndarray, ndarray)) for k in keys)
        if not advanced and isinstance(value, (np.ndarray, list, tuple)) and np.ndim(value) != 0:
            raise ValueError("non-scalar numpy.ndarray cannot be used for fill")
        found: list[ndarray] = []
        key = _unwrap(key, found, host_ok=True)
        value = _unwrap(value, found, host_ok=True)  # advanced indexing: copied to the device
        _check_device([self, *found])
        self._array[key] = value

    __hash__ = None  # type: ignore[assignment]


for _name in ("add", "sub", "mul", "truediv", "floordiv", "mod", "pow", "matmul", "and", "or", "xor",
              "lshift", "rshift", "divmod"):
    setattr(ndarray, f"__{_name}__", _binary(f"__{_name}__"))
    setattr(ndarray, f"__r{_name}__", _binary(f"__r{_name}__"))
    if _name != "divmod":
        setattr(ndarray, f"__i{_name}__", _inplace(f"__i{_name}__"))
for _name in ("eq", "ne", "lt", "le", "gt", "ge"):
    setattr(ndarray, f"__{_name}__", _binary(f"__{_name}__"))
for _name in ("neg", "pos", "abs", "invert"):
    setattr(ndarray, f"__{_name}__", _unary(f"__{_name}__"))
ndarray.__module__ = "cupy"  # pyrt.backend.is_cuda_array reads the class's module


class _Ufunc:
    """A cupy ufunc: numpy's on device arrays, with ``reduce``/``accumulate``/``at``/``outer``."""

    def __init__(self, ufunc: np.ufunc) -> None:
        self._ufunc = ufunc
        self.__name__ = self.name = ufunc.__name__
        self.nin, self.nout, self.nargs = ufunc.nin, ufunc.nout, ufunc.nargs

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        for a in args:  # cupy's ufuncs take device arrays and scalars only, not lists
            if type(a) is not ndarray and not isinstance(a, _SCALARS):
                raise _unsupported(a)
        return _kernel(self._ufunc, args, kwargs)

    def reduce(self, *args: Any, **kwargs: Any) -> Any:
        return _kernel(self._ufunc.reduce, args, kwargs)

    def accumulate(self, *args: Any, **kwargs: Any) -> Any:
        return _kernel(self._ufunc.accumulate, args, kwargs)

    def outer(self, *args: Any, **kwargs: Any) -> Any:
        return _kernel(self._ufunc.outer, args, kwargs)

    def reduceat(self, *args: Any, **kwargs: Any) -> Any:
        return _kernel(self._ufunc.reduceat, args, kwargs)

    def at(self, a: ndarray, indices: Any, b: Any = None) -> None:
        if type(a) is not ndarray:
            raise _unsupported(a)
        found: list[ndarray] = [a]
        indices = _unwrap(indices, found, host_ok=True)
        args = () if b is None else (_unwrap(b, found, host_ok=True),)
        _check_device(found)
        self._ufunc.at(a._array, indices, *args)

    def __repr__(self) -> str:
        return f"<ufunc '{self.name}'>"


# --- module-level functions ----------------------------------------------------------------

def get_array_module(*args: Any) -> types.ModuleType:
    return _module if any(type(a) is ndarray for a in args) else np


def asnumpy(a: Any, stream: Any = None, order: str = "C", out: Any = None,
            blocking: bool = True) -> np.ndarray:
    if type(a) is ndarray:
        return a.get(out=out, order=order)
    return np.asarray(a, order=order)


def _host_to_device(name: str) -> Callable[..., Any]:
    numpy_func = getattr(np, name)

    def create(obj: Any, dtype: Any = None, *args: Any, **kwargs: Any) -> Any:
        if type(obj) is ndarray:
            if name == "array" and kwargs.get("copy", True) is not False:
                with Device(obj._device):
                    return ndarray._of(np.array(obj._array, dtype, *args, **kwargs), obj._device)
            if dtype is None or np.dtype(dtype) == obj.dtype:
                return obj  # asarray of a device array: the array itself, whatever its device
            return ndarray._of(obj._array.astype(dtype), obj._device)
        found: list[ndarray] = []
        host = _unwrap(obj, found, host_ok=True)
        _check_device(found)
        # A host -> device copy: the device array never shares memory with the host one.
        kwargs.pop("copy", None)
        return ndarray._of(np.array(numpy_func(host, dtype, *args, **kwargs), copy=True))

    create.__name__ = name
    return create


def _numpy_forward(numpy_namespace: Any, name: str, allowed: frozenset[str], where: str) -> Any:
    if name not in allowed:
        raise AttributeError(f"module '{where}' has no attribute '{name}'")
    if where == "cupy" and name in _SAME_AS_NUMPY:
        return getattr(np, name)
    if where == "cupy" and name in _UFUNCS:
        return _Ufunc(getattr(np, name))
    if not hasattr(numpy_namespace, name):
        raise AttributeError(f"the fake cupy cannot emulate {where}.{name} (numpy has no {name})")
    target = getattr(numpy_namespace, name)
    if isinstance(target, types.ModuleType):  # the submodules we emulate are set on the module
        raise AttributeError(f"the fake cupy does not emulate {where}.{name}")
    if not callable(target) or isinstance(target, type):
        return target
    if where == "cupy" and name in _HOST_TO_DEVICE:
        return _host_to_device(name)

    def call(*args: Any, **kwargs: Any) -> Any:
        unknown = set(kwargs) - _KEYWORDS.get(name, set(kwargs))
        if unknown:
            raise TypeError(f"{name}() got an unexpected keyword argument '{sorted(unknown)[0]}' (cupy 14)")
        return _kernel(target, args, kwargs)

    call.__name__ = name
    return call


def _erf(x: Any) -> Any:
    if type(x) is not ndarray:
        raise _unsupported(x)
    _check_device([x])
    values = np.frompyfunc(math.erf, 1, 1)(x._array)
    return ndarray._of(np.asarray(values, dtype=x.dtype))


def _scatter_add(a: ndarray, slices: Any, value: Any) -> None:
    _Ufunc(np.add).at(a, slices, value)


def _make_module(name: str, getattr_: Callable[[str], Any] | None = None, **members: Any) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__dict__.update(members)
    if getattr_ is not None:
        module.__dict__["__getattr__"] = getattr_
    return module


_module: types.ModuleType = types.ModuleType("cupy")


def make_cupy(device_count: int = 2) -> tuple[types.ModuleType, types.ModuleType]:
    """Fresh ``cupy`` and ``cupyx`` module objects with ``device_count`` fake devices, device 0 current."""
    global _module, _state
    _state = _State(device_count)
    runtime = _make_module(
        "cupy.cuda.runtime",
        getDeviceCount=lambda: _state.device_count,
        getDevice=lambda: _state.device,
        setDevice=lambda i: Device(i).use(),
    )
    cuda = _make_module(
        "cupy.cuda", Device=Device, Stream=Stream, get_current_stream=get_current_stream,
        alloc_pinned_memory=alloc_pinned_memory, runtime=runtime, MemoryPointer=MemoryPointer,
        is_available=lambda: _state.device_count > 0,
        get_device_id=lambda: _state.device,
    )
    linalg_names = frozenset(_API["linalg"])
    random_names = frozenset(_API["random"])
    linalg = _make_module("cupy.linalg", lambda n: _numpy_forward(np.linalg, n, linalg_names, "cupy.linalg"))
    random = _make_module("cupy.random", lambda n: _numpy_forward(np.random, n, random_names, "cupy.random"))
    stride_tricks = _make_module(
        "cupy.lib.stride_tricks",
        lambda n: _numpy_forward(np.lib.stride_tricks, n, frozenset({"as_strided", "sliding_window_view"}),
                                 "cupy.lib.stride_tricks"))
    lib = _make_module("cupy.lib", stride_tricks=stride_tricks)
    cupy = _make_module(
        "cupy", lambda n: _numpy_forward(np, n, _CUPY_NAMES, "cupy"),
        ndarray=ndarray, cuda=cuda, linalg=linalg, random=random, lib=lib, asnumpy=asnumpy,
        get_array_module=get_array_module, ufunc=_Ufunc, __version__="14.2.0+fake",
    )
    special = _make_module("cupyx.scipy.special", erf=_erf)
    cupyx = _make_module("cupyx", scatter_add=_scatter_add,
                         scipy=_make_module("cupyx.scipy", special=special))
    _module = cupy
    return cupy, cupyx


def kernels_module() -> Any:
    """What stands in for ``pyrt._cuda``: ``pyrt._cuda_emulator`` (the CUDA kernels' own source
    built for the CPU) when it is built, else ``FakeCudaKernels``."""
    try:
        from pyrt import _cuda_emulator
    except ImportError:
        return FakeCudaKernels()
    return _cuda_emulator


def install(device_count: int = 2) -> types.ModuleType:
    """Install the fake for the rest of this process (an MPI worker): ``sys.modules["cupy"]``,
    ``["cupyx"]`` and ``pyrt.kernels._cuda_module``. Tests use the ``fake_gpu`` fixture instead,
    which undoes it."""
    import sys

    import pyrt.kernels

    cupy, cupyx = make_cupy(device_count)
    sys.modules.update({"cupy": cupy, "cupyx": cupyx, "cupyx.scipy": cupyx.scipy,
                        "cupyx.scipy.special": cupyx.scipy.special})
    pyrt.kernels._cuda_module = kernels_module()
    return cupy


def install_patched(monkeypatch: Any, device_count: int = 2) -> types.ModuleType:
    """``install`` through pytest's ``monkeypatch``, which undoes it after the test (the
    ``fake_gpu`` and ``gpu`` fixtures of tests/conftest.py). Returns the fake cupy module."""
    import sys

    import pyrt.kernels

    cupy, cupyx = make_cupy(device_count)
    monkeypatch.setitem(sys.modules, "cupy", cupy)
    monkeypatch.setitem(sys.modules, "cupyx", cupyx)
    monkeypatch.setitem(sys.modules, "cupyx.scipy", cupyx.scipy)
    monkeypatch.setitem(sys.modules, "cupyx.scipy.special", cupyx.scipy.special)
    monkeypatch.setattr(pyrt.kernels, "_cuda_module", kernels_module())
    return cupy


# --- the CUDA kernels, emulated on host pointers ---------------------------------------------

def _strided(ptr: int, shape: tuple[int, int], element_strides: tuple[int, int]) -> np.ndarray:
    """A float32 numpy view of memory at ``ptr`` with element strides (what a kernel indexes)."""

    interface = {"shape": shape, "typestr": "<f4", "version": 3, "data": (ptr, False),
                 "strides": (element_strides[0] * 4, element_strides[1] * 4)}
    return np.asarray(types.SimpleNamespace(__array_interface__=interface))


class FakeCudaKernels:
    """``pyrt._cuda``'s functions computed with numpy on the pointers (for when
    ``pyrt._cuda_emulator`` is not built): the arguments are checked and used exactly as the
    CUDA kernel reads them, so a wrong stride or pointer in pyrt.kernels gives wrong numbers."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def device_count(self) -> int:
        return _state.device_count

    def synchronize(self) -> None:
        pass

    def sgemm(self, m: int, n: int, k: int, alpha: float, a: int, rsa: int, csa: int, b: int, rsb: int,
              csb: int, beta: float, c: int, rsc: int, csc: int, stream: int) -> None:
        if min(m, n, k) < 0:
            raise ValueError(f"sgemm: negative size m = {m}, n = {n}, k = {k}")
        self.calls.append("sgemm")
        if m == 0 or n == 0:
            return
        out = _strided(c, (m, n), (rsc, csc))
        product = (np.zeros((m, n), np.float64) if k == 0 or alpha == 0 else
                   alpha * (_strided(a, (m, k), (rsa, csa)).astype(np.float64)
                            @ _strided(b, (k, n), (rsb, csb)).astype(np.float64)))
        if beta != 0:
            product += beta * out
        out[...] = product

    def spmm(self, m: int, n: int, k: int, alpha: float, indptr: int, indices: int, values: int, b: int,
             ldb: int, beta: float, c: int, ldc: int, stream: int = 0) -> None:
        """CSR (int32 indptr/indices, float32 values) @ b, as csrc/cuda/spmm.h reads its pointers."""
        if min(m, n, k) < 0:
            raise ValueError(f"spmm: m = {m}, n = {n}, k = {k}: a size is negative")
        self.calls.append("spmm")
        if m == 0 or n == 0:
            return
        row_ptr = _typed(indptr, m + 1, "<i4")
        nnz = int(row_ptr[-1])  # indptr values index indices/values directly (row_ptr[0] may be > 0)
        cols, vals = _typed(indices, nnz, "<i4"), _typed(values, nnz, "<f4")
        out = _strided(c, (m, n), (ldc, 1))
        dense_b = _strided(b, (k, n), (ldb, 1)).astype(np.float64) if k else np.zeros((0, n))
        product = np.zeros((m, n))
        for row in range(m):
            lo, hi = row_ptr[row], row_ptr[row + 1]
            product[row] = vals[lo:hi].astype(np.float64) @ dense_b[cols[lo:hi]]
        out[...] = alpha * product + (beta * out if beta != 0 else 0.0)

    def reduce_inplace(self, dst: int, src: int, count: int, dtype: str, op: str, stream: int = 0) -> None:
        ufunc = {"sum": np.add, "prod": np.multiply, "max": np.maximum, "min": np.minimum}[op]
        self.calls.append("reduce_inplace")
        typestr = np.dtype(dtype).str
        target = _typed(dst, count, typestr)
        ufunc(target, _typed(src, count, typestr).copy(), out=target)


def _typed(ptr: int, count: int, typestr: str) -> np.ndarray:
    """A writable 1-D numpy view of ``count`` elements of type ``typestr`` at ``ptr``."""
    if count == 0:
        return np.zeros(0, np.dtype(typestr))
    interface = {"shape": (count,), "typestr": typestr, "version": 3, "data": (ptr, False)}
    return np.asarray(types.SimpleNamespace(__array_interface__=interface))
