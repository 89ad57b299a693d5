"""``DynamicQuantizedLinear``: an inference-only Linear on int8 weights and pyrt's int8 GEMM.

Weights are stored as int8 codes with float32 scales (symmetric, zero point
0); each call quantizes its input per batch to 7-bit codes
(``pyrt.kernels.quantize_u8``) and runs ``pyrt.kernels.int8_gemm``, which
applies both scales and the bias in its epilogue. This is PyTorch's dynamic
quantized Linear (``torch.ao.nn.quantized.dynamic.Linear``) on pyrt's kernels.
On a GPU (``Module.to("cuda")``, or ``quantize_dynamic`` of a GPU model) the
same steps run on pyrt's CUDA kernels with the same codes, parameters and
int32 sums, so outputs equal the CPU's; PyTorch's runs on the CPU only.

>>> import pyrt
>>> from pyrt import nn
>>> q = DynamicQuantizedLinear.from_float(nn.Linear(4, 3))
>>> q
DynamicQuantizedLinear(in_features=4, out_features=3, dtype=pyrt.qint8, qscheme=per_tensor_symmetric)
>>> q(pyrt.ones(2, 4)).shape
(2, 3)
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from pyrt import kernels
from pyrt.autograd import Function, on_device_of
from pyrt.backend import describe, device_of, get_array_module, is_cuda_array, move_array
from pyrt.nn.linear import Linear
from pyrt.nn.module import Module
from pyrt.quantization.observer import quantize_weight
from pyrt.quantization.qconfig import QConfig, default_dynamic_qconfig, qint8
from pyrt.tensor import Tensor

__all__ = ["DynamicQuantizedLinear", "Int8Weight"]


class Int8Weight(Tensor):
    """An int8 (n, k) weight tensor that keeps the packed layout ``int8_gemm`` reads.

    On the CPU (numpy codes) the cache is a ``PackedInt8Weight``; on a GPU
    (cupy codes, after ``Module.to("cuda")``) a ``CudaPackedInt8Weight`` on
    the codes' device.

    Packing a 1024x784 weight took 0.78 ms here, about 17 batch-1 forward
    calls of that layer (0.045 ms), so it is done once and cached. Anything
    outside the layer reaches the codes only through ``.data``
    (``load_state_dict`` writes through it in place), so handing out ``.data``
    drops the cache and the next forward repacks: the packed copy can never go
    stale. Shape and dtype queries do not touch ``.data``.

    >>> w = Int8Weight(np.ones((2, 3), np.int8))
    >>> w.packed().n, w.shape
    (2, (2, 3))
    >>> w.data[0, 0] = 5   # a write through .data ...
    >>> w.is_packed()      # ... means the next forward repacks
    False
    """

    __slots__ = ("_codes", "_packed")

    def __init__(self, codes: Any) -> None:
        codes = codes.data if isinstance(codes, Tensor) else codes
        codes = codes if is_cuda_array(codes) else np.asarray(codes)
        if codes.ndim != 2 or codes.dtype != np.int8:
            raise TypeError(f"Int8Weight: codes must be a 2-D int8 array, got {describe(codes)}")
        super().__init__(codes)

    @property  # type: ignore[override]
    def data(self) -> np.ndarray:
        self._packed = None  # the caller may write into the array
        return self._codes

    @data.setter
    def data(self, value: Any) -> None:
        self._codes = value
        self._packed = None

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self._codes.shape)

    @property
    def dtype(self) -> np.dtype:
        return self._codes.dtype

    def is_packed(self) -> bool:
        """Whether the packed layout is cached (false after ``.data`` was handed out)."""
        return self._packed is not None

    def packed(self) -> kernels.PackedInt8Weight | kernels.CudaPackedInt8Weight:
        """The codes in ``int8_gemm``'s packed layout (on their device), packed now if the cache
        was dropped."""
        if self._packed is None:
            self._packed = kernels.pack_int8_weight(self._codes)
        return self._packed

    def detach(self) -> Tensor:
        # state_dict() detaches every entry; a plain tensor on a copy keeps the
        # cache valid and keeps writes to the state dict out of the layer, as in
        # PyTorch, whose quantized state dict unpacks a copy too. On the codes' device, as every
        # other state_dict entry (pyrt.save writes host copies).
        with on_device_of(self._codes):
            return Tensor(self._codes.copy())

    def __deepcopy__(self, memo: dict[int, Any]) -> Int8Weight:
        # The packed C++ object cannot be copied; the copy packs on first use.
        with on_device_of(self._codes):
            return Int8Weight(self._codes.copy())


class _DynamicLinearFunction(Function):
    """The quantized matmul as a graph node whose backward refuses, loudly."""

    def forward(self, x: Any, weight: kernels.PackedInt8Weight | kernels.CudaPackedInt8Weight, scale: Any,
                bias: Any | None) -> Any:
        rows = x.reshape(math.prod(x.shape[:-1]), x.shape[-1])  # -1 fails when x is empty
        out = kernels.dynamic_linear(rows, weight, scale, bias)
        return out.reshape(*x.shape[:-1], weight.n)

    def backward(self, grad: Any) -> tuple[Any, ...]:
        raise RuntimeError(
            "DynamicQuantizedLinear does not support backward: int8 rounding has no useful gradient "
            "and pyrt's quantized layers are inference only. Train (or fine-tune) the float model, then "
            "quantize it; or run the quantized model under pyrt.no_grad()."
        )


class DynamicQuantizedLinear(Module):
    """``y = x @ dequant(weight).T + bias`` with int8 weights and per-batch int8 activations.

    State (all in ``state_dict``, none learnable): ``weight``, int8
    (out_features, in_features); ``scale``, float32, ``(1,)`` per tensor or
    ``(out_features,)`` per channel; ``bias``, float32 (out_features,) or absent.

    Inference only. An input that requires grad under grad mode gives an
    output in the graph whose backward raises a clear error (PyTorch 2.13's
    runs the backward, warning that its result may be silently incorrect).

    >>> import pyrt
    >>> q = DynamicQuantizedLinear(3, 2, qscheme="per_channel_symmetric")
    >>> q.scale.shape, q.weight.dtype
    ((2,), dtype('int8'))
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True,
                 qscheme: str = default_dynamic_qconfig.qscheme) -> None:
        super().__init__()
        QConfig(qscheme)  # validates the name
        if in_features < 0 or out_features < 0:
            raise ValueError(f"DynamicQuantizedLinear: features must be >= 0, got "
                             f"in_features={in_features}, out_features={out_features}")
        self.in_features, self.out_features, self.qscheme = in_features, out_features, qscheme
        self.dtype = qint8
        per_channel = qscheme == "per_channel_symmetric"
        # Zero weights with unit scale until from_float or load_state_dict fills them.
        self.register_buffer("weight", Int8Weight(np.zeros((out_features, in_features), np.int8)))
        self.register_buffer("scale", Tensor(np.ones(out_features if per_channel else 1, np.float32)))
        self.register_buffer("bias", Tensor(np.zeros(out_features, np.float32)) if bias else None)

    @classmethod
    def from_float(cls, mod: Linear, qconfig: QConfig = default_dynamic_qconfig) -> DynamicQuantizedLinear:
        """Quantize a float ``nn.Linear`` (PyTorch's name for this constructor).

        >>> from pyrt import nn
        >>> DynamicQuantizedLinear.from_float(nn.Linear(5, 4, bias=False)).bias is None
        True
        """
        if not isinstance(mod, Linear):
            raise TypeError(f"DynamicQuantizedLinear.from_float: expected an nn.Linear, got "
                            f"{type(mod).__name__}")
        qmod = cls(mod.in_features, mod.out_features, bias=mod.bias is not None, qscheme=qconfig.qscheme)
        per_channel = qconfig.qscheme == "per_channel_symmetric"
        # Quantized on the host whatever the layer's device, so a GPU model gets the very codes and
        # scales a CPU one would (a one-time cost); then the layer is put where the Linear was.
        codes, scale = quantize_weight(move_array(mod.weight.data, "cpu", None), per_channel=per_channel)
        qmod.weight = Int8Weight(codes)
        qmod.scale = Tensor(scale)
        if mod.bias is not None:  # a copy, never shared
            qmod.bias = Tensor(np.array(move_array(mod.bias.data, "cpu", None), dtype=np.float32))
        kind, _, index = device_of(mod.weight.data).partition(":")
        if kind != "cpu":
            qmod.to(f"cuda:{index}")
        return qmod

    def dequantized_weight(self) -> Tensor:
        """The float32 weight the int8 codes stand for: ``scale * codes``.

        >>> q = DynamicQuantizedLinear(2, 1)
        >>> q.dequantized_weight().tolist()
        [[0.0, 0.0]]
        """
        codes = self.weight._codes
        with on_device_of(codes):
            scale = self.scale.data.astype(np.float32).reshape(-1, 1)
            return Tensor(scale * codes.astype(np.float32))

    def forward(self, input: Tensor) -> Tensor:
        x = input if isinstance(input, Tensor) else Tensor(input)
        if x.ndim == 0 or x.shape[-1] != self.in_features:
            raise ValueError(f"DynamicQuantizedLinear: input is {describe(x.data)}; expected "
                             f"(..., {self.in_features})")
        if x.dtype != np.float32:
            raise TypeError(f"DynamicQuantizedLinear: input is {x.dtype}; the int8 kernels take float32 "
                            "(call .float() on the input)")
        scale = self.scale.data
        bias = None if self.bias is None else self.bias.data
        if type(scale) is np.ndarray:  # the CPU, without the device guard's cost on each call
            scale = scale.astype(np.float32, copy=False)
            if scale.shape == (1,):  # per tensor: the kernel's epilogue takes one scale per output
                # repeat gives the contiguous array int8_gemm needs in one step (5x cheaper than
                # broadcast_to, whose strided view int8_gemm then copied)
                scale = scale.repeat(self.out_features)
        else:
            with on_device_of(scale):
                xp = get_array_module(scale)
                scale = scale.astype(np.float32, copy=False)
                if scale.shape == (1,):
                    scale = xp.broadcast_to(scale, (self.out_features,))
        # The packed weight, not the Int8Weight: apply() would read (and so uncache) its .data.
        return _DynamicLinearFunction.apply(x, self.weight.packed(), scale, bias)

    def extra_repr(self) -> str:
        text = f"in_features={self.in_features}, out_features={self.out_features}, dtype={self.dtype}, "
        text += f"qscheme={self.qscheme}"
        return text if self.bias is not None else text + ", bias=False"
