// pyrt._cuda: the CUDA kernels, bound for Python.
//
// This file only converts arguments, releases the GIL and turns CUDA error
// codes into Python exceptions; the math lives in csrc/cuda/. Users never
// import _cuda: pyrt.kernels checks shapes, dtypes and devices of cupy arrays
// and passes raw device pointers (x.data.ptr) and the current stream in here.
//
// The module links cudart statically, so it imports on machines with no
// driver or no GPU; there every call that needs the device raises
// RuntimeError (e.g. cudaErrorInsufficientDriver (35)) and device_count()
// is 0. Device pointers are never dereferenced on the host, so a call that
// cannot launch cannot crash.
//
// The same file, built by the host compiler with PYRT_SIMT_EMULATION, is
// pyrt._cuda_emulator: identical functions running the kernels' own source
// on the CPU (csrc/cuda/emulator/simt.h), with host pointers in place of
// device pointers. PYRT_CUDA_MODULE names the module being built.
#include <pybind11/pybind11.h>

#include <cstdint>
#include <stdexcept>
#include <string>

#include "cuda/gemm.h"

namespace py = pybind11;

#ifdef PYRT_SIMT_EMULATION
void register_selftests(py::module_& m);  // csrc/cuda/emulator/selftest.cpp
#endif

namespace {

// "sgemm: CUDA error cudaErrorNoDevice (100): no CUDA-capable device is detected"
void raise_on_error(cudaError_t err, const char* what) {
  if (err == cudaSuccess) return;
  throw std::runtime_error(std::string(what) + ": CUDA error " + cudaGetErrorName(err) + " (" +
                           std::to_string(static_cast<int>(err)) + "): " +
                           cudaGetErrorString(err));
}

void check_size(int64_t value, const char* name) {
  if (value < 0) {
    throw std::invalid_argument(std::string("sgemm: ") + name + " = " + std::to_string(value) +
                                " is negative");
  }
}

// c = alpha * a @ b + beta * c on device memory; a is (m, k), b is (k, n),
// c is (m, n), each with element strides (rows, columns).
void sgemm(int64_t m, int64_t n, int64_t k, float alpha, uintptr_t a, int64_t rsa, int64_t csa,
           uintptr_t b, int64_t rsb, int64_t csb, float beta, uintptr_t c, int64_t rsc,
           int64_t csc, uintptr_t stream) {
  check_size(m, "m");
  check_size(n, "n");
  check_size(k, "k");
  cudaError_t err;
  {
    py::gil_scoped_release release;
    err = pyrt::cuda::sgemm(m, n, k, alpha, reinterpret_cast<const float*>(a), rsa, csa,
                            reinterpret_cast<const float*>(b), rsb, csb, beta,
                            reinterpret_cast<float*>(c), rsc, csc,
                            reinterpret_cast<cudaStream_t>(stream));
  }
  raise_on_error(err, "sgemm");
}

// Number of visible GPUs; 0 when there is no driver or no device.
int device_count() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    cudaGetLastError();  // clear it, so the next launch reports its own status
    return 0;
  }
  return count;
}

void synchronize() {
  cudaError_t err;
  {
    py::gil_scoped_release release;
    err = cudaDeviceSynchronize();
  }
  raise_on_error(err, "synchronize");
}

}  // namespace

PYBIND11_MODULE(PYRT_CUDA_MODULE, m) {
  m.doc() = "pyrt CUDA kernels (private: use pyrt.kernels)";

  m.def("sgemm", &sgemm, py::arg("m"), py::arg("n"), py::arg("k"), py::arg("alpha"),
        py::arg("a_ptr"), py::arg("rsa"), py::arg("csa"), py::arg("b_ptr"), py::arg("rsb"),
        py::arg("csb"), py::arg("beta"), py::arg("c_ptr"), py::arg("rsc"), py::arg("csc"),
        py::arg("stream_ptr") = 0,
        "c = alpha * a @ b + beta * c on device pointers (Python ints) with element strides,\n"
        "queued on stream_ptr (0: the legacy default stream). Raises RuntimeError when\n"
        "the launch fails, e.g. with no GPU or driver.");
  m.def("device_count", &device_count, "Number of visible CUDA devices; 0 without driver or GPU.");
  m.def("synchronize", &synchronize,
        "Wait for all work on the current device; raises RuntimeError on a CUDA error.");
#ifdef PYRT_SIMT_EMULATION
  register_selftests(m);
#endif
}
