"""Pipeline schedules as data, checked in one process: generation, validation, splitting."""

from __future__ import annotations

import pytest

from pyrt import nn
from pyrt.distributed.pipelining import (
    Action,
    Schedule1F1B,
    ScheduleError,
    ScheduleGPipe,
    ScheduleInterleaved1F1B,
    ScheduleZeroBubble,
    partition_sequential,
    split_sequential,
    validate_schedule,
)
from pyrt.distributed.pipelining.actions import add_communication


def _theory(p: int, m: int, v: int = 1) -> float:
    return (p - 1) / (v * m + p - 1)


@pytest.mark.parametrize("p", [1, 2, 3, 4])
@pytest.mark.parametrize("m", [1, 2, 3, 4, 5, 8, 16])
def test_gpipe_and_1f1b_have_the_textbook_bubble_and_memory(p: int, m: int) -> None:
    gpipe = validate_schedule(ScheduleGPipe.generate(p, m), p, m)
    one_f_one_b = validate_schedule(Schedule1F1B.generate(p, m), p, m)
    assert gpipe.bubble_fraction == pytest.approx(_theory(p, m))
    assert one_f_one_b.bubble_fraction == pytest.approx(_theory(p, m))
    assert gpipe.peak_in_flight == [m] * p
    assert one_f_one_b.peak_in_flight == [min(m, p - r) for r in range(p)]


@pytest.mark.parametrize("p", [2, 3, 4])
@pytest.mark.parametrize("m", [1, 2, 3, 4, 8, 16])
def test_zero_bubble_beats_1f1b_at_the_same_memory(p: int, m: int) -> None:
    zb = validate_schedule(ScheduleZeroBubble.generate(p, m), p, m)
    assert zb.bubble_fraction < _theory(p, m)
    assert zb.peak_in_flight == [min(m, p - r) for r in range(p)]
    kinds = {a.kind for a in ScheduleZeroBubble.generate(p, m)[0]}
    assert {"I", "W"} <= kinds and "B" not in kinds


@pytest.mark.parametrize("p, v", [(1, 2), (2, 2), (2, 3), (4, 2), (3, 2)])
@pytest.mark.parametrize("m", [1, 2, 3, 4, 5, 8, 16])
def test_interleaved_is_valid_and_reaches_its_bubble_when_p_divides_m(p: int, v: int, m: int) -> None:
    stats = validate_schedule(ScheduleInterleaved1F1B.generate(p, m, v), p * v, m)
    if m % p == 0:
        assert stats.bubble_fraction == pytest.approx(_theory(p, m, v))
    else:  # Megatron's order assumes groups of p micro-batches; a partial group costs more
        assert stats.bubble_fraction <= _theory(p, m) + 1e-9


def test_every_receive_is_posted_before_the_computation_and_sends_follow_it() -> None:
    order = Schedule1F1B.generate(num_ranks=3, n_microbatches=4)
    for actions in order.values():
        for k, a in enumerate(actions):
            if a.kind == "RECV_F":
                assert actions.index(Action("F", a.stage, a.microbatch)) > k
            if a.kind == "SEND_F":
                assert actions[k - 1] == Action("F", a.stage, a.microbatch)


def _one_f_one_b(p: int = 2, m: int = 2) -> dict[int, list[Action]]:
    return Schedule1F1B.generate(p, m)


@pytest.mark.parametrize("corrupt, message", [
    (lambda o: o[1].remove(Action("RECV_F", 1, 0)), "without posting its receive"),
    (lambda o: o[0].remove(Action("SEND_F", 0, 1)), "deadlocks: .*rank 1 1F1 waits for 0F1"),
    (lambda o: o[0].remove(Action("B", 0, 1)), r"0B1 appears 0 times"),
    (lambda o: o[0].append(Action("F", 0, 1)), r"0F1 appears 2 times"),
    (lambda o: o[1].insert(0, o[1].pop(o[1].index(Action("B", 1, 0)))), "runs before its forward"),
    (lambda o: o[0].insert(0, Action("SEND_F", 0, 0)), "sends before 0F0 ran"),
    (lambda o: o[0].append(Action("RECV_B", 0, 0)), "posted twice"),
    (lambda o: o[1].append(Action("F", 0, 0)), "belongs to rank 0"),
    (lambda o: o[1].remove(Action("SEND_B", 1, 1)), "deadlocks"),
])
def test_validator_names_what_is_wrong(corrupt, message: str) -> None:
    order = _one_f_one_b()
    validate_schedule(order, 2, 2)
    corrupt(order)
    with pytest.raises(ScheduleError, match=message):
        validate_schedule(order, 2, 2)


