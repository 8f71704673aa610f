// Dense layer, x (M, IN), w (OUT, IN), b (OUT,), y / dy (M, OUT):
//   forward  y  = x w^T + b     GEMM M x OUT, k = IN    (bias added in the store)
//   backward dx = dy w          GEMM M x IN,  k = OUT
//            dw = dy^T x        GEMM OUT x IN, k = M    (chunked / split-K, gemm.cuh)
//            db = sum_m dy      column sums, blocks of 32 columns x 8 row-strided threads
// Every product goes through the tiled GEMM of gemm.cuh with strided operands; all sums run
// in a fixed order set by the shapes (no atomics), so results are deterministic.
#include "common.cuh"
#include "gemm.cuh"
#include "ops.h"

namespace lf {
namespace {

constexpr int kColsX = 32, kColsY = 8;

// ---- kernels

// db[o] = sum over m of dy[m, o]: thread (tx, ty) sums rows ty, ty + 8, ... of column o0 + tx
// in order; thread ty == 0 then adds the 8 partials in ty order.
template <typename T>
__global__ void __launch_bounds__(kColsX * kColsY)
    linear_bias_backward_kernel1(T* __restrict__ db, const T* __restrict__ dy, int64_t m,
                                 int64_t out) {
  __shared__ T part[kColsY][kColsX];
  const int tx = threadIdx.x, ty = threadIdx.y;
  const int64_t tiles = ceil_div<int64_t>(out, kColsX);
  for (int64_t t = blockIdx.x; t < tiles; t += gridDim.x) {
    const int64_t o = t * kColsX + tx;
    T acc = T(0);
    if (o < out)
      for (int64_t r = ty; r < m; r += kColsY) acc += dy[r * out + o];
    part[ty][tx] = acc;
    __syncthreads();
    if (ty == 0 && o < out) {
      T s = part[0][tx];
#pragma unroll
      for (int k = 1; k < kColsY; ++k) s += part[k][tx];
      db[o] = s;
    }
    __syncthreads();
  }
}

}  // namespace

// ---- launchers

template <typename T>
void linear_forward_cuda(T* y, const T* x, const T* w, const T* b, const LinearShape& s,
                         cudaStream_t stream) {
  if (s.m <= 0 || s.out <= 0 || y == nullptr) return;
  // A(i = m, k) = x[m*IN + k]; B(k, j = o) = w[o*IN + k]; both contiguous along k.
  gemm::gemm<T>(gemm::Strided<T, true>{x, s.in, 1}, gemm::Strided<T, true>{w, s.in, 1},
                gemm::RowMajorStore<T>{y, s.out, 0, b}, s.m, s.out, s.in, stream);
}

template <typename T>
void linear_backward_cuda(T* dx, T* dw, T* db, const T* dy, const T* x, const T* w,
                          const LinearShape& s, cudaStream_t stream) {
  if (dx != nullptr && s.m > 0 && s.in > 0) {
    // A(i = m, k = o) = dy[m*OUT + o] (along k); B(k = o, j = in) = w[o*IN + j] (along j).
    gemm::gemm<T>(gemm::Strided<T, true>{dy, s.out, 1}, gemm::Strided<T, false>{w, 1, s.in},
                  gemm::RowMajorStore<T>{dx, s.in, 0, nullptr}, s.m, s.in, s.out, stream);
  }
  if (dw != nullptr && s.out > 0 && s.in > 0) {
    // A(i = o, k = m) = dy[m*OUT + o] (along i); B(k = m, j = in) = x[m*IN + j] (along j).
    // With M == 0 the GEMM has no chunk and writes zeros.
    gemm::gemm_rowmajor_long_k<T>(dw, gemm::Strided<T, false>{dy, 1, s.out},
                                  gemm::Strided<T, false>{x, 1, s.in}, s.out, s.in, s.m, stream);
  }
  if (db != nullptr && s.out > 0) {
    if (s.m <= 0) {
      CUDA_CHECK(cudaMemsetAsync(db, 0, static_cast<size_t>(s.out) * sizeof(T), stream));
    } else {
      linear_bias_backward_kernel1<T>
          <<<grid_blocks(ceil_div<int64_t>(s.out, kColsX), 1), dim3(kColsX, kColsY), 0, stream>>>(
              db, dy, s.m, s.out);
      CUDA_CHECK_LAUNCH();
    }
  }
}

#define LF_INSTANTIATE(T)                                                                     \
  template void linear_forward_cuda<T>(T*, const T*, const T*, const T*, const LinearShape&,  \
                                       cudaStream_t);                                         \
  template void linear_backward_cuda<T>(T*, T*, T*, const T*, const T*, const T*,             \
                                        const LinearShape&, cudaStream_t);
LF_INSTANTIATE(float)
LF_INSTANTIATE(double)
#undef LF_INSTANTIATE

}  // namespace lf
