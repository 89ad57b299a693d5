"""Every rank of a group agrees on the call it is making before any data moves.

MPI trusts its callers: ranks that call different collectives, or the same one
with a different op, root, count or dtype, get a hang, a truncation, or a
silently wrong result. pyrt checks instead. Each collective (and each
configuration that must match, like DDP's) is described by a ``Call``, which
encodes to a fixed record of ``RECORD`` int64: the group's sequence number, the
kind, op, root, dtype, shape, transport, where a zero-copy all-reduce's array
sits in shared memory, and a caller's context (DDP puts its iteration there).
Every rank sees every record and compares all of them with its own, so on a
mismatch every rank raises the same error, naming what each rank called:

    all_reduce #7 on WORLD: ranks disagree on the call: rank 0 called
    all_reduce(sum, float32 (4,), mpi), rank 1 called all_reduce(max, float32 (4,), mpi)

How the records travel depends on where the group's ranks are:

- **all on one node:** the first barrier of the shared-memory collectives
  carries them (``shm.py``): a few hundred nanoseconds when ranks are in step,
  and for an ``algorithm="shm"`` all-reduce no extra barrier at all, since its
  own first barrier is that one;
- **across nodes:** one small ``Iallgather`` precedes the data (about 10-25 us
  here; ``python -m pyrt.bench allreduce`` prices it).

The exchange is also where ranks wait for each other, so its wait carries the
watchdog (``watchdog.wait_for``).
"""

from __future__ import annotations

import contextlib
import functools
import threading
import zlib
from collections.abc import Iterator
from typing import Any, NamedTuple

import numpy as np

from pyrt.distributed import watchdog

__all__ = ["Call", "CollectiveMismatchError", "agree", "check_call", "context", "mismatch_error"]

KINDS = ("none", "all_reduce", "broadcast", "all_gather", "reduce_scatter", "barrier", "agree",
         "send", "recv")
_OPS = (None, "sum", "avg", "max", "min", "product")
_TRANSPORTS = (None, "mpi", "ring", "shm", "hierarchical")
_DTYPES = (None, "float32", "float64", "float16", "int64", "int32", "int16", "int8", "uint8", "bool")
_MAX_DIMS = 8
# seq, kind, op, root, dtype, transport, context label, context value, ndim, shape checksum,
# shared offset, dims
_FIXED = 11
_LABEL, _VALUE = 6, 7  # the context's fields
RECORD = _FIXED + _MAX_DIMS
_labels: dict[int, str] = {}  # context label checksums back to text, for messages


_OFFSET_BITS = 40  # a shared buffer's byte offset; the buffer's index above


def shared_offset(index: int, offset: int) -> int:
    """``Call.shared_offset`` for byte ``offset`` of the group's ``index``-th shared buffer.

    >>> split_shared_offset(shared_offset(2, 64))
    (2, 64)
    """
    return (index << _OFFSET_BITS) | offset


def split_shared_offset(value: int) -> tuple[int, int]:
    """(buffer index, byte offset) of a ``Call.shared_offset``."""
    return value >> _OFFSET_BITS, value & ((1 << _OFFSET_BITS) - 1)


class CollectiveMismatchError(ValueError):
    """Ranks of a group called different collectives (or the same one differently)."""


def _checksum(text: str) -> int:
    return zlib.crc32(text.encode())


class Call(NamedTuple):
    """What one rank is about to do; equal on every rank or the call is refused."""

    kind: str
    dtype: Any = None
    shape: tuple[int, ...] | None = None
    op: str | None = None
    root: int | None = None  # a global rank
    transport: str | None = None
    context: tuple[str, int] | None = None  # e.g. ("DDP iteration", 3)
    # Where a zero-copy shared-memory all-reduce's array sits (SharedMemoryComm.symmetric_offset), or -1.
    shared_offset: int = -1

    def encode(self, seq: int) -> np.ndarray:
        """The record exchanged for this call as the group's ``seq``-th collective."""
        if self.context is None:
            record = _record(self).copy()
        else:
            # The context changes every call (DDP's iteration): cached without it, stamped here.
            record = _record(self._replace(context=None)).copy()
            label, record[_VALUE] = self.context
            record[_LABEL] = _label_code(label)
        record[0] = seq
        return record

    @staticmethod
    def describe(record: np.ndarray) -> str:
        """``record`` as the call a user wrote, e.g. ``all_reduce(sum, float32 (4,), ring)``."""
        fields = (int(v) for v in record[:_FIXED])
        seq, kind, op, root, dtype, transport, label, value, ndim, _, shared = fields
        parts = []
        if _OPS[op] is not None:
            parts.append(_OPS[op])
        if root >= 0:
            parts.append(f"root {root}")
        if ndim >= 0:
            dims = tuple(int(d) for d in record[_FIXED:_FIXED + min(ndim, _MAX_DIMS)])
            shape = repr(dims) if ndim <= _MAX_DIMS else repr(dims)[:-1] + ", ...)"
            parts.append(f"{_DTYPES[dtype]} {shape}")
        if _TRANSPORTS[transport] is not None:
            parts.append(_TRANSPORTS[transport])
        if shared >= 0:
            parts.append("shared buffer {} at byte {}".format(*split_shared_offset(shared)))
        if label != _checksum(""):
            parts.append(f"{_labels.get(label, 'context')} {value}")
        return f"{KINDS[kind]}({', '.join(parts)}) #{seq}"


