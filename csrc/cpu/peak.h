// Measured compute peaks of this CPU, the denominators of the benchmarks'
// "percent of peak" columns: measured rather than computed from a clock speed
// that a virtual machine does not reliably report.
#pragma once

namespace pyrt::cpu {

// fp32 multiply-add throughput of all OpenMP threads, in GFLOP/s (2 flops per FMA lane).
double measure_fp32_peak_gflops();

// u8 x s8 -> s32 multiply-add throughput (vpmaddubsw + vpmaddwd + vpaddd, the
// int8 GEMM's inner sequence) of all threads, in GOP/s (2 ops per multiply-add).
double measure_int8_peak_gops();

}  // namespace pyrt::cpu
