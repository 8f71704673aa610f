// 2-D convolution (cross-correlation), NCHW:
//   x (N, C, H, W), w (K, C, R, S), b (K,), y (N, K, OH, OW), P = OH*OW, CRS = C*R*S.
// Forward, per image:   y_n (K x P)    = W (K x CRS) * col_n (CRS x P)          [+ b]
// Backward, per image:  dcol (CRS x P) = W^T (CRS x K) * dy_n (K x P) -> col2im -> dx_n
//                       dW (K x CRS)  += dy_n (K x P) * col_n^T (P x CRS)
//                       (or dW^T += col_n dy_n^T when that pads the register tiles less)
// W (and W^T) are packed once per call and shared by all threads. The forward im2col is a
// plain row-major col_n (one contiguous copy per output row and tap; measured a little
// faster than writing NR-wide panels directly, whose walks are split at every panel edge),
// which the GEMM packs with unit-stride copies; for dW the im2col writes straight into the
// packed layout of gemm.h, since there the GEMM would otherwise need a transposing pack.
// OpenMP runs over the batch with per-thread scratch allocated once per call. dW is summed
// per thread over its static share of images, then the per-thread partials are added in
// thread order, so the result is deterministic for a given thread count (no atomics).
// A 1x1, stride-1, unpadded conv uses x_n itself as col_n.
#include <omp.h>

#include <algorithm>
#include <type_traits>
#include <vector>

#include "cpu/conv2d_direct.h"
#include "cpu/gemm.h"
#include "cpu/simd.h"
#include "ops.h"

