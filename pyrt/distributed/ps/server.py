"""``ParameterServer``: holds one shard of the parameters and applies workers' updates.

The server is a single loop over incoming messages (see ``protocol.py``):

- PUSH: a worker's gradient for clock c. With ``staleness=None`` or s >= 1 it is
  applied at once, one optimizer step per push (Downpour's asynchronous SGD).
  With ``staleness=0`` it waits in clock c's slot until every working worker
  has pushed clock c; the slot's mean gradient is then one optimizer step,
  which is exactly synchronous data-parallel SGD.
- PULL for clock c: answered with the shard as soon as the complete clock
  (every working worker has pushed all clocks below it) is at least c - s, the
  SSP read condition; until then it waits, and so does the worker.
- DONE: the worker has finished; its pushes all arrived before it (MPI keeps
  one sender's order), so its count is checked at once and it stops holding
  back the complete clock.
- HEARTBEAT: a waiting worker is alive. A working worker from which the
  server, while listening, hears nothing for ``cluster.timeout`` seconds is
  declared dead (time spent applying updates does not count: the worker's
  messages queue up meanwhile): the server raises, which ends the MPI job
  (``init_process_group`` installs that), naming the rank.

Each push records its staleness in clocks (its clock minus the complete clock
of the parameters it was computed on: at most s under SSP) and its delay in
updates (optimizer steps the shard took between that read and the push).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from pyrt.distributed.ps.cluster import Cluster
from pyrt.distributed.ps.flat import FlatParameters, broadcast_shards, check_same_layout
from pyrt.distributed.ps.protocol import Backoff, Tag, message_buffer, shard_bounds, split_message
from pyrt.nn.module import Module
from pyrt.optim.optimizer import Optimizer
from pyrt.tensor import Tensor

__all__ = ["ParameterServer", "ServerStats"]

_FROM_WORKERS = (Tag.PULL, Tag.PUSH, Tag.HEARTBEAT, Tag.DONE)


@dataclasses.dataclass
class ServerStats:
    """What one server saw: per-worker push counts and the staleness of every push.

    ``staleness[i]`` (clocks) and ``delay[i]`` (updates) belong to the i-th push
    to arrive. ``pushes_applied`` counts pushes whose gradient went into an
    optimizer step; it equals ``sum(reported_pushes)`` unless an update was lost.
    """

    pushes: list[int]
    reported_pushes: list[int]
    pushes_applied: int
    optimizer_steps: int
    staleness: np.ndarray
    delay: np.ndarray


class ParameterServer:
    """One server's shard of ``model``'s parameters and the optimizer that updates it.

    ``optimizer`` builds the optimizer from a parameter list, so any pyrt
    optimizer works; it sees one flat float32 shard, so it must act elementwise
    (SGD, Adam and AdamW do). ``run()`` serves until every worker has closed,
    then loads the final parameters into ``model`` on every rank.

    Example (under ``mpiexec -n 4``; the workers run ``ps.Worker``)::

        cluster = ps.init(num_servers=1, staleness=1)
        server = ps.ParameterServer(cluster, model, lambda params: optim.Adam(params, lr=1e-3))
        stats = server.run()
        print(stats.pushes_applied, np.bincount(stats.staleness))
    """

    def __init__(self, cluster: Cluster, model: Module,
                 optimizer: Callable[[list[Tensor]], Optimizer]) -> None:
        if not cluster.is_server:
            raise ValueError(f"ParameterServer: rank {cluster.rank} is a worker in this cluster "
                             f"(servers are ranks {cluster.server_ranks})")
        self.cluster = cluster
        self._flat = FlatParameters(model.parameters())
        check_same_layout(cluster.comm, self._flat.numel, "ParameterServer")
        self._bounds = shard_bounds(self._flat.numel, len(cluster.server_ranks))
        lo, hi = self._bounds[cluster.server_ranks.index(cluster.rank)]
        # shard is (hi - lo,): this server's slice of the flattened parameters.
        self.shard = Tensor(self._flat.parameters_to_vector()[lo:hi].copy(), requires_grad=True)
        self.optimizer = optimizer([self.shard])
        workers = cluster.num_workers
        self._pushes = [0] * workers
        self._reported: list[int | None] = [None] * workers  # None while the worker works
        self._waiting_pulls: dict[int, int] = {}  # worker -> clock it asked to read at
        self._clock_slots: dict[int, dict[int, np.ndarray]] = {}  # staleness 0: clock -> worker -> grad
        self._version = 0
        self._pushes_applied = 0
        self._staleness: list[int] = []
        self._delay: list[int] = []
        self._replies: list[tuple[Any, np.ndarray]] = []  # in-flight Isends and their buffers
        self._push_buffer = message_buffer(hi - lo)
        self._header_buffer = message_buffer()

    def run(self) -> ServerStats:
        """Serve pulls and apply pushes until every worker has closed; return what happened.

        Example: ``stats = server.run(); assert stats.pushes_applied == sum(stats.reported_pushes)``
        """
        from mpi4py import MPI

        comm, status, backoff = self.cluster.comm, MPI.Status(), Backoff()
        self._busy_seconds = 0.0
        self._last_heard = [self._listening_clock()] * self.cluster.num_workers
        while any(reported is None for reported in self._reported):
            self._check_workers_alive()
            message = comm.Improbe(MPI.ANY_SOURCE, MPI.ANY_TAG, status)
            if message is None:
                backoff.sleep()
                continue
            backoff.reset()
            start = time.monotonic()
            self._handle(message, status)
            self._busy_seconds += time.monotonic() - start
            self._replies = [(req, buf) for req, buf in self._replies if not req.Test()]
        # Every reply answers a receive its worker waits on before closing.
        MPI.Request.Waitall([req for req, _ in self._replies])
        stats = self.stats()
        if stats.pushes_applied != sum(stats.reported_pushes) or self._clock_slots:
            raise RuntimeError(
                f"ParameterServer (rank {self.cluster.rank}): applied {stats.pushes_applied} pushes but "
                f"workers sent {sum(stats.reported_pushes)} ({stats.reported_pushes}); "
                f"clocks still pending: {sorted(self._clock_slots)}"
            )
        vector = self._flat.parameters_to_vector()
        lo, hi = self._bounds[self.cluster.server_ranks.index(self.cluster.rank)]
        vector[lo:hi] = self.shard.data
        broadcast_shards(comm, vector, self._bounds, self.cluster.server_ranks)
        self._flat.vector_to_parameters(vector)
        return stats

    def stats(self) -> ServerStats:
        """Counts and staleness so far (``run()`` returns the final ones).

        Example: ``np.bincount(server.stats().staleness)``, pushes per staleness.
        """
        return ServerStats(list(self._pushes), [r or 0 for r in self._reported], self._pushes_applied,
                           self._version, np.array(self._staleness, dtype=np.int64),
                           np.array(self._delay, dtype=np.int64))

    # --- one message ---------------------------------------------------------------
    def _handle(self, message: Any, status: Any) -> None:
        from mpi4py import MPI

        worker, tag = status.Get_source(), status.Get_tag()
        if worker not in self.cluster.worker_ranks or tag not in _FROM_WORKERS:
            raise RuntimeError(f"ParameterServer (rank {self.cluster.rank}): unexpected message with "
                               f"tag {tag} from rank {worker}")
        buffer = self._push_buffer if tag == Tag.PUSH else self._header_buffer
        if status.Get_count(MPI.BYTE) != buffer.nbytes:
            raise RuntimeError(
                f"ParameterServer (rank {self.cluster.rank}): {Tag(tag).name} from rank {worker} has "
                f"{status.Get_count(MPI.BYTE)} bytes, expected {buffer.nbytes}"
            )
        message.Recv([buffer, MPI.BYTE])
        header, payload = split_message(buffer)
        self._last_heard[worker] = self._listening_clock()
        if tag == Tag.PULL:
            self._waiting_pulls[worker] = int(header[0])
        elif tag == Tag.PUSH:
            self._receive_push(worker, int(header[0]), int(header[1]), int(header[2]), payload)
        elif tag == Tag.DONE:
            self._finish(worker, int(header[0]))
        self._apply_complete_clocks()
        self._answer_pulls()

    def _receive_push(self, worker: int, clock: int, read_clock: int, read_version: int,
                      grad: np.ndarray) -> None:
        if clock != self._pushes[worker]:
            raise RuntimeError(f"ParameterServer (rank {self.cluster.rank}): worker rank {worker} pushed "
                               f"clock {clock}, expected {self._pushes[worker]} (one push per clock)")
        self._pushes[worker] += 1
        self._staleness.append(clock - read_clock)
        self._delay.append(self._version - read_version)
        if self.cluster.staleness == 0:
            self._clock_slots.setdefault(clock, {})[worker] = grad.copy()  # the buffer is reused
        else:
            self._step(grad, pushes=1)

    def _finish(self, worker: int, reported: int) -> None:
        if reported != self._pushes[worker]:
            raise RuntimeError(f"ParameterServer (rank {self.cluster.rank}): worker rank {worker} says it "
                               f"pushed {reported} updates, this server received {self._pushes[worker]}")
        self._reported[worker] = reported

    # --- updates and reads -----------------------------------------------------------
    def _complete_clock(self) -> int:
        """Every update of the clocks below this one has arrived (finished workers hold nothing back)."""
        working = [n for n, reported in zip(self._pushes, self._reported, strict=True) if reported is None]
        return min(working) if working else max(self._pushes)

    def _apply_complete_clocks(self) -> None:
        complete = self._complete_clock()
        while self._clock_slots and min(self._clock_slots) < complete:
            grads = self._clock_slots.pop(min(self._clock_slots))
            # Summed in worker order, so a rerun gives the same bits whatever the arrival order.
            self._step(sum(grads[w] for w in sorted(grads)) / np.float32(len(grads)), pushes=len(grads))

    def _step(self, grad: np.ndarray, pushes: int) -> None:
        self.shard.grad = Tensor(grad)
        self.optimizer.step()
        self.shard.grad = None
        self._version += 1
        self._pushes_applied += pushes

    def _answer_pulls(self) -> None:
        from mpi4py import MPI

        complete, s = self._complete_clock(), self.cluster.staleness
        for worker, clock in list(self._waiting_pulls.items()):
            # A finished worker only waits to close: answer it whatever the clock.
            if s is not None and complete < clock - s and self._reported[worker] is None:
                continue
            del self._waiting_pulls[worker]
            buffer = message_buffer(self.shard.data.size)
            header, payload = split_message(buffer)
            header[:2] = (complete, self._version)
            payload[:] = self.shard.data  # a snapshot: later steps must not change a send in flight
            self._replies.append((self.cluster.comm.Isend([buffer, MPI.BYTE], dest=worker, tag=Tag.REPLY),
                                  buffer))

    def _listening_clock(self) -> float:
        """Seconds this server has spent ready to receive: wall time less the time spent handling.

        Silence is measured on this clock, so a server busy applying updates for longer than
        the timeout, with the workers' messages (heartbeats included) queued meanwhile, blames
        nobody for its own deafness.
        """
        return time.monotonic() - self._busy_seconds

    def _check_workers_alive(self) -> None:
        now = self._listening_clock()
        for worker, (heard, reported) in enumerate(zip(self._last_heard, self._reported, strict=True)):
            if reported is None and now - heard > self.cluster.timeout:
                raise RuntimeError(
                    f"ParameterServer (rank {self.cluster.rank}): worker rank {worker} has sent nothing for "
                    f"{now - heard:.1f} s (timeout {self.cluster.timeout:g} s) after {self._pushes[worker]} "
                    "pushes: it died or hung. Ending the job."
                )
