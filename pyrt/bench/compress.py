"""Model compression, pyrt next to PyTorch: pruning (masked dense vs sparse execution) and int8.

Two MLPs: the digits MLP 64-256-128-10 (trained here for accuracy; on the
test split) and a 784-1024-512-10 MLP with random weights (latency and size
only). Each is measured as fp32, magnitude-pruned per layer to 50/80/90/95%
zeros (``prune.l1_unstructured`` then ``prune.remove``, one shot, no
fine-tuning; ``examples/compress_mlp.py`` fine-tunes) and run either as a
dense layer holding zeros ("masked") or as CSR on our SpMM
(``pyrt.sparse.to_sparse``), and dynamic int8 (``quantize_dynamic``).

PyTorch gets the same weights: ``torch.nn.utils.prune`` computes its own masks,
which must equal ours before anything is timed, and
``torch.ao.quantization.quantize_dynamic`` (FBGEMM) quantizes its copy.
PyTorch's pruning has no sparse execution, so our sparse rows are compared
with its masked model: what a PyTorch user gets from pruning. Every variant
is timed at batch 1 and 64 in alternating rounds with the other variants of
its row; bytes on disk are ``pyrt.save`` / ``torch.save`` of the state dict.
"""

from __future__ import annotations

import copy
import importlib.util
import itertools
import os
import tempfile
from collections.abc import Callable
from typing import Any

import numpy as np

import pyrt
from pyrt import kernels, nn
from pyrt.bench.harness import Record, normalized_digits, print_table, time_best
from pyrt.nn.utils import prune
from pyrt.quantization import quantize_dynamic

LEVELS = [0.5, 0.8, 0.9, 0.95]
BATCHES = [1, 64]


def _mlp(*widths: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(itertools.pairwise(widths)):
        layers += [nn.Linear(a, b)] + ([nn.ReLU()] if i < len(widths) - 2 else [])
    return nn.Sequential(*layers)


def _train(model: nn.Module, x: np.ndarray, y: np.ndarray, epochs: int) -> None:
    """A few epochs of Adam: enough for the digits MLP to be a real classifier (~97%)."""
    optimizer = pyrt.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = nn.CrossEntropyLoss()
    rng = np.random.default_rng(0)
    for _ in range(epochs):
        order = rng.permutation(len(x))
        for start in range(0, len(x), 32):
            batch = order[start:start + 32]
            optimizer.zero_grad()
            loss_fn(model(pyrt.tensor(x[batch])), pyrt.tensor(y[batch])).backward()
            optimizer.step()


def _torch_twin(model: nn.Sequential) -> Any:
    import torch

    twin = torch.nn.Sequential(*(torch.nn.Linear(m.in_features, m.out_features) if isinstance(m, nn.Linear)
                                 else torch.nn.ReLU() for m in model))
    twin.load_state_dict({k: torch.from_numpy(v.data.copy()) for k, v in model.state_dict().items()})
    return twin.eval()


def _linear_indices(model: nn.Sequential) -> list[int]:
    return [i for i, m in enumerate(model) if isinstance(m, nn.Linear)]


def _prune_both(model: nn.Sequential, twin: Any, level: float) -> tuple[nn.Sequential, Any]:
    """Per-layer L1 pruning of copies of both models, masks checked equal, then made permanent."""
    ours, theirs = copy.deepcopy(model), copy.deepcopy(twin) if twin is not None else None
    for i in _linear_indices(ours):
        prune.l1_unstructured(ours[i], "weight", amount=level)
        if theirs is not None:
            import torch.nn.utils.prune as torch_prune

            torch_prune.l1_unstructured(theirs[i], "weight", amount=level)
            if not np.array_equal(ours[i].weight_mask.data, theirs[i].weight_mask.numpy()):
                raise AssertionError(f"compress: layer {i} at {level:.0%}: our mask differs from PyTorch's")
            torch_prune.remove(theirs[i], "weight")
        prune.remove(ours[i], "weight")
    return ours.eval(), theirs


def _to_sparse(model: nn.Sequential) -> nn.Sequential:
    from pyrt import sparse

    model = copy.deepcopy(model)
    for i in _linear_indices(model):
        model[i] = sparse.to_sparse(model[i])
    return model.eval()


def _forward(model: Any, x: np.ndarray) -> Callable[[], np.ndarray]:
    """Inference without autograd, for a pyrt or a PyTorch model."""
    if isinstance(model, nn.Module):
        tx = pyrt.tensor(x)

        def run() -> np.ndarray:
            with pyrt.no_grad():
                return model(tx).data
        return run
    import torch

    tx = torch.from_numpy(x)

    def run_torch() -> np.ndarray:
        with torch.no_grad():
            return model(tx).numpy()
    return run_torch


def _accuracy(model: Any, x: np.ndarray | None, y: np.ndarray | None) -> float | None:
    if x is None or y is None or model is None:
        return None
    return float((_forward(model, x)().argmax(axis=1) == y).mean())


def _bytes(model: Any) -> int | None:
    if model is None:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "model")
        if isinstance(model, nn.Module):
            pyrt.save(model.state_dict(), path)
        else:
            import torch

            torch.save(model.state_dict(), path)
        return os.path.getsize(path)


