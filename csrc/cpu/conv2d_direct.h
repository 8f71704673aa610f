// Direct (im2col-free) float32 convolution for stride 1 and dilation 1, NCHW, on the
// AVX-512 path: the register tile is NP output pixels of one row x 16*NV output channels,
// the input is broadcast from memory and the packed weights give one vector per channel
// block, so nothing is copied per tap and no tile lanes are wasted on odd widths (11, 13).
//   forward : y  = x (*) W               (needs C*R*S taps per output)
//   dx      : dx = pad(dy) (*) rot180(W)^T  (the same kernel with C and K swapped); for an
//             unpadded 3-wide kernel whose whole dx row fits one tile, a variant reads dy
//             unpadded and skips the taps that would fall on the zero border
//   dW      : dW[k, c, r, s] = sum_{n, p} dy[n, k, p] * x[n, c, p + (r, s)], vectorised over k
// The microkernels (conv2d_direct_avx512.cpp) use intrinsics only; packing, padding,
// threading and the transposed stores live in conv2d_direct.cpp on the baseline ISA.
#pragma once
#include <cstdint>

#include "shapes.h"

namespace lf {

// out[p*L + l] = sum_{c<C, r<R, s<S} x[c*xcs + r*xrs + s + p] * w[c*wcs + (r*S + s)*L + l],
// L = 16*NV, for p < NP (R may be a sub-range of the kernel rows: wcs keeps the full stride).
using DirectFwdUkr = void (*)(const float* x, int64_t xcs, int64_t xrs, int64_t C, int64_t R,
                              int64_t S, const float* w, int64_t wcs, float* out);
// out[t*L + l] (+)= sum_{n<nimg, i<OH, j<OW} x[n*xns + off[t] + i*xrs + j] * d[n*dns + (i*OW + j)*ldd + l]
// for t < NT, L = 16*NV; accumulate adds to out instead of overwriting it.
using DirectDwUkr = void (*)(const float* x, int64_t xns, int64_t xrs, const int64_t* off,
                             const float* d, int64_t ldd, int64_t dns, int64_t nimg, int64_t OH,
                             int64_t OW, float* out, bool accumulate);

constexpr int kDirectMaxNV = 4;
// Largest pixel (forward) / tap (dW) tile for NV vectors: at most 28 accumulators.
constexpr int kDirectMaxTile[kDirectMaxNV] = {12, 14, 8, 6};
DirectFwdUkr direct_fwd_ukr_avx512(int nv, int np);
DirectDwUkr direct_dw_ukr_avx512(int nv, int nt);
// The dx kernel of an unpadded convolution with S = 3 (3 <= np <= kDirectMaxTile[nv - 1]):
// the forward contract with x an unpadded dy row of np - 2 columns read at column p + s - 2,
// the pairs (p, s) outside [0, np - 2) skipped (they would read zeros).
DirectFwdUkr direct_fullcorr3_ukr_avx512(int nv, int np);
// dst[l*ldd + p] = act(tile[p*16*nv + l] + bias[l]) for l < kn, p < np (the (pixel, channel)
// tile of a forward kernel as kn channel rows; act is relu or none, bias may be nullptr).
void direct_store_tile_avx512(const float* tile, int nv, int64_t np, int64_t kn, const float* bias,
                              bool relu, float* dst, int64_t ldd);
// dst[p*Kp + k] = dy[k*P + p] (0 where mask[k*P + p] > 0 fails, mask may be nullptr) for
// p < P, k < Kp (0 for k >= K); dst 64-byte aligned, Kp a multiple of 16. sums (may be
// nullptr): sums[k] = sum over p of dst[p*Kp + k], in the order of p, for k < K.
void direct_transpose_dy_avx512(const float* dy, const float* mask, int64_t K, int64_t P, int64_t Kp,
                                float* dst, float* sums);

// One input channel, 3x3 taps (conv 1): `rows` output rows of y[k*ldk + i*OW + j] =
// act(bias[k] + sum_{r,s} x[(i + r)*Wp + j + s] * w[k*9 + r*3 + s]) for k < K, vectorised over 16
// output columns with the 9 shifted input vectors in registers and 4 channels at a time; the
// taps accumulate from zero in (r, s) order, then the bias, as the fused conv + pool does.
void conv_c1_3x3_rows_avx512(float* y, int64_t ldk, const float* x, int64_t Wp, int64_t rows, int64_t OW,
                             const float* w, const float* bias, int64_t K, bool relu);

// True when the direct kernels run this shape on the current SIMD path (float32 only).
bool conv2d_direct_forward_applies(const Conv2dShape& s);
bool conv2d_direct_dx_applies(const Conv2dShape& s);
bool conv2d_direct_dw_applies(const Conv2dShape& s);
bool conv2d_c1_forward_applies(const Conv2dShape& s);
// The forward of conv2d_c1_forward_applies' shapes: conv_c1_3x3_rows_avx512 over (image, band of
// rows) items, the input zero-padded first where the convolution pads.
void conv2d_c1_forward(float* y, const float* x, const float* w, const float* b, const Conv2dShape& s,
                       bool relu);

void conv2d_direct_forward(float* y, const float* x, const float* w, const float* b,
                           const Conv2dShape& s, bool relu);
// relu_y (may be nullptr): the fused relu backward, dy passes only where relu_y > 0; it is
// applied in the copies these kernels make of dy anyway. db (may be nullptr) is summed from
// the same copy.
void conv2d_direct_dx(float* dx, const float* dy, const float* w, const Conv2dShape& s,
                      const float* relu_y);
void conv2d_direct_dw(float* dw, float* db, const float* dy, const float* x, const Conv2dShape& s,
                      const float* relu_y);

}  // namespace lf
