"""Dynamic int8 quantization for inference, with PyTorch's names (``torch.ao.quantization``).

``quantize_dynamic(model, {nn.Linear}, dtype=pyrt.qint8)`` replaces each
``nn.Linear`` by a ``DynamicQuantizedLinear``: int8 weights (symmetric; one
scale per tensor by default, as PyTorch's default qconfig, or per output
channel with ``per_channel_dynamic_qconfig``), activations quantized per
batch when the layer runs, and the product on pyrt's int8 GEMM
(``pyrt.kernels.int8_gemm``). Its ``state_dict`` holds int8 weights, so a
saved quantized model is about 4x smaller than the float one.

>>> import pyrt
>>> from pyrt import nn
>>> from pyrt.quantization import quantize_dynamic
>>> model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))
>>> qmodel = quantize_dynamic(model, {nn.Linear}, dtype=pyrt.qint8)
>>> qmodel[0].weight.dtype, qmodel(pyrt.randn(5, 64)).shape
(dtype('int8'), (5, 10))
"""

from pyrt.quantization.linear import DynamicQuantizedLinear, Int8Weight
from pyrt.quantization.observer import quantize_weight
from pyrt.quantization.qconfig import (
    QConfig,
    QuantizedDType,
    default_dynamic_qconfig,
    per_channel_dynamic_qconfig,
    qint8,
)
from pyrt.quantization.quantize import DEFAULT_DYNAMIC_QUANT_MODULE_MAPPINGS, quantize_dynamic

__all__ = [
    "DEFAULT_DYNAMIC_QUANT_MODULE_MAPPINGS",
    "DynamicQuantizedLinear",
    "Int8Weight",
    "QConfig",
    "QuantizedDType",
    "default_dynamic_qconfig",
    "per_channel_dynamic_qconfig",
    "qint8",
    "quantize_dynamic",
    "quantize_weight",
]
