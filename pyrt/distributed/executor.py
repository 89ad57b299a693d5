"""One background thread per process group that runs its asynchronous collectives.

Why a thread: MPICH progresses a non-blocking collective only while some
thread is inside MPI, and the training thread is busy running Python backward.
A dedicated thread that sits in a blocking collective (mpi4py and pyrt's ring
both release the GIL there) gives real overlap, as Horovod's background thread
does. MPI is initialised with ``MPI_THREAD_MULTIPLE`` by mpi4py, which this
requires.

Why one thread per group, in submission order: MPI requires every rank to call
collectives on a communicator in the same order. Operations are queued FIFO, and
a synchronous collective on the same group first waits for the queue to drain,
so the order each rank issues is the order MPI sees.
"""

from __future__ import annotations

import concurrent.futures
import queue
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

__all__ = ["CollectiveExecutor"]

_STOP = object()
SWITCH_INTERVAL_S = 1e-4


class CollectiveExecutor:
    """FIFO executor on a single daemon thread.

    >>> ex = CollectiveExecutor("demo")
    >>> ex.submit(lambda: 6 * 7).result()
    42
    >>> ex.shutdown()
    """

    def __init__(self, name: str) -> None:
        # The thread needs the GIL for a moment between MPI calls; with Python's
        # default 5 ms switch interval a busy training thread makes it wait that
        # long each time, which serialises communication behind backward. A
        # waiting thread is handed the GIL after at most this interval; with no
        # waiter the interval costs nothing.
        if sys.getswitchinterval() > SWITCH_INTERVAL_S:
            sys.setswitchinterval(SWITCH_INTERVAL_S)
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._last: concurrent.futures.Future | None = None
        self._thread = threading.Thread(target=self._run, name=f"pyrt-comm-{name}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            future, fn = item
            if not future.set_running_or_notify_cancel():
                continue
            start = time.perf_counter()
            try:
                result = fn()
            except BaseException as exc:  # handed to whoever waits on the Work
                future.seconds = time.perf_counter() - start
                future.set_exception(exc)
            else:
                # Seconds the operation ran on this thread, for overlap measurements.
                future.seconds = time.perf_counter() - start
                future.set_result(result)

    def submit(self, fn: Callable[[], Any]) -> concurrent.futures.Future:
        """Queue ``fn`` behind every earlier submission; returns its future."""
        future: concurrent.futures.Future = concurrent.futures.Future()
        self._queue.put((future, fn))
        self._last = future
        return future

    def drain(self) -> None:
        """Wait until everything submitted so far has run (errors are left to their Work)."""
        last = self._last
        if last is not None:
            concurrent.futures.wait([last])

    def shutdown(self) -> None:
        self.drain()
        self._queue.put(_STOP)
        self._thread.join(timeout=10)
