"""Differentiable functions on tensors, grouped by kind. Each is a ``Function``
(forward and backward side by side) plus a lowercase wrapper that checks its
arguments; ``pyrt.nn.functional`` re-exports the neural-network ones."""

from pyrt.ops.activation import dropout, log_softmax, relu, sigmoid, softmax, tanh
from pyrt.ops.conv import conv2d
from pyrt.ops.elementwise import (
    abs,
    add,
    cast,
    clamp,
    clone,
    div,
    exp,
    log,
    maximum,
    minimum,
    mul,
    neg,
    pow,
    sqrt,
    sub,
    where,
)
from pyrt.ops.embedding import embedding
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
from pyrt.ops.reduce import argmax, argmin, logsumexp, max, mean, min, sum, var
from pyrt.ops.rnn import gru_layer, lstm_layer
from pyrt.ops.shape import (
    cat,
    expand,
    flatten,
    getitem,
    permute,
    reshape,
    squeeze,
    stack,
    transpose,
    unsqueeze,
)

__all__ = [
    "abs", "add", "argmax", "argmin", "avg_pool2d", "batch_norm", "binary_cross_entropy",
    "binary_cross_entropy_with_logits",
    "cast", "cat", "clamp", "clone", "conv2d", "cross_entropy", "div", "dropout", "embedding", "exp",
    "expand",
    "flatten", "getitem", "gru_layer", "layer_norm", "linear", "log", "log_softmax", "logsumexp",
    "lstm_layer", "matmul", "max",
    "max_pool2d", "maximum", "mean", "min", "minimum", "mse_loss", "mul", "neg", "nll_loss", "permute", "pow",
    "relu", "reshape", "sigmoid", "softmax", "sqrt", "squeeze", "stack", "sub", "sum", "tanh",
    "transpose", "unsqueeze", "var", "where",
]
