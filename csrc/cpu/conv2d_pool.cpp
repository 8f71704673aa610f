// Convolution + relu + 2x2 / stride-2 max pooling, fused (the documents' Conv2D(relu) ->
// MaxPooling2D(2) pairs), NCHW:
//   x (N, C, H, W), w (K, C, R, S), b (K,) -> conv (N, K, OH, OW) -> relu -> pool ->
//   y, indices (N, K, OH/2, OW/2); indices are offsets h*OW + w into the conv output plane,
//   as max_pool2d's.
// forward : the same kernels as the three ops in sequence (bit-identical y and indices), run
//           over the batch in chunks whose full-size conv output (per-thread scratch,
//           scratch.h) stays in cache: conv + relu of a chunk, then pooled from there.
// backward: each pooled gradient reaches one conv output (its argmax), and only where the relu
//           passed it (y > 0: the pooled value is the relu output at the argmax). With stride
//           1 and at least 8 input channels, the sparse kernel (conv2d_pool_sparse.inc) works
//           from those non-zeros alone: at most a quarter of the dense work. Otherwise the
//           gradient is scattered into a zeroed scratch chunk whose dense conv backward adds
//           into dW and db (chunk by chunk, a fixed order).
// An odd conv output height or width leaves a last row or column that no pooling window
// reads: it is never computed (the conv kernels take the output size as given), and its
// gradient is zero, so the backward skips it too (for the documents' 11x11 conv 2 output,
// 17% of that layer's work). Indices still count in the full OH x OW plane.
#include <omp.h>

#include <algorithm>
#include <type_traits>

#include "cpu/gemm.h"
#include "cpu/simd.h"
#include "ops.h"

#include "cpu/conv2d_pool_sparse.inc"

