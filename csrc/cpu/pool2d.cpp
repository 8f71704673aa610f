// 2-D max and average pooling, NCHW: x (N, C, H, W), y / indices (N, C, OH, OW).
// Window of output (oh, ow): rows oh*sh - ph + [0, kh), columns ow*sw - pw + [0, kw),
// clipped to the input (padding never contributes to a max; it counts in an average only
// when count_include_pad). OpenMP runs over the N*C planes, each plane written by one
// thread, so backward scatters need no atomics and are deterministic.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <type_traits>

#include <omp.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

#include "cpu/pool2d_kernels.h"
#include "cpu/simd.h"
#include "ops.h"

namespace lf {
namespace {

struct Window {
  int64_t h0, h1, w0, w1;  // clipped, half-open
};

inline Window window(const Pool2dShape& s, int64_t oh, int64_t ow) {
  const int64_t hs = oh * s.sh - s.ph, ws = ow * s.sw - s.pw;
  return {std::max<int64_t>(hs, 0), std::min(hs + s.kh, s.h), std::max<int64_t>(ws, 0),
          std::min(ws + s.kw, s.w)};
}

}  // namespace

namespace {

// The common 2x2 / stride 2 / no padding pool: every window lies inside the input, so no
// window arithmetic per output. Same rule as the general path, in the same order
// (a, b on the top row, then c, d): the first maximum wins ties, any NaN takes over.
template <typename T>
inline void take_if(bool t, T v, int64_t i, T& m, int64_t& idx) {
  // Bit masks rather than ?: so the compiler cannot turn the selects back into branches,
  // which mispredict about half the time on real activations (measured 3x slower).
  using U = std::conditional_t<sizeof(T) == 4, uint32_t, uint64_t>;
  const int64_t mask = -static_cast<int64_t>(t);
  idx = (i & mask) | (idx & ~mask);
  U vb, mb;
  std::memcpy(&vb, &v, sizeof(T));
  std::memcpy(&mb, &m, sizeof(T));
  const U um = static_cast<U>(mask);
  mb = (vb & um) | (mb & ~um);
  std::memcpy(&m, &mb, sizeof(T));
}

#if LF_X86_SIMD
#pragma GCC push_options
#pragma GCC target("avx2,fma")
// AVX2 form of the row loop below for float: 8 outputs per step. The even/odd columns of
// each input row are split with a shuffle + cross-lane permute; the selects are blends on
// the same (v > m) | isnan(v) mask, in the same a, b, c, d order, so results and indices are
// identical to the scalar rule. Offsets are int32 inside a plane (the caller guarantees
// H*W < 2^31) and widened to int64 on store. A row's last (< 8) outputs go through the same
// code on a zero-padded copy of their inputs, so odd widths (13, 5 in the documents' CNN)
// stay vectorised.
inline __m256 evens(__m256 lo, __m256 hi) {
  // shuffle_ps works per 128-bit lane; the permute puts the lanes back in order.
  return _mm256_castpd_ps(_mm256_permute4x64_pd(
      _mm256_castps_pd(_mm256_shuffle_ps(lo, hi, _MM_SHUFFLE(2, 0, 2, 0))), 0xD8));
}
inline __m256 odds(__m256 lo, __m256 hi) {
  return _mm256_castpd_ps(_mm256_permute4x64_pd(
      _mm256_castps_pd(_mm256_shuffle_ps(lo, hi, _MM_SHUFFLE(3, 1, 3, 1))), 0xD8));
}
inline void take8(__m256 v, __m256i iv, __m256& m, __m256i& idx) {
  const __m256 t = _mm256_or_ps(_mm256_cmp_ps(v, m, _CMP_GT_OQ), _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
  m = _mm256_blendv_ps(m, v, t);
  idx = _mm256_castps_si256(
      _mm256_blendv_ps(_mm256_castsi256_ps(idx), _mm256_castsi256_ps(iv), t));
}
// Lanes [0, n) of 8 set (n may be <= 0 or >= 8).
inline __m256i first_lanes(int64_t n) {
  const int32_t k = int32_t(std::min<int64_t>(std::max<int64_t>(n, 0), 8));
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(k), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}
// 8 windows whose top-left inputs are p0[0, 2, .., 14], the row below p1; ia their offsets.
// Only the first `cols` input columns are read (masked loads give 0 beyond), so a row's tail
// needs no copy; outputs past the tail are computed but never stored.
inline void load16(const float* p, int64_t cols, __m256& lo, __m256& hi) {
  if (cols >= 16) {
    lo = _mm256_loadu_ps(p);
    hi = _mm256_loadu_ps(p + 8);
  } else {
    lo = _mm256_maskload_ps(p, first_lanes(cols));
    hi = _mm256_maskload_ps(p + 8, first_lanes(cols - 8));
  }
}
// Partial stores go through a stack copy: vmaskmov stores are microcoded on AMD CPUs (tens
// of cycles each), which made the short rows of small planes several times slower.
inline void store_first(float* p, int64_t n, __m256 v) {
  alignas(32) float t[8];
  _mm256_store_ps(t, v);
  for (int64_t i = 0; i < n; ++i) p[i] = t[i];
}
inline void store_first(int64_t* p, int64_t n, __m256i lo, __m256i hi) {
  alignas(32) int64_t t[8];
  _mm256_store_si256(reinterpret_cast<__m256i*>(t), lo);
  _mm256_store_si256(reinterpret_cast<__m256i*>(t + 4), hi);
  for (int64_t i = 0; i < n; ++i) p[i] = t[i];
}
inline void store16(float* p, int64_t cols, __m256 lo, __m256 hi) {
  if (cols >= 16) {
    _mm256_storeu_ps(p, lo);
    _mm256_storeu_ps(p + 8, hi);
  } else if (cols > 8) {
    _mm256_storeu_ps(p, lo);
    store_first(p + 8, cols - 8, hi);
  } else {
    store_first(p, cols, lo);
  }
}
inline void block8(const float* p0, const float* p1, int64_t cols, __m256i ia, __m256i down,
                   __m256& m, __m256i& idx) {
  __m256 t0, t1, u0, u1;
  load16(p0, cols, t0, t1);
  load16(p1, cols, u0, u1);
  const __m256i one = _mm256_set1_epi32(1);
  m = evens(t0, t1);
  idx = ia;
  take8(odds(t0, t1), _mm256_add_epi32(ia, one), m, idx);
  take8(evens(u0, u1), _mm256_add_epi32(ia, down), m, idx);
  take8(odds(u0, u1), _mm256_add_epi32(_mm256_add_epi32(ia, down), one), m, idx);
}
inline __m256i widen_lo(__m256i v) { return _mm256_cvtepi32_epi64(_mm256_castsi256_si128(v)); }
inline __m256i widen_hi(__m256i v) { return _mm256_cvtepi32_epi64(_mm256_extracti128_si256(v, 1)); }
void max2x2_row_avx2(float* yr, int64_t* ir, const float* r0, const float* r1, int64_t ow_end,
                     int32_t i0, int32_t w) {
  const __m256i step = _mm256_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14);
  const __m256i down = _mm256_set1_epi32(w);
  __m256 m;
  __m256i idx;
  for (int64_t ow = 0; ow < ow_end; ow += 8) {
    const int64_t n = ow_end - ow;
    const __m256i ia = _mm256_add_epi32(_mm256_set1_epi32(i0 + int32_t(2 * ow)), step);
    block8(r0 + 2 * ow, r1 + 2 * ow, 2 * n, ia, down, m, idx);
    if (n >= 8) {
      _mm256_storeu_ps(yr + ow, m);
      if (ir) {
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(ir + ow), widen_lo(idx));
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(ir + ow + 4), widen_hi(idx));
      }
    } else {
      store_first(yr + ow, n, m);
      if (ir) store_first(ir + ow, n, widen_lo(idx), widen_hi(idx));
    }
  }
}