@functools.lru_cache(maxsize=256)
def _label_code(label: str) -> int:
    """A context label's checksum, remembered for messages."""
    _labels[_checksum(label)] = label
    return _checksum(label)


@functools.lru_cache(maxsize=1024)
def _record(call: Call) -> np.ndarray:
    """``call``'s record without its sequence number; cached, since a training loop repeats a
    handful of calls (encoding costs ~10 us, the whole exchange ~30)."""
    record = np.zeros(RECORD, dtype=np.int64)
    shape = () if call.shape is None else tuple(call.shape)
    label, value = call.context if call.context is not None else ("", 0)
    record[1:_FIXED] = (KINDS.index(call.kind), _OPS.index(call.op), -1 if call.root is None else call.root,
                        _DTYPES.index(None if call.dtype is None else np.dtype(call.dtype).name),
                        _TRANSPORTS.index(call.transport), _label_code(label), value,
                        -1 if call.shape is None else len(shape), _checksum(repr(shape)), call.shared_offset)
    dims = shape[:_MAX_DIMS]
    record[_FIXED:_FIXED + len(dims)] = dims
    record.flags.writeable = False
    return record


# --- the caller's context (DDP's iteration) --------------------------------------------

class _Context(threading.local):
    # A class default: getattr(local, name, None) on a thread that never set it raises and
    # catches an AttributeError inside, 2 us on every collective.
    value: tuple[str, int] | None = None


_context = _Context()


@contextlib.contextmanager
def context(label: str, value: int) -> Iterator[None]:
    """Collectives called inside carry ``(label, value)``: ranks at different values disagree.

    DDP wraps its bucket all-reduces in ``context("DDP iteration", n)``, so a
    rank that skipped a backward is caught instead of averaging its step n+1
    with another rank's step n.

    >>> with context("DDP iteration", 3):
    ...     current()
    ('DDP iteration', 3)
    """
    previous = _context.value
    _context.value = (label, value)
    try:
        yield
    finally:
        _context.value = previous


def current() -> tuple[str, int] | None:
    """The context ``context()`` set on this thread, if any."""
    return _context.value


# --- the exchange ------------------------------------------------------------------------

def _exchange(pg: Any, call: Call, seq: int) -> np.ndarray | None:
    """None when every rank of ``pg`` made ``call``; else every rank's record (one row per group rank)."""
    from mpi4py import MPI

    if pg.size() == 1:
        return None
    mine = call.encode(seq)
    if (node := pg.node_shared_memory()) is not None:
        return node.agree(mine, seq, call.kind)
    every = np.empty((pg.size(), RECORD), dtype=np.int64)
    request = pg.comm.Iallgather(mine, every)
    watchdog.wait_for(request, MPI.Status(), group=pg.name, global_ranks=pg.global_ranks, seq=seq,
                      kind=call.kind)
    return None if (every == mine).all() else every


def mismatch_error(pg: Any, call: Call, seq: int, every: np.ndarray) -> CollectiveMismatchError:
    """The error every rank raises when the records ``every`` (one row per rank) differ."""
    listing = ", ".join(f"rank {pg.global_ranks[r]} called {Call.describe(row)}"
                        for r, row in enumerate(every))
    return CollectiveMismatchError(f"{call.kind} #{seq} on {pg.name}: ranks disagree on the call: {listing}")


def check_call(pg: Any, call: Call, seq: int) -> None:
    """Exchange ``call``'s record with every rank of ``pg``; raise on every rank if any differs.

    Runs where the collective runs (the group's communication thread for
    asynchronous calls); ``seq`` was drawn when the call was made.
    """
    every = _exchange(pg, call, seq)
    if every is not None:
        raise mismatch_error(pg, call, seq, every)


def agree(pg: Any, name: str, settings: Any) -> None:
    """Raise on every rank unless every rank of ``pg`` passes equal ``settings``.

    ``settings`` is compared by ``repr``; for a dict, the error lists the keys
    that differ and each rank's value.

    One record exchange when they agree; only when every rank is in this same
    check and the settings differ are the settings themselves gathered, to say
    who differs and how.

    Example (every rank)::

        agree(group, "DistributedDataParallel", {"bucket_cap_mb": 25, "find_unused_parameters": False})
    """
    pg.drain()  # asynchronous collectives queued on the group come first, in every rank's order
    text = repr(settings)
    call, seq = Call("agree", context=(name, _checksum(text))), pg.next_sequence()
    every = _exchange(pg, call, seq)
    if every is None:
        return
    same_check = (every[:, :7] == every[0, :7]).all()  # seq, kind and the name's checksum
    if not same_check:
        raise mismatch_error(pg, call, seq, every)
    every_settings = pg.comm.allgather(settings)
    ranks = pg.global_ranks
    if all(isinstance(s, dict) and s.keys() == settings.keys() for s in every_settings):
        differing = [key for key in settings if any(s[key] != every_settings[0][key] for s in every_settings)]
        listing = "; ".join(
            f"{key}: " + ", ".join(f"rank {ranks[r]} has {s[key]!r}" for r, s in enumerate(every_settings))
            for key in differing)
    else:
        listing = "; ".join(f"rank {ranks[r]}: {s!r}" for r, s in enumerate(every_settings))
    raise CollectiveMismatchError(f"{name}: ranks disagree: {listing}")
