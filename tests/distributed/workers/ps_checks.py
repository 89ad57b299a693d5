"""Parameter-server and local-SGD checks, several clusters per launch.

For staleness 0, 1, 3 and None, every worker pushes a gradient of -1 on its own
row of a counting model (SGD, lr=1), so a read's row v holds how many of worker
v's updates it includes. Checked at every read, as Petuum's SSP demo does:
rows of every worker hold all updates of clocks below c - s (s = 0: exactly
those, nothing newer). The last worker sleeps each step and the others finish at
different clocks; each worker prints how far ahead of the slow one its reads
ran, and after close() every row equals its worker's push count on every rank
(no update lost or applied twice). Then ``staleness=0`` training of an MLP must
match single-process training on the same global batches at every step, and
LocalSGD must match a replay of every rank's local training and averaging.
Misuse (bad arguments, a push twice per clock, ranks with different models)
raises on the ranks concerned instead of hanging.

Run: mpiexec -n 4 python tests/distributed/workers/ps_checks.py [num_servers]
"""

from __future__ import annotations

import sys
import time

import numpy as np

import pyrt
import pyrt.distributed as dist
from pyrt import nn, optim
from pyrt.distributed import ps

SLOW_STEP_S = 0.02


def say(line: str) -> None:
    """One write per line: ranks share the launcher's stdout, and print's two writes interleave."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def read_counts(model: nn.Module, scale: int) -> np.ndarray:
    """Row v's count of worker v's updates; under staleness 0 each clock adds 1/workers."""
    rows = np.concatenate([model.weight.data, model.bias.data[:, None]], axis=1).astype(np.float64) * scale
    counts = np.rint(rows[:, 0])
    assert np.abs(rows - counts[:, None]).max() < 1e-4, f"rows are not whole counts: {rows}"
    return counts.astype(int)


def counting_run(num_servers: int, staleness: int | None) -> None:
    cluster = ps.init(num_servers=num_servers, staleness=staleness, timeout=30)
    workers = cluster.num_workers
    model = nn.Linear(5, workers)  # weight row v and bias[v] count worker v's applied updates
    for p in model.parameters():
        # Workers start from values no read may show: the servers' zeros must replace them.
        p.data[...] = 0.0 if cluster.is_server else 1000.0
    slow = workers - 1
    # Synchronous training needs every worker at every clock; otherwise they finish apart.
    clocks = [12] * workers if staleness == 0 else [12 + 3 * w for w in range(workers)]
    clocks[slow] = 12
    if cluster.is_server:
        stats = ps.ParameterServer(cluster, model, lambda params: optim.SGD(params, lr=1.0)).run()
        worst = int(stats.staleness.max())
        assert staleness is None or worst <= staleness, f"staleness {worst} > bound {staleness}"
        say(f"server rank {cluster.rank} staleness={staleness} applied={stats.pushes_applied} "
              f"reported={sum(stats.reported_pushes)} steps={stats.optimizer_steps} max_staleness={worst}")
    else:
        me = cluster.rank
        worker = ps.Worker(cluster, model)
        max_lead = 0
        for c in range(clocks[me]):
            worker.pull()
            assert worker.current_clock == c
            counts = read_counts(model, workers if staleness == 0 else 1)
            assert (counts <= clocks).all(), f"rank {me} clock {c}: read {counts}, pushes {clocks}"
            needed = [min(c - (staleness or 0), clocks[v]) for v in range(workers)]
            if staleness is not None:
                assert (counts >= needed).all(), f"rank {me} clock {c}: read {counts}, needs >= {needed}"
                assert worker.read_clock >= c - staleness
            if staleness == 0:
                assert (counts == [min(c, n) for n in clocks]).all(), f"rank {me} clock {c}: read {counts}"
            # How many of the slow worker's clocks this read ran ahead of (while it still works).
            max_lead = max(max_lead, min(c, clocks[slow]) - counts[slow])
            for p in model.parameters():
                p.grad = pyrt.zeros(*p.shape)
            model.weight.grad.data[me] = -1.0
            model.bias.grad.data[me] = -1.0
            if me == slow:
                time.sleep(SLOW_STEP_S)
            worker.push()
            worker.clock()
        worker.close()
        say(f"worker rank {me} staleness={staleness} pushes={worker.pushes} max_lead={max_lead} "
              f"slow={int(me == slow)} waited={worker.wait_seconds:.3f}")
    # Every rank, servers included, now holds the final parameters: one count per push.
    final = read_counts(model, workers if staleness == 0 else 1)
    assert (final == clocks).all(), f"rank {cluster.rank}: final counts {final}, pushes {clocks}"
    cluster.destroy()


def equivalence_run(num_servers: int, make_optimizer: str) -> None:
    """staleness=0 vs one process stepping on the whole global batch, every step."""
    cluster = ps.init(num_servers=num_servers, staleness=0, timeout=30)
    workers = cluster.num_workers
    factories = {"sgd": lambda params: optim.SGD(params, lr=0.1, momentum=0.9),
                 "adam": lambda params: optim.Adam(params, lr=0.01)}

    def mlp() -> nn.Module:
        pyrt.manual_seed(3)
        return nn.Sequential(nn.Linear(20, 32), nn.Tanh(), nn.Linear(32, 5))

    model, reference = mlp(), mlp()
    ref_optimizer = factories[make_optimizer](list(reference.parameters()))
    loss_fn = nn.CrossEntropyLoss()
    rng = np.random.default_rng(0)
    batch = 8 * workers
    xs = rng.standard_normal((6, batch, 20)).astype(np.float32)
    ys = rng.integers(0, 5, size=(6, batch))
    worst = 0.0
    if cluster.is_server:
        ps.ParameterServer(cluster, model, factories[make_optimizer]).run()
    else:
        me = cluster.rank
        worker = ps.Worker(cluster, model)
        mine = slice(8 * me, 8 * (me + 1))
        for step in range(6):
            worker.pull()
            for p, q in zip(model.parameters(), reference.parameters(), strict=True):
                worst = max(worst, float(np.abs(p.data - q.data).max()))
            loss_fn(model(pyrt.tensor(xs[step, mine])), pyrt.tensor(ys[step, mine])).backward()
            worker.push()
            worker.clock()
            ref_optimizer.zero_grad()
            loss_fn(reference(pyrt.tensor(xs[step])), pyrt.tensor(ys[step])).backward()
            ref_optimizer.step()
        worker.close()
    if cluster.is_server:  # the servers trained nothing themselves: replay the reference
        for step in range(6):
            ref_optimizer.zero_grad()
            loss_fn(reference(pyrt.tensor(xs[step])), pyrt.tensor(ys[step])).backward()
            ref_optimizer.step()
    for p, q in zip(model.parameters(), reference.parameters(), strict=True):
        worst = max(worst, float(np.abs(p.data - q.data).max()))
    assert worst <= 1e-6, f"rank {cluster.rank}: staleness=0 with {make_optimizer} differs by {worst}"
    say(f"rank {cluster.rank} equivalence {make_optimizer} ok max_diff={worst:.2e}")
    cluster.destroy()


def local_sgd_run() -> None:
    """Every rank replays all ranks' local SGD in-process and compares with LocalSGD's averages."""
    world, rank = dist.get_world_size(), dist.get_rank()
    sync_every, steps = 3, 8
    rng = np.random.default_rng(1)
    xs = rng.standard_normal((world, steps, 4, 6)).astype(np.float32)

    def linear(seed: int) -> nn.Module:
        pyrt.manual_seed(seed)
        return nn.Linear(6, 2)

    model = linear(seed=10 + rank)  # LocalSGD must broadcast rank 0's start
    averager = ps.LocalSGD(model, sync_every=sync_every)
    optimizer = optim.SGD(model.parameters(), lr=0.1)
    replicas = [linear(seed=10) for _ in range(world)]
    replica_optimizers = [optim.SGD(r.parameters(), lr=0.1) for r in replicas]
    for step in range(steps):
        optimizer.zero_grad()
        (model(pyrt.tensor(xs[rank, step])) ** 2).mean().backward()
        optimizer.step()
        synced = averager.step()
        assert averager.steps_since_sync == (step + 1) % sync_every
        assert synced == (averager.steps_since_sync == 0)
        for r, (replica, opt) in enumerate(zip(replicas, replica_optimizers, strict=True)):
            opt.zero_grad()
            (replica(pyrt.tensor(xs[r, step])) ** 2).mean().backward()
            opt.step()
        if synced:
            for group in zip(*(r.parameters() for r in replicas), strict=True):
                mean = sum(p.data.astype(np.float64) for p in group) / world
                for p in group:
                    p.data[...] = mean
        for p, q in zip(model.parameters(), replicas[rank].parameters(), strict=True):
            assert np.abs(p.data - q.data).max() <= 1e-6, f"rank {rank} step {step}: LocalSGD differs"
    assert averager.syncs == steps // sync_every
    say(f"rank {rank} local sgd ok syncs={averager.syncs}")


def misuse_run(num_servers: int) -> None:
    for bad in ({"num_servers": 0}, {"num_servers": dist.get_world_size()}, {"staleness": -1}):
        try:
            ps.init(**bad)
        except ValueError:
            pass
        else:
            raise AssertionError(f"ps.init({bad}) did not raise")
    cluster = ps.init(num_servers=num_servers, staleness=1, timeout=30)
    try:  # servers hold a different model than workers: every rank raises, none waits
        if cluster.is_server:
            ps.ParameterServer(cluster, nn.Linear(3, 3), optim.SGD)
        else:
            ps.Worker(cluster, nn.Linear(3, 2))
    except ValueError as exc:
        assert "disagree on the model's parameter count" in str(exc), exc
    else:
        raise AssertionError("different models on servers and workers did not raise")
    model = nn.Linear(3, 2)
    if cluster.is_server:
        ps.ParameterServer(cluster, model, lambda params: optim.SGD(params, lr=0.1)).run()
    else:
        worker = ps.Worker(cluster, model)
        worker.pull()
        for bad_call, message in ((worker.clock, "nothing pushed"), (worker.push, None),
                                  (worker.push, "already pushed")):
            try:
                bad_call()
            except RuntimeError as exc:
                assert message is not None and message in str(exc), exc
            else:
                assert message is None, f"{bad_call.__name__} did not raise"
        worker.clock()
        worker.close()
        try:
            worker.pull()
        except RuntimeError as exc:
            assert "closed" in str(exc)
        else:
            raise AssertionError("pull after close did not raise")
    say(f"rank {cluster.rank} misuse ok")
    cluster.destroy()


class SlowSGD(optim.SGD):
    """A server that needs 0.1 s (or ``seconds``) per update, so a worker's messages are still in flight."""

    def __init__(self, params, lr: float, seconds: float = 0.1):  # type: ignore[no-untyped-def]
        super().__init__(params, lr=lr)
        self.seconds = seconds

    def step(self, closure=None):  # type: ignore[no-untyped-def]
        time.sleep(self.seconds)
        return super().step(closure)


