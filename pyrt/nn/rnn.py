"""Recurrent layers ``LSTM`` and ``GRU`` and cells ``LSTMCell`` and ``GRUCell``, with
PyTorch's arguments, parameter names and shapes.

Each layer of the stack is one fused op (``pyrt.ops.rnn``): the Python loop
over time steps runs on raw arrays inside it, and its backward is
hand-written backpropagation through time. The modules own the parameters,
check shapes, handle ``batch_first``, unbatched input, initial states and
dropout between layers, and stack each layer's final state into
(num_layers * num_directions, batch, hidden_size).

``bidirectional=True`` runs a second stack member per layer over the
time-reversed sequence (its own ``*_reverse`` parameters) and concatenates
the two outputs along features, so the next layer sees 2 * hidden_size.
A cell is the same fused op over a sequence of length 1.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from pyrt import ops
from pyrt.autograd import Function
from pyrt.creation import zeros
from pyrt.nn import functional as F
from pyrt.nn import init
from pyrt.nn.module import Module
from pyrt.nn.parameter import Parameter
from pyrt.tensor import Tensor

__all__ = ["GRU", "LSTM", "GRUCell", "LSTMCell"]


class _RNNBase(Module):
    """Parameters and argument checks shared by ``LSTM`` and ``GRU``."""

    gate_count: int

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 dtype: Any = None) -> None:
        super().__init__()
        name = type(self).__name__
        if input_size < 1 or hidden_size < 1 or num_layers < 1:
            raise ValueError(f"{name}: input_size, hidden_size and num_layers must be >= 1, got "
                             f"{input_size}, {hidden_size} and {num_layers}")
        if not 0.0 <= dropout <= 1.0:
            raise ValueError(f"{name}: dropout must be in [0, 1], got {dropout}")
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.bias, self.batch_first, self.dropout = bias, batch_first, float(dropout)
        self.bidirectional = bool(bidirectional)
        self.num_directions = 2 if bidirectional else 1
        dtype = np.float32 if dtype is None else np.dtype(dtype)
        rows = self.gate_count * hidden_size
        # Registered in PyTorch's order, so state_dict keys line up one to one.
        for layer in range(num_layers):
            columns = input_size if layer == 0 else hidden_size * self.num_directions
            for suffix in self._suffixes():
                self.register_parameter(f"weight_ih_l{layer}{suffix}",
                                        Parameter(np.empty((rows, columns), dtype=dtype)))
                self.register_parameter(f"weight_hh_l{layer}{suffix}",
                                        Parameter(np.empty((rows, hidden_size), dtype=dtype)))
                if bias:
                    self.register_parameter(f"bias_ih_l{layer}{suffix}",
                                            Parameter(np.empty(rows, dtype=dtype)))
                    self.register_parameter(f"bias_hh_l{layer}{suffix}",
                                            Parameter(np.empty(rows, dtype=dtype)))
        self.reset_parameters()

    def _suffixes(self) -> tuple[str, ...]:
        return ("", "_reverse") if self.bidirectional else ("",)

    def reset_parameters(self) -> None:
        """Redraw every weight and bias from U(-1/sqrt(hidden_size), 1/sqrt(hidden_size))."""
        bound = 1 / math.sqrt(self.hidden_size)
        for p in self.parameters():
            init.uniform_(p, -bound, bound)

    def _layer_parameters(self, layer: int, suffix: str = "") -> tuple[Tensor | None, ...]:
        names = ("weight_ih", "weight_hh", "bias_ih", "bias_hh") if self.bias else (
            "weight_ih", "weight_hh")
        params = tuple(getattr(self, f"{n}_l{layer}{suffix}") for n in names)
        return params if self.bias else (*params, None, None)

    def _run_layer(self, x: Tensor, layer: int, states: list[Tensor]) -> tuple[Tensor, list[list[Tensor]]]:
        """One layer, both directions: (T, B, D*H) output and each direction's final states.

        ``states`` holds the stacked initial states (h0, and c0 for the LSTM), indexed
        by ``layer * num_directions + direction``.
        """
        outputs, finals = [], []
        for direction, suffix in enumerate(self._suffixes()):
            index = layer * self.num_directions + direction
            source = x if direction == 0 else _flip_time(x)
            result = self._layer_op(source, [s[index] for s in states], self._layer_parameters(layer, suffix))
            output = result[0] if direction == 0 else _flip_time(result[0])
            outputs.append(output)
            finals.append(list(result[1:]))
        output = outputs[0] if len(outputs) == 1 else ops.cat(outputs, dim=2)
        return output, finals

    def _time_major(self, input: Tensor) -> tuple[Tensor, bool]:
        """``input`` as (T, B, input_size), and whether it had a batch dimension."""
        name = type(self).__name__
        layout = "(batch, seq_len, input_size)" if self.batch_first else "(seq_len, batch, input_size)"
        if input.ndim not in (2, 3):
            raise ValueError(f"{name}: expected input of shape {layout}, or (seq_len, input_size) "
                             f"unbatched, got shape {input.shape}")
        if input.shape[-1] != self.input_size:
            raise ValueError(f"{name}: input.size(-1) must be equal to input_size. Expected "
                             f"{self.input_size}, got {input.shape[-1]} (input shape {input.shape})")
        if input.dtype != self.weight_ih_l0.dtype:
            raise TypeError(f"{name}: input is {input.dtype} but the parameters are "
                            f"{self.weight_ih_l0.dtype}")
        if input.ndim == 2:
            return input.unsqueeze(1), False
        return (input.transpose(0, 1) if self.batch_first else input), True

    def _initial_state(self, state: Tensor | None, label: str, batch: int, batched: bool,
                       like: Tensor) -> Tensor:
        """``state`` checked against (num_layers, batch, hidden_size), or zeros when None."""
        shape = (self.num_layers * self.num_directions, batch, self.hidden_size)
        if state is None:
            return zeros(shape, dtype=like.dtype, device=like.device)
        expected = shape if batched else (shape[0], self.hidden_size)
        if not isinstance(state, Tensor) or state.shape != expected:
            got = state.shape if isinstance(state, Tensor) else type(state).__name__
            raise ValueError(f"{type(self).__name__}: expected {label} of shape {expected}, "
                             f"got {got}")
        if state.dtype != like.dtype:
            raise TypeError(f"{type(self).__name__}: {label} is {state.dtype} but the input is "
                            f"{like.dtype}")
        return state if batched else state.unsqueeze(1)

    def _dropout_between_layers(self, output: Tensor, layer: int) -> Tensor:
        if layer == self.num_layers - 1:
            return output
        return F.dropout(output, self.dropout, self.training)

    def _batch_major(self, output: Tensor, batched: bool) -> Tensor:
        if not batched:
            return output.squeeze(1)
        return output.transpose(0, 1) if self.batch_first else output

    def extra_repr(self) -> str:
        text = f"{self.input_size}, {self.hidden_size}"
        if self.num_layers != 1:
            text += f", num_layers={self.num_layers}"
        if not self.bias:
            text += ", bias=False"
        if self.batch_first:
            text += ", batch_first=True"
        if self.dropout:
            text += f", dropout={self.dropout}"
        if self.bidirectional:
            text += ", bidirectional=True"
        return text


class LSTM(_RNNBase):
    """A multi-layer LSTM with PyTorch's arguments, parameters and results.

    Per layer, with gates in PyTorch's order ``i, f, g, o`` stacked in
    ``weight_ih_l{k}`` (4*hidden_size, in) and ``weight_hh_l{k}`` (4*hidden_size,
    hidden_size): i, f, o = sigmoid(...), g = tanh(...), c' = f*c + i*g,
    h' = o*tanh(c'). ``forward(input, (h0, c0))`` returns
    ``output, (h_n, c_n)``: output is (seq_len, batch, hidden_size) (batch first
    when ``batch_first``), h_n and c_n (num_layers, batch, hidden_size). States
    default to zeros. ``dropout`` applies to every layer's output but the last
    while training. ``bidirectional=True`` doubles the output features and the
    first dim of the states (layer-major: l0 forward, l0 reverse, l1 forward, ...).

    >>> import pyrt
    >>> lstm = LSTM(8, 16, num_layers=2, batch_first=True)
    >>> output, (h_n, c_n) = lstm(pyrt.ones(4, 10, 8))
    >>> output.shape, h_n.shape, c_n.shape
    ((4, 10, 16), (2, 4, 16), (2, 4, 16))
    >>> output, (h_n, c_n) = LSTM(8, 16, bidirectional=True)(pyrt.ones(10, 4, 8))
    >>> output.shape, h_n.shape
    ((10, 4, 32), (2, 4, 16))
    """

    gate_count = 4

    @staticmethod
    def _layer_op(x: Tensor, states: list[Tensor], params: tuple[Tensor | None, ...]) -> tuple[Tensor, ...]:
        return F.lstm_layer(x, states[0], states[1], *params)

    def forward(self, input: Tensor,
                hx: tuple[Tensor, Tensor] | None = None) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        x, batched = self._time_major(input)
        if hx is not None and (not isinstance(hx, tuple | list) or len(hx) != 2):
            raise TypeError(f"LSTM: hx must be a tuple (h0, c0), got {type(hx).__name__}")
        h0, c0 = (None, None) if hx is None else hx
        batch = x.shape[1]
        h0 = self._initial_state(h0, "h0", batch, batched, x)
        c0 = self._initial_state(c0, "c0", batch, batched, x)
        h_n, c_n = [], []
        for layer in range(self.num_layers):
            output, finals = self._run_layer(x, layer, [h0, c0])
            h_n.extend(h for h, _ in finals)
            c_n.extend(c for _, c in finals)
            x = self._dropout_between_layers(output, layer)
        h_last, c_last = ops.stack(h_n), ops.stack(c_n)
        if not batched:
            h_last, c_last = h_last.squeeze(1), c_last.squeeze(1)
        return self._batch_major(x, batched), (h_last, c_last)


class GRU(_RNNBase):
    """A multi-layer GRU with PyTorch's arguments, parameters and exact formula.

    Gates ``r, z, n`` are stacked in ``weight_ih_l{k}`` (3*hidden_size, in) and
    ``weight_hh_l{k}`` (3*hidden_size, hidden_size); r and z are sigmoids,
    n = tanh(W_in x + b_in + r * (W_hn h + b_hn)), h' = (1 - z) * n + z * h.
    ``forward(input, h0)`` returns ``output, h_n`` shaped as for ``LSTM``.

    >>> import pyrt
    >>> gru = GRU(8, 16)
    >>> output, h_n = gru(pyrt.ones(10, 4, 8))
    >>> output.shape, h_n.shape
    ((10, 4, 16), (1, 4, 16))
    >>> GRU(8, 16, num_layers=2, bidirectional=True)(pyrt.ones(10, 4, 8))[1].shape
    (4, 4, 16)
    """

    gate_count = 3

    @staticmethod
    def _layer_op(x: Tensor, states: list[Tensor], params: tuple[Tensor | None, ...]) -> tuple[Tensor, ...]:
        return F.gru_layer(x, states[0], *params)

    def forward(self, input: Tensor, hx: Tensor | None = None) -> tuple[Tensor, Tensor]:
        x, batched = self._time_major(input)
        h0 = self._initial_state(hx, "hx", x.shape[1], batched, x)
        h_n = []
        for layer in range(self.num_layers):
            output, finals = self._run_layer(x, layer, [h0])
            h_n.extend(h for (h,) in finals)
            x = self._dropout_between_layers(output, layer)
        h_last = ops.stack(h_n)
        return self._batch_major(x, batched), (h_last if batched else h_last.squeeze(1))


class _FlipTime(Function):
    """Reverse axis 0 (time): a view forward, the same view of the gradient backward."""

    def forward(self, x: Any) -> Any:
        return x[::-1]

    def backward(self, grad: Any) -> tuple[Any]:
        return (grad[::-1],)


def _flip_time(x: Tensor) -> Tensor:
    return _FlipTime.apply(x)


class _CellBase(Module):
    """Parameters (``weight_ih``, ``weight_hh``, ``bias_ih``, ``bias_hh``) and checks of a cell."""

    gate_count: int

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, dtype: Any = None) -> None:
        super().__init__()
        if input_size < 1 or hidden_size < 1:
            raise ValueError(f"{type(self).__name__}: input_size and hidden_size must be >= 1, got "
                             f"{input_size} and {hidden_size}")
        self.input_size, self.hidden_size, self.bias = input_size, hidden_size, bias
        dtype = np.float32 if dtype is None else np.dtype(dtype)
        rows = self.gate_count * hidden_size
        self.weight_ih = Parameter(np.empty((rows, input_size), dtype=dtype))
        self.weight_hh = Parameter(np.empty((rows, hidden_size), dtype=dtype))
        if bias:
            self.bias_ih = Parameter(np.empty(rows, dtype=dtype))
            self.bias_hh = Parameter(np.empty(rows, dtype=dtype))
        else:
            self.register_parameter("bias_ih", None)
            self.register_parameter("bias_hh", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Redraw every weight and bias from U(-1/sqrt(hidden_size), 1/sqrt(hidden_size))."""
        bound = 1 / math.sqrt(self.hidden_size)
        for p in self.parameters():
            init.uniform_(p, -bound, bound)

    def _sequence_of_one(self, input: Tensor) -> tuple[Tensor, bool]:
        """``input`` (B, I) or (I,) as a length-1 sequence (1, B, I), and whether it was batched."""
        name = type(self).__name__
        if input.ndim not in (1, 2) or input.shape[-1] != self.input_size:
            raise ValueError(f"{name}: expected input (batch, {self.input_size}) or "
                             f"({self.input_size},), got shape {input.shape}")
        if input.dtype != self.weight_ih.dtype:
            raise TypeError(f"{name}: input is {input.dtype} but the parameters are {self.weight_ih.dtype}")
        batched = input.ndim == 2
        return (input if batched else input.unsqueeze(0)).unsqueeze(0), batched

    def _state(self, state: Tensor | None, label: str, x: Tensor, batched: bool) -> Tensor:
        batch = x.shape[1]
        if state is None:
            return zeros((batch, self.hidden_size), dtype=x.dtype, device=x.device)
        expected = (batch, self.hidden_size) if batched else (self.hidden_size,)
        if not isinstance(state, Tensor) or state.shape != expected:
            got = state.shape if isinstance(state, Tensor) else type(state).__name__
            raise ValueError(f"{type(self).__name__}: expected {label} of shape {expected}, got {got}")
        return state if batched else state.unsqueeze(0)

    def _parameters_in_order(self) -> tuple[Tensor | None, ...]:
        return self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh

    def extra_repr(self) -> str:
        return f"{self.input_size}, {self.hidden_size}" + ("" if self.bias else ", bias=False")


