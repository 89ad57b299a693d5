"""Differentiable functions on tensors, grouped by kind. Each is a ``Function``
(forward and backward side by side) plus a lowercase wrapper that checks its
arguments; ``pyrt.nn.functional`` re-exports the neural-network ones."""

from pyrt.ops.activation import dropout, log_softmax, relu, sigmoid, softmax, tanh
from pyrt.ops.conv import conv2d
from pyrt.ops.einsum import einsum
from pyrt.ops.elementwise import (
    add,
    cast,
    clamp,
    clip,
    clone,
    div,
    floor_divide,
    lerp,
    masked_fill,
    maximum,
    minimum,
    mul,
    neg,
    pow,
    sub,
    where,
)
from pyrt.ops.embedding import embedding
from pyrt.ops.indexing import diagonal, gather, tril, triu
from pyrt.ops.linalg import linear, matmul
from pyrt.ops.loss import (
    binary_cross_entropy,
    binary_cross_entropy_with_logits,
    cross_entropy,
    mse_loss,
    nll_loss,
)
from pyrt.ops.normalization import batch_norm, layer_norm
from pyrt.ops.pool import avg_pool2d, max_pool2d
from pyrt.ops.promotion import promote_types, result_type
from pyrt.ops.reduce import (
    all,
    any,
    argmax,
    argmin,
    cumsum,
    logsumexp,
    max,
    mean,
    min,
    prod,
    std,
    sum,
    var,
)
from pyrt.ops.rnn import gru_layer, lstm_layer
from pyrt.ops.shape import (
    cat,
    chunk,
    expand,
    flatten,
    flip,
    getitem,
    permute,
    repeat,
    reshape,
    roll,
    split,
    squeeze,
    stack,
    transpose,
    unflatten,
    unsqueeze,
)
from pyrt.ops.unary import abs, ceil, cos, exp, exp2, floor, log, log2, round, rsqrt, sign, sin, sqrt

__all__ = [
    "abs", "add", "all", "any", "argmax", "argmin", "avg_pool2d", "batch_norm", "binary_cross_entropy",
    "binary_cross_entropy_with_logits", "cast", "cat", "ceil", "chunk", "clamp", "clip", "clone", "conv2d",
    "cos", "cross_entropy", "cumsum", "diagonal", "div", "dropout", "einsum", "embedding", "exp", "exp2",
    "expand", "flatten", "flip", "floor", "floor_divide", "gather", "getitem", "gru_layer", "layer_norm",
    "lerp", "linear", "log", "log2", "log_softmax", "logsumexp", "lstm_layer", "masked_fill", "matmul",
    "max", "max_pool2d", "maximum", "mean", "min", "minimum", "mse_loss", "mul", "neg", "nll_loss",
    "permute", "pow", "prod", "promote_types", "relu", "repeat", "reshape", "result_type", "roll", "round",
    "rsqrt", "sigmoid", "sign", "sin", "softmax", "split", "sqrt", "squeeze", "stack", "std", "sub", "sum",
    "tanh", "transpose", "tril", "triu", "unflatten", "unsqueeze", "var", "where",
]
