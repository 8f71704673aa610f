// AVX-512 kernels of the fused conv + relu + pool (conv2d_pool.cpp), float32:
//   conv_pool_row_avx512: the forward of one pooled row, each 2x2 window's four conv outputs
//     in registers for up to 64 output channels, then bias, relu, max;
//   conv_pool_sparse_f32_avx512: the sparse backward (conv2d_pool_sparse.inc), whose channel
//     rows vectorise 16 lanes wide.
#include <immintrin.h>

#include <cstdint>

#include "cpu/simd.h"

#if LF_X86_SIMD
#pragma GCC push_options
#pragma GCC target("avx512f,avx2,fma")
#include "cpu/conv2d_pool_sparse.inc"

namespace lf {

namespace {

// NV vectors (16*NV output channels from kb) of one pooled row ph: per 2x2 window, the four
// conv outputs accumulate over (c, r, s) in registers (4*NV accumulators; per tap NV weight
// loads and 4 broadcasts), then bias, relu and the pool's select.
template <int NV>
void conv_pool_row(float* y, int64_t* idx, const float* xn, int64_t HW, int64_t W,
                   const float* wt, const float* bias, int64_t kb, int64_t K, int64_t Kp,
                   int64_t C, int64_t R, int64_t S, int64_t ph, int64_t PW, int64_t PHW,
                   int64_t OW) {
  alignas(64) float ty[16 * NV];
  alignas(64) int32_t tc[16 * NV];
  const __m512 zero = _mm512_setzero_ps();
  const int64_t RS = R * S;
  for (int64_t pw = 0; pw < PW; ++pw) {
    __m512 acc[4][NV];
    for (int p = 0; p < 4; ++p)
      for (int v = 0; v < NV; ++v) acc[p][v] = zero;
    const float* x0 = xn + 2 * ph * W + 2 * pw;
    for (int64_t c = 0; c < C; ++c) {
      const float* xc = x0 + c * HW;
      const float* wc = wt + (c * RS) * Kp + kb;
      for (int64_t r = 0; r < R; ++r) {
        const float* xr = xc + r * W;
        for (int64_t s = 0; s < S; ++s) {
          const float* wp = wc + (r * S + s) * Kp;
          const __m512 b0 = _mm512_set1_ps(xr[s]), b1 = _mm512_set1_ps(xr[s + 1]);
          const __m512 b2 = _mm512_set1_ps(xr[W + s]), b3 = _mm512_set1_ps(xr[W + s + 1]);
          for (int v = 0; v < NV; ++v) {
            const __m512 wv = _mm512_load_ps(wp + 16 * v);
            acc[0][v] = _mm512_fmadd_ps(b0, wv, acc[0][v]);
            acc[1][v] = _mm512_fmadd_ps(b1, wv, acc[1][v]);
            acc[2][v] = _mm512_fmadd_ps(b2, wv, acc[2][v]);
            acc[3][v] = _mm512_fmadd_ps(b3, wv, acc[3][v]);
          }
        }
      }
    }
    // bias, relu (x < 0 ? 0 : x, NaN kept), then the pool's rule in its order a, b, c, d: a
    // later value wins when greater or NaN.
    const int32_t cell[4] = {0, 1, static_cast<int32_t>(OW), static_cast<int32_t>(OW + 1)};
    for (int v = 0; v < NV; ++v) {
      const __m512 bv = _mm512_load_ps(bias + kb + 16 * v);
      __m512 m = zero;
      __m512i cv = _mm512_setzero_si512();
      for (int p = 0; p < 4; ++p) {
        const __m512 a = _mm512_add_ps(bv, acc[p][v]);
        const __m512 rv = _mm512_mask_mov_ps(a, _mm512_cmp_ps_mask(a, zero, _CMP_LT_OQ), zero);
        if (p == 0) {
          m = rv;
          continue;
        }
        const __mmask16 take =
            _mm512_cmp_ps_mask(rv, m, _CMP_GT_OQ) | _mm512_cmp_ps_mask(rv, rv, _CMP_UNORD_Q);
        m = _mm512_mask_mov_ps(m, take, rv);
        cv = _mm512_mask_mov_epi32(cv, take, _mm512_set1_epi32(cell[p]));
      }
      _mm512_store_ps(ty + 16 * v, m);
      _mm512_store_si512(reinterpret_cast<__m512i*>(tc + 16 * v), cv);
    }
    const int64_t o = ph * PW + pw, base = 2 * ph * OW + 2 * pw;
    const int64_t kn = K - kb < 16 * NV ? K - kb : 16 * NV;
    for (int64_t l = 0; l < kn; ++l) {
      y[(kb + l) * PHW + o] = ty[l];
      idx[(kb + l) * PHW + o] = base + tc[l];
    }
  }
}

}  // namespace

void conv_pool_row_avx512(float* y, int64_t* idx, const float* xn, int64_t HW, int64_t W,
                          const float* wt, const float* bias, int64_t K, int64_t Kp, int64_t C,
                          int64_t R, int64_t S, int64_t ph, int64_t PW, int64_t PHW,
                          int64_t OW) {
  for (int64_t kb = 0; kb < Kp;) {
    const int64_t left = (Kp - kb) / 16;
    if (left >= 4) {
      conv_pool_row<4>(y, idx, xn, HW, W, wt, bias, kb, K, Kp, C, R, S, ph, PW, PHW, OW);
      kb += 64;
    } else if (left >= 2) {
      conv_pool_row<2>(y, idx, xn, HW, W, wt, bias, kb, K, Kp, C, R, S, ph, PW, PHW, OW);
      kb += 32;
    } else {
      conv_pool_row<1>(y, idx, xn, HW, W, wt, bias, kb, K, Kp, C, R, S, ph, PW, PHW, OW);
      kb += 16;
    }
  }
}

void conv_pool_sparse_f32_avx512(float* dxh, float* dwt, float* dbt, const float* dy,
                                 const int64_t* idx, const float* y, const float* xh,
                                 const float* wt, int64_t n0, int64_t n1, int64_t K, int64_t C,
                                 int64_t R, int64_t S, int64_t OH, int64_t OW, int64_t PHW,
                                 int64_t Hp, int64_t Wp) {
  conv_pool_sparse_kernel<float>(dxh, dwt, dbt, dy, idx, y, xh, wt, n0, n1, K, C, R, S, OH, OW,
                                 PHW, Hp, Wp);
}
}  // namespace lf
#pragma GCC pop_options
#else
namespace lf {
void conv_pool_row_avx512(float*, int64_t*, const float*, int64_t, int64_t, const float*,
                          const float*, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t,
                          int64_t, int64_t, int64_t) {}
void conv_pool_sparse_f32_avx512(float*, float*, float*, const float*, const int64_t*,
                                 const float*, const float*, const float*, int64_t, int64_t,
                                 int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t,
                                 int64_t, int64_t) {}
}  // namespace lf
#endif
