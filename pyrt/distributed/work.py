"""``Work``: the handle an asynchronous send, receive or collective returns.

Two kinds of asynchrony sit behind one interface. Point-to-point ``isend`` and
``irecv`` are MPI requests that progress inside MPI. Asynchronous collectives
run on the group's communication thread (see ``executor.py``), so their
progress never depends on the training thread calling into MPI.
"""

from __future__ import annotations

import concurrent.futures
import os
import time
from collections.abc import Callable
from typing import Any

__all__ = ["Work"]

# A wait spins (yielding) this long, then sleeps between polls: a message that
# is not there after 0.2 ms is a computation away, and sleeping gives the core
# to the rank doing it when ranks share cores. Measured on 4 pipeline stages on
# 2 cores (python -m pyrt.bench pipeline): 1F1B went from 0.91x to 1.15-1.2x
# PyTorch's samples/s; on 2 stages on 2 cores the change was within noise.
_SPIN_SECONDS = 2e-4
_SLEEP_SECONDS = 1e-4


class Work:
    """Completion handle with PyTorch's ``wait()`` / ``is_completed()``.

    >>> done = Work.completed("value")
    >>> done.is_completed(), done.wait()
    (True, True)
    """

    def __init__(self, future: concurrent.futures.Future | None = None,
                 request: Any = None, on_complete: Callable[[Any], Any] | None = None) -> None:
        """``on_complete(status)`` runs once an MPI request finishes; its value is the result."""
        self._future = future
        self._request = request
        self._on_complete = on_complete
        self._status: Any = None
        if request is not None:
            from mpi4py import MPI

            self._status = MPI.Status()
        self._finished = False
        self._result: Any = None

    @classmethod
    def completed(cls, result: Any = None) -> Work:
        work = cls()
        work._finished = True
        work._result = result
        return work

    def _finish(self, value: Any) -> None:
        self._finished = True
        if self._on_complete is not None:
            self._result = self._on_complete(self._status)
        else:
            self._result = value

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the operation is done; re-raises its error. Returns True."""
        if self._finished:
            return True
        if self._future is not None:
            self._finish(self._future.result(timeout=timeout))
        elif self._request is not None:
            self._wait_yielding(timeout)
            self._finish(None)
        return True

    def _wait_yielding(self, timeout: float | None) -> None:
        """Poll the request, yielding the core between polls, then sleeping once the wait is long.

        MPICH's MPI_Wait spins: with more ranks than cores (4 pipeline stages
        on 2 cores) a waiting rank would take the core from the very rank whose
        computation it waits for. With nothing else runnable, sched_yield
        returns at once and the first polls are a plain spin, as in the C++
        ring's waits.
        """
        start = time.monotonic()
        while not self._request.Test(self._status):
            waited = time.monotonic() - start
            if timeout is not None and waited > timeout:
                raise TimeoutError(f"Work.wait: the transfer did not complete within {timeout} s")
            if waited < _SPIN_SECONDS:
                os.sched_yield()
            else:
                time.sleep(_SLEEP_SECONDS)

    def is_completed(self) -> bool:
        """True once the operation has finished (never blocks)."""
        if self._finished:
            return True
        if self._future is not None:
            if not self._future.done():
                return False
            self._finish(self._future.result())
            return True
        if self._request is not None and self._request.Test(self._status):
            self._finish(None)
            return True
        return False

    @property
    def seconds(self) -> float | None:
        """How long a completed collective ran on the communication thread (None otherwise)."""
        return getattr(self._future, "seconds", None)

    def result(self) -> Any:
        """Wait, then return what the operation produced (e.g. ``irecv``'s source rank)."""
        self.wait()
        return self._result
