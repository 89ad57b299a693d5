"""A rank of a parameter-server job stops mid-training: the job must end, naming it.

``worker``: worker rank 1 freezes itself (SIGSTOP) at clock 3, as a hung or
dead process that MPI cannot see looks. The others then wait on the staleness
bound, sending heartbeats; the server must single out rank 1 after ``timeout``
seconds of silence and end the job. ``exit``: rank 1 exits (``os._exit(0)``)
instead; plain ``mpiexec`` would kill the job itself, so the test launches it
with ``-disable-auto-cleanup`` to leave the detection to the server.
``server``: the server freezes before serving; the workers must give up after
twice the timeout, naming it.

Run: mpiexec -n 4 python tests/distributed/workers/ps_failures.py worker|exit|server
"""

from __future__ import annotations

import os
import signal
import sys

import pyrt
from pyrt import nn, optim
from pyrt.distributed import ps

TIMEOUT_S = 2.0


def main() -> None:
    frozen = sys.argv[1]
    cluster = ps.init(num_servers=1, staleness=1, timeout=TIMEOUT_S)
    model = nn.Linear(4, 2)
    if cluster.is_server:
        server = ps.ParameterServer(cluster, model, lambda params: optim.SGD(params, lr=0.1))
        if frozen == "server":
            os.kill(os.getpid(), signal.SIGSTOP)
        server.run()
    else:
        worker = ps.Worker(cluster, model)
        for clock in range(1000):
            if frozen in ("worker", "exit") and cluster.rank == 1 and clock == 3:
                print(f"rank 1 stops at clock {clock}: {frozen}", flush=True)
                if frozen == "exit":
                    os._exit(0)
                os.kill(os.getpid(), signal.SIGSTOP)
            worker.pull()
            model(pyrt.ones(2, 4)).sum().backward()
            worker.push()
            worker.clock()
    print(f"rank {cluster.rank}: unreachable, the job should have ended", flush=True)


if __name__ == "__main__":
    main()
