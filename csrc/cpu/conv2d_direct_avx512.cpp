// AVX-512 microkernels of the direct convolution (see conv2d_direct.h for the contracts).
//   forward/dx: NP pixels x NV zmm of output channels, NP*NV <= 24 accumulators; per tap
//               NV weight loads and NP broadcasts feed NP*NV FMAs.
//   dx (full) : as forward, for S = 3 and an unpadded convolution, on dy itself: the pairs
//               of pixel and tap that would read dy's zero border are left out at compile time.
//   dW        : NT taps x NV zmm of output channels, accumulated over every pixel of the
//               images given, so the tile stays in registers for the whole reduction.
// Compiled with a target pragma and intrinsics only (no library templates), like the GEMM
// microkernels, so no AVX-512 code can leak into inline functions shared with the baseline.
#include <immintrin.h>

#include "cpu/conv2d_direct.h"
#include "cpu/simd.h"

#if LF_X86_SIMD
#pragma GCC push_options
#pragma GCC target("avx512f,avx2,fma")

namespace lf {
namespace {

template <int NV, int NP>
void fwd_ukr(const float* x, int64_t xcs, int64_t xrs, int64_t C, int64_t R, int64_t S,
             const float* w, int64_t wcs, float* out) {
  __m512 acc[NP][NV];
#pragma GCC unroll 32
  for (int p = 0; p < NP; ++p)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) acc[p][v] = _mm512_setzero_ps();
  for (int64_t c = 0; c < C; ++c) {
    const float* wc = w + c * wcs;
    for (int64_t r = 0; r < R; ++r) {
      const float* xr = x + c * xcs + r * xrs;
      for (int64_t s = 0; s < S; ++s) {
        __m512 wv[NV];
#pragma GCC unroll 4
        for (int v = 0; v < NV; ++v) wv[v] = _mm512_load_ps(wc + 16 * v);
#pragma GCC unroll 32
        for (int p = 0; p < NP; ++p) {
          const __m512 xb = _mm512_set1_ps(xr[s + p]);
#pragma GCC unroll 4
          for (int v = 0; v < NV; ++v) acc[p][v] = _mm512_fmadd_ps(xb, wv[v], acc[p][v]);
        }
        wc += 16 * NV;
      }
    }
  }
#pragma GCC unroll 32
  for (int p = 0; p < NP; ++p)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) _mm512_store_ps(out + (p * NV + v) * 16, acc[p][v]);
}

// The dx correlation of an unpadded (pw = 0) convolution with S = 3, without the zero
// columns: out[p] = sum_q w[q] * d[p + q - (S - 1)] over the q where that column lies in
// [0, NP - S + 1) (a row of dy). NP and S are compile-time, so the unrolled loops keep only
// the real (p, q) pairs: 11 of 13 per tap on the documents' conv 2, and no padded copy of dy.
template <int NV, int NP>
void fullcorr_ukr(const float* x, int64_t xcs, int64_t xrs, int64_t C, int64_t R, int64_t /*S*/,
                  const float* w, int64_t wcs, float* out) {
  constexpr int S = 3, IW = NP - S + 1;
  __m512 acc[NP][NV];
#pragma GCC unroll 32
  for (int p = 0; p < NP; ++p)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) acc[p][v] = _mm512_setzero_ps();
  for (int64_t c = 0; c < C; ++c) {
    const float* wc = w + c * wcs;
    for (int64_t r = 0; r < R; ++r) {
      const float* xr = x + c * xcs + r * xrs;
#pragma GCC unroll 3
      for (int q = 0; q < S; ++q) {
        __m512 wv[NV];
#pragma GCC unroll 4
        for (int v = 0; v < NV; ++v) wv[v] = _mm512_load_ps(wc + 16 * v);
#pragma GCC unroll 32
        for (int p = 0; p < NP; ++p) {
          const int col = p + q - (S - 1);
          if (col < 0 || col >= IW) continue;
          const __m512 xb = _mm512_set1_ps(xr[col]);
#pragma GCC unroll 4
          for (int v = 0; v < NV; ++v) acc[p][v] = _mm512_fmadd_ps(xb, wv[v], acc[p][v]);
        }
        wc += 16 * NV;
      }
    }
  }
#pragma GCC unroll 32
  for (int p = 0; p < NP; ++p)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) _mm512_store_ps(out + (p * NV + v) * 16, acc[p][v]);
}

template <int NV, int NT>
void dw_ukr(const float* x, int64_t xns, int64_t xrs, const int64_t* off, const float* d,
            int64_t ldd, int64_t dns, int64_t nimg, int64_t OH, int64_t OW, float* out) {
  __m512 acc[NT][NV];
#pragma GCC unroll 32
  for (int t = 0; t < NT; ++t)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) acc[t][v] = _mm512_setzero_ps();
  int64_t o[NT];
