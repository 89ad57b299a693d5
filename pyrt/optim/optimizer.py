"""``Optimizer``: parameter groups, per-parameter state, and their (de)serialisation.

The layout follows PyTorch so checkpoints and habits carry over:
``param_groups`` is a list of dicts (``"params"`` plus hyperparameters),
``state`` maps a parameter to a dict of its buffers, and ``state_dict()``
refers to parameters by their position across groups, never by identity.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np

from pyrt.autograd import enable_grad, on_device_of
from pyrt.backend import get_array_module
from pyrt.tensor import Tensor

__all__ = ["Optimizer"]

ParamsT = Iterable[Tensor] | Iterable[dict[str, Any]]


class Optimizer:
    """Base class: subclasses define ``step`` over ``self.param_groups``.

    >>> import pyrt
    >>> from pyrt import nn, optim
    >>> model = nn.Linear(3, 1)
    >>> opt = optim.SGD([{"params": [model.weight]}, {"params": [model.bias], "lr": 0.1}], lr=0.01)
    >>> [g["lr"] for g in opt.param_groups]
    [0.01, 0.1]
    """

    def __init__(self, params: ParamsT, defaults: dict[str, Any]) -> None:
        self.defaults = defaults
        self.state: dict[Tensor, dict[str, Any]] = {}
        self.param_groups: list[dict[str, Any]] = []
        if isinstance(params, Tensor):
            raise TypeError(
                "params argument given to the optimizer should be an iterable of Tensors or "
                f"dicts, but got {type(params).__name__}"
            )
        groups = list(params)
        if len(groups) == 0:
            raise ValueError("optimizer got an empty parameter list")
        if not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        for group in groups:
            self.add_param_group(group)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a group of parameters with its own hyperparameters (defaults fill the rest).

        >>> import pyrt
        >>> from pyrt import optim
        >>> a, b = pyrt.zeros(2, requires_grad=True), pyrt.zeros(2, requires_grad=True)
        >>> opt = optim.SGD([a], lr=0.1)
        >>> opt.add_param_group({"params": [b], "lr": 0.01})
        >>> len(opt.param_groups)
        2
        """
        if not isinstance(param_group, dict):
            raise TypeError(f"param_group must be a dict, got {type(param_group).__name__}")
        params = param_group["params"]
        if isinstance(params, Tensor):
            params = [params]
        elif isinstance(params, set):
            raise TypeError("optimizer parameters need to be organized in ordered collections, "
                            "but the ordering of tensors in sets will change between runs")
        params = list(params)
        for p in params:
            if not isinstance(p, Tensor):
                raise TypeError(f"optimizer can only optimize Tensors, got {type(p).__name__}")
            if not p.is_leaf:
                raise ValueError("can't optimize a non-leaf Tensor")
        if len({id(p) for p in params}) != len(params):
            raise ValueError("optimizer contains a parameter group with duplicate parameters")
        group = {**self.defaults, **param_group, "params": params}
        existing = {id(p) for g in self.param_groups for p in g["params"]}
        if any(id(p) in existing for p in params):
            raise ValueError("some parameters appear in more than one parameter group")
        self.param_groups.append(group)

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Reset every parameter's gradient: drop it (default) or fill it with zeros.

        >>> import pyrt
        >>> from pyrt import optim
        >>> w = pyrt.ones(2, requires_grad=True)
        >>> (w * w).sum().backward()
        >>> opt = optim.SGD([w], lr=0.1)
        >>> opt.zero_grad()
        >>> w.grad is None
        True
        """
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                if set_to_none:
                    p.grad = None
                else:
                    with on_device_of(p.grad):
                        p.grad.data = get_array_module(p.grad.data).zeros_like(p.grad.data)

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Update every parameter that has a gradient; returns ``closure()`` if given."""
        loss = None
        if closure is not None:
            with enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    # With the parameter's GPU current, as PyTorch's device guard: cupy allocates
                    # new state on the current device and refuses to compute across devices.
                    with on_device_of(p):
                        self._update(p, p.grad.data, group, self.state.setdefault(p, {}))
                    p._version += 1  # graphs recorded with the old values must not backward
        return loss

    def _update(self, p: Tensor, grad: Any, group: dict[str, Any], state: dict[str, Any]) -> None:
        raise NotImplementedError(f"{type(self).__name__} must implement _update")

    # --- state dict -----------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """``{"state": {index: {...}}, "param_groups": [...]}`` with parameters as indices.

        The state's arrays are shared, not copied (as in PyTorch); save them
        with ``pyrt.save`` to snapshot.

        >>> import pyrt
        >>> from pyrt import optim
        >>> w = pyrt.ones(2, requires_grad=True)
        >>> optim.SGD([w], lr=0.1).state_dict()["param_groups"][0]["params"]
        [0]
        """
        index: dict[int, int] = {}
        groups = []
        for group in self.param_groups:
            for p in group["params"]:
                index.setdefault(id(p), len(index))
            groups.append({**group, "params": [index[id(p)] for p in group["params"]]})
        state = {index[id(p)]: dict(s) for p, s in self.state.items() if id(p) in index}
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restore hyperparameters and per-parameter state saved by ``state_dict()``.

        Groups must have the same sizes as this optimizer's; state arrays are
        copied and cast to each parameter's dtype.

        >>> import pyrt
        >>> from pyrt import optim
        >>> w = pyrt.ones(2, requires_grad=True)
        >>> saved = optim.SGD([w], lr=0.5).state_dict()
        >>> opt = optim.SGD([w], lr=0.1)
        >>> opt.load_state_dict(saved)
        >>> opt.param_groups[0]["lr"]
        0.5
        """
        if "state" not in state_dict or "param_groups" not in state_dict:
            raise ValueError("optimizer state_dict must have 'state' and 'param_groups' entries, "
                             f"got keys {sorted(state_dict)}")
        saved_groups = list(state_dict["param_groups"])
        if len(saved_groups) != len(self.param_groups):
            raise ValueError(f"loaded state dict has {len(saved_groups)} parameter groups, "
                             f"this optimizer has {len(self.param_groups)}")
        by_index: dict[int, Tensor] = {}
        for i, (group, saved) in enumerate(zip(self.param_groups, saved_groups, strict=True)):
            if len(group["params"]) != len(saved["params"]):
                raise ValueError(
                    f"loaded state dict contains a parameter group ({i}) of "
                    f"{len(saved['params'])} parameters that doesn't match the size of "
                    f"optimizer's group ({len(group['params'])} parameters)"
                )
            for p, index in zip(group["params"], saved["params"], strict=True):
                by_index[int(index)] = p
        new_state: dict[Tensor, dict[str, Any]] = {}
        for index, saved_state in state_dict["state"].items():
            p = by_index.get(int(index))
            if p is None:
                raise ValueError(f"optimizer state refers to parameter {index}, which no group has")
            new_state[p] = {key: self._restore(p, key, value) for key, value in saved_state.items()}
        for group, saved in zip(self.param_groups, saved_groups, strict=True):
            group.update({k: v for k, v in saved.items() if k != "params"})
        self.state = new_state

    @staticmethod
    def _restore(p: Tensor, key: str, value: Any) -> Any:
        if isinstance(value, Tensor):
            value = value.data
        if hasattr(value, "shape") and hasattr(value, "dtype"):
            if tuple(value.shape) != p.shape:
                raise ValueError(f"optimizer state '{key}' has shape {tuple(value.shape)} but "
                                 f"its parameter has shape {p.shape}")
            # A copy in the parameter's dtype and array library: the loaded
            # state must not alias the caller's dict.
            xp = get_array_module(p.data)
            return Tensor(xp.array(value, dtype=p.dtype if np.issubdtype(value.dtype, np.floating)
                                   else value.dtype))
        return value

    def __repr__(self) -> str:
        lines = [f"{type(self).__name__} ("]
        for i, group in enumerate(self.param_groups):
            lines.append(f"Parameter Group {i}")
            lines += [f"    {key}: {group[key]}" for key in sorted(group) if key != "params"]
        return "\n".join([*lines, ")"])