namespace lf {

// conv2d_pool_avx512.cpp, float32 on the AVX-512 path: the forward of one pooled row (y, idx
// (K, PH, PW) of an image whose planes xn are HW apart; wt (C*R*S, Kp) and bias (Kp)
// zero-padded to Kp, a multiple of 16), and the sparse backward kernel.
void conv_pool_row_avx512(float* y, int64_t* idx, const float* xn, int64_t HW, int64_t W,
                          const float* wt, const float* bias, int64_t K, int64_t Kp, int64_t C,
                          int64_t R, int64_t S, int64_t ph, int64_t PW, int64_t PHW,
                          int64_t OW);
void conv_pool_sparse_f32_avx512(float* dxh, float* dwt, float* dbt, const float* dy,
                                 const int64_t* idx, const float* y, const float* xh,
                                 const float* wt, int64_t n0, int64_t n1, int64_t K, int64_t C,
                                 int64_t R, int64_t S, int64_t OH, int64_t OW, int64_t PHW,
                                 int64_t Hp, int64_t Wp);

namespace {

// Images per chunk: a chunk's full-size conv output about 512 KB (half an L2), and at least
// one image per thread so the kernels inside still have the batch to split.
int64_t chunk_images(const Conv2dShape& s, size_t elem) {
  const int64_t per_image = std::max<int64_t>(1, s.k * s.ohw() * static_cast<int64_t>(elem));
  const int64_t fit = (int64_t(512) << 10) / per_image;
  return std::min(s.n, std::max<int64_t>({fit, int64_t(num_threads()), int64_t(1)}));
}

// The conv shape restricted to the rows and columns the pooling windows read.
Conv2dShape even_part(const Conv2dShape& s) {
  Conv2dShape e = s;
  e.oh = s.oh / 2 * 2;
  e.ow = s.ow / 2 * 2;
  return e;
}

Pool2dShape pool_of(const Conv2dShape& e, int64_t n) {
  return Pool2dShape{n, e.k, e.oh, e.ow, e.oh / 2, e.ow / 2, 2, 2, 2, 2, 0, 0};
}

// The backward from the non-zero pooled gradients only (conv2d_pool_sparse.inc): stride 1,
// dilation 1. x and w are copied channels-last, dx comes back through a channels-last
// scratch. Returns false where it does not apply.
template <typename T>
bool sparse_backward(T* dx, T* dw, T* db, const T* dy, const int64_t* idx, const T* y,
                     const T* x, const T* w, const Conv2dShape& s) {
  // Below 8 input channels the channel rows are too short to vectorise (the first layer, one
  // channel: measured slower than the dense backward, 4.3 vs 3.4 ms per CNN step).
  if (s.sh != 1 || s.sw != 1 || s.dh != 1 || s.dw != 1 || s.c < 8) return false;
  const int64_t N = s.n, K = s.k, C = s.c, R = s.r, S = s.s, H = s.h, W = s.w;
  const int64_t OH = s.oh, OW = s.ow, PHW = (OH / 2) * (OW / 2);
  const int64_t Hp = OH + R - 1, Wp = OW + S - 1, HWp = Hp * Wp, KRSC = K * R * S * C;
  AlignedBuffer<T> xb, wb, dxb, parts;
  T* xh = xb.reserve(N * HWp * C);
  T* wt = dx ? wb.reserve(KRSC) : nullptr;
  T* dxh = dx ? dxb.reserve(N * HWp * C) : nullptr;
  const int nt = threads_for(N * PHW * K * R * S * C, N);
  const int64_t per = KRSC + K;  // one thread's dW~ then db
  T* part = parts.reserve(nt * per);
  std::fill(part, part + nt * per, T(0));
  if (wt) {
    for (int64_t k = 0; k < K; ++k)
      for (int64_t c = 0; c < C; ++c)
        for (int64_t r = 0; r < R; ++r)
          for (int64_t q = 0; q < S; ++q) wt[((k * R + r) * S + q) * C + c] = w[((k * C + c) * R + r) * S + q];
  }
  const bool avx512 = std::is_same_v<T, float> && simd_path() == SimdPath::Avx512;
#pragma omp parallel num_threads(nt)
  {
    const int tid = omp_get_thread_num(), team = omp_get_num_threads();
    const int64_t n0 = N * tid / team, n1 = N * (tid + 1) / team;
    // x~ (and a zero dx~) for this thread's images.
    for (int64_t n = n0; n < n1; ++n) {
      T* xn = xh + n * HWp * C;
      for (int64_t i = 0; i < Hp; ++i) {
        const int64_t ih = i - s.ph;
        for (int64_t j = 0; j < Wp; ++j) {
          const int64_t iw = j - s.pw;
          T* dst = xn + (i * Wp + j) * C;
          if (ih < 0 || ih >= H || iw < 0 || iw >= W) {
            std::fill(dst, dst + C, T(0));
          } else {
            const T* src = x + (n * C * H + ih) * W + iw;
            for (int64_t c = 0; c < C; ++c) dst[c] = src[c * H * W];
          }
        }
      }
      if (dxh) std::fill(dxh + n * HWp * C, dxh + (n + 1) * HWp * C, T(0));
    }
    T* mine = part + tid * per;
    if constexpr (std::is_same_v<T, float>) {
      if (avx512) {
        conv_pool_sparse_f32_avx512(dxh, mine, mine + KRSC, dy, idx, y, xh, wt, n0, n1, K, C, R, S,
                                    OH, OW, PHW, Hp, Wp);
      } else {
        conv_pool_sparse_kernel<T>(dxh, mine, mine + KRSC, dy, idx, y, xh, wt, n0, n1, K, C, R, S,
                                   OH, OW, PHW, Hp, Wp);
      }
    } else {
      conv_pool_sparse_kernel<T>(dxh, mine, mine + KRSC, dy, idx, y, xh, wt, n0, n1, K, C, R, S,
                                 OH, OW, PHW, Hp, Wp);
    }
    if (dxh) {  // dx (NCHW) from this thread's dx~ (channels last, padded)
      for (int64_t n = n0; n < n1; ++n)
        for (int64_t c = 0; c < C; ++c)
          for (int64_t ih = 0; ih < H; ++ih)
            for (int64_t iw = 0; iw < W; ++iw)
              dx[((n * C + c) * H + ih) * W + iw] =
                  dxh[((n * Hp + ih + s.ph) * Wp + iw + s.pw) * C + c];
    }
  }
  // Partials added in thread order: deterministic for a given thread count.
  if (dw) {
    for (int64_t k = 0; k < K; ++k)
      for (int64_t c = 0; c < C; ++c)
        for (int64_t r = 0; r < R; ++r)
          for (int64_t q = 0; q < S; ++q) {
            const int64_t e = ((k * R + r) * S + q) * C + c;
            T acc = part[e];
            for (int t = 1; t < nt; ++t) acc += part[t * per + e];
            dw[((k * C + c) * R + r) * S + q] = acc;
          }
  }
  if (db) {
    for (int64_t k = 0; k < K; ++k) {
      T acc = part[KRSC + k];
      for (int t = 1; t < nt; ++t) acc += part[t * per + KRSC + k];
      db[k] = acc;
    }
  }
  return true;
}

}  // namespace

// No padding, stride and dilation 1, float32 on AVX-512: conv + bias + relu + pool of each
// 2x2 window in registers, up to 64 output channels at a time, with the same arithmetic in
// the same order as the im2col path for one input channel (so the same bits there; the
// direct kernels' order otherwise, also the same). No full-size output at all. Returns false
// where it does not apply.
template <typename T>
bool pooled_forward(T* y, int64_t* idx, const T* x, const T* w, const T* b,
                    const Conv2dShape& s) {
  if constexpr (!std::is_same_v<T, float>) {
    return false;
  } else {
    if (s.sh != 1 || s.sw != 1 || s.dh != 1 || s.dw != 1 || s.ph != 0 || s.pw != 0 ||
        s.k < 8 || simd_path() != SimdPath::Avx512 || conv_algo() != ConvAlgo::Auto ||
        s.oh + s.r - 1 > s.h || s.ow + s.s - 1 > s.w)
      return false;
    const int64_t K = s.k, Kp = (K + 15) / 16 * 16, CRS = s.crs();
    const int64_t PH = s.oh / 2, PW = s.ow / 2, PHW = PH * PW;
    AlignedBuffer<float> wbuf, bbuf;
    float* wt = wbuf.reserve(CRS * Kp);
    float* bias = bbuf.reserve(Kp);
    for (int64_t t = 0; t < CRS; ++t)
      for (int64_t k = 0; k < Kp; ++k) wt[t * Kp + k] = k < K ? w[k * CRS + t] : 0.f;
    for (int64_t k = 0; k < Kp; ++k) bias[k] = b && k < K ? b[k] : 0.f;
    const int64_t items = s.n * PH;
    const int nt = threads_for(items * PW * Kp * CRS * 4, items);
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int64_t it = 0; it < items; ++it) {
      const int64_t n = it / PH, ph = it % PH;
      conv_pool_row_avx512(y + n * K * PHW, idx + n * K * PHW, x + n * s.c * s.hw(), s.hw(), s.w,
                           wt, bias, K, Kp, s.c, s.r, s.s, ph, PW, PHW, s.ow);
    }
    return true;
  }
}

