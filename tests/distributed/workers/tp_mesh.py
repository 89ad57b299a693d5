"""One 4-rank script: a 2x2 (dp x tp) job and a 2x2 (pp x tp) job from device meshes.

dp x tp: a tensor-parallel model wrapped in DDP over the mesh's dp group
(SGD with momentum), and the same model under ZeroRedundancyOptimizer over
the dp group (Adam), each trained 3 steps, must equal the serial model
trained on the whole batch. pp x tp: two pipeline stages over the pp group,
each a tensor-parallel MLP over the tp group, under GPipe, 1F1B and
zero-bubble schedules, must equal the serial model too (float64). The mesh's
rank map, sub-meshes and errors are checked first.

Run: mpiexec -n 4 python tests/distributed/workers/tp_mesh.py
"""

from __future__ import annotations

import numpy as np

import pyrt
import pyrt.distributed as dist
from pyrt import nn, optim
from pyrt.distributed.optim import ZeroRedundancyOptimizer
from pyrt.distributed.pipelining import PipelineStage, Schedule1F1B, ScheduleGPipe, ScheduleZeroBubble
from pyrt.distributed.tensor_parallel import (
    ColumnParallelLinear,
    TensorParallelMLP,
    vocab_parallel_cross_entropy,
)
from pyrt.nn import functional as F
from pyrt.nn.parallel import DistributedDataParallel as DDP

F64 = np.float64
H, FFN, CLASSES, BATCH = 8, 16, 6, 8