// Average 2x2 / stride 2 rows, same sum order as the general path ((a + b) + c) + d; the
// division by 4 is the exact multiply by 0.25.
void avg2x2_row_avx2(float* yr, const float* r0, const float* r1, int64_t ow_end) {
  const __m256 q = _mm256_set1_ps(0.25f);
  for (int64_t ow = 0; ow < ow_end; ow += 8) {
    const int64_t n = ow_end - ow;
    __m256 t0, t1, u0, u1;
    load16(r0 + 2 * ow, 2 * n, t0, t1);
    load16(r1 + 2 * ow, 2 * n, u0, u1);
    const __m256 sum = _mm256_add_ps(_mm256_add_ps(_mm256_add_ps(evens(t0, t1), odds(t0, t1)),
                                                   evens(u0, u1)), odds(u0, u1));
    const __m256 y = _mm256_mul_ps(sum, q);
    if (n >= 8) {
      _mm256_storeu_ps(yr + ow, y);
    } else {
      store_first(yr + ow, n, y);
    }
  }
}

// Its backward: each dy / 4 written to its 2x2 window (the windows do not overlap).
void avg2x2_bwd_row_avx2(float* d0, float* d1, const float* dyr, int64_t ow_end) {
  const __m256 q = _mm256_set1_ps(0.25f);
  for (int64_t ow = 0; ow < ow_end; ow += 8) {
    const int64_t n = ow_end - ow;
    const __m256 g = _mm256_mul_ps(
        n >= 8 ? _mm256_loadu_ps(dyr + ow) : _mm256_maskload_ps(dyr + ow, first_lanes(n)), q);
    const __m256 lo = _mm256_unpacklo_ps(g, g), hi = _mm256_unpackhi_ps(g, g);
    const __m256 a = _mm256_permute2f128_ps(lo, hi, 0x20), b = _mm256_permute2f128_ps(lo, hi, 0x31);
    store16(d0 + 2 * ow, 2 * n, a, b);
    store16(d1 + 2 * ow, 2 * n, a, b);
  }
}
#pragma GCC pop_options
#endif

