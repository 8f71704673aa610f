// AVX-512 kernels of the fused conv + relu + pool (conv2d_pool.cpp), float32:
//   conv1_pool_row_avx512: the forward for one input channel (the first layer), each 2x2
//     window's four conv outputs in registers for 16 output channels, then bias, relu, max;
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

void conv1_pool_row_avx512(float* y, int64_t* idx, const float* xn, int64_t W, const float* wt,
                           const float* bias, int64_t K, int64_t Kp, int64_t R, int64_t S,
                           int64_t ph, int64_t PW, int64_t PHW, int64_t OW) {
  alignas(64) float ty[16];
  alignas(64) int32_t tc[16];
  const __m512 zero = _mm512_setzero_ps();
  for (int64_t kb = 0; kb < Kp; kb += 16) {
    const __m512 bv = _mm512_load_ps(bias + kb);
    const int64_t kn = K - kb < 16 ? K - kb : 16;
    for (int64_t pw = 0; pw < PW; ++pw) {
      __m512 a0 = zero, a1 = zero, a2 = zero, a3 = zero;
      const float* x0 = xn + 2 * ph * W + 2 * pw;
      for (int64_t r = 0; r < R; ++r) {
        const float* xr = x0 + r * W;
        for (int64_t s = 0; s < S; ++s) {
          const __m512 wv = _mm512_load_ps(wt + (r * S + s) * Kp + kb);
          a0 = _mm512_fmadd_ps(_mm512_set1_ps(xr[s]), wv, a0);
          a1 = _mm512_fmadd_ps(_mm512_set1_ps(xr[s + 1]), wv, a1);
          a2 = _mm512_fmadd_ps(_mm512_set1_ps(xr[W + s]), wv, a2);
          a3 = _mm512_fmadd_ps(_mm512_set1_ps(xr[W + s + 1]), wv, a3);
        }
      }
      // bias, relu (x < 0 ? 0 : x, NaN kept), then the pool's rule in its order a, b, c, d:
      // a later value wins when greater or NaN.
      const __m512 v[4] = {_mm512_add_ps(bv, a0), _mm512_add_ps(bv, a1), _mm512_add_ps(bv, a2),
                           _mm512_add_ps(bv, a3)};
      const int32_t cell[4] = {0, 1, static_cast<int32_t>(OW), static_cast<int32_t>(OW + 1)};
      __m512 m = _mm512_mask_mov_ps(v[0], _mm512_cmp_ps_mask(v[0], zero, _CMP_LT_OQ), zero);
      __m512i c = _mm512_setzero_si512();
      for (int t = 1; t < 4; ++t) {
        const __m512 rv = _mm512_mask_mov_ps(v[t], _mm512_cmp_ps_mask(v[t], zero, _CMP_LT_OQ), zero);
        const __mmask16 take =
            _mm512_cmp_ps_mask(rv, m, _CMP_GT_OQ) | _mm512_cmp_ps_mask(rv, rv, _CMP_UNORD_Q);
        m = _mm512_mask_mov_ps(m, take, rv);
        c = _mm512_mask_mov_epi32(c, take, _mm512_set1_epi32(cell[t]));
      }
      _mm512_store_ps(ty, m);
      _mm512_store_si512(reinterpret_cast<__m512i*>(tc), c);
      const int64_t o = ph * PW + pw, base = 2 * ph * OW + 2 * pw;
      for (int64_t l = 0; l < kn; ++l) {
        y[(kb + l) * PHW + o] = ty[l];
        idx[(kb + l) * PHW + o] = base + tc[l];
      }
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
void conv1_pool_row_avx512(float*, int64_t*, const float*, int64_t, const float*, const float*,
                           int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t,
                           int64_t) {}
void conv_pool_sparse_f32_avx512(float*, float*, float*, const float*, const int64_t*,
                                 const float*, const float*, const float*, int64_t, int64_t,
                                 int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t,
                                 int64_t, int64_t) {}
}  // namespace lf
#endif
