"""pyrt: a from-scratch parallel training runtime.

A define-by-run autograd engine and layer library whose hot paths run on
pyrt's own native kernels, with MPI process groups for data, pipeline, tensor
and asynchronous parallelism. The public API follows PyTorch's names, so

>>> import pyrt
>>> x = pyrt.tensor([1.0, 2.0], requires_grad=True)
>>> (x * x).sum().backward()
>>> x.grad.tolist()
[2.0, 4.0]
"""

import numpy as _np

from pyrt import autograd, cuda, errors, kernels, nn, ops, optim, profiler, quantization, sparse, utils
from pyrt.autograd import enable_grad, gradcheck, is_grad_enabled, no_grad, set_grad_enabled
from pyrt.creation import (
    arange,
    empty,
    empty_like,
    from_numpy,
    full,
    full_like,
    ones,
    ones_like,
    rand,
    rand_like,
    randint,
    randn,
    randn_like,
    zeros,
    zeros_like,
)
from pyrt.errors import ShapeError
from pyrt.kernels import get_num_threads, set_num_threads
from pyrt.ops import (
    abs,
    add,
    all,
    any,
    argmax,
    argmin,
    cat,
    ceil,
    chunk,
    clamp,
    clip,
    cos,
    cumsum,
    diagonal,
    div,
    einsum,
    exp,
    exp2,
    flatten,
    flip,
    floor,
    floor_divide,
    gather,
    lerp,
    log,
    log2,
    log_softmax,
    logsumexp,
    masked_fill,
    matmul,
    max,
    maximum,
    mean,
    min,
    minimum,
    mul,
    neg,
    permute,
    pow,
    prod,
    promote_types,
    relu,
    reshape,
    result_type,
    roll,
    round,
    rsqrt,
    sigmoid,
    sign,
    sin,
    softmax,
    split,
    sqrt,
    squeeze,
    stack,
    std,
    sub,
    sum,
    tanh,
    transpose,
    tril,
    triu,
    unflatten,
    unsqueeze,
    var,
    where,
)
from pyrt.random import get_rng_state, manual_seed, set_rng_state
from pyrt.serialization import load, save
from pyrt.tensor import Tensor, tensor

# dtype names as in PyTorch; they are numpy dtypes.
float32 = _np.dtype("float32")
float64 = _np.dtype("float64")
float16 = _np.dtype("float16")
int64 = _np.dtype("int64")
int32 = _np.dtype("int32")
int8 = _np.dtype("int8")
uint8 = _np.dtype("uint8")
bool = _np.dtype("bool")
float = float32
double = float64
long = int64
# Quantized dtype, as torch.qint8: a marker (not a numpy dtype) naming int8 codes with a scale;
# see pyrt.quantization.QuantizedDType.
qint8 = quantization.qint8

__version__ = "0.1.0"

__all__ = [
    "ShapeError", "Tensor", "abs", "add", "all", "any", "arange", "argmax", "argmin", "autograd", "cat",
    "ceil", "chunk", "clamp", "clip", "cos", "cuda", "cumsum", "diagonal", "div", "einsum", "empty",
    "empty_like",
    "enable_grad",
    "errors", "exp", "exp2", "flatten", "flip", "floor", "floor_divide", "from_numpy", "full",
    "full_like", "gather",
    "get_num_threads", "get_rng_state", "gradcheck", "is_grad_enabled", "kernels", "lerp", "load", "log",
    "log2", "log_softmax", "logsumexp", "manual_seed", "masked_fill", "matmul", "max", "maximum", "mean",
    "min", "minimum", "mul", "neg", "nn", "no_grad", "ones", "ones_like", "ops", "optim", "permute", "pow",
    "prod", "profiler", "promote_types", "qint8", "quantization", "rand", "rand_like", "randint",
    "randn", "randn_like", "relu",
    "reshape", "result_type", "roll", "round", "rsqrt", "save", "set_grad_enabled", "set_num_threads",
    "set_rng_state", "sigmoid", "sign", "sin", "softmax", "sparse", "split", "sqrt", "squeeze", "stack",
    "std", "sub", "sum", "tanh", "tensor", "transpose", "tril", "triu", "unflatten", "unsqueeze", "utils",
    "var", "where", "zeros", "zeros_like",
]
