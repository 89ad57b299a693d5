// Element-wise in-place reductions for the collectives: the "add my segment
// into the one I just received" step of a ring all-reduce, and the final
// scale that turns a sum into an average.
#pragma once

#include <cstdint>

namespace pyrt::cpu {

enum class ReduceOp { kSum, kMax, kMin };

// Whether a call may fork OpenMP threads. The ring all-reduce reduces one
// segment while MPI moves the next, so it asks for kSingleThread and leaves the
// other core to the transfer; a standalone reduction asks for kAuto, which
// uses all OpenMP threads only above a size where they pay for their wake-up.
enum class Threading { kAuto, kSingleThread };

// dst and src are (count,) and either identical or non-overlapping.
// dst[i] = op(dst[i], src[i]).
// max/min follow numpy's np.maximum/np.minimum: when either operand is NaN
// the result is NaN (which NaN, when both are, is unspecified); between +0.0
// and -0.0 either may be returned.
void reduce_inplace(float* dst, const float* src, int64_t count, ReduceOp op,
                    Threading threading = Threading::kAuto);
void reduce_inplace(double* dst, const double* src, int64_t count, ReduceOp op,
                    Threading threading = Threading::kAuto);

// Name of the loop the reductions dispatch to ("avx2" or "portable").
const char* reduce_kernel_name();

}  // namespace pyrt::cpu
