// AVX2+FMA GEMM microkernels (see gemm_ukernels.h for the panel layouts).
//   float : 6 x 16 tile = 12 ymm accumulators (2 ymm of B per k, 6 broadcasts of A)
//   double: 6 x 8 tile  = 12 ymm accumulators
// 12 accumulators + 2 B vectors + 1 broadcast = 15 of the 16 ymm registers; 12 independent
// FMA chains cover latency 4 x 2 pipes. Compiled with a target pragma so the rest of the
// module stays on the portable baseline; no library templates are instantiated here.
#include <immintrin.h>

#include "cpu/gemm_ukernels.h"
#include "cpu/simd.h"

#if LF_X86_SIMD
#pragma GCC push_options
#pragma GCC target("avx2,fma")

namespace lf {
namespace {

template <int MR>
void ukr_f32(int64_t kc, const float* a, const float* b, float* c, int64_t ldc,
             bool accumulate) {
  __m256 c0[MR], c1[MR];
#pragma GCC unroll 16
  for (int r = 0; r < MR; ++r) { c0[r] = _mm256_setzero_ps(); c1[r] = _mm256_setzero_ps(); }
#pragma GCC unroll 2
  for (int64_t k = 0; k < kc; ++k) {
    const __m256 b0 = _mm256_load_ps(b);
    const __m256 b1 = _mm256_load_ps(b + 8);
#pragma GCC unroll 16
    for (int r = 0; r < MR; ++r) {
      const __m256 av = _mm256_broadcast_ss(a + r);
      c0[r] = _mm256_fmadd_ps(av, b0, c0[r]);
      c1[r] = _mm256_fmadd_ps(av, b1, c1[r]);
    }
    a += MR;
    b += 16;
  }
#pragma GCC unroll 16
  for (int r = 0; r < MR; ++r) {
    float* cr = c + r * ldc;
    if (accumulate) {
      c0[r] = _mm256_add_ps(c0[r], _mm256_loadu_ps(cr));
      c1[r] = _mm256_add_ps(c1[r], _mm256_loadu_ps(cr + 8));
    }
    _mm256_storeu_ps(cr, c0[r]);
    _mm256_storeu_ps(cr + 8, c1[r]);
  }
}

template <int MR>
void ukr_f64(int64_t kc, const double* a, const double* b, double* c, int64_t ldc,
             bool accumulate) {
  __m256d c0[MR], c1[MR];
#pragma GCC unroll 16
  for (int r = 0; r < MR; ++r) { c0[r] = _mm256_setzero_pd(); c1[r] = _mm256_setzero_pd(); }
#pragma GCC unroll 2
  for (int64_t k = 0; k < kc; ++k) {
    const __m256d b0 = _mm256_load_pd(b);
    const __m256d b1 = _mm256_load_pd(b + 4);
#pragma GCC unroll 16
    for (int r = 0; r < MR; ++r) {
      const __m256d av = _mm256_broadcast_sd(a + r);
      c0[r] = _mm256_fmadd_pd(av, b0, c0[r]);
      c1[r] = _mm256_fmadd_pd(av, b1, c1[r]);
    }
    a += MR;
    b += 8;
  }
#pragma GCC unroll 16
  for (int r = 0; r < MR; ++r) {
    double* cr = c + r * ldc;
    if (accumulate) {
      c0[r] = _mm256_add_pd(c0[r], _mm256_loadu_pd(cr));
      c1[r] = _mm256_add_pd(c1[r], _mm256_loadu_pd(cr + 4));
    }
    _mm256_storeu_pd(cr, c0[r]);
    _mm256_storeu_pd(cr + 4, c1[r]);
  }
}

}  // namespace

extern const GemmUkernel<float> kUkrAvx2F32 = {6, 16, 144, 256, 2048, &ukr_f32<6>,
                                               "avx2 6x16"};
extern const GemmUkernel<double> kUkrAvx2F64 = {6, 8, 144, 256, 2048, &ukr_f64<6>,
                                                "avx2 6x8"};

}  // namespace lf

#pragma GCC pop_options
#endif
