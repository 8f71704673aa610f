// AVX-512 GEMM microkernels (see gemm_ukernels.h for the panel layouts).
//   float : 8 x 32 tile = 16 zmm accumulators (2 zmm of B per k, 8 broadcasts of A)
//   double: 8 x 16 tile = 16 zmm accumulators
// 8 rows fit the conv/dense M sizes (32, 64, 9*32) with no wasted rows, and 16 independent
// accumulators cover the 4-cycle FMA latency on both 1x512 (Zen4, double-pumped) and 2x512
// (Intel) FMA pipes. Only avx512f instructions are used. Compiled with a target pragma so
// the rest of the module stays on the portable baseline; this file instantiates no library
// templates, so no AVX-512 code can leak into shared inline functions.
#include <immintrin.h>

#include "cpu/gemm_ukernels.h"
#include "cpu/simd.h"

#if LF_X86_SIMD
#pragma GCC push_options
#pragma GCC target("avx512f,avx2,fma")

namespace lf {
namespace {

template <int MR>
void ukr_f32(int64_t kc, const float* a, const float* b, float* c, int64_t ldc,
             bool accumulate) {
  __m512 c0[MR], c1[MR];
#pragma GCC unroll 16
  for (int r = 0; r < MR; ++r) { c0[r] = _mm512_setzero_ps(); c1[r] = _mm512_setzero_ps(); }
#pragma GCC unroll 2
  for (int64_t k = 0; k < kc; ++k) {
    const __m512 b0 = _mm512_load_ps(b);
    const __m512 b1 = _mm512_load_ps(b + 16);
#pragma GCC unroll 16
    for (int r = 0; r < MR; ++r) {
      const __m512 av = _mm512_set1_ps(a[r]);
      c0[r] = _mm512_fmadd_ps(av, b0, c0[r]);
      c1[r] = _mm512_fmadd_ps(av, b1, c1[r]);
    }
    a += MR;
    b += 32;
  }
#pragma GCC unroll 16
  for (int r = 0; r < MR; ++r) {
    float* cr = c + r * ldc;
    if (accumulate) {
      c0[r] = _mm512_add_ps(c0[r], _mm512_loadu_ps(cr));
      c1[r] = _mm512_add_ps(c1[r], _mm512_loadu_ps(cr + 16));
    }
    _mm512_storeu_ps(cr, c0[r]);
    _mm512_storeu_ps(cr + 16, c1[r]);
  }
}

template <int MR>
void ukr_f64(int64_t kc, const double* a, const double* b, double* c, int64_t ldc,
             bool accumulate) {
  __m512d c0[MR], c1[MR];
#pragma GCC unroll 16
  for (int r = 0; r < MR; ++r) { c0[r] = _mm512_setzero_pd(); c1[r] = _mm512_setzero_pd(); }
#pragma GCC unroll 2
  for (int64_t k = 0; k < kc; ++k) {
    const __m512d b0 = _mm512_load_pd(b);
    const __m512d b1 = _mm512_load_pd(b + 8);
#pragma GCC unroll 16
    for (int r = 0; r < MR; ++r) {
      const __m512d av = _mm512_set1_pd(a[r]);
      c0[r] = _mm512_fmadd_pd(av, b0, c0[r]);
      c1[r] = _mm512_fmadd_pd(av, b1, c1[r]);
    }
    a += MR;
    b += 16;
  }
#pragma GCC unroll 16
  for (int r = 0; r < MR; ++r) {
    double* cr = c + r * ldc;
    if (accumulate) {
      c0[r] = _mm512_add_pd(c0[r], _mm512_loadu_pd(cr));
      c1[r] = _mm512_add_pd(c1[r], _mm512_loadu_pd(cr + 8));
    }
    _mm512_storeu_pd(cr, c0[r]);
    _mm512_storeu_pd(cr + 8, c1[r]);
  }
}

}  // namespace

extern const GemmUkernel<float> kUkrAvx512F32 = {8, 32, 192, 256, 2048, &ukr_f32<8>,
                                                 "avx512 8x32"};
extern const GemmUkernel<double> kUkrAvx512F64 = {8, 16, 192, 256, 2048, &ukr_f64<8>,
                                                  "avx512 8x16"};

}  // namespace lf

#pragma GCC pop_options
#endif
