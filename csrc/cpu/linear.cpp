// Dense layer: x (M, IN), w (OUT, IN), b (OUT,), y (M, OUT).
//   forward   y  = x w^T + b       GEMM M x OUT x IN  (B = w^T, a strided view)
//   backward  dx = dy w            GEMM M x IN x OUT
//             dw = dy^T x          GEMM OUT x IN x M  (A = dy^T, a strided view)
//             db = column sums of dy
// Every product goes through gemm_parallel (float32 on the AVX-512 path: the forward with few
// rows or outputs and dw with few outputs use the kernels of linear_avx512.cpp instead),
// which splits one GEMM over the team only when it is big enough to pay for waking it. The
// bias is written first and the GEMM accumulates onto it, saving a pass over y.
#include <algorithm>
#include <type_traits>

#include "cpu/gemm.h"
#include "cpu/linear_kernels.h"
#include "cpu/simd.h"
#include "ops.h"

namespace lf {

namespace {

// float32 forward on the AVX-512 path: 4 x 4 blocks of dot products (linear_avx512.cpp),
// OpenMP over the blocks. Worth it while the GEMM's packing of w^T is a large share of the
// work (few rows), or while w is small enough to stay in L2 (at most 64 outputs: the
// documents' dense layers at batch 256, (256,1600)->64 in 270 us against the GEMM's 350 and
// PyTorch's 290-310; 1024 rows 1.06 ms against 1.25); with many rows and outputs the packed
// GEMM reuses its panels better ((1024,512)->512: 2.8 ms against the dots' 2.9-3.0).
bool linear_forward_dots(float* y, const float* x, const float* w, const float* b,
                         const LinearShape& s) {
  const int64_t M = s.m, IN = s.in, OUT = s.out;
  if (simd_path() != SimdPath::Avx512 || IN < 16 || (M > 64 && OUT > 64)) return false;
  const int64_t mblocks = (M + kDotBlock - 1) / kDotBlock, nblocks = (OUT + kDotBlock - 1) / kDotBlock;
  const int64_t blocks = mblocks * nblocks;
  const int nt = threads_for(M * OUT * IN, blocks);  // multiply-adds: tiny layers stay serial
#pragma omp parallel for num_threads(nt) schedule(static)
  for (int64_t q = 0; q < blocks; ++q) {
    const int64_t i0 = (q / nblocks) * kDotBlock, j0 = (q % nblocks) * kDotBlock;
    const int mb = static_cast<int>(std::min<int64_t>(kDotBlock, M - i0));
    const int nb = static_cast<int>(std::min<int64_t>(kDotBlock, OUT - j0));
    dot_block_avx512(mb, nb)(x + i0 * IN, w + j0 * IN, IN, y + i0 * OUT + j0, OUT,
                             b ? b + j0 : nullptr);
  }
  return true;
}

// float32 dw = dy^T x on the AVX-512 path for at most 16 outputs (the documents' Dense(10)):
// blocks of at most 6 outputs x 64 inputs (linear_avx512.cpp), OpenMP over the blocks. With
// more outputs x would be streamed once per output block; the packed GEMM reuses it better.
bool linear_dw_outer(float* dw, const float* dy, const float* x, const LinearShape& s) {
  const int64_t M = s.m, IN = s.in, OUT = s.out;
  if (simd_path() != SimdPath::Avx512 || OUT > 16) return false;
  const int64_t oblocks = (OUT + kOuterRows - 1) / kOuterRows, ow = (OUT + oblocks - 1) / oblocks;
  const int64_t cols = 16 * kOuterVecs, iblocks = (IN + cols - 1) / cols, blocks = oblocks * iblocks;
  const int nt = threads_for(M * OUT * IN, blocks);  // multiply-adds
#pragma omp parallel for num_threads(nt) schedule(static)
  for (int64_t q = 0; q < blocks; ++q) {
    const int64_t o0 = (q / iblocks) * ow, i0 = (q % iblocks) * cols;
    const int64_t no = std::min(ow, OUT - o0), ni = std::min(cols, IN - i0);
    outer_block_avx512(static_cast<int>(no), static_cast<int>((ni + 15) / 16))(
        dy + o0, OUT, x + i0, IN, M, ni, dw + o0 * IN + i0, IN);
  }
  return true;
}

}  // namespace

template <typename T>
void linear_forward_cpu(T* y, const T* x, const T* w, const T* b, const LinearShape& s) {
  const int64_t M = s.m, IN = s.in, OUT = s.out;
  if (M == 0 || OUT == 0) return;
  if constexpr (std::is_same_v<T, float>) {
    if (linear_forward_dots(y, x, w, b, s)) return;
  }
  if (b) {
    for (int64_t i = 0; i < M; ++i) std::copy(b, b + OUT, y + i * OUT);
  }
  const GemmUkernel<T>& uk = gemm_ukernel<T>();
  gemm_parallel(uk, M, OUT, IN, GemmOperand<T>::strided(x, IN, 1),
                GemmOperand<T>::strided(w, 1, IN), y, OUT, b != nullptr);
}

template <typename T>
void linear_backward_cpu(T* dx, T* dw, T* db, const T* dy, const T* x, const T* w,
                         const LinearShape& s) {
  const int64_t M = s.m, IN = s.in, OUT = s.out;
  const GemmUkernel<T>& uk = gemm_ukernel<T>();
  if (dx && M > 0 && IN > 0) {
    gemm_parallel(uk, M, IN, OUT, GemmOperand<T>::strided(dy, OUT, 1),
                  GemmOperand<T>::strided(w, IN, 1), dx, IN, false);
  }
  if (dw && OUT > 0 && IN > 0) {
    bool done = false;
    if constexpr (std::is_same_v<T, float>) done = linear_dw_outer(dw, dy, x, s);
    if (!done) {
      gemm_parallel(uk, OUT, IN, M, GemmOperand<T>::strided(dy, 1, OUT),
                    GemmOperand<T>::strided(x, IN, 1), dw, IN, false);
    }
  }
  if (db && OUT > 0) {
    // Rows added in order m = 0..M-1 into a vector of OUT partial sums: vectorises along
    // OUT and gives the same bits for any thread count.
    std::fill(db, db + OUT, T(0));
    for (int64_t i = 0; i < M; ++i) {
      const T* row = dy + i * OUT;
      for (int64_t o = 0; o < OUT; ++o) db[o] += row[o];
    }
  }
}

#define LF_INSTANTIATE(T)                                                                  \
  template void linear_forward_cpu<T>(T*, const T*, const T*, const T*, const LinearShape&); \
  template void linear_backward_cpu<T>(T*, T*, T*, const T*, const T*, const T*,           \
                                       const LinearShape&);
LF_INSTANTIATE(float)
LF_INSTANTIATE(double)
#undef LF_INSTANTIATE

}  // namespace lf
