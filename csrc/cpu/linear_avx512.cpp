// AVX-512 kernels of the dense layer for float32.
// Forward y = x w^T (+ b), inner products:
// x (M, IN) and w (OUT, IN) are both contiguous along IN, so a block of MB rows of x and
// NB rows of w gives MB*NB dot products of vector loads with no packing at all, where the
// packed GEMM would first transpose w into panels (for the documents' Dense(64) on 1600
// inputs the packing costs more than the 6.5 MFLOP themselves). Lanes are summed at the end
// (fixed order, so results do not depend on the thread count). The IN tail uses masked
// loads.
// Weight gradient dw = dy^T x for few outputs, outer products: each row m of x (contiguous
// along IN) is loaded once per block and scaled by the block's NO values of dy's row m, which
// are broadcast straight from dy, so neither operand is packed (the GEMM's packing had cost
// 12 of the 18 us of the documents' Dense(10) backward at batch 256). Rows are added in
// order m = 0..M-1, whatever the thread count.
// Intrinsics only, compiled with a target pragma like the GEMM microkernels.
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

template <int NO, int NV>
void outer_block(const float* dy, int64_t ldo, const float* x, int64_t ldx, int64_t M, int64_t ni,
                 float* dw, int64_t lddw) {
  __mmask16 mask[NV];
#pragma GCC unroll 4
  for (int v = 0; v < NV; ++v) {
    const int64_t left = ni - 16 * v;
    mask[v] = left >= 16 ? static_cast<__mmask16>(0xFFFF) : static_cast<__mmask16>((1u << left) - 1u);
  }
  __m512 acc[NO][NV];
#pragma GCC unroll 6
  for (int o = 0; o < NO; ++o)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) acc[o][v] = _mm512_setzero_ps();
  for (int64_t m = 0; m < M; ++m) {
    __m512 xv[NV];
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) xv[v] = _mm512_maskz_loadu_ps(mask[v], x + m * ldx + 16 * v);
#pragma GCC unroll 6
    for (int o = 0; o < NO; ++o) {
      const __m512 d = _mm512_set1_ps(dy[m * ldo + o]);
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) acc[o][v] = _mm512_fmadd_ps(d, xv[v], acc[o][v]);
    }
  }
#pragma GCC unroll 6
  for (int o = 0; o < NO; ++o)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) _mm512_mask_storeu_ps(dw + o * lddw + 16 * v, mask[v], acc[o][v]);
}

#define LF_ROW(NO) &outer_block<NO, 1>, &outer_block<NO, 2>, &outer_block<NO, 3>, &outer_block<NO, 4>
constexpr OuterBlock kOuter[kOuterRows][kOuterVecs] = {{LF_ROW(1)}, {LF_ROW(2)}, {LF_ROW(3)},
                                                       {LF_ROW(4)}, {LF_ROW(5)}, {LF_ROW(6)}};
#undef LF_ROW

}  // namespace

// Callers check 1 <= mb, nb <= kDotBlock.
DotBlock dot_block_avx512(int mb, int nb) { return kBlocks[mb - 1][nb - 1]; }
// Callers check 1 <= no <= kOuterRows, 1 <= nv <= kOuterVecs.
OuterBlock outer_block_avx512(int no, int nv) { return kOuter[no - 1][nv - 1]; }

}  // namespace lf

#pragma GCC pop_options
#else
namespace lf {
DotBlock dot_block_avx512(int, int) { return nullptr; }
OuterBlock outer_block_avx512(int, int) { return nullptr; }
}  // namespace lf
#endif
