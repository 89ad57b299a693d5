"""Training-step throughput: pyrt vs PyTorch (CPU) on the same models, data and threads.

Three workloads: an MLP 784-1024-512-10, a CIFAR-sized CNN (Conv2d(3,32,3) -
ReLU - MaxPool2d(2) - Flatten - Linear(7200,512) - ReLU - Linear(512,10)) and
an IMDB-sized LSTM classifier (Embedding(10000,16) - LSTM(16,128) -
Linear(128,16) - ReLU - Linear(16,2) on the last hidden state), all at batch
64 with SGD (momentum 0.9) and cross-entropy. Both frameworks start from the
same weights; the first step's losses must agree before anything is timed.
Needs PyTorch (the ``bench`` extra); without it only pyrt's rate is printed.
With ``device="cuda"`` (``python -m pyrt.bench --device cuda``) both run on the
GPU; PyTorch is the reference there only when it was built with CUDA.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

import pyrt
from pyrt import kernels, nn
from pyrt.bench.harness import Record, print_table, time_pair

BATCH = 64


class LSTMClassifier(nn.Module):
    """Embedding - LSTM - Linear - ReLU - Linear on the last hidden state."""

    def __init__(self, vocab: int = 10000, embed: int = 16, hidden: int = 128) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab, embed)
        self.lstm = nn.LSTM(embed, hidden, batch_first=True)
        self.fc1 = nn.Linear(hidden, 16)
        self.fc2 = nn.Linear(16, 2)

    def forward(self, tokens: pyrt.Tensor) -> pyrt.Tensor:
        _, (h_n, _) = self.lstm(self.embedding(tokens))
        return self.fc2(self.fc1(h_n[-1]).relu())


Workload = tuple[Callable[[], nn.Module], Callable[[np.random.Generator], np.ndarray], int]


def _workloads(quick: bool) -> dict[str, Workload]:
    """name -> (model factory, input factory, number of classes)."""
    seq = 20 if quick else 100
    return {
        "mlp 784-1024-512-10": (
            lambda: nn.Sequential(nn.Linear(784, 1024), nn.ReLU(), nn.Linear(1024, 512), nn.ReLU(),
                                  nn.Linear(512, 10)),
            lambda rng: rng.standard_normal((BATCH, 784)).astype(np.float32), 10),
        "cnn cifar 3x32x32": (
            lambda: nn.Sequential(nn.Conv2d(3, 32, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                                  nn.Linear(7200, 512), nn.ReLU(), nn.Linear(512, 10)),
            lambda rng: rng.standard_normal((BATCH, 3, 32, 32)).astype(np.float32), 10),
        f"lstm imdb seq {seq}": (
            LSTMClassifier,
            lambda rng: rng.integers(0, 10000, size=(BATCH, seq)).astype(np.int64), 2),
    }


def _torch_twin(model: nn.Module) -> Any:
    """The same architecture in PyTorch, holding a copy of ``model``'s weights."""
    import torch

    def convert(module: nn.Module) -> Any:
        if isinstance(module, nn.Sequential):
            return torch.nn.Sequential(*(convert(m) for m in module))
        if isinstance(module, LSTMClassifier):
            twin = torch.nn.Module()
            twin.embedding = torch.nn.Embedding(10000, 16)
            twin.lstm = torch.nn.LSTM(16, 128, batch_first=True)
            twin.fc1, twin.fc2 = torch.nn.Linear(128, 16), torch.nn.Linear(16, 2)

            def forward(tokens: Any) -> Any:
                _, (h_n, _) = twin.lstm(twin.embedding(tokens))
                return twin.fc2(torch.relu(twin.fc1(h_n[-1])))

            twin.forward = forward
            return twin
        simple = {nn.ReLU: torch.nn.ReLU, nn.Flatten: torch.nn.Flatten}
        if type(module) in simple:
            return simple[type(module)]()
        if isinstance(module, nn.Linear):
            return torch.nn.Linear(module.in_features, module.out_features)
        if isinstance(module, nn.Conv2d):
            return torch.nn.Conv2d(module.in_channels, module.out_channels, module.kernel_size)
        if isinstance(module, nn.MaxPool2d):
            return torch.nn.MaxPool2d(module.kernel_size)
        raise TypeError(f"no PyTorch twin for {type(module).__name__}")

    twin = convert(model)
    state = {name: torch.from_numpy(t.data.copy()) for name, t in model.state_dict().items()}
    twin.load_state_dict(state)
    return twin


def _pyrt_step(model: nn.Module, x: np.ndarray, y: np.ndarray, device: str) -> Callable[[], float]:
    model.to(device)
    optimizer = pyrt.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()
    inputs, targets = pyrt.tensor(x, device=device), pyrt.tensor(y, device=device)

    def step() -> float:
        optimizer.zero_grad()
        loss = loss_fn(model(inputs), targets)
        loss.backward()
        optimizer.step()
        return loss.item()

    return step


def _torch_step(model: Any, x: np.ndarray, y: np.ndarray, device: str) -> Callable[[], float]:
    import torch

    model.to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    loss_fn = torch.nn.CrossEntropyLoss()
    inputs, targets = torch.from_numpy(x).to(device), torch.from_numpy(y).to(device)

    def step() -> float:
        optimizer.zero_grad()
        loss = loss_fn(model(inputs), targets)
        loss.backward()
        optimizer.step()
        return loss.item()

    return step


def _torch_for(device: str) -> Any:
    """PyTorch if it can run on ``device`` (a CUDA build for "cuda"), else None, saying why."""
    try:
        import torch
    except ImportError:
        print("\nPyTorch is not installed (pip install '.[bench]'): printing pyrt's rates alone")
        return None
    if device == "cuda" and not torch.cuda.is_available():
        print("\nThis PyTorch has no CUDA: printing pyrt's GPU rates alone")
        return None
    torch.set_num_threads(kernels.get_num_threads())
    return torch


def run(quick: bool = False, device: str = "cpu") -> list[Record]:
    """Samples/s of one SGD step per workload, pyrt and PyTorch side by side on ``device``."""
    torch = _torch_for(device)
    rng = np.random.default_rng(0)
    records = []
    for name, (build, make_input, classes) in _workloads(quick).items():
        pyrt.manual_seed(0)
        model = build()
        x, y = make_input(rng), rng.integers(0, classes, size=BATCH).astype(np.int64)
        ref = _torch_step(_torch_twin(model), x, y, device) if torch is not None else None
        ours = _pyrt_step(model, x, y, device)
        if ref is not None:
            ours_loss, ref_loss = ours(), ref()
            if abs(ours_loss - ref_loss) > 1e-3 * max(1.0, abs(ref_loss)):
                raise AssertionError(f"train {name}: first-step loss {ours_loss} != PyTorch's {ref_loss}")
        ours_s, ref_s = time_pair(ours, ref, repeats=2 if quick else 5, min_seconds=0.2)
        records.append(Record("train", f"{name} on {device}", ours_s, "torch" if ref else "none", ref_s,
                              {"samples_per_s": BATCH / ours_s,
                               "ref_samples_per_s": BATCH / ref_s if ref_s else None}))
    where = f"{kernels.get_num_threads()} threads" if device == "cpu" else device
    print_table(f"Training step, batch {BATCH}, {where} "
                "(ratio = PyTorch step time / ours)", records, [
        ("workload", lambda r: r.case), ("pyrt samples/s", lambda r: r.extra["samples_per_s"]),
        ("torch samples/s", lambda r: r.extra["ref_samples_per_s"] or "-"),
        ("ratio", lambda r: r.ratio if r.ratio is not None else "-"),
    ])
    return records
