"""Pipeline schedules: GPipe, 1F1B, interleaved 1F1B and zero-bubble (ZB-H1), and their interpreter.

A schedule is data. Each class only says in which order a rank takes its
forwards and backwards and how many micro-batches it may hold between the
two; ``actions.compute_order`` turns that into every rank's list of
computations, ``actions.add_communication`` adds the transfers, and
``validate.validate_schedule`` checks the whole pipeline in one process before
any data moves. ``_PipelineSchedule._run`` then interprets this rank's list;
it is the same loop for every schedule.

One step, as in PyTorch: the first stage calls ``schedule.step(x)``, the last
``schedule.step(target=y, losses=losses)``, the others ``schedule.step()``.
The batch is cut along dim 0 into ``n_microbatches`` parts. The last stage
computes ``loss_fn(output, target)`` per micro-batch, appends it to
``losses``, and starts each backward from ``1 / n_microbatches``: the
gradients are those of the mean of the micro-batch losses (the mean over the
batch when the parts are equal and the loss is a mean), averaged exactly once.
Gradients accumulate into ``.grad`` like ``loss.backward()``; call
``optimizer.zero_grad()`` between steps. Built without ``loss_fn``, a schedule
evaluates: ``step`` runs only the forwards, without recording a graph, and
returns the last stage's output.
"""

from __future__ import annotations

import abc
import contextlib
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from pyrt.autograd import WeightGradients, backward, backward_input, is_grad_enabled, no_grad
from pyrt.distributed import agreement
from pyrt.distributed.pipelining.actions import Action, add_communication, compute_order
from pyrt.distributed.pipelining.stage import PipelineStage, StageTransfers
from pyrt.distributed.pipelining.timeline import TimelineEvent
from pyrt.distributed.pipelining.validate import validate_schedule
from pyrt.tensor import Tensor

__all__ = ["Schedule1F1B", "ScheduleGPipe", "ScheduleInterleaved1F1B", "ScheduleZeroBubble"]

Order = list[list[tuple[int, int]]]


def _ddp(module: Any) -> Any:
    from pyrt.distributed.ddp import DistributedDataParallel

    return module if isinstance(module, DistributedDataParallel) else None