def overlap_run(num_servers: int) -> None:
    """Under s=1 a push returns at once and step t+1 starts while step t's push is being applied."""
    cluster = ps.init(num_servers=num_servers, staleness=1, timeout=30)
    model = nn.Linear(256, 200)  # 51,400 parameters, 200 KB per push: beyond MPI's eager sizes
    if cluster.is_server:
        ps.ParameterServer(cluster, model, lambda params: SlowSGD(params, lr=0.1)).run()
    else:
        worker = ps.Worker(cluster, model)
        seconds = []
        for _ in range(3):
            start = time.perf_counter()
            worker.pull()
            model(pyrt.ones(2, 256)).sum().backward()
            worker.push()
            worker.clock()
            seconds.append(time.perf_counter() - start)
        # Clock 0 waits for the first parameters; clock 1 may use them (1 stale) while the
        # servers still apply clock 0; clock 2 needs everyone's clock 0 applied, 0.1 s per push.
        assert seconds[1] < 0.1, f"rank {cluster.rank}: clock 1 waited for a server update: {seconds}"
        assert seconds[2] > 0.1, f"rank {cluster.rank}: clock 2 did not wait for the bound: {seconds}"
        worker.close()
        say(f"rank {cluster.rank} overlap ok clock seconds {[round(t, 3) for t in seconds]}")
    cluster.destroy()


