// Fused LSTM cell, forward and backward (see lstm.h for the equations).
//
// The cost of an LSTM step outside its GEMM is the transcendental functions:
// numpy's float32 exp and tanh run one element at a time (3.5 and 7.5 ns per
// element measured here). The AVX2 path evaluates exp eight lanes at a time
// with the Cephes polynomial (relative error ~1e-7 over the float range) and
// builds sigmoid(x) = 1 / (1 + exp(-x)) and tanh(x) = 2 sigmoid(2x) - 1 from it;
// the portable path uses std::exp on the same formulas.
//
// Rows of the batch are independent, so OpenMP splits them when a step has
// enough elements to pay for waking the threads.
#include "cpu/lstm.h"

#include <cmath>

#include "cpu/cpu_features.h"
#include "cpu/threads.h"

namespace pyrt::cpu {

namespace {

// ~8K elements take ~10 us here; an OpenMP fork costs a few.
constexpr int64_t kMinElementsForThreads = 8192;

float sigmoid_scalar(float x) { return 1.0f / (1.0f + std::exp(-x)); }
float tanh_scalar(float x) { return 2.0f * sigmoid_scalar(2.0f * x) - 1.0f; }

#ifdef PYRT_HAVE_X86
__attribute__((target("avx2,fma"))) inline __m256 exp_avx2(__m256 x) {
  // exp(x) = 2^n * exp(r), n = round(x / ln 2), r = x - n ln 2 in [-ln2/2, ln2/2],
  // with ln 2 split in two so r is exact; exp(r) by a degree-5 polynomial.
  x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-87.3f)), _mm256_set1_ps(88.3f));
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
  __m256 p = _mm256_set1_ps(1.9875691500e-4f);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
  p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
  const __m256i exponent = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(p, _mm256_castsi256_ps(exponent));
}

__attribute__((target("avx2,fma"))) inline __m256 sigmoid_avx2(__m256 x) {
  const __m256 one = _mm256_set1_ps(1.0f);
  return _mm256_div_ps(one, _mm256_add_ps(one, exp_avx2(_mm256_sub_ps(_mm256_setzero_ps(), x))));
}

__attribute__((target("avx2,fma"))) inline __m256 tanh_avx2(__m256 x) {
  const __m256 two = _mm256_set1_ps(2.0f);
  return _mm256_fmsub_ps(two, sigmoid_avx2(_mm256_mul_ps(two, x)), _mm256_set1_ps(1.0f));
}

// One row of the forward; returns the first column it did not handle.
__attribute__((target("avx2,fma"))) int64_t forward_row_avx2(float* a, const float* c_prev, float* c,
                                                             float* tanh_c, float* h, int64_t hidden) {
  int64_t j = 0;
  for (; j + 8 <= hidden; j += 8) {
    const __m256 i = sigmoid_avx2(_mm256_loadu_ps(a + j));
    const __m256 f = sigmoid_avx2(_mm256_loadu_ps(a + hidden + j));
    const __m256 g = tanh_avx2(_mm256_loadu_ps(a + 2 * hidden + j));
    const __m256 o = sigmoid_avx2(_mm256_loadu_ps(a + 3 * hidden + j));
    const __m256 cell = _mm256_fmadd_ps(f, _mm256_loadu_ps(c_prev + j), _mm256_mul_ps(i, g));
    const __m256 tc = tanh_avx2(cell);
    _mm256_storeu_ps(a + j, i);
    _mm256_storeu_ps(a + hidden + j, f);
    _mm256_storeu_ps(a + 2 * hidden + j, g);
    _mm256_storeu_ps(a + 3 * hidden + j, o);
    _mm256_storeu_ps(c + j, cell);
    _mm256_storeu_ps(tanh_c + j, tc);
    _mm256_storeu_ps(h + j, _mm256_mul_ps(o, tc));
  }
  return j;
}
#endif

void forward_row(float* a, const float* c_prev, float* c, float* tanh_c, float* h, int64_t hidden,
                 bool avx2) {
  int64_t j = 0;
#ifdef PYRT_HAVE_X86
  if (avx2) j = forward_row_avx2(a, c_prev, c, tanh_c, h, hidden);
#else
  (void)avx2;
#endif
  for (; j < hidden; ++j) {
    const float i = sigmoid_scalar(a[j]), f = sigmoid_scalar(a[hidden + j]);
    const float g = tanh_scalar(a[2 * hidden + j]), o = sigmoid_scalar(a[3 * hidden + j]);
    a[j] = i;
    a[hidden + j] = f;
    a[2 * hidden + j] = g;
    a[3 * hidden + j] = o;
    c[j] = f * c_prev[j] + i * g;
    tanh_c[j] = tanh_scalar(c[j]);
    h[j] = o * tanh_c[j];
  }
}

// Backward is polynomial in the saved activations: plain loops vectorize.
void backward_row(const float* a, const float* c_prev, const float* tanh_c, const float* grad_h,
                  const float* grad_h_next, float* grad_c, float* d, int64_t hidden) {
  for (int64_t j = 0; j < hidden; ++j) {
    const float i = a[j], f = a[hidden + j], g = a[2 * hidden + j], o = a[3 * hidden + j];
    const float dh = grad_h_next != nullptr ? grad_h[j] + grad_h_next[j] : grad_h[j];
    const float tc = tanh_c[j];
    const float dc = grad_c[j] + dh * o * (1.0f - tc * tc);
    d[j] = dc * g * i * (1.0f - i);
    d[hidden + j] = dc * c_prev[j] * f * (1.0f - f);
    d[2 * hidden + j] = dc * i * (1.0f - g * g);
    d[3 * hidden + j] = dh * tc * o * (1.0f - o);
    grad_c[j] = dc * f;
  }
}


}  // namespace

void lstm_cell_forward(float* gates, const float* c_prev, float* c, float* tanh_c, float* h,
                       int64_t batch, int64_t hidden) {
  const bool avx2 = has_avx2_fma();
#pragma omp parallel for schedule(static) num_threads(threads_for(batch * 4 * hidden, kMinElementsForThreads))
  for (int64_t b = 0; b < batch; ++b) {
    forward_row(gates + b * 4 * hidden, c_prev + b * hidden, c + b * hidden, tanh_c + b * hidden,
                h + b * hidden, hidden, avx2);
  }
}

void lstm_cell_backward(const float* gates, const float* c_prev, const float* tanh_c,
                        const float* grad_h, const float* grad_h_next, float* grad_c,
                        float* grad_gates, int64_t batch, int64_t hidden) {
#pragma omp parallel for schedule(static) num_threads(threads_for(batch * 4 * hidden, kMinElementsForThreads))
  for (int64_t b = 0; b < batch; ++b) {
    backward_row(gates + b * 4 * hidden, c_prev + b * hidden, tanh_c + b * hidden, grad_h + b * hidden,
                 grad_h_next != nullptr ? grad_h_next + b * hidden : nullptr, grad_c + b * hidden,
                 grad_gates + b * 4 * hidden, hidden);
  }
}

}  // namespace pyrt::cpu
