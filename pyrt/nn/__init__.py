"""``pyrt.nn``: modules, layers, losses, initialisers and the functional API.

>>> import pyrt
>>> from pyrt import nn
>>> model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
>>> model(pyrt.zeros(2, 8, 8)).shape
(2, 10)
"""

from pyrt.nn import functional, init, parallel, utils
from pyrt.nn.activation import (
    ELU,
    GELU,
    Dropout,
    Flatten,
    Hardswish,
    Hardtanh,
    LeakyReLU,
    LogSigmoid,
    LogSoftmax,
    ReLU,
    ReLU6,
    Sigmoid,
    SiLU,
    Softmax,
    Softplus,
    Tanh,
)
from pyrt.nn.attention import MultiheadAttention
from pyrt.nn.container import ModuleList, Sequential
from pyrt.nn.conv import Conv1d, Conv2d, ConvTranspose2d
from pyrt.nn.data_parallel import DataParallel
from pyrt.nn.embedding import Embedding
from pyrt.nn.linear import Identity, Linear
from pyrt.nn.loss import BCELoss, BCEWithLogitsLoss, CrossEntropyLoss, MSELoss, NLLLoss
from pyrt.nn.module import Module
from pyrt.nn.normalization import BatchNorm1d, BatchNorm2d, BatchNorm3d, LayerNorm
from pyrt.nn.parameter import Parameter
from pyrt.nn.pooling import AvgPool2d, MaxPool2d
from pyrt.nn.rnn import GRU, LSTM, GRUCell, LSTMCell
from pyrt.nn.transformer import TransformerEncoder, TransformerEncoderLayer

__all__ = [
    "ELU", "GELU", "GRU", "LSTM", "AvgPool2d", "BCELoss", "BCEWithLogitsLoss", "BatchNorm1d",
    "BatchNorm2d", "BatchNorm3d", "Conv1d", "Conv2d", "ConvTranspose2d", "CrossEntropyLoss",
    "DataParallel", "Dropout", "Embedding", "Flatten", "GRUCell", "Hardswish", "Hardtanh", "Identity",
    "LSTMCell", "LayerNorm", "LeakyReLU", "Linear", "LogSigmoid", "LogSoftmax", "MSELoss", "MaxPool2d",
    "Module", "ModuleList", "MultiheadAttention", "NLLLoss", "Parameter", "ReLU", "ReLU6", "Sequential",
    "SiLU", "Sigmoid", "Softmax", "Softplus", "Tanh", "TransformerEncoder", "TransformerEncoderLayer",
    "functional", "init", "parallel", "utils",
]
