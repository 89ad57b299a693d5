"""Benchmark plumbing: timing, result records, tables and JSON.

Every benchmark validates its result against the reference before timing it,
then times ours and the reference alternately in the same process (these
machines are noisy, so only a side-by-side ratio means anything) and keeps
the best of several repeats.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

__all__ = ["Record", "print_table", "set_clock", "time_best", "time_pair", "write_json"]

# What time_best measures with: wall time, or the calling thread's CPU time. The thread clock is
# for single-threaded runs on a shared machine: it does not count the time slices other processes
# take from us (on this 2-core machine under a load of 8-10 wall times varied 10x between rounds).
# It would miss the work of helper threads, so it is only valid when everything timed (pyrt,
# OpenBLAS, PyTorch) runs in the calling thread, i.e. at one thread.
_CLOCKS: dict[str, Callable[[], float]] = {"wall": time.perf_counter, "thread": time.thread_time}
_clock: Callable[[], float] = time.perf_counter


def set_clock(name: str) -> None:
    """Time with ``"wall"`` (the default) or ``"thread"`` (the calling thread's CPU time).

    >>> set_clock("wall")
    """
    global _clock
    if name not in _CLOCKS:
        raise ValueError(f"set_clock: clock must be one of {sorted(_CLOCKS)}, got {name!r}")
    _clock = _CLOCKS[name]


@dataclasses.dataclass
class Record:
    """One measured case: ``ratio = ref_s / ours_s`` (above 1 means pyrt is faster)."""

    bench: str
    case: str
    ours_s: float
    ref: str
    ref_s: float | None
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def ratio(self) -> float | None:
        return None if self.ref_s is None else self.ref_s / self.ours_s

    def to_json(self) -> dict[str, Any]:
        return {"bench": self.bench, "case": self.case, "ours_s": self.ours_s, "ref": self.ref,
                "ref_s": self.ref_s, "ratio": self.ratio, **self.extra}


def time_best(fn: Callable[[], Any], repeats: int = 7, min_seconds: float = 0.05) -> float:
    """Best per-call time of ``fn`` over ``repeats`` rounds of at least ``min_seconds`` each.

    >>> time_best(lambda: None, repeats=2, min_seconds=0.001) < 0.001
    True
    """
    fn()  # warm up: caches, page faults, thread pools
    start = _clock()
    fn()
    once = max(_clock() - start, 1e-7)
    calls = max(1, int(min_seconds / once))
    best = float("inf")
    for _ in range(repeats):
        start = _clock()
        for _ in range(calls):
            fn()
        best = min(best, (_clock() - start) / calls)
    return best


def time_pair(ours: Callable[[], Any], ref: Callable[[], Any] | None, repeats: int = 5,
              min_seconds: float = 0.05) -> tuple[float, float | None]:
    """Time two functions in alternating rounds, so a noisy neighbour hits both alike.

    >>> ours, ref = time_pair(lambda: None, lambda: None, repeats=1, min_seconds=0.001)
    >>> ours > 0 and ref > 0
    True
    """
    best_ours, best_ref = float("inf"), float("inf")
    for _ in range(repeats):
        best_ours = min(best_ours, time_best(ours, repeats=1, min_seconds=min_seconds))
        if ref is not None:
            best_ref = min(best_ref, time_best(ref, repeats=1, min_seconds=min_seconds))
    return best_ours, (best_ref if ref is not None else None)


def _format(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"
    return str(value)


Column = tuple[str, Callable[[Record], Any]]


def print_table(title: str, records: Iterable[Record], columns: list[Column]) -> None:
    """Print records as an aligned table under ``title``."""
    rows = [[_format(get(r)) for _, get in columns] for r in records]
    headers = [name for name, _ in columns]
    widths = [max(len(h), *(len(row[i]) for row in rows)) if rows else len(h)
              for i, h in enumerate(headers)]
    print(f"\n{title}")
    print("  ".join(h.rjust(w) for h, w in zip(headers, widths, strict=True)))
    for row in rows:
        print("  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)))


def normalized_digits() -> tuple[Any, Any, Any, Any]:
    """The bundled digits as float32 ``x_train, y_train, x_test, y_test``, standardized per pixel
    with the training set's statistics (as examples/train_mlp.py), for the training benchmarks.

    >>> normalized_digits()[0].dtype
    dtype('float32')
    """
    from pyrt.datasets import load_digits

    x_train, y_train = load_digits("train")
    x_test, y_test = load_digits("test")
    mean, std = x_train.mean(axis=0), x_train.std(axis=0) + 0.01
    return (((x_train - mean) / std).astype("float32"), y_train,
            ((x_test - mean) / std).astype("float32"), y_test)


def write_json(path: str | Path, records: Iterable[Record]) -> None:
    """Write records as a JSON list, the format that compares across commits."""
    Path(path).write_text(json.dumps([r.to_json() for r in records], indent=2) + "\n")
