// AVX-512 float32 tanh / sigmoid, and the softmax cross-entropy rows (see vmath.h for the
// algorithms and accuracy).
// Compiled with a target pragma so the rest of the module stays on the portable baseline;
// only intrinsics and file-local functions are used, so no AVX-512 code can leak into
// shared inline functions or template instances.
#include <immintrin.h>

#include <cmath>
#include <limits>

#include "cpu/simd.h"
#include "cpu/vmath.h"

#if LF_X86_SIMD
#pragma GCC push_options
#pragma GCC target("avx512f,avx2,fma")

namespace lf {
namespace {

// Cephes' expf on an argument already clamped to where the reduction is exact: x = n ln2 + r,
// a degree-6 polynomial in r, scaled by 2^n (scalef gives 0 / +inf past the float range).
inline __m512 exp_clamped(__m512 x) {
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 p = _mm512_set1_ps(1.9875691500e-4f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
  const __m512 y = _mm512_add_ps(_mm512_fmadd_ps(_mm512_mul_ps(p, r), r, r), _mm512_set1_ps(1.0f));
  return _mm512_scalef_ps(y, n);
}

// exp(x) for x <= 0; exactly 0 below ln(FLT_MIN). NaN lanes are fixed by the callers.
inline __m512 exp_nonpos(__m512 x) {
  const __m512 lo = _mm512_set1_ps(-87.3365478515625f);
  const __mmask16 under = _mm512_cmp_ps_mask(x, lo, _CMP_LT_OQ);
  return _mm512_maskz_mov_ps(static_cast<__mmask16>(~under), exp_clamped(_mm512_max_ps(x, lo)));
}

inline __m512 abs_ps(__m512 x) {
  return _mm512_castsi512_ps(
      _mm512_and_si512(_mm512_castps_si512(x), _mm512_set1_epi32(0x7fffffff)));
}

inline __m512 tanh_ps(__m512 x) {
  const __m512 ax = abs_ps(x);
  const __m512 one = _mm512_set1_ps(1.0f);
  // Large |x|: (1 - e) / (1 + e), e = exp(-2|x|), with x's sign.
  const __m512 e = exp_nonpos(_mm512_mul_ps(ax, _mm512_set1_ps(-2.0f)));
  __m512 big = _mm512_div_ps(_mm512_sub_ps(one, e), _mm512_add_ps(one, e));
  big = _mm512_castsi512_ps(_mm512_or_si512(
      _mm512_castps_si512(big),
      _mm512_and_si512(_mm512_castps_si512(x), _mm512_set1_epi32(static_cast<int>(0x80000000u)))));
  // Small |x|: x + x * z * P(z), z = x^2.
  const __m512 z = _mm512_mul_ps(x, x);
  __m512 p = _mm512_set1_ps(-5.70498872745e-3f);
  p = _mm512_fmadd_ps(p, z, _mm512_set1_ps(2.06390887954e-2f));
  p = _mm512_fmadd_ps(p, z, _mm512_set1_ps(-5.37397155531e-2f));
  p = _mm512_fmadd_ps(p, z, _mm512_set1_ps(1.33314422036e-1f));
  p = _mm512_fmadd_ps(p, z, _mm512_set1_ps(-3.33332819422e-1f));
  const __m512 small = _mm512_fmadd_ps(_mm512_mul_ps(x, z), p, x);
  const __mmask16 is_small = _mm512_cmp_ps_mask(ax, _mm512_set1_ps(0.625f), _CMP_LT_OQ);
  const __mmask16 nan = _mm512_cmp_ps_mask(x, x, _CMP_UNORD_Q);
  return _mm512_mask_mov_ps(_mm512_mask_mov_ps(big, is_small, small), nan, x);
}

// sigmoid = 1 / (1 + exp(-x)) over the whole range, without vmath.h's |x| split: exp(-x)
// is Cephes' expf for either sign here (reduction, polynomial, scalef), overflowing to +inf
// for x < -88.7 (giving exactly 0) and underflowing to 0 for x > 88.7 (giving 1). The
// argument is clamped to [-100, 100] so +-inf inputs cannot make inf - inf in the
// reduction; min / max take the NaN operand's side, so NaN comes through as NaN. Five
// vector operations fewer than the split form (selects, abs, NaN fix-up), same accuracy
// (relative error of expf plus one division).
inline __m512 sigmoid_ps(__m512 x) {
  __m512 t = _mm512_sub_ps(_mm512_setzero_ps(), x);
  t = _mm512_max_ps(_mm512_set1_ps(-100.0f), _mm512_min_ps(_mm512_set1_ps(100.0f), t));
  const __m512 e = exp_clamped(t);  // exp(-x): 0 or +inf at the ends
  return _mm512_div_ps(_mm512_set1_ps(1.0f), _mm512_add_ps(_mm512_set1_ps(1.0f), e));
}

// y[i] = F(x[i]) for i < n (y == x allowed).
template <__m512 (*F)(__m512)>
inline void apply(float* y, const float* x, int64_t n) {
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) _mm512_storeu_ps(y + i, F(_mm512_loadu_ps(x + i)));
  if (i < n) {
    const __mmask16 m = static_cast<__mmask16>((1u << (n - i)) - 1u);
    _mm512_mask_storeu_ps(y + i, m, F(_mm512_maskz_loadu_ps(m, x + i)));
  }
}

inline __mmask16 tail_mask(int64_t left) { return static_cast<__mmask16>((1u << left) - 1u); }

// The max m of x[0, c) (c >= 1), and the sum of exp(x - m), each exp also stored to e when
// e is not null. The sum is NaN when any x - m is (a NaN logit, or a max of +-inf), as the
// scalar form's would be: exp_nonpos alone would turn a NaN lane into a tiny number.
inline float max_and_exp_sum(const float* x, int64_t c, float* e, float* max_out) {
  __m512 vm = _mm512_set1_ps(-std::numeric_limits<float>::infinity());
  int64_t j = 0;
  for (; j + 16 <= c; j += 16) vm = _mm512_max_ps(vm, _mm512_loadu_ps(x + j));
  const __mmask16 tail = tail_mask(c - j);
  if (tail) vm = _mm512_mask_max_ps(vm, tail, vm, _mm512_maskz_loadu_ps(tail, x + j));
  const float m = _mm512_reduce_max_ps(vm);
  const __m512 mv = _mm512_set1_ps(m);
  __m512 acc = _mm512_setzero_ps();
  __mmask16 nan = 0;
  for (j = 0; j + 16 <= c; j += 16) {
    const __m512 d = _mm512_sub_ps(_mm512_loadu_ps(x + j), mv);
    nan |= _mm512_cmp_ps_mask(d, d, _CMP_UNORD_Q);
    const __m512 v = exp_nonpos(d);
    if (e) _mm512_storeu_ps(e + j, v);
    acc = _mm512_add_ps(acc, v);
  }
  if (tail) {
    const __m512 d = _mm512_sub_ps(_mm512_maskz_loadu_ps(tail, x + j), mv);
    nan |= _mm512_mask_cmp_ps_mask(tail, d, d, _CMP_UNORD_Q);
    const __m512 v = exp_nonpos(d);
    if (e) _mm512_mask_storeu_ps(e + j, tail, v);
    acc = _mm512_mask_add_ps(acc, tail, acc, v);
  }
  *max_out = m;
  return nan ? std::numeric_limits<float>::quiet_NaN() : _mm512_reduce_add_ps(acc);
}

}  // namespace

float logsumexp_f32_avx512(const float* x, int64_t c) {
  float m;
  const float s = max_and_exp_sum(x, c, nullptr, &m);
  return m + std::log(s);
}

void softmax_scaled_f32_avx512(float* y, const float* x, int64_t c, float scale) {
  float m;
  const __m512 k = _mm512_set1_ps(scale / max_and_exp_sum(x, c, y, &m));
  int64_t j = 0;
  for (; j + 16 <= c; j += 16) _mm512_storeu_ps(y + j, _mm512_mul_ps(_mm512_loadu_ps(y + j), k));
  const __mmask16 tail = tail_mask(c - j);
  if (tail) _mm512_mask_storeu_ps(y + j, tail, _mm512_mul_ps(_mm512_maskz_loadu_ps(tail, y + j), k));
}

// exp(x) over the whole range: the argument clamped to [-100, 100] (exp gives 0 / +inf
// there, as past the float range), NaN kept (min / max return their NaN operand here).
inline __m512 exp_ps(__m512 x) {
  return exp_clamped(_mm512_max_ps(_mm512_set1_ps(-100.0f), _mm512_min_ps(_mm512_set1_ps(100.0f), x)));
}

void exp_f32_avx512(float* y, const float* x, int64_t n) { apply<exp_ps>(y, x, n); }

void tanh_f32_avx512(float* y, int64_t n) { apply<tanh_ps>(y, y, n); }
void sigmoid_f32_avx512(float* y, int64_t n) { apply<sigmoid_ps>(y, y, n); }
void tanh_f32_avx512(float* y, const float* x, int64_t n) { apply<tanh_ps>(y, x, n); }
void sigmoid_f32_avx512(float* y, const float* x, int64_t n) { apply<sigmoid_ps>(y, x, n); }

}  // namespace lf

#pragma GCC pop_options
#endif