#pragma GCC unroll 32
  for (int t = 0; t < NT; ++t) o[t] = off[t];
  for (int64_t n = 0; n < nimg; ++n) {
    const float* xn = x + n * xns;
    const float* dn = d + n * dns;
    for (int64_t i = 0; i < OH; ++i) {
      const float* xr = xn + i * xrs;
      const float* dr = dn + i * OW * ldd;
      for (int64_t j = 0; j < OW; ++j) {
        __m512 dv[NV];
#pragma GCC unroll 4
        for (int v = 0; v < NV; ++v) dv[v] = _mm512_load_ps(dr + j * ldd + 16 * v);
#pragma GCC unroll 32
        for (int t = 0; t < NT; ++t) {
          const __m512 xb = _mm512_set1_ps(xr[o[t] + j]);
#pragma GCC unroll 4
          for (int v = 0; v < NV; ++v) acc[t][v] = _mm512_fmadd_ps(xb, dv[v], acc[t][v]);
        }
      }
    }
  }
#pragma GCC unroll 32
  for (int t = 0; t < NT; ++t)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) _mm512_store_ps(out + (t * NV + v) * 16, acc[t][v]);
}

// Every (NV, tile) instantiation in constant-initialised tables (no start-up code runs in
// this AVX-512 translation unit).
#define LF_T6(F, NV) &F<NV, 1>, &F<NV, 2>, &F<NV, 3>, &F<NV, 4>, &F<NV, 5>, &F<NV, 6>
#define LF_T8(F, NV) LF_T6(F, NV), &F<NV, 7>, &F<NV, 8>
#define LF_T12(F, NV) LF_T8(F, NV), &F<NV, 9>, &F<NV, 10>, &F<NV, 11>, &F<NV, 12>
#define LF_T14(F, NV) LF_T12(F, NV), &F<NV, 13>, &F<NV, 14>
constexpr DirectFwdUkr kFwd1[] = {LF_T12(fwd_ukr, 1)};
constexpr DirectFwdUkr kFwd2[] = {LF_T14(fwd_ukr, 2)};
constexpr DirectFwdUkr kFwd3[] = {LF_T8(fwd_ukr, 3)};
constexpr DirectFwdUkr kFwd4[] = {LF_T6(fwd_ukr, 4)};
constexpr DirectDwUkr kDw1[] = {LF_T12(dw_ukr, 1)};
constexpr DirectDwUkr kDw2[] = {LF_T14(dw_ukr, 2)};
constexpr DirectDwUkr kDw3[] = {LF_T8(dw_ukr, 3)};
constexpr DirectDwUkr kDw4[] = {LF_T6(dw_ukr, 4)};
// Full correlation: NP from 3 (a one-column dy row) to the tile limit; index NP - 3.
#define LF_F6(NV) &fullcorr_ukr<NV, 3>, &fullcorr_ukr<NV, 4>, &fullcorr_ukr<NV, 5>, &fullcorr_ukr<NV, 6>
#define LF_F8(NV) LF_F6(NV), &fullcorr_ukr<NV, 7>, &fullcorr_ukr<NV, 8>
#define LF_F12(NV) LF_F8(NV), &fullcorr_ukr<NV, 9>, &fullcorr_ukr<NV, 10>, &fullcorr_ukr<NV, 11>, &fullcorr_ukr<NV, 12>
constexpr DirectFwdUkr kFull1[] = {LF_F12(1)};
constexpr DirectFwdUkr kFull2[] = {LF_F12(2), &fullcorr_ukr<2, 13>, &fullcorr_ukr<2, 14>};
constexpr DirectFwdUkr kFull3[] = {LF_F8(3)};
constexpr DirectFwdUkr kFull4[] = {LF_F6(4)};
#undef LF_F12
#undef LF_F8
#undef LF_F6
#undef LF_T14
#undef LF_T12
#undef LF_T8
#undef LF_T6
constexpr const DirectFwdUkr* kFwd[kDirectMaxNV] = {kFwd1, kFwd2, kFwd3, kFwd4};
constexpr const DirectDwUkr* kDw[kDirectMaxNV] = {kDw1, kDw2, kDw3, kDw4};
constexpr const DirectFwdUkr* kFull[kDirectMaxNV] = {kFull1, kFull2, kFull3, kFull4};

}  // namespace

// Callers check 1 <= nv <= kDirectMaxNV and 1 <= tile <= kDirectMaxTile[nv - 1].
DirectFwdUkr direct_fwd_ukr_avx512(int nv, int np) { return kFwd[nv - 1][np - 1]; }
DirectDwUkr direct_dw_ukr_avx512(int nv, int nt) { return kDw[nv - 1][nt - 1]; }
DirectFwdUkr direct_fullcorr3_ukr_avx512(int nv, int np) { return kFull[nv - 1][np - 3]; }

}  // namespace lf

#pragma GCC pop_options
#else
namespace lf {
DirectFwdUkr direct_fwd_ukr_avx512(int, int) { return nullptr; }
DirectDwUkr direct_dw_ukr_avx512(int, int) { return nullptr; }
DirectFwdUkr direct_fullcorr3_ukr_avx512(int, int) { return nullptr; }
}  // namespace lf
#endif
