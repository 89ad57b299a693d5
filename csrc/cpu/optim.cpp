// Fused SGD and Adam updates (see optim.h for the equations).
//
// Each update is memory-bound: it streams 3 to 5 arrays once. The loops are
// plain C++ that the compiler vectorizes; OpenMP splits them across threads
// above a size where waking the threads pays for itself, since one core
// cannot draw the full memory bandwidth.
#include "cpu/optim.h"

#include <cmath>

#include "cpu/threads.h"

namespace pyrt::cpu {

namespace {

// Below ~64K elements (256 KB per array) the update takes microseconds and an
// OpenMP fork would cost as much as it saves.
constexpr int64_t kMinElementsForThreads = 1 << 16;


}  // namespace

void sgd_step(float* p, const float* grad, float* momentum_buffer, int64_t n, float lr,
              float momentum, float dampening, float weight_decay, bool nesterov, bool maximize,
              bool first_step) {
  const float sign = maximize ? -1.0f : 1.0f;
  const float keep = 1.0f - dampening;
#pragma omp parallel for schedule(static) num_threads(threads_for(n, kMinElementsForThreads))
  for (int64_t i = 0; i < n; ++i) {
    float g = sign * grad[i] + weight_decay * p[i];
    if (momentum != 0.0f) {
      const float buf = first_step ? g : momentum * momentum_buffer[i] + keep * g;
      momentum_buffer[i] = buf;
      g = nesterov ? g + momentum * buf : buf;
    }
    p[i] -= lr * g;
  }
}

void adam_step(float* p, const float* grad, float* exp_avg, float* exp_avg_sq,
               float* max_exp_avg_sq, int64_t n, float lr, float beta1, float beta2, float eps,
               float weight_decay, bool decoupled_weight_decay, bool maximize, int64_t step) {
  const float sign = maximize ? -1.0f : 1.0f;
  // Bias corrections in double, as PyTorch computes them in Python floats.
  const auto bias_correction1 = static_cast<float>(1.0 - std::pow(static_cast<double>(beta1), step));
  const auto bias_correction2_sqrt =
      static_cast<float>(std::sqrt(1.0 - std::pow(static_cast<double>(beta2), step)));
  const float step_size = lr / bias_correction1;
  const float decay = decoupled_weight_decay ? 1.0f - lr * weight_decay : 1.0f;
  const float coupled = decoupled_weight_decay ? 0.0f : weight_decay;
#pragma omp parallel for schedule(static) num_threads(threads_for(n, kMinElementsForThreads))
  for (int64_t i = 0; i < n; ++i) {
    const float param = p[i] * decay;
    const float g = sign * grad[i] + coupled * param;
    const float m = beta1 * exp_avg[i] + (1.0f - beta1) * g;
    const float v = beta2 * exp_avg_sq[i] + (1.0f - beta2) * (g * g);
    exp_avg[i] = m;
    exp_avg_sq[i] = v;
    float second = v;
    if (max_exp_avg_sq != nullptr) {
      second = max_exp_avg_sq[i] > v ? max_exp_avg_sq[i] : v;
      max_exp_avg_sq[i] = second;
    }
    p[i] = param - step_size * (m / (std::sqrt(second) / bias_correction2_sqrt + eps));
  }
}

}  // namespace pyrt::cpu
