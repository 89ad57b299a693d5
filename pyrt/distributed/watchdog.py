"""Waiting on other ranks without hanging silently or burning a core.

Every wait of pyrt's collectives and transfers goes through ``wait_for``: it
polls the MPI request, yielding the core and then sleeping between polls
(MPICH's own waits spin, taking the core from the rank being waited for when
ranks share cores), and it ends the job when

- a rank of the group has left the job (its script ended or called
  ``sys.exit`` without ``destroy_process_group``), or
- the group's timeout expires (``init_process_group(timeout=...)``, ten
  minutes by default, as PyTorch's): a rank is stalled, stopped or computing
  far longer than the others wait,

with a report of where every rank is: which collective (kind and sequence
number) it waits in, or how long ago it finished its last one.

That report reads a progress table in node shared memory (an MPI-3 shared
window): each rank writes its own row when it enters and leaves a wait, and
a rank that times out reads every row of its node, even those of ranks that
are stopped. Ranks on other nodes are reported as such.
"""

from __future__ import annotations

import atexit
import os
import sys
import time
from datetime import timedelta
from typing import Any

import numpy as np

__all__ = ["DEFAULT_TIMEOUT", "Progress", "reached", "wait_for"]

DEFAULT_TIMEOUT = timedelta(minutes=10)

# A wait spins (yielding) this long, then sleeps between polls: a message that
# is not there after 0.2 ms is a computation away, and sleeping gives the core
# to the rank doing it when ranks share cores. Measured on 4 pipeline stages on
# 2 cores (python -m pyrt.bench pipeline): 1F1B went from 0.91x to 1.15-1.2x
# PyTorch's samples/s; on 2 stages on 2 cores the change was within noise.
SPIN_SECONDS = 2e-4
SLEEP_SECONDS = 1e-4
# How often a long wait looks at the progress table for ranks that left.
CHECK_PEERS_SECONDS = 0.05
# How long a rank leaving with its process group still active waits for the
# others to leave too before it ends the job.
EXIT_GRACE_SECONDS = 10.0

# Row layout of the progress table (int64).
# _GROUP, _SEQ, _KIND: the last collective this rank reached; _WAITING_IN: the kind it waits in now.
_STATE, _GROUP, _SEQ, _KIND, _SINCE_NS, _GLOBAL_RANK, _WAITING_IN = range(7)
_ROW = 8
IDLE, WAITING, EXITED, DESTROYED = 0, 1, 2, 3


