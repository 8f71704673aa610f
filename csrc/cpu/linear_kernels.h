// The dense forward's inner-product kernel (linear_avx512.cpp), used by linear.cpp.
#pragma once
#include <cstdint>

namespace lf {

// y[i*ldy + j] = dot(x[i*in : (i+1)*in], w[j*in : (j+1)*in]) (+ b[j]) for i < MB, j < NB.
using DotBlock = void (*)(const float* x, const float* w, int64_t in, float* y, int64_t ldy,
                          const float* b);
constexpr int kDotBlock = 4;  // MB, NB <= 4: 16 zmm accumulators
DotBlock dot_block_avx512(int mb, int nb);

}  // namespace lf
