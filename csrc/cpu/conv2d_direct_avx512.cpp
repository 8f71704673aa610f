// AVX-512 microkernels of the direct convolution (see conv2d_direct.h for the contracts).
//   forward/dx: NP pixels x NV zmm of output channels, NP*NV <= 24 accumulators; per tap
//               NV weight loads and NP broadcasts feed NP*NV FMAs.
//   dx (full) : as forward, for S = 3 and an unpadded convolution, on dy itself: the pairs
//               of pixel and tap that would read dy's zero border are left out at compile time.
//   dW        : NT taps x NV zmm of output channels, accumulated over every pixel of the
//               images given, so the tile stays in registers for the whole reduction.
//   store     : a (pixel, channel) tile of the forward/dx kernels to NCHW channel rows, with
//               bias and relu, transposed in registers 8 pixels x 16 channels at a time.
//   dy for dW : an image of dy (channels, pixels) to (pixels, channels), with the relu mask
//               and the bias-gradient sums, 16 x 16 blocks transposed in registers.
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

// The register tile of every kernel below: M rows of NV vectors, stored row-major as
// out[(m*NV + v)*16 + lane]. tile_load starts it from such a stored tile, or at zero.
template <int M, int NV>
__attribute__((always_inline)) inline void tile_load(__m512 (&acc)[M][NV], const float* from) {
#pragma GCC unroll 32
  for (int m = 0; m < M; ++m)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v)
      acc[m][v] = from ? _mm512_load_ps(from + (m * NV + v) * 16) : _mm512_setzero_ps();
}

template <int M, int NV>
__attribute__((always_inline)) inline void tile_store(const __m512 (&acc)[M][NV], float* out) {
#pragma GCC unroll 32
  for (int m = 0; m < M; ++m)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) _mm512_store_ps(out + (m * NV + v) * 16, acc[m][v]);
}

template <int NV, int NP>
void fwd_ukr(const float* x, int64_t xcs, int64_t xrs, int64_t C, int64_t R, int64_t S,
             const float* w, int64_t wcs, float* out) {
  __m512 acc[NP][NV];
  tile_load<NP, NV>(acc, nullptr);
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
  tile_store<NP, NV>(acc, out);
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
  tile_load<NP, NV>(acc, nullptr);
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
  tile_store<NP, NV>(acc, out);
}

template <int NV, int NT>
void dw_ukr(const float* x, int64_t xns, int64_t xrs, const int64_t* off, const float* d,
            int64_t ldd, int64_t dns, int64_t nimg, int64_t OH, int64_t OW, float* out,
            bool accumulate) {
  __m512 acc[NT][NV];
  tile_load<NT, NV>(acc, accumulate ? out : nullptr);
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
  tile_store<NT, NV>(acc, out);
}

// m <= 8 tile rows (pixels) of one 16-channel group, bias added and relu applied in
// registers, transposed so each channel's pixels are contiguous, then one store of m pixels
// per channel row (masked when m < 8): 32 shuffles and 16 stores instead of 128 scalar copies.
void store_rows8(const float* tile, int64_t L, int m, __m512 bias, bool relu, float* dst,
                 int64_t ldd, int cn) {
  __m512 r[8];
#pragma GCC unroll 8
  for (int i = 0; i < 8; ++i) {
    r[i] = i < m ? _mm512_add_ps(_mm512_load_ps(tile + i * L), bias) : _mm512_setzero_ps();
    if (relu) r[i] = _mm512_max_ps(r[i], _mm512_setzero_ps());
  }
  // Per 128-bit lane q (channels 4q..4q+3): t pairs rows, u holds one channel's 4 rows.
  __m512 t[8], u[8];
#pragma GCC unroll 4
  for (int i = 0; i < 4; ++i) {
    t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
  }
#pragma GCC unroll 2
  for (int h = 0; h < 2; ++h) {  // rows 0-3, rows 4-7
    const __m512* th = t + 4 * h;
    u[4 * h + 0] = _mm512_shuffle_ps(th[0], th[2], _MM_SHUFFLE(1, 0, 1, 0));
    u[4 * h + 1] = _mm512_shuffle_ps(th[0], th[2], _MM_SHUFFLE(3, 2, 3, 2));
    u[4 * h + 2] = _mm512_shuffle_ps(th[1], th[3], _MM_SHUFFLE(1, 0, 1, 0));
    u[4 * h + 3] = _mm512_shuffle_ps(th[1], th[3], _MM_SHUFFLE(3, 2, 3, 2));
  }
  // Channel 4q + e = lane q of u[e] (rows 0-3) next to lane q of u[4 + e] (rows 4-7).
  const __mmask16 keep = static_cast<__mmask16>((1u << m) - 1u);
#pragma GCC unroll 4
  for (int q = 0; q < 4; ++q) {
    const __m512i idx = _mm512_setr_epi32(4 * q, 4 * q + 1, 4 * q + 2, 4 * q + 3, 16 + 4 * q,
                                          17 + 4 * q, 18 + 4 * q, 19 + 4 * q, 0, 0, 0, 0, 0, 0,
                                          0, 0);
#pragma GCC unroll 4
    for (int e = 0; e < 4; ++e) {
      const int ch = 4 * q + e;
      if (ch >= cn) break;
      const __m512 v = _mm512_permutex2var_ps(u[e], idx, u[4 + e]);
      if (m == 8) {
        _mm256_storeu_ps(dst + ch * ldd, _mm512_castps512_ps256(v));
      } else {
        _mm512_mask_storeu_ps(dst + ch * ldd, keep, v);
      }
    }
  }
}

