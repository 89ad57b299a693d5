"""``pyrt.nn.utils.prune``: PyTorch's pruning API, with the same names and the same state.

Pruning ``module.weight`` moves the parameter to ``weight_orig``, adds the 0/1
buffer ``weight_mask`` and registers a forward pre-hook that recomputes the
plain attribute ``weight = weight_orig * weight_mask`` before every forward.
Because the product is recorded by autograd, the gradient that reaches
``weight_orig`` is zero wherever the mask is, so training never revives a pruned
entry. Pruning the same tensor again composes masks (a ``PruningContainer``):
the new method only sees the entries still alive. ``remove`` bakes the product
back into a plain parameter.

Masks are computed on arrays (numpy or cupy) and are not part of any graph.

>>> import pyrt
>>> from pyrt import nn
>>> from pyrt.nn.utils import prune
>>> fc = nn.Linear(4, 3)
>>> _ = prune.l1_unstructured(fc, name="weight", amount=0.5)
>>> sorted(name for name, _ in fc.named_parameters()), list(fc.state_dict())
(['bias', 'weight_orig'], ['bias', 'weight_orig', 'weight_mask'])
>>> int((fc.weight.data == 0).sum())
6
>>> _ = prune.remove(fc, "weight")
>>> prune.is_pruned(fc), sorted(name for name, _ in fc.named_parameters())
(False, ['bias', 'weight'])
"""

from __future__ import annotations

import functools
import numbers
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator
from typing import Any, ClassVar

import numpy as np

from pyrt import random
from pyrt.autograd import on_device_of
from pyrt.backend import get_array_module
from pyrt.nn.module import Module
from pyrt.tensor import Tensor

__all__ = [
    "BasePruningMethod", "CustomFromMask", "Identity", "L1Unstructured", "LnStructured", "PruningContainer",
    "RandomUnstructured", "custom_from_mask", "global_unstructured", "identity", "is_pruned",
    "l1_unstructured", "ln_structured", "random_unstructured", "remove",
]


def _array(value: Any) -> Any:
    return value.data if isinstance(value, Tensor) else value



