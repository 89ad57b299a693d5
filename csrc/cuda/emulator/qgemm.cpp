// csrc/cuda/qgemm.cu compiled by the host compiler for pyrt._cuda_emulator.
#include "cuda/qgemm.cu"
