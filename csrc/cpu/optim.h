// Fused optimizer updates: one pass over each parameter instead of the five or
// six whole-array numpy expressions (and their temporaries) the same update
// takes in Python. PyTorch's update equations exactly, in float32.
#pragma once

#include <cstdint>

namespace pyrt::cpu {

// p, grad and momentum_buffer are (n,). momentum_buffer may be null when
// momentum == 0; on the first step (first_step) it is set to the gradient.
//   g   = (maximize ? -grad : grad) + weight_decay * p
//   buf = first_step ? g : momentum * buf + (1 - dampening) * g
//   g   = nesterov ? g + momentum * buf : buf          (when momentum != 0)
//   p  -= lr * g
void sgd_step(float* p, const float* grad, float* momentum_buffer, int64_t n, float lr,
              float momentum, float dampening, float weight_decay, bool nesterov, bool maximize,
              bool first_step);

// p, grad, exp_avg, exp_avg_sq (and max_exp_avg_sq for AMSGrad, else null) are (n,);
// step counts from 1. decoupled_weight_decay selects AdamW.
//   AdamW: p *= 1 - lr * weight_decay;   Adam: g += weight_decay * p
//   m = beta1 * m + (1 - beta1) * g;  v = beta2 * v + (1 - beta2) * g * g
//   p -= lr / (1 - beta1^step) * m / (sqrt(vmax) / sqrt(1 - beta2^step) + eps)
void adam_step(float* p, const float* grad, float* exp_avg, float* exp_avg_sq,
               float* max_exp_avg_sq, int64_t n, float lr, float beta1, float beta2, float eps,
               float weight_decay, bool decoupled_weight_decay, bool maximize, int64_t step);

}  // namespace pyrt::cpu
