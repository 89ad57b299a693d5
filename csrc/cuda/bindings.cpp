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
#include "cuda/qgemm.h"
#include "cuda/reduce.h"
#include "cuda/spmm.h"

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

void check_size(int64_t value, const char* name, const char* fn = "sgemm") {
  if (value < 0) {
    throw std::invalid_argument(std::string(fn) + ": " + name + " = " + std::to_string(value) +
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

// c = alpha * A @ b + beta * c for A (m, k) in CSR with int32 indptr (m+1,)
// and indices (nnz,), float32 values (nnz,); b is (k, n) with row stride ldb,
// c is (m, n) with row stride ldc, both with unit column stride.
void spmm(int64_t m, int64_t n, int64_t k, float alpha, uintptr_t indptr, uintptr_t indices,
          uintptr_t values, uintptr_t b, int64_t ldb, float beta, uintptr_t c, int64_t ldc,
          uintptr_t stream) {
  check_size(m, "m", "spmm");
  check_size(n, "n", "spmm");
  check_size(k, "k", "spmm");
  if (m > 0 && n > 0 && (ldb < n || ldc < n)) {
    throw std::invalid_argument("spmm: row strides ldb = " + std::to_string(ldb) + " and ldc = " +
                                std::to_string(ldc) + " must be >= n = " + std::to_string(n));
  }
  cudaError_t err;
  {
    py::gil_scoped_release release;
    err = pyrt::cuda::spmm_csr(m, n, k, alpha, reinterpret_cast<const int32_t*>(indptr),
                               reinterpret_cast<const int32_t*>(indices),
                               reinterpret_cast<const float*>(values), reinterpret_cast<const float*>(b),
                               ldb, beta, reinterpret_cast<float*>(c), ldc,
                               reinterpret_cast<cudaStream_t>(stream));
  }
  raise_on_error(err, "spmm");
}

std::string spmm_path(int64_t n, uintptr_t b, int64_t ldb, uintptr_t c, int64_t ldc) {
  return pyrt::cuda::spmm_path(n, reinterpret_cast<const float*>(b), ldb, reinterpret_cast<const float*>(c),
                               ldc);
}

pyrt::cuda::ReduceOp parse_op(const std::string& op) {
  if (op == "sum") return pyrt::cuda::ReduceOp::kSum;
  if (op == "prod") return pyrt::cuda::ReduceOp::kProd;
  if (op == "max") return pyrt::cuda::ReduceOp::kMax;
  if (op == "min") return pyrt::cuda::ReduceOp::kMin;
  throw std::invalid_argument("reduce_inplace: op must be 'sum', 'prod', 'max' or 'min', got '" + op + "'");
}

// dst = op(dst, src) element-wise on (count,) device arrays of dtype
// float32, float64, int32 or int64 (numpy's dtype names).
void reduce_inplace(uintptr_t dst, uintptr_t src, int64_t count, const std::string& dtype,
                    const std::string& op_name, uintptr_t stream_ptr) {
  check_size(count, "count", "reduce_inplace");
  const pyrt::cuda::ReduceOp op = parse_op(op_name);
  const auto stream = reinterpret_cast<cudaStream_t>(stream_ptr);
  cudaError_t err;
  if (dtype == "float32") {
    py::gil_scoped_release release;
    err = pyrt::cuda::reduce_inplace(reinterpret_cast<float*>(dst), reinterpret_cast<const float*>(src), count,
                                     op, stream);
  } else if (dtype == "float64") {
    py::gil_scoped_release release;
    err = pyrt::cuda::reduce_inplace(reinterpret_cast<double*>(dst), reinterpret_cast<const double*>(src),
                                     count, op, stream);
  } else if (dtype == "int32") {
    py::gil_scoped_release release;
    err = pyrt::cuda::reduce_inplace(reinterpret_cast<int32_t*>(dst), reinterpret_cast<const int32_t*>(src),
                                     count, op, stream);
  } else if (dtype == "int64") {
    py::gil_scoped_release release;
    err = pyrt::cuda::reduce_inplace(reinterpret_cast<int64_t*>(dst), reinterpret_cast<const int64_t*>(src),
                                     count, op, stream);
  } else {
    throw std::invalid_argument("reduce_inplace: dtype must be float32, float64, int32 or int64, got " + dtype);
  }
  raise_on_error(err, "reduce_inplace");
}

py::tuple reduce_plan(uintptr_t dst, uintptr_t src, int64_t count, int64_t itemsize) {
  const pyrt::cuda::ReducePlan plan = pyrt::cuda::reduce_plan(
      reinterpret_cast<const void*>(dst), reinterpret_cast<const void*>(src), count, itemsize);
  return py::make_tuple(plan.head, plan.packs);
}

// --- int8 GEMM for dynamic quantization (csrc/cuda/qgemm.cu) ---------------------------

// row_sums[j] = sum_p w[j, p]; w is (n, k) int8 with row stride ldw, row_sums (n,) int32.
void int8_row_sums(int64_t n, int64_t k, uintptr_t w, int64_t ldw, uintptr_t row_sums,
                   uintptr_t stream) {
  check_size(n, "n", "int8_row_sums");
  check_size(k, "k", "int8_row_sums");
  cudaError_t err;
  {
    py::gil_scoped_release release;
    err = pyrt::cuda::int8_row_sums(n, k, reinterpret_cast<const int8_t*>(w), ldw,
                                    reinterpret_cast<int32_t*>(row_sums),
                                    reinterpret_cast<cudaStream_t>(stream));
  }
  raise_on_error(err, "int8_row_sums");
}

// x (m, k) float32 with element strides (rsx, csx) -> out (m, k) uint8 with row
// stride rso; the parameters land in workspace (quantize_u8_workspace_words int32).
void quantize_u8(int64_t m, int64_t k, uintptr_t x, int64_t rsx, int64_t csx, uintptr_t out,
                 int64_t rso, uintptr_t workspace, uintptr_t stream) {
  check_size(m, "m", "quantize_u8");
  check_size(k, "k", "quantize_u8");
  cudaError_t err;
  {
    py::gil_scoped_release release;
    err = pyrt::cuda::quantize_u8(m, k, reinterpret_cast<const float*>(x), rsx, csx,
                                  reinterpret_cast<uint8_t*>(out), rso,
                                  reinterpret_cast<int32_t*>(workspace),
                                  reinterpret_cast<cudaStream_t>(stream));
  }
  raise_on_error(err, "quantize_u8");
}

// out (m, n) = a_scale * w_scale * ((a - a_zero_point) @ w.T) + bias; a_params_ptr,
// when not 0, is a quantize_u8 workspace whose parameters replace a_scale and
// a_zero_point; bias_ptr 0 means no bias.
void int8_gemm(int64_t m, int64_t n, int64_t k, uintptr_t a, int64_t lda, float a_scale,
               int32_t a_zero_point, uintptr_t a_params, uintptr_t w, int64_t ldw,
               uintptr_t row_sums, uintptr_t w_scale, uintptr_t bias, uintptr_t out, int64_t ldo,
               uintptr_t stream) {
  check_size(m, "m", "int8_gemm");
  check_size(n, "n", "int8_gemm");
  check_size(k, "k", "int8_gemm");
  if (k > pyrt::cuda::kInt8GemmMaxK) {
    throw std::invalid_argument("int8_gemm: k = " + std::to_string(k) + " exceeds kInt8GemmMaxK = " +
                                std::to_string(pyrt::cuda::kInt8GemmMaxK) +
                                " (int32 accumulators could overflow)");
  }
  if (a_params == 0 && (a_zero_point < 0 || a_zero_point > pyrt::cuda::kActivationQmax)) {
    throw std::invalid_argument("int8_gemm: a_zero_point = " + std::to_string(a_zero_point) +
                                " is outside [0, 127]");
  }
  cudaError_t err;
  {
    py::gil_scoped_release release;
    err = pyrt::cuda::int8_gemm(
        m, n, k, reinterpret_cast<const uint8_t*>(a), lda, a_scale, a_zero_point,
        reinterpret_cast<const pyrt::cuda::QuantParams*>(a_params),
        reinterpret_cast<const int8_t*>(w), ldw, reinterpret_cast<const int32_t*>(row_sums),
        reinterpret_cast<const float*>(w_scale), reinterpret_cast<const float*>(bias),
        reinterpret_cast<float*>(out), ldo, reinterpret_cast<cudaStream_t>(stream));
  }
  raise_on_error(err, "int8_gemm");
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
  m.def("spmm", &spmm, py::arg("m"), py::arg("n"), py::arg("k"), py::arg("alpha"), py::arg("indptr_ptr"),
        py::arg("indices_ptr"), py::arg("values_ptr"), py::arg("b_ptr"), py::arg("ldb"), py::arg("beta"),
        py::arg("c_ptr"), py::arg("ldc"), py::arg("stream_ptr") = 0,
        "c = alpha * A @ b + beta * c for A (m, k) in CSR (int32 indptr/indices, float32 values)\n"
        "and b (k, n) / c (m, n) float32 with row strides ldb / ldc, on device pointers.");
  m.def("spmm_path", &spmm_path, py::arg("n"), py::arg("b_ptr"), py::arg("ldb"), py::arg("c_ptr"),
        py::arg("ldc"), "Which column mapping spmm takes for these arguments: vec4x2, vec4 or scalar.");
  m.def("reduce_inplace", &reduce_inplace, py::arg("dst_ptr"), py::arg("src_ptr"), py::arg("count"),
        py::arg("dtype"), py::arg("op"), py::arg("stream_ptr") = 0,
        "dst = op(dst, src) element-wise; dtype float32/float64/int32/int64, op sum/prod/max/min.");
  m.def("reduce_plan", &reduce_plan, py::arg("dst_ptr"), py::arg("src_ptr"), py::arg("count"),
        py::arg("itemsize"), "(head, packs): how reduce_inplace splits the elements into loose ones and 16-byte vectors.");
  m.def("int8_row_sums", &int8_row_sums, py::arg("n"), py::arg("k"), py::arg("w_ptr"), py::arg("ldw"),
        py::arg("row_sums_ptr"), py::arg("stream_ptr") = 0,
        "row_sums[j] = sum_p w[j, p] for int8 w (n, k) with row stride ldw, into int32 (n,).");
  m.def("quantize_u8", &quantize_u8, py::arg("m"), py::arg("k"), py::arg("x_ptr"), py::arg("rsx"),
        py::arg("csx"), py::arg("out_ptr"), py::arg("rso"), py::arg("workspace_ptr"),
        py::arg("stream_ptr") = 0,
        "Dynamic per-tensor quantization of float32 x (m, k) to uint8 codes in [0, 127] (the CPU's\n"
        "parameters); workspace_ptr: quantize_u8_workspace_words int32, whose first 4 words become\n"
        "(scale as float32, zero_point, 1 / scale as float32, finite).");
  m.def("int8_gemm", &int8_gemm, py::arg("m"), py::arg("n"), py::arg("k"), py::arg("a_ptr"),
        py::arg("lda"), py::arg("a_scale"), py::arg("a_zero_point"), py::arg("a_params_ptr"),
        py::arg("w_ptr"), py::arg("ldw"), py::arg("row_sums_ptr"), py::arg("w_scale_ptr"),
        py::arg("bias_ptr"), py::arg("out_ptr"), py::arg("ldo"), py::arg("stream_ptr") = 0,
        "out = a_scale * w_scale * ((a - a_zero_point) @ w.T) + bias with int32 accumulation on\n"
        "tensor cores; a uint8 (m, k), w int8 (n, k), out float32 (m, n), unit column strides.");
  m.attr("quantize_u8_workspace_words") = pyrt::cuda::kQuantizeWorkspaceWords;
  m.attr("int8_gemm_max_k") = pyrt::cuda::kInt8GemmMaxK;
  m.def("device_count", &device_count, "Number of visible CUDA devices; 0 without driver or GPU.");
  m.def("synchronize", &synchronize,
        "Wait for all work on the current device; raises RuntimeError on a CUDA error.");
#ifdef PYRT_SIMT_EMULATION
  register_selftests(m);
#endif
}