template <typename T>
void conv2d_relu_pool_forward_cpu(T* y, int64_t* idx, const T* x, const T* w, const T* b,
                                  const Conv2dShape& s) {
  if (s.n == 0 || s.k == 0 || s.oh < 2 || s.ow < 2) return;
  if (pooled_forward(y, idx, x, w, b, s)) return;
  const Conv2dShape e = even_part(s);
  const int64_t chunk = chunk_images(e, sizeof(T));
  const int64_t in_image = s.c * s.hw(), out_image = s.k * (s.oh / 2) * (s.ow / 2);
  AlignedBuffer<T> full;
  T* conv = full.reserve(chunk * e.k * e.ohw());
  for (int64_t n0 = 0; n0 < s.n; n0 += chunk) {
    Conv2dShape sc = e;
    sc.n = std::min(chunk, s.n - n0);
    conv2d_forward_cpu<T>(conv, x + n0 * in_image, w, b, sc, true);
    int64_t* ic = idx + n0 * out_image;
    max_pool2d_forward_cpu<T>(y + n0 * out_image, ic, conv, pool_of(e, sc.n));
    if (e.ow != s.ow) {  // offsets into the e.ow-wide planes -> into the OW-wide ones
      const int64_t m = sc.n * out_image;
      for (int64_t o = 0; o < m; ++o) ic[o] = ic[o] / e.ow * s.ow + ic[o] % e.ow;
    }
  }
}