class _PipelineSchedule(abc.ABC):
    """What every schedule shares: the generated action lists and the interpreter that runs them."""

    split_backward = False
    forwards_first = False

    def __init__(self, stages: Sequence[PipelineStage], n_microbatches: int,
                 loss_fn: Callable[[Tensor, Tensor], Tensor] | None = None) -> None:
        name = type(self).__name__
        if isinstance(n_microbatches, bool) or not isinstance(n_microbatches, int) or n_microbatches < 1:
            raise ValueError(f"{name}: n_microbatches must be a positive int, got {n_microbatches!r}")
        if not stages or not all(isinstance(s, PipelineStage) for s in stages):
            raise TypeError(f"{name}: expected PipelineStage objects, got {stages!r}")
        if loss_fn is not None and not callable(loss_fn):
            raise TypeError(f"{name}: loss_fn must be callable (the last stage's loss), got {loss_fn!r}")
        group, num_stages = stages[0].group, stages[0].num_stages
        for s in stages:
            if s.group is not group or s.num_stages != num_stages:
                raise ValueError(f"{name}: stages {stages} do not belong to one pipeline")
        self.group = group
        self.num_ranks = group.size()
        self.num_stages = num_stages
        self.n_microbatches = n_microbatches
        self.loss_fn = loss_fn
        self._stages = {s.stage_index: s for s in stages}
        self._transfers = {s.stage_index: StageTransfers(s) for s in stages}
        expected = list(range(group.rank(), num_stages, self.num_ranks))
        if sorted(self._stages) != expected:
            raise ValueError(
                f"{name}: with {num_stages} stages on {self.num_ranks} ranks, group rank {group.rank()} "
                f"holds stages {expected}, but was given {sorted(self._stages)}")
        self._check_ranks_agree(name)
        #: Every rank's actions (computations and transfers), as data; validated once here.
        self.pipeline_order = self.generate(self.num_ranks, n_microbatches, num_stages // self.num_ranks,
                                            forward_only=loss_fn is None)
        self.stats = validate_schedule(self.pipeline_order, num_stages, n_microbatches)
        self.actions = self.pipeline_order[group.rank()]
        last = "W" if self.split_backward else "B"
        # DDP reduces a stage's gradients during its last backward of the step.
        self._final_backward = {a.stage: a for a in self.actions if a.kind == last}
        #: This rank's computations in the last step, with their start and end times.
        self.timeline: list[TimelineEvent] = []
        #: Per stage of this rank: the most micro-batches alive at once in the last step.
        self.peak_in_flight: dict[int, int] = {}

    def _check_ranks_agree(self, name: str) -> None:
        """Ranks running different schedules would wait for messages that never come: refuse."""
        from mpi4py import MPI

        mode = "training" if self.loss_fn is not None else "evaluation"
        agreement.agree(self.group, "the pipeline's schedule", {
            "schedule": name, "n_microbatches": self.n_microbatches, "stages": self.num_stages,
            "mode": mode})
        any_transfers = next(iter(self._transfers.values()))
        largest_tag = any_transfers.tag(self.n_microbatches - 1, self.num_stages - 1, direction=1)
        if largest_tag > self.group.comm.Get_attr(MPI.TAG_UB):
            raise ValueError(
                f"{name}: {self.n_microbatches} micro-batches x {self.num_stages} stages need MPI tags "
                f"up to {largest_tag}, beyond this MPI's limit {self.group.comm.Get_attr(MPI.TAG_UB)}")

    @classmethod
    def generate(cls, num_ranks: int, n_microbatches: int, stages_per_rank: int = 1,
                 forward_only: bool = False) -> dict[int, list[Action]]:
        """Every rank's action list for this schedule, without MPI (what ``validate_schedule`` takes).

        ``forward_only`` is the schedule built without a ``loss_fn`` (evaluation):
        forwards in order, as many in flight as there are micro-batches.

        >>> Schedule1F1B.generate(num_ranks=2, n_microbatches=2)[1]
        [1RECV_F0, 1F0, 1RECV_F1, 1B0, 1SEND_B0, 1F1, 1B1, 1SEND_B1]
        >>> Schedule1F1B.generate(num_ranks=2, n_microbatches=2, forward_only=True)[1]
        [1RECV_F0, 1RECV_F1, 1F0, 1F1]
        """
        num_stages = num_ranks * stages_per_rank
        forward, backward, limits = cls._orders(num_ranks, stages_per_rank, n_microbatches)
        if forward_only:
            backward, limits = [[] for _ in backward], [len(f) for f in forward]
        compute = compute_order(num_stages, num_ranks, n_microbatches, forward, backward, limits,
                                cls.split_backward, cls.forwards_first)
        return {r: add_communication(c, num_stages, num_ranks) for r, c in enumerate(compute)}

    @classmethod
    @abc.abstractmethod
    def _orders(cls, p: int, v: int, m: int) -> tuple[Order, Order, list[int]]:
        """Each of p ranks' forward order, backward order and in-flight limit (v stages per rank)."""

    # --- a step ------------------------------------------------------------------
    def step(self, *args: Any, target: Any = None, losses: list[Tensor] | None = None) -> Tensor | None:
        """Run one pipelined forward and backward over ``n_microbatches`` micro-batches.

        Returns the last stage's output (the micro-batches' outputs
        concatenated, detached); None on the other stages. A schedule built
        without ``loss_fn`` only runs the forwards (evaluation, no graph kept).
        """
        first, last = 0 in self._stages, self.num_stages - 1 in self._stages
        if self.loss_fn is None:
            with no_grad():
                return self._step(args, first, last, None, None)
        if not is_grad_enabled():
            raise RuntimeError(f"{type(self).__name__}.step trains, so it needs grad mode; it was "
                               "called under no_grad() (build the schedule without loss_fn to evaluate)")
        # Like PyTorch, stages other than the first ignore the batch, so one SPMD line
        # `schedule.step(x, target=y)` serves every rank.
        if last and target is None:
            raise TypeError(f"{type(self).__name__}.step: the last stage needs target= for its loss_fn")
        return self._step(args, first, last, target, losses)

    def _step(self, args: tuple[Any, ...], first: bool, last: bool, target: Any,
              losses: list[Tensor] | None) -> Tensor | None:
        if first and len(args) != 1:
            raise TypeError(
                f"{type(self).__name__}.step: the first stage takes the batch as one positional "
                f"argument; got {len(args)} on group rank {self.group.rank()}")
        inputs = self._split(args[0], "input") if first else None
        targets = self._split(target, "target") if last and self.loss_fn is not None else None
        self.timeline = []
        self.peak_in_flight = {}
        state = _StepState()
        for action in self.actions:
            self._run(action, state, inputs, targets)
        for work in state.sends:
            work.wait()
        for ddp in state.reducing:
            ddp._finish_reduction()
        if losses is not None:
            losses.extend(state.losses)
        if not last:
            return None
        return Tensor(np.concatenate([state.merged[mb] for mb in range(self.n_microbatches)]))

    def _split(self, batch: Any, what: str) -> list[Any]:
        array = batch.data if isinstance(batch, Tensor) else np.asarray(batch)
        if array.ndim == 0 or array.shape[0] < self.n_microbatches:
            raise ValueError(
                f"{type(self).__name__}.step: the {what} of shape {array.shape} cannot be cut into "
                f"{self.n_microbatches} micro-batches along dim 0")
        return np.array_split(array, self.n_microbatches)

    def _run(self, a: Action, state: _StepState, inputs: list[Any] | None,
             targets: list[Any] | None) -> None:
        transfers, key = self._transfers[a.stage], (a.stage, a.microbatch)
        if a.kind == "RECV_F":
            state.receives[a] = transfers.post_receive_input(a.microbatch)
        elif a.kind == "RECV_B":
            state.receives[a] = transfers.post_receive_grad(a.microbatch, state.outputs[key].data)
        elif a.kind == "SEND_F":
            state.sends += transfers.send_output(a.microbatch, state.outputs[key].data)
        elif a.kind == "SEND_B":
            state.sends += transfers.send_input_grad(a.microbatch, _input_grad(state.inputs.pop(key)))
        else:
            try:
                if a.kind == "F":
                    begin = self._forward(a, state, inputs, targets)
                elif a.kind in ("B", "I"):
                    begin = self._backward(a, state)
                else:
                    begin = self._weights(a, state)
            except Exception as exc:
                raise RuntimeError(
                    f"pipeline stage {a.stage}, micro-batch {a.microbatch} ({a!r} on group rank "
                    f"{self.group.rank()}): {type(exc).__name__}: {exc}") from exc
            self.timeline.append(TimelineEvent(a.kind, a.stage, a.microbatch, begin, time.perf_counter()))
            # A completed send no longer needs its buffer: let the activation go now, not at
            # the end of the step (mpi4py keeps a request's buffer until completion is seen).
            state.sends = [work for work in state.sends if not work.is_completed()]

    def _forward(self, a: Action, state: _StepState, inputs: list[Any] | None,
                 targets: list[Any] | None) -> float:
        stage, key = self._stages[a.stage], (a.stage, a.microbatch)
        if stage.is_first:
            array = inputs[a.microbatch]
        elif Action("RECV_F", *key) in state.receives:
            array = state.receives.pop(Action("RECV_F", *key)).wait()
        else:  # the previous stage lives on this rank
            array = state.outputs[(a.stage - 1, a.microbatch)].data
        begin = time.perf_counter()
        x = Tensor(array, requires_grad=not stage.is_first and np.issubdtype(array.dtype, np.floating))
        ddp = _ddp(stage.submodule)
        with ddp.no_sync() if ddp is not None else contextlib.nullcontext():
            out = stage.submodule(x)
        if not isinstance(out, Tensor):
            raise TypeError(f"a stage must return one Tensor, got {type(out).__name__}")
        state.inputs[key], state.outputs[key] = x, out
        if stage.is_last:
            state.merged[a.microbatch] = out.data
            if self.loss_fn is not None:
                loss = self.loss_fn(out, Tensor(targets[a.microbatch]))
                state.losses.append(loss.detach())
                state.loss_roots[key] = loss
        state.alive[a.stage] = state.alive.get(a.stage, 0) + 1
        self.peak_in_flight[a.stage] = max(self.peak_in_flight.get(a.stage, 0), state.alive[a.stage])
        return begin

    def _backward(self, a: Action, state: _StepState) -> float:
        """B, or I of a split backward (its W deferred); the gradient of the stage's input stays on it."""
        stage, key = self._stages[a.stage], (a.stage, a.microbatch)
        out = state.outputs[key] if a.kind == "I" else state.outputs.pop(key)
        if stage.is_last:
            root = state.loss_roots.pop(key)
            grad = np.full((), 1.0 / self.n_microbatches, dtype=root.dtype)
        elif Action("RECV_B", *key) in state.receives:
            root, grad = out, state.receives.pop(Action("RECV_B", *key)).wait()
        else:  # the next stage lives on this rank
            root, grad = out, _input_grad(state.inputs.pop((a.stage + 1, a.microbatch)))
        begin = time.perf_counter()
        x = state.inputs[key]
        # A stage without parameters whose output does not depend on its input has
        # nothing to differentiate; it still sends back a (zero) input gradient.
        if root.requires_grad:
            self._arm_ddp(a, stage, out, state)
            if a.kind == "B":
                backward(root, grad)
            else:
                state.weights[key] = backward_input(root, grad, inputs=[x] if x.requires_grad else [])
        if a.kind == "B":
            state.alive[a.stage] -= 1
        if stage.is_first:
            del state.inputs[key]
        return begin

    def _weights(self, a: Action, state: _StepState) -> float:
        key = (a.stage, a.microbatch)
        begin = time.perf_counter()
        out = state.outputs.pop(key)
        weights = state.weights.pop(key, None)
        if weights is not None:
            self._arm_ddp(a, self._stages[a.stage], out, state)
            weights.run()
        state.alive[a.stage] -= 1
        return begin

    def _arm_ddp(self, a: Action, stage: PipelineStage, output: Tensor, state: _StepState) -> None:
        ddp = _ddp(stage.submodule)
        if ddp is not None and self._final_backward.get(a.stage) == a:
            # Only the step's last backward reduces: the gradients of every micro-batch
            # have accumulated in .grad by the time its hooks fire. The buckets go out
            # as backward produces them; step() waits for them after its last action,
            # so this stage's input gradient leaves first and upstream stages drain on.
            ddp._prepare_for_backward(output, finish_later=True)
            state.reducing.append(ddp)


