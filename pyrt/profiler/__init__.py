"""``pyrt.profiler``: a timeline of every op, kernel and transfer, per rank, as a Chrome trace.

PyTorch's ``torch.profiler`` names::

    from pyrt.profiler import profile, record_function

    with profile() as prof:
        with record_function("step"):
            loss_fn(model(x), y).backward()
    prof.export_chrome_trace("trace.json")   # under mpiexec: every rank calls it

What is recorded (``recorder.py`` holds the hooks' one switch):
- ``forward`` / ``backward``: each autograd ``Function``'s forward (``LinearFunction``)
  and backward (``LinearFunctionBackward``) with its input shapes, inside one
  ``backward`` range per backward pass;
- ``kernel``: every call of a ``pyrt.kernels`` entry point (``matmul``,
  ``adam_step``, ...) with shapes, dtypes and bytes;
- ``collective`` / ``p2p``: every collective and point-to-point transfer with
  its bytes, shape, dtype and peer; asynchronous collectives on the track of
  the communication thread that runs them, so their overlap with backward
  shows; DDP's bucket launches and its final wait as ``ddp`` ranges;
- ``user``: ``record_function`` ranges.

With no profile running each hook costs one read of a module global.

In a distributed job ``export_chrome_trace`` is collective: every rank sends
its records to rank 0 over the default process group, which writes one file
with one process per rank and the ranks' clocks aligned at a barrier.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from typing import Any

from pyrt.profiler import chrome_trace, recorder
from pyrt.profiler.chrome_trace import RankTrace

__all__ = ["chrome_trace", "profile", "record_function", "recorder"]


class profile:
    """Record what this process runs between ``start`` and ``stop`` (or inside ``with``).

    One profile records at a time; ``record_shapes=False`` leaves out the
    arrays' shapes (cheaper for very small ops).

    >>> import pyrt, tempfile, os, json
    >>> x = pyrt.ones(4, 3, requires_grad=True)
    >>> with profile() as prof:
    ...     (x * 2).sum().backward()
    >>> sorted({e["name"] for e in prof.events() if e["ph"] == "X"})
    ['Mul', 'MulBackward', 'Sum', 'SumBackward', 'backward']
    >>> path = os.path.join(tempfile.mkdtemp(), "trace.json")
    >>> prof.export_chrome_trace(path) == path
    True
    """

    def __init__(self, *, record_shapes: bool = True) -> None:
        self.record_shapes = record_shapes
        self._recorder: recorder.Recorder | None = None
        self._main_thread = threading.main_thread().ident or 0

    def start(self) -> None:
        """Begin recording (``__enter__`` calls this); a second start begins a new recording."""
        if recorder.active is not None:
            raise RuntimeError("profile: another profile is already recording in this process")
        self._recorder = recorder.Recorder(self.record_shapes)
        recorder.active = self._recorder

    def stop(self) -> None:
        """Stop recording; the records stay for ``events`` and ``export_chrome_trace``."""
        if recorder.active is self._recorder:
            recorder.active = None

    def __enter__(self) -> profile:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _finished(self, what: str) -> recorder.Recorder:
        if self._recorder is None:
            raise RuntimeError(f"profile.{what}: nothing was recorded; use `with profile() as prof:` first")
        if recorder.active is self._recorder:
            raise RuntimeError(f"profile.{what}: the profile is still recording; call it after `with`")
        return self._recorder

    def _local(self, rank: int, what: str) -> RankTrace:
        rec = self._finished(what)
        return RankTrace(rank, 0, rec.start_ns, list(rec.records), dict(rec.thread_names),
                         self._main_thread)

    def events(self) -> list[dict[str, Any]]:
        """This process's trace events (Trace Event Format dicts), not gathered across ranks."""
        return chrome_trace.merge([self._local(_rank(), "events")])["traceEvents"]

    def export_chrome_trace(self, path: str | os.PathLike[str]) -> str | None:
        """Write the trace of every rank to ``path`` as one Chrome-trace JSON; returns the path written.

        Under an initialised ``pyrt.distributed`` default group this is a
        collective: every rank must call it; rank 0 writes the file and
        returns ``path``, the other ranks return None.
        """
        group = _default_group()
        if group is None or group.size() == 1:
            chrome_trace.write(path, chrome_trace.merge([self._local(_rank(), "export_chrome_trace")]))
            return os.fspath(path)
        # A rank that recorded nothing raises here, before any message: pyrt.distributed's
        # abort-on-error then ends the job rather than leaving the others in the gather.
        local = self._local(group.rank(), "export_chrome_trace")
        parts = _gather_to_rank0(group, local)
        if parts is None:
            return None
        chrome_trace.write(path, chrome_trace.merge(parts))
        return os.fspath(path)


class record_function(contextlib.ContextDecorator):
    """Record a block (or every call of a decorated function) as a ``user`` range named ``name``.

    A no-op when no profile is running. Asynchronous collectives launched
    inside are named after it on the communication track.

    >>> with profile() as prof:
    ...     with record_function("load batch", {"batch": 3}):
    ...         pass
    >>> [(e["name"], e["args"]) for e in prof.events() if e["ph"] == "X"]
    [('load batch', {'batch': 3})]
    """

    def __init__(self, name: str, args: dict[str, Any] | None = None) -> None:
        self.name = name
        self.args = args
        self._open: list[contextlib.AbstractContextManager[None]] = []

    def __enter__(self) -> record_function:
        span = recorder.range_if_active(self.name, "user", self.args)
        span.__enter__()
        self._open.append(span)  # a decorated function may recurse: one entry per open call
        return self

    def __exit__(self, *exc: Any) -> None:
        self._open.pop().__exit__(*exc)


def _default_group() -> Any:
    """The default process group, if this process uses pyrt.distributed and initialised it."""
    if "pyrt.distributed" not in sys.modules:  # single-process use never imports mpi4py
        return None
    from pyrt.distributed import process_group

    return process_group.default_group() if process_group.is_initialized() else None


def _rank() -> int:
    group = _default_group()
    return group.rank() if group is not None else 0


def _gather_to_rank0(group: Any, local: RankTrace) -> list[RankTrace] | None:
    """Every rank's records on rank 0 (None elsewhere), each with its clock at a common instant."""
    from pyrt.distributed import barrier

    # The checked barrier (agreement, watchdog) first, so a rank that never exports is reported,
    # not waited for; then MPI's own, whose exit is the common instant (microseconds of skew).
    barrier(group=group)
    group.drain()
    group.comm.Barrier()
    local = local._replace(sync_ns=time.perf_counter_ns())
    parts = group.comm.gather(local, root=0)
    return parts if group.rank() == 0 else None