def _time_together(fns: list[Callable[[], Any] | None], rounds: int,
                   min_seconds: float) -> list[float | None]:
    """Best time of each function, taking turns round after round (a noisy neighbour hits all alike)."""
    best = [float("inf")] * len(fns)
    for _ in range(rounds):
        for i, fn in enumerate(fns):
            if fn is not None:
                best[i] = min(best[i], time_best(fn, repeats=1, min_seconds=min_seconds))
    return [b if fn is not None else None for b, fn in zip(best, fns, strict=True)]


def _check_close(name: str, got: np.ndarray, want: np.ndarray, tolerance: float) -> None:
    error = float(np.abs(got - want).max() / max(np.abs(want).max(), 1e-12))
    if error > tolerance:
        raise AssertionError(f"compress: {name}: relative error {error:.2e} > {tolerance}")


def _measure_model(name: str, model: nn.Sequential, inputs: dict[int, np.ndarray], test: tuple | None,
                   levels: list[float], torch: Any, sparse_ok: bool, rounds: int,
                   min_seconds: float) -> list[Record]:
    x_test, y_test = test if test is not None else (None, None)
    model.eval()
    twin = _torch_twin(model) if torch is not None else None
    ref = "torch" if twin is not None else "none"
    records: list[Record] = []

    def record(variant: str, sparsity: float, batch: int, ours: Any, theirs: Any, ours_s: float,
               ref_s: float | None, **extra: Any) -> None:
        records.append(Record("compress", f"{name} | {variant} | batch {batch}", ours_s, ref, ref_s, {
            "model": name, "variant": variant, "sparsity": sparsity, "batch": batch,
            "accuracy": _accuracy(ours, x_test, y_test), "ref_accuracy": _accuracy(theirs, x_test, y_test),
            "bytes": _bytes(ours), "ref_bytes": _bytes(theirs), **extra}))

    for batch, x in inputs.items():
        if twin is not None:
            _check_close(f"{name} fp32 vs torch", _forward(model, x)(), _forward(twin, x)(), 1e-4)
        ours_s, ref_s = _time_together([_forward(model, x), twin and _forward(twin, x)], rounds, min_seconds)
        record("fp32", 0.0, batch, model, twin, ours_s, ref_s)

    for level in levels:
        masked, twin_masked = _prune_both(model, twin, level)
        sparse = _to_sparse(masked) if sparse_ok else None
        for batch, x in inputs.items():
            want = _forward(masked, x)()
            if sparse is not None:
                _check_close(f"{name} {level:.0%} sparse vs masked", _forward(sparse, x)(), want, 1e-4)
            masked_s, sparse_s, ref_s = _time_together([
                _forward(masked, x), sparse and _forward(sparse, x), twin_masked and _forward(twin_masked, x),
            ], rounds, min_seconds)
            record(f"pruned {level:.0%} masked", level, batch, masked, twin_masked, masked_s, ref_s)
            if sparse is not None:
                record(f"pruned {level:.0%} sparse", level, batch, sparse, twin_masked, sparse_s, ref_s,
                       masked_s=masked_s, speedup_vs_masked=masked_s / sparse_s)

    quantized = quantize_dynamic(model, {nn.Linear}, dtype=pyrt.qint8).eval()
    twin_q = None
    if twin is not None:
        twin_q = torch.ao.quantization.quantize_dynamic(twin, {torch.nn.Linear}, dtype=torch.qint8)
    for batch, x in inputs.items():
        _check_close(f"{name} int8 vs fp32", _forward(quantized, x)(), _forward(model, x)(), 0.05)
        ours_s, ref_s = _time_together([_forward(quantized, x), twin_q and _forward(twin_q, x)],
                                       rounds, min_seconds)
        record("int8", 0.0, batch, quantized, twin_q, ours_s, ref_s)
    return records