def _input_grad(x: Tensor) -> np.ndarray:
    """The gradient a stage sends back; zeros when its output did not depend on its input."""
    return x.grad.data if x.grad is not None else np.zeros_like(x.data)


class _StepState:
    """The tensors and requests of one step, keyed by (stage, micro-batch) or by action."""

    def __init__(self) -> None:
        self.inputs: dict[tuple[int, int], Tensor] = {}
        self.outputs: dict[tuple[int, int], Tensor] = {}
        self.loss_roots: dict[tuple[int, int], Tensor] = {}
        self.weights: dict[tuple[int, int], WeightGradients] = {}
        self.receives: dict[Action, Any] = {}
        self.sends: list[Any] = []
        self.losses: list[Tensor] = []
        self.merged: dict[int, Any] = {}
        self.alive: dict[int, int] = {}
        self.reducing: list[Any] = []  # DDP-wrapped stages whose reduction the step waits for


class _OneStagePerRank(_PipelineSchedule):
    """Schedules of one stage per rank taking micro-batches in order; they differ in memory only."""

    def __init__(self, stage: PipelineStage, n_microbatches: int,
                 loss_fn: Callable[[Tensor, Tensor], Tensor] | None = None) -> None:
        super().__init__([stage], n_microbatches, loss_fn)

    @staticmethod
    @abc.abstractmethod
    def _in_flight_limit(p: int, rank: int, m: int) -> int:
        """How many micro-batches ``rank`` may hold between forward and (weight) backward."""

    @classmethod
    def _orders(cls, p: int, v: int, m: int) -> tuple[Order, Order, list[int]]:
        order = [[(r, mb) for mb in range(m)] for r in range(p)]
        return order, order, [cls._in_flight_limit(p, r, m) for r in range(p)]