def test_validator_catches_a_cycle_between_ranks() -> None:
    # Rank 0 wants micro-batch 0's gradient before it forwards micro-batch 1; rank 1 wants
    # micro-batch 1's forward before it sends that gradient.
    compute0 = [Action("F", 0, 0), Action("B", 0, 0), Action("F", 0, 1), Action("B", 0, 1)]
    compute1 = [Action("F", 1, 0), Action("F", 1, 1), Action("B", 1, 0), Action("B", 1, 1)]
    order = {0: add_communication(compute0, 2, 2), 1: add_communication(compute1, 2, 2)}
    with pytest.raises(ScheduleError, match="deadlocks: rank 0 0B0 waits for 1B0; rank 1 1F1 waits for 0F1"):
        validate_schedule(order, 2, 2)


def _model() -> nn.Sequential:
    return nn.Sequential(nn.Linear(4, 100), nn.ReLU(), nn.Linear(100, 100), nn.ReLU(),
                         nn.Linear(100, 2))


@pytest.mark.parametrize("num_stages, balance, counts", [
    (1, None, [5]), (2, None, [3, 2]), (3, None, [2, 2, 1]), (5, None, [1] * 5),
    (2, "parameters", [2, 3]), (3, "parameters", [2, 2, 1]), (2, [1, 4], [1, 4]),
])
def test_partition(num_stages: int, balance, counts: list[int]) -> None:
    assert partition_sequential(_model(), num_stages, balance) == counts


def test_split_keeps_layer_names_and_modules() -> None:
    model = _model()
    parts = [split_sequential(model, 2, "parameters", stage_index=s) for s in range(2)]
    assert [list(p._modules) for p in parts] == [["0", "1"], ["2", "3", "4"]]
    assert parts[1][0] is model[2]
    assert set(parts[1].state_dict()) == {"2.weight", "2.bias", "4.weight", "4.bias"}


@pytest.mark.parametrize("kwargs, message", [
    ({"num_stages": 6}, "between 1 and the model's 5 layers"),
    ({"num_stages": 0}, "between 1 and"),
    ({"num_stages": 2, "balance": [2, 2]}, "add up to"),
    ({"num_stages": 2, "balance": [0, 5]}, "at least one layer"),
    ({"num_stages": 2, "balance": "flops"}, "balance must be"),
    ({"num_stages": 2, "stage_index": 2}, r"stage_index must be in \[0, 2\)"),
])
def test_split_rejects_bad_arguments(kwargs: dict, message: str) -> None:
    kwargs.setdefault("stage_index", 0)
    with pytest.raises(ValueError, match=message):
        split_sequential(_model(), **kwargs)


def test_split_refuses_parameters_shared_across_stages() -> None:
    tied = nn.Linear(4, 4)
    model = nn.Sequential(tied, nn.ReLU(), tied)
    with pytest.raises(ValueError, match=r"parameter 0\.weight \(stage 0\) is also 2\.weight \(stage 1\)"):
        split_sequential(model, 2, balance=[2, 1], stage_index=0)
    assert len(split_sequential(model, 1, stage_index=0)) == 3  # one stage may share freely


def test_split_needs_a_sequential() -> None:
    with pytest.raises(TypeError, match=r"expected an nn\.Sequential"):
        split_sequential(nn.Linear(2, 2), 1, stage_index=0)


def test_validator_simulates_measured_stage_costs() -> None:
    order = Schedule1F1B.generate(num_ranks=2, n_microbatches=8)
    equal = {(kind, stage): cost for kind, cost in (("F", 1.0), ("B", 2.0)) for stage in range(2)}
    assert validate_schedule(order, 2, 8, equal) == validate_schedule(order, 2, 8)
    # A last stage 10% slower: the first rank waits for it on every micro-batch.
    slower = {**equal, ("F", 1): 1.1, ("B", 1): 2.2}
    stats = validate_schedule(order, 2, 8, slower)
    assert stats.makespan == pytest.approx(1.0 + 8 * 3.3 + 2.0)
    assert stats.bubble_fraction > validate_schedule(order, 2, 8).bubble_fraction


@pytest.mark.parametrize("cls, v", [(ScheduleGPipe, 1), (Schedule1F1B, 1), (ScheduleZeroBubble, 1),
                                    (ScheduleInterleaved1F1B, 2)])
@pytest.mark.parametrize("p, m", [(1, 3), (2, 1), (2, 4), (4, 3)])
def test_forward_only_schedules_are_valid(cls, v: int, p: int, m: int) -> None:
    order = cls.generate(p, m, v, forward_only=True)
    assert {a.kind for actions in order.values() for a in actions} <= {"F", "RECV_F", "SEND_F"}
    stats = validate_schedule(order, p * v, m)
    assert stats.peak_in_flight == [m] * (p * v)