template <typename T>
inline void max2x2_plane(T* yp, int64_t* ip, const T* xp, const Pool2dShape& s, SimdPath path) {
  for (int64_t oh = 0; oh < s.oh; ++oh) {
    const T* r0 = xp + 2 * oh * s.w;
    const T* r1 = r0 + s.w;
    T* yr = yp + oh * s.ow;
    int64_t* ir = ip ? ip + oh * s.ow : nullptr;
#if LF_X86_SIMD
    if constexpr (std::is_same_v<T, float>) {
      if (path != SimdPath::Scalar) {
        max2x2_row_avx2(yr, ir, r0, r1, s.ow, int32_t(2 * oh * s.w), int32_t(s.w));
        continue;
      }
    }
#endif
    for (int64_t ow = 0; ow < s.ow; ++ow) {
      const T a = r0[2 * ow], b = r0[2 * ow + 1], c = r1[2 * ow], d = r1[2 * ow + 1];
      const int64_t i0 = 2 * oh * s.w + 2 * ow;
      T m = a;
      int64_t idx = i0;
      take_if((b > m) | (b != b), b, i0 + 1, m, idx);
      take_if((c > m) | (c != c), c, i0 + s.w, m, idx);
      take_if((d > m) | (d != d), d, i0 + s.w + 1, m, idx);
      yr[ow] = m;
      if (ir) ir[ow] = idx;
    }
  }
}

}  // namespace

// The 2x2 / stride 2 / unpadded pool: every window lies inside the input.
inline bool plain_2x2(const Pool2dShape& s) {
  return s.kh == 2 && s.kw == 2 && s.sh == 2 && s.sw == 2 && s.ph == 0 && s.pw == 0 &&
         2 * s.oh <= s.h && 2 * s.ow <= s.w;
}

// ... on the AVX-512 path (plane kernels of pool2d_avx512.cpp, int32 in-plane offsets).
inline bool avx512_2x2(const Pool2dShape& s) {
  return plain_2x2(s) && s.hw() < (int64_t(1) << 31) && simd_path() == SimdPath::Avx512;
}

// f(first plane, count) once per thread on an even static split of the planes, so a plane
// kernel's setup is paid once per thread rather than once per plane.
template <class F>
inline void for_plane_runs(int64_t planes, int nt, F&& f) {
#pragma omp parallel num_threads(nt)
  {
    const int64_t t = omp_get_thread_num(), T = omp_get_num_threads();
    const int64_t p0 = planes * t / T, p1 = planes * (t + 1) / T;
    if (p1 > p0) f(p0, p1 - p0);
  }
}

