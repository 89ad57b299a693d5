// csrc/cuda/reduce.cu compiled by the host compiler for pyrt._cuda_emulator.
#include "cuda/reduce.cu"
