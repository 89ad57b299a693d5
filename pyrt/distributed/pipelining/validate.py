"""Check a generated schedule in one process, without MPI, before any rank runs it.

``validate_schedule`` executes every rank's action list against the others in
a simulation with unit costs (F = I = W = 1, B = 2): a computation runs once
its data has been sent to it and its receive was posted, a send only after
the computation that produces it. It raises ``ScheduleError`` naming the
actions involved when a schedule would compute a micro-batch twice or never,
run a backward before its forward or a stage before the one feeding it, send
without a matching receive (or receive what nobody sends), or deadlock; and
it returns what the schedule costs: the bubble fraction and each stage's peak
number of micro-batches whose activations are alive.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Mapping, Sequence

from pyrt.distributed.pipelining.actions import COSTS, Action, stage_rank

__all__ = ["ScheduleError", "ScheduleStats", "validate_schedule"]


class ScheduleError(ValueError):
    """A schedule that would compute the wrong thing, leave a message unmatched, or hang."""


@dataclasses.dataclass
class ScheduleStats:
    """What a valid schedule costs in the unit-cost simulation."""

    makespan: float
    bubble_fraction: float  # mean over ranks of the share of the makespan spent idle
    peak_in_flight: list[int]  # per stage: most micro-batches between forward and last backward


def _message(action: Action, num_stages: int) -> tuple[str, int, int]:
    """The message a transfer carries, named by direction, receiving stage and micro-batch."""
    if action.kind == "SEND_F":
        return ("F", action.stage + 1, action.microbatch)
    if action.kind == "SEND_B":
        return ("B", action.stage - 1, action.microbatch)
    return ("F" if action.kind == "RECV_F" else "B", action.stage, action.microbatch)


def _check_coverage(pipeline_order: Mapping[int, Sequence[Action]], num_stages: int,
                    n_microbatches: int) -> bool:
    """Every (stage, micro-batch) computed exactly once on its rank (forward-only schedules have
    no backward); returns whether backward is split."""
    num_ranks = len(pipeline_order)
    seen: Counter[tuple[str, int, int]] = Counter()
    for rank, actions in pipeline_order.items():
        for a in actions:
            if not 0 <= a.stage < num_stages or not 0 <= a.microbatch < n_microbatches:
                raise ScheduleError(f"rank {rank}: {a!r} names a stage or micro-batch that does not exist")
            if stage_rank(a.stage, num_ranks) != rank:
                raise ScheduleError(f"rank {rank}: {a!r} belongs to rank {stage_rank(a.stage, num_ranks)}")
            if a.is_compute:
                seen[(a.kind, a.stage, a.microbatch)] += 1
    split = any(kind in ("I", "W") for kind, _, _ in seen)
    forward_only = not any(kind in ("B", "I", "W") for kind, _, _ in seen)
    kinds = ("F",) if forward_only else ("F", "I", "W") if split else ("F", "B")
    for stage in range(num_stages):
        for mb in range(n_microbatches):
            for kind in kinds:
                count = seen[(kind, stage, mb)]
                if count != 1:
                    raise ScheduleError(
                        f"{Action(kind, stage, mb)!r} appears {count} times (expected once)")
    if split and any(kind == "B" for kind, _, _ in seen):
        raise ScheduleError("the schedule mixes full backwards (B) with split ones (I/W)")
    return split


def validate_schedule(pipeline_order: Mapping[int, Sequence[Action]], num_stages: int,
                      n_microbatches: int,
                      costs: Mapping[tuple[str, int], float] | None = None) -> ScheduleStats:
    """Raise ``ScheduleError`` unless every rank's actions together run the pipeline correctly.

    ``pipeline_order`` maps each rank to its full action list (computations and
    transfers); stage s lives on rank ``s % len(pipeline_order)``. ``costs``
    maps (kind, stage) to a duration, e.g. the mean measured times of a real
    run, to ask what the schedule would achieve with those stages and free
    transfers; by default F = I = W = 1, B = 2 on every stage.

    >>> from pyrt.distributed.pipelining.actions import add_communication
    >>> order = {0: add_communication([Action("F", 0, 0), Action("B", 0, 0)], 2, 2),
    ...          1: add_communication([Action("F", 1, 0), Action("B", 1, 0)], 2, 2)}
    >>> validate_schedule(order, num_stages=2, n_microbatches=1)
    ScheduleStats(makespan=6.0, bubble_fraction=0.5, peak_in_flight=[1, 1])
    >>> validate_schedule({0: order[1], 1: order[0]}, 2, 1)
    Traceback (most recent call last):
    ...
    pyrt.distributed.pipelining.validate.ScheduleError: rank 0: 1RECV_F0 belongs to rank 1
    """
    num_ranks = len(pipeline_order)
    if sorted(pipeline_order) != list(range(num_ranks)):
        raise ScheduleError(f"pipeline_order must map ranks 0..{num_ranks - 1}, got {sorted(pipeline_order)}")
    split = _check_coverage(pipeline_order, num_stages, n_microbatches)
    last_backward = "I" if split else "B"

    position = dict.fromkeys(pipeline_order, 0)
    clock = dict.fromkeys(pipeline_order, 0.0)
    busy = dict.fromkeys(pipeline_order, 0.0)
    in_flight = [0] * num_stages
    peak = [0] * num_stages
    finished: dict[tuple[str, int, int], float] = {}  # computation -> time it finished
    sent: dict[tuple[str, int, int], float] = {}  # message -> time it left
    posted: dict[tuple[str, int, int], int] = {}  # message -> rank that posted its receive
    consumed: set[tuple[str, int, int]] = set()

    def blocked_on(rank: int, a: Action) -> tuple[list[int], str | None]:
        """Times the computation's inputs are available, or why it cannot run (yet)."""
        times = []
        if a.kind == "F" and a.stage > 0:
            producer = ("F", a.stage - 1, a.microbatch)
            key = ("F", a.stage, a.microbatch)
        elif a.kind in ("B", "I") and a.stage < num_stages - 1:
            producer = (last_backward, a.stage + 1, a.microbatch)
            key = ("B", a.stage, a.microbatch)
        else:
            producer, key = None, None
        if a.kind in ("B", "I"):
            if ("F", a.stage, a.microbatch) not in finished:
                raise ScheduleError(f"rank {rank}: {a!r} runs before its forward")
            times.append(finished[("F", a.stage, a.microbatch)])
        if a.kind == "W":
            if ("I", a.stage, a.microbatch) not in finished:
                raise ScheduleError(f"rank {rank}: {a!r} runs before its input gradient")
            times.append(finished[("I", a.stage, a.microbatch)])
        if producer is not None:
            if stage_rank(producer[1], num_ranks) == rank:
                if producer not in finished:
                    raise ScheduleError(
                        f"rank {rank}: {a!r} runs before {Action(*producer)!r} on the same rank")
                times.append(finished[producer])
            else:
                if posted.get(key) != rank:
                    raise ScheduleError(f"rank {rank}: {a!r} runs without posting its receive first")
                if key not in sent:
                    return times, f"{a!r} waits for {Action(*producer)!r}"
                consumed.add(key)
                times.append(sent[key])
        return times, None

    waiting: dict[int, str] = {}
    while any(position[r] < len(pipeline_order[r]) for r in pipeline_order):
        progressed = False
        for rank, actions in pipeline_order.items():
            while position[rank] < len(actions):
                a = actions[position[rank]]
                if a.kind in ("RECV_F", "RECV_B"):
                    message = _message(a, num_stages)
                    if message in posted:
                        raise ScheduleError(f"rank {rank}: {a!r} is posted twice")
                    posted[message] = rank
                elif a.kind in ("SEND_F", "SEND_B"):
                    produced_by = ("F" if a.kind == "SEND_F" else last_backward, a.stage, a.microbatch)
                    if produced_by not in finished:
                        raise ScheduleError(f"rank {rank}: {a!r} sends before {Action(*produced_by)!r} ran")
                    message = _message(a, num_stages)
                    if message in sent:
                        raise ScheduleError(f"rank {rank}: {a!r} is sent twice")
                    sent[message] = finished[produced_by]
                else:
                    times, reason = blocked_on(rank, a)
                    if reason is not None:
                        waiting[rank] = reason
                        break
                    start = max([clock[rank], *times])
                    cost = COSTS[a.kind] if costs is None else costs[(a.kind, a.stage)]
                    clock[rank] = start + cost
                    busy[rank] += cost
                    finished[(a.kind, a.stage, a.microbatch)] = clock[rank]
                    if a.kind == "F":
                        in_flight[a.stage] += 1
                        peak[a.stage] = max(peak[a.stage], in_flight[a.stage])
                    elif a.kind in ("B", "W"):
                        in_flight[a.stage] -= 1
                waiting.pop(rank, None)
                position[rank] += 1
                progressed = True
        if not progressed:
            raise ScheduleError("the schedule deadlocks: " + "; ".join(
                f"rank {r} {why}" for r, why in sorted(waiting.items())))
    unmatched = sorted(set(sent) ^ set(posted)) or sorted(set(posted) - consumed)
    if unmatched:
        kind, stage, mb = unmatched[0]
        raise ScheduleError(
            f"message {kind} for stage {stage}, micro-batch {mb} has "
            f"{'no receive' if unmatched[0] not in posted else 'no matching send or no consumer'}")
    makespan = max(clock.values()) if clock else 0.0
    bubble = sum(1 - busy[r] / makespan for r in pipeline_order) / num_ranks if makespan else 0.0
    return ScheduleStats(makespan, bubble, peak)
