// softmax / log_softmax forward and backward over the middle axis of a C-contiguous
// (outer, dim, inner) view -- element (o, d, i) at (o*dim + d)*inner + i -- and the fused
// softmax cross entropy on logits (n, classes) with int64 labels (n,).
//
// Numerics: the row max is subtracted before exp, so +-1e4 logits stay finite; the max
// ignores NaN but a NaN still reaches the sum, so a row with a NaN is all NaN (as on the CPU
// and in PyTorch). log_softmax is (x - m) - log(sum), cross entropy log(sum) - (x[label] - m).
// A label outside [0, classes) gives NaN (the device cannot raise; the caller checks first).
//
// Launch shapes (256 threads):
// - inner == 1, dim <= 1024: one warp per row, 8 rows per block, butterfly shuffles;
// - inner == 1, dim > 1024: one block per row, block_reduce (common.cuh);
// - inner > 1: blocks of (32, 8): 32 adjacent columns i (coalesced) x 8 threads striding
//   over d; the 8 partials per column are combined by one thread in a fixed order.
// All loops over rows / tiles are int64 grid-stride loops; a row may exceed 2^31 elements.
// Every reduction has a fixed shape for given sizes, so results are deterministic.
#include <cmath>

#include "common.cuh"
#include "ops.h"

