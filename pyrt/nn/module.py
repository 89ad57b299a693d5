"""``Module``: the base class of every layer and model.

A module owns three ordered registries, filled by plain attribute assignment
as in PyTorch: ``_parameters`` (``Parameter`` values), ``_buffers`` (tensors that
are state but not learned, e.g. running statistics) and ``_modules``
(submodules). Everything else (``parameters()``, ``state_dict()``, ``train()``,
``repr``) is a walk over those registries.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from typing import Any, NamedTuple

import numpy as np

from pyrt.autograd import on_device_of
from pyrt.backend import move_array
from pyrt.nn.parameter import Parameter
from pyrt.tensor import Tensor
from pyrt.utils.hooks import RemovableHandle

__all__ = ["IncompatibleKeys", "Module"]


class IncompatibleKeys(NamedTuple):
    """What ``load_state_dict(strict=False)`` could not match."""

    missing_keys: list[str]
    unexpected_keys: list[str]


def _check_name(kind: str, name: Any) -> None:
    if not isinstance(name, str):
        raise TypeError(f"{kind} name should be a string, got {type(name).__name__}")
    if name == "" or "." in name:
        raise KeyError(f"{kind} name can't be empty or contain '.', got {name!r}")


def _addindent(text: str, spaces: int) -> str:
    lines = text.split("\n")
    return "\n".join([lines[0]] + [" " * spaces + line for line in lines[1:]])


def _parse_to_arguments(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, Any]:
    """``Module.to``'s PyTorch forms -> ((kind, index) or None, float dtype or None)."""
    from pyrt.cuda import parse_device, sort_to_args

    unknown = set(kwargs) - {"device", "dtype", "non_blocking", "memory_format"}
    if unknown:
        raise TypeError(f"Module.to() got unexpected keyword arguments {sorted(unknown)}")
    if len(args) > 2:
        raise TypeError(f"Module.to() takes at most 2 positional arguments, got {len(args)}")
    device, dtype = sort_to_args(args, kwargs.get("device"), kwargs.get("dtype"))
    if dtype is not None:
        dtype = np.dtype(dtype)
        if not np.issubdtype(dtype, np.floating):
            raise TypeError(f"Module.to only accepts floating point dtypes, got {dtype}")
    return (None if device is None else parse_device(device)), dtype


