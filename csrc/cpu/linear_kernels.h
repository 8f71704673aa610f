// The dense layer's AVX-512 kernels (linear_avx512.cpp), used by linear.cpp: the forward's
// inner products, and the weight gradient's outer products for few outputs.
#pragma once
#include <cstdint>

namespace lf {

// y[i*ldy + j] = dot(x[i*in : (i+1)*in], w[j*in : (j+1)*in]) (+ b[j]) for i < MB, j < NB.
using DotBlock = void (*)(const float* x, const float* w, int64_t in, float* y, int64_t ldy,
                          const float* b);
constexpr int kDotBlock = 4;  // MB, NB <= 4: 16 zmm accumulators
DotBlock dot_block_avx512(int mb, int nb);

// dw[o*lddw + i] = sum_{m<M} dy[m*ldo + o] * x[m*ldx + i] for o < NO, i < ni, ni <= 16*NV.
using OuterBlock = void (*)(const float* dy, int64_t ldo, const float* x, int64_t ldx, int64_t M,
                            int64_t ni, float* dw, int64_t lddw);
constexpr int kOuterRows = 6;  // NO <= 6 outputs x NV <= 4 vectors: 24 zmm accumulators
constexpr int kOuterVecs = 4;
OuterBlock outer_block_avx512(int no, int nv);

}  // namespace lf
