"""DP x PP x TP on 8 ranks from one (2, 2, 2) device mesh vs the serial model.

Each pipeline stage is a tensor-parallel MLP over the mesh's tp group,
wrapped in DDP over its dp group, and the 1F1B schedule runs over the pp
group. After 2 SGD steps every rank's parameter shards must equal the
matching slices of the serial model trained in one process on the whole
batch (float64).

Run: mpiexec -n 8 python tests/distributed/workers/tp_mesh3d.py
"""

from __future__ import annotations

import numpy as np

import pyrt
import pyrt.distributed as dist
from pyrt import nn, optim
from pyrt.distributed.pipelining import PipelineStage, Schedule1F1B
from pyrt.distributed.tensor_parallel import TensorParallelMLP
from pyrt.nn.parallel import DistributedDataParallel as DDP

F64 = np.float64
H, FFN, BATCH = 8, 16, 8


def main() -> None:
    dist.init_process_group()
    rank = dist.get_rank()
    assert dist.get_world_size() == 8, "run on 8 ranks"
    mesh = dist.init_device_mesh("cpu", (2, 2, 2), mesh_dim_names=("dp", "pp", "tp"))
    dp_rank, pp_rank, tp_rank = mesh.get_coordinate()
    assert mesh.get_group("tp").global_ranks == [rank - rank % 2, rank - rank % 2 + 1]
    assert mesh.get_group("dp").global_ranks == [rank % 4, rank % 4 + 4]
    pyrt.manual_seed(9)
    stages = [nn.Sequential(TensorParallelMLP(H, FFN, group=mesh["tp"], dtype=F64), nn.Tanh()),
              nn.Sequential(TensorParallelMLP(H, FFN, group=mesh["tp"], dtype=F64),
                            nn.Linear(H, 3, dtype=F64))]
    pyrt.manual_seed(9)
    serial = nn.Sequential(nn.Linear(H, FFN, dtype=F64), nn.ReLU(), nn.Linear(FFN, H, dtype=F64), nn.Tanh(),
                           nn.Linear(H, FFN, dtype=F64), nn.ReLU(), nn.Linear(FFN, H, dtype=F64),
                           nn.Linear(H, 3, dtype=F64))
    mine = stages[pp_rank]
    stage = PipelineStage(DDP(mine, process_group=mesh.get_group("dp")), pp_rank, 2,
                          group=mesh.get_group("pp"))
    schedule = Schedule1F1B(stage, 2, nn.CrossEntropyLoss())
    opt = optim.SGD(mine.parameters(), lr=0.2, momentum=0.9)
    ref_opt = optim.SGD(serial.parameters(), lr=0.2, momentum=0.9)
    rng = np.random.default_rng(1)
    half = slice(dp_rank * BATCH // 2, (dp_rank + 1) * BATCH // 2)
    for _ in range(2):
        x, y = rng.standard_normal((BATCH, H)), rng.integers(0, 3, BATCH)
        opt.zero_grad()
        if pp_rank == 0:
            schedule.step(pyrt.tensor(x[half]))
        else:
            schedule.step(target=pyrt.tensor(y[half]))
        opt.step()
        ref_opt.zero_grad()
        nn.CrossEntropyLoss()(serial(pyrt.tensor(x)), pyrt.tensor(y)).backward()
        ref_opt.step()
    offset = 4 * pp_rank
    block = slice(tp_rank * FFN // 2, (tp_rank + 1) * FFN // 2)
    expected = {"0.fc1.weight": serial[offset].weight.data[block],
                "0.fc1.bias": serial[offset].bias.data[block],
                "0.fc2.weight": serial[offset + 2].weight.data[:, block],
                "0.fc2.bias": serial[offset + 2].bias.data,
                "1.weight": serial[7].weight.data, "1.bias": serial[7].bias.data}
    for name, p in mine.named_parameters():
        np.testing.assert_allclose(p.data, expected[name], rtol=1e-9, atol=1e-12,
                                   err_msg=f"rank {rank} dp x pp x tp: {name}")
    print(f"rank {rank}: dp x pp x tp matches serial at mesh coordinate {[dp_rank, pp_rank, tp_rank]}",
          flush=True)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
