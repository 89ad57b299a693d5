"""Pipeline x data parallelism on a 2-D grid of 4 ranks vs one process on the global batch.

Ranks form a 2 (data) x 2 (pipeline) grid, pipeline rank fastest: pipeline
groups {0, 1} and {2, 3}, data groups {0, 2} and {1, 3}. Each pipeline
replica trains on its half of every global batch; each stage is wrapped in
DistributedDataParallel over its data group, which the schedules reduce once
per step. After 3 SGD steps every stage's parameters must equal the whole
model trained in one process on the whole batch (float64, rtol 1e-5).

Run: mpiexec -n 4 python tests/distributed/workers/pipeline_ddp.py
"""

from __future__ import annotations

import numpy as np

import pyrt
import pyrt.distributed as dist
from pyrt import nn
from pyrt.distributed.pipelining import (
    PipelineStage,
    Schedule1F1B,
    ScheduleGPipe,
    ScheduleInterleaved1F1B,
    ScheduleZeroBubble,
    split_sequential,
)
from pyrt.nn.parallel import DistributedDataParallel as DDP

PP, DP, BATCH = 2, 2, 16


def make_model(num_stages: int) -> nn.Sequential:
    pyrt.manual_seed(0)
    layers: list[nn.Module] = []
    for _ in range(num_stages):
        layers += [nn.Linear(5, 5), nn.Tanh()]
    return nn.Sequential(*layers, nn.Linear(5, 3)).double()


def main() -> None:
    dist.init_process_group()
    rank = dist.get_rank()
    assert dist.get_world_size() == PP * DP, "run on 4 ranks"
    replica, pipeline_rank = divmod(rank, PP)
    pipeline_groups = [dist.new_group([d * PP + s for s in range(PP)]) for d in range(DP)]
    data_groups = [dist.new_group([d * PP + s for d in range(DP)]) for s in range(PP)]
    pp_group, dp_group = pipeline_groups[replica], data_groups[pipeline_rank]

    for cls in (ScheduleGPipe, Schedule1F1B, ScheduleZeroBubble, ScheduleInterleaved1F1B):
        per_rank = 2 if cls is ScheduleInterleaved1F1B else 1
        num_stages = PP * per_rank
        model, reference = make_model(num_stages), make_model(num_stages)
        stages = [PipelineStage(DDP(split_sequential(model, num_stages, stage_index=s),
                                    process_group=dp_group, bucket_cap_mb=0.0001),
                                s, num_stages, group=pp_group)
                  for s in range(pipeline_rank, num_stages, PP)]
        schedule = (cls(stages, 4, nn.CrossEntropyLoss()) if per_rank > 1
                    else cls(stages[0], 4, nn.CrossEntropyLoss()))
        mine = [(n, p) for s in stages for n, p in s.submodule.module.named_parameters()]
        opt = pyrt.optim.SGD([p for _, p in mine], lr=0.2, momentum=0.9)
        ref_opt = pyrt.optim.SGD(reference.parameters(), lr=0.2, momentum=0.9)
        rng = np.random.default_rng(1)
        half = slice(replica * BATCH // DP, (replica + 1) * BATCH // DP)
        for _ in range(3):
            x = rng.standard_normal((BATCH, 5))
            y = rng.integers(0, 3, BATCH)
            opt.zero_grad()
            if pipeline_rank == 0:
                schedule.step(pyrt.tensor(x[half]))
            else:
                schedule.step(target=pyrt.tensor(y[half]))
            opt.step()
            ref_opt.zero_grad()
            nn.CrossEntropyLoss()(reference(pyrt.tensor(x)), pyrt.tensor(y)).backward()
            ref_opt.step()
        ref_params = dict(reference.named_parameters())
        for name, p in mine:
            np.testing.assert_allclose(p.data, ref_params[name].data, rtol=1e-5, atol=1e-12,
                                       err_msg=f"{cls.__name__} rank {rank}: {name}")
        print(f"rank {rank}: pipeline x ddp matches {cls.__name__}", flush=True)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
