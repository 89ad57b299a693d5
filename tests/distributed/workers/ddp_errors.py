"""DDP's error paths: mismatched models, unused parameters, and find_unused_parameters.

Run: mpiexec -n 2 python tests/distributed/workers/ddp_errors.py
"""

from __future__ import annotations

import numpy as np

import pyrt
import pyrt.distributed as dist
from pyrt import nn
from pyrt.nn.parallel import DistributedDataParallel as DDP


class TwoHeads(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Linear(4, 4)
        self.used = nn.Linear(4, 2)
        self.unused = nn.Linear(4, 2)

    def forward(self, x):
        return self.used(self.body(x).relu())


class TwoHeadsOut(TwoHeads):
    def forward(self, x):
        hidden = self.body(x).relu()
        return self.used(hidden), self.unused(hidden)


def expect(error: type[Exception], fragment: str, call) -> None:
    try:
        call()
    except error as exc:
        assert fragment in str(exc), str(exc)
    else:
        raise AssertionError(f"expected {error.__name__} containing {fragment!r}")


def main() -> None:
    dist.init_process_group()
    world, rank = dist.get_world_size(), dist.get_rank()

    # Ranks building different models get an error naming both, not a hang.
    if world > 1:
        width = 3 + (rank == world - 1)
        expect(ValueError, "ranks hold different parameters", lambda: DDP(nn.Linear(2, width)))

    x = pyrt.tensor(np.ones((3, 4), np.float32))
    strict = DDP(TwoHeads())
    expect(RuntimeError, "['unused.weight', 'unused.bias'] are not used",
           lambda: strict(x))

    tolerant = DDP(TwoHeads(), find_unused_parameters=True)
    for _ in range(2):
        tolerant.zero_grad()
        tolerant(x * (rank + 1)).sum().backward()
        # Unused on every rank: no gradient at all, as in PyTorch (the optimizer skips it).
        assert tolerant.module.unused.weight.grad is None
        # d(sum of outputs)/d(bias) counts the 3 rows on every rank, so the average is 3.
        assert np.allclose(tolerant.module.used.bias.grad.data, 3.0)

    # A gradient accumulated under no_sync() for a parameter the synced step
    # does not use is still averaged, not dropped.
    tolerant.zero_grad()
    with tolerant.no_sync():
        (tolerant(x).sum() + tolerant.module.unused(x).sum() * (rank + 1)).backward()
    tolerant(x).sum().backward()
    expected = sum(r + 1 for r in range(world)) / world * 3  # 3 rows of ones, scaled per rank
    assert np.allclose(tolerant.module.unused.bias.grad.data, expected), (
        tolerant.module.unused.bias.grad.data)

    # A forward without a backward (a skipped step) is fine: the next one re-arms.
    skipped = DDP(nn.Linear(4, 2))
    skipped(x)
    skipped(x).sum().backward()
    assert np.allclose(skipped.module.bias.grad.data, 3.0)

    # A backward that reaches only part of the model: the next forward says which.
    two_outputs = DDP(TwoHeadsOut())
    used, _ = two_outputs(x)
    used.sum().backward()
    expect(RuntimeError, "did not produce gradients for parameters ['unused.weight', 'unused.bias']",
           lambda: two_outputs(x))

    # Evaluation under no_grad records nothing and needs no backward.
    with pyrt.no_grad():
        tolerant(x)
        tolerant(x)
    print(f"rank {rank}: ddp errors ok")
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
