"""Measured pipeline timelines: the bubble fraction and the classic pipeline diagram.

Every schedule records its computations of the last step as
``TimelineEvent`` s (``schedule.timeline``), timed with ``time.perf_counter``,
which on Linux reads one clock for every process of the machine, so the
ranks' events line up. ``gather_timelines`` brings them to one rank,
``bubble_fraction`` measures the idle share, and ``plot_schedule`` draws them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["TimelineEvent", "bubble_fraction", "gather_timelines", "plot_schedule"]


@dataclasses.dataclass(frozen=True)
class TimelineEvent:
    """One computation of one rank: kind (F, B, I, W), stage, micro-batch, start and end in seconds."""

    kind: str
    stage: int
    microbatch: int
    start: float
    end: float


def bubble_fraction(timelines: Mapping[int, Sequence[TimelineEvent]]) -> float:
    """Mean over ranks of the idle share of the step, from first start to last end of any rank.

    >>> e = TimelineEvent
    >>> bubble_fraction({0: [e("F", 0, 0, 0.0, 1.0), e("B", 0, 0, 3.0, 5.0)],
    ...                  1: [e("F", 1, 0, 1.0, 2.0), e("B", 1, 0, 2.0, 3.0)]})
    0.5
    """
    events = [e for timeline in timelines.values() for e in timeline]
    if not events:
        return 0.0
    begin, end = min(e.start for e in events), max(e.end for e in events)
    span = end - begin
    busy = [sum(e.end - e.start for e in timeline) for timeline in timelines.values()]
    return sum(1 - b / span for b in busy) / len(busy) if span > 0 else 0.0


def gather_timelines(schedule: Any, dst: int = 0) -> dict[int, list[TimelineEvent]] | None:
    """Every rank's ``schedule.timeline`` of the last step, on group rank ``dst`` (None elsewhere).

    Example (under ``mpiexec``)::

        timelines = gather_timelines(schedule)
        if timelines is not None:
            plot_schedule(timelines, "pipeline.png")
    """
    gathered = schedule.group.comm.gather([dataclasses.astuple(e) for e in schedule.timeline], root=dst)
    if gathered is None:
        return None
    return {r: [TimelineEvent(*row) for row in rows] for r, rows in enumerate(gathered)}


_COLORS = {"F": "#4C72B0", "B": "#DD8452", "I": "#DD8452", "W": "#55A868"}
_LABELS = {"F": "forward", "B": "backward", "I": "backward (input)", "W": "weight gradient"}


def plot_schedule(timelines: Mapping[int, Sequence[TimelineEvent]], path: str | Path,
                  title: str | None = None) -> Path:
    """Draw the measured timeline as the classic pipeline diagram (one row per rank) into a PNG.

    Boxes are forwards, backwards and weight gradients labelled with their
    micro-batch (and stage, when a rank holds several); white is idle.
    Needs matplotlib (``pip install matplotlib``).

    >>> e = TimelineEvent
    >>> import tempfile, os
    >>> out = plot_schedule({0: [e("F", 0, 0, 0.0, 1.0)], 1: [e("F", 1, 0, 1.0, 2.0)]},
    ...                     os.path.join(tempfile.mkdtemp(), "p.png"))
    >>> out.stat().st_size > 0
    True
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.patches import Patch
    except ImportError as exc:
        raise RuntimeError("plot_schedule needs matplotlib: pip install matplotlib") from exc
    events = [e for timeline in timelines.values() for e in timeline]
    begin = min((e.start for e in events), default=0.0)
    ranks = sorted(timelines)
    several = any(len({e.stage for e in timelines[r]}) > 1 for r in ranks)
    fig, ax = plt.subplots(figsize=(12, 0.6 * len(ranks) + 1.4))
    for row, rank in enumerate(ranks):
        for e in timelines[rank]:
            left, width = (e.start - begin) * 1e3, (e.end - e.start) * 1e3
            ax.barh(row, width, left=left, height=0.8, color=_COLORS[e.kind], edgecolor="black",
                    linewidth=0.3)
            label = f"{e.stage}.{e.microbatch}" if several else str(e.microbatch)
            ax.text(left + width / 2, row, label, ha="center", va="center", fontsize=7, color="white")
    ax.set_yticks(range(len(ranks)), [f"rank {r}" for r in ranks])
    ax.invert_yaxis()
    ax.set_xlabel("time (ms)")
    kinds = sorted({e.kind for e in events}, key="FBIW".index)
    # Beside the plot, not over the last boxes.
    ax.legend(handles=[Patch(color=_COLORS[k], label=_LABELS[k]) for k in kinds], loc="upper left",
              bbox_to_anchor=(1.0, 1.0), fontsize=8)
    measured = bubble_fraction(timelines)
    ax.set_title(f"{title + ': ' if title else ''}measured bubble {measured:.1%}")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
