"""Records of one or more ranks as one Chrome trace (the Trace Event Format).

Each rank is a process (``pid`` = rank, named ``rank r``) and each of its
threads a track (``tid``: 1 is the training thread, named ``main``; the
communication threads follow, named ``comm WORLD`` and so on). Every range is a
complete event (``"ph": "X"``) with ``ts`` and ``dur`` in microseconds; the
viewer nests events on one track by time. chrome://tracing, Perfetto and
catapult's trace viewer read the file.

Clocks: each rank stamps with its own ``perf_counter_ns``. ``RankTrace.sync_ns``
is the rank's clock read right after a barrier all ranks left together, so
``t + (sync_ns of rank 0 - sync_ns of rank r)`` puts rank r's time ``t`` on
rank 0's clock (to within the barrier's exit skew, microseconds on one node).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any, NamedTuple

from pyrt.profiler.recorder import Record

__all__ = ["RankTrace", "merge", "thread_label", "write"]


class RankTrace(NamedTuple):
    """What one rank contributes: its records and the clock readings that place them."""

    rank: int
    sync_ns: int  # this rank's clock just after the common barrier
    start_ns: int  # when its profile started
    records: list[Record]
    thread_names: dict[int, str]  # thread ident -> threading name
    main_thread: int  # ident of the training thread


def thread_label(name: str, is_main: bool) -> str:
    """The track name shown for a thread.

    >>> thread_label("MainThread", True), thread_label("pyrt-comm-WORLD", False)
    ('main', 'comm WORLD')
    """
    if is_main:
        return "main"
    # executor.py names its threads pyrt-comm-<group>.
    return "comm " + name.removeprefix("pyrt-comm-") if name.startswith("pyrt-comm-") else name


def _rank_events(part: RankTrace, offset_ns: int, origin_ns: int) -> list[dict[str, Any]]:
    pid = part.rank
    first_seen = {}
    for r in part.records:
        first_seen[r.thread] = min(first_seen.get(r.thread, r.start_ns), r.start_ns)
    idents = [part.main_thread, *sorted(set(first_seen) - {part.main_thread}, key=first_seen.__getitem__)]
    tids = {ident: i + 1 for i, ident in enumerate(idents)}
    events: list[dict[str, Any]] = [
        {"ph": "M", "name": "process_name", "pid": pid, "tid": 0, "args": {"name": f"rank {pid}"}},
        {"ph": "M", "name": "process_sort_index", "pid": pid, "tid": 0, "args": {"sort_index": pid}},
    ]
    for ident, tid in tids.items():
        name = thread_label(part.thread_names.get(ident, "main"), ident == part.main_thread)
        events.append({"ph": "M", "name": "thread_name", "pid": pid, "tid": tid, "args": {"name": name}})
        events.append({"ph": "M", "name": "thread_sort_index", "pid": pid, "tid": tid,
                       "args": {"sort_index": tid}})
    for r in part.records:
        event: dict[str, Any] = {
            "ph": "X", "name": r.name, "cat": r.category, "pid": pid, "tid": tids[r.thread],
            "ts": (r.start_ns + offset_ns - origin_ns) / 1e3, "dur": (r.end_ns - r.start_ns) / 1e3,
        }
        if r.args:
            event["args"] = r.args
        events.append(event)
    return events


def merge(parts: Sequence[RankTrace]) -> dict[str, Any]:
    """One trace of every rank's records, on the clock of ``parts[0]``, starting at 0 us.

    >>> from pyrt.profiler.recorder import Record
    >>> a = RankTrace(0, 1_000, 0, [Record("step", "user", 7, 100, 600, None)], {7: "MainThread"}, 7)
    >>> b = RankTrace(1, 5_000, 4_000, [Record("step", "user", 9, 4_200, 4_700, None)], {9: "MainThread"}, 9)
    >>> [(e["pid"], e["ts"], e["dur"]) for e in merge([a, b])["traceEvents"] if e["ph"] == "X"]
    [(0, 0.1, 0.5), (1, 0.2, 0.5)]
    """
    reference = parts[0].sync_ns
    offsets = [reference - p.sync_ns for p in parts]
    origin = min(p.start_ns + off for p, off in zip(parts, offsets, strict=True))
    events: list[dict[str, Any]] = []
    for part, offset in zip(parts, offsets, strict=True):
        rank_events = _rank_events(part, offset, origin)
        # Parents before their children when they start together: viewers nest in file order.
        rank_events.sort(key=lambda e: (e["ph"] != "M", e["tid"], e.get("ts", 0), -e.get("dur", 0)))
        events.extend(rank_events)
    return {"traceEvents": events, "displayTimeUnit": "ms",
            "otherData": {"producer": "pyrt.profiler", "ranks": len(parts),
                          "clock": "perf_counter_ns, ranks aligned at a barrier at export"}}


def write(path: str | os.PathLike[str], trace: dict[str, Any]) -> None:
    """Write ``trace`` as JSON to ``path`` (creating its folder).

    >>> import tempfile, pathlib
    >>> target = pathlib.Path(tempfile.mkdtemp()) / "t" / "trace.json"
    >>> write(target, {"traceEvents": []}); json.loads(target.read_text())
    {'traceEvents': []}
    """
    folder = os.path.dirname(os.fspath(path))
    if folder:
        os.makedirs(folder, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(trace, f, separators=(",", ":"), default=_plain)


def _plain(value: Any) -> Any:
    """JSON for what record_function(args=) or a caller's rank may hold: numpy scalars, anything else."""
    return value.item() if hasattr(value, "item") else str(value)
