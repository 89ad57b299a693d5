"""``PipelineStage``: one stage's module, its place in the pipeline, and its transfers.

Stage s lives on rank ``s % group.size()`` of its pipeline group (one stage
per rank, or v round-robin stages per rank for interleaved schedules).

Transfers are non-blocking MPI requests on the pipeline group's communicator.
Tags encode (micro-batch, receiving stage, direction), so every message of a
step has a tag of its own and a receive can be posted long before its send.
The first step learns the shape and dtype of every activation from a small
header sent ahead of the data (``TensorMeta``); later steps post their
receives with the shapes they learned, and a sender whose tensor differs from
the first step's raises an error naming the stages and the micro-batch.
Gradients need no header: the gradient of a stage's output has the output's
shape, which the receiving stage knows.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pyrt.distributed.collectives import irecv, isend
from pyrt.distributed.functional import TensorMeta
from pyrt.distributed.process_group import ProcessGroup, resolve_group
from pyrt.distributed.work import Work
from pyrt.nn.module import Module

__all__ = ["PipelineStage", "StageTransfers"]

_FORWARD, _BACKWARD = 0, 1


class PipelineStage:
    """Stage ``stage_index`` of ``num_stages``: ``submodule`` and where its neighbours live.

    ``group`` is the pipeline's process group (default: the world); ``device``
    is accepted as in PyTorch and must be the CPU. With one
    stage per rank, ``stage_index`` is this rank's group rank; interleaved
    schedules give each rank v stages ``rank, rank + size, ...``. The
    submodule may be wrapped in ``DistributedDataParallel`` over a data-parallel
    group: the schedules then reduce its gradients once per step, overlapped
    with the last backward.

    Example (under ``mpiexec -n 2``)::

        dist.init_process_group()
        part = split_sequential(model, num_stages=2)
        stage = PipelineStage(part, stage_index=dist.get_rank(), num_stages=2)
    """

    def __init__(self, submodule: Module, stage_index: int, num_stages: int, device: Any = None,
                 group: ProcessGroup | None = None) -> None:
        if device is not None and str(device) != "cpu":
            raise ValueError(f"PipelineStage: pyrt's pipeline runs on the CPU, got device={device!r}")
        if not isinstance(submodule, Module):
            raise TypeError(f"PipelineStage: submodule must be an nn.Module, got {type(submodule).__name__}")
        self.group = resolve_group(group, "PipelineStage")
        size = self.group.size()
        if not 0 <= stage_index < num_stages:
            raise ValueError(f"PipelineStage: stage_index {stage_index} is outside [0, {num_stages})")
        if num_stages % size:
            raise ValueError(
                f"PipelineStage: {num_stages} stages do not divide evenly over the pipeline group's "
                f"{size} ranks")
        if stage_index % size != self.group.rank():
            raise ValueError(
                f"PipelineStage: stage {stage_index} of {num_stages} belongs to group rank "
                f"{stage_index % size}, but this is group rank {self.group.rank()} "
                f"(global rank {self.group.global_ranks[self.group.rank()]})")
        self.submodule = submodule
        self.stage_index = stage_index
        self.num_stages = num_stages
        self.is_first = stage_index == 0
        self.is_last = stage_index == num_stages - 1

    def __repr__(self) -> str:
        return f"PipelineStage({self.stage_index} of {self.num_stages}, {self.group})"

    def global_rank_of(self, stage: int) -> int:
        return self.group.global_ranks[stage % self.group.size()]


class StageTransfers:
    """One schedule's transfers for one stage, and the shapes its first step learned.

    A schedule owns one per stage, so a stage can serve several schedules
    (different micro-batch counts, a training and an evaluation batch size),
    each learning its own shapes.
    """

    def __init__(self, stage: PipelineStage) -> None:
        self.stage = stage
        self.group = stage.group
        # Shapes learned on the first step: received inputs and sent outputs, per micro-batch.
        self.received_meta: dict[int, TensorMeta] = {}
        self.sent_meta: dict[int, TensorMeta] = {}

    def tag(self, microbatch: int, receiving_stage: int, direction: int) -> int:
        return (microbatch * self.stage.num_stages + receiving_stage) * 2 + direction

    def post_receive_input(self, microbatch: int) -> _Receive:
        return _Receive(self, microbatch, _FORWARD, self.stage.global_rank_of(self.stage.stage_index - 1),
                        self.received_meta.get(microbatch))

    def post_receive_grad(self, microbatch: int, output: Any) -> _Receive:
        return _Receive(self, microbatch, _BACKWARD, self.stage.global_rank_of(self.stage.stage_index + 1),
                        TensorMeta.of(output))

    def send_output(self, microbatch: int, output: np.ndarray) -> list[Work]:
        index = self.stage.stage_index
        dst = self.stage.global_rank_of(index + 1)
        tag = self.tag(microbatch, index + 1, _FORWARD)
        meta, known = TensorMeta.of(output), self.sent_meta.get(microbatch)
        works = []
        if known is None:
            self.sent_meta[microbatch] = meta
            works.append(isend(meta.pack(), dst, group=self.group, tag=tag))
        elif known != meta:
            raise ValueError(
                f"pipeline stage {index} -> {index + 1}, micro-batch {microbatch}: the output is "
                f"{meta} but the first step sent {known}; the shapes passed between stages are fixed "
                "by a schedule's first step (keep the batch size fixed, e.g. DataLoader(drop_last=True), "
                "or build another schedule for another size)")
        works.append(isend(np.ascontiguousarray(output), dst, group=self.group, tag=tag))
        return works

    def send_input_grad(self, microbatch: int, grad: np.ndarray) -> list[Work]:
        index = self.stage.stage_index
        tag = self.tag(microbatch, index - 1, _BACKWARD)
        return [isend(np.ascontiguousarray(grad), self.stage.global_rank_of(index - 1), group=self.group,
                      tag=tag)]


class _Receive:
    """A posted receive: the header first when the shape is not known yet, then the data."""

    def __init__(self, transfers: StageTransfers, microbatch: int, direction: int, src: int,
                 meta: TensorMeta | None) -> None:
        self.transfers, self.microbatch, self.src = transfers, microbatch, src
        self.tag = transfers.tag(microbatch, transfers.stage.stage_index, direction)
        self.header = None if meta is not None else np.empty(TensorMeta.HEADER_SIZE, dtype=np.int64)
        target = self.header if meta is None else meta.empty()
        self.buffer = None if meta is None else target
        self.work = irecv(target, src=src, group=transfers.group, tag=self.tag)

    def wait(self) -> np.ndarray:
        self.work.wait()
        if self.buffer is None:  # the header arrived: now the data, which was sent right behind it
            meta = TensorMeta.unpack(self.header)
            self.transfers.received_meta[self.microbatch] = meta
            self.buffer = meta.empty()
            irecv(self.buffer, src=self.src, group=self.transfers.group, tag=self.tag).wait()
        return self.buffer
