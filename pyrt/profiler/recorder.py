"""The one thing the runtime's hooks touch: the active ``Recorder``, or None.

Every hook in the runtime (``Function.apply``, the backward engine, the kernel
entry points, the collectives, DDP) reads the module global ``active`` once and
does nothing more when it is None, so code runs at full speed with no
profiler. When a ``pyrt.profiler.profile`` is running, ``active`` is its
``Recorder``, which appends one record per finished range:
``(name, category, thread ident, start ns, end ns, args)``, stamped with
``time.perf_counter_ns`` on the thread the range ran on. Turning the records
into a Chrome trace is ``chrome_trace.py``'s job.

This module imports nothing from pyrt, so the lowest layers can import it.
"""

from __future__ import annotations

import contextlib
import functools
import math
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple, ParamSpec, TypeVar

__all__ = ["Record", "Recorder", "active", "describe_arrays", "range_if_active", "traced_kernel"]

P = ParamSpec("P")
R = TypeVar("R")

active: Recorder | None = None  # set by pyrt.profiler.profile while it records


class Record(NamedTuple):
    """One finished range on one thread (times from ``time.perf_counter_ns``)."""

    name: str
    category: str
    thread: int  # threading.get_ident() of the thread it ran on
    start_ns: int
    end_ns: int
    args: dict[str, Any] | None


def describe_arrays(values: Any) -> dict[str, Any]:
    """Shapes, dtypes and total bytes of the array-like items of ``values``, as trace args.

    >>> import numpy as np
    >>> describe_arrays([np.zeros((2, 3), np.float32), 5])
    {'shapes': [[2, 3]], 'dtypes': ['float32'], 'bytes': 24}
    """
    shapes, dtypes, nbytes = [], [], 0
    for v in values:
        shape, dtype = getattr(v, "shape", None), getattr(v, "dtype", None)
        if not isinstance(shape, tuple) or dtype is None:
            continue
        shapes.append([int(d) for d in shape])
        dtypes.append(str(dtype))
        nbytes += math.prod(shape) * getattr(dtype, "itemsize", 0)  # a Tensor has no nbytes
    return {"shapes": shapes, "dtypes": dtypes, "bytes": nbytes}


class Recorder:
    """Collects ranges from every thread of this process while a profile runs.

    ``call`` times a function call, ``span`` a block, ``deferred`` a function
    that will run later on another thread (an asynchronous collective).
    Appending to a list is atomic under the GIL, so the communication thread
    and the training thread record without a lock.

    >>> rec = Recorder(record_shapes=True)
    >>> rec.call("double", "demo", lambda x: 2 * x, 21)
    42
    >>> with rec.span("block", "demo", {"k": 1}):
    ...     pass
    >>> [(r.name, r.category, r.args) for r in rec.records]
    [('double', 'demo', None), ('block', 'demo', {'k': 1})]
    """

    def __init__(self, record_shapes: bool = True) -> None:
        self.record_shapes = record_shapes
        self.records: list[Record] = []
        self.thread_names: dict[int, str] = {}
        self.start_ns = time.perf_counter_ns()
        self._open = threading.local()  # names of the spans open on each thread, innermost last

    def _add(self, name: str, category: str, start_ns: int, args: dict[str, Any] | None) -> None:
        ident = threading.get_ident()
        if ident not in self.thread_names:
            self.thread_names[ident] = threading.current_thread().name
        self.records.append(Record(name, category, ident, start_ns, time.perf_counter_ns(), args))

    def call(self, name: str, category: str, fn: Callable[..., R], *args: Any, **kwargs: Any) -> R:
        """``fn(*args, **kwargs)``, recorded as ``name``; args give the arrays' shapes."""
        start = time.perf_counter_ns()
        try:
            return fn(*args, **kwargs)
        finally:
            arrays = describe_arrays(args) if self.record_shapes else None
            self._add(name, category, start, arrays if arrays and arrays["shapes"] else None)

    @contextlib.contextmanager
    def span(self, name: str, category: str, args: dict[str, Any] | None = None) -> Iterator[None]:
        """Record the block as ``name``; asynchronous collectives launched inside name it."""
        stack = self._stack()
        stack.append(name)
        start = time.perf_counter_ns()
        try:
            yield
        finally:
            stack.pop()
            self._add(name, category, start, args)

    def innermost_span(self) -> str | None:
        """The name of the innermost ``span`` open on this thread, if any."""
        stack = self._stack()
        return stack[-1] if stack else None

    def deferred(self, fn: Callable[[], R], name: str, category: str,
                 args: dict[str, Any]) -> Callable[[], R]:
        """``fn`` wrapped to record itself wherever it runs later (a communication thread).

        The record names the span that was open where it was launched
        (``launched_by``, e.g. DDP's ``DDP bucket 2``) and how long it waited
        in the queue behind earlier work (``queued_us``).
        """
        launched_ns = time.perf_counter_ns()
        launched_by = self.innermost_span()
        if launched_by is not None:
            name = f"{name} ({launched_by})"
            args = {**args, "launched_by": launched_by}

        def run() -> R:
            start = time.perf_counter_ns()
            try:
                return fn()
            finally:
                self._add(name, category, start, {**args, "queued_us": (start - launched_ns) / 1e3})

        return run

    def _stack(self) -> list[str]:
        stack = getattr(self._open, "names", None)
        if stack is None:
            stack = self._open.names = []
        return stack


def range_if_active(name: str, category: str, args: dict[str, Any] | None = None
                    ) -> contextlib.AbstractContextManager[None]:
    """A recorded span when a profile is running, else a no-op context (for rare, coarse ranges).

    >>> with range_if_active("nothing recorded", "demo"):
    ...     pass
    """
    recorder = active
    return contextlib.nullcontext() if recorder is None else recorder.span(name, category, args)


def traced_kernel(fn: Callable[P, R]) -> Callable[P, R]:
    """Decorate a ``pyrt.kernels`` entry point so an active profile records each call.

    With no profile the wrapper adds one global read and one call frame.

    >>> @traced_kernel
    ... def twice(x):
    ...     return 2 * x
    >>> twice(4)
    8
    """
    name = fn.__qualname__

    @functools.wraps(fn)
    def entry(*args: P.args, **kwargs: P.kwargs) -> R:
        if active is None:
            return fn(*args, **kwargs)
        return active.call(name, "kernel", fn, *args, **kwargs)

    return entry