def _on_module_device(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Run ``fn(first, module, ...)`` with the module's GPU current (masks are computed on its
    parameters' arrays, outside any op's device guard)."""

    @functools.wraps(fn)
    def guarded(first: Any, module: Module, *args: Any, **kwargs: Any) -> Any:
        with on_device_of([*module.parameters(), *module.buffers()]):
            return fn(first, module, *args, **kwargs)

    return guarded

class BasePruningMethod(ABC):
    """A pruning rule: ``compute_mask`` says which entries live; ``apply`` installs it on a module.

    An instance is also the forward pre-hook that refreshes the pruned tensor.

    >>> class KeepAll(BasePruningMethod):
    ...     PRUNING_TYPE = "unstructured"
    ...     def compute_mask(self, t, default_mask):
    ...         return default_mask
    >>> import pyrt
    >>> KeepAll().prune(pyrt.ones(2)).tolist()
    [1.0, 1.0]
    """

    PRUNING_TYPE: ClassVar[str]
    _tensor_name: str | None = None

    @_on_module_device
    def __call__(self, module: Module, inputs: tuple[Any, ...]) -> None:
        # Recomputed every forward so optimizer updates to <name>_orig show through the mask.
        setattr(module, self._tensor_name, self.apply_mask(module))  # type: ignore[arg-type]

    @abstractmethod
    def compute_mask(self, t: Tensor, default_mask: Tensor) -> Tensor:
        """The new mask for ``t``, starting from ``default_mask`` (entries already pruned stay so)."""

    def apply_mask(self, module: Module) -> Tensor:
        """``<name>_orig * <name>_mask``, recorded by autograd so pruned entries get zero gradient.

        >>> import pyrt
        >>> from pyrt import nn
        >>> fc = nn.Linear(2, 2)
        >>> method = L1Unstructured.apply(fc, "weight", amount=1)
        >>> bool((method.apply_mask(fc).data == fc.weight.data).all())
        True
        """
        if self._tensor_name is None:
            raise AssertionError(f"Module {module} has to be pruned")
        mask = getattr(module, self._tensor_name + "_mask")
        orig = getattr(module, self._tensor_name + "_orig")
        return Tensor(mask.data.astype(orig.dtype, copy=False)) * orig

    @classmethod
    @_on_module_device
    def apply(cls, module: Module, name: str, *args: Any, importance_scores: Any = None,
              **kwargs: Any) -> BasePruningMethod:
        """Prune ``module.<name>`` with ``cls(*args, **kwargs)``, composing with earlier pruning.

        >>> from pyrt import nn
        >>> fc = nn.Linear(3, 2)
        >>> type(L1Unstructured.apply(fc, "weight", amount=2)).__name__
        'L1Unstructured'
        >>> type(L1Unstructured.apply(fc, "weight", amount=1)).__name__
        'PruningContainer'
        """
        method = _composite_method(cls, module, name, *args, **kwargs)
        orig = getattr(module, name)
        if importance_scores is not None:
            if tuple(importance_scores.shape) != orig.shape:
                raise AssertionError(
                    f"importance_scores should have the same shape as parameter {name} of {module}, "
                    f"got {tuple(importance_scores.shape)} vs {orig.shape}")
        else:
            # Once pruned, getattr gives orig * mask: later rounds rank the pruned tensor, as PyTorch does.
            importance_scores = orig
        scores = importance_scores if isinstance(importance_scores, Tensor) else Tensor(importance_scores)
        if not isinstance(method, PruningContainer):
            module.register_parameter(name + "_orig", orig)
            del module._parameters[name]
            default_mask = Tensor(get_array_module(orig.data).ones_like(orig.data))
        else:
            default_mask = Tensor(getattr(module, name + "_mask").data.copy())
        try:
            mask = method.compute_mask(scores, default_mask=default_mask)
            module.register_buffer(name + "_mask", mask)
            setattr(module, name, method.apply_mask(module))
            module.register_forward_pre_hook(method)
        except Exception:
            # Leave the module as it was: the parameter back under its own name.
            if not isinstance(method, PruningContainer):
                orig = getattr(module, name + "_orig")
                del module._parameters[name + "_orig"]
                module.register_parameter(name, orig)
            raise
        return method

    def prune(self, t: Tensor, default_mask: Tensor | None = None,
              importance_scores: Tensor | None = None) -> Tensor:
        """``t`` times its mask, without touching any module.

        >>> import pyrt
        >>> L1Unstructured(amount=1).prune(pyrt.tensor([3.0, 1.0, 2.0])).tolist()
        [3.0, 0.0, 2.0]
        """
        if importance_scores is not None:
            if importance_scores.shape != t.shape:
                raise AssertionError("importance_scores should have the same shape as tensor t, "
                                     f"got {importance_scores.shape} vs {t.shape}")
        else:
            importance_scores = t
        if default_mask is None:
            default_mask = Tensor(get_array_module(t.data).ones_like(t.data))
        return t * self.compute_mask(importance_scores, default_mask=default_mask)

    @_on_module_device
    def remove(self, module: Module) -> None:
        """Make the pruned tensor the parameter again; drop ``<name>_orig`` and ``<name>_mask``.

        >>> from pyrt import nn
        >>> fc = nn.Linear(2, 2)
        >>> L1Unstructured.apply(fc, "weight", amount=1).remove(fc)
        >>> sorted(fc.state_dict())
        ['bias', 'weight']
        """
        if self._tensor_name is None:
            raise AssertionError(f"Module {module} has to be pruned before pruning can be removed")
        weight = self.apply_mask(module)
        if hasattr(module, self._tensor_name):
            delattr(module, self._tensor_name)
        # The same Parameter object comes back, so an optimizer holding it keeps working.
        orig = module._parameters[self._tensor_name + "_orig"]
        orig.data = weight.data
        del module._parameters[self._tensor_name + "_orig"]
        del module._buffers[self._tensor_name + "_mask"]
        setattr(module, self._tensor_name, orig)


def _composite_method(cls: type[BasePruningMethod], module: Module, name: str, *args: Any,
                      **kwargs: Any) -> BasePruningMethod:
    """The new method, or the container holding the earlier ones and it, replacing the old hook."""
    old_method = None
    found = 0
    hooks_to_remove = []
    for key, hook in module._forward_pre_hooks.items():
        if isinstance(hook, BasePruningMethod) and hook._tensor_name == name:
            old_method = hook
            hooks_to_remove.append(key)
            found += 1
    if found > 1:
        raise AssertionError(f"Avoid adding multiple pruning hooks to the same tensor {name} of module "
                             f"{module}. Use a PruningContainer.")
    for key in hooks_to_remove:
        del module._forward_pre_hooks[key]
    method = cls(*args, **kwargs)
    method._tensor_name = name
    if isinstance(old_method, PruningContainer):
        old_method.add_pruning_method(method)
        return old_method
    if old_method is not None:
        container = PruningContainer(old_method)
        container.add_pruning_method(method)
        return container
    return method


class PruningContainer(BasePruningMethod):
    """The sequence of pruning methods applied to one tensor; the last one acts on what is left.

    >>> c = PruningContainer(L1Unstructured(amount=1))
    >>> len(c)
    1
    """

    def __init__(self, *args: BasePruningMethod) -> None:
        self._pruning_methods: tuple[BasePruningMethod, ...] = ()
        if len(args) == 1:
            self._tensor_name = args[0]._tensor_name
            self.add_pruning_method(args[0])
        else:
            for method in args:
                self.add_pruning_method(method)

    def add_pruning_method(self, method: BasePruningMethod) -> None:
        """Append ``method``; it must act on the same tensor name.

        >>> c = PruningContainer()
        >>> c.add_pruning_method(Identity())
        >>> len(c)
        1
        """
        if not isinstance(method, BasePruningMethod) and method is not None:
            raise TypeError(f"{type(method)} is not a BasePruningMethod subclass")
        if method is not None and self._tensor_name != method._tensor_name:
            raise ValueError("Can only add pruning methods acting on the parameter named "
                             f"'{self._tensor_name}' to PruningContainer {self}. "
                             f"Found '{method._tensor_name}'")
        self._pruning_methods += (method,)

    def __len__(self) -> int:
        return len(self._pruning_methods)

    def __iter__(self) -> Iterator[BasePruningMethod]:
        return iter(self._pruning_methods)

    def __getitem__(self, idx: int) -> BasePruningMethod:
        return self._pruning_methods[idx]

    def compute_mask(self, t: Tensor, default_mask: Tensor) -> Tensor:
        """Apply the newest method to the slice of ``t`` that ``default_mask`` still keeps.

        Unstructured methods see the surviving entries, structured ones the
        surviving channels, global ones everything.

        >>> import pyrt
        >>> c = PruningContainer(L1Unstructured(amount=1))
        >>> c.compute_mask(pyrt.tensor([3.0, 1.0, 2.0]), pyrt.tensor([1.0, 0.0, 1.0])).tolist()
        [1.0, 0.0, 0.0]
        """
        method = self._pruning_methods[-1]
        values, mask = t.data, default_mask.data
        new_mask = mask.astype(values.dtype, copy=True)
        slc: Any
        if method.PRUNING_TYPE == "unstructured":
            slc = mask == 1
        elif method.PRUNING_TYPE == "structured":
            if not hasattr(method, "dim"):
                raise AttributeError('Pruning methods of PRUNING_TYPE "structured" need to have the '
                                     "attribute `dim` defined.")
            n_dims = values.ndim
            dim = method.dim if method.dim >= 0 else n_dims + method.dim
            if dim < 0:
                raise IndexError(f"Index is out of bounds for tensor with dimensions {n_dims}")
            keep_channel = mask.sum(axis=tuple(d for d in range(n_dims) if d != dim)) != 0
            slc = tuple(keep_channel if d == dim else slice(None) for d in range(n_dims))
        elif method.PRUNING_TYPE == "global":
            slc = (slice(None),) * values.ndim
        else:
            raise ValueError(f"Unrecognized PRUNING_TYPE {method.PRUNING_TYPE}")
        partial = method.compute_mask(Tensor(values[slc]), default_mask=Tensor(mask[slc]))
        new_mask[slc] = partial.data.astype(new_mask.dtype, copy=False)
        return Tensor(new_mask)


class Identity(BasePruningMethod):
    """Prunes nothing: installs the ``_orig``/``_mask`` machinery with an all-ones mask.

    >>> import pyrt
    >>> Identity().compute_mask(pyrt.ones(2), pyrt.ones(2)).tolist()
    [1.0, 1.0]
    """

    PRUNING_TYPE = "unstructured"

    def compute_mask(self, t: Tensor, default_mask: Tensor) -> Tensor:
        return default_mask

    @classmethod
    def apply(cls, module: Module, name: str) -> BasePruningMethod:  # type: ignore[override]
        """Install an all-ones mask on ``module.<name>``.

        >>> from pyrt import nn
        >>> fc = nn.Linear(2, 2)
        >>> _ = Identity.apply(fc, "weight")
        >>> float(fc.weight_mask.data.sum())
        4.0
        """
        return super().apply(module, name)


class _UnstructuredByScore(BasePruningMethod):
    """Zero the ``amount`` entries a score ranks first: the smallest magnitudes, or random draws."""

    PRUNING_TYPE = "unstructured"

    def __init__(self, amount: int | float) -> None:
        _validate_pruning_amount_init(amount)
        self.amount = amount

    @abstractmethod
    def _scores(self, t: Tensor) -> tuple[Any, bool]:
        """One score per entry of ``t`` (flat) and whether the largest are pruned."""

    def compute_mask(self, t: Tensor, default_mask: Tensor) -> Tensor:
        tensor_size = t.data.size
        nparams_toprune = _compute_nparams_toprune(self.amount, tensor_size)
        _validate_pruning_amount(nparams_toprune, tensor_size)
        mask = default_mask.data.copy()
        if nparams_toprune != 0:
            scores, largest = self._scores(t)
            mask.reshape(-1)[_topk_indices(scores, nparams_toprune, largest=largest)] = 0
        return Tensor(mask)


class RandomUnstructured(_UnstructuredByScore):
    """Zero ``amount`` entries chosen uniformly at random (pyrt's seeded generator).

    >>> import pyrt
    >>> int((RandomUnstructured(amount=3).compute_mask(pyrt.ones(10), pyrt.ones(10)).data == 0).sum())
    3
    """

    def _scores(self, t: Tensor) -> tuple[Any, bool]:
        # As torch: a uniform score per entry, the largest scores are pruned.
        return random.uniform(t.shape, get_array_module(t.data), dtype=np.float64).reshape(-1), True

    @classmethod
    def apply(cls, module: Module, name: str, amount: int | float) -> BasePruningMethod:  # type: ignore[override]
        """Prune ``amount`` random entries of ``module.<name>``.

        >>> from pyrt import nn
        >>> fc = nn.Linear(4, 4)
        >>> _ = RandomUnstructured.apply(fc, "weight", amount=5)
        >>> int((fc.weight_mask.data == 0).sum())
        5
        """
        return super().apply(module, name, amount=amount)


class L1Unstructured(_UnstructuredByScore):
    """Zero the ``amount`` entries of smallest magnitude.

    >>> import pyrt
    >>> L1Unstructured(amount=0.5).compute_mask(pyrt.tensor([4.0, -1.0, 3.0, 0.5]), pyrt.ones(4)).tolist()
    [1.0, 0.0, 1.0, 0.0]
    """

    def _scores(self, t: Tensor) -> tuple[Any, bool]:
        return get_array_module(t.data).abs(t.data).reshape(-1), False

    @classmethod
    def apply(cls, module: Module, name: str, amount: int | float,  # type: ignore[override]
              importance_scores: Any = None) -> BasePruningMethod:
        """Prune the ``amount`` smallest-magnitude entries of ``module.<name>``.

        >>> from pyrt import nn
        >>> fc = nn.Linear(4, 4)
        >>> _ = L1Unstructured.apply(fc, "weight", amount=0.25)
        >>> int((fc.weight_mask.data == 0).sum())
        4
        """
        return super().apply(module, name, amount=amount, importance_scores=importance_scores)


class LnStructured(BasePruningMethod):
    """Zero the ``amount`` channels along ``dim`` of smallest L``n`` norm.

    ``n`` is any order ``torch.norm`` accepts: a number, ``inf``, ``-inf``,
    ``'fro'`` (one or two reduced dims) or ``'nuc'`` (exactly two).

    >>> import pyrt
    >>> w = pyrt.tensor([[1.0, 1.0], [3.0, 0.0], [0.1, 0.2]])
    >>> LnStructured(amount=1, n=2, dim=0).compute_mask(w, pyrt.ones(3, 2)).tolist()
    [[1.0, 1.0], [1.0, 1.0], [0.0, 0.0]]
    """

    PRUNING_TYPE = "structured"

    def __init__(self, amount: int | float, n: int | float | str, dim: int = -1) -> None:
        _validate_pruning_amount_init(amount)
        self.amount = amount
        self.n = n
        self.dim = dim

    def compute_mask(self, t: Tensor, default_mask: Tensor) -> Tensor:
        values = t.data
        _validate_structured_pruning(values)
        _validate_pruning_dim(values, self.dim)
        tensor_size = values.shape[self.dim]
        nparams_toprune = _compute_nparams_toprune(self.amount, tensor_size)
        nparams_tokeep = tensor_size - nparams_toprune
        _validate_pruning_amount(nparams_toprune, tensor_size)
        norm = _compute_norm(values, self.n, self.dim)
        if nparams_toprune == 0:
            return default_mask
        xp = get_array_module(values)
        keep = _topk_indices(norm, nparams_tokeep, largest=True)
        mask = xp.zeros_like(values)
        slc = [slice(None)] * values.ndim
        slc[self.dim] = keep
        mask[tuple(slc)] = 1
        mask *= default_mask.data.astype(mask.dtype, copy=False)
        return Tensor(mask)

    @classmethod
    def apply(cls, module: Module, name: str, amount: int | float, n: int | float | str,  # type: ignore[override]
              dim: int, importance_scores: Any = None) -> BasePruningMethod:
        """Prune the ``amount`` lowest-norm channels of ``module.<name>`` along ``dim``.

        >>> from pyrt import nn
        >>> fc = nn.Linear(4, 3)
        >>> _ = LnStructured.apply(fc, "weight", amount=1, n=2, dim=0)
        >>> int((fc.weight_mask.data.sum(axis=1) == 0).sum())
        1
        """
        return super().apply(module, name, amount=amount, n=n, dim=dim, importance_scores=importance_scores)


class CustomFromMask(BasePruningMethod):
    """Prune with a given mask (what ``global_unstructured`` installs on each tensor).

    >>> import pyrt
    >>> CustomFromMask(pyrt.tensor([0.0, 1.0])).compute_mask(pyrt.ones(2), pyrt.ones(2)).tolist()
    [0.0, 1.0]
    """

    PRUNING_TYPE = "global"

    def __init__(self, mask: Any) -> None:
        self.mask = mask

    def compute_mask(self, t: Tensor, default_mask: Tensor) -> Tensor:
        mask = _array(self.mask)
        if tuple(default_mask.shape) != tuple(mask.shape):
            raise AssertionError(f"default_mask shape {default_mask.shape} must match "
                                 f"self.mask shape {tuple(mask.shape)}")
        return Tensor(default_mask.data * mask.astype(default_mask.dtype, copy=False))

    @classmethod
    def apply(cls, module: Module, name: str, mask: Any) -> BasePruningMethod:  # type: ignore[override]
        """Prune ``module.<name>`` where ``mask`` is zero.

        >>> import pyrt
        >>> from pyrt import nn
        >>> fc = nn.Linear(2, 1)
        >>> _ = CustomFromMask.apply(fc, "weight", pyrt.tensor([[1.0, 0.0]]))
        >>> fc.weight_mask.tolist()
        [[1.0, 0.0]]
        """
        return super().apply(module, name, mask=mask)


# --- the functional API (what users call) -------------------------------------------------------

def identity(module: Module, name: str) -> Module:
    """Reparametrize ``module.<name>`` as ``<name>_orig * <name>_mask`` with an all-ones mask.

    >>> from pyrt import nn
    >>> fc = identity(nn.Linear(2, 2), "bias")
    >>> sorted(fc.state_dict())
    ['bias_mask', 'bias_orig', 'weight']
    """
    Identity.apply(module, name)
    return module


def random_unstructured(module: Module, name: str, amount: int | float) -> Module:
    """Prune ``amount`` entries (a count if int, a fraction if float) chosen at random.

    >>> from pyrt import nn
    >>> fc = random_unstructured(nn.Linear(10, 10), "weight", amount=0.3)
    >>> int((fc.weight.data == 0).sum())
    30
    """
    RandomUnstructured.apply(module, name, amount)
    return module


def l1_unstructured(module: Module, name: str, amount: int | float, importance_scores: Any = None) -> Module:
    """Prune the ``amount`` entries of smallest absolute value (or of smallest ``importance_scores``).

    >>> import pyrt
    >>> from pyrt import nn
    >>> fc = nn.Linear(2, 2)
    >>> fc.weight.data[...] = [[0.1, -2.0], [0.5, 0.2]]
    >>> l1_unstructured(fc, "weight", amount=2).weight.tolist()
    [[0.0, -2.0], [0.5, 0.0]]
    """
    L1Unstructured.apply(module, name, amount=amount, importance_scores=importance_scores)
    return module


def ln_structured(module: Module, name: str, amount: int | float, n: int | float | str, dim: int,
                  importance_scores: Any = None) -> Module:
    """Prune the ``amount`` channels along ``dim`` with the smallest L``n`` norm.

    ``dim=0`` removes rows of a ``Linear`` weight (output features) or whole
    output channels of a ``Conv2d``.

    >>> import pyrt
    >>> from pyrt import nn
    >>> fc = nn.Linear(2, 3)
    >>> fc.weight.data[...] = [[1.0, 1.0], [3.0, 0.0], [0.1, 0.2]]
    >>> ln_structured(fc, "weight", amount=1, n=1, dim=0).weight.tolist()
    [[1.0, 1.0], [3.0, 0.0], [0.0, 0.0]]
    """
    LnStructured.apply(module, name, amount, n, dim, importance_scores=importance_scores)
    return module


def global_unstructured(parameters: Iterable[tuple[Module, str]], pruning_method: type[BasePruningMethod],
                        importance_scores: dict[tuple[Module, str], Any] | None = None,
                        **kwargs: Any) -> None:
    """Prune across several tensors at once: one ranking over all their entries.

    >>> import pyrt
    >>> from pyrt import nn
    >>> a, b = nn.Linear(2, 1), nn.Linear(2, 1)
    >>> a.weight.data[...] = [[1.0, 4.0]]
    >>> b.weight.data[...] = [[2.0, 3.0]]
    >>> global_unstructured([(a, "weight"), (b, "weight")], pruning_method=L1Unstructured, amount=2)
    >>> a.weight.tolist(), b.weight.tolist()
    ([[0.0, 4.0]], [[0.0, 3.0]])
    """
    if not isinstance(parameters, Iterable):
        raise TypeError("global_unstructured(): parameters is not an Iterable")
    parameters = list(parameters)  # walked three times; a generator would be spent after the first
    importance_scores = importance_scores if importance_scores is not None else {}
    if not isinstance(importance_scores, dict):
        raise TypeError("global_unstructured(): importance_scores must be of type dict")
    with on_device_of([getattr(module, name) for module, name in parameters]):
        _global_unstructured(parameters, pruning_method, importance_scores, kwargs)


def _global_unstructured(parameters: list[tuple[Module, str]], pruning_method: type[BasePruningMethod],
                         importance_scores: dict[Any, Any], kwargs: dict[str, Any]) -> None:
    tensors = [_array(importance_scores.get((module, name), getattr(module, name)))
               for module, name in parameters]
    xp = get_array_module(tensors[0]) if tensors else np
    relevant_importance_scores = xp.concatenate([t.reshape(-1) for t in tensors])
    default_mask = xp.concatenate([
        (getattr(module, name + "_mask").data if hasattr(module, name + "_mask")
         else xp.ones_like(getattr(module, name).data)).reshape(-1)
        for module, name in parameters
    ])
    container = PruningContainer()
    container._tensor_name = "temp"  # matches the method below, so the container accepts it
    method = pruning_method(**kwargs)
    method._tensor_name = "temp"
    if method.PRUNING_TYPE != "unstructured":
        raise TypeError('Only "unstructured" PRUNING_TYPE supported for the `pruning_method`. '
                        f"Found method {pruning_method} of type {method.PRUNING_TYPE}")
    container.add_pruning_method(method)
    final_mask = container.compute_mask(Tensor(relevant_importance_scores), Tensor(default_mask)).data
    pointer = 0
    for module, name in parameters:
        param = getattr(module, name)
        num_param = param.numel()
        custom_from_mask(module, name, mask=final_mask[pointer:pointer + num_param].reshape(param.shape))
        pointer += num_param


def custom_from_mask(module: Module, name: str, mask: Any) -> Module:
    """Prune ``module.<name>`` where ``mask`` (a tensor or array of its shape) is zero.

    >>> import pyrt
    >>> from pyrt import nn
    >>> fc = custom_from_mask(nn.Linear(2, 1), "weight", pyrt.tensor([[0.0, 1.0]]))
    >>> bool(fc.weight.data[0, 0] == 0)
    True
    """
    CustomFromMask.apply(module, name, mask)
    return module


def remove(module: Module, name: str) -> Module:
    """Make pruning permanent: ``<name>`` becomes a parameter again holding ``orig * mask``.

    >>> from pyrt import nn
    >>> fc = remove(l1_unstructured(nn.Linear(2, 2), "weight", amount=1), "weight")
    >>> sorted(fc.state_dict()), is_pruned(fc)
    (['bias', 'weight'], False)
    """
    for key, hook in module._forward_pre_hooks.items():
        if isinstance(hook, BasePruningMethod) and hook._tensor_name == name:
            hook.remove(module)
            del module._forward_pre_hooks[key]
            return module
    raise ValueError(f"Parameter '{name}' of module {module} has to be pruned before pruning can be removed")


def is_pruned(module: Module) -> bool:
    """Whether any submodule of ``module`` (or itself) carries a pruning hook.

    >>> from pyrt import nn
    >>> model = nn.Sequential(nn.Linear(2, 2), nn.ReLU())
    >>> before = is_pruned(model)
    >>> _ = identity(model[0], "weight")
    >>> before, is_pruned(model)
    (False, True)
    """
    for _, submodule in module.named_modules():
        for hook in submodule._forward_pre_hooks.values():
            if isinstance(hook, BasePruningMethod):
                return True
    return False


# --- validation and helpers, with PyTorch's messages ------------------------------------------

def _validate_pruning_amount_init(amount: Any) -> None:
    """Type and range of ``amount`` alone (the tensor is not known yet)."""
    if not isinstance(amount, numbers.Real):
        raise TypeError(f"Invalid type for amount: {amount}. Must be int or float.")
    if (isinstance(amount, numbers.Integral) and amount < 0) or (
            not isinstance(amount, numbers.Integral) and (float(amount) > 1.0 or float(amount) < 0.0)):
        raise ValueError(f"amount={amount} should either be a float in the range [0, 1] or a "
                         "non-negative integer")


def _validate_pruning_amount(amount: Any, tensor_size: int) -> None:
    """A count cannot exceed the entries (or channels) available."""
    if isinstance(amount, numbers.Integral) and amount > tensor_size:
        raise ValueError(f"amount={amount} should be smaller than the number of parameters to "
                         f"prune={tensor_size}")


def _validate_structured_pruning(values: Any) -> None:
    shape = tuple(values.shape)
    if len(shape) <= 1:
        raise ValueError("Structured pruning can only be applied to multidimensional tensors. Found tensor "
                         f"of shape {shape} with {len(shape)} dims")


def _compute_nparams_toprune(amount: int | float, tensor_size: int) -> int:
    # Python's round (half to even) is what torch uses too.
    if isinstance(amount, numbers.Integral):
        return int(amount)
    return round(amount * tensor_size)


def _validate_pruning_dim(values: Any, dim: int) -> None:
    if dim >= values.ndim:
        raise IndexError(f"Invalid index {dim} for tensor of size {tuple(values.shape)}")


def _compute_norm(values: Any, n: int | float | str, dim: int) -> Any:
    """``torch.norm(t, p=n, dim=<every dim but dim>)`` on an array, one value per channel."""
    xp = get_array_module(values)
    dims = list(range(values.ndim))
    dims.remove(dims[dim])
    magnitude = xp.abs(values.astype(np.float64))
    if n == "nuc" or (n == "fro" and len(dims) > 2):
        if len(dims) != 2:
            raise RuntimeError(f"linalg.matrix_norm: dim must be a 2-tuple. Got {' '.join(map(str, dims))}")
        # The channel axis first, the two reduced axes last: a stack of matrices.
        stacked = xp.moveaxis(values.astype(np.float64), [dim % values.ndim, *dims], [0, 1, 2])
        return xp.linalg.svd(stacked, compute_uv=False).sum(axis=-1)
    if n == "fro":
        n = 2
    if isinstance(n, str):
        raise RuntimeError(f"norm: unsupported order {n!r} (expected a number, inf, -inf, 'fro' or 'nuc')")
    axes = tuple(dims)
    if n == float("inf"):
        return magnitude.max(axis=axes)
    if n == float("-inf"):
        return magnitude.min(axis=axes)
    if n == 0:
        return (magnitude != 0).sum(axis=axes).astype(np.float64)
    with np.errstate(divide="ignore"):  # a negative order over a zero entry is inf, as in torch
        return (magnitude ** n).sum(axis=axes) ** (1.0 / n)


def _topk_indices(values: Any, k: int, largest: bool) -> Any:
    """Indices of the ``k`` largest (or smallest) entries of a 1-D array; torch.topk's set without ties."""
    xp = get_array_module(values)
    if k == 0:
        return xp.zeros(0, dtype=np.int64)
    if k >= values.size:
        return xp.arange(values.size)
    keyed = -values if largest else values
    return xp.argpartition(keyed, k - 1)[:k]
