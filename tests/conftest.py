"""Shared fixtures: a seeded numpy generator, pyrt's seed, and a Python subprocess runner."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable

import numpy as np
import pytest

import pyrt


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


@pytest.fixture(autouse=True)
def _seed_pyrt() -> None:
    pyrt.manual_seed(0)


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
