"""Asynchronous training: wall time to 95% test accuracy on the digits MLP, one worker slowed 2x.

``python -m pyrt.bench async [--plot-dir DIR]`` launches one 4-rank ``mpiexec``
job per mode, 1 thread per rank, all training the digits MLP 64-256-128-10
(dropout 0.2) with Adam (lr 1e-3), 16 samples per training rank per step, from
the same initial weights, for the same number of epochs:

- ``ddp``: DistributedDataParallel on 4 ranks (bulk synchronous, all-reduce);
- ``ps s=0`` / ``s=1`` / ``s=3`` / ``async``: 1 parameter server + 3 workers under
  ``pyrt.distributed.ps`` with staleness 0 (bulk synchronous through the server),
  1, 3 and None (Downpour);
- ``local sgd``: 4 ranks, each with its own Adam, parameters averaged every 8 steps.

The last training rank is slowed 2x: after each step it sleeps for its own
forward-backward time, measured alone before training. Rank 0 (never the slow
one) evaluates the parameters it trains on every 5 of its steps (for local SGD,
right after each average); the first evaluation at >= 95% gives the time to
95%, counted from the start of training. Staleness is what each mode's updates
carried: for the server modes, the clocks between the complete clock of the
parameters a gradient was computed on and the gradient's own clock (recorded by
the server for every push); DDP's is 0; local SGD's is the local steps since the
last average. ``--plot-dir DIR`` draws accuracy against time and the staleness
distributions into ``DIR/async_training.png``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from pyrt.bench.harness import Record, normalized_digits, print_table

BATCH = 16  # samples per training rank per step
TARGET = 0.95
EVAL_EVERY = 5
SYNC_EVERY = 8  # local SGD
MODES = {"ddp": None, "ps s=0": 0, "ps s=1": 1, "ps s=3": 3, "async": None, "local sgd": None}


def _mlp() -> Any:
    import pyrt
    from pyrt import nn

    pyrt.manual_seed(0)  # every mode starts from the same weights
    return nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Dropout(0.2), nn.Linear(256, 128), nn.ReLU(),
                         nn.Dropout(0.2), nn.Linear(128, 10))


def _accuracy(model: Any, x: np.ndarray, y: np.ndarray) -> float:
    import pyrt

    model.eval()
    with pyrt.no_grad():
        correct = int((model(pyrt.tensor(x)).data.argmax(axis=1) == y).sum())
    model.train()
    return correct / len(y)


def _compute_seconds(model: Any, x: np.ndarray, y: np.ndarray) -> float:
    """Median forward-backward time of one step on its own (how long the slow rank sleeps)."""
    import pyrt
    from pyrt import nn

    loss_fn, times = nn.CrossEntropyLoss(), []
    for i in range(15):
        start = time.perf_counter()
        batch = slice(i * BATCH, (i + 1) * BATCH)
        loss_fn(model(pyrt.tensor(x[batch])), pyrt.tensor(y[batch])).backward()
        times.append(time.perf_counter() - start)
    for p in model.parameters():
        p.grad = None
    return float(np.median(times))


def worker(mode: str, epochs: int, out_path: str) -> None:
    import pyrt
    import pyrt.distributed as dist
    from pyrt import nn, optim
    from pyrt.distributed import ps
    from pyrt.distributed.process_group import default_group
    from pyrt.nn.parallel import DistributedDataParallel

    dist.init_process_group()
    comm = default_group().comm
    rank, size = dist.get_rank(), dist.get_world_size()
    x_train, y_train, x_test, y_test = normalized_digits()
    model, loss_fn = _mlp(), nn.CrossEntropyLoss()
    server_mode = mode.startswith("ps") or mode == "async"
    cluster = ps.init(num_servers=1, staleness=MODES[mode]) if server_mode else None
    trainers = size - 1 if server_mode else size
    slow = trainers - 1
    record: dict[str, Any] = {"mode": mode, "trainers": trainers}
    sleep_s = _compute_seconds(model, x_train, y_train) if rank == slow else 0.0
    comm.Barrier()  # calibration done before anyone's clock starts
    if cluster is not None and cluster.is_server:
        stats = ps.ParameterServer(cluster, model, lambda params: optim.Adam(params, lr=1e-3)).run()
        record.update(staleness=stats.staleness.tolist(), delay=stats.delay.tolist(),
                      optimizer_steps=stats.optimizer_steps)
    else:
        trainer: Any = None
        if server_mode:
            trainer = ps.Worker(cluster, model)
        elif mode == "ddp":
            model = DistributedDataParallel(model)
        else:
            trainer = ps.LocalSGD(model, sync_every=SYNC_EVERY)
        optimizer = None if server_mode else optim.Adam(model.parameters(), lr=1e-3)
        pyrt.manual_seed(1 + rank)  # each rank its own dropout masks
        steps_per_epoch = len(x_train) // trainers // BATCH
        curve, staleness, start = [], [], time.perf_counter()
        for epoch in range(epochs):
            order = np.random.default_rng(epoch).permutation(len(x_train))[rank::trainers]
            for i in range(steps_per_epoch):
                batch = order[i * BATCH:(i + 1) * BATCH]
                step = epoch * steps_per_epoch + i
                if server_mode:
                    trainer.pull()
                    staleness_now = None
                else:
                    optimizer.zero_grad()
                    staleness_now = trainer.steps_since_sync if mode == "local sgd" else 0
                evaluate = rank == 0 and (step % EVAL_EVERY == 0 if mode != "local sgd"
                                          else trainer.steps_since_sync == 0)
                if evaluate:
                    curve.append((time.perf_counter() - start, step, _accuracy(model, x_test, y_test)))
                loss_fn(model(pyrt.tensor(x_train[batch])), pyrt.tensor(y_train[batch])).backward()
                if server_mode:
                    trainer.push()
                    trainer.clock()
                else:
                    optimizer.step()
                    staleness.append(staleness_now)
                    if mode == "local sgd":
                        trainer.step()
                if sleep_s:
                    time.sleep(sleep_s)
        train_s = time.perf_counter() - start
        if server_mode:
            trainer.close()
        record.update(curve=curve, train_s=train_s, staleness=staleness, sleep_s=sleep_s,
                      wait_s=trainer.wait_seconds if server_mode else None,
                      samples=epochs * steps_per_epoch * BATCH,
                      final_accuracy=_accuracy(model, x_test, y_test))
    records = comm.gather(record, root=0)
    if rank == 0:
        Path(out_path).write_text(json.dumps(records))
    if cluster is not None:
        cluster.destroy()
    dist.destroy_process_group()


def _time_to_target(curve: list[list[float]]) -> tuple[float | None, int | None]:
    for seconds, step, accuracy in curve:
        if accuracy >= TARGET:
            return seconds, int(step)
    return None, None


def _summary(mode: str, launches: list[list[dict[str, Any]]]) -> Record:
    """One table row from the launch with the median time to 95% (a launch: one record per rank)."""

    def key(ranks: list[dict[str, Any]]) -> float:
        seconds = _time_to_target(ranks[0]["curve"])[0]
        return float("inf") if seconds is None else seconds

    ranks = sorted(launches, key=key)[len(launches) // 2]
    first = ranks[0]
    trainers = [r for r in ranks if "curve" in r]
    staleness = np.array([s for r in ranks for s in r["staleness"]], dtype=np.int64)
    seconds, step = _time_to_target(first["curve"])
    train_s = max(r["train_s"] for r in trainers)
    waits = [r["wait_s"] / r["train_s"] for r in trainers if r["wait_s"] is not None]
    extra = {
        "trainers": first["trainers"], "time_to_95_s": seconds, "step_at_95": step,
        "time_to_95_runs": [_time_to_target(launch[0]["curve"])[0] for launch in launches],
        "final_accuracy": first["final_accuracy"], "train_s": train_s,
        "samples_per_s": sum(r["samples"] for r in trainers) / train_s,
        "wait_fraction": float(np.mean(waits)) if waits else None,
        "staleness_mean": float(staleness.mean()), "staleness_p90": float(np.percentile(staleness, 90)),
        "staleness_max": int(staleness.max()),
        "staleness_hist": np.bincount(staleness).tolist(), "curve": first["curve"],
    }
    delays = [d for r in ranks for d in r.get("delay", [])]
    if delays:
        extra["delay_mean"] = float(np.mean(delays))
    # Not reached: the whole run, a lower bound (the table shows "-").
    return Record("async_digits_mlp", mode, train_s if seconds is None else seconds, "-", None, extra)


def plot(records: list[Record], path: Path) -> None:
    """Accuracy against wall time per mode, and each mode's staleness distribution."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (curves, hists) = plt.subplots(1, 2, figsize=(13, 4.8))
    for r in records:
        t, _, acc = zip(*r.extra["curve"], strict=True)
        curves.plot(t, acc, marker=".", label=f"{r.case} ({r.extra['trainers']} trainers)")
    curves.axhline(TARGET, color="gray", linestyle="--", linewidth=1)
    curves.set(xlabel="wall time since the start of training (s)",
               ylabel="test accuracy (rank 0's parameters)", ylim=(0.8, 1.0),
               title="digits MLP, 4 ranks, one worker slowed 2x")
    curves.legend(fontsize=8)
    for r in records:
        hist = np.array(r.extra["staleness_hist"], dtype=float)
        # One more point so a mode whose updates are all fresh (a single bin) still draws a line.
        label = r.case + (" (all 0)" if len(hist) == 1 else "")
        hists.step(np.arange(len(hist) + 1), np.append(np.cumsum(hist) / hist.sum(), 1.0), where="post",
                   label=label)
    hists.set(xlabel="staleness of an update (clocks; local SGD: steps since the last average)",
              ylabel="fraction of updates at most this stale", xscale="symlog",
              title="staleness distribution (cumulative)")
    hists.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run(quick: bool = False, plot_dir: str | None = None) -> list[Record]:
    from pyrt.run import find_mpiexec

    epochs, repeats = (2, 1) if quick else (10, 3)
    modes = ["ps s=1", "local sgd"] if quick else list(MODES)
    launches: dict[str, list[Any]] = {mode: [] for mode in modes}
    for _ in range(repeats):  # modes alternate, so a noisy spell hits all of them alike
        for mode in modes:
            with tempfile.TemporaryDirectory() as tmp:
                out = Path(tmp) / "async.json"
                env = dict(os.environ, OMP_NUM_THREADS="1")
                subprocess.run([find_mpiexec(), "-n", "4", sys.executable, "-m", "pyrt.bench.async_", mode,
                                str(epochs), str(out)], check=True, timeout=300, env=env)
                launches[mode].append(json.loads(out.read_text()))
    records = [_summary(mode, runs) for mode, runs in launches.items()]

    def optional(key: str, fmt: str) -> Any:
        return lambda r: "-" if r.extra.get(key) is None else format(r.extra[key], fmt)

    print_table(f"Digits MLP to {TARGET:.0%} test accuracy, 4 ranks (server modes: 1 server + 3 workers), "
                f"one training rank slowed 2x, {epochs} epochs, median of {repeats}", records, [
        ("mode", lambda r: r.case), ("trainers", lambda r: r.extra["trainers"]),
        ("s to 95% (median)", optional("time_to_95_s", ".2f")),
        ("runs", lambda r: " ".join("-" if t is None else f"{t:.2f}" for t in r.extra["time_to_95_runs"])),
        ("step at 95%", optional("step_at_95", "d")),
        ("final acc", lambda r: f"{r.extra['final_accuracy']:.4f}"),
        ("samples/s", lambda r: r.extra["samples_per_s"]), ("% waiting", lambda r: "-" if
         r.extra["wait_fraction"] is None else f"{100 * r.extra['wait_fraction']:.0f}"),
        ("staleness mean", lambda r: r.extra["staleness_mean"]), ("p90", lambda r: r.extra["staleness_p90"]),
        ("max", lambda r: r.extra["staleness_max"]), ("delay (updates)", optional("delay_mean", ".2f")),
    ])
    if plot_dir is not None:
        path = Path(plot_dir) / "async_training.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        plot(records, path)
        print(f"wrote {path}")
    for r in records:
        r.extra.pop("curve")  # the JSON keeps the summary, not the time series
    return records


if __name__ == "__main__":
    worker(sys.argv[1], int(sys.argv[2]), sys.argv[3])
