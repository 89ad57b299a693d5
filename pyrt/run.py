"""``python -m pyrt.run -n N script.py [args]``: launch a training script on N MPI ranks.

It finds the ``mpiexec`` that belongs to the MPI mpi4py loads (the one the
``mpich`` wheel puts beside this Python, else the first on ``PATH``), gives
every rank ``cores // N`` OpenMP threads so ranks do not fight over cores, and
passes any option it does not know straight to ``mpiexec``::

    python -m pyrt.run -n 4 examples/ddp_mlp.py --epochs 5
    python -m pyrt.run -n 2 --threads-per-rank 1 -genv FOO=1 train.py
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["build_command", "find_mpiexec", "main"]


def find_mpiexec() -> str:
    """Path of the ``mpiexec`` matching this environment's MPI.

    >>> find_mpiexec().endswith("mpiexec")
    True
    """
    beside = Path(sys.executable).parent / "mpiexec"
    if beside.exists():
        return str(beside)
    found = shutil.which("mpiexec") or shutil.which("mpirun")
    if found is None:
        raise RuntimeError(
            "pyrt.run: no mpiexec found beside this Python or on PATH; `pip install mpich` "
            "provides one that matches mpi4py"
        )
    return found


def _split_launcher_args(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """Split at the script: ``foo.py`` or ``-m module``; what follows belongs to the script."""
    for i, arg in enumerate(argv):
        if arg == "-m" or arg.endswith(".py"):
            return list(argv[:i]), list(argv[i:])
        if arg == "--":
            return list(argv[:i]), list(argv[i + 1:])
    raise SystemExit("pyrt.run: no script given (expected `script.py [args]` or `-m module [args]`)")


def build_command(argv: Sequence[str]) -> tuple[list[str], dict[str, str]]:
    """The mpiexec command line and environment for ``argv``.

    >>> cmd, env = build_command(["-n", "2", "train.py", "--lr", "0.1"])
    >>> cmd[1:3], cmd[-5:], env["OMP_NUM_THREADS"] >= "1"
    (['-n', '2'], ['-m', 'mpi4py', 'train.py', '--lr', '0.1'], True)
    """
    launcher_args, script = _split_launcher_args(argv)
    parser = argparse.ArgumentParser(prog="python -m pyrt.run", add_help=True)
    parser.add_argument("-n", "-np", "--nproc", dest="nproc", type=int, default=1,
                        help="number of ranks (default 1)")
    parser.add_argument("--threads-per-rank", type=int, default=None,
                        help="OpenMP threads per rank (default: cores // ranks, at least 1)")
    options, mpiexec_extra = parser.parse_known_args(launcher_args)
    if options.nproc < 1:
        raise SystemExit(f"pyrt.run: -n must be at least 1, got {options.nproc}")
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    threads = options.threads_per_rank or max(1, cores // options.nproc)
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    # `python -m mpi4py` turns a rank's non-zero sys.exit() into MPI_Abort; a plain
    # exit would leave the other ranks waiting in MPI_Finalize or a collective.
    command = [find_mpiexec(), "-n", str(options.nproc), *mpiexec_extra, sys.executable, "-m", "mpi4py",
               *script]
    return command, env


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m pyrt.run`` and the ``pyrt-run`` console script."""
    command, env = build_command(sys.argv[1:] if argv is None else argv)
    return subprocess.call(command, env=env)


if __name__ == "__main__":
    sys.exit(main())
