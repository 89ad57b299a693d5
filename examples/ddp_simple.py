# Run: mpiexec -n 2 python examples/ddp_simple.py
"""The classic ``Linear(10, 1)`` regression, data-parallel over MPI ranks.

Every rank draws its own random batch; DistributedDataParallel averages the
gradients in backward, so after each step all ranks hold the same weights.
"""

from __future__ import annotations

import pyrt
import pyrt.distributed as dist
from pyrt import nn, optim
from pyrt.nn.parallel import DistributedDataParallel as DDP


def main() -> None:
    dist.init_process_group("mpi")
    rank, world = dist.get_rank(), dist.get_world_size()
    pyrt.manual_seed(rank)  # each rank its own data; DDP copies rank 0's weights

    model = DDP(nn.Linear(10, 1))
    loss_fn = nn.MSELoss()
    optimizer = optim.SGD(model.parameters(), lr=0.05)
    true_weight = pyrt.arange(10).float().reshape(10, 1) / 10

    for step in range(100):
        x = pyrt.randn(20, 10)
        y = x @ true_weight + 0.5
        optimizer.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        optimizer.step()
        if rank == 0 and step % 20 == 0:
            print(f"step {step:3d}  loss {loss.item():.5f}")

    weight = model.module.weight.detach()
    copies = [pyrt.zeros(1, 10) for _ in range(world)]
    dist.all_gather(copies, weight)
    assert all((c.data == weight.data).all() for c in copies), "ranks diverged"
    if rank == 0:
        print(f"final loss {loss.item():.5f}; {world} ranks hold identical weights")
        print("learned weight:", [round(w, 2) for w in weight.data.ravel().tolist()])
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
