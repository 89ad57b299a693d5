// pyrt._C: the CPU compute kernels, bound for Python.
//
// This file only checks arguments and releases the GIL; the math lives in
// csrc/cpu/. Users never import _C: pyrt.kernels validates inputs with
// messages that name shapes and dtypes, then calls in here. The checks below
// are a second line of defence so a bad call can never reach the kernels.
#include <omp.h>
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <pybind11/stl.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>

#include "cpu/cpu_features.h"
#include "cpu/gemm.h"
#include "cpu/peak.h"
#include "cpu/lstm.h"
#include "cpu/optim.h"
#include "cpu/qgemm.h"
#include "cpu/reduce.h"
#include "cpu/spmm.h"

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

// Row stride in elements of a 2-D array whose columns are contiguous
// (numpy reports strides (0, 0) for an empty array: nothing to check then).
int64_t row_stride(const py::array& x, const char* fn, const char* name) {
  if (x.size() == 0) return x.shape(1);  // numpy may report strides (0, 0): nothing is read
  if (x.shape(1) > 1 && x.strides(1) != x.itemsize()) {
    throw std::invalid_argument(std::string(fn) + ": " + name + " must have contiguous rows");
  }
  if (x.shape(0) > 1 && (x.strides(0) % x.itemsize() != 0 || x.strides(0) < x.shape(1) * x.itemsize())) {
    throw std::invalid_argument(std::string(fn) + ": " + name + " has an unusable row stride");
  }
  return x.shape(0) > 1 ? x.strides(0) / x.itemsize() : x.shape(1);
}

void check_2d(const py::array& x, const char* fn, const char* name) {
  if (x.ndim() != 2) {
    throw std::invalid_argument(std::string(fn) + ": " + name + " must be 2-D, got " +
                                std::to_string(x.ndim()) + "-D");
  }
}

std::unique_ptr<pyrt::cpu::PackedInt8Weight> pack_int8_weight(const py::array& w) {
  check_2d(w, "pack_int8_weight", "w");
  if (!py::isinstance<py::array_t<int8_t>>(w)) {
    throw std::invalid_argument("pack_int8_weight: w must be int8");
  }
  const auto* pw = static_cast<const int8_t*>(w.data());
  const int64_t n = w.shape(0), k = w.shape(1), rs = w.strides(0), cs = w.strides(1);
  py::gil_scoped_release release;
  return std::make_unique<pyrt::cpu::PackedInt8Weight>(pw, n, k, rs, cs);
}

// Returns (q, scale, zero_point); q is a new (m, k) uint8 array in [0, 127].
py::tuple quantize_u8(const py::array& x) {
  const Strides2D sx = element_strides(x, "x");
  const int64_t m = x.shape(0), k = x.shape(1);
  py::array_t<uint8_t> q({m, k});
  const auto* px = static_cast<const float*>(x.data());
  auto* pq = q.mutable_data();
  float scale = 0.0f;
  int32_t zero_point = 0;
  {
    py::gil_scoped_release release;
    pyrt::cpu::quantize_u8(px, m, k, sx.rows, sx.cols, pq, k, &scale, &zero_point);
  }
  return py::make_tuple(q, scale, zero_point);
}

