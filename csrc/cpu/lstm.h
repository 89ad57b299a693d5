// The elementwise half of one LSTM time step, fused: gate activations and the
// cell update in one pass over the (B, 4H) gate block (and its gradient in
// backward), where numpy needs about ten whole-array passes per step.
// The (B, H) @ (H, 4H) recurrent GEMM stays on sgemm.
#pragma once

#include <cstdint>

namespace pyrt::cpu {

// gates is (batch, 4*hidden), row-major, PyTorch's gate order i, f, g, o; it
// holds pre-activations on entry and the activated gates on return (backward
// needs them). c_prev, c, tanh_c and h are (batch, hidden), row-major.
//   i, f, o = sigmoid(.), g = tanh(.);  c = f * c_prev + i * g;  h = o * tanh(c)
void lstm_cell_forward(float* gates, const float* c_prev, float* c, float* tanh_c, float* h,
                       int64_t batch, int64_t hidden);

// Backward of one step. gates holds the activated gates of the step; grad_h
// is dL/dh_t from the output, grad_h_next (nullable) the same from step t+1's
// recurrent GEMM; grad_c is dL/dc_t on entry and dL/dc_{t-1} on return;
// grad_gates (batch, 4*hidden) receives dL/d(pre-activation).
void lstm_cell_backward(const float* gates, const float* c_prev, const float* tanh_c,
                        const float* grad_h, const float* grad_h_next, float* grad_c,
                        float* grad_gates, int64_t batch, int64_t hidden);

}  // namespace pyrt::cpu