class ScheduleGPipe(_OneStagePerRank):
    """GPipe: every micro-batch's forward, then every backward. Bubble (p-1)/(m+p-1), m activations alive.

    Example (under ``mpiexec -n 2``)::

        schedule = ScheduleGPipe(stage, n_microbatches=4, loss_fn=nn.CrossEntropyLoss())
        if stage.is_first:
            schedule.step(x)
        else:
            schedule.step(target=y, losses=losses)
    """

    forwards_first = True

    @staticmethod
    def _in_flight_limit(p: int, rank: int, m: int) -> int:
        return m


class Schedule1F1B(_OneStagePerRank):
    """1F1B: after a warm-up, each rank alternates one forward and one backward.

    GPipe's bubble, (p-1)/(m+p-1), but stage s holds at most p - s micro-batches'
    activations instead of m. Used like ``ScheduleGPipe``.
    """

    @staticmethod
    def _in_flight_limit(p: int, rank: int, m: int) -> int:
        return p - rank


class ScheduleZeroBubble(Schedule1F1B):
    """ZB-H1 (Qi et al., 2023): 1F1B with each backward split into input (I) and weight (W) gradients.

    The next stage waits only for I; the W's are deferred into what would be
    bubbles, with 1F1B's activation memory (stage s holds at most p - s
    micro-batches until their W). Used like ``ScheduleGPipe``.
    """

    split_backward = True