// out = a_scale * w_scale * ((a - a_zero_point) @ w^T) + bias, written into out (m, n) float32.
void int8_gemm(const py::array& a, float a_scale, int32_t a_zero_point,
               const pyrt::cpu::PackedInt8Weight& w, const py::array& w_scales,
               const std::optional<py::array>& bias, py::array out) {
  check_2d(a, "int8_gemm", "a");
  check_2d(out, "int8_gemm", "out");
  if (!py::isinstance<py::array_t<uint8_t>>(a)) throw std::invalid_argument("int8_gemm: a must be uint8");
  if (!py::isinstance<py::array_t<float>>(out)) throw std::invalid_argument("int8_gemm: out must be float32");
  if (!out.writeable()) throw std::invalid_argument("int8_gemm: out is read-only");
  const int64_t m = a.shape(0), n = w.n(), k = w.k();
  if (a.shape(1) != k || out.shape(0) != m || out.shape(1) != n) {
    throw std::invalid_argument("int8_gemm: a is (" + std::to_string(m) + ", " +
                                std::to_string(a.shape(1)) + "), packed weight is (" +
                                std::to_string(n) + ", " + std::to_string(k) + "), out is (" +
                                std::to_string(out.shape(0)) + ", " + std::to_string(out.shape(1)) + ")");
  }
  const auto vector_of_n = [n](const py::array& v, const char* name) {
    if (!py::isinstance<py::array_t<float>>(v) || v.ndim() != 1 || v.shape(0) != n ||
        (n > 1 && v.strides(0) != static_cast<py::ssize_t>(sizeof(float)))) {
      throw std::invalid_argument(std::string("int8_gemm: ") + name +
                                  " must be a contiguous float32 vector of length " + std::to_string(n));
    }
    return static_cast<const float*>(v.data());
  };
  const float* ps = vector_of_n(w_scales, "w_scales");
  const float* pb = bias ? vector_of_n(*bias, "bias") : nullptr;
  const int64_t lda = row_stride(a, "int8_gemm", "a");
  const int64_t ldo = row_stride(out, "int8_gemm", "out");
  const auto* pa = static_cast<const uint8_t*>(a.data());
  auto* po = static_cast<float*>(out.mutable_data());
  py::gil_scoped_release release;
  pyrt::cpu::int8_gemm(m, pa, lda, a_scale, a_zero_point, w, ps, pb, po, ldo);
}


// --- CSR SpMM -------------------------------------------------------------------
using I64Array = py::array_t<int64_t, py::array::c_style>;  // no forcecast: a wrong dtype raises
using F32Array = py::array_t<float, py::array::c_style>;

void check_1d(const py::array& x, const char* fn, const char* name) {
  if (x.ndim() != 1) {
    throw std::invalid_argument(std::string(fn) + ": " + name + " must be 1-D, got " +
                                std::to_string(x.ndim()) + "-D");
  }
}

// "" when (indptr, indices) is a valid CSR structure of k columns, else what is wrong.
std::string validate_csr(const I64Array& indptr, const I64Array& indices, int64_t k) {
  check_1d(indptr, "validate_csr", "indptr");
  check_1d(indices, "validate_csr", "indices");
  if (indptr.shape(0) < 1) return "indptr is empty; it needs m + 1 entries";
  const int64_t m = indptr.shape(0) - 1, nnz = indices.shape(0);
  const int64_t* p = indptr.data();
  const int64_t* ix = indices.data();
  py::gil_scoped_release release;
  return pyrt::cpu::validate_csr(m, k, p, m + 1, ix, nnz);
}

// out = alpha * A @ b + beta * out (+ bias[:, None]) with A as CSR (m = len(indptr) - 1,
// k = b.shape[0]). The bias rides along because a layer's separate `out += bias` cost as much
// Python time as the whole batch-1 product.
void spmm(const I64Array& indptr, const I64Array& indices, const F32Array& values, const py::array& b,
          py::array out, float alpha, float beta, const std::optional<F32Array>& bias) {
  check_1d(indptr, "spmm", "indptr");
  check_1d(indices, "spmm", "indices");
  check_1d(values, "spmm", "values");
  check_2d(b, "spmm", "b");
  check_2d(out, "spmm", "out");
  if (!py::isinstance<py::array_t<float>>(b) || !py::isinstance<py::array_t<float>>(out)) {
    throw std::invalid_argument("spmm: b and out must be float32");
  }
  const int64_t m = indptr.shape(0) - 1, k = b.shape(0), n = b.shape(1);
  if (m < 0 || out.shape(0) != m || out.shape(1) != n || indices.shape(0) != values.shape(0)) {
    throw std::invalid_argument("spmm: shapes do not agree");
  }
  if (!out.writeable()) throw std::invalid_argument("spmm: out is read-only");
  if (bias && (bias->ndim() != 1 || bias->shape(0) != m)) {
    throw std::invalid_argument("spmm: bias must be a float32 vector of length m = " + std::to_string(m));
  }
  const int64_t ldb = row_stride(b, "spmm", "b"), ldc = row_stride(out, "spmm", "out");
  const int64_t* p = indptr.data();
  const int64_t* ix = indices.data();
  const float* v = values.data();
  const auto* pb = static_cast<const float*>(b.data());
  auto* pc = static_cast<float*>(out.mutable_data());
  const float* row_bias = bias ? bias->data() : nullptr;  // (m,)
  py::gil_scoped_release release;
  pyrt::cpu::spmm_csr(m, n, k, alpha, p, ix, v, pb, ldb, beta, pc, ldc);
  if (row_bias != nullptr) {
    for (int64_t i = 0; i < m; ++i) {
      float* row = pc + i * ldc;
      for (int64_t j = 0; j < n; ++j) row[j] += row_bias[i];
    }
  }
}

