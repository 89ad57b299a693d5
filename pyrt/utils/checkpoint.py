"""Training checkpoints that resume exactly: model, optimizer, every rank's RNG, the data position.

``save_checkpoint`` gathers each rank's random-generator state and sampler
position to rank 0, which writes one file atomically (``pyrt.save``); every
rank returns once the file is complete. ``load_checkpoint`` restores all of
it on every rank, so a job killed mid-epoch and resumed from its last
checkpoint draws the same dropout masks and reads the same batches as an
uninterrupted run: its parameters come out bit-identical.

Typical loop (``sampler`` is the DataLoader's ``DistributedSampler`` or
``RandomSampler``)::

    start_epoch, start_step = 0, 0
    if os.path.exists(path):
        resumed = load_checkpoint(path, model=model, optimizer=opt, sampler=sampler)
        start_epoch, start_step = resumed["epoch"], resumed["step"]
    for epoch in range(start_epoch, epochs):
        sampler.set_epoch(epoch)
        for step, (x, y) in enumerate(loader, start=start_step if epoch == start_epoch else 0):
            ...
            save_checkpoint(path, model=model, optimizer=opt, sampler=sampler,
                            epoch=epoch, step=step + 1)

(PyTorch's ``torch.utils.checkpoint`` is activation checkpointing, a
different thing; these functions are what its users write by hand.)
"""

from __future__ import annotations

import os
from typing import Any

from pyrt import random
from pyrt.serialization import load, save

__all__ = ["load_checkpoint", "save_checkpoint"]

_FORMAT = "pyrt.training-checkpoint"


def _world() -> Any:
    """The default process group, or None in a single-process job."""
    from pyrt import distributed  # only now: single-process users never load MPI

    return distributed.process_group.default_group() if distributed.is_initialized() else None


def save_checkpoint(path: str | os.PathLike[str], *, model: Any = None, optimizer: Any = None,
                    sampler: Any = None, epoch: int = 0, step: int = 0) -> None:
    """Write a resumable checkpoint to ``path``; every rank of the default group must call it.

    ``epoch`` and ``step`` are stored as given (by convention: the epoch in
    progress and the number of its steps done). Models and optimizers are
    taken from rank 0 (data-parallel replicas are equal); the RNG state and
    the ``sampler`` position are taken from every rank.

    >>> import os, tempfile, pyrt
    >>> from pyrt import nn
    >>> path = os.path.join(tempfile.mkdtemp(), "ckpt.pt")
    >>> save_checkpoint(path, model=nn.Linear(2, 2), epoch=1, step=5)
    >>> load_checkpoint(path)["step"]
    5
    """
    own = {"rng": random.get_rng_state(), "sampler": None if sampler is None else sampler.state_dict()}
    world = _world()
    if world is not None:
        world.drain()  # nothing of ours may be in flight on the communicator below
    ranks = [own] if world is None else world.comm.gather(own, root=0)
    error = None
    if world is None or world.rank() == 0:
        try:
            save({"format": _FORMAT, "epoch": epoch, "step": step, "world_size": len(ranks),
                  "model": None if model is None else model.state_dict(),
                  "optimizer": None if optimizer is None else optimizer.state_dict(),
                  "ranks": ranks}, path)
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            if world is None:
                raise
    if world is not None:
        # Every rank learns whether rank 0 wrote the file, instead of some waiting forever.
        error = world.comm.bcast(error, root=0)
        if error is not None:
            raise RuntimeError(f"save_checkpoint: rank 0 failed to write {os.fspath(path)!r}: {error}")


def load_checkpoint(path: str | os.PathLike[str], *, model: Any = None, optimizer: Any = None,
                    sampler: Any = None) -> dict[str, Any]:
    """Restore what ``save_checkpoint`` wrote, on every rank; returns ``{"epoch", "step"}``.

    The job must have as many ranks as the one that saved (each rank gets its
    own RNG stream and data position back).

    >>> import os, tempfile
    >>> from pyrt import nn
    >>> path = os.path.join(tempfile.mkdtemp(), "ckpt.pt")
    >>> save_checkpoint(path, model=nn.Linear(2, 2), epoch=3)
    >>> load_checkpoint(path, model=nn.Linear(2, 2))
    {'epoch': 3, 'step': 0}
    """
    state = load(path)
    if not isinstance(state, dict) or state.get("format") != _FORMAT:
        raise ValueError(f"load_checkpoint: {os.fspath(path)!r} was not written by save_checkpoint")
    world = _world()
    rank, size = (0, 1) if world is None else (world.rank(), world.size())
    if state["world_size"] != size:
        raise ValueError(f"load_checkpoint: {os.fspath(path)!r} was saved by {state['world_size']} "
                         f"ranks; this job has {size}, so the per-rank RNG streams and data "
                         "positions cannot be resumed")
    for name, target in (("model", model), ("optimizer", optimizer)):
        if target is not None:
            if state[name] is None:
                raise ValueError(f"load_checkpoint: {os.fspath(path)!r} holds no {name} state")
            target.load_state_dict(state[name])
    own = state["ranks"][rank]
    random.set_rng_state(own["rng"])
    if sampler is not None:
        if own["sampler"] is None:
            raise ValueError(f"load_checkpoint: {os.fspath(path)!r} holds no sampler state")
        sampler.load_state_dict(own["sampler"])
    return {"epoch": state["epoch"], "step": state["step"]}