template <typename T>
void max_pool2d_forward_cpu(T* y, int64_t* indices, const T* x, const Pool2dShape& s) {
  const int64_t planes = s.planes(), HW = s.hw(), OHW = s.ohw();
  const int nt = threads_for(planes * OHW * s.kh * s.kw, planes);
  const bool two_by_two = plain_2x2(s);
  // The SIMD rows keep in-plane offsets in int32.
  const SimdPath path = HW < (int64_t(1) << 31) ? simd_path() : SimdPath::Scalar;
#if LF_X86_SIMD
  if constexpr (std::is_same_v<T, float>) {
    if (avx512_2x2(s)) {
      for_plane_runs(planes, nt, [&](int64_t p0, int64_t n) {
        max2x2_planes_avx512(y + p0 * OHW, indices ? indices + p0 * OHW : nullptr, x + p0 * HW, n, s.h,
                             s.w, s.oh, s.ow);
      });
      return;
    }
  }
#endif
#pragma omp parallel for num_threads(nt) schedule(static)
  for (int64_t pl = 0; pl < planes; ++pl) {
    if (two_by_two) {
      max2x2_plane(y + pl * OHW, indices ? indices + pl * OHW : nullptr, x + pl * HW, s, path);
      continue;
    }
    const T* xp = x + pl * HW;
    T* yp = y + pl * OHW;
    int64_t* ip = indices ? indices + pl * OHW : nullptr;
    for (int64_t oh = 0; oh < s.oh; ++oh) {
      for (int64_t ow = 0; ow < s.ow; ++ow) {
        const Window wd = window(s, oh, ow);
        // An empty window (only possible with inconsistent shapes) yields -inf and index -1,
        // which the backward skips.
        T m = -std::numeric_limits<T>::infinity();
        int64_t idx = -1;
        if (wd.h0 < wd.h1 && wd.w0 < wd.w1) {
          idx = wd.h0 * s.w + wd.w0;
          m = xp[idx];
          // Row-major scan; strict > keeps the first of equal maxima, and a NaN always
          // takes over (a later NaN replaces an earlier one), as in PyTorch.
          // Written as selects, not branches: on real data the comparison is unpredictable.
          for (int64_t h = wd.h0; h < wd.h1; ++h) {
            for (int64_t w = wd.w0; w < wd.w1; ++w) {
              const T v = xp[h * s.w + w];
              const bool take = (v > m) | (v != v);
              m = take ? v : m;
              idx = take ? h * s.w + w : idx;
            }
          }
        }
        yp[oh * s.ow + ow] = m;
        if (ip) ip[oh * s.ow + ow] = idx;
      }
    }
  }
}

template <typename T>
int64_t max_pool2d_backward_cpu(T* dx, const T* dy, const int64_t* indices, const Pool2dShape& s) {
  const int64_t planes = s.planes(), HW = s.hw(), OHW = s.ohw();
  const int nt = threads_for(planes * (HW + OHW), planes);
  int64_t outside = 0;
#if LF_X86_SIMD
  if constexpr (std::is_same_v<T, float>) {
    if (avx512_2x2(s)) {  // dx written densely from the windows, no separate zero fill
      for_plane_runs(planes, nt, [&](int64_t p0, int64_t n) {
        const int64_t o = max2x2_bwd_planes_avx512(dx + p0 * HW, dy + p0 * OHW, indices + p0 * OHW, n, s.h,
                                                   s.w, s.oh, s.ow);
        if (o) {
#pragma omp atomic
          outside += o;
        }
      });
      return outside;
    }
  }
#endif
#pragma omp parallel for num_threads(nt) schedule(static) reduction(+ : outside)
  for (int64_t pl = 0; pl < planes; ++pl) {
    T* dxp = dx + pl * HW;
    const T* dyp = dy + pl * OHW;
    const int64_t* ip = indices + pl * OHW;
    std::fill(dxp, dxp + HW, T(0));
    // Indices outside the plane (from a bad call, or -1 from an empty window) are skipped
    // rather than written out of bounds, and counted for the caller's error.
    for (int64_t o = 0; o < OHW; ++o) {
      const int64_t idx = ip[o];
      if (idx >= 0 && idx < HW) {
        dxp[idx] += dyp[o];
      } else {
        ++outside;
      }
    }
  }
  return outside;
}

// The 2x2 / stride 2 / unpadded pool on the AVX2 path (float): windows never clip, so the
// divisor is 4 with or without count_include_pad.
inline bool avg2x2_simd(const Pool2dShape& s) {
#if LF_X86_SIMD
  return plain_2x2(s) && simd_path() != SimdPath::Scalar;
#else
  (void)s;
  return false;
#endif
}