// --- reductions for collectives ------------------------------------------------------
pyrt::cpu::ReduceOp parse_op(const std::string& op) {
  if (op == "sum") return pyrt::cpu::ReduceOp::kSum;
  if (op == "max") return pyrt::cpu::ReduceOp::kMax;
  if (op == "min") return pyrt::cpu::ReduceOp::kMin;
  throw std::invalid_argument("reduce_inplace: op must be 'sum', 'max' or 'min', got '" + op + "'");
}

pyrt::cpu::Threading threading_of(bool single_thread) {
  return single_thread ? pyrt::cpu::Threading::kSingleThread : pyrt::cpu::Threading::kAuto;
}

template <typename T>
void reduce_typed(py::array& dst, const py::array& src, pyrt::cpu::ReduceOp op, bool single_thread) {
  T* d = static_cast<T*>(dst.mutable_data());
  const T* s = static_cast<const T*>(src.data());
  const int64_t count = dst.size();
  py::gil_scoped_release release;
  pyrt::cpu::reduce_inplace(d, s, count, op, threading_of(single_thread));
}

// dst = op(dst, src) element-wise; contiguous float32/float64 arrays of one size and dtype.
void reduce_inplace(py::array dst, const py::array& src, const std::string& op, bool single_thread) {
  const auto parsed = parse_op(op);
  if (!(dst.flags() & py::array::c_style) || !(src.flags() & py::array::c_style) || !dst.writeable()) {
    throw std::invalid_argument("reduce_inplace: dst and src must be C-contiguous, dst writeable");
  }
  if (dst.size() != src.size() || !dst.dtype().is(src.dtype())) {
    throw std::invalid_argument("reduce_inplace: dst and src differ in size or dtype");
  }
  if (py::isinstance<py::array_t<float>>(dst)) return reduce_typed<float>(dst, src, parsed, single_thread);
  if (py::isinstance<py::array_t<double>>(dst)) return reduce_typed<double>(dst, src, parsed, single_thread);
  throw std::invalid_argument("reduce_inplace: dtype must be float32 or float64");
}

// --- fused optimizer updates ----------------------------------------------------------
// Every array: float32, C-contiguous, the parameter's size; the updated ones writeable.
float* float32_buffer(const py::object& x, int64_t n, const char* fn, const char* name, bool writeable) {
  if (x.is_none()) return nullptr;
  auto array = py::cast<py::array>(x);
  if (!py::isinstance<py::array_t<float>>(array) || !(array.flags() & py::array::c_style) ||
      array.size() != n || (writeable && !array.writeable())) {
    throw std::invalid_argument(std::string(fn) + ": " + name + " must be a C-contiguous" +
                                (writeable ? ", writeable" : "") + " float32 array of " +
                                std::to_string(n) + " elements");
  }
  return static_cast<float*>(array.mutable_data());
}