template <typename T>
void conv2d_relu_pool_backward_cpu(T* dx, T* dw, T* db, const T* dy, const int64_t* idx,
                                   const T* y, const T* x, const T* w, const Conv2dShape& s) {
  const int64_t KCRS = s.k * s.crs();
  const Conv2dShape e = even_part(s);
  const int64_t PHW = (s.oh / 2) * (s.ow / 2), OHW = s.ohw(), EHW = e.ohw();
  if (s.n == 0 || s.k == 0 || PHW == 0) {  // no gradient reaches the convolution
    if (dx) std::fill(dx, dx + s.n * s.c * s.hw(), T(0));
    if (dw) std::fill(dw, dw + KCRS, T(0));
    if (db) std::fill(db, db + s.k, T(0));
    return;
  }
  if (sparse_backward(dx, dw, db, dy, idx, y, x, w, s)) return;
  const int64_t chunk = chunk_images(e, sizeof(T));
  const int64_t in_image = s.c * s.hw(), out_image = s.k * PHW;
  AlignedBuffer<T> full, part;
  T* dfull = full.reserve(chunk * s.k * EHW);
  T* dw_c = dw ? part.reserve(KCRS + s.k) : nullptr;  // this chunk's dW, then db
  T* db_c = db ? part.reserve(KCRS + s.k) + KCRS : nullptr;
  for (int64_t n0 = 0; n0 < s.n; n0 += chunk) {
    Conv2dShape sc = e;
    sc.n = std::min(chunk, s.n - n0);
    const int64_t planes = sc.n * s.k;
    const T* dyc = dy + n0 * out_image;
    const int64_t* ic = idx + n0 * out_image;
    const T* yc = y + n0 * out_image;
    const int nt = threads_for(planes * EHW, planes);
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int64_t q = 0; q < planes; ++q) {
      T* d = dfull + q * EHW;
      std::fill(d, d + EHW, T(0));
      for (int64_t o = q * PHW; o < (q + 1) * PHW; ++o) {
        const int64_t i = ic[o];
        const int64_t r = i / s.ow, col = i - r * s.ow;
        // Indices outside the pooled region (only from a bad direct call) are skipped.
        if (yc[o] > T(0) && i >= 0 && i < OHW && r < e.oh && col < e.ow) d[r * e.ow + col] += dyc[o];
      }
    }
    const bool first = n0 == 0;
    conv2d_backward_cpu<T>(dx ? dx + n0 * in_image : nullptr, first ? dw : dw_c,
                           first ? db : db_c, dfull, x + n0 * in_image, w, sc, nullptr);
    if (!first) {
      if (dw)
        for (int64_t i = 0; i < KCRS; ++i) dw[i] += dw_c[i];
      if (db)
        for (int64_t k = 0; k < s.k; ++k) db[k] += db_c[k];
    }
  }
}

#define LF_INSTANTIATE(T)                                                                    \
  template void conv2d_relu_pool_forward_cpu<T>(T*, int64_t*, const T*, const T*, const T*,  \
                                                const Conv2dShape&);                         \
  template void conv2d_relu_pool_backward_cpu<T>(T*, T*, T*, const T*, const int64_t*,       \
                                                 const T*, const T*, const T*,               \
                                                 const Conv2dShape&);
LF_INSTANTIATE(float)
LF_INSTANTIATE(double)
#undef LF_INSTANTIATE

}  // namespace lf
