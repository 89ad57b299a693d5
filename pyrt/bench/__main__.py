"""``python -m pyrt.bench [suite ...] [--device cpu|cuda] [--json PATH] [--threads N] [--quick]
[--plot-dir DIR]``

Suites: matmul, int8, spmm (the default: the kernel suites), train (whole training
steps vs PyTorch), compress (pruned, sparse and int8 inference vs PyTorch),
allreduce, ddp, pipeline and async (launch mpiexec). Each prints a table
with our time, the reference's time and the ratio ref/ours (above 1: pyrt is faster),
measured side by side in one process. ``--plot-dir DIR`` makes the pipeline suite
draw its measured 1F1B and zero-bubble timelines (p = 2, m = 8) into DIR, and the async
suite its accuracy-against-time and staleness figure (async_training.png).
``--device cuda`` runs the GPU suites instead: our CUDA kernels against cuBLAS, cuBLAS
int8 and cuSPARSE (cuda_kernels), and the training steps on the GPU (train).

The command re-executes itself once with a clean environment: the same thread
count for pyrt and the references (OMP_NUM_THREADS, OPENBLAS_NUM_THREADS);
without OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE, which some machines here set
for old OpenBLAS builds and which slow a current numpy down; and with
OPENBLAS_THREAD_TIMEOUT=4, because OpenBLAS's idle threads otherwise spin for
about 0.1 s after every call and take a core from whichever library is timed
next (measured: our 2-thread 64x784x1024 SGEMM ran in 1.7 ms alone and 3.4 ms
right after a numpy call; with the timeout both libraries run at full speed, and
numpy itself measured faster).
"""

from __future__ import annotations

import argparse
import os
import sys

# The kernel suites run by default; the others (whole training steps, MPI jobs) when named.
SUITES = ["matmul", "int8", "spmm"]
ALL_SUITES = [*SUITES, "train", "compress", "allreduce", "ddp", "pipeline", "async", "cuda_kernels"]
CUDA_SUITES = ["cuda_kernels", "train"]  # the suites that run on a GPU (--device cuda)
MODULES = {"async": "async_"}  # suite names that are Python keywords


def _reexec_with_clean_env(threads: int) -> None:
    env = dict(os.environ, PYRT_BENCH_CHILD="1", OMP_NUM_THREADS=str(threads),
               OPENBLAS_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads),
               OPENBLAS_THREAD_TIMEOUT="4")
    env.pop("OPENBLAS_CORETYPE", None)
    env.pop("OPENBLAS_L2_SIZE", None)
    os.execve(sys.executable, [sys.executable, "-m", "pyrt.bench", *sys.argv[1:]], env)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m pyrt.bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("suites", nargs="*", metavar="suite",
                        help=f"any of {ALL_SUITES} (default: {SUITES})")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu",
                        help=f"cuda: run the GPU suites {CUDA_SUITES} on the current GPU")
    parser.add_argument("--json", metavar="PATH", help="also write the records as JSON")
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)),
                        help="threads for pyrt and the references (default: all cores)")
    parser.add_argument("--quick", action="store_true", help="a few small cases (for tests)")
    parser.add_argument("--clock", choices=["wall", "thread"], default="wall",
                        help="wall time (default), or the main thread's CPU time, which ignores the time "
                             "slices other processes take; needs --threads 1")
    parser.add_argument("--plot-dir", metavar="DIR",
                        help="pipeline suite: write its timeline figures (PNG) into DIR")
    args = parser.parse_args()
    unknown = set(args.suites) - set(ALL_SUITES)
    if unknown:
        parser.error(f"unknown suite(s) {sorted(unknown)}; choose from {ALL_SUITES}")
    if args.device == "cuda" and set(args.suites) - set(CUDA_SUITES):
        others = sorted(set(args.suites) - set(CUDA_SUITES))
        parser.error(f"--device cuda runs the suites {CUDA_SUITES}, not {others}")
    if args.clock == "thread" and args.threads != 1:
        parser.error("--clock thread needs --threads 1 (it does not see the work of other threads)")
    if os.environ.get("PYRT_BENCH_CHILD") != "1":
        _reexec_with_clean_env(args.threads)

    import pyrt
    from pyrt.bench import harness

    pyrt.set_num_threads(args.threads)
    harness.set_clock(args.clock)
    records = []
    for suite in args.suites or (CUDA_SUITES if args.device == "cuda" else SUITES):
        module = __import__(f"pyrt.bench.{MODULES.get(suite, suite)}", fromlist=["run"])
        # Only the pipeline and async suites draw figures, only train takes a device.
        options = {"plot_dir": args.plot_dir} if suite in ("pipeline", "async") else {}
        if suite == "train":
            options["device"] = args.device
        records += module.run(quick=args.quick, **options)
    if args.json:
        harness.write_json(args.json, records)
        print(f"\nwrote {len(records)} records to {args.json}")


if __name__ == "__main__":
    main()