// 16 rows of 16 floats transposed in registers (r[i] lane j -> r[j] lane i): 64 shuffles.
void transpose16(__m512 r[16]) {
  __m512 t[16], u[16];
#pragma GCC unroll 8
  for (int i = 0; i < 8; ++i) {  // lane q: pairs of rows at columns 4q..4q+3
    t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
  }
#pragma GCC unroll 4
  for (int i = 0; i < 4; ++i) {  // u[4i + e] lane q: rows 4i..4i+3 at column 4q + e
    u[4 * i + 0] = _mm512_shuffle_ps(t[4 * i], t[4 * i + 2], _MM_SHUFFLE(1, 0, 1, 0));
    u[4 * i + 1] = _mm512_shuffle_ps(t[4 * i], t[4 * i + 2], _MM_SHUFFLE(3, 2, 3, 2));
    u[4 * i + 2] = _mm512_shuffle_ps(t[4 * i + 1], t[4 * i + 3], _MM_SHUFFLE(1, 0, 1, 0));
    u[4 * i + 3] = _mm512_shuffle_ps(t[4 * i + 1], t[4 * i + 3], _MM_SHUFFLE(3, 2, 3, 2));
  }
#pragma GCC unroll 4
  for (int e = 0; e < 4; ++e) {  // column 4q + e: lane q of u[e], u[4 + e], u[8 + e], u[12 + e]
    const __m512 v0 = _mm512_shuffle_f32x4(u[e], u[4 + e], _MM_SHUFFLE(1, 0, 1, 0));
    const __m512 v1 = _mm512_shuffle_f32x4(u[e], u[4 + e], _MM_SHUFFLE(3, 2, 3, 2));
    const __m512 v2 = _mm512_shuffle_f32x4(u[8 + e], u[12 + e], _MM_SHUFFLE(1, 0, 1, 0));
    const __m512 v3 = _mm512_shuffle_f32x4(u[8 + e], u[12 + e], _MM_SHUFFLE(3, 2, 3, 2));
    r[e] = _mm512_shuffle_f32x4(v0, v2, _MM_SHUFFLE(2, 0, 2, 0));
    r[4 + e] = _mm512_shuffle_f32x4(v0, v2, _MM_SHUFFLE(3, 1, 3, 1));
    r[8 + e] = _mm512_shuffle_f32x4(v1, v3, _MM_SHUFFLE(2, 0, 2, 0));
    r[12 + e] = _mm512_shuffle_f32x4(v1, v3, _MM_SHUFFLE(3, 1, 3, 1));
  }
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

void direct_transpose_dy_avx512(const float* dy, const float* mask, int64_t K, int64_t P, int64_t Kp,
                                float* dst, float* sums) {
  const __m512 zero = _mm512_setzero_ps();
  for (int64_t k0 = 0; k0 < Kp; k0 += 16) {
    const int64_t kn = K - k0 < 16 ? (K - k0 > 0 ? K - k0 : 0) : 16;
    __m512 acc = zero;  // the block's channel sums, pixels added in order
    for (int64_t p0 = 0; p0 < P; p0 += 16) {
      const int64_t m = P - p0 < 16 ? P - p0 : 16;
      const __mmask16 cols = static_cast<__mmask16>((1u << m) - 1u);
      __m512 r[16];
#pragma GCC unroll 16
      for (int i = 0; i < 16; ++i) {
        if (i >= kn) {
          r[i] = zero;
          continue;
        }
        const int64_t at = (k0 + i) * P + p0;
        r[i] = _mm512_maskz_loadu_ps(cols, dy + at);
        if (mask) {
          const __mmask16 pass = _mm512_cmp_ps_mask(_mm512_maskz_loadu_ps(cols, mask + at), zero, _CMP_GT_OQ);
          r[i] = _mm512_maskz_mov_ps(pass, r[i]);
        }
      }
      transpose16(r);
#pragma GCC unroll 16
      for (int j = 0; j < 16; ++j) {
        if (j >= m) break;
        _mm512_store_ps(dst + (p0 + j) * Kp + k0, r[j]);
        acc = _mm512_add_ps(acc, r[j]);
      }
    }
    if (sums && kn > 0) _mm512_mask_storeu_ps(sums + k0, static_cast<__mmask16>((1u << kn) - 1u), acc);
  }
}

void direct_store_tile_avx512(const float* tile, int nv, int64_t np, int64_t kn, const float* bias,
                              bool relu, float* dst, int64_t ldd) {
  const int64_t L = 16 * nv;
  for (int64_t c0 = 0; c0 < kn; c0 += 16) {
    const int cn = static_cast<int>(kn - c0 < 16 ? kn - c0 : 16);
    const __m512 bv = bias ? _mm512_maskz_loadu_ps(static_cast<__mmask16>((1u << cn) - 1u), bias + c0)
                           : _mm512_setzero_ps();
    for (int64_t p0 = 0; p0 < np; p0 += 8) {
      const int m = static_cast<int>(np - p0 < 8 ? np - p0 : 8);
      store_rows8(tile + p0 * L + c0, L, m, bv, relu, dst + c0 * ldd + p0, ldd, cn);
    }
  }
}

void conv_c1_3x3_rows_avx512(float* y, int64_t ldk, const float* x, int64_t Wp, int64_t rows, int64_t OW,
                             const float* w, const float* bias, int64_t K, bool relu) {
  const __m512 zero = _mm512_setzero_ps();
  // bias, then relu (x < 0 ? 0 : x, NaN kept): the order and rounding of the other kernels.
  const auto finish = [&](__m512 a, int64_t k) {
    a = _mm512_add_ps(_mm512_set1_ps(bias ? bias[k] : 0.f), a);
    return relu ? _mm512_mask_mov_ps(a, _mm512_cmp_ps_mask(a, zero, _CMP_LT_OQ), zero) : a;
  };
  for (int64_t i = 0; i < rows; ++i) {
    for (int64_t j0 = 0; j0 < OW; j0 += 16) {
      const int64_t m = OW - j0 < 16 ? OW - j0 : 16;
      const __mmask16 mk = static_cast<__mmask16>((1u << m) - 1u);
      __m512 in[9];
#pragma GCC unroll 9
      for (int t = 0; t < 9; ++t) in[t] = _mm512_maskz_loadu_ps(mk, x + (i + t / 3) * Wp + j0 + t % 3);
      float* yo = y + i * OW + j0;
      int64_t k = 0;
      for (; k + 4 <= K; k += 4) {
        __m512 a[4] = {zero, zero, zero, zero};
#pragma GCC unroll 9
        for (int t = 0; t < 9; ++t)
#pragma GCC unroll 4
          for (int q = 0; q < 4; ++q) a[q] = _mm512_fmadd_ps(in[t], _mm512_set1_ps(w[(k + q) * 9 + t]), a[q]);
#pragma GCC unroll 4
        for (int q = 0; q < 4; ++q) _mm512_mask_storeu_ps(yo + (k + q) * ldk, mk, finish(a[q], k + q));
      }
      for (; k < K; ++k) {
        __m512 a = zero;
#pragma GCC unroll 9
        for (int t = 0; t < 9; ++t) a = _mm512_fmadd_ps(in[t], _mm512_set1_ps(w[k * 9 + t]), a);
        _mm512_mask_storeu_ps(yo + k * ldk, mk, finish(a, k));
      }
    }
  }
}

}  // namespace lf

#pragma GCC pop_options
#else
namespace lf {
void conv_c1_3x3_rows_avx512(float*, int64_t, const float*, int64_t, int64_t, int64_t, const float*, const float*,
                             int64_t, bool) {}
DirectFwdUkr direct_fwd_ukr_avx512(int, int) { return nullptr; }
DirectDwUkr direct_dw_ukr_avx512(int, int) { return nullptr; }
DirectFwdUkr direct_fullcorr3_ukr_avx512(int, int) { return nullptr; }
void direct_store_tile_avx512(const float*, int, int64_t, int64_t, const float*, bool, float*, int64_t) {}
void direct_transpose_dy_avx512(const float*, const float*, int64_t, int64_t, int64_t, float*, float*) {}
}  // namespace lf
#endif