namespace lf {
namespace {

inline int64_t floordiv(int64_t a, int64_t d) { return a >= 0 ? a / d : -((-a + d - 1) / d); }
inline int64_t clamp64(int64_t v, int64_t lo, int64_t hi) { return std::min(std::max(v, lo), hi); }

// For each kernel row i: output rows oh in [rlo, rhi) read an in-bounds input row
// ih = oh*sh + ioff. Same for kernel column j and ow. Computed once per call so the
// im2col inner loops carry no bounds tests.
struct ConvGeom {
  std::vector<int64_t> rlo, rhi, ioff, qlo, qhi, joff;
  explicit ConvGeom(const Conv2dShape& s)
      : rlo(s.r), rhi(s.r), ioff(s.r), qlo(s.s), qhi(s.s), joff(s.s) {
    for (int64_t i = 0; i < s.r; ++i) {
      ioff[i] = i * s.dh - s.ph;
      rlo[i] = clamp64(-floordiv(ioff[i], s.sh), 0, s.oh);  // ceil(-ioff / sh)
      rhi[i] = clamp64(floordiv(s.h - 1 - ioff[i], s.sh) + 1, rlo[i], s.oh);
    }
    for (int64_t j = 0; j < s.s; ++j) {
      joff[j] = j * s.dw - s.pw;
      qlo[j] = clamp64(-floordiv(joff[j], s.sw), 0, s.ow);
      qhi[j] = clamp64(floordiv(s.w - 1 - joff[j], s.sw) + 1, qlo[j], s.ow);
    }
  }
};

// Walks output positions p in [p0, p1) for kernel tap (i, j) as runs along output rows:
// zero(pos, n) for positions reading padding, run(pos, n, xoff) for n positions reading
// x_c[xoff + t*sw]; pos counts from p0.
template <class Zero, class Run>
inline void walk_tap(const Conv2dShape& s, const ConvGeom& g, int64_t i, int64_t j, int64_t p0,
                     int64_t p1, Zero&& zero, Run&& run) {
  int64_t oh = p0 / s.ow, ow = p0 % s.ow, pos = 0;
  const int64_t rlo = g.rlo[i], rhi = g.rhi[i], qlo = g.qlo[j], qhi = g.qhi[j];
  while (pos < p1 - p0) {
    const int64_t n = std::min(s.ow - ow, p1 - p0 - pos);
    if (oh >= rlo && oh < rhi) {
      const int64_t a = clamp64(qlo, ow, ow + n), b = clamp64(qhi, a, ow + n);
      if (a > ow) zero(pos, a - ow);
      if (b > a) run(pos + (a - ow), b - a, (oh * s.sh + g.ioff[i]) * s.w + a * s.sw + g.joff[j]);
      if (ow + n > b) zero(pos + (b - ow), ow + n - b);
    } else {
      zero(pos, n);
    }
    pos += n;
    ++oh;
    ow = 0;
  }
}

// col_n (CRS x P) row-major: one walk per tap over all P positions, so each output row
// costs one contiguous copy (stride-1 conv) instead of being split across NR-wide panels.
template <typename T>
void im2col_rows(T* dst, const T* xn, const Conv2dShape& s, const ConvGeom& g) {
  const int64_t P = s.ohw(), HW = s.hw();
  for (int64_t c = 0; c < s.c; ++c) {
    const T* xc = xn + c * HW;
    for (int64_t i = 0; i < s.r; ++i) {
      for (int64_t j = 0; j < s.s; ++j) {
        T* dk = dst + ((c * s.r + i) * s.s + j) * P;
        walk_tap(
            s, g, i, j, 0, P,
            [&](int64_t pos, int64_t n) { std::fill(dk + pos, dk + pos + n, T(0)); },
            [&](int64_t pos, int64_t n, int64_t xoff) {
              const T* src = xc + xoff;
              T* out = dk + pos;
              if (s.sw == 1) {
                for (int64_t t = 0; t < n; ++t) out[t] = src[t];
              } else {
                for (int64_t t = 0; t < n; ++t) out[t] = src[t * s.sw];
              }
            });
      }
    }
  }
}

// col_n^T as a packed operand whose GEMM K-dim is P: panels of `nr` taps (NR when it is B
// of dW = dy_n col_n^T, MR when it is A of dW^T = col_n dy_n^T), written with stride nr;
// one panel (P x nr) stays in L1 while it is filled.
template <typename T>
void im2col_packed_dw(T* dst, const T* xn, const Conv2dShape& s, const ConvGeom& g, int64_t nr) {
  const int64_t P = s.ohw(), CRS = s.crs(), HW = s.hw();
  for (int64_t crs = 0; crs < CRS; ++crs) {
    const int64_t c = crs / (s.r * s.s), i = (crs / s.s) % s.r, j = crs % s.s;
    const T* xc = xn + c * HW;
    T* col = dst + (crs / nr) * P * nr + crs % nr;
    walk_tap(
        s, g, i, j, 0, P,
        [&](int64_t pos, int64_t n) {
          for (int64_t t = 0; t < n; ++t) col[(pos + t) * nr] = T(0);
        },
        [&](int64_t pos, int64_t n, int64_t xoff) {
          const T* src = xc + xoff;
          for (int64_t t = 0; t < n; ++t) col[(pos + t) * nr] = src[t * s.sw];
        });
  }
  for (int64_t crs = CRS; crs < round_up(CRS, nr); ++crs) {
    T* col = dst + (crs / nr) * P * nr + crs % nr;
    for (int64_t p = 0; p < P; ++p) col[p * nr] = T(0);
  }
}

// dx_n += col2im(dcol): every tap scatters its row back onto the input positions it read.
template <typename T>
void col2im_add(T* dxn, const T* dcol, const Conv2dShape& s, const ConvGeom& g) {
  const int64_t P = s.ohw(), HW = s.hw();
  for (int64_t c = 0; c < s.c; ++c) {
    T* xc = dxn + c * HW;
    for (int64_t i = 0; i < s.r; ++i) {
      for (int64_t j = 0; j < s.s; ++j) {
        const T* src = dcol + ((c * s.r + i) * s.s + j) * P;
        walk_tap(
            s, g, i, j, 0, P, [](int64_t, int64_t) {},
            [&](int64_t pos, int64_t n, int64_t xoff) {
              T* out = xc + xoff;
              const T* in = src + pos;
              if (s.sw == 1) {
                for (int64_t t = 0; t < n; ++t) out[t] += in[t];
              } else {
                for (int64_t t = 0; t < n; ++t) out[t * s.sw] += in[t];
              }
            });
      }
    }
  }
}

bool is_pointwise(const Conv2dShape& s) {
  return s.r == 1 && s.s == 1 && s.sh == 1 && s.sw == 1 && s.ph == 0 && s.pw == 0 &&
         s.oh == s.h && s.ow == s.w;
}

}  // namespace

template <typename T>
void conv2d_forward_cpu(T* y, const T* x, const T* w, const T* b, const Conv2dShape& s,
                        bool relu) {
  const int64_t N = s.n, K = s.k, P = s.ohw(), CRS = s.crs(), HW = s.hw(), CHW = s.c * HW;
  if (N == 0 || K == 0 || P == 0) return;
  if constexpr (std::is_same_v<T, float>) {
    if (conv2d_direct_forward_applies(s)) return conv2d_direct_forward(y, x, w, b, s, relu);
    if (conv2d_c1_forward_applies(s)) return conv2d_c1_forward(y, x, w, b, s, relu);
  }
  const GemmUkernel<T>& uk = gemm_ukernel<T>();
  const bool pointwise = is_pointwise(s);
  const ConvGeom geom(s);

  AlignedBuffer<T> wp;
  pack_panels(wp.reserve(packed_size(K, CRS, uk.mr)), w, CRS, int64_t(1), K, CRS, uk.mr);
  const GemmOperand<T> A = GemmOperand<T>::prepacked(wp.data());

  const int nt = threads_for(2 * N * K * P * std::max<int64_t>(CRS, 1), N);
#pragma omp parallel num_threads(nt)
  {
    AlignedBuffer<T> colp;
    GemmWorkspace<T> ws;
    if (!pointwise) colp.reserve(CRS * P);
#pragma omp for schedule(static)
    for (int64_t n = 0; n < N; ++n) {
      T* yn = y + n * K * P;
      const T* xn = x + n * CHW;
      if (b) {
        for (int64_t k = 0; k < K; ++k) std::fill(yn + k * P, yn + (k + 1) * P, b[k]);
      }
      GemmOperand<T> B;
      if (pointwise) {
        B = GemmOperand<T>::strided(xn, HW, 1);
      } else {
        im2col_rows(colp.data(), xn, s, geom);
        B = GemmOperand<T>::strided(colp.data(), P, 1);
      }
      gemm(uk, K, P, CRS, A, B, yn, P, b != nullptr, ws);
      if (relu) {  // while this image's output is still in cache
        for (int64_t i = 0; i < K * P; ++i) yn[i] = yn[i] < T(0) ? T(0) : yn[i];
      }
    }
  }
}

template <typename T>
void conv2d_backward_cpu(T* dx, T* dw, T* db, const T* dy, const T* x, const T* w,
                         const Conv2dShape& s, const T* relu_y) {
  const int64_t N = s.n, K = s.k, P = s.ohw(), CRS = s.crs(), HW = s.hw(), CHW = s.c * HW;
  const int64_t KCRS = K * CRS;

  bool want_dx = dx && N > 0 && CHW > 0;
  bool want_dw = dw && KCRS > 0;
  // The direct kernels (float32 on AVX-512) copy dy anyway (padded for dx, transposed for
  // dW): when they do all the work, the relu mask and db ride along with those copies.
  bool direct_dx = false, direct_dw = false;
  if constexpr (std::is_same_v<T, float>) {
    const bool live = N > 0 && P > 0 && K > 0;
    direct_dx = live && want_dx && conv2d_direct_dx_applies(s);
    direct_dw = live && want_dw && conv2d_direct_dw_applies(s);
  }
  const bool fused = direct_dw && (direct_dx || !want_dx);

  AlignedBuffer<T> masked;
  if (relu_y && !fused) {  // the relu backward as its own pass; everything below reads it
    const int64_t n = N * K * P;
    T* da = masked.reserve(n);
    const int nt = threads_for(n, n);
#pragma omp parallel for simd num_threads(nt) schedule(static)
    for (int64_t i = 0; i < n; ++i) {
      const T d = dy[i];  // unconditional load: a branch-free select (see activation.cpp)
      da[i] = relu_y[i] > T(0) ? d : T(0);
    }
    dy = da;
    relu_y = nullptr;
  }

  if (db && !fused) {
    // One k per iteration, summed over n then p in a fixed order: deterministic for any
    // thread count.
    const int nt = threads_for(N * K * P, K);
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int64_t k = 0; k < K; ++k) {
      T acc = T(0);
      for (int64_t n = 0; n < N; ++n) {
        const T* row = dy + (n * K + k) * P;
        T part = T(0);
#pragma omp simd reduction(+ : part)
        for (int64_t p = 0; p < P; ++p) part += row[p];
        acc += part;
      }
      db[k] = acc;
    }
  }
  if (!want_dx && !want_dw) return;
  if (want_dw && (N == 0 || P == 0)) {
    std::fill(dw, dw + KCRS, T(0));
    if (!want_dx) return;
  }
  if (P == 0 || K == 0) {  // nothing flows back: dx = 0 (and dW = 0 above or empty)
    if (want_dx) std::fill(dx, dx + N * CHW, T(0));
    if (want_dw) std::fill(dw, dw + KCRS, T(0));
    return;
  }

