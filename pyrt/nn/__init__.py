"""``pyrt.nn``: modules, layers, losses, initialisers and the functional API.

>>> import pyrt
>>> from pyrt import nn
>>> model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
>>> model(pyrt.zeros(2, 8, 8)).shape
(2, 10)
"""

from pyrt.nn import functional, init, utils
from pyrt.nn.activation import Dropout, Flatten, LogSoftmax, ReLU, Sigmoid, Softmax, Tanh
from pyrt.nn.container import ModuleList, Sequential
from pyrt.nn.conv import Conv2d
from pyrt.nn.linear import Identity, Linear
from pyrt.nn.loss import BCELoss, BCEWithLogitsLoss, CrossEntropyLoss, MSELoss, NLLLoss
from pyrt.nn.module import Module
from pyrt.nn.normalization import BatchNorm1d, BatchNorm2d, LayerNorm
from pyrt.nn.parameter import Parameter
from pyrt.nn.pooling import AvgPool2d, MaxPool2d
from pyrt.nn.rnn import GRU, LSTM
from pyrt.nn.sparse import Embedding

__all__ = [
    "GRU", "LSTM", "AvgPool2d", "BCELoss", "BCEWithLogitsLoss", "BatchNorm1d", "BatchNorm2d", "Conv2d",
    "CrossEntropyLoss", "Dropout", "Embedding", "Flatten", "Identity", "LayerNorm",
    "Linear", "LogSoftmax", "MSELoss", "MaxPool2d", "Module", "ModuleList", "NLLLoss", "Parameter", "ReLU",
    "Sequential", "Sigmoid", "Softmax", "Tanh", "functional", "init", "utils",
]