class ApplyLog(optim.SGD):
    """A server that needs 20 ms per update and notes when it began each: (worker, clock, time)."""

    def __init__(self, params, log):  # type: ignore[no-untyped-def]
        super().__init__(params, lr=0.0)
        self.log = log

    def step(self, closure=None):  # type: ignore[no-untyped-def]
        code = int(self.param_groups[0]["params"][0].grad.data[0])  # 1000 * (worker + 1) + clock
        self.log.append((code // 1000 - 1, code % 1000, time.monotonic()))
        time.sleep(0.02)
        return super().step(closure)


def flow_control_run(num_servers: int) -> None:
    """Under staleness=None a worker far faster than its server stays within two pushes of it.

    A push waits for the one two clocks back to be taken by every server. Isend
    alone would not do it: a small message "leaves" as soon as MPI has buffered
    it, so a fast worker could queue any number of pushes at a slow server.
    """
    cluster = ps.init(num_servers=num_servers, staleness=None, timeout=30)
    model = nn.Linear(4, 2)  # 10 parameters: every push is a small, eagerly sent message
    log: list[tuple[int, int, float]] = []
    returned: list[float] = []  # when each push() returned, on this worker
    if cluster.is_server:
        ps.ParameterServer(cluster, model, lambda params: ApplyLog(params, log)).run()
    else:
        worker = ps.Worker(cluster, model)
        for c in range(40):
            worker.pull()
            for p in model.parameters():
                p.grad = pyrt.full(p.shape, 1000.0 * (cluster.rank + 1) + c)
            worker.push()
            returned.append(time.monotonic())
            worker.clock()
        worker.close()
    logs = [cluster.comm.bcast(log, root=server) for server in cluster.server_ranks]
    if not cluster.is_server:
        for server, server_log in zip(cluster.server_ranks, logs, strict=True):
            began = sorted(t for w, _, t in server_log if w == cluster.rank)
            for c, t in enumerate(returned):
                # Begun by the time push c returned: pushes 0 .. c-2 (one more may race the ack).
                taken = sum(b <= t for b in began)
                assert taken >= c - 2, (f"rank {cluster.rank}: push {c} returned when server {server} had "
                                        f"begun {taken} of this worker's pushes (a backlog of {c - taken})")
        say(f"rank {cluster.rank} flow control ok")
    cluster.destroy()


class StallOnceSGD(optim.SGD):
    """A server whose first update takes 1.6 s, longer than the timeout; the rest are instant."""

    def step(self, closure=None):  # type: ignore[no-untyped-def]
        if not getattr(self, "stalled", False):
            self.stalled = True
            time.sleep(1.6)
        return super().step(closure)


def busy_server_run(num_servers: int) -> None:
    """A server busy for longer than the timeout declares no live worker dead.

    While the server applies one push for 1.6 s (timeout 1.2 s), the waiting
    workers' heartbeats queue up unreceived; they prove the workers alive.
    """
    cluster = ps.init(num_servers=num_servers, staleness=None, timeout=1.2)
    model = nn.Linear(2, 2)
    if cluster.is_server:
        ps.ParameterServer(cluster, model, lambda params: StallOnceSGD(params, lr=0.1)).run()
    else:
        worker = ps.Worker(cluster, model)
        for _ in range(3):
            worker.pull()
            model(pyrt.ones(1, 2)).sum().backward()
            worker.push()
            worker.clock()
        worker.close()
    say(f"rank {cluster.rank} busy server ok")
    cluster.destroy()

def shutdown_run(num_servers: int) -> None:
    """Nothing is left unreceived when the servers stop (a stray would meet a later job's servers).

    Under staleness 0 a closing worker's last pull is answered only once the
    server has finished a 0.6 s update (timeout 1 s: heartbeats every 0.25 s);
    a worker must not heartbeat after its DONE, which the server no longer reads.
    """
    from mpi4py import MPI

    cluster = ps.init(num_servers=num_servers, staleness=0, timeout=1.0)
    model = nn.Linear(2, 2)
    if cluster.is_server:
        ps.ParameterServer(cluster, model, lambda params: SlowSGD(params, lr=0.1, seconds=0.6)).run()
        deadline, strays = time.monotonic() + 0.5, []
        status = MPI.Status()
        while time.monotonic() < deadline:
            if cluster.comm.Iprobe(MPI.ANY_SOURCE, MPI.ANY_TAG, status):
                source, tag = status.Get_source(), status.Get_tag()
                strays.append((source, tag))
                cluster.comm.Recv(bytearray(status.Get_count(MPI.BYTE)), source, tag)
            time.sleep(0.01)
        assert not strays, f"server rank {cluster.rank}: (source, tag) left unreceived: {strays}"
    else:
        worker = ps.Worker(cluster, model)
        for _ in range(2):
            worker.pull()
            model(pyrt.ones(1, 2)).sum().backward()
            worker.push()
            worker.clock()
        worker.close()
    say(f"rank {cluster.rank} shutdown ok")
    cluster.destroy()

def main() -> None:
    num_servers = int(sys.argv[1]) if len(sys.argv) > 1 else 1
    dist.init_process_group()
    misuse_run(num_servers)
    overlap_run(num_servers)
    flow_control_run(num_servers)
    busy_server_run(num_servers)
    shutdown_run(num_servers)
    for staleness in (0, 1, 3, None):
        counting_run(num_servers, staleness)
    for name in ("sgd", "adam"):
        equivalence_run(num_servers, name)
    local_sgd_run()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