class ScheduleInterleaved1F1B(_PipelineSchedule):
    """Interleaved 1F1B (Narayanan et al., 2021): v stages per rank, bubble (p-1)/(v*m+p-1).

    ``stages`` are this rank's v stages: rank r holds stages r, r+p, ... of
    v*p. Micro-batches go through in groups of p (Megatron's order: forwards
    by ascending stage, backwards by descending).

    Example (under ``mpiexec -n 2``, 4 stages)::

        mine = [PipelineStage(split_sequential(model, 4, stage_index=s), s, 4)
                for s in (rank, rank + 2)]
        schedule = ScheduleInterleaved1F1B(mine, n_microbatches=4, loss_fn=loss_fn)
    """

    @classmethod
    def _orders(cls, p: int, v: int, m: int) -> tuple[Order, Order, list[int]]:
        forward, backward, limits = [], [], []
        for r in range(p):
            pairs = [(chunk * p + r, mb) for chunk in range(v) for mb in range(m)]
            forward.append(sorted(pairs, key=lambda sm: (sm[1] // p, sm[0] // p, sm[1] % p)))
            backward.append(sorted(pairs, key=lambda sm: (sm[1] // p, v - 1 - sm[0] // p, sm[1] % p)))
            # Megatron's warm-up: (p - r - 1) * 2 + (v - 1) * p forwards before the first backward.
            limits.append((p - r - 1) * 2 + (v - 1) * p + 1)
        return forward, backward, limits

