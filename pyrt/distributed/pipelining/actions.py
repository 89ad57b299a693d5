"""Schedules as data: per-rank lists of actions, generated from a few ordering rules.

An action is one step of one rank: a computation on one micro-batch of one
stage, or posting a transfer.

=========  ===========================================================
``F``      forward of the stage on the micro-batch
``B``      full backward (input and weight gradients)
``I``      input-gradient half of a split backward (zero-bubble's B)
``W``      weight-gradient half, deferred to fill a bubble
``RECV_F`` post the receive of the stage's input activation
``SEND_F`` post the send of the stage's output to the next stage
``RECV_B`` post the receive of the gradient of the stage's output
``SEND_B`` post the send of the gradient of the stage's input
=========  ===========================================================

Every schedule is generated the same way. ``compute_order`` plays the
pipeline forward in unit time steps (F = I = W = 1, B = 2), and each idle rank
takes, in this order of preference: its next backward in the schedule's
backward order if its gradient has arrived; its next forward in the forward
order if it has arrived and fewer than ``in_flight_limit`` micro-batches are
between their forward and their (weight) backward; a deferred W, unless the
next backward's gradient is due before the W would end. GPipe takes
no backward before its last forward. The limits and orders are the whole
difference between GPipe, 1F1B, interleaved 1F1B and ZB-H1 (see
``schedules.py``). ``add_communication`` then inserts the transfers: every
receive is posted one computation ahead of the one that needs it, and every
send right after the computation that produced it, so a rank never blocks on
anything but the data its next computation needs.
"""

from __future__ import annotations

import dataclasses
from collections import deque
from collections.abc import Sequence

__all__ = ["COMPUTE_KINDS", "COSTS", "Action", "add_communication", "compute_order", "stage_rank"]

COMPUTE_KINDS = ("F", "B", "I", "W")
# Unit costs of the simulations: a backward does twice a forward's GEMMs, split evenly.
COSTS = {"F": 1, "B": 2, "I": 1, "W": 1}


@dataclasses.dataclass(frozen=True)
class Action:
    """One step of one rank, printed like PyTorch's: ``1F3`` is stage 1's forward of micro-batch 3.

    >>> Action("F", 1, 3), Action("SEND_B", 2, 0)
    (1F3, 2SEND_B0)
    """

    kind: str
    stage: int
    microbatch: int

    def __repr__(self) -> str:
        return f"{self.stage}{self.kind}{self.microbatch}"

    @property
    def is_compute(self) -> bool:
        return self.kind in COMPUTE_KINDS


def stage_rank(stage: int, num_ranks: int) -> int:
    """The rank holding ``stage``: stages go round-robin, so rank r holds r, r + R, r + 2R, ...

    >>> [stage_rank(s, 2) for s in range(4)]
    [0, 1, 0, 1]
    """
    return stage % num_ranks


