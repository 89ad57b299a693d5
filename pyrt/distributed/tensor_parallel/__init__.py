"""``pyrt.distributed.tensor_parallel``: Megatron-LM's intra-layer model parallelism.

One layer's weight is split over the ranks of a tensor-parallel group; the
conjugate functions of ``pyrt.distributed.functional`` move activations and
gradients at the split's edges. Build the group with ``init_device_mesh``
(``mesh["tp"]``) or ``new_group``, seed every rank alike, and the layers start
equal to their serial twins.

Example (under ``mpiexec -n 4``, dp=2 x tp=2)::

    mesh = init_device_mesh("cpu", (2, 2), mesh_dim_names=("dp", "tp"))
    pyrt.manual_seed(0)
    model = nn.Sequential(TensorParallelMLP(64, 256, group=mesh["tp"]),
                          ColumnParallelLinear(64, 1000, gather_output=False, group=mesh["tp"]))
    model = DistributedDataParallel(model, process_group=mesh.get_group("dp"))
    loss = vocab_parallel_cross_entropy(model(x), y, group=mesh["tp"])
"""

from pyrt.distributed.tensor_parallel.layers import (
    ColumnParallelLinear,
    RowParallelLinear,
    TensorParallelMLP,
    VocabParallelEmbedding,
    pad_vocab_size,
    tensor_parallel_group,
    vocab_range,
)
from pyrt.distributed.tensor_parallel.loss import vocab_parallel_cross_entropy

__all__ = [
    "ColumnParallelLinear", "RowParallelLinear", "TensorParallelMLP", "VocabParallelEmbedding",
    "pad_vocab_size", "tensor_parallel_group", "vocab_parallel_cross_entropy", "vocab_range",
]
