"""The wire format between workers and parameter servers, and how both sides wait.

Every message is one MPI message on the cluster's own communicator: a header
of ``HEADER_WORDS`` int64 followed, for pushes and replies, by a float32 payload
(one server's shard of the flattened parameters). Header and payload travel in
one buffer so they can never be separated or reordered; the tag says what the
message is. MPI delivers the messages of one sender on one communicator in the
order they were sent to a receive that matches them all (non-overtaking holds per
source, tag and communicator, so the server receives with ANY_SOURCE and
ANY_TAG), which the protocol relies on: a worker's push reaches the server before
its next pull request, and its DONE after its last push.

    kind       direction        header                                payload
    PULL       worker -> server [clock]                               -
    PUSH       worker -> server [clock, read_clock, read_version]     gradient shard
    HEARTBEAT  worker -> server [clock]                               -
    DONE       worker -> server [pushes]                              -
    REPLY      server -> worker [complete_clock, version]             parameter shard

``read_clock`` is the server's complete clock when the worker's parameters were
read (every worker's updates of clocks below it were in them); ``version`` counts
the optimizer steps the server's shard has taken.
"""

from __future__ import annotations

import enum
import itertools
import time

import numpy as np

__all__ = ["HEADER_WORDS", "Backoff", "Tag", "message_buffer", "shard_bounds", "split_message"]

HEADER_WORDS = 4
_HEADER_BYTES = 8 * HEADER_WORDS


class Tag(enum.IntEnum):
    PULL = 1
    PUSH = 2
    HEARTBEAT = 3
    DONE = 4
    REPLY = 5


def message_buffer(payload_elements: int = 0) -> np.ndarray:
    """A zeroed byte buffer for a header plus ``payload_elements`` float32 values.

    >>> message_buffer(3).nbytes
    44
    """
    return np.zeros(_HEADER_BYTES + 4 * payload_elements, dtype=np.uint8)


def split_message(buffer: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Views of a message buffer: the int64 header and the float32 payload.

    >>> header, payload = split_message(message_buffer(2))
    >>> header.shape, payload.shape
    ((4,), (2,))
    """
    return buffer[:_HEADER_BYTES].view(np.int64), buffer[_HEADER_BYTES:].view(np.float32)


def shard_bounds(numel: int, num_servers: int) -> list[tuple[int, int]]:
    """Contiguous ``[lo, hi)`` ranges of the flattened parameters, one per server.

    Splitting the flat vector rather than assigning whole tensors balances the
    servers to within one element: the digits MLP's largest weight alone is 65%
    of its parameters, so per-tensor placement could not balance two servers.

    >>> shard_bounds(10, 3)
    [(0, 3), (3, 6), (6, 10)]
    """
    edges = [k * numel // num_servers for k in range(num_servers + 1)]
    return list(itertools.pairwise(edges))


class Backoff:
    """Sleep between polls, from 20 us doubling to 1 ms; ``reset()`` when something arrived.

    MPICH's blocking calls spin on a core. Four ranks share two cores here, so a
    spinning server or waiting worker would take the CPU from the workers that
    compute; polling with short sleeps gives it back at a cost of at most 1 ms of
    latency, and none while messages keep coming.

    >>> b = Backoff()
    >>> b.sleep(); b.sleep(); round(b.seconds, 6)
    8e-05
    """

    MIN_S, MAX_S = 2e-5, 1e-3

    def __init__(self) -> None:
        self.seconds = self.MIN_S

    def reset(self) -> None:
        self.seconds = self.MIN_S

    def sleep(self) -> None:
        time.sleep(self.seconds)
        self.seconds = min(2 * self.seconds, self.MAX_S)