class Progress:
    """This node's rows of the progress table, one per rank, in shared memory.

    Created collectively by ``init_process_group``. ``kinds`` and ``groups``
    translate the codes in the rows back to names for the report.
    """

    def __init__(self, world: Any, timeout: timedelta, kinds: tuple[str, ...]) -> None:
        from mpi4py import MPI

        self.world = world
        self.timeout = timeout.total_seconds()
        self.kinds = kinds
        self.group_names: list[str] = []
        self.node = world.Split_type(MPI.COMM_TYPE_SHARED)
        itemsize = np.dtype(np.int64).itemsize
        self.window = MPI.Win.Allocate_shared(_ROW * itemsize, itemsize, comm=self.node)
        # Global rank of every node-local rank, so a row can be found by global rank.
        node_ranks = self.node.allgather(world.Get_rank())
        self.rows: dict[int, np.ndarray] = {}
        for local, global_rank in enumerate(node_ranks):
            buffer, _ = self.window.Shared_query(local)
            self.rows[global_rank] = np.frombuffer(buffer, dtype=np.int64, count=_ROW)
        self.rank = world.Get_rank()
        self.mine = self.rows[self.rank]
        self.mine[:] = 0
        self.mine[_GLOBAL_RANK] = self.rank
        self.mine[_SINCE_NS] = time.time_ns()
        self.node.Barrier()  # every row initialised before anyone reads one
        self.lifecycle = world.Dup()  # the exit handshake's own communicator

    def group_code(self, name: str) -> int:
        if name not in self.group_names:
            self.group_names.append(name)
        return self.group_names.index(name)

    def enter(self, group: str, seq: int, kind: str) -> None:
        if seq:  # a collective; transfers (seq 0) keep the last collective reached
            self.reach(group, seq, kind)
        row = self.mine
        row[_WAITING_IN] = self.kinds.index(kind)
        row[_SINCE_NS] = time.time_ns()
        row[_STATE] = WAITING

    def reach(self, group: str, seq: int, kind: str) -> None:
        """Record collective ``seq`` of ``group`` as the last one reached, without waiting in it."""
        row = self.mine
        row[_GROUP], row[_SEQ], row[_KIND] = self.group_code(group), seq, self.kinds.index(kind)
        row[_SINCE_NS] = time.time_ns()

    def leave(self) -> None:
        self.mine[_SINCE_NS] = time.time_ns()
        self.mine[_STATE] = IDLE

    def describe(self, global_rank: int) -> str:
        row = self.rows.get(global_rank)
        if row is None:
            return f"rank {global_rank}: on another node (no report)"
        state, seconds = int(row[_STATE]), (time.time_ns() - int(row[_SINCE_NS])) / 1e9
        call = self._call(row)
        if state == WAITING:
            waiting_in = self.kinds[int(row[_WAITING_IN])]
            if waiting_in != self.kinds[int(row[_KIND])] or row[_SEQ] == 0:  # a transfer
                return f"rank {global_rank}: waiting in {waiting_in} for {seconds:.1f} s (after {call})"
            return f"rank {global_rank}: waiting in {call} for {seconds:.1f} s"
        if state == EXITED:
            return f"rank {global_rank}: left the job {seconds:.1f} s ago (after {call})"
        if state == DESTROYED:
            return (f"rank {global_rank}: called destroy_process_group {seconds:.1f} s ago "
                    f"(after {call})")
        if row[_KIND] == 0 and row[_SEQ] == 0:
            return f"rank {global_rank}: has not reached any collective yet ({seconds:.1f} s since start)"
        return (f"rank {global_rank}: finished {call} {seconds:.1f} s ago and has not reached the next "
                "(computing, stalled or stopped)")

    def _call(self, row: np.ndarray) -> str:
        group = int(row[_GROUP])
        name = self.group_names[group] if group < len(self.group_names) else f"group {group}"
        return f"{self.kinds[int(row[_KIND])]} #{int(row[_SEQ])} on {name}"

    def left_before(self, global_ranks: list[int], group: str, seq: int) -> list[int]:
        """The ranks that left the job (or destroyed their groups) before collective ``seq`` of ``group``.

        A rank that took part in it and then left is still draining it (its
        handshake keeps MPI progressing); one whose last collective was on
        another group is left to the timeout, since its row cannot tell.
        """
        code = self.group_code(group)
        return [r for r in global_ranks if r in self.rows
                and self.rows[r][_STATE] in (EXITED, DESTROYED)
                and self.rows[r][_GROUP] == code and self.rows[r][_SEQ] < seq]

    def report(self, global_ranks: list[int]) -> str:
        return "\n".join(f"  {self.describe(r)}" for r in global_ranks)


_progress: Progress | None = None


def start(world: Any, timeout: timedelta, kinds: tuple[str, ...]) -> Progress:
    """Set up the progress table and the exit check (``init_process_group`` calls this)."""
    global _progress
    _progress = Progress(world, timeout, kinds)
    atexit.register(_leave_job)
    return _progress


def stop() -> None:
    """``destroy_process_group``: leave together with every other rank, then leaving is no error.

    The handshake is the one a rank leaving without ``destroy_process_group``
    makes at exit (``_leave_job``), so the two match. The shared window and the
    handshake's communicator are left to ``MPI_Finalize``: freeing them is
    collective, which a rank that exits without destroying never joins.
    """
    global _progress
    if _progress is not None:
        _leave_together(DESTROYED, _progress.timeout)
        atexit.unregister(_leave_job)
        _progress = None


def abort(message: str) -> None:
    """Print ``message`` and end every rank of the job (MPI_Abort), from any thread."""
    from mpi4py import MPI

    sys.stderr.write(message.rstrip() + "\n")
    sys.stderr.flush()
    # MPI_Abort tears the launcher down at once; give it a moment to forward
    # the message first, or the job dies without saying why.
    time.sleep(0.5)
    MPI.COMM_WORLD.Abort(1)


