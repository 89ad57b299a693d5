"""Dynamic int8 Linear (quantize the activations, then our int8 GEMM) vs fp32 and FBGEMM.

Ours is timed end to end as PyTorch's dynamic Linear is: activation
quantization, the int8 GEMM with its zero-point compensation, scales and bias.
References: numpy's fp32 ``x @ W.T`` (OpenBLAS), and, when PyTorch is
installed, ``torch.ao.nn.quantized.dynamic.Linear`` (FBGEMM) and torch's fp32 Linear.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from pyrt import kernels
from pyrt.bench.harness import Record, print_table, time_pair

SHAPES = [(256, 4096, 4096), (64, 1024, 1024)]  # (m, k, n): x (m, k), weight (n, k)
QUICK = [(64, 1024, 1024)]


def _torch_references(x: np.ndarray, w: np.ndarray, bias: np.ndarray,
                      threads: int) -> dict[str, Callable[[], Any]]:
    try:
        import torch
    except ImportError:
        return {}
    torch.set_num_threads(threads)
    linear = torch.nn.Linear(w.shape[1], w.shape[0])
    with torch.no_grad():
        linear.weight.copy_(torch.from_numpy(w))
        linear.bias.copy_(torch.from_numpy(bias))
    quantized = torch.ao.quantization.quantize_dynamic(torch.nn.Sequential(linear), {torch.nn.Linear},
                                                      dtype=torch.qint8)
    tx = torch.from_numpy(x)

    def fp32() -> Any:
        with torch.no_grad():
            return linear(tx)

    def int8() -> Any:
        with torch.no_grad():
            return quantized(tx)

    return {"torch dynamic int8 (FBGEMM)": int8, "torch fp32": fp32}


def run(quick: bool = False) -> list[Record]:
    rng = np.random.default_rng(0)
    peak = kernels.measure_int8_peak_gops()
    records = []
    for m, k, n in QUICK if quick else SHAPES:
        x = rng.standard_normal((m, k)).astype(np.float32)
        w = (rng.standard_normal((n, k)) * 0.05).astype(np.float32)
        bias = rng.standard_normal(n).astype(np.float32)
        w_scales = (np.abs(w).max(axis=1) / 127).astype(np.float32)
        w_q = np.clip(np.round(w / w_scales[:, None]), -128, 127).astype(np.int8)
        packed = kernels.pack_int8_weight(w_q)

        def ours(x=x, packed=packed, w_scales=w_scales, bias=bias) -> np.ndarray:
            return kernels.dynamic_linear(x, packed, w_scales, bias)

        exact = x @ w.T + bias
        error = np.abs(ours() - exact).max() / np.abs(exact).max()
        if error > 0.05:
            raise AssertionError(f"int8 {m}x{k}x{n}: relative error {error:.3f} against fp32")
        references = {"numpy fp32": lambda x=x, w=w: x @ w.T,
                      **_torch_references(x, w, bias, kernels.get_num_threads())}
        for ref_name, ref in references.items():
            ours_s, ref_s = time_pair(ours, ref, repeats=3)
            gops = 2 * m * n * k / ours_s / 1e9
            records.append(Record("int8_linear", f"{m}x{k}x{n}", ours_s, ref_name, ref_s,
                                  {"gops": gops, "peak_pct": 100 * gops / peak if peak else None,
                                   "max_rel_error": float(error)}))
    print_table(f"Dynamic int8 Linear ({kernels.int8_gemm_kernel_name()}, {kernels.get_num_threads()} "
                f"threads, measured int8 peak {peak:.0f} GOP/s)", records, [
        ("m x k x n", lambda r: r.case), ("reference", lambda r: r.ref),
        ("ours ms", lambda r: r.ours_s * 1e3), ("ref ms", lambda r: r.ref_s * 1e3),
        ("ratio", lambda r: r.ratio), ("GOP/s", lambda r: r.extra["gops"]),
        ("% int8 peak", lambda r: r.extra["peak_pct"]),
    ])
    return records