def _targets(records: list[Record]) -> list[str]:
    """One line per target of issue 9, with the cases that miss it."""
    sparse = [r for r in records if "speedup_vs_masked" in r.extra and r.extra["sparsity"] >= 0.8]
    slow = [f"{r.extra['model']} {r.extra['variant']} b{r.extra['batch']} "
            f"({r.extra['speedup_vs_masked']:.2f}x)" for r in sparse if r.extra["speedup_vs_masked"] <= 1.0]
    int8 = [r for r in records if r.extra["variant"] == "int8" and r.ratio is not None]
    behind = [f"{r.extra['model']} b{r.extra['batch']} ({r.ratio:.2f}x)" for r in int8 if r.ratio < 1.0]
    lines = []
    if sparse:
        lines.append(f"sparse faster than masked dense from 80% zeros: {len(sparse) - len(slow)}/"
                     f"{len(sparse)} cases" + (f"; missed: {', '.join(slow)}" if slow else ""))
    if int8:
        lines.append(f"int8 >= 1.0x PyTorch's dynamic quantized Linear: {len(int8) - len(behind)}/"
                     f"{len(int8)} cases" + (f"; missed: {', '.join(behind)}" if behind else ""))
    return lines


def run(quick: bool = False) -> list[Record]:
    """Measure both MLPs; ``quick``: 90% only, the digits MLP trained 2 epochs, short timings.

    >>> records = run(quick=True)  # doctest: +SKIP
    """
    try:
        import torch

        torch.set_num_threads(kernels.get_num_threads())
    except ImportError:
        torch = None
        print("\nPyTorch is not installed (pip install '.[bench]'): printing pyrt's figures alone")
    # pyrt.sparse arrived after this suite was written; without it the suite still runs.
    sparse_ok = importlib.util.find_spec("pyrt.sparse") is not None
    if not sparse_ok:
        print("\npyrt.sparse is not available in this tree: the sparse rows are left out")
    levels = [0.9] if quick else LEVELS
    rounds, min_seconds = (1, 0.01) if quick else (5, 0.05)
    rng = np.random.default_rng(0)
    x_train, y_train, x_test, y_test = normalized_digits()
    pyrt.manual_seed(0)
    digits = _mlp(64, 256, 128, 10)
    _train(digits, x_train, y_train, epochs=2 if quick else 20)
    big = _mlp(784, 1024, 512, 10)
    records = _measure_model("digits 64-256-128-10", digits, {b: x_test[:b] for b in BATCHES},
                             (x_test, y_test), levels, torch, sparse_ok, rounds, min_seconds)
    records += _measure_model("mlp 784-1024-512-10", big,
                              {b: rng.standard_normal((b, 784)).astype(np.float32) for b in BATCHES},
                              None, levels, torch, sparse_ok, rounds, min_seconds)

    def maybe(value: Any, scale: float = 1.0) -> Any:
        return "-" if value is None else value * scale

    print_table(f"Compression: inference latency, accuracy and size, {kernels.get_num_threads()} threads "
                "(ratio = PyTorch time / ours; sparse rows: PyTorch runs its masked model; "
                "vs masked = our masked dense time / our sparse time)", records, [
        ("model", lambda r: r.extra["model"]), ("variant", lambda r: r.extra["variant"]),
        ("batch", lambda r: r.extra["batch"]), ("pyrt us", lambda r: r.ours_s * 1e6),
        ("torch us", lambda r: maybe(r.ref_s, 1e6)), ("ratio", lambda r: maybe(r.ratio)),
        ("vs masked", lambda r: maybe(r.extra.get("speedup_vs_masked"))),
        ("pyrt acc", lambda r: maybe(r.extra["accuracy"])),
        ("torch acc", lambda r: maybe(r.extra["ref_accuracy"])),
        ("pyrt KB", lambda r: r.extra["bytes"] / 1024),
        ("torch KB", lambda r: maybe(r.extra["ref_bytes"], 1 / 1024)),
    ])
    print()
    for line in _targets(records):
        print(line)
    return records