  if constexpr (std::is_same_v<T, float>) {
    if (direct_dx) {
      conv2d_direct_dx(dx, dy, w, s, relu_y);
      want_dx = false;
    }
    if (direct_dw) {
      conv2d_direct_dw(dw, fused ? db : nullptr, dy, x, s, relu_y);
      want_dw = false;
    }
    if (!want_dx && !want_dw) return;
  }

  const GemmUkernel<T>& uk = gemm_ukernel<T>();
  const bool pointwise = is_pointwise(s);
  const ConvGeom geom(s);

  AlignedBuffer<T> wtp;  // W^T (CRS x K) packed as A
  if (want_dx) pack_panels(wtp.reserve(packed_size(CRS, K, uk.mr)), w, int64_t(1), CRS, CRS, K, uk.mr);

  // dW is computed as dW (K x CRS) = dy_n col_n^T or as dW^T (CRS x K) = col_n dy_n^T,
  // whichever wastes fewer lanes in the padded MR x NR tiles: with few taps (CRS = 9 for a
  // 3x3 conv on one channel) the first fills 9 of 32 columns, the second 9 of 16 rows.
  const auto fill = [](int64_t n, int64_t tile) { return double(n) / double(round_up(n, tile)); };
  const bool dw_t = fill(CRS, uk.mr) * fill(K, uk.nr) > fill(K, uk.mr) * fill(CRS, uk.nr);

