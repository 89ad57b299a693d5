"""SGEMM: pyrt's kernel vs numpy (OpenBLAS) on square and training shapes."""

from __future__ import annotations

import numpy as np

from pyrt import kernels
from pyrt.bench.harness import Record, print_table, time_pair

# (m, k, n, layout): layout says which operand arrives transposed, as in a
# Linear layer's forward (x @ W.T) and backward (g @ W, g.T @ x).
SHAPES = [
    (1024, 1024, 1024, "NN"), (2048, 2048, 2048, "NN"),
    (64, 784, 1024, "NN"), (64, 784, 1024, "NT"), (256, 1024, 512, "NT"),
    (128, 512, 10, "NT"), (64, 1024, 784, "NN"), (1024, 64, 784, "TN"),
    (32, 1024, 512, "NT"), (256, 784, 1024, "NT"),
]
QUICK = [(512, 512, 512, "NN"), (64, 784, 1024, "NT"), (1024, 64, 784, "TN")]


def operands(m: int, k: int, n: int, layout: str, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    a = rng.standard_normal((k, m) if layout[0] == "T" else (m, k)).astype(np.float32)
    b = rng.standard_normal((n, k) if layout[1] == "T" else (k, n)).astype(np.float32)
    return (a.T if layout[0] == "T" else a), (b.T if layout[1] == "T" else b)


def run(quick: bool = False) -> list[Record]:
    rng = np.random.default_rng(0)
    peak = kernels.measure_fp32_peak_gflops()
    records = []
    for m, k, n, layout in QUICK if quick else SHAPES:
        a, b = operands(m, k, n, layout, rng)
        out = np.empty((m, n), np.float32)
        ours = kernels.matmul(a, b, out=out)
        reference = a @ b
        tolerance = 1e-4 * np.sqrt(k) * np.abs(reference).max()
        if not np.allclose(ours, reference, atol=tolerance, rtol=0):
            raise AssertionError(f"matmul {m}x{k}x{n} {layout}: result differs from numpy")
        ours_s, ref_s = time_pair(lambda a=a, b=b, out=out: kernels.matmul(a, b, out=out),
                                  lambda a=a, b=b, out=out: np.matmul(a, b, out=out))
        gflops = 2 * m * n * k / ours_s / 1e9
        records.append(Record("matmul", f"{m}x{k}x{n} {layout}", ours_s, "numpy", ref_s,
                              {"gflops": gflops, "ref_gflops": 2 * m * n * k / ref_s / 1e9,
                               "peak_pct": 100 * gflops / peak if peak else None}))
    print_table(f"SGEMM ({kernels.sgemm_kernel_name()}, {kernels.get_num_threads()} threads, "
                f"measured fp32 peak {peak:.0f} GFLOP/s)", records, [
        ("m x k x n", lambda r: r.case), ("ours ms", lambda r: r.ours_s * 1e3),
        ("numpy ms", lambda r: r.ref_s * 1e3), ("ratio", lambda r: r.ratio),
        ("GFLOP/s", lambda r: r.extra["gflops"]), ("numpy GFLOP/s", lambda r: r.extra["ref_gflops"]),
        ("% peak", lambda r: r.extra["peak_pct"]),
    ])
    return records