namespace lf {
namespace {

constexpr int kThreads = 256;
constexpr int64_t kWarpRowMaxDim = 1024;
constexpr int kColsX = 32, kColsY = kThreads / kColsX;

enum class SmOp { SoftmaxF, LogSoftmaxF, SoftmaxB, LogSoftmaxB, CrossEntropyF, CrossEntropyB };

constexpr bool is_backward(SmOp op) { return op == SmOp::SoftmaxB || op == SmOp::LogSoftmaxB; }

// out: y / dx / loss / dlogits; a: x / dy / logits; b: y (backward only).
template <typename T>
struct SmArgs {
  T* out;
  const T* a;
  const T* b;
  const int64_t* labels;
  T scale;
};

template <int kGroup, typename T, class Op>
__device__ __forceinline__ T group_reduce(T v, Op op, T identity, T* scratch) {
  if constexpr (kGroup == 32) {
    (void)identity;
    (void)scratch;
    return warp_reduce(v, op);
  } else {
    return block_reduce(v, op, identity, scratch);
  }
}

// ---- kernels

// inner == 1: rows of `dim` contiguous elements; kGroup threads (a warp or the block) per row.
// The row loop is uniform over the group, so the shuffles / barriers inside are safe.
template <typename T, SmOp op, int kGroup>
__global__ void __launch_bounds__(kThreads)
    softmax_rows_kernel1(SmArgs<T> args, int64_t rows, int64_t dim) {
  __shared__ T scratch[33];
  const int lane = kGroup == 32 ? static_cast<int>(threadIdx.x & 31) : static_cast<int>(threadIdx.x);
  const int64_t first = kGroup == 32 ? global_thread() / 32 : static_cast<int64_t>(blockIdx.x);
  const int64_t step = kGroup == 32 ? grid_threads() / 32 : static_cast<int64_t>(gridDim.x);
  for (int64_t row = first; row < rows; row += step) {
    const int64_t base = row * dim;
    T* out = args.out + base;
    if constexpr (is_backward(op)) {
      const T* g = args.a + base;
      const T* y = args.b + base;
      T acc = T(0);
      for (int64_t d = lane; d < dim; d += kGroup) acc += op == SmOp::SoftmaxB ? g[d] * y[d] : g[d];
      acc = group_reduce<kGroup>(acc, SumOp{}, T(0), scratch);
      for (int64_t d = lane; d < dim; d += kGroup) {
        if constexpr (op == SmOp::SoftmaxB) {
          out[d] = y[d] * (g[d] - acc);
        } else {
          out[d] = g[d] - dev_exp(y[d]) * acc;
        }
      }
    } else {
      const T* x = args.a + base;
      T m = neg_inf<T>();
      for (int64_t d = lane; d < dim; d += kGroup) m = dev_max(m, x[d]);
      m = group_reduce<kGroup>(m, MaxOp{}, neg_inf<T>(), scratch);
      T sum = T(0);
      for (int64_t d = lane; d < dim; d += kGroup) sum += dev_exp(x[d] - m);
      sum = group_reduce<kGroup>(sum, SumOp{}, T(0), scratch);
      if constexpr (op == SmOp::SoftmaxF) {
        for (int64_t d = lane; d < dim; d += kGroup) out[d] = dev_exp(x[d] - m) / sum;
      } else if constexpr (op == SmOp::LogSoftmaxF) {
        const T ls = dev_log(sum);
        for (int64_t d = lane; d < dim; d += kGroup) out[d] = (x[d] - m) - ls;
      } else if constexpr (op == SmOp::CrossEntropyF) {
        if (lane == 0) {
          const int64_t label = args.labels[row];
          args.out[row] = (label >= 0 && label < dim) ? dev_log(sum) - (x[label] - m)
                                                      : static_cast<T>(NAN);
        }
      } else {  // CrossEntropyB: scale * (softmax - onehot), scale * (p - 1) at the label
        const int64_t label = args.labels[row];
        const bool ok = label >= 0 && label < dim;
        for (int64_t d = lane; d < dim; d += kGroup) {
          const T p = dev_exp(x[d] - m) / sum;
          out[d] = ok ? args.scale * (d == label ? p - T(1) : p) : static_cast<T>(NAN);
        }
      }
    }
  }
}

// Combines one value per (ty, tx) over ty, in ty order, for each column tx; every thread of
// the block must call it (uniform control flow).
template <typename T, class Op>
__device__ __forceinline__ T column_reduce(T v, Op op, T (*part)[kColsX], T* res) {
  const int tx = threadIdx.x, ty = threadIdx.y;
  part[ty][tx] = v;
  __syncthreads();
  if (ty == 0) {
    T r = part[0][tx];
#pragma unroll
    for (int k = 1; k < kColsY; ++k) r = op(r, part[k][tx]);
    res[tx] = r;
  }
  __syncthreads();
  return res[tx];
}

// inner > 1: tile (o, 32 columns); thread (tx, ty) handles column i = i0 + tx, d = ty + 8k.
template <typename T, SmOp op>
__global__ void __launch_bounds__(kThreads)
    softmax_cols_kernel1(SmArgs<T> args, int64_t outer, int64_t dim, int64_t inner) {
  __shared__ T part[kColsY][kColsX];
  __shared__ T res[kColsX];
  const int tx = threadIdx.x, ty = threadIdx.y;
  const int64_t cblocks = ceil_div<int64_t>(inner, kColsX), tiles = outer * cblocks;
  for (int64_t t = blockIdx.x; t < tiles; t += gridDim.x) {
    const int64_t o = t / cblocks, i = (t - o * cblocks) * kColsX + tx;
    const bool valid = i < inner;
    const int64_t base = o * dim * inner + i;
    if constexpr (is_backward(op)) {
      const T* g = args.a + base;
      const T* y = args.b + base;
      T acc = T(0);
      if (valid) {
        for (int64_t d = ty; d < dim; d += kColsY) {
          const int64_t e = d * inner;
          acc += op == SmOp::SoftmaxB ? g[e] * y[e] : g[e];
        }
      }
      acc = column_reduce(acc, SumOp{}, part, res);
      if (valid) {
        for (int64_t d = ty; d < dim; d += kColsY) {
          const int64_t e = d * inner;
          if constexpr (op == SmOp::SoftmaxB) {
            args.out[base + e] = y[e] * (g[e] - acc);
          } else {
            args.out[base + e] = g[e] - dev_exp(y[e]) * acc;
          }
        }
      }
    } else {
      const T* x = args.a + base;
      T m = neg_inf<T>();
      if (valid)
        for (int64_t d = ty; d < dim; d += kColsY) m = dev_max(m, x[d * inner]);
      m = column_reduce(m, MaxOp{}, part, res);
      T sum = T(0);
      if (valid)
        for (int64_t d = ty; d < dim; d += kColsY) sum += dev_exp(x[d * inner] - m);
      sum = column_reduce(sum, SumOp{}, part, res);
      if (valid) {
        if constexpr (op == SmOp::SoftmaxF) {
          for (int64_t d = ty; d < dim; d += kColsY)
            args.out[base + d * inner] = dev_exp(x[d * inner] - m) / sum;
        } else {
          const T ls = dev_log(sum);
          for (int64_t d = ty; d < dim; d += kColsY)
            args.out[base + d * inner] = (x[d * inner] - m) - ls;
        }
      }
    }
  }
}

// ---- launchers

template <typename T, SmOp op>
void launch_rows(const SmArgs<T>& a, int64_t rows, int64_t dim, cudaStream_t stream) {
  if (dim <= kWarpRowMaxDim) {
    softmax_rows_kernel1<T, op, 32>
        <<<grid_blocks(rows, kThreads / 32), kThreads, 0, stream>>>(a, rows, dim);
  } else {
    softmax_rows_kernel1<T, op, kThreads>
        <<<grid_blocks(rows, 1), kThreads, 0, stream>>>(a, rows, dim);
  }
  CUDA_CHECK_LAUNCH();
}

template <typename T, SmOp op>
void launch(const SmArgs<T>& a, const SoftmaxShape& s, cudaStream_t stream) {
  if (s.outer <= 0 || s.dim <= 0 || s.inner <= 0 || a.out == nullptr) return;
  if (s.inner == 1) {
    launch_rows<T, op>(a, s.outer, s.dim, stream);
  } else {
    const int64_t tiles = s.outer * ceil_div<int64_t>(s.inner, kColsX);
    softmax_cols_kernel1<T, op>
        <<<grid_blocks(tiles, 1), dim3(kColsX, kColsY), 0, stream>>>(a, s.outer, s.dim, s.inner);
    CUDA_CHECK_LAUNCH();
  }
}

}  // namespace

template <typename T>
void softmax_forward_cuda(T* y, const T* x, const SoftmaxShape& s, cudaStream_t stream) {
  launch<T, SmOp::SoftmaxF>(SmArgs<T>{y, x, nullptr, nullptr, T(0)}, s, stream);
}
template <typename T>
void softmax_backward_cuda(T* dx, const T* dy, const T* y, const SoftmaxShape& s,
                           cudaStream_t stream) {
  launch<T, SmOp::SoftmaxB>(SmArgs<T>{dx, dy, y, nullptr, T(0)}, s, stream);
}
template <typename T>
void log_softmax_forward_cuda(T* y, const T* x, const SoftmaxShape& s, cudaStream_t stream) {
  launch<T, SmOp::LogSoftmaxF>(SmArgs<T>{y, x, nullptr, nullptr, T(0)}, s, stream);
}
template <typename T>
void log_softmax_backward_cuda(T* dx, const T* dy, const T* y, const SoftmaxShape& s,
                               cudaStream_t stream) {
  launch<T, SmOp::LogSoftmaxB>(SmArgs<T>{dx, dy, y, nullptr, T(0)}, s, stream);
}

// With classes == 0 and n > 0 (rejected by ops.py) every label is out of range: NaN losses.
template <typename T>
void cross_entropy_forward_cuda(T* loss, const T* logits, const int64_t* labels, int64_t n,
                                int64_t classes, cudaStream_t stream) {
  if (n <= 0 || loss == nullptr) return;
  launch_rows<T, SmOp::CrossEntropyF>(SmArgs<T>{loss, logits, nullptr, labels, T(0)}, n,
                                      classes > 0 ? classes : 0, stream);
}
template <typename T>
void cross_entropy_backward_cuda(T* dlogits, const T* logits, const int64_t* labels, T scale,
                                 int64_t n, int64_t classes, cudaStream_t stream) {
  if (n <= 0 || classes <= 0 || dlogits == nullptr) return;
  launch_rows<T, SmOp::CrossEntropyB>(SmArgs<T>{dlogits, logits, nullptr, labels, scale}, n,
                                      classes, stream);
}

#define LF_INSTANTIATE(T)                                                                     \
  template void softmax_forward_cuda<T>(T*, const T*, const SoftmaxShape&, cudaStream_t);     \
  template void softmax_backward_cuda<T>(T*, const T*, const T*, const SoftmaxShape&,         \
                                         cudaStream_t);                                       \
  template void log_softmax_forward_cuda<T>(T*, const T*, const SoftmaxShape&, cudaStream_t); \
  template void log_softmax_backward_cuda<T>(T*, const T*, const T*, const SoftmaxShape&,     \
                                             cudaStream_t);                                   \
  template void cross_entropy_forward_cuda<T>(T*, const T*, const int64_t*, int64_t, int64_t, \
                                              cudaStream_t);                                  \
  template void cross_entropy_backward_cuda<T>(T*, const T*, const int64_t*, T, int64_t,      \
                                               int64_t, cudaStream_t);
LF_INSTANTIATE(float)
LF_INSTANTIATE(double)
#undef LF_INSTANTIATE

}  // namespace lf
