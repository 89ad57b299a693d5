"""``DataParallel``: PyTorch's single-process multi-GPU wrapper, as a pass-through.

PyTorch itself recommends ``DistributedDataParallel`` over ``DataParallel``;
pyrt's data parallelism is ``pyrt.nn.parallel.DistributedDataParallel`` over
MPI processes (one per device or core group). So a ported script that wraps
its model in ``DataParallel`` keeps working unchanged, on one process, and
is told once, at construction, where the parallel speed-up lives.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

from pyrt import cuda
from pyrt.nn.module import Module

__all__ = ["DataParallel"]


class DataParallel(Module):
    """Runs ``module`` as it is in this one process; warns that DDP is the parallel path.

    ``device_ids`` and ``output_device`` are checked (a CUDA index that is not
    there is an error) but nothing is replicated. ``state_dict`` keys gain the
    ``module.`` prefix, as PyTorch's do.

    >>> import warnings
    >>> import pyrt
    >>> from pyrt import nn
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     model = nn.DataParallel(nn.Linear(3, 2))
    >>> "DistributedDataParallel" in str(caught[0].message)
    True
    >>> model(pyrt.ones(4, 3)).shape
    (4, 2)
    >>> list(model.state_dict())
    ['module.weight', 'module.bias']
    """

    def __init__(self, module: Module, device_ids: Sequence[Any] | None = None,
                 output_device: Any = None, dim: int = 0) -> None:
        super().__init__()
        for device in [*(device_ids or []), *([] if output_device is None else [output_device])]:
            cuda.parse_device(device)  # an absent GPU is an error now, not a silent CPU run
        warnings.warn(
            "nn.DataParallel runs the module in this single process (no replicas); for data "
            "parallelism use pyrt.nn.parallel.DistributedDataParallel with one MPI process per "
            "worker (mpiexec -n N python train.py), as PyTorch also recommends",
            UserWarning, stacklevel=2)
        self.module = module
        self.device_ids = list(device_ids or [])
        self.output_device = output_device
        self.dim = dim

    def forward(self, *inputs: Any, **kwargs: Any) -> Any:
        return self.module(*inputs, **kwargs)
