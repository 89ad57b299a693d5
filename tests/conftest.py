"""Shared fixtures: a seeded numpy generator, pyrt's seed, and a Python subprocess runner."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

import pyrt
from pyrt import kernel_reference


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


@pytest.fixture(autouse=True)
def _seed_pyrt() -> None:
    pyrt.manual_seed(0)


@pytest.fixture
def reference_calls(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Counts, by kernel name, the calls ``pyrt.kernels`` sends to ``pyrt.kernel_reference``."""
    calls: dict[str, int] = {}
    for name in kernel_reference.__all__:
        original = getattr(kernel_reference, name)

        def counted(*args, _name=name, _original=original, **kwargs):
            calls[_name] = calls.get(_name, 0) + 1
            return _original(*args, **kwargs)

        monkeypatch.setattr(kernel_reference, name, counted)
    return calls


@pytest.fixture
def run_python(tmp_path) -> Callable[..., subprocess.CompletedProcess]:
    """Run ``python *args`` as a user would, from a directory outside the checkout.

    ``python -c`` and ``python -m`` put the working directory first on sys.path;
    from the repository root that is the source tree's ``pyrt/``, which has no
    compiled modules, instead of the installed package under test.
    """

    def run(*args: str, env: dict[str, str] | None = None, timeout: float = 120,
            check: bool = True) -> subprocess.CompletedProcess:
        result = subprocess.run([sys.executable, *args], cwd=tmp_path, env={**os.environ, **(env or {})},
                                capture_output=True, text=True, timeout=timeout)
        if check and result.returncode != 0:
            raise AssertionError(f"python {' '.join(args)[:200]} exited with {result.returncode}\n"
                                 f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}")
        return result

    return run


# --- the GPU path without a GPU --------------------------------------------------------------

def _real_gpu_reason() -> str | None:
    """Why the real-cupy variant of a device test cannot run here (None: it can)."""
    try:
        import cupy
    except ImportError:
        return "cupy is not installed"
    try:
        if cupy.cuda.runtime.getDeviceCount() < 1:
            return "cupy sees no CUDA device"
    except Exception as exc:  # no driver: cupy raises CUDARuntimeError
        return f"cupy sees no CUDA device ({type(exc).__name__})"
    try:
        from pyrt import _cuda  # noqa: F401
    except ImportError:
        return "pyrt was built without CUDA (pyrt._cuda)"
    return None


@pytest.fixture
def fake_gpu(monkeypatch: pytest.MonkeyPatch) -> Any:
    """The fake cupy with two fake devices, installed for one test (``fake_cupy.install_patched``)."""
    import fake_cupy

    return fake_cupy.install_patched(monkeypatch)


@pytest.fixture(params=["fake", "real"])
def gpu(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The cupy module a device test runs on: the CPU fake always, real cupy on a GPU machine."""
    if request.param == "fake":
        import fake_cupy

        return fake_cupy.install_patched(monkeypatch)
    reason = _real_gpu_reason()
    if reason is not None:
        pytest.skip(f"real GPU variant: {reason}")
    import cupy

    return cupy