def reached(group: str, seq: int, kind: str) -> None:
    """Record, for the report, that this rank reached collective ``seq`` of ``group``.

    For waits that start outside ``wait_for`` (the shared-memory barriers spin
    in C++ first and call ``wait_for`` only when they have to wait longer).
    """
    if _progress is not None:
        _progress.reach(group, seq, kind)


def wait_for(request: Any, status: Any, *, group: str, global_ranks: list[int], seq: int,
             kind: str, timeout: float | None = None, spin_seconds: float = SPIN_SECONDS) -> None:
    """Wait for ``request`` (an MPI request, or anything with ``Test(status)``), or end the job.

    ``seq`` is the group's collective number (0 for a point-to-point
    transfer). A collective is doomed once a rank of the group has left
    before reaching it; a transfer is left to the timeout (a peer that left
    may still have sent what is being received). ``timeout`` (seconds)
    overrides the group's; a ``TimeoutError`` is then raised instead of
    ending the job (``Work.wait(timeout=...)``). Polls yield the core for
    ``spin_seconds``, then sleep between polls.
    """
    progress = _progress
    if progress is not None:
        progress.enter(group, seq, kind)  # also on the fast path: it records how far this rank got
    if request.Test(status):
        if progress is not None:
            progress.leave()
        return
    limit = timeout if timeout is not None else (progress.timeout if progress else None)
    others = [r for r in global_ranks if progress is not None and r != progress.rank] if seq else []
    start = next_check = time.monotonic()
    try:
        while not request.Test(status):
            now = time.monotonic()
            waited = now - start
            if limit is not None and waited > limit:
                if timeout is not None:
                    raise TimeoutError(f"{kind} #{seq} on {group} did not complete within {timeout} s")
                _expire(progress, group, global_ranks, seq, kind, waited)
            if progress is not None and now >= next_check:
                next_check = now + CHECK_PEERS_SECONDS
                gone = progress.left_before(others, group, seq)
                if gone:
                    abort(f"pyrt: rank {progress.rank} waits in {kind} #{seq} on {group}, but "
                          f"{_ranks(gone)} left (the script ended, called sys.exit or "
                          "destroy_process_group); ending the job. Where each rank is:\n"
                          + progress.report(global_ranks))
            if waited < spin_seconds:
                os.sched_yield()
            else:
                time.sleep(SLEEP_SECONDS)
    finally:
        if progress is not None:
            progress.leave()


def _expire(progress: Progress | None, group: str, global_ranks: list[int], seq: int, kind: str,
            waited: float) -> None:
    me = progress.rank if progress is not None else "?"
    report = progress.report(global_ranks) if progress is not None else "  (no progress table)"
    abort(f"pyrt watchdog: rank {me} waited {waited:.1f} s in {kind} #{seq} on {group}, past the "
          "process group's timeout; ending the job. Where each rank is:\n" + report)


def _ranks(ranks: list[int]) -> str:
    return ("rank " if len(ranks) == 1 else "ranks ") + ", ".join(map(str, ranks))


def _leave_job() -> None:
    """At interpreter exit with the process group still active: leave together, or end the job.

    Everyone leaving together is the normal end of a script that skipped
    destroy_process_group.
    """
    if _progress is not None:
        _leave_together(EXITED, min(EXIT_GRACE_SECONDS, _progress.timeout))


def _leave_together(state: int, limit: float) -> None:
    """Mark this rank as leaving (``state``) and wait up to ``limit`` s for every other rank to."""
    progress = _progress
    assert progress is not None
    progress.mine[_SINCE_NS] = time.time_ns()
    progress.mine[_STATE] = state
    request = progress.lifecycle.Ibarrier()
    deadline = time.monotonic() + limit
    while not request.Test():
        if time.monotonic() > deadline:
            others = [r for r in range(progress.world.Get_size()) if r != progress.rank]
            action = ("is leaving the job (its script ended or called sys.exit)" if state == EXITED
                      else "called destroy_process_group")
            abort(f"pyrt: rank {progress.rank} {action} while other ranks did not follow within "
                  f"{limit:.0f} s; ending the job (every rank must call destroy_process_group, or none). "
                  "Where each rank is:\n" + progress.report(others))
        time.sleep(1e-3)
