"""pyrt.distributed: process groups and collectives over MPI (mpi4py), PyTorch's names.

Importing this package does not start MPI; ``init_process_group`` does (through
mpi4py). Launch scripts with ``mpiexec -n N python script.py`` or
``python -m pyrt.run -n N script.py``.
"""

from pyrt.distributed.collectives import (
    ReduceOp,
    all_gather,
    all_gather_into_tensor,
    all_reduce,
    barrier,
    broadcast,
    irecv,
    isend,
    recv,
    reduce_scatter,
    reduce_scatter_tensor,
    send,
)
from pyrt.distributed.device_mesh import DeviceMesh, init_device_mesh
from pyrt.distributed.process_group import (
    ProcessGroup,
    destroy_process_group,
    get_rank,
    get_world_size,
    init_process_group,
    is_initialized,
    new_group,
)
from pyrt.distributed.work import Work

__all__ = [
    "ProcessGroup", "ReduceOp", "Work", "all_gather", "all_gather_into_tensor", "all_reduce",
    "barrier", "broadcast", "destroy_process_group", "get_rank", "get_world_size",
    "init_process_group", "irecv", "is_initialized", "isend", "new_group", "recv",
    "reduce_scatter", "reduce_scatter_tensor", "send",
]
__all__ += ["DeviceMesh", "init_device_mesh"]
