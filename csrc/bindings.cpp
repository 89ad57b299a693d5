// pyrt._C: the CPU compute kernels, bound for Python.
//
// This file only checks arguments and releases the GIL; the math lives in
// csrc/cpu/. Users never import _C: pyrt.kernels validates inputs with
// messages that name shapes and dtypes, then calls in here. The checks below
// are a second line of defence so a bad call can never reach the kernels.
#include <omp.h>
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <stdexcept>
#include <string>

#include "cpu/cpu_features.h"
#include "cpu/gemm.h"
#include "cpu/peak.h"

namespace py = pybind11;

namespace {

// Element strides of a 2-D float32 array (numpy reports strides in bytes).
struct Strides2D {
  int64_t rows;
  int64_t cols;
};

Strides2D element_strides(const py::array& x, const char* name) {
  if (x.ndim() != 2) {
    throw std::invalid_argument(std::string(name) + " must be 2-D, got " +
                                std::to_string(x.ndim()) + "-D");
  }
  if (!py::isinstance<py::array_t<float>>(x) || x.itemsize() != sizeof(float)) {
    throw std::invalid_argument(std::string(name) + " must be float32");
  }
  for (int d = 0; d < 2; ++d) {
    if (x.strides(d) % static_cast<py::ssize_t>(sizeof(float)) != 0) {
      throw std::invalid_argument(std::string(name) + " has a stride that is not a multiple of 4 bytes");
    }
  }
  return {x.strides(0) / static_cast<int64_t>(sizeof(float)),
          x.strides(1) / static_cast<int64_t>(sizeof(float))};
}

// c = alpha * a @ b + beta * c; a is (m, k), b is (k, n), c is (m, n), any strides.
void sgemm(const py::array& a, const py::array& b, py::array c, float alpha, float beta) {
  const Strides2D sa = element_strides(a, "a");
  const Strides2D sb = element_strides(b, "b");
  const Strides2D sc = element_strides(c, "c");
  const int64_t m = a.shape(0), k = a.shape(1), n = b.shape(1);
  if (b.shape(0) != k || c.shape(0) != m || c.shape(1) != n) {
    throw std::invalid_argument("sgemm: shapes do not agree");
  }
  if (!c.writeable()) {
    throw std::invalid_argument("sgemm: c is read-only");
  }
  const auto* pa = static_cast<const float*>(a.data());
  const auto* pb = static_cast<const float*>(b.data());
  auto* pc = static_cast<float*>(c.mutable_data());
  py::gil_scoped_release release;
  pyrt::cpu::sgemm(m, n, k, alpha, pa, sa.rows, sa.cols, pb, sb.rows, sb.cols, beta, pc,
                   sc.rows, sc.cols);
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "pyrt CPU kernels (private: use pyrt.kernels)";

  m.def("sgemm", &sgemm, py::arg("a"), py::arg("b"), py::arg("c"), py::arg("alpha") = 1.0f,
        py::arg("beta") = 0.0f,
        "c = alpha * a @ b + beta * c for 2-D float32 arrays of any strides");
  m.def("sgemm_kernel_name", &pyrt::cpu::sgemm_kernel_name);
  m.def("has_avx2_fma", &pyrt::cpu::has_avx2_fma);
  m.def("measure_fp32_peak_gflops", []() {
    py::gil_scoped_release release;
    return pyrt::cpu::measure_fp32_peak_gflops();
  });
  m.def("measure_int8_peak_gops", []() {
    py::gil_scoped_release release;
    return pyrt::cpu::measure_int8_peak_gops();
  });
  m.def("set_num_threads", [](int n) { omp_set_num_threads(n); }, py::arg("n"));
  m.def("get_num_threads", []() { return omp_get_max_threads(); });
}