  const int nt = threads_for(2 * N * K * P * std::max<int64_t>(CRS, 1), N);
  AlignedBuffer<T> dwpart;
  if (want_dw) {
    T* p = dwpart.reserve(nt * KCRS);
    std::fill(p, p + nt * KCRS, T(0));
  }

#pragma omp parallel num_threads(nt)
  {
    AlignedBuffer<T> dcol, colp;
    GemmWorkspace<T> ws;
    if (want_dx && !pointwise) dcol.reserve(CRS * P);
    if (want_dw && !pointwise) colp.reserve(packed_size(CRS, P, dw_t ? uk.mr : uk.nr));
    T* dwt = want_dw ? dwpart.data() + omp_get_thread_num() * KCRS : nullptr;
#pragma omp for schedule(static)
    for (int64_t n = 0; n < N; ++n) {
      const T* dyn = dy + n * K * P;
      const T* xn = x + n * CHW;
      const GemmOperand<T> DY = GemmOperand<T>::strided(dyn, P, 1);
      if (want_dx) {
        T* dxn = dx + n * CHW;
        const GemmOperand<T> A = GemmOperand<T>::prepacked(wtp.data());
        if (pointwise) {
          gemm(uk, CRS, P, K, A, DY, dxn, P, false, ws);
        } else {
          gemm(uk, CRS, P, K, A, DY, dcol.data(), P, false, ws);
          std::fill(dxn, dxn + CHW, T(0));
          col2im_add(dxn, dcol.data(), s, geom);
        }
      }
      if (want_dw && dw_t) {
        GemmOperand<T> A;
        if (pointwise) {
          A = GemmOperand<T>::strided(xn, HW, 1);
        } else {
          im2col_packed_dw(colp.data(), xn, s, geom, uk.mr);
          A = GemmOperand<T>::prepacked(colp.data());
        }
        gemm(uk, CRS, K, P, A, GemmOperand<T>::strided(dyn, 1, P), dwt, K, true, ws);
      } else if (want_dw) {
        GemmOperand<T> B;
        if (pointwise) {
          B = GemmOperand<T>::strided(xn, 1, HW);
        } else {
          im2col_packed_dw(colp.data(), xn, s, geom, uk.nr);
          B = GemmOperand<T>::prepacked(colp.data());
        }
        gemm(uk, K, CRS, P, DY, B, dwt, CRS, true, ws);
      }
    }
  }
  if (want_dw) {
    const T* part = dwpart.data();
    const int rt = threads_for(nt * KCRS, KCRS);
#pragma omp parallel for num_threads(rt) schedule(static)
    for (int64_t e = 0; e < KCRS; ++e) {
      const int64_t src = dw_t ? (e % CRS) * K + e / CRS : e;  // partials hold dW^T if dw_t
      T acc = part[src];
      for (int t = 1; t < nt; ++t) acc += part[t * KCRS + src];
      dw[e] = acc;
    }
  }
}

template void conv2d_forward_cpu<float>(float*, const float*, const float*, const float*,
                                        const Conv2dShape&, bool);
template void conv2d_forward_cpu<double>(double*, const double*, const double*, const double*,
                                         const Conv2dShape&, bool);
template void conv2d_backward_cpu<float>(float*, float*, float*, const float*, const float*,
                                         const float*, const Conv2dShape&, const float*);
template void conv2d_backward_cpu<double>(double*, double*, double*, const double*,
                                          const double*, const double*, const Conv2dShape&,
                                          const double*);

}  // namespace lf
