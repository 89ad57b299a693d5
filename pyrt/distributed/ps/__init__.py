"""``pyrt.distributed.ps``: asynchronous training with parameter servers, and local SGD.

Three ways to train without a global barrier every step, next to DDP's
bulk-synchronous all-reduce:

- **SSP** (Stale Synchronous Parallel, Petuum's Bösen): ``init(staleness=s)``.
  A worker at clock c reads parameters that hold every worker's updates from
  clocks below c - s, so the fastest worker runs at most s clocks ahead of the
  slowest. ``staleness=0`` is bulk-synchronous and reproduces synchronous
  data-parallel SGD exactly (the server steps once per clock on the mean
  gradient).
- **Asynchronous SGD** (Downpour): ``staleness=None``; servers apply every push
  as it arrives and workers never wait for each other.
- **Local SGD**: ``LocalSGD(model, sync_every=H)`` averages independently trained
  replicas with one all-reduce every H steps; no servers.

Parameters are flattened and split into equal contiguous shards, one per server
(``ps.init(num_servers=...)``); workers push to and pull from all servers with
non-blocking point-to-point messages on a communicator of their own.

Example (under ``mpiexec -n 4``: ranks 0-2 train, rank 3 serves)::

    from pyrt.distributed import ps
    cluster = ps.init(num_servers=1, staleness=1)
    model = build_model()
    if cluster.is_server:
        stats = ps.ParameterServer(cluster, model, lambda params: optim.Adam(params, lr=1e-3)).run()
    else:
        worker = ps.Worker(cluster, model)
        for x, y in loader:
            worker.pull()
            loss_fn(model(x), y).backward()
            worker.push()
            worker.clock()
        worker.close()
    cluster.destroy()
"""

from pyrt.distributed.ps.cluster import Cluster, init
from pyrt.distributed.ps.local_sgd import LocalSGD
from pyrt.distributed.ps.server import ParameterServer, ServerStats
from pyrt.distributed.ps.worker import Worker

__all__ = ["Cluster", "LocalSGD", "ParameterServer", "ServerStats", "Worker", "init"]
