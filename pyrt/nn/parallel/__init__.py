"""``pyrt.nn.parallel``: PyTorch's home of ``DistributedDataParallel``.

The implementation lives in ``pyrt.distributed`` (layers above never depend
on it); it is loaded on first access so single-process users never touch MPI.
"""

from typing import Any

from pyrt.nn.data_parallel import DataParallel

__all__ = ["DataParallel", "DistributedDataParallel"]


def __getattr__(name: str) -> Any:
    if name == "DistributedDataParallel":
        from pyrt.distributed.ddp import DistributedDataParallel

        return DistributedDataParallel
    raise AttributeError(f"module 'pyrt.nn.parallel' has no attribute {name!r}")
