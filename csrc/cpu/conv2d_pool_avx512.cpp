// The sparse conv + relu + pool backward kernel (conv2d_pool_sparse.inc) compiled for
// AVX-512, for float32: its channel rows vectorise 16 lanes wide.
#include <cstdint>

#include "cpu/simd.h"

#if LF_X86_SIMD
#pragma GCC push_options
#pragma GCC target("avx512f,avx2,fma")
#include "cpu/conv2d_pool_sparse.inc"

namespace lf {
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
void conv_pool_sparse_f32_avx512(float*, float*, float*, const float*, const int64_t*,
                                 const float*, const float*, const float*, int64_t, int64_t,
                                 int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t,
                                 int64_t, int64_t) {}
}  // namespace lf
#endif