class Module:
    """Base class for layers and models: subclass it, assign layers, write ``forward``.

    >>> import pyrt
    >>> from pyrt import nn
    >>> class Net(nn.Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.fc = nn.Linear(4, 2)
    ...     def forward(self, x):
    ...         return self.fc(x).relu()
    >>> net = Net()
    >>> [name for name, _ in net.named_parameters()]
    ['fc.weight', 'fc.bias']
    >>> net(pyrt.ones(3, 4)).shape
    (3, 2)
    """

    training: bool

    def __init__(self) -> None:
        # object.__setattr__ because our own __setattr__ reads these registries.
        object.__setattr__(self, "training", True)
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "_non_persistent_buffers", set())
        object.__setattr__(self, "_modules", OrderedDict())
        # Hook id -> callable, in registration order; keyed by id so a handle can
        # remove its own hook (pruning also finds its hooks here, as in PyTorch).
        object.__setattr__(self, "_forward_pre_hooks", OrderedDict())
        object.__setattr__(self, "_forward_hooks", OrderedDict())

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError(f'Module [{type(self).__name__}] is missing "forward"')

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        # A training step calls this for every layer: without hooks it costs two
        # dict truth tests over a plain forward call.
        if self._forward_pre_hooks or self._forward_hooks:
            return self._call_with_hooks(args, kwargs)
        return self.forward(*args, **kwargs)

    def _call_with_hooks(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        # Iterate over snapshots: a hook may remove itself (or another) while running,
        # and, as in PyTorch, that takes effect from the next call on.
        for hook in tuple(self._forward_pre_hooks.values()):
            result = hook(self, args)
            if result is not None:
                args = result if isinstance(result, tuple) else (result,)
        output = self.forward(*args, **kwargs)
        for hook in tuple(self._forward_hooks.values()):
            result = hook(self, args, output)
            if result is not None:
                output = result
        return output

    def register_forward_pre_hook(self, hook: Callable[[Module, tuple[Any, ...]], Any]) -> RemovableHandle:
        """Call ``hook(module, args)`` before every ``forward``; it may return new args.

        A returned non-tuple becomes the single positional argument; ``None``
        keeps the args. Hooks run in registration order and are not state.

        >>> import pyrt
        >>> from pyrt import nn
        >>> relu = nn.ReLU()
        >>> handle = relu.register_forward_pre_hook(lambda module, args: args[0] * -1)
        >>> relu(pyrt.tensor([1.0, -2.0])).tolist()
        [0.0, 2.0]
        >>> handle.remove()
        >>> relu(pyrt.tensor([1.0, -2.0])).tolist()
        [1.0, 0.0]
        """
        handle = RemovableHandle(self._forward_pre_hooks)
        self._forward_pre_hooks[handle.id] = hook
        return handle

    def register_forward_hook(self, hook: Callable[[Module, tuple[Any, ...], Any], Any]) -> RemovableHandle:
        """Call ``hook(module, args, output)`` after every ``forward``; it may return a new output.

        >>> import pyrt
        >>> from pyrt import nn
        >>> seen = []
        >>> relu = nn.ReLU()
        >>> with relu.register_forward_hook(lambda m, args, out: seen.append(out.shape)):
        ...     _ = relu(pyrt.zeros(2, 3))
        >>> _ = relu(pyrt.zeros(4))   # the handle's context removed the hook
        >>> seen
        [(2, 3)]
        """
        handle = RemovableHandle(self._forward_hooks)
        self._forward_hooks[handle.id] = hook
        return handle

    # --- registration -------------------------------------------------------------
    def _registries(self) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
        try:
            return self.__dict__["_parameters"], self.__dict__["_buffers"], self.__dict__["_modules"]
        except KeyError:
            raise AttributeError(
                f"cannot assign to {type(self).__name__} before Module.__init__() call"
            ) from None

    def register_parameter(self, name: str, param: Parameter | None) -> None:
        """Add a parameter (or a ``None`` placeholder, like a missing bias).

        >>> m = Module()
        >>> m.register_parameter("scale", Parameter(np.ones(1, np.float32)))
        >>> [n for n, _ in m.named_parameters()]
        ['scale']
        """
        params, _, _ = self._registries()
        _check_name("parameter", name)
        if hasattr(self, name) and name not in params:
            raise KeyError(f"attribute '{name}' already exists")
        if param is not None and not isinstance(param, Parameter):
            raise TypeError(
                f"cannot assign '{type(param).__name__}' object to parameter '{name}' "
                "(pyrt.nn.Parameter or None required)"
            )
        params[name] = param

    def register_buffer(self, name: str, tensor: Tensor | None, persistent: bool = True) -> None:
        """Add non-learned state; persistent buffers are part of ``state_dict()``.

        >>> import pyrt
        >>> m = Module()
        >>> m.register_buffer("count", pyrt.zeros(1))
        >>> list(m.state_dict())
        ['count']
        """
        _, buffers, _ = self._registries()
        _check_name("buffer", name)
        if hasattr(self, name) and name not in buffers:
            raise KeyError(f"attribute '{name}' already exists")
        if tensor is not None and not isinstance(tensor, Tensor):
            raise TypeError(
                f"cannot assign '{type(tensor).__name__}' object to buffer '{name}' "
                "(pyrt.Tensor or None required)"
            )
        buffers[name] = tensor
        if persistent:
            self._non_persistent_buffers.discard(name)
        else:
            self._non_persistent_buffers.add(name)

    def add_module(self, name: str, module: Module | None) -> None:
        """Add a submodule under ``name`` (what attribute assignment does).

        >>> m = Module()
        >>> m.add_module("child", Module())
        >>> [n for n, _ in m.named_children()]
        ['child']
        """
        _, _, modules = self._registries()
        _check_name("module", name)
        if hasattr(self, name) and name not in modules:
            raise KeyError(f"attribute '{name}' already exists")
        if module is not None and not isinstance(module, Module):
            raise TypeError(f"{type(module).__name__} is not a Module subclass")
        modules[name] = module

    register_module = add_module

    def __setattr__(self, name: str, value: Any) -> None:
        params, buffers, modules = self._registries()

        def forget(*registries: dict[str, Any]) -> None:
            self.__dict__.pop(name, None)
            for registry in registries:
                registry.pop(name, None)
            self._non_persistent_buffers.discard(name)

        if isinstance(value, Parameter):
            forget(buffers, modules)
            self.register_parameter(name, value)
        elif isinstance(value, Module):
            forget(params, buffers)
            modules[name] = value
        elif name in params:
            if value is not None:
                raise TypeError(
                    f"cannot assign '{type(value).__name__}' as parameter '{name}' "
                    "(pyrt.nn.Parameter or None expected)"
                )
            params[name] = None
        elif name in modules:
            if value is not None:
                raise TypeError(
                    f"cannot assign '{type(value).__name__}' as child module '{name}' "
                    "(pyrt.nn.Module or None expected)"
                )
            modules[name] = None
        elif name in buffers:
            if value is not None and not isinstance(value, Tensor):
                raise TypeError(
                    f"cannot assign '{type(value).__name__}' as buffer '{name}' "
                    "(pyrt.Tensor or None expected)"
                )
            buffers[name] = value
        else:
            object.__setattr__(self, name, value)

    def __getattr__(self, name: str) -> Any:
        # Only reached when normal lookup fails, i.e. for registered entries.
        for registry in ("_parameters", "_buffers", "_modules"):
            entries = self.__dict__.get(registry)
            if entries is not None and name in entries:
                return entries[name]
        raise AttributeError(f"'{type(self).__name__}' object has no attribute '{name}'")

    def __delattr__(self, name: str) -> None:
        for registry in ("_parameters", "_buffers", "_modules"):
            entries = self.__dict__[registry]
            if name in entries:
                del entries[name]
                self._non_persistent_buffers.discard(name)
                return
        object.__delattr__(self, name)

    def __dir__(self) -> list[str]:
        return sorted(set(super().__dir__()) | set(self._parameters) | set(self._buffers)
                      | set(self._modules))

    # --- traversal ------------------------------------------------------------------
    def named_modules(self, memo: set[int] | None = None, prefix: str = "",
                      remove_duplicate: bool = True) -> Iterator[tuple[str, Module]]:
        """This module and every submodule, depth first, each shared module once.

        >>> from pyrt import nn
        >>> [n for n, _ in nn.Sequential(nn.Linear(2, 2), nn.ReLU()).named_modules()]
        ['', '0', '1']
        """
        memo = set() if memo is None else memo
        if remove_duplicate:
            if id(self) in memo:
                return
            memo.add(id(self))
        yield prefix, self
        for name, module in self._modules.items():
            if module is not None:
                child_prefix = f"{prefix}.{name}" if prefix else name
                yield from module.named_modules(memo, child_prefix, remove_duplicate)

    def modules(self) -> Iterator[Module]:
        """Every module in the tree, this one first.

        >>> len(list(Module().modules()))
        1
        """
        for _, module in self.named_modules():
            yield module

    def named_children(self) -> Iterator[tuple[str, Module]]:
        """Direct submodules with their names, each shared module once.

        >>> list(Module().named_children())
        []
        """
        seen: set[int] = set()
        for name, module in self._modules.items():
            if module is not None and id(module) not in seen:
                seen.add(id(module))
                yield name, module

    def children(self) -> Iterator[Module]:
        """Direct submodules.

        >>> list(Module().children())
        []
        """
        for _, module in self.named_children():
            yield module

    def _named_members(self, registry: str, prefix: str, recurse: bool,
                       remove_duplicate: bool = True) -> Iterator[tuple[str, Tensor]]:
        # A parameter shared by two layers (tied weights) is yielded once, so an
        # optimizer never updates it twice.
        seen: set[int] = set()
        owners = (self.named_modules(prefix=prefix, remove_duplicate=remove_duplicate)
                  if recurse else [(prefix, self)])
        for owner_prefix, owner in owners:
            for name, value in owner.__dict__[registry].items():
                if value is None or (remove_duplicate and id(value) in seen):
                    continue
                seen.add(id(value))
                yield (f"{owner_prefix}.{name}" if owner_prefix else name), value

    def named_parameters(self, prefix: str = "", recurse: bool = True,
                         remove_duplicate: bool = True) -> Iterator[tuple[str, Parameter]]:
        """``(dotted name, parameter)`` pairs over the tree, shared parameters once.

        >>> from pyrt import nn
        >>> [n for n, _ in nn.Linear(2, 3).named_parameters()]
        ['weight', 'bias']
        """
        yield from self._named_members("_parameters", prefix, recurse, remove_duplicate)  # type: ignore[misc]

    def parameters(self, recurse: bool = True) -> Iterator[Parameter]:
        """The parameters to hand to an optimizer.

        >>> from pyrt import nn
        >>> sum(p.numel() for p in nn.Linear(2, 3).parameters())
        9
        """
        for _, param in self.named_parameters(recurse=recurse):
            yield param

    def named_buffers(self, prefix: str = "", recurse: bool = True,
                      remove_duplicate: bool = True) -> Iterator[tuple[str, Tensor]]:
        """``(dotted name, buffer)`` pairs over the tree.

        >>> list(Module().named_buffers())
        []
        """
        yield from self._named_members("_buffers", prefix, recurse, remove_duplicate)

    def buffers(self, recurse: bool = True) -> Iterator[Tensor]:
        """The buffers of the tree.

        >>> list(Module().buffers())
        []
        """
        for _, buffer in self.named_buffers(recurse=recurse):
            yield buffer

    def get_submodule(self, target: str) -> Module:
        """The submodule at a dotted path (``""`` is this module).

        >>> from pyrt import nn
        >>> type(nn.Sequential(nn.ReLU()).get_submodule("0")).__name__
        'ReLU'
        """
        module = self
        for part in target.split(".") if target else []:
            child = module._modules.get(part)
            if child is None:
                raise AttributeError(f"{type(module).__name__} has no submodule '{part}' "
                                     f"(looking up '{target}')")
            module = child
        return module

    # --- modes and bulk updates ---------------------------------------------------------
    def train(self, mode: bool = True) -> Module:
        """Set training mode (dropout active) on this module and its submodules.

        >>> Module().train(False).training
        False
        """
        if not isinstance(mode, bool):
            raise ValueError("training mode is expected to be boolean")
        for module in self.modules():
            object.__setattr__(module, "training", mode)
        return self

    def eval(self) -> Module:
        """Set evaluation mode: ``train(False)``.

        >>> Module().eval().training
        False
        """
        return self.train(False)

    def requires_grad_(self, requires_grad: bool = True) -> Module:
        """Turn gradient recording for every parameter on or off (freezing).

        >>> from pyrt import nn
        >>> all(not p.requires_grad for p in nn.Linear(2, 2).requires_grad_(False).parameters())
        True
        """
        for param in self.parameters():
            param.requires_grad_(requires_grad)
        return self

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Reset every parameter's gradient: drop it (default) or fill it with zeros.

        >>> import pyrt
        >>> from pyrt import nn
        >>> m = nn.Linear(2, 1)
        >>> m(pyrt.ones(1, 2)).sum().backward()
        >>> m.zero_grad()
        >>> m.weight.grad is None
        True
        """
        for param in self.parameters():
            if param.grad is None:
                continue
            if set_to_none:
                param.grad = None
            else:
                with on_device_of(param.grad):
                    param.grad.data = param.grad.data * 0

    def apply(self, fn: Callable[[Module], Any]) -> Module:
        """Call ``fn`` on every submodule (children first) and then on this module.

        >>> from pyrt import nn
        >>> names = []
        >>> _ = nn.Sequential(nn.ReLU()).apply(lambda m: names.append(type(m).__name__))
        >>> names
        ['ReLU', 'Sequential']
        """
        for module in self.children():
            module.apply(fn)
        fn(self)
        return self

    def to(self, *args: Any, **kwargs: Any) -> Module:
        """Move and/or cast parameters and buffers in place (module identity kept), as in PyTorch.

        Accepts ``to(dtype)``, ``to(device)``, ``to(device, dtype)``, ``to(tensor)`` and the
        keywords ``device=``, ``dtype=``, ``non_blocking=`` (ignored). A device is
        ``"cpu"``, ``"cuda"``/``"cuda:N"``, an int ``N`` (``model.to(rank)``) or a
        ``torch.device``; a CUDA device that is not there raises a ``RuntimeError``
        saying so (``pyrt.cuda.device_count()``). Only floating-point state changes
        dtype. Parameters stay the same objects, so an optimizer built before the
        call still holds them.

        >>> import pyrt
        >>> from pyrt import nn
        >>> nn.Linear(2, 2).to(pyrt.float64).weight.dtype
        dtype('float64')
        >>> nn.Linear(2, 2).to("cpu", pyrt.float64).weight.dtype
        dtype('float64')
        >>> if not pyrt.cuda.is_available():
        ...     nn.Linear(2, 2).to(0)
        Traceback (most recent call last):
        ...
        RuntimeError: CUDA device 0 was requested (0) but this machine has 0 visible CUDA devices ...
        """
        device, dtype = _parse_to_arguments(args, kwargs)
        if device is not None:
            kind, index = device
            for tensor in self._state_tensors():
                tensor.data = move_array(tensor.data, kind, index)
                if tensor.grad is not None:
                    tensor.grad.data = move_array(tensor.grad.data, kind, index)
        if dtype is not None:
            for tensor in self._state_tensors():
                if np.issubdtype(tensor.dtype, np.floating):
                    with on_device_of(tensor):
                        tensor.data = tensor.data.astype(dtype)
                        if tensor.grad is not None:
                            tensor.grad.data = tensor.grad.data.astype(dtype)
        return self

    def _state_tensors(self) -> list[Tensor]:
        return [*self.parameters(), *self.buffers()]

    def cuda(self, device: Any = None) -> Module:
        """Move to CUDA device ``device`` (default 0); an error when it is absent.

        >>> import pyrt
        >>> from pyrt import nn
        >>> if not pyrt.cuda.is_available():
        ...     nn.Linear(2, 2).cuda()
        Traceback (most recent call last):
        ...
        RuntimeError: CUDA device 0 was requested ('cuda') but this machine has 0 visible CUDA devices ...
        """
        return self.to("cuda" if device is None else device)

    def cpu(self) -> Module:
        """Move every parameter and buffer to the CPU (numpy arrays).

        >>> from pyrt import nn
        >>> nn.Linear(2, 2).cpu().weight.device
        'cpu'
        """
        return self.to("cpu")

    def float(self) -> Module:
        """Cast floating-point state to float32.

        >>> from pyrt import nn
        >>> nn.Linear(1, 1).double().float().weight.dtype
        dtype('float32')
        """
        return self.to(np.float32)

    def double(self) -> Module:
        """Cast floating-point state to float64.

        >>> from pyrt import nn
        >>> nn.Linear(1, 1).double().bias.dtype
        dtype('float64')
        """
        return self.to(np.float64)

    # --- state dict ---------------------------------------------------------------------
    def _state_items(self) -> Iterator[tuple[str, Tensor]]:
        """Every parameter and persistent buffer by dotted name, duplicates included.

        Tied weights appear under each owner's name, as in PyTorch, so a
        checkpoint loads into a model whether or not it ties them.
        """
        for prefix, module in self.named_modules(remove_duplicate=False):
            dot = f"{prefix}." if prefix else ""
            for name, param in module._parameters.items():
                if param is not None:
                    yield dot + name, param
            for name, buffer in module._buffers.items():
                if buffer is not None and name not in module._non_persistent_buffers:
                    yield dot + name, buffer

    def state_dict(self, *, prefix: str = "", keep_vars: bool = False) -> OrderedDict[str, Tensor]:
        """Parameters and persistent buffers by dotted name, as tensors sharing their arrays.

        >>> from pyrt import nn
        >>> list(nn.Linear(2, 3).state_dict())
        ['weight', 'bias']
        """
        state: OrderedDict[str, Tensor] = OrderedDict()
        for name, tensor in self._state_items():
            state[prefix + name] = tensor if keep_vars else tensor.detach()
        return state

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True) -> IncompatibleKeys:
        """Copy values (tensors or arrays) into this module's parameters and buffers in place.

        Values are cast to each parameter's dtype. A shape mismatch is always an
        error; with ``strict`` (default), so are missing and unexpected keys. All
        problems are reported together, and nothing is copied unless all pass.

        >>> from pyrt import nn
        >>> a, b = nn.Linear(2, 2), nn.Linear(2, 2)
        >>> b.load_state_dict(a.state_dict())
        IncompatibleKeys(missing_keys=[], unexpected_keys=[])
        >>> bool((a.weight.data == b.weight.data).all())
        True
        """
        if not isinstance(state_dict, Mapping):
            raise TypeError(f"expected a mapping for state_dict, got {type(state_dict).__name__}")
        own = OrderedDict(self._state_items())
        missing = [name for name in own if name not in state_dict]
        unexpected = [name for name in state_dict if name not in own]
        errors = []
        if strict and missing:
            errors.append("Missing key(s) in state_dict: "
                          + ", ".join(f'"{k}"' for k in missing) + ".")
        if strict and unexpected:
            errors.append("Unexpected key(s) in state_dict: "
                          + ", ".join(f'"{k}"' for k in unexpected) + ".")
        sources: list[tuple[Tensor, Any]] = []
        for name, target in own.items():
            if name not in state_dict:
                continue
            value = state_dict[name]
            array = value.data if isinstance(value, Tensor) else value
            if not hasattr(array, "shape") or not hasattr(array, "dtype"):
                errors.append(f'While copying "{name}": expected a Tensor or array, got '
                              f"{type(value).__name__}.")
                continue
            if tuple(array.shape) != target.shape:
                errors.append(
                    f"size mismatch for {name}: copying a param with shape {tuple(array.shape)} "
                    f"from checkpoint, the shape in current model is {target.shape}."
                )
                continue
            if not (np.issubdtype(array.dtype, np.number) or array.dtype == np.bool_):
                errors.append(f'While copying "{name}": unsupported dtype {array.dtype}.')
                continue
            sources.append((target, array))
        if errors:
            raise RuntimeError(f"Error(s) in loading state_dict for {type(self).__name__}:\n\t"
                               + "\n\t".join(errors))
        for target, array in sources:
            # In place: optimizers and DDP hold these very arrays. The version bump tells
            # whoever derived something from the old values (a saved graph, a layer's
            # validated sparsity pattern) that they changed.
            # From any device (a CPU checkpoint into a GPU model, too), as in PyTorch.
            kind, _, index = target.device.partition(":")
            with on_device_of(target):
                target.data[...] = move_array(array, kind, int(index) if index else None).astype(
                    target.dtype, copy=False)
            target._version += 1
        return IncompatibleKeys(missing, unexpected)

    # --- printing -------------------------------------------------------------------------
    def extra_repr(self) -> str:
        """The text inside this module's parentheses in ``repr`` (override in layers).

        >>> Module().extra_repr()
        ''
        """
        return ""

    def _get_name(self) -> str:
        return type(self).__name__

    def __repr__(self) -> str:
        extra_lines = self.extra_repr().split("\n") if self.extra_repr() else []
        child_lines = [f"({name}): {_addindent(repr(module), 2)}"
                       for name, module in self._modules.items()]
        lines = extra_lines + child_lines
        text = self._get_name() + "("
        if lines:
            if len(extra_lines) == 1 and not child_lines:
                text += extra_lines[0]
            else:
                text += "\n  " + "\n  ".join(lines) + "\n"
        return text + ")"
