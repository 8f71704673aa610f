// Vectorised float32 tanh and sigmoid, in place on n contiguous elements, for the fused
// kernels that apply an activation to a small tile they have just produced (the RNN step
// epilogue); and the exp-based softmax / cross-entropy rows. std::tanh / std::exp are scalar
// library calls (10-20 ns each), which would cost more than the recurrent GEMM itself at the
// RNN's sizes; these run 8 / 16 lanes.
//
// Numerics (both ISAs; checked against float64 in tests/test_rnn.py through ops.rnn):
// - exp(x) for x <= 0 is Cephes' expf: Cody-Waite reduction x = n ln2 + r, a degree-6
//   polynomial in r, scaled by 2^n; below ln(FLT_MIN) it returns exactly 0. ~1-2 ulp.
// - tanh: |x| < 0.625 uses Cephes' odd polynomial x + x^3 P(x^2) (no cancellation near 0);
//   otherwise (1 - e) / (1 + e) with e = exp(-2|x|), sign restored; +-1 for large |x|.
// - sigmoid: e = exp(-|x|), r = 1 / (1 + e), y = x >= 0 ? r : e * r (no overflow anywhere);
//   the AVX-512 form is 1 / (1 + exp(-x)) with exp saturating to 0 / +inf (see its file).
// - NaN in gives NaN out. Tails use masked loads/stores, so any n >= 0 is fine.
// Each ISA lives in its own file compiled with a target pragma (like the GEMM microkernels);
// the dispatcher picks one from simd_path().
#pragma once
#include <cstdint>

namespace lf {

void tanh_f32_avx2(float* y, int64_t n);
void sigmoid_f32_avx2(float* y, int64_t n);
void tanh_f32_avx512(float* y, int64_t n);
void sigmoid_f32_avx512(float* y, int64_t n);
// Out of place (y = f(x)), saving the copy the in-place forms need for a separate output.
void tanh_f32_avx512(float* y, const float* x, int64_t n);
void sigmoid_f32_avx512(float* y, const float* x, int64_t n);

// Softmax cross-entropy rows of c >= 1 logits (vmath_avx512.cpp; exp as above, on x - max):
// logsumexp(x); and y = scale * softmax(x) (y and x distinct). A NaN logit, or a row max of
// +-inf, gives NaN (the whole row of y), as the scalar forms do.
float logsumexp_f32_avx512(const float* x, int64_t c);
void softmax_scaled_f32_avx512(float* y, const float* x, int64_t c, float scale);
// y = exp(x) for any x (0 / +inf past the float range, NaN kept).
void exp_f32_avx512(float* y, const float* x, int64_t n);

// eltwise_avx512.cpp: the cheap elementwise loops on one contiguous range (float32);
// `stream`: write the output with non-temporal stores (simd.h, stream_min_bytes).
void relu_f32_avx512(float* y, const float* x, int64_t n, bool stream);
void relu_bwd_f32_avx512(float* dx, const float* dy, const float* x, int64_t n, bool stream);
void sigmoid_bwd_f32_avx512(float* dx, const float* dy, const float* y, int64_t n, bool stream);
void tanh_bwd_f32_avx512(float* dx, const float* dy, const float* y, int64_t n, bool stream);

}  // namespace lf