def compute_order(num_stages: int, num_ranks: int, n_microbatches: int,
                  forward_order: Sequence[Sequence[tuple[int, int]]],
                  backward_order: Sequence[Sequence[tuple[int, int]]],
                  in_flight_limit: Sequence[int], split_backward: bool = False,
                  forwards_first: bool = False) -> list[list[Action]]:
    """Each rank's computations, in the order the greedy simulation described above runs them.

    ``forward_order[r]`` and ``backward_order[r]`` list rank r's (stage,
    micro-batch) pairs in the order it takes them.

    >>> order = compute_order(2, 2, 2, [[(0, 0), (0, 1)], [(1, 0), (1, 1)]],
    ...                       [[(0, 0), (0, 1)], [(1, 0), (1, 1)]], [2, 1])
    >>> order
    [[0F0, 0F1, 0B0, 0B1], [1F0, 1B0, 1F1, 1B1]]
    """
    backward_kind = "I" if split_backward else "B"
    finished: dict[tuple[str, int, int], int] = {}

    def done_by(kind: str, stage: int, mb: int, t: int) -> bool:
        return finished.get((kind, stage, mb), t + 1) <= t

    def forward_ready(stage: int, mb: int, t: int) -> bool:
        return stage == 0 or done_by("F", stage - 1, mb, t)

    def backward_ready(stage: int, mb: int, t: int) -> bool:
        return done_by("F", stage, mb, t) and (
            stage == num_stages - 1 or done_by(backward_kind, stage + 1, mb, t))

    def ready_at(kind: str, stage: int, mb: int) -> float:
        """When a backward's inputs arrive, if what produces them is already scheduled."""
        waits_for = [("F", stage, mb)] + ([(kind, stage + 1, mb)] if stage < num_stages - 1 else [])
        return max(finished.get(w, float("inf")) for w in waits_for)

    orders: list[list[Action]] = [[] for _ in range(num_ranks)]
    next_f, next_b = [0] * num_ranks, [0] * num_ranks
    in_flight = [0] * num_ranks
    deferred_w: list[deque[tuple[int, int]]] = [deque() for _ in range(num_ranks)]
    busy_until = [0] * num_ranks
    last_kind = ["F"] * num_ranks
    total = sum(map(len, forward_order)) + sum(map(len, backward_order)) * (2 if split_backward else 1)
    scheduled, t = 0, 0
    while scheduled < total:
        for r in range(num_ranks):
            if busy_until[r] > t:
                continue
            f = forward_order[r][next_f[r]] if next_f[r] < len(forward_order[r]) else None
            b = backward_order[r][next_b[r]] if next_b[r] < len(backward_order[r]) else None
            can_b = b is not None and backward_ready(*b, t) and (not forwards_first or f is None)
            can_f = f is not None and forward_ready(*f, t) and in_flight[r] < in_flight_limit[r]
            # Alternate once backwards have begun (Megatron's steady state): a rank that
            # just ran a backward prefers a forward, so the ranks it feeds are not starved.
            if can_f and (not can_b or last_kind[r] in ("B", "I")):
                action = Action("F", *f)
                next_f[r] += 1
                in_flight[r] += 1
            elif can_b:
                action = Action(backward_kind, *b)
                next_b[r] += 1
                if split_backward:
                    deferred_w[r].append(b)
                else:
                    in_flight[r] -= 1
            elif deferred_w[r] and (b is None or ready_at(backward_kind, *b) >= t + COSTS["W"]):
                # A W fills the wait for the next backward's gradient, but never delays it.
                action = Action("W", *deferred_w[r].popleft())
                in_flight[r] -= 1
            else:
                continue
            finished[(action.kind, action.stage, action.microbatch)] = t + COSTS[action.kind]
            busy_until[r] = t + COSTS[action.kind]
            orders[r].append(action)
            if action.kind != "W":
                last_kind[r] = action.kind
            scheduled += 1
        t += 1
        if t > 4 * total + 16:
            stuck = {r: (forward_order[r][next_f[r]:next_f[r] + 1],
                         backward_order[r][next_b[r]:next_b[r] + 1]) for r in range(num_ranks)}
            raise RuntimeError(
                f"pipeline schedule: no order exists for {num_stages} stages on {num_ranks} ranks with "
                f"{n_microbatches} micro-batches under in-flight limits {list(in_flight_limit)}; each "
                f"rank's next (forward, backward): {stuck}"
            )
    return orders


def _needs_receive(action: Action, num_stages: int, num_ranks: int) -> Action | None:
    """The receive a computation waits for, if its data comes from another rank."""
    rank = stage_rank(action.stage, num_ranks)
    if action.kind == "F" and action.stage > 0 and stage_rank(action.stage - 1, num_ranks) != rank:
        return Action("RECV_F", action.stage, action.microbatch)
    if action.kind in ("B", "I") and action.stage < num_stages - 1 and \
            stage_rank(action.stage + 1, num_ranks) != rank:
        return Action("RECV_B", action.stage, action.microbatch)
    return None


def _sends_after(action: Action, num_stages: int, num_ranks: int) -> Action | None:
    rank = stage_rank(action.stage, num_ranks)
    if action.kind == "F" and action.stage < num_stages - 1 and \
            stage_rank(action.stage + 1, num_ranks) != rank:
        return Action("SEND_F", action.stage, action.microbatch)
    if action.kind in ("B", "I") and action.stage > 0 and stage_rank(action.stage - 1, num_ranks) != rank:
        return Action("SEND_B", action.stage, action.microbatch)
    return None


def add_communication(compute: Sequence[Action], num_stages: int, num_ranks: int) -> list[Action]:
    """One rank's computations with the transfers they need, receives posted one computation early.

    A gradient's receive waits for the forward of its micro-batch, which
    fixes the buffer's shape.

    >>> add_communication([Action("F", 1, 0), Action("B", 1, 0)], num_stages=3, num_ranks=3)
    [1RECV_F0, 1F0, 1SEND_F0, 1RECV_B0, 1B0, 1SEND_B0]
    """
    lowered: list[Action] = []
    receives = [_needs_receive(a, num_stages, num_ranks) for a in compute]
    if receives and receives[0] is not None:
        lowered.append(receives[0])
    for k, action in enumerate(compute):
        following = receives[k + 1] if k + 1 < len(compute) else None
        early = following is not None and not (
            following.kind == "RECV_B" and action == Action("F", following.stage, following.microbatch))
        if early:
            lowered.append(following)
        lowered.append(action)
        send = _sends_after(action, num_stages, num_ranks)
        if send is not None:
            lowered.append(send)
        if following is not None and not early:
            lowered.append(following)
    return lowered
