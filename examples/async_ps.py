# Run: mpiexec -n 4 python examples/async_ps.py [--staleness 1|none] [--num-servers 1] [--epochs 15]
"""The digits MLP of ``train_mlp.py``, trained asynchronously through parameter servers.

The last ``--num-servers`` ranks hold the parameters (flattened, split evenly)
and apply Adam to every gradient pushed to them; the other ranks are workers,
each training on its own shard of the data. Under ``--staleness s`` (Stale
Synchronous Parallel) a worker at step c uses parameters holding every worker's
updates from steps below c - s, so no worker runs more than s steps ahead of the
slowest; ``--staleness 0`` is synchronous data-parallel training and
``--staleness none`` fully asynchronous SGD. Worker rank 0 prints the test
accuracy of the parameters it reads after each epoch; each server prints how
stale the pushed gradients were; at the end every rank holds the final model.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from digits_training import evaluate
from train_mlp import build_model, digits_datasets

import pyrt
import pyrt.distributed as dist
from pyrt import nn, optim
from pyrt.distributed import ps
from pyrt.utils.data import DataLoader, DistributedSampler


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--staleness", default="1", help="SSP bound s, or 'none' for fully asynchronous")
    parser.add_argument("--num-servers", type=int, default=1)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--batch-size", type=int, default=16, help="per worker")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    staleness = None if args.staleness.lower() == "none" else int(args.staleness)

    dist.init_process_group("mpi")
    cluster = ps.init(num_servers=args.num_servers, staleness=staleness)
    pyrt.manual_seed(args.seed)  # the servers' initial weights; workers pull them
    model = build_model()
    train, test = digits_datasets()
    if cluster.is_server:
        server = ps.ParameterServer(cluster, model, lambda params: optim.Adam(params, lr=args.lr))
        stats = server.run()
        counts = np.bincount(stats.staleness)
        report = (f"server rank {cluster.rank}: {stats.pushes_applied} pushes applied in "
                  f"{stats.optimizer_steps} Adam steps; staleness (clocks) -> pushes: "
                  f"{dict(enumerate(counts.tolist()))}; mean delay {stats.delay.mean():.2f} updates")
    else:
        rank = cluster.rank
        sampler = DistributedSampler(train, num_replicas=cluster.num_workers, rank=rank, seed=args.seed)
        loader = DataLoader(train, batch_size=args.batch_size, sampler=sampler)
        test_loader = DataLoader(test, batch_size=512)
        pyrt.manual_seed(args.seed + rank)  # each worker its own dropout masks
        loss_fn = nn.CrossEntropyLoss()
        worker = ps.Worker(cluster, model)
        start = time.perf_counter()
        for epoch in range(args.epochs):
            sampler.set_epoch(epoch)
            for x, y in loader:
                worker.pull()  # waits only if these parameters are more than s clocks stale
                loss_fn(model(x), y).backward()
                worker.push()  # non-blocking: the next step computes while it travels
                worker.clock()
            if rank == 0:
                print(f"epoch {epoch + 1:3d}  clock {worker.current_clock}  "
                      f"test accuracy {evaluate(model, test_loader):.4f} (parameters read at clock "
                      f"{worker.read_clock})", flush=True)
        seconds = time.perf_counter() - start
        worker.close()  # every worker done: the model now holds the final parameters
        report = (f"worker rank {rank}: {worker.pushes} pushes in {seconds:.2f} s, "
                  f"{worker.wait_seconds:.2f} s waiting on the servers")
    # Rank 0 prints every rank's report, so lines from different ranks never interleave.
    reports = cluster.comm.gather(report, root=0)
    if cluster.rank == 0:
        print("\n".join(reports))
        print(f"staleness={staleness}, {cluster.num_workers} workers, {args.num_servers} server(s)")
        print(f"test accuracy: {evaluate(model, DataLoader(test, batch_size=512)):.4f}")
    cluster.destroy()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
