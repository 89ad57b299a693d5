// csrc/cuda/gemm.cu compiled by the host compiler for pyrt._cuda_emulator.
#include "cuda/gemm.cu"