void sgd_step(py::array p, const py::array& grad, const py::object& momentum_buffer, float lr,
              float momentum, float dampening, float weight_decay, bool nesterov, bool maximize,
              bool first_step) {
  const int64_t n = p.size();
  float* pp = float32_buffer(p, n, "sgd_step", "p", true);
  const float* pg = float32_buffer(grad, n, "sgd_step", "grad", false);
  float* pb = float32_buffer(momentum_buffer, n, "sgd_step", "momentum_buffer", true);
  if (momentum != 0.0f && pb == nullptr) throw std::invalid_argument("sgd_step: momentum needs a buffer");
  py::gil_scoped_release release;
  pyrt::cpu::sgd_step(pp, pg, pb, n, lr, momentum, dampening, weight_decay, nesterov, maximize, first_step);
}

void adam_step(py::array p, const py::array& grad, py::array exp_avg, py::array exp_avg_sq,
               const py::object& max_exp_avg_sq, float lr, float beta1, float beta2, float eps,
               float weight_decay, bool decoupled_weight_decay, bool maximize, int64_t step) {
  const int64_t n = p.size();
  float* pp = float32_buffer(p, n, "adam_step", "p", true);
  const float* pg = float32_buffer(grad, n, "adam_step", "grad", false);
  float* pm = float32_buffer(exp_avg, n, "adam_step", "exp_avg", true);
  float* pv = float32_buffer(exp_avg_sq, n, "adam_step", "exp_avg_sq", true);
  float* pmax = float32_buffer(max_exp_avg_sq, n, "adam_step", "max_exp_avg_sq", true);
  if (step < 1) throw std::invalid_argument("adam_step: step counts from 1");
  py::gil_scoped_release release;
  pyrt::cpu::adam_step(pp, pg, pm, pv, pmax, n, lr, beta1, beta2, eps, weight_decay, decoupled_weight_decay,
                       maximize, step);
}


// --- fused LSTM cell -----------------------------------------------------------------
void lstm_cell_forward(py::array gates, const py::array& c_prev, py::array c, py::array tanh_c,
                       py::array h) {
  const int64_t batch = c_prev.ndim() == 2 ? c_prev.shape(0) : -1;
  const int64_t hidden = c_prev.ndim() == 2 ? c_prev.shape(1) : -1;
  float* pg = float32_buffer(gates, batch * 4 * hidden, "lstm_cell_forward", "gates", true);
  const float* pcp = float32_buffer(c_prev, batch * hidden, "lstm_cell_forward", "c_prev", false);
  float* pc = float32_buffer(c, batch * hidden, "lstm_cell_forward", "c", true);
  float* pt = float32_buffer(tanh_c, batch * hidden, "lstm_cell_forward", "tanh_c", true);
  float* ph = float32_buffer(h, batch * hidden, "lstm_cell_forward", "h", true);
  py::gil_scoped_release release;
  pyrt::cpu::lstm_cell_forward(pg, pcp, pc, pt, ph, batch, hidden);
}