template <typename T>
void avg_pool2d_forward_cpu(T* y, const T* x, const Pool2dShape& s, bool count_include_pad) {
  const int64_t planes = s.planes(), HW = s.hw(), OHW = s.ohw();
  const int nt = threads_for(planes * OHW * s.kh * s.kw, planes);
#if LF_X86_SIMD
  if constexpr (std::is_same_v<T, float>) {
    if (avx512_2x2(s)) {
      for_plane_runs(planes, nt, [&](int64_t p0, int64_t n) {
        avg2x2_planes_avx512(y + p0 * OHW, x + p0 * HW, n, s.h, s.w, s.oh, s.ow);
      });
      return;
    }
    if (avg2x2_simd(s)) {
#pragma omp parallel for num_threads(nt) schedule(static)
      for (int64_t pl = 0; pl < planes; ++pl) {
        for (int64_t oh = 0; oh < s.oh; ++oh) {
          const float* r0 = x + pl * HW + 2 * oh * s.w;
          avg2x2_row_avx2(y + pl * OHW + oh * s.ow, r0, r0 + s.w, s.ow);
        }
      }
      return;
    }
  }
#endif
#pragma omp parallel for num_threads(nt) schedule(static)
  for (int64_t pl = 0; pl < planes; ++pl) {
    const T* xp = x + pl * HW;
    T* yp = y + pl * OHW;
    for (int64_t oh = 0; oh < s.oh; ++oh) {
      for (int64_t ow = 0; ow < s.ow; ++ow) {
        const Window wd = window(s, oh, ow);
        T sum = T(0);
        for (int64_t h = wd.h0; h < wd.h1; ++h)
          for (int64_t w = wd.w0; w < wd.w1; ++w) sum += xp[h * s.w + w];
        const int64_t cnt = std::max<int64_t>(wd.h1 - wd.h0, 0) * std::max<int64_t>(wd.w1 - wd.w0, 0);
        const int64_t div = count_include_pad ? s.kh * s.kw : cnt;
        yp[oh * s.ow + ow] = div > 0 ? sum / T(div) : T(0);
      }
    }
  }
}

template <typename T>
void avg_pool2d_backward_cpu(T* dx, const T* dy, const Pool2dShape& s, bool count_include_pad) {
  const int64_t planes = s.planes(), HW = s.hw(), OHW = s.ohw();
  const int nt = threads_for(planes * (HW + OHW * s.kh * s.kw), planes);
#if LF_X86_SIMD
  if constexpr (std::is_same_v<T, float>) {
    if (avx512_2x2(s)) {
      for_plane_runs(planes, nt, [&](int64_t p0, int64_t n) {
        avg2x2_bwd_planes_avx512(dx + p0 * HW, dy + p0 * OHW, n, s.h, s.w, s.oh, s.ow);
      });
      return;
    }
    if (avg2x2_simd(s)) {
#pragma omp parallel for num_threads(nt) schedule(static)
      for (int64_t pl = 0; pl < planes; ++pl) {
        float* dxp = dx + pl * HW;
        for (int64_t oh = 0; oh < s.oh; ++oh) {
          float* d0 = dxp + 2 * oh * s.w;
          avg2x2_bwd_row_avx2(d0, d0 + s.w, dy + pl * OHW + oh * s.ow, s.ow);
          for (int64_t w = 2 * s.ow; w < s.w; ++w) d0[w] = d0[s.w + w] = 0.f;  // odd width
        }
        std::fill(dxp + 2 * s.oh * s.w, dxp + HW, 0.f);  // rows no window covers
      }
      return;
    }
  }
#endif
#pragma omp parallel for num_threads(nt) schedule(static)
  for (int64_t pl = 0; pl < planes; ++pl) {
    T* dxp = dx + pl * HW;
    const T* dyp = dy + pl * OHW;
    std::fill(dxp, dxp + HW, T(0));
    for (int64_t oh = 0; oh < s.oh; ++oh) {
      for (int64_t ow = 0; ow < s.ow; ++ow) {
        const Window wd = window(s, oh, ow);
        const int64_t cnt = std::max<int64_t>(wd.h1 - wd.h0, 0) * std::max<int64_t>(wd.w1 - wd.w0, 0);
        const int64_t div = count_include_pad ? s.kh * s.kw : cnt;
        if (div <= 0) continue;
        const T g = dyp[oh * s.ow + ow] / T(div);
        for (int64_t h = wd.h0; h < wd.h1; ++h)
          for (int64_t w = wd.w0; w < wd.w1; ++w) dxp[h * s.w + w] += g;
      }
    }
  }
}

#define LF_INSTANTIATE(T)                                                                   \
  template void max_pool2d_forward_cpu<T>(T*, int64_t*, const T*, const Pool2dShape&);     \
  template int64_t max_pool2d_backward_cpu<T>(T*, const T*, const int64_t*, const Pool2dShape&); \
  template void avg_pool2d_forward_cpu<T>(T*, const T*, const Pool2dShape&, bool);         \
  template void avg_pool2d_backward_cpu<T>(T*, const T*, const Pool2dShape&, bool);
LF_INSTANTIATE(float)
LF_INSTANTIATE(double)
#undef LF_INSTANTIATE

}  // namespace lf
