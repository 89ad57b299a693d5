// Int8 GEMM on tensor cores, and the activation quantizer that feeds it, for
// dynamically quantized Linear layers on the GPU (pyrt.kernels.int8_gemm,
// quantize_u8 and dynamic_linear on cupy arrays land here):
//
//   out[i, j] = a_scale * w_scale[j] * sum_p (a[i, p] - a_zp) * w[j, p] + bias[j]
//
//   a   (m, k) uint8 codes in [0, 127], row stride lda    (quantize_u8)
//   w   (n, k) int8, symmetric, row stride ldw             (nn.Linear's layout)
//   out (m, n) float32, row stride ldo
//
// The math is the CPU kernel's (csrc/cpu/qgemm.cpp), step for step, so both
// give the same floats: the zero point leaves the inner loop
// (sum (a - zp) w = sum a w - zp * rowsum(w), rowsum computed once per
// weight by int8_row_sums), the inner loop is an exact uint8 x int8 -> int32
// dot product, and the epilogue is
//   out = fma(float(acc - zp * rowsum[j]), a_scale * w_scale[j], bias[j])
// with the int32 subtraction wrapping (the true difference fits, see
// kInt8GemmMaxK) and the scale product rounded once in float32.
//
// Tensor cores. The inner product is mma.sync.aligned.m16n8k32 with uint8 A
// and int8 B (sm_80 and later, including the H100/H200's sm_90): one warp
// multiplies a 16 x 32 byte tile of a by a 32 x 8 tile of w^T into a 16 x 8
// int32 tile. A as .u8 rather than .s8: for our 7-bit codes the two agree,
// and .u8 stays exact for any byte at the same speed.
//
// Tiling. A block of 256 threads (8 warps, 2 x 4) owns a 128 x 128 tile of
// out and walks k in steps of 64 bytes:
//
//   for k0 in 0, 64, 128, ... < k:          two shared stages, cp.async
//     a[row0 : row0+128, k0 : k0+64] -> a_tile (128 rows of 64 bytes)
//     w[col0 : col0+128, k0 : k0+64] -> w_tile (128 rows of 64 bytes)
//     each warp: its 64 x 32 of out += 4 x 4 mma tiles, 2 mma deep (k 64)
//   epilogue from registers (64 int32 accumulators a thread) to out
//
// Why these sizes: a 64 x 32 warp tile does 32 mma per 12 shared-memory
// loads of 16 bytes (below), so the loads keep up with the tensor cores; the
// 128 x 128 block tile reuses each byte fetched from global memory 128
// times; two 16 KB stages (32 KB of static shared memory) let the next k
// tile's copies run under this one's mma, and leave room for two blocks per
// SM (64 int32 accumulators + fragments fit __launch_bounds__(256, 2)'s 128
// registers). The block tile is also the unit of the edges: rows and columns
// past m, n load as zeros and are not stored; warp tiles wholly past m or n
// skip their mma (warp-uniform, so mma's whole-warp contract holds), which
// matters for batch-1 inference where 127 of the 128 rows are padding.
//
// Fragments and the k permutation. mma's fragment layout (PTX ISA, "Matrix
// Fragments for mma.m16n8k32", integer types), lane = 4 g + t:
//   A (16 x 32, row):  a0 = A[g][4t .. 4t+3]      a1 = A[g+8][4t .. 4t+3]
//                      a2 = A[g][16+4t .. 16+4t+3] a3 = A[g+8][16+4t .. 16+4t+3]
//   B (32 x 8, col):   b0 = B[4t .. 4t+3][g]      b1 = B[16+4t .. 16+4t+3][g]
//   C (16 x 8):        c0 = C[g][2t]  c1 = C[g][2t+1]  c2 = C[g+8][2t]  c3 = C[g+8][2t+1]
// (4 consecutive k of one row in each 32-bit register, low byte first.) A dot
// product does not care in which order k is summed, as long as a and w use
// the same order. So within each 64-byte k tile we let lane t's registers for
// both 32-deep mma steps be the 16 consecutive bytes [16t, 16t + 16) of its
// row: bytes 0-3 are step 0's a0 (or b0), 4-7 step 0's a2 (b1), 8-11 step
// 1's a0 (b0), 12-15 step 1's a2 (b1). That is one 16-byte shared load per
// row instead of four 4-byte ones, and since a stage's rows are 64 bytes,
// the 8 lanes of each quarter warp read 2 rows x 4 chunks = 8 distinct 16-byte
// bank groups: no bank conflicts, without padding. The mma's own k index
// never has to match the array's.
//
// Loads. Each thread copies two 16-byte chunks of a and two of w per k tile
// (4 neighbouring threads read one row's 64 bytes, so a warp reads 8 rows of
// 64 contiguous bytes). With cp.async (16 bytes, zero-filling past the valid
// bytes, so the k edge and rows past m or n cost no extra code) when the
// matrix's base address and row stride are multiples of 16 bytes; otherwise
// byte by byte into shared memory (the misaligned fallback: correct for any
// pointer and stride, slower). pyrt.kernels pads packed weights' and
// quantized activations' rows to 16 bytes so the fast path is the usual one.
//
// Inline PTX (mma.sync, cp.async) sits under __CUDA_ARCH__; the #else branch
// does exactly what the instruction does for each lane, so the SIMT emulator
// (csrc/cuda/emulator/simt.h) runs this file on the CPU with the same
// fragment indexing: mma's host path gathers the other lanes' registers with
// warp shuffles and multiplies per the layout table above.
//
// The activation quantizer is three small kernels in stream order: per-block
// (min, max, finite) over x with 0 included (as the CPU), one thread choosing
// (scale, zero_point) with the CPU's very code, then the codes
// q = clamp(rint(fma(x, 1 / scale, zero_point)), 0, 127). The parameters stay
// in device memory (QuantParams) and int8_gemm can read them from there, so
// a quantized Linear runs without waiting on the host.
#include "cuda/qgemm.h"

