"""``Worker``: pulls parameters, pushes gradients, and keeps the SSP clock.

One training step at clock c is ``pull(); loss.backward(); push(); clock()``:

- ``pull()`` loads parameters into the model. Under staleness s it may keep the
  parameters it already holds if their read clock (the servers' complete clock
  when they were read) is at least c - s; otherwise it waits for a fresher reply.
- ``push()`` sends the gradients with ``Issend`` and returns at once; it only
  waits if the push from two clocks back has not yet been taken by every server
  (two sets of send buffers). A synchronous-mode send completes only once the
  server has matched it, so a worker never has more than two pushes queued at a
  server that falls behind; a plain ``Isend`` of a small message completes as
  soon as MPI has buffered it, and under ``staleness=None`` a fast worker could
  queue pushes at a slow server without bound.
- ``clock()`` advances to c + 1 and sends the pull request for it right away
  (a prefetch), so while step c + 1 computes, step c's push and the next
  parameters are both in flight; the next ``pull()`` installs the reply if it
  has arrived and waits for it only when the bound demands it.

A worker waiting on the servers polls with short sleeps (``Backoff``) and sends
a heartbeat every ``timeout / 4`` seconds, so the servers can tell waiting from
dead; if the servers stay silent for ``2 * timeout`` it raises, naming them.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from pyrt.distributed.ps.cluster import Cluster
from pyrt.distributed.ps.flat import FlatParameters, broadcast_shards, check_same_layout
from pyrt.distributed.ps.protocol import Backoff, Tag, message_buffer, shard_bounds, split_message
from pyrt.nn.module import Module

__all__ = ["Worker"]

PUSHES_IN_FLIGHT = 2


class Worker:
    """A training rank's connection to the parameter servers.

    ``current_clock`` is the step in progress; ``read_clock`` the complete clock
    of the parameters in the model (SSP guarantees ``read_clock >= current_clock
    - staleness`` after ``pull()``); ``pushes`` and ``wait_seconds`` count what
    the worker sent and how long it waited. ``close()`` ends the worker and loads
    the final parameters into the model.

    Example (under ``mpiexec -n 4``; rank 3 runs ``ps.ParameterServer``)::

        cluster = ps.init(num_servers=1, staleness=1)
        worker = ps.Worker(cluster, model)
        for x, y in loader:
            worker.pull()                    # parameters, at most 1 clock stale
            loss_fn(model(x), y).backward()
            worker.push()                    # gradients, non-blocking
            worker.clock()
        worker.close()                       # model now holds the final parameters
    """

    def __init__(self, cluster: Cluster, model: Module) -> None:
        if cluster.is_server:
            raise ValueError(f"Worker: rank {cluster.rank} is a server in this cluster "
                             f"(workers are ranks {cluster.worker_ranks})")
        self.cluster = cluster
        self._flat = FlatParameters(model.parameters())
        check_same_layout(cluster.comm, self._flat.numel, "Worker")
        self._bounds = shard_bounds(self._flat.numel, len(cluster.server_ranks))
        # (numel,) staging vector: gradients on their way out, parameters on their way in.
        self._vector = np.empty(self._flat.numel, dtype=np.float32)
        # Two sets of push buffers: a push waits for the one two clocks back, not the last one.
        self._push_buffers = [[message_buffer(hi - lo) for lo, hi in self._bounds]
                              for _ in range(PUSHES_IN_FLIGHT)]
        self._push_requests: list[list[Any]] = [[] for _ in range(PUSHES_IN_FLIGHT)]
        self._reply_buffers = [message_buffer(hi - lo) for lo, hi in self._bounds]
        self._pull_requests: list[Any] | None = None  # the outstanding pull's receives
        self._header_sends: list[tuple[Any, np.ndarray]] = []
        # Per server: the complete clock and the version of the parameters last installed.
        self._read_clocks = np.full(len(self._bounds), -1, dtype=np.int64)
        self._read_versions = np.zeros(len(self._bounds), dtype=np.int64)
        self.current_clock = 0
        self.pushes = 0
        self.wait_seconds = 0.0
        self._pushed = False
        self.closed = False

    @property
    def read_clock(self) -> int:
        return int(self._read_clocks.min())

    def pull(self) -> None:
        """Load parameters into the model, waiting only as long as the staleness bound requires.

        Example: ``worker.pull()`` at the start of every step.
        """
        from mpi4py import MPI

        self._check_open("pull")
        if self._pull_requests is not None and MPI.Request.Testall(self._pull_requests):
            self._install_reply()
        while not self._fresh_enough():
            if self._pull_requests is None:
                self._request_parameters(self.current_clock)
            self._wait(self._pull_requests, "parameters")
            self._install_reply()

    def push(self) -> None:
        """Send every parameter's gradient for this clock to the servers (non-blocking), then clear them.

        Example: ``loss.backward(); worker.push()``.
        """
        from mpi4py import MPI

        self._check_open("push")
        if self._pushed:
            raise RuntimeError(f"Worker.push: already pushed at clock {self.current_clock}; "
                               "call clock() once per step, between pushes")
        slot = self.pushes % PUSHES_IN_FLIGHT
        # Its buffers are reused, and the wait bounds the pushes queued at a slow server.
        self._wait(self._push_requests[slot], "an earlier push to be taken")
        self._flat.grads_to_vector(self._vector)
        self._push_requests[slot] = []
        for k, (server, (lo, hi)) in enumerate(zip(self.cluster.server_ranks, self._bounds, strict=True)):
            buffer = self._push_buffers[slot][k]
            header, payload = split_message(buffer)
            header[:3] = (self.current_clock, self._read_clocks[k], self._read_versions[k])
            payload[:] = self._vector[lo:hi]
            self._push_requests[slot].append(
                self.cluster.comm.Issend([buffer, MPI.BYTE], dest=server, tag=Tag.PUSH))
        for p in self._flat.parameters:
            p.grad = None
        self.pushes += 1
        self._pushed = True

    def clock(self) -> None:
        """End this step: advance the clock and prefetch the next step's parameters.

        Example: ``worker.push(); worker.clock()``.
        """
        self._check_open("clock")
        if not self._pushed:
            raise RuntimeError(f"Worker.clock: nothing pushed at clock {self.current_clock}; every clock "
                               "carries one push (the servers count them)")
        self.current_clock += 1
        self._pushed = False
        if self._pull_requests is None:
            self._request_parameters(self.current_clock)
        self._header_sends = [(req, buf) for req, buf in self._header_sends if not req.Test()]

    def close(self) -> None:
        """Tell the servers this worker is done, then load the final parameters into the model.

        Every rank of the cluster takes part in the final exchange, so ``close()``
        returns once all workers have closed. Example: ``worker.close()``.
        """
        from mpi4py import MPI

        if self.closed:
            return
        self._wait([req for slot in self._push_requests for req in slot], "its last pushes to be taken")
        for server in self.cluster.server_ranks:
            self._send_header(server, Tag.DONE, self.pushes)
        if self._pull_requests is not None:  # the servers answer it on DONE
            # No heartbeats after DONE: a server that has every DONE stops reading, and a
            # stray message would be left on the communicator.
            self._wait(self._pull_requests, "the answer to its last pull", heartbeat=False)
            self._pull_requests = None
        MPI.Request.Waitall([req for req, _ in self._header_sends])
        self._header_sends = []
        self.closed = True
        broadcast_shards(self.cluster.comm, self._vector, self._bounds, self.cluster.server_ranks)
        self._flat.vector_to_parameters(self._vector)

    # --- internals -------------------------------------------------------------------
    def _check_open(self, what: str) -> None:
        if self.closed:
            raise RuntimeError(f"Worker.{what}: the worker is closed")

    def _fresh_enough(self) -> bool:
        if self.read_clock < 0:  # never pulled: the model still holds its own initial values
            return False
        s = self.cluster.staleness
        return s is None or self.read_clock >= self.current_clock - s

    def _request_parameters(self, clock: int) -> None:
        from mpi4py import MPI

        comm = self.cluster.comm
        # Receives first, so the replies never wait for a matching receive.
        self._pull_requests = [comm.Irecv([buf, MPI.BYTE], source=server, tag=Tag.REPLY)
                               for server, buf in zip(self.cluster.server_ranks, self._reply_buffers,
                                                      strict=True)]
        for server in self.cluster.server_ranks:
            self._send_header(server, Tag.PULL, clock)

    def _install_reply(self) -> None:
        for k, (lo, hi) in enumerate(self._bounds):
            header, payload = split_message(self._reply_buffers[k])
            self._read_clocks[k], self._read_versions[k] = header[0], header[1]
            self._vector[lo:hi] = payload
        self._flat.vector_to_parameters(self._vector)
        self._pull_requests = None

    def _send_header(self, server: int, tag: Tag, value: int) -> None:
        from mpi4py import MPI

        buffer = message_buffer()
        split_message(buffer)[0][0] = value
        self._header_sends.append((self.cluster.comm.Isend([buffer, MPI.BYTE], dest=server, tag=tag), buffer))

    def _wait(self, requests: list[Any], what: str, heartbeat: bool = True) -> None:
        from mpi4py import MPI

        start = last_beat = time.monotonic()
        backoff, timeout = Backoff(), self.cluster.timeout
        while not MPI.Request.Testall(requests):
            now = time.monotonic()
            if now - start > 2 * timeout:
                raise RuntimeError(
                    f"Worker (rank {self.cluster.rank}): waited {now - start:.1f} s for {what} from the "
                    f"parameter servers (ranks {self.cluster.server_ranks}): a server died or hung"
                )
            if heartbeat and now - last_beat > timeout / 4:
                for server in self.cluster.server_ranks:
                    self._send_header(server, Tag.HEARTBEAT, self.current_clock)
                last_beat = now
            backoff.sleep()
        self.wait_seconds += time.monotonic() - start