def check_mesh(rank: int) -> None:
    mesh = dist.init_device_mesh("cpu", (2, 2), mesh_dim_names=("dp", "tp"))
    assert mesh.get_group("tp").global_ranks == [rank - rank % 2, rank - rank % 2 + 1]
    assert mesh.get_group("dp").global_ranks == [rank % 2, rank % 2 + 2]
    assert mesh.get_coordinate() == [rank // 2, rank % 2]
    assert mesh["tp"].get_group() is mesh.get_group("tp") and mesh["dp"].size() == 2
    assert mesh.get_local_rank("tp") == rank % 2 and mesh.size() == 4
    cube = dist.init_device_mesh("cpu", (1, 2, 2), mesh_dim_names=("dp", "pp", "tp"))
    assert cube["dp", "tp"].mesh.shape == (1, 2)
    assert cube["tp", "pp"].mesh.tolist() == np.arange(4).reshape(2, 2).T.tolist()
    assert cube["tp", "pp"].get_group("pp") is cube.get_group("pp")
    for bad, kind, words in [
        (lambda: dist.init_device_mesh("cpu", (3, 2)), ValueError, ["(3, 2) holds 6 ranks", "world has 4"]),
        (lambda: dist.init_device_mesh("cpu", (2, 2), mesh_dim_names=("dp",)), ValueError,
         ["mesh_dim_names", "2 dimensions"]),
        (lambda: mesh["pp"], KeyError, ["no dimension named 'pp'"]),
        (lambda: mesh.get_group(), ValueError, ["2 dimensions", "mesh_dim"]),
        (lambda: TensorParallelMLP(H, FFN, group=mesh), ValueError, ["one mesh dimension", "mesh['tp']"]),
    ]:
        try:
            bad()
        except kind as exc:
            assert all(w in str(exc) for w in words), (str(exc), words)
        else:
            raise AssertionError(f"expected {kind.__name__} with {words}")


def serial_model() -> nn.Sequential:
    pyrt.manual_seed(5)
    return nn.Sequential(nn.Linear(H, FFN, dtype=F64), nn.ReLU(), nn.Linear(FFN, H, dtype=F64), nn.Tanh(),
                         nn.Linear(H, CLASSES, dtype=F64))


def tp_model(tp) -> nn.Sequential:
    pyrt.manual_seed(5)
    return nn.Sequential(TensorParallelMLP(H, FFN, group=tp, dtype=F64), nn.Tanh(),
                         ColumnParallelLinear(H, CLASSES, gather_output=False, group=tp, dtype=F64))


def sliced(tp_params: dict, serial_params: dict, tp_rank: int) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(name, tensor-parallel value, the serial value's matching slice) for every parameter."""
    mapping = {"0.fc1.weight": ("0.weight", 0), "0.fc1.bias": ("0.bias", 0), "0.fc2.weight": ("2.weight", 1),
               "0.fc2.bias": ("2.bias", None), "2.weight": ("4.weight", 0), "2.bias": ("4.bias", 0)}
    out = []
    for name, p in tp_params.items():
        serial_name, axis = mapping[name]
        q = serial_params[serial_name].data
        if axis is not None:
            part = p.shape[axis]
            q = np.take(q, range(tp_rank * part, (tp_rank + 1) * part), axis=axis)
        out.append((name, p.data, q))
    return out


def check_dp_x_tp(rank: int) -> None:
    mesh = dist.init_device_mesh("cpu", (2, 2), mesh_dim_names=("dp", "tp"))
    dp_rank, tp_rank = mesh.get_coordinate()
    ddp = DDP(tp_model(mesh["tp"]), process_group=mesh.get_group("dp"))
    zero_model = tp_model(mesh["tp"])
    serial, serial_adam = serial_model(), serial_model()
    sgd = dict(lr=0.1, momentum=0.9)
    runs = [(ddp, optim.SGD(ddp.parameters(), **sgd), serial, optim.SGD(serial.parameters(), **sgd)),
            (zero_model, ZeroRedundancyOptimizer(zero_model.parameters(), optim.Adam,
                                                 process_group=mesh.get_group("dp"), lr=0.01),
             serial_adam, optim.Adam(serial_adam.parameters(), lr=0.01))]
    rng = np.random.default_rng(0)
    half = slice(dp_rank * BATCH // 2, (dp_rank + 1) * BATCH // 2)
    for _ in range(3):
        x, y = rng.standard_normal((BATCH, H)), rng.integers(0, CLASSES, BATCH)
        for model, opt, ref, ref_opt in runs:
            opt.zero_grad()
            logits = model(pyrt.tensor(x[half]))
            vocab_parallel_cross_entropy(logits, pyrt.tensor(y[half]), group=mesh["tp"]).backward()
            opt.step()
            ref_opt.zero_grad()
            F.cross_entropy(ref(pyrt.tensor(x)), pyrt.tensor(y)).backward()
            ref_opt.step()
    for label, model, ref in (("ddp+sgd", ddp.module, serial), ("zero+adam", zero_model, serial_adam)):
        for name, mine, expected in sliced(dict(model.named_parameters()), dict(ref.named_parameters()),
                                           tp_rank):
            np.testing.assert_allclose(mine, expected, rtol=1e-9, atol=1e-12,
                                       err_msg=f"rank {rank} dp x tp {label}: {name}")
    print(f"rank {rank}: dp x tp matches serial (DDP+SGD, ZeRO+Adam)", flush=True)


def check_pp_x_tp(rank: int) -> None:
    mesh = dist.init_device_mesh("cpu", (2, 2), mesh_dim_names=("pp", "tp"))
    pp_rank, tp_rank = mesh.get_coordinate()
    for schedule_class in (ScheduleGPipe, Schedule1F1B, ScheduleZeroBubble):
        # Every rank builds both stages, in order, so each draws what the serial model draws.
        pyrt.manual_seed(9)
        stages = [nn.Sequential(TensorParallelMLP(H, FFN, group=mesh["tp"], dtype=F64), nn.Tanh()),
                  nn.Sequential(TensorParallelMLP(H, FFN, group=mesh["tp"], dtype=F64),
                                nn.Linear(H, 3, dtype=F64))]
        pyrt.manual_seed(9)
        serial = nn.Sequential(nn.Linear(H, FFN, dtype=F64), nn.ReLU(), nn.Linear(FFN, H, dtype=F64),
                               nn.Tanh(), nn.Linear(H, FFN, dtype=F64), nn.ReLU(),
                               nn.Linear(FFN, H, dtype=F64), nn.Linear(H, 3, dtype=F64))
        mine = stages[pp_rank]
        stage = PipelineStage(mine, pp_rank, 2, group=mesh.get_group("pp"))
        schedule = schedule_class(stage, 4, nn.CrossEntropyLoss())
        opt = optim.SGD(mine.parameters(), lr=0.2, momentum=0.9)
        ref_opt = optim.SGD(serial.parameters(), lr=0.2, momentum=0.9)
        rng = np.random.default_rng(1)
        for _ in range(2):
            x, y = rng.standard_normal((BATCH, H)), rng.integers(0, 3, BATCH)
            opt.zero_grad()
            if pp_rank == 0:
                schedule.step(pyrt.tensor(x))
            else:
                schedule.step(target=pyrt.tensor(y))
            opt.step()
            ref_opt.zero_grad()
            nn.CrossEntropyLoss()(serial(pyrt.tensor(x)), pyrt.tensor(y)).backward()
            ref_opt.step()
        offset = 4 * pp_rank   # stage 1's MLP is serial layers 4 and 6
        block = slice(tp_rank * FFN // 2, (tp_rank + 1) * FFN // 2)
        expected = {"0.fc1.weight": serial[offset].weight.data[block],
                    "0.fc1.bias": serial[offset].bias.data[block],
                    "0.fc2.weight": serial[offset + 2].weight.data[:, block],
                    "0.fc2.bias": serial[offset + 2].bias.data,
                    "1.weight": serial[7].weight.data, "1.bias": serial[7].bias.data}
        for name, p in mine.named_parameters():
            np.testing.assert_allclose(p.data, expected[name], rtol=1e-9, atol=1e-12,
                                       err_msg=f"rank {rank} pp x tp {schedule_class.__name__}: {name}")
        print(f"rank {rank}: pp x tp matches serial under {schedule_class.__name__}", flush=True)


def main() -> None:
    dist.init_process_group()
    rank = dist.get_rank()
    assert dist.get_world_size() == 4, "run on 4 ranks"
    check_mesh(rank)
    check_dp_x_tp(rank)
    check_pp_x_tp(rank)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
