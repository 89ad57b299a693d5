"""``pyrt.nn.functional`` (PyTorch's ``F``): the neural-network ops as functions.

>>> import pyrt
>>> import pyrt.nn.functional as F
>>> F.gelu(pyrt.zeros(2)).tolist()
[0.0, 0.0]
"""

from pyrt.ops.activation import (
    dropout,
    elu,
    gelu,
    hardswish,
    hardtanh,
    leaky_relu,
    log_softmax,
    logsigmoid,
    relu,
    relu6,
    sigmoid,
    silu,
    softmax,
    softplus,
    tanh,
)
from pyrt.ops.attention import scaled_dot_product_attention
from pyrt.ops.conv import conv1d, conv2d, conv_transpose2d
from pyrt.ops.embedding import embedding, one_hot
from pyrt.ops.linalg import linear
from pyrt.ops.loss import (
    binary_cross_entropy,
    binary_cross_entropy_with_logits,
    cross_entropy,
    mse_loss,
    nll_loss,
)
from pyrt.ops.normalization import batch_norm, layer_norm
from pyrt.ops.padding import pad
from pyrt.ops.pool import avg_pool2d, max_pool2d
from pyrt.ops.rnn import gru_layer, lstm_layer

__all__ = [
    "avg_pool2d", "batch_norm", "binary_cross_entropy", "binary_cross_entropy_with_logits",
    "conv1d", "conv2d", "conv_transpose2d", "cross_entropy", "dropout", "elu", "embedding", "gelu",
    "gru_layer", "hardswish", "hardtanh", "layer_norm", "leaky_relu", "linear", "log_softmax",
    "logsigmoid", "lstm_layer", "max_pool2d", "mse_loss", "nll_loss", "one_hot", "pad", "relu",
    "relu6", "scaled_dot_product_attention", "sigmoid", "silu", "softmax", "softplus", "tanh",
]
