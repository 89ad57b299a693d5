"""``Work``: the handle an asynchronous send, receive or collective returns.

Two kinds of asynchrony sit behind one interface. Point-to-point ``isend`` and
``irecv`` are MPI requests that progress inside MPI. Asynchronous collectives
run on the group's communication thread (see ``executor.py``), so their
progress never depends on the training thread calling into MPI.
"""

from __future__ import annotations

import concurrent.futures
import time
from collections.abc import Callable
from typing import Any

from pyrt.distributed import watchdog

__all__ = ["Work"]


class Work:
    """Completion handle with PyTorch's ``wait()`` / ``is_completed()``.

    >>> done = Work.completed("value")
    >>> done.is_completed(), done.wait()
    (True, True)
    """

    def __init__(self, future: concurrent.futures.Future | None = None,
                 request: Any = None, on_complete: Callable[[Any], Any] | None = None,
                 wait: Callable[[Any, Any, float | None], None] | None = None) -> None:
        """``on_complete(status)`` runs once an MPI request finishes; its value is the result.

        ``wait(request, status, timeout)`` waits for the request (the collectives
        pass the watchdog's, which knows the group); the default polls without
        reporting to the watchdog.
        """
        self._future = future
        self._request = request
        self._on_complete = on_complete
        self._wait = wait
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
        if self._wait is not None:
            self._wait(self._request, self._status, timeout)
            return
        start = time.monotonic()
        while not self._request.Test(self._status):
            if timeout is not None and time.monotonic() - start > timeout:
                raise TimeoutError(f"Work.wait: the transfer did not complete within {timeout} s")
            time.sleep(watchdog.SLEEP_SECONDS)

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
