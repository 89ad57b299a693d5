// csrc/cuda/spmm.cu compiled by the host compiler for pyrt._cuda_emulator.
#include "cuda/spmm.cu"
