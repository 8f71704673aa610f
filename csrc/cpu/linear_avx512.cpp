// AVX-512 inner-product kernel of the dense forward y = x w^T (+ b) for float32:
// x (M, IN) and w (OUT, IN) are both contiguous along IN, so a block of MB rows of x and
// NB rows of w gives MB*NB dot products of vector loads with no packing at all, where the
// packed GEMM would first transpose w into panels (for the documents' Dense(64) on 1600
// inputs the packing costs more than the 6.5 MFLOP themselves). Lanes are summed at the end
// (fixed order, so results do not depend on the thread count). The IN tail uses masked
// loads. Intrinsics only, compiled with a target pragma like the GEMM microkernels.
#include <immintrin.h>

#include "cpu/linear_kernels.h"
#include "cpu/simd.h"

#if LF_X86_SIMD
#pragma GCC push_options
#pragma GCC target("avx512f,avx2,fma")

namespace lf {
namespace {

template <int MB, int NB>
void dot_block(const float* x, const float* w, int64_t in, float* y, int64_t ldy,
               const float* b) {
  __m512 acc[MB][NB];
#pragma GCC unroll 4
  for (int i = 0; i < MB; ++i)
#pragma GCC unroll 4
    for (int j = 0; j < NB; ++j) acc[i][j] = _mm512_setzero_ps();
  int64_t k = 0;
  for (; k + 16 <= in; k += 16) {
    __m512 xv[MB];
#pragma GCC unroll 4
    for (int i = 0; i < MB; ++i) xv[i] = _mm512_loadu_ps(x + i * in + k);
#pragma GCC unroll 4
    for (int j = 0; j < NB; ++j) {
      const __m512 wv = _mm512_loadu_ps(w + j * in + k);
#pragma GCC unroll 4
      for (int i = 0; i < MB; ++i) acc[i][j] = _mm512_fmadd_ps(xv[i], wv, acc[i][j]);
    }
  }
  if (k < in) {
    const __mmask16 m = static_cast<__mmask16>((1u << (in - k)) - 1u);
    __m512 xv[MB];
#pragma GCC unroll 4
    for (int i = 0; i < MB; ++i) xv[i] = _mm512_maskz_loadu_ps(m, x + i * in + k);
#pragma GCC unroll 4
    for (int j = 0; j < NB; ++j) {
      const __m512 wv = _mm512_maskz_loadu_ps(m, w + j * in + k);
#pragma GCC unroll 4
      for (int i = 0; i < MB; ++i) acc[i][j] = _mm512_fmadd_ps(xv[i], wv, acc[i][j]);
    }
  }
#pragma GCC unroll 4
  for (int i = 0; i < MB; ++i)
#pragma GCC unroll 4
    for (int j = 0; j < NB; ++j)
      y[i * ldy + j] = _mm512_reduce_add_ps(acc[i][j]) + (b ? b[j] : 0.f);
}

#define LF_ROW(MB) &dot_block<MB, 1>, &dot_block<MB, 2>, &dot_block<MB, 3>, &dot_block<MB, 4>
constexpr DotBlock kBlocks[4][4] = {{LF_ROW(1)}, {LF_ROW(2)}, {LF_ROW(3)}, {LF_ROW(4)}};
#undef LF_ROW

}  // namespace

// Callers check 1 <= mb, nb <= kDotBlock.
DotBlock dot_block_avx512(int mb, int nb) { return kBlocks[mb - 1][nb - 1]; }

}  // namespace lf

#pragma GCC pop_options
#else
namespace lf {
DotBlock dot_block_avx512(int, int) { return nullptr; }
}  // namespace lf
#endif
