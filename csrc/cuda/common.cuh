// Shared CUDA helpers for every kernel file:
// - CUDA_CHECK (throws std::runtime_error "file:line: msg", never exits) and CUDA_CHECK_LAUNCH,
//   used after every <<<...>>>;
// - ceil_div, the capped 1-D grid size and the int64 grid-stride loop;
// - deterministic warp / block reductions (fixed shuffle trees: the same inputs in the same
//   launch shape always give bitwise the same result, and every lane gets the same value);
// - the NCHW index helpers.
// All index math is int64_t: a tensor above 2^31 elements must index correctly.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>
#include <stdexcept>

#include "../check.h"

#define CUDA_CHECK(expr)                                                            \
  do {                                                                              \
    cudaError_t lf_err_ = (expr);                                                   \
    if (lf_err_ != cudaSuccess) {                                                   \
      ::lf::Msg lf_os_;                                                             \
      lf_os_ << __FILE__ << ":" << __LINE__ << ": " << #expr << ": "                \
             << cudaGetErrorName(lf_err_) << ": " << cudaGetErrorString(lf_err_);   \
      throw std::runtime_error(lf_os_.str());                                       \
    }                                                                               \
  } while (0)

// After every <<<...>>>: a bad launch configuration surfaces here, not at a later sync.
#define CUDA_CHECK_LAUNCH() CUDA_CHECK(cudaGetLastError())

namespace lf {

template <typename T>
__host__ __device__ constexpr T ceil_div(T a, T b) { return (a + b - 1) / b; }

// Blocks for a grid-stride loop over `work` items with `per_block` items per block pass.
// Capped: the loop covers the rest, and gridDim.x stays far below its 2^31-1 limit. Never 0
// (callers return early on empty work, but a 0-block launch would be a launch error).
constexpr int64_t kMaxBlocks = int64_t(1) << 20;
inline unsigned int grid_blocks(int64_t work, int64_t per_block) {
  int64_t b = ceil_div<int64_t>(work, per_block);
  if (b < 1) b = 1;
  if (b > kMaxBlocks) b = kMaxBlocks;
  return static_cast<unsigned int>(b);
}

// Global thread id and grid stride as int64 (blockIdx.x * blockDim.x overflows 32 bits).
__device__ __forceinline__ int64_t global_thread() {
  return static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
}
__device__ __forceinline__ int64_t grid_threads() {
  return static_cast<int64_t>(gridDim.x) * blockDim.x;
}

// ---- math overloads (no fast-math: expf/logf/tanhf are the accurate versions) ----
__device__ __forceinline__ float dev_exp(float x) { return expf(x); }
__device__ __forceinline__ double dev_exp(double x) { return exp(x); }
__device__ __forceinline__ float dev_log(float x) { return logf(x); }
__device__ __forceinline__ double dev_log(double x) { return log(x); }
__device__ __forceinline__ float dev_tanh(float x) { return tanhf(x); }
__device__ __forceinline__ double dev_tanh(double x) { return tanh(x); }
__device__ __forceinline__ float dev_fabs(float x) { return fabsf(x); }
__device__ __forceinline__ double dev_fabs(double x) { return fabs(x); }
// NaN-ignoring and symmetric in its arguments, so a butterfly reduction gives every lane the
// same value; a NaN in a softmax row still reaches the sum and makes the row NaN.
__device__ __forceinline__ float dev_max(float a, float b) { return fmaxf(a, b); }
__device__ __forceinline__ double dev_max(double a, double b) { return fmax(a, b); }

template <typename T>
__device__ __forceinline__ T neg_inf() { return -static_cast<T>(INFINITY); }

// ---- deterministic reductions ----
struct SumOp {
  template <typename T>
  __device__ __forceinline__ T operator()(T a, T b) const { return a + b; }
};
struct MaxOp {
  template <typename T>
  __device__ __forceinline__ T operator()(T a, T b) const { return dev_max(a, b); }
};

// Butterfly over the 32 lanes of a full warp, then lane 0's value broadcast, so every lane
// holds bitwise the same result whatever the hardware does with symmetric operations.
template <typename T, class Op>
__device__ __forceinline__ T warp_reduce(T v, Op op) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = op(v, __shfl_xor_sync(0xffffffffu, v, o));
  return __shfl_sync(0xffffffffu, v, 0);
}

// Whole-block reduction over blockDim.x (a multiple of 32, at most 1024) threads: warp trees,
// then warp 0 reduces the per-warp values in a fixed tree. `scratch` holds >= 33 T values;
// consecutive calls may share it (each call starts with a barrier), other code must not write
// it without a barrier first. Must be reached by every thread of the block (uniform control
// flow). Returns the result in every thread.
template <typename T, class Op>
__device__ T block_reduce(T v, Op op, T identity, T* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int nwarps = blockDim.x >> 5;
  v = warp_reduce(v, op);
  __syncthreads();  // scratch may still be read by a previous call
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  if (warp == 0) {
    T w = lane < nwarps ? scratch[lane] : identity;
    w = warp_reduce(w, op);
    if (lane == 0) scratch[32] = w;
  }
  __syncthreads();
  return scratch[32];
}

// ---- index helpers ----
// NCHW: element (n, c, h, w) of a (N, C, H, W) tensor.
__host__ __device__ __forceinline__ int64_t nchw(int64_t n, int64_t c, int64_t h, int64_t w,
                                                 int64_t C, int64_t H, int64_t W) {
  return ((n * C + c) * H + h) * W + w;
}

}  // namespace lf