void lstm_cell_backward(const py::array& gates, const py::array& c_prev, const py::array& tanh_c,
                        const py::array& grad_h, const py::object& grad_h_next, py::array grad_c,
                        py::array grad_gates) {
  const int64_t batch = c_prev.ndim() == 2 ? c_prev.shape(0) : -1;
  const int64_t hidden = c_prev.ndim() == 2 ? c_prev.shape(1) : -1;
  const int64_t n = batch * hidden;
  const float* pg = float32_buffer(gates, 4 * n, "lstm_cell_backward", "gates", false);
  const float* pcp = float32_buffer(c_prev, n, "lstm_cell_backward", "c_prev", false);
  const float* pt = float32_buffer(tanh_c, n, "lstm_cell_backward", "tanh_c", false);
  const float* ph = float32_buffer(grad_h, n, "lstm_cell_backward", "grad_h", false);
  const float* phn = float32_buffer(grad_h_next, n, "lstm_cell_backward", "grad_h_next", false);
  float* pc = float32_buffer(grad_c, n, "lstm_cell_backward", "grad_c", true);
  float* pd = float32_buffer(grad_gates, 4 * n, "lstm_cell_backward", "grad_gates", true);
  py::gil_scoped_release release;
  pyrt::cpu::lstm_cell_backward(pg, pcp, pt, ph, phn, pc, pd, batch, hidden);
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "pyrt CPU kernels (private: use pyrt.kernels)";

  m.def("sgemm", &sgemm, py::arg("a"), py::arg("b"), py::arg("c"), py::arg("alpha") = 1.0f,
        py::arg("beta") = 0.0f,
        "c = alpha * a @ b + beta * c for 2-D float32 arrays of any strides");
  m.def("sgemm_kernel_name", &pyrt::cpu::sgemm_kernel_name);
  m.def("has_avx2_fma", &pyrt::cpu::has_avx2_fma);
py::class_<pyrt::cpu::PackedInt8Weight>(m, "PackedInt8Weight",
                                          "int8 (n, k) weights packed for int8_gemm")
      .def_property_readonly("n", &pyrt::cpu::PackedInt8Weight::n)
      .def_property_readonly("k", &pyrt::cpu::PackedInt8Weight::k)
      .def_property_readonly("nbytes", &pyrt::cpu::PackedInt8Weight::nbytes);
  m.def("pack_int8_weight", &pack_int8_weight, py::arg("w"),
        "Pack int8 (n, k) weights (nn.Linear layout) for int8_gemm");
  m.def("quantize_u8", &quantize_u8, py::arg("x"),
        "Dynamic per-tensor quantization of float32 (m, k) to 7-bit uint8: (q, scale, zero_point)");
  m.def("int8_gemm", &int8_gemm, py::arg("a"), py::arg("a_scale"), py::arg("a_zero_point"),
        py::arg("w"), py::arg("w_scales"), py::arg("bias"), py::arg("out"),
        "out = a_scale * w_scales * ((a - a_zero_point) @ w.T) + bias");
  m.def("int8_gemm_kernel_name", &pyrt::cpu::int8_gemm_kernel_name);

  m.def("spmm", &spmm, py::arg("indptr").noconvert(), py::arg("indices").noconvert(),
        py::arg("values").noconvert(), py::arg("b"), py::arg("out"), py::arg("alpha") = 1.0f,
        py::arg("beta") = 0.0f, py::arg("bias").noconvert() = py::none(),
        "out = alpha * csr @ b + beta * out + bias[:, None]");
  m.def("validate_csr", &validate_csr, py::arg("indptr").noconvert(), py::arg("indices").noconvert(),
        py::arg("k"), "'' when the CSR structure is valid, else what is wrong");
  m.def("spmm_kernel_name", &pyrt::cpu::spmm_kernel_name);
  m.def("reduce_inplace", &reduce_inplace, py::arg("dst"), py::arg("src"), py::arg("op"),
        py::arg("single_thread") = false, "dst = op(dst, src) element-wise");
  m.def("reduce_kernel_name", &pyrt::cpu::reduce_kernel_name);

  m.def("sgd_step", &sgd_step, py::arg("p"), py::arg("grad"), py::arg("momentum_buffer"), py::arg("lr"),
        py::arg("momentum"), py::arg("dampening"), py::arg("weight_decay"), py::arg("nesterov"),
        py::arg("maximize"), py::arg("first_step"), "fused SGD update, in place");
  m.def("adam_step", &adam_step, py::arg("p"), py::arg("grad"), py::arg("exp_avg"), py::arg("exp_avg_sq"),
        py::arg("max_exp_avg_sq"), py::arg("lr"), py::arg("beta1"), py::arg("beta2"), py::arg("eps"),
        py::arg("weight_decay"), py::arg("decoupled_weight_decay"), py::arg("maximize"), py::arg("step"),
        "fused Adam/AdamW update, in place");

  m.def("lstm_cell_forward", &lstm_cell_forward, py::arg("gates"), py::arg("c_prev"), py::arg("c"),
        py::arg("tanh_c"), py::arg("h"), "one LSTM step's gate activations and cell update, in place");
  m.def("lstm_cell_backward", &lstm_cell_backward, py::arg("gates"), py::arg("c_prev"), py::arg("tanh_c"),
        py::arg("grad_h"), py::arg("grad_h_next"), py::arg("grad_c"), py::arg("grad_gates"),
        "one LSTM step's backward through the gates and cell");

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
