"""Cutting a ``Sequential`` into pipeline stages.

``split_sequential`` returns one stage's layers as a ``Sequential`` that keeps
the original layer names, so ``stage.state_dict()`` keys match the full
model's. Three ways to balance the cut: equal numbers of layers (default),
equal parameter counts (``balance="parameters"``), or an explicit list of
layer counts per stage.
"""

from __future__ import annotations

from collections.abc import Sequence

from pyrt.nn.container import Sequential

__all__ = ["partition_sequential", "split_sequential"]


def _balanced_by_weight(weights: Sequence[int], num_stages: int) -> list[int]:
    """Layer counts per stage whose heaviest stage is as light as possible (each stage >= 1 layer).

    A binary search on the heaviest stage's weight, each probe a greedy left
    to right fill: optimal for contiguous cuts, and exact on integers.
    """
    def counts_for(cap: int) -> list[int] | None:
        counts, current, load = [], 0, 0
        for i, w in enumerate(weights):
            left_layers, left_stages = len(weights) - i, num_stages - len(counts)
            # Close the stage when the layer does not fit, or when each later stage needs a layer.
            if current and (load + w > cap or left_layers < left_stages):
                counts.append(current)
                current, load = 0, 0
            current, load = current + 1, load + w
            if load > cap:
                return None
        counts.append(current)
        return counts if len(counts) == num_stages else None

    low, high = max(weights), sum(weights)
    while low < high:
        middle = (low + high) // 2
        if counts_for(middle) is None:
            low = middle + 1
        else:
            high = middle
    best = counts_for(low)
    assert best is not None  # low == sum(weights) with >= num_stages layers always fits
    return best


def partition_sequential(model: Sequential, num_stages: int,
                         balance: str | Sequence[int] | None = None) -> list[int]:
    """Number of layers in each stage when ``model`` is cut into ``num_stages`` consecutive parts.

    ``balance`` is None (layers spread evenly, earlier stages taking the
    remainder), ``"parameters"`` (parameter counts as even as contiguous cuts
    allow) or a list of layer counts.

    >>> from pyrt import nn
    >>> model = nn.Sequential(nn.Linear(4, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 2))
    >>> partition_sequential(model, 2), partition_sequential(model, 2, "parameters")
    ([3, 2], [2, 3])
    """
    if not isinstance(model, Sequential):
        raise TypeError(f"partition_sequential: expected an nn.Sequential, got {type(model).__name__}")
    layers = len(model)
    if isinstance(num_stages, bool) or not isinstance(num_stages, int) or not 1 <= num_stages <= layers:
        raise ValueError(
            f"partition_sequential: num_stages must be between 1 and the model's {layers} layers, "
            f"got {num_stages!r}"
        )
    if balance is None:
        base, extra = divmod(layers, num_stages)
        return [base + (i < extra) for i in range(num_stages)]
    if balance == "parameters":
        weights = [sum(p.numel() for p in layer.parameters()) for layer in model]
        return _balanced_by_weight(weights, num_stages)
    if isinstance(balance, str):
        raise ValueError(
            f"partition_sequential: balance must be None, 'parameters' or a list, got {balance!r}")
    counts = [int(n) for n in balance]
    if len(counts) != num_stages or any(n < 1 for n in counts) or sum(counts) != layers:
        raise ValueError(
            f"partition_sequential: balance {list(balance)} must give each of the {num_stages} stages at "
            f"least one layer and add up to the model's {layers} layers"
        )
    return counts


def split_sequential(model: Sequential, num_stages: int, balance: str | Sequence[int] | None = None,
                     stage_index: int | None = None) -> Sequential:
    """This rank's stage of ``model`` cut into ``num_stages`` consecutive stages.

    ``stage_index`` defaults to this process's rank when the world has one
    rank per stage; pass it explicitly on a larger grid or for interleaved
    schedules (several stages per rank). The layers keep their names (``"4"``
    stays ``"4"``) and are the same module objects as in ``model``. See
    ``partition_sequential`` for ``balance``.

    >>> from pyrt import nn
    >>> model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
    >>> split_sequential(model, 2, stage_index=1)
    Sequential(
      (3): ReLU()
      (4): Linear(in_features=8, out_features=2, bias=True)
    )
    """
    counts = partition_sequential(model, num_stages, balance)
    if stage_index is None:
        from pyrt.distributed.process_group import default_group

        world = default_group()
        if world.size() != num_stages:
            raise ValueError(
                f"split_sequential: the world has {world.size()} ranks for {num_stages} stages; "
                "pass stage_index explicitly"
            )
        stage_index = world.rank()
    if isinstance(stage_index, bool) or not isinstance(stage_index, int) or not 0 <= stage_index < num_stages:
        raise ValueError(f"split_sequential: stage_index must be in [0, {num_stages}), got {stage_index!r}")
    _check_no_shared_parameters(model, counts)
    start = sum(counts[:stage_index])
    return model[start:start + counts[stage_index]]


def _check_no_shared_parameters(model: Sequential, counts: list[int]) -> None:
    """A parameter in two stages would train as two diverging copies: refuse the cut."""
    owner: dict[int, tuple[int, str]] = {}
    names = list(model._modules)
    start = 0
    for stage, count in enumerate(counts):
        for layer_name in names[start:start + count]:
            for name, p in model._modules[layer_name].named_parameters(prefix=layer_name):
                first = owner.setdefault(id(p), (stage, name))
                if first[0] != stage:
                    raise ValueError(
                        f"split_sequential: parameter {first[1]} (stage {first[0]}) is also {name} "
                        f"(stage {stage}); stages cannot share parameters, so cut elsewhere "
                        "(balance=...) or untie them")
        start += count
