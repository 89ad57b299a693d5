"""``quantize_dynamic``: swap a model's float layers for dynamically quantized ones (PyTorch's API).

Which layers: ``qconfig_spec`` says, by module type or by dotted submodule
name, with PyTorch's precedence (a name beats a type, and both are inherited
by a module's children unless a child says otherwise; a ``None`` qconfig
leaves that subtree in float). Which replacement: ``mapping``, from float
module type (matched exactly, as PyTorch does) to a class with
``from_float(module, qconfig)``.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from typing import Any

from pyrt.nn.linear import Linear
from pyrt.nn.module import Module
from pyrt.quantization.linear import DynamicQuantizedLinear
from pyrt.quantization.qconfig import QConfig, QuantizedDType, default_dynamic_qconfig, qint8

__all__ = ["DEFAULT_DYNAMIC_QUANT_MODULE_MAPPINGS", "quantize_dynamic"]

DEFAULT_DYNAMIC_QUANT_MODULE_MAPPINGS: dict[type, type] = {Linear: DynamicQuantizedLinear}
SUPPORTED_DTYPES = (qint8,)

QConfigSpec = Mapping[Any, QConfig | None] | Iterable[Any]


def _spec_as_dict(qconfig_spec: QConfigSpec | None) -> dict[Any, QConfig | None]:
    if qconfig_spec is None:
        return {Linear: default_dynamic_qconfig}
    if isinstance(qconfig_spec, Mapping):
        spec = dict(qconfig_spec)
    elif isinstance(qconfig_spec, (set, frozenset, list, tuple)):
        # A set of types/names means "these, with the default qconfig", as in PyTorch.
        spec = dict.fromkeys(qconfig_spec, default_dynamic_qconfig)
    else:
        raise TypeError(f"quantize_dynamic: qconfig_spec must be a set of module types or names, or a "
                        f"dict of them to QConfig, got {type(qconfig_spec).__name__}")
    for key, qconfig in spec.items():
        if not (isinstance(key, str) or (isinstance(key, type) and issubclass(key, Module))):
            raise TypeError(f"quantize_dynamic: qconfig_spec key {key!r} is neither a Module type nor "
                            "a submodule name")
        if qconfig is not None and not isinstance(qconfig, QConfig):
            raise TypeError(f"quantize_dynamic: qconfig_spec[{key!r}] is {qconfig!r}; expected a "
                            "pyrt.quantization.QConfig (e.g. per_channel_dynamic_qconfig) or None")
    return spec


def _swap(module: Module, prefix: str, inherited: QConfig | None, spec: Mapping[Any, QConfig | None],
          mapping: Mapping[type, type]) -> None:
    for name, child in list(module._modules.items()):
        if child is None:
            continue
        path = f"{prefix}{name}"
        qconfig = spec.get(type(child), inherited)
        qconfig = spec.get(path, qconfig)  # a name is more specific than a type
        if qconfig is not None and type(child) in mapping:
            setattr(module, name, mapping[type(child)].from_float(child, qconfig))
        else:
            _swap(child, f"{path}.", qconfig, spec, mapping)


def quantize_dynamic(model: Module, qconfig_spec: QConfigSpec | None = None, dtype: Any = qint8,
                     mapping: Mapping[type, type] | None = None, inplace: bool = False) -> Module:
    """Return ``model`` with its ``nn.Linear`` layers (or those named) as ``DynamicQuantizedLinear``.

    Weights become symmetric int8 with one scale per tensor (the default, as
    PyTorch's ``default_dynamic_qconfig``) or per output channel
    (``per_channel_dynamic_qconfig``); activations are quantized per batch at
    run time. The model is deep-copied first unless ``inplace=True``. Other
    layers are left as they are. Only ``dtype=pyrt.qint8`` is supported. A
    model on a GPU stays there: each quantized layer keeps its Linear's device
    and runs on pyrt's CUDA int8 kernels (PyTorch's dynamic quantization is
    CPU-only), with the codes a CPU model would get.

    >>> import pyrt
    >>> from pyrt import nn
    >>> model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    >>> qmodel = quantize_dynamic(model, {nn.Linear}, dtype=pyrt.qint8)
    >>> qmodel
    Sequential(
      (0): DynamicQuantizedLinear(in_features=4, out_features=8, dtype=pyrt.qint8,
                                  qscheme=per_tensor_symmetric)
      (1): ReLU()
      (2): DynamicQuantizedLinear(in_features=8, out_features=2, dtype=pyrt.qint8,
                                  qscheme=per_tensor_symmetric)
    )
    >>> qmodel(pyrt.ones(3, 4)).shape
    (3, 2)
    >>> from pyrt.quantization import per_channel_dynamic_qconfig
    >>> quantize_dynamic(model, {"2": per_channel_dynamic_qconfig})[2].qscheme
    'per_channel_symmetric'
    """
    if not isinstance(model, Module):
        raise TypeError(f"quantize_dynamic: model must be a pyrt.nn.Module, got {type(model).__name__}")
    if not (isinstance(dtype, QuantizedDType) and dtype in SUPPORTED_DTYPES):
        supported = ", ".join(repr(d) for d in SUPPORTED_DTYPES)
        raise ValueError(f"quantize_dynamic: dtype {dtype!r} is not supported; supported dtypes: "
                         f"{supported} (float16 dynamic quantization is not implemented)")
    spec = _spec_as_dict(qconfig_spec)
    mapping = DEFAULT_DYNAMIC_QUANT_MODULE_MAPPINGS if mapping is None else mapping
    if not inplace:
        model = copy.deepcopy(model)
    if type(model) in mapping and spec.get("", spec.get(type(model))) is not None:
        # The model itself is a Linear: there is no parent to swap it in, so return the replacement.
        return mapping[type(model)].from_float(model, spec.get("", spec.get(type(model))))
    _swap(model, "", spec.get(""), spec, mapping)
    return model
