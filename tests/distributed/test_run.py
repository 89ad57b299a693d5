"""The launcher: ``python -m pyrt.run`` and its command line."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
from mpirun import WORKERS, mpiexec

from pyrt.run import build_command


def test_command_splits_launcher_and_script_arguments() -> None:
    command, env = build_command(["-n", "4", "--threads-per-rank", "3", "-genv", "A=1",
                                  "train.py", "-n", "7"])
    assert command[1:5] == ["-n", "4", "-genv", "A=1"]
    assert command[-3:] == ["train.py", "-n", "7"]
    assert command[-6:-3] == [sys.executable, "-m", "mpi4py"] and env["OMP_NUM_THREADS"] == "3"


def test_module_scripts_and_thread_split() -> None:
    command, env = build_command(["-n", "64", "-m", "pkg.train"])
    assert command[-2:] == ["-m", "pkg.train"] and env["OMP_NUM_THREADS"] == "1"


def test_missing_script_is_an_error() -> None:
    with pytest.raises(SystemExit, match="no script given"):
        build_command(["-n", "2"])


@pytest.mark.parametrize("nprocs", [1, 2, 4])
def test_launch_runs_every_rank_with_its_threads(nprocs: int, run_python) -> None:
    result = run_python("-m", "pyrt.run", "-n", str(nprocs), "--threads-per-rank", "1",
                        str(WORKERS / "env_report.py"), "extra-arg")
    # Ranks print concurrently, so lines may interleave: match records, not lines.
    reports = sorted(re.findall(r"rank \d+ of \d+ threads \d+ kernel-threads \d+ args \[[^\]]*\]",
                                result.stdout))
    assert reports == [f"rank {r} of {nprocs} threads 1 kernel-threads 1 args ['extra-arg']"
                       for r in range(nprocs)]


def test_plain_mpiexec_ranks_share_the_cores() -> None:
    """Without OMP_NUM_THREADS, init_process_group gives each rank cores // local ranks."""
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    result = subprocess.run([mpiexec(), "-n", "2", sys.executable, str(WORKERS / "env_report.py")],
                            env=env, capture_output=True, text=True, timeout=120, check=True)
    share = max(1, len(os.sched_getaffinity(0)) // 2)
    assert result.stdout.count(f"kernel-threads {share} ") == 2, result.stdout
