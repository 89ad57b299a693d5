"""Every pipeline schedule vs the unpartitioned model on the same batch, in float64.

For GPipe, 1F1B, zero-bubble (ZB-H1) and interleaved 1F1B (2 stages per
rank) and m in {1, 2, 3, 4, 8} micro-batches (fewer than the stages too),
each rank runs 3 training steps of its stages and, beside them, the whole
model in one process on the whole batch. After every step the mean of the
micro-batch losses must equal the full-batch loss and each of this rank's
parameter gradients the full model's (rtol 1e-5); after the 3 SGD steps the
parameters must match. Then the differentiable send/recv of
``pyrt.distributed.functional`` trains a hand-split model the same way.

Run: mpiexec -n 2 python tests/distributed/workers/pipeline_equivalence.py
"""

from __future__ import annotations

import numpy as np

import pyrt
import pyrt.distributed as dist
from pyrt import nn
from pyrt.autograd import backward
from pyrt.distributed.functional import recv, send
from pyrt.distributed.pipelining import (
    PipelineStage,
    Schedule1F1B,
    ScheduleGPipe,
    ScheduleInterleaved1F1B,
    ScheduleZeroBubble,
    split_sequential,
)

FEATURES, CLASSES, BATCH = 6, 3, 24  # 24 divides into 1, 2, 3, 4 and 8 equal micro-batches


def make_model(num_blocks: int) -> nn.Sequential:
    pyrt.manual_seed(0)
    layers: list[nn.Module] = []
    for _ in range(num_blocks):
        layers += [nn.Linear(FEATURES, FEATURES), nn.Tanh()]
    return nn.Sequential(*layers, nn.Linear(FEATURES, CLASSES)).double()


def assert_close(what: str, got: np.ndarray, want: np.ndarray) -> None:
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-12, err_msg=what)


def check_schedule(cls: type, m: int, rank: int, world: int) -> None:
    per_rank = 2 if cls is ScheduleInterleaved1F1B else 1
    num_stages = world * per_rank
    model, reference = make_model(num_stages), make_model(num_stages)
    stages = [PipelineStage(split_sequential(model, num_stages, stage_index=s), s, num_stages)
              for s in range(rank, num_stages, world)]
    schedule = (cls(stages, m, nn.CrossEntropyLoss()) if per_rank > 1
                else cls(stages[0], m, nn.CrossEntropyLoss()))
    mine = [(name, p) for s in stages for name, p in s.submodule.named_parameters()]
    opt = pyrt.optim.SGD([p for _, p in mine], lr=0.1, momentum=0.9)
    ref_params = dict(reference.named_parameters())
    ref_opt = pyrt.optim.SGD(reference.parameters(), lr=0.1, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()
    rng = np.random.default_rng(m)
    first, last = 0 in schedule._stages, num_stages - 1 in schedule._stages
    label = f"{cls.__name__} m={m} rank {rank}"
    for step in range(3):
        x = pyrt.tensor(rng.standard_normal((BATCH, FEATURES)))
        y = pyrt.tensor(rng.integers(0, CLASSES, BATCH))
        opt.zero_grad()
        losses: list[pyrt.Tensor] = []
        args = (x,) if first else ()
        output = schedule.step(*args, target=y if last else None, losses=losses if last else None)
        ref_opt.zero_grad()
        ref_out = reference(x)
        ref_loss = loss_fn(ref_out, y)
        ref_loss.backward()
        if last:
            assert len(losses) == m, f"{label}: {len(losses)} losses for {m} micro-batches"
            assert_close(f"{label} step {step}: loss", np.mean([t.item() for t in losses]), ref_loss.item())
            assert_close(f"{label} step {step}: output", output.data, ref_out.data)
        else:
            assert output is None and not losses
        for name, p in mine:
            assert_close(f"{label} step {step}: grad of {name}", p.grad.data, ref_params[name].grad.data)
        opt.step()
        ref_opt.step()
    for name, p in mine:
        assert_close(f"{label}: {name} after 3 steps", p.data, ref_params[name].data)
    # Without a loss_fn the same stages evaluate: forwards only, no graph, no gradients.
    evaluate = (cls(stages, m) if per_rank > 1 else cls(stages[0], m))
    opt.zero_grad()
    output = evaluate.step(x, target=y)
    if last:
        with pyrt.no_grad():
            assert_close(f"{label}: evaluation output", output.data, reference(x).data)
    assert all(p.grad is None for _, p in mine), f"{label}: evaluation produced gradients"
    assert all(a.kind in ("F", "RECV_F", "SEND_F") for a in evaluate.actions)
    # 1F1B's promise: stage s never holds more than (number of stages - s) micro-batches.
    if cls in (Schedule1F1B, ScheduleZeroBubble):
        assert schedule.peak_in_flight[rank] <= min(m, world - rank), (label, schedule.peak_in_flight)
    print(f"rank {rank}: pipeline matches {cls.__name__} m={m}", flush=True)


def check_functional_send_recv(rank: int, world: int) -> None:
    """A hand-split model trained with send/recv delegates equals the whole model."""
    model, reference = make_model(world), make_model(world)
    part = split_sequential(model, world)
    x = pyrt.tensor(np.random.default_rng(7).standard_normal((5, FEATURES)))
    y = pyrt.tensor(np.arange(5) % CLASSES)
    h = x if rank == 0 else recv(src=rank - 1, tag=3)
    out = part(h)
    if rank == world - 1:
        nn.CrossEntropyLoss()(out, y).backward()
    else:
        delegate = send(out, dst=rank + 1, tag=3)
        assert delegate.shape == () and delegate.requires_grad
        backward([delegate])
    nn.CrossEntropyLoss()(reference(x), y).backward()
    ref_params = dict(reference.named_parameters())
    for name, p in part.named_parameters():
        assert_close(f"send/recv rank {rank}: grad of {name}", p.grad.data, ref_params[name].grad.data)
    print(f"rank {rank}: functional send/recv matches", flush=True)


def check_parameterless_first_stage(rank: int, world: int) -> None:
    """A first stage with no parameters (its output needs no gradient) still trains the rest."""
    def make() -> nn.Sequential:
        pyrt.manual_seed(0)
        return nn.Sequential(nn.ReLU(), *make_model(world - 1)).double()

    model, reference = make(), make()
    balance = [1] + [len(model) - 1 - (world - 2)] + [1] * (world - 2)
    part = split_sequential(model, world, balance=balance)
    x = pyrt.tensor(np.random.default_rng(5).standard_normal((BATCH, FEATURES)))
    y = pyrt.tensor(np.arange(BATCH) % CLASSES)
    nn.CrossEntropyLoss()(reference(x), y).backward()
    ref_params = dict(reference.named_parameters())
    for cls in (Schedule1F1B, ScheduleZeroBubble):
        model.zero_grad()
        cls(PipelineStage(part, rank, world), 4, nn.CrossEntropyLoss()).step(x, target=y)
        for name, p in part.named_parameters():
            assert_close(f"{cls.__name__} no-parameter first stage, rank {rank}: grad of {name}",
                         p.grad.data, ref_params[name].grad.data)
    print(f"rank {rank}: parameterless first stage matches", flush=True)


def main() -> None:
    dist.init_process_group()
    rank, world = dist.get_rank(), dist.get_world_size()
    if world > 1:
        check_functional_send_recv(rank, world)
        check_parameterless_first_stage(rank, world)
    for cls in (ScheduleGPipe, Schedule1F1B, ScheduleZeroBubble, ScheduleInterleaved1F1B):
        for m in (1, 2, 3, 4, 8):
            check_schedule(cls, m, rank, world)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