#include <cfloat>
#include <climits>
#include <cmath>
#include <cstring>

namespace pyrt::cuda {
namespace {

constexpr int kBlockM = 128;  // rows of out per block
constexpr int kBlockN = 128;  // columns of out per block
constexpr int kBlockK = 64;   // bytes of k per shared stage
constexpr int kWarpsM = 2;
constexpr int kWarpsN = 4;
constexpr int kThreads = 32 * kWarpsM * kWarpsN;  // 256
constexpr int kWarpM = kBlockM / kWarpsM;         // 64 rows of out per warp
constexpr int kWarpN = kBlockN / kWarpsN;         // 32 columns of out per warp
constexpr int kMmaM = 16, kMmaN = 8, kMmaK = 32;  // one mma.m16n8k32
constexpr int kTilesM = kWarpM / kMmaM;           // 4
constexpr int kTilesN = kWarpN / kMmaN;           // 4
constexpr int kChunk = 16;                        // bytes per cp.async
constexpr int kChunksPerRow = kBlockK / kChunk;   // 4
constexpr int kChunksPerThread = kBlockM * kChunksPerRow / kThreads;  // 2 of a, 2 of w
constexpr int kStages = 2;
static_assert(kBlockM == kBlockN, "a and w tiles share one loader");
static_assert(kBlockK == 2 * kMmaK, "a lane's 16-byte chunk feeds exactly two mma steps");
static_assert(kBlockK == 4 * kChunk, "lane t of a group reads chunk t of its row");
static_assert(kBlockM * kChunksPerRow % kThreads == 0, "chunks split evenly over threads");

// One stage of a or w in shared memory: 128 rows of 64 bytes of k (raw bytes;
// a's are uint8, w's int8).
using Tile = uint8_t[kBlockM][kBlockK];

__host__ __device__ constexpr int64_t ceil_div(int64_t x, int64_t y) { return x / y + (x % y != 0); }

__host__ __device__ inline int64_t clamp64(int64_t x, int64_t lo, int64_t hi) {
  return x < lo ? lo : x > hi ? hi : x;
}

// --- inline PTX and its host emulation ---------------------------------------------------

// d += A * B for one warp: A 16 x 32 uint8, B 32 x 8 int8, d 16 x 8 int32, each
// lane holding its fragments (a[4], b[2], d[4]) per the layout at the top.
__device__ __forceinline__ void mma_u8s8(int32_t (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
#ifdef __CUDA_ARCH__
  asm volatile(
      "mma.sync.aligned.m16n8k32.row.col.s32.u8.s8.s32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+r"(d[0]), "+r"(d[1]), "+r"(d[2]), "+r"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
#else
  // What the instruction computes for this lane, from the other lanes'
  // registers: every lane takes part in every shuffle, as mma.sync requires
  // the whole warp.
  const int lane = static_cast<int>(threadIdx.x) % 32, g = lane / 4, t = lane % 4;
  auto byte = [](uint32_t word, int i) { return static_cast<uint8_t>(word >> (8 * i)); };
  auto pack = [](uint32_t lo, uint32_t hi) { return uint64_t{lo} | uint64_t{hi} << 32; };
  // Rows g and g + 8 of A, all 32 k: the four lanes 4g + u hold k 4u..4u+3
  // in a0 (row g) / a1 (row g+8) and k 16+4u.. in a2 / a3.
  uint8_t a_rows[2][kMmaK];
  for (int u = 0; u < 4; ++u) {
    const uint64_t lo = __shfl_sync(0xffffffffu, pack(a[0], a[1]), 4 * g + u);
    const uint64_t hi = __shfl_sync(0xffffffffu, pack(a[2], a[3]), 4 * g + u);
    for (int i = 0; i < 4; ++i) {
      a_rows[0][4 * u + i] = byte(static_cast<uint32_t>(lo), i);
      a_rows[1][4 * u + i] = byte(static_cast<uint32_t>(lo >> 32), i);
      a_rows[0][16 + 4 * u + i] = byte(static_cast<uint32_t>(hi), i);
      a_rows[1][16 + 4 * u + i] = byte(static_cast<uint32_t>(hi >> 32), i);
    }
  }
  // Columns 2t and 2t + 1 of B, all 32 k: column c is held by the four lanes
  // 4c + u, k 4u..4u+3 in b0 and 16+4u.. in b1.
  int8_t b_cols[2][kMmaK];
  for (int j = 0; j < 2; ++j) {
    for (int u = 0; u < 4; ++u) {
      const uint64_t v = __shfl_sync(0xffffffffu, pack(b[0], b[1]), 4 * (2 * t + j) + u);
      for (int i = 0; i < 4; ++i) {
        b_cols[j][4 * u + i] = static_cast<int8_t>(byte(static_cast<uint32_t>(v), i));
        b_cols[j][16 + 4 * u + i] = static_cast<int8_t>(byte(static_cast<uint32_t>(v >> 32), i));
      }
    }
  }
  for (int i = 0; i < 4; ++i) {  // d[i] is C[g + 8 (i / 2)][2t + i % 2]
    int32_t dot = 0;
    for (int p = 0; p < kMmaK; ++p) dot += int32_t{a_rows[i / 2][p]} * int32_t{b_cols[i % 2][p]};
    d[i] = static_cast<int32_t>(static_cast<uint32_t>(d[i]) + static_cast<uint32_t>(dot));  // wraps, as s32 mma
  }
#endif
}

// Copies 16 bytes global -> shared, of which the first src_bytes (0..16) are
// read from src and the rest are zero. dst and src are 16-byte aligned.
__device__ __forceinline__ void cp_async_16(void* dst, const void* src, int src_bytes) {
#ifdef __CUDA_ARCH__
  const auto shared = static_cast<unsigned>(__cvta_generic_to_shared(dst));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(shared), "l"(src), "r"(src_bytes));
#else
  // The emulator copies at once: the commit/wait pair below has nothing to wait for.
  std::memcpy(dst, src, static_cast<size_t>(src_bytes));
  std::memset(static_cast<uint8_t*>(dst) + src_bytes, 0, static_cast<size_t>(kChunk - src_bytes));
#endif
}

__device__ __forceinline__ void cp_async_commit() {
#ifdef __CUDA_ARCH__
  asm volatile("cp.async.commit_group;\n" ::);
#endif
}

// Waits until at most `pending` of this thread's committed groups are in flight.
template <int pending>
__device__ __forceinline__ void cp_async_wait() {
#ifdef __CUDA_ARCH__
  asm volatile("cp.async.wait_group %0;\n" ::"n"(pending));
#endif
}

// --- the GEMM ----------------------------------------------------------------------------

struct Int8GemmParams {
  int64_t m, n, k;
  const uint8_t* a;  // (m, k), row stride lda
  int64_t lda;
  const uint8_t* w;  // (n, k) int8 bytes, row stride ldw
  int64_t ldw;
  const int32_t* row_sums;  // (n,)
  const float* w_scale;     // (n,)
  const float* bias;        // (n,) or null
  float a_scale;
  int32_t a_zero_point;
  const QuantParams* a_params;  // when set, a_scale and a_zero_point come from here
  float* out;                   // (m, n), row stride ldo
  int64_t ldo;
  int64_t tiles_n;  // block b owns tile (b / tiles_n, b % tiles_n)
  bool a_vector;    // a's base and lda are multiples of 16 bytes: cp.async
  bool w_vector;    // likewise for w
};

// This thread's share of copying a 128 x 64 byte tile of X (rows x k, row
// stride ld), from row row0 and byte k0 on, into `tile`; bytes outside X are
// zero. Chunk c of the thread is tile row (tid + c * 256) / 4, bytes
// 16 ((tid + c * 256) % 4) onwards: 4 neighbouring threads read one row.
__device__ __forceinline__ void load_tile(const uint8_t* x, int64_t rows, int64_t ld, int64_t k,
                                          int64_t row0, int64_t k0, bool vector, Tile& tile,
                                          int tid) {
PYRT_UNROLL
  for (int c = 0; c < kChunksPerThread; ++c) {
    const int chunk = tid + c * kThreads;
    const int r = chunk / kChunksPerRow;
    const int col = (chunk % kChunksPerRow) * kChunk;
    const int64_t row = row0 + r;
    const int bytes = row < rows ? static_cast<int>(clamp64(k - (k0 + col), 0, kChunk)) : 0;
    const uint8_t* src = bytes > 0 ? x + row * ld + k0 + col : x;  // x: a valid address to read 0 bytes of
    uint8_t* dst = &tile[r][col];
    if (vector) {
      cp_async_16(dst, src, bytes);
    } else {
PYRT_UNROLL
      for (int i = 0; i < kChunk; ++i) dst[i] = i < bytes ? src[i] : uint8_t{0};
    }
  }
}

// acc += this warp's 64 x 32 of a_tile x w_tile^T over the 64 bytes of k.
// live_m / live_n: how many of the warp's 16-row / 8-column mma tiles hold
// any output (the rest lie past m or n and are skipped by the whole warp).
__device__ __forceinline__ void multiply_tile(const Tile& a_tile, const Tile& w_tile, int warp_row,
                                              int warp_col, int live_m, int live_n, int lane,
                                              int32_t (&acc)[kTilesM][kTilesN][4]) {
  const int g = lane / 4, t = lane % 4;
  // w's fragments for both mma steps: row (column of out) g of each 8-column
  // tile, bytes [16t, 16t + 16) (the k permutation at the top of the file).
  uint32_t b[kTilesN][2][2];
PYRT_UNROLL
  for (int nt = 0; nt < kTilesN; ++nt) {
    if (nt < live_n) {
      const int4 v = *reinterpret_cast<const int4*>(&w_tile[warp_col + nt * kMmaN + g][kChunk * t]);
      b[nt][0][0] = static_cast<uint32_t>(v.x), b[nt][0][1] = static_cast<uint32_t>(v.y);
      b[nt][1][0] = static_cast<uint32_t>(v.z), b[nt][1][1] = static_cast<uint32_t>(v.w);
    }
  }
PYRT_UNROLL
  for (int mt = 0; mt < kTilesM; ++mt) {
    if (mt >= live_m) break;
    const int row = warp_row + mt * kMmaM + g;
    const int4 lo = *reinterpret_cast<const int4*>(&a_tile[row][kChunk * t]);      // row g
    const int4 hi = *reinterpret_cast<const int4*>(&a_tile[row + 8][kChunk * t]);  // row g + 8
    const uint32_t step0[4] = {static_cast<uint32_t>(lo.x), static_cast<uint32_t>(hi.x),
                               static_cast<uint32_t>(lo.y), static_cast<uint32_t>(hi.y)};
    const uint32_t step1[4] = {static_cast<uint32_t>(lo.z), static_cast<uint32_t>(hi.z),
                               static_cast<uint32_t>(lo.w), static_cast<uint32_t>(hi.w)};
PYRT_UNROLL
    for (int nt = 0; nt < kTilesN; ++nt) {
      if (nt < live_n) {
        mma_u8s8(acc[mt][nt], step0, b[nt][0]);
        mma_u8s8(acc[mt][nt], step1, b[nt][1]);
      }
    }
  }
}

__device__ __forceinline__ float mul_rn(float x, float y) {
#ifdef __CUDA_ARCH__
  return __fmul_rn(x, y);  // never contracted into an fma: the CPU rounds this product on its own
#else
  return x * y;
#endif
}

// The CPU's epilogue for this thread's outputs, inside out only.
__device__ __forceinline__ void store_out(const Int8GemmParams& p, int64_t row_base, int64_t col_base,
                                          int live_m, int live_n, int lane,
                                          const int32_t (&acc)[kTilesM][kTilesN][4]) {
  float a_scale = p.a_scale;
  int32_t a_zero_point = p.a_zero_point;
  if (p.a_params != nullptr) {
    a_scale = p.a_params->scale;
    a_zero_point = p.a_params->zero_point;
  }
  const int g = lane / 4, t = lane % 4;
PYRT_UNROLL
  for (int nt = 0; nt < kTilesN; ++nt) {
    if (nt >= live_n) break;
PYRT_UNROLL
    for (int j = 0; j < 2; ++j) {
      const int64_t col = col_base + nt * kMmaN + 2 * t + j;
      if (col >= p.n) continue;
      // a_zp * rowsum fits in int32 for k <= kInt8GemmMaxK; computed as the CPU does.
      const auto zp_sum = static_cast<uint32_t>(a_zero_point) * static_cast<uint32_t>(p.row_sums[col]);
      const float scale = mul_rn(a_scale, p.w_scale[col]);
      const float bias = p.bias != nullptr ? p.bias[col] : 0.0f;
PYRT_UNROLL
      for (int mt = 0; mt < kTilesM; ++mt) {
        if (mt >= live_m) break;
PYRT_UNROLL
        for (int h = 0; h < 2; ++h) {
          const int64_t row = row_base + mt * kMmaM + g + 8 * h;
          if (row >= p.m) continue;
          // Wrapping subtraction, as the CPU's vpsubd: the true difference fits in int32.
          const auto d = static_cast<int32_t>(static_cast<uint32_t>(acc[mt][nt][2 * h + j]) - zp_sum);
          // k == 0 is an empty sum: out is the bias, written as is (as the CPU does).
          p.out[row * p.ldo + col] = p.k == 0 ? bias : fmaf(static_cast<float>(d), scale, bias);
        }
      }
    }
  }
}

// How many of a warp's `tiles` mma tiles of `size` rows (or columns) start
// before the edge, `left` rows (or columns) after the warp's first.
__device__ __forceinline__ int live_tiles(int64_t left, int size, int tiles) {
  return left <= 0 ? 0 : static_cast<int>(clamp64(ceil_div(left, size), 0, tiles));
}

__global__ void __launch_bounds__(kThreads, 2) int8_gemm_tiled(const Int8GemmParams p) {
  __shared__ __align__(16) Tile a_tiles[kStages];
  __shared__ __align__(16) Tile w_tiles[kStages];
  const int tid = static_cast<int>(threadIdx.x);
  const int warp = tid / 32, lane = tid % 32;
  const int64_t row0 = static_cast<int64_t>(blockIdx.x / p.tiles_n) * kBlockM;
  const int64_t col0 = static_cast<int64_t>(blockIdx.x % p.tiles_n) * kBlockN;
  const int warp_row = (warp / kWarpsN) * kWarpM;
  const int warp_col = (warp % kWarpsN) * kWarpN;
  const int live_m = live_tiles(p.m - row0 - warp_row, kMmaM, kTilesM);
  const int live_n = live_tiles(p.n - col0 - warp_col, kMmaN, kTilesN);

  int32_t acc[kTilesM][kTilesN][4] = {};
  const int64_t k_tiles = ceil_div(p.k, kBlockK);
  if (k_tiles > 0) {
    load_tile(p.a, p.m, p.lda, p.k, row0, 0, p.a_vector, a_tiles[0], tid);
    load_tile(p.w, p.n, p.ldw, p.k, col0, 0, p.w_vector, w_tiles[0], tid);
    cp_async_commit();
  }
  for (int64_t kt = 0; kt < k_tiles; ++kt) {
    const int stage = static_cast<int>(kt % kStages);
    if (kt + 1 < k_tiles) {
      // Into the other stage, free since the barrier that ended the last step;
      // in flight while this step's mma run.
      const int next = static_cast<int>((kt + 1) % kStages);
      const int64_t k0 = (kt + 1) * kBlockK;
      load_tile(p.a, p.m, p.lda, p.k, row0, k0, p.a_vector, a_tiles[next], tid);
      load_tile(p.w, p.n, p.ldw, p.k, col0, k0, p.w_vector, w_tiles[next], tid);
      cp_async_commit();
      cp_async_wait<1>();  // all but the newest group: this step's tile has landed
    } else {
      cp_async_wait<0>();
    }
    __syncthreads();  // every thread's copies are visible to every warp
    multiply_tile(a_tiles[stage], w_tiles[stage], warp_row, warp_col, live_m, live_n, lane, acc);
    __syncthreads();  // everyone is done reading this stage before it is refilled
  }
  store_out(p, row0 + warp_row, col0 + warp_col, live_m, live_n, lane, acc);
}

// row_sums[j] = sum_p w[j, p]; one warp per row of w (n, k), row stride ldw.
constexpr int kRowSumThreads = 256;

__global__ void row_sums_kernel(int64_t n, int64_t k, const int8_t* w, int64_t ldw, int32_t* row_sums) {
  const int64_t row = static_cast<int64_t>(blockIdx.x) * (kRowSumThreads / 32) + threadIdx.x / 32;
  const int lane = static_cast<int>(threadIdx.x) % 32;
  if (row >= n) return;  // the whole warp: row is warp-uniform
  int32_t sum = 0;
  for (int64_t p = lane; p < k; p += 32) sum += w[row * ldw + p];
PYRT_UNROLL
  for (int offset = 16; offset > 0; offset /= 2) sum += __shfl_xor_sync(0xffffffffu, sum, offset);
  if (lane == 0) row_sums[row] = sum;
}

// --- the activation quantizer ---------------------------------------------------------

constexpr int kQuantizeThreads = 256;
constexpr int kQuantizeMaxCodeBlocks = 4096;  // grid-stride beyond this

// Offset of element e (row-major order) of an (m, k) array with element
// strides (rs, cs); a row-major x needs no division.
__device__ __forceinline__ int64_t element_offset(int64_t e, int64_t k, int64_t rs, int64_t cs) {
  return rs == k * cs ? e * cs : (e / k) * rs + (e % k) * cs;
}

// Per block: (min, max, finite) over its grid-stride share of x, starting
// from 0 as the CPU does (so 0 is always inside the range), into
// partial[3 * blockIdx.x ...] as floats (finite as 0.0 or 1.0).
__global__ void min_max_kernel(int64_t m, int64_t k, const float* x, int64_t rsx, int64_t csx,
                               float* partial) {
  __shared__ float lo_warp[kQuantizeThreads / 32], hi_warp[kQuantizeThreads / 32];
  __shared__ int finite_warp[kQuantizeThreads / 32];
  float lo = 0.0f, hi = 0.0f;
  int finite = 1;
  const int64_t total = m * k;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * kQuantizeThreads;
  for (int64_t e = static_cast<int64_t>(blockIdx.x) * kQuantizeThreads + threadIdx.x; e < total; e += stride) {
    const float v = x[element_offset(e, k, rsx, csx)];
    finite &= fabsf(v) <= FLT_MAX;  // false for infinities and NaN
    lo = fminf(lo, v);
    hi = fmaxf(hi, v);
  }
PYRT_UNROLL
  for (int offset = 16; offset > 0; offset /= 2) {
    lo = fminf(lo, __shfl_xor_sync(0xffffffffu, lo, offset));
    hi = fmaxf(hi, __shfl_xor_sync(0xffffffffu, hi, offset));
    finite &= __shfl_xor_sync(0xffffffffu, finite, offset);
  }
  const int warp = static_cast<int>(threadIdx.x) / 32, lane = static_cast<int>(threadIdx.x) % 32;
  if (lane == 0) lo_warp[warp] = lo, hi_warp[warp] = hi, finite_warp[warp] = finite;
  __syncthreads();
  if (threadIdx.x == 0) {
    for (int w = 1; w < kQuantizeThreads / 32; ++w) {
      lo = fminf(lo, lo_warp[w]);
      hi = fmaxf(hi, hi_warp[w]);
      finite &= finite_warp[w];
    }
    partial[3 * blockIdx.x] = lo;
    partial[3 * blockIdx.x + 1] = hi;
    partial[3 * blockIdx.x + 2] = finite ? 1.0f : 0.0f;
  }
}

__device__ __forceinline__ float div_rn(float x, float y) {
#ifdef __CUDA_ARCH__
  return __fdiv_rn(x, y);  // IEEE division whatever -prec-div says: the CPU's 1 / scale
#else
  return x / y;
#endif
}

// PyTorch's quant_utils::ChooseQuantizationParams for qmin = 0, qmax = 255
// with reduce_range (so qmax = 127), preserve_sparsity off; lo <= 0 <= hi.
// Line for line the CPU's choose_params (csrc/cpu/qgemm.cpp), in the same
// float and double precision, so both pick identical parameters.
__device__ __forceinline__ void choose_params(float lo, float hi, float* scale, int32_t* zero_point) {
  constexpr double qmin = 0.0, qmax = kActivationQmax;
  constexpr float kSmallScale = 6.1e-5f;
  double s = (static_cast<double>(hi) - lo) / (qmax - qmin);
  if (static_cast<float>(s) == 0.0f || fabsf(div_rn(1.0f, static_cast<float>(s))) > FLT_MAX) s = 0.1;
  if (s < kSmallScale) {
    const double org = s;
    s = kSmallScale;
    if (lo == 0.0f) {
      hi = static_cast<float>(kSmallScale * (qmax - qmin));
    } else if (hi == 0.0f) {
      lo = static_cast<float>(-kSmallScale * (qmax - qmin));
    } else {
      const auto amplifier = static_cast<float>(kSmallScale / org);
      lo = mul_rn(lo, amplifier);
      hi = mul_rn(hi, amplifier);
    }
  }
  const auto sf = static_cast<float>(s);
  const double zp_from_min = qmin - lo / static_cast<double>(sf);
  const double zp_from_max = qmax - hi / static_cast<double>(sf);
  const double err_min = fabs(qmin) - fabs(lo / static_cast<double>(sf));
  const double err_max = fabs(qmax) - fabs(hi / static_cast<double>(sf));
  const double zp = err_min < err_max ? zp_from_min : zp_from_max;
  *scale = sf;
  *zero_point = zp < qmin   ? static_cast<int32_t>(qmin)
                : zp > qmax ? static_cast<int32_t>(qmax)
                            : static_cast<int32_t>(rint(zp));
}

// One thread: combines the blocks' partials and writes the QuantParams.
__global__ void choose_params_kernel(int blocks, const float* partial, QuantParams* params) {
  float lo = 0.0f, hi = 0.0f;
  bool finite = true;
  for (int b = 0; b < blocks; ++b) {
    lo = fminf(lo, partial[3 * b]);
    hi = fmaxf(hi, partial[3 * b + 1]);
    finite = finite && partial[3 * b + 2] != 0.0f;
  }
  QuantParams out{NAN, 0, NAN, 0};
  if (finite) {
    choose_params(lo, hi, &out.scale, &out.zero_point);
    out.inv_scale = div_rn(1.0f, out.scale);  // multiplying by it, as FBGEMM and the CPU do
    out.finite = 1;
  }
  *params = out;
}

// out[i, p] = clamp(rint(fma(x[i, p], inv_scale, zero_point)), 0, 127), one
// rounding in the fma, exactly as the CPU (and FBGEMM for PyTorch).
__global__ void quantize_kernel(int64_t m, int64_t k, const float* x, int64_t rsx, int64_t csx,
                                uint8_t* out, int64_t rso, const QuantParams* params) {
  const float inv_scale = params->inv_scale;
  const auto zp = static_cast<float>(params->zero_point);
  const int64_t total = m * k;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * kQuantizeThreads;
  for (int64_t e = static_cast<int64_t>(blockIdx.x) * kQuantizeThreads + threadIdx.x; e < total; e += stride) {
    float v = rintf(fmaf(x[element_offset(e, k, rsx, csx)], inv_scale, zp));
    v = fminf(fmaxf(v, 0.0f), static_cast<float>(kActivationQmax));
    out[element_offset(e, k, rso, 1)] = static_cast<uint8_t>(v);
  }
}

}  // namespace

cudaError_t int8_row_sums(int64_t n, int64_t k, const int8_t* w, int64_t ldw, int32_t* row_sums,
                          cudaStream_t stream) {
  if (n < 0 || k < 0) return cudaErrorInvalidValue;
  if (n == 0) return cudaSuccess;
  const int64_t blocks = ceil_div(n, kRowSumThreads / 32);
  if (blocks > INT_MAX) return cudaErrorInvalidValue;
  PYRT_LAUNCH(row_sums_kernel, static_cast<unsigned>(blocks), kRowSumThreads, stream, n, k, w, ldw,
              row_sums);
  return cudaGetLastError();
}

cudaError_t quantize_u8(int64_t m, int64_t k, const float* x, int64_t rsx, int64_t csx,
                        uint8_t* out, int64_t rso, int32_t* workspace, cudaStream_t stream) {
  if (m < 0 || k < 0) return cudaErrorInvalidValue;
  auto* params = reinterpret_cast<QuantParams*>(workspace);
  auto* partial = reinterpret_cast<float*>(workspace + 4);
  const int64_t total = m * k;
  // At least one block, so an empty x still gets the CPU's parameters for an empty range.
  const auto blocks = static_cast<int>(clamp64(ceil_div(total, 4 * kQuantizeThreads), 1, kQuantizeMaxBlocks));
  PYRT_LAUNCH(min_max_kernel, static_cast<unsigned>(blocks), kQuantizeThreads, stream, m, k, x, rsx, csx,
              partial);
  cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) return err;
  PYRT_LAUNCH(choose_params_kernel, 1, 1, stream, blocks, static_cast<const float*>(partial), params);
  err = cudaGetLastError();
  if (err != cudaSuccess || total == 0) return err;
  const auto code_blocks = static_cast<unsigned>(clamp64(ceil_div(total, kQuantizeThreads), 1, kQuantizeMaxCodeBlocks));
  PYRT_LAUNCH(quantize_kernel, code_blocks, kQuantizeThreads, stream, m, k, x, rsx, csx, out, rso,
              static_cast<const QuantParams*>(params));
  return cudaGetLastError();
}

cudaError_t int8_gemm(int64_t m, int64_t n, int64_t k, const uint8_t* a, int64_t lda, float a_scale,
                      int32_t a_zero_point, const QuantParams* a_params, const int8_t* w,
                      int64_t ldw, const int32_t* w_row_sums, const float* w_scale,
                      const float* bias, float* out, int64_t ldo, cudaStream_t stream) {
  if (m < 0 || n < 0 || k < 0 || k > kInt8GemmMaxK) return cudaErrorInvalidValue;
  if (a_params == nullptr && (a_zero_point < 0 || a_zero_point > kActivationQmax)) {
    return cudaErrorInvalidValue;
  }
  if (m == 0 || n == 0) return cudaSuccess;
  const int64_t tiles_m = ceil_div(m, kBlockM);
  const int64_t tiles_n = ceil_div(n, kBlockN);
  if (tiles_m > INT_MAX / tiles_n) return cudaErrorInvalidValue;  // gridDim.x limit
  auto aligned = [](const void* p, int64_t ld) {
    return reinterpret_cast<uintptr_t>(p) % kChunk == 0 && ld % kChunk == 0;
  };
  Int8GemmParams p{};
  p.m = m, p.n = n, p.k = k;
  p.a = a, p.lda = lda;
  p.w = reinterpret_cast<const uint8_t*>(w), p.ldw = ldw;
  p.row_sums = w_row_sums, p.w_scale = w_scale, p.bias = bias;
  p.a_scale = a_scale, p.a_zero_point = a_zero_point, p.a_params = a_params;
  p.out = out, p.ldo = ldo;
  p.tiles_n = tiles_n;
  p.a_vector = aligned(a, lda);
  p.w_vector = aligned(w, ldw);
  PYRT_LAUNCH(int8_gemm_tiled, static_cast<unsigned>(tiles_m * tiles_n), kThreads, stream, p);
  return cudaGetLastError();
}

}  // namespace pyrt::cuda
