"""Launch a worker script under real ``mpiexec`` with a timeout, for the tests."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

WORKERS = Path(__file__).parent / "workers"


def mpiexec() -> str:
    # The mpich wheel installs mpiexec next to the interpreter of this environment.
    beside = Path(sys.executable).parent / "mpiexec"
    if beside.exists():
        return str(beside)
    found = shutil.which("mpiexec")
    if found is None:
        raise RuntimeError("mpiexec not found: install the mpich wheel (pip install mpich)")
    return found


def run_workers(nprocs: int, script: str, *args: str, timeout: float = 120,
                check: bool = True) -> subprocess.CompletedProcess:
    """Run ``workers/script`` (or an absolute path) on ``nprocs`` ranks; a hang fails after
    ``timeout`` seconds."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    command = [mpiexec(), "-n", str(nprocs), sys.executable, str(WORKERS / script), *args]
    # (an absolute script path, e.g. an example, is used as is: WORKERS / "/abs" == "/abs")
    try:
        result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(
            f"{script} on {nprocs} ranks did not finish within {timeout}s (hang?)\n"
            f"stdout:\n{exc.stdout}\nstderr:\n{exc.stderr}"
        ) from None
    if check and result.returncode != 0:
        raise AssertionError(
            f"{script} on {nprocs} ranks exited with {result.returncode}\n"
            f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
        )
    return result
