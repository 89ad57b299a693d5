"""``pyrt.nn.functional`` (PyTorch's ``F``): the neural-network ops as functions."""

from pyrt.ops import (
    avg_pool2d,
    batch_norm,
    binary_cross_entropy,
    binary_cross_entropy_with_logits,
    conv2d,
    cross_entropy,
    dropout,
    embedding,
    gru_layer,
    layer_norm,
    linear,
    log_softmax,
    lstm_layer,
    max_pool2d,
    mse_loss,
    nll_loss,
    relu,
    sigmoid,
    softmax,
    tanh,
)

__all__ = [
    "avg_pool2d", "batch_norm", "binary_cross_entropy", "binary_cross_entropy_with_logits",
    "conv2d", "cross_entropy", "dropout", "embedding", "gru_layer", "layer_norm",
    "linear", "log_softmax",
    "lstm_layer", "max_pool2d", "mse_loss", "nll_loss", "relu", "sigmoid", "softmax", "tanh",
]