class LSTMCell(_CellBase):
    """One LSTM step: ``(h', c') = cell(x, (h, c))`` with PyTorch's parameters and gate order.

    >>> import pyrt
    >>> cell = LSTMCell(3, 5)
    >>> h, c = cell(pyrt.ones(2, 3))
    >>> h.shape, c.shape
    ((2, 5), (2, 5))
    >>> h, c = cell(pyrt.ones(3), (h[0], c[0]))  # unbatched
    >>> h.shape
    (5,)
    """

    gate_count = 4

    def forward(self, input: Tensor, hx: tuple[Tensor, Tensor] | None = None) -> tuple[Tensor, Tensor]:
        x, batched = self._sequence_of_one(input)
        if hx is not None and (not isinstance(hx, tuple | list) or len(hx) != 2):
            raise TypeError(f"LSTMCell: hx must be a tuple (h, c), got {type(hx).__name__}")
        h0, c0 = (None, None) if hx is None else hx
        _, h, c = F.lstm_layer(x, self._state(h0, "h", x, batched), self._state(c0, "c", x, batched),
                               *self._parameters_in_order())
        return (h, c) if batched else (h.squeeze(0), c.squeeze(0))


class GRUCell(_CellBase):
    """One GRU step: ``h' = cell(x, h)`` with PyTorch's parameters and formula.

    >>> import pyrt
    >>> GRUCell(3, 5)(pyrt.ones(2, 3)).shape
    (2, 5)
    """

    gate_count = 3

    def forward(self, input: Tensor, hx: Tensor | None = None) -> Tensor:
        x, batched = self._sequence_of_one(input)
        _, h = F.gru_layer(x, self._state(hx, "hx", x, batched), *self._parameters_in_order())
        return h if batched else h.squeeze(0)
