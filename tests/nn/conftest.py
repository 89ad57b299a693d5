"""PyTorch, the oracle here, runs single-threaded during these tests.

Its small float64 ops gain nothing from threads, and on a busy CI machine its
thread pool oversubscribes the cores: a 16-wide encoder layer step measured
0.34 s with the default pool against 0.008 s with one thread.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True)
def _torch_single_thread() -> Iterator[None]:
    torch = sys.modules.get("torch")
    if torch is None:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
