// AVX-512 2x2 / stride 2 float32 pooling, one plane per call (see pool2d_kernels.h).
//
// Why a plane kernel and not only the AVX2 row loop of pool2d.cpp: on the documents' small
// planes (11 x 11 -> 5 x 5) a row has 5 outputs, so one 8-lane step per row is mostly
// padding, and AVX2 has no cheap partial store (vmaskmov stores are microcoded on AMD). Here,
// when a row has at most 8 outputs, two output rows share one 16-lane step: permutex2var
// gathers the corners of both rows' windows straight into packed lanes, and one store
// writes both rows (they are adjacent in y, also across planes). Wider rows run 16 outputs
// per step. The
// backward writes every dx element once (zeros included), 16 columns of two rows a step.
// Masked loads read only columns [0, 2 * ow) of a row, never past it.
//
// Max: the same rule as the scalar loop, in the same order (a, b on the top row, then c, d):
// a candidate replaces the maximum when it is greater or NaN, so the first of equal maxima
// wins and the last NaN does. Avg: ((a + b) + c) + d times 0.25, as the AVX2 rows.
#include <immintrin.h>

#include <algorithm>
#include <cstring>
#include <type_traits>

#include "cpu/pool2d_kernels.h"
#include "cpu/simd.h"

#if LF_X86_SIMD
#pragma GCC push_options
#pragma GCC target("avx512f,avx2,fma")

namespace lf {
namespace {

// Lanes [0, n) of 16 (or 8) set; n may be <= 0 or beyond the width.
inline __mmask16 first16(int64_t n) {
  return n <= 0 ? __mmask16(0) : n >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << n) - 1u);
}
inline __mmask8 first8(int64_t n) {
  return n <= 0 ? __mmask8(0) : n >= 8 ? __mmask8(0xFF) : __mmask8((1u << n) - 1u);
}

// Even / odd columns of 32 consecutive floats (lo, hi), or of two 16-column rows.
inline __m512i even_lanes() {
  return _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
}
// Lane 2j and 2j + 1 take element j (j < 8).
inline __m512i dup_lanes() {
  return _mm512_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7);
}

inline void take(__m512 v, __m512i iv, __m512& m, __m512i& idx) {
  const __mmask16 t = _mm512_cmp_ps_mask(v, m, _CMP_GT_OQ) | _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
  m = _mm512_mask_mov_ps(m, t, v);
  idx = _mm512_mask_mov_epi32(idx, t, iv);
}

// The four corners of 16 windows from top rows (t_lo, t_hi) and bottom rows (u_lo, u_hi):
// window j's top-left input is lane ev[j] of the 32 floats t_lo:t_hi, od = ev + 1.
struct Corners {
  __m512 a, b, c, d;
};
inline Corners corners(__m512i ev, __m512i od, __m512 t_lo, __m512 t_hi, __m512 u_lo, __m512 u_hi) {
  return {_mm512_permutex2var_ps(t_lo, ev, t_hi), _mm512_permutex2var_ps(t_lo, od, t_hi),
          _mm512_permutex2var_ps(u_lo, ev, u_hi), _mm512_permutex2var_ps(u_lo, od, u_hi)};
}

// Max of the corners with the index rule; ia holds the in-plane offsets of the a corners.
inline void max_corners(const Corners& k, __m512i ia, int32_t w, __m512& m, __m512i& idx) {
  const __m512i one = _mm512_set1_epi32(1), down = _mm512_set1_epi32(w);
  m = k.a;
  idx = ia;
  take(k.b, _mm512_add_epi32(ia, one), m, idx);
  take(k.c, _mm512_add_epi32(ia, down), m, idx);
  take(k.d, _mm512_add_epi32(_mm512_add_epi32(ia, down), one), m, idx);
}

inline __m512 avg_corners(const Corners& k) {
  return _mm512_mul_ps(_mm512_add_ps(_mm512_add_ps(_mm512_add_ps(k.a, k.b), k.c), k.d),
                       _mm512_set1_ps(0.25f));
}

// The first n (<= 16) int32 lanes of v stored as int64.
inline void store_indices(int64_t* p, int64_t n, __m512i v) {
  _mm512_mask_storeu_epi64(p, first8(n), _mm512_cvtepi32_epi64(_mm512_castsi512_si256(v)));
  _mm512_mask_storeu_epi64(p + 8, first8(n - 8), _mm512_cvtepi32_epi64(_mm512_extracti64x4_epi64(v, 1)));
}

// Visits the windows of `planes` consecutive planes 16 at a time: f(corners, in-plane offsets of the a corners,
// first output, number of outputs n), the windows in lanes [0, n) in output order. With
// ow <= 8 one step covers two output rows adjacent in y, r and r + 1 of a plane or the last
// row of a plane and the first of the next: lanes [0, ow) take the even columns of the first
// row's top input row (from t_lo), lanes [ow, 2 ow) those of the second's (t_hi), so the
// outputs come out packed. Otherwise a step is 16 consecutive outputs of one row.
// Steps come in increasing output order, each starting where the last one ended, so a
// forward kernel may store all 16 lanes whole when that stays inside its planes' outputs:
// the overhang past the step's n outputs is overwritten by the next step. On 11 x 11 planes
// (10 of 16 lanes used) that made the max forward 7% faster than masked stores, which cost
// more than the extra bytes (in-process A/B, 2048 planes on 2 threads, 28.7 -> 26.7 us).
template <class F>
inline void for_windows(const float* x, int64_t planes, int64_t h, int64_t w, int64_t oh, int64_t ow, F&& f) {
  const int64_t hw = h * w, ohw = oh * ow;
  const __m512i one = _mm512_set1_epi32(1);
  const __mmask16 cols = first16(2 * ow);
  if (ow <= 8) {
    // Lane L < ow: column 2L of the first row's top row; lane L >= ow: column 2 (L - ow) of the
    // second's, lane 16 + 2 (L - ow) of t_lo:t_hi, in-plane offset 2w + 2 (L - ow) past the
    // first's when both rows are of one plane (lane_off).
    const __m512i twice = even_lanes();
    const __mmask16 upper = static_cast<__mmask16>(~first16(ow));
    const __m512i e = _mm512_mask_add_epi32(twice, upper, twice, _mm512_set1_epi32(int32_t(16 - 2 * ow)));
    const __m512i o = _mm512_add_epi32(e, one);
    const __m512i lane_off = _mm512_mask_add_epi32(twice, upper, twice, _mm512_set1_epi32(int32_t(2 * w - 2 * ow)));
    // Output rows (r0 of the plane at x0, r1 of the plane at x1) in one step, or r0 alone
    // (two: std::true_type / std::false_type); ia: the in-plane offsets of the a corners.
    const auto step = [&](auto two, const float* x0, int64_t r0, const float* x1, int64_t r1, __m512i ia,
                          int64_t out) {
      constexpr bool kTwo = decltype(two)::value;
      const float* p0 = x0 + 2 * r0 * w;
      const float* p1 = kTwo ? x1 + 2 * r1 * w : p0;
      const __mmask16 c2 = kTwo ? cols : __mmask16(0);
      f(corners(e, o, _mm512_maskz_loadu_ps(cols, p0), _mm512_maskz_loadu_ps(c2, p1),
                _mm512_maskz_loadu_ps(cols, p0 + w), _mm512_maskz_loadu_ps(c2, p1 + w)),
        ia, out, kTwo ? 2 * ow : ow);
    };
    // Rows [r0, r1) of one plane, two at a time (the last alone if r1 - r0 is odd).
    const auto rows = [&](int64_t pl, int64_t r0, int64_t r1) {
      const float* xp = x + pl * hw;
      const auto ia = [&](int64_t r) { return _mm512_add_epi32(_mm512_set1_epi32(int32_t(2 * r * w)), lane_off); };
      int64_t r = r0;
      for (; r + 1 < r1; r += 2) step(std::true_type{}, xp, r, xp, r + 1, ia(r), pl * ohw + r * ow);
      if (r < r1) step(std::false_type{}, xp, r, xp, r, ia(r), pl * ohw + r * ow);
    };
    int64_t pl = 0;
    if (oh % 2) {
      // An odd number of rows: a plane's last row shares its step with the next plane's first
      // (the two are adjacent in y), so two planes take oh steps, not oh + 1: on 11 x 11
      // planes 5 steps of 10 outputs instead of 6 with two of them half empty (max forward on
      // 2048 planes, 2 threads, C++ A/B: 24.7-30.0 -> 20.9-25.0 us, bit-identical results).
      const __m512i cross = _mm512_add_epi32(
          _mm512_mask_sub_epi32(twice, upper, twice, _mm512_set1_epi32(int32_t(2 * ow))),
          _mm512_mask_blend_epi32(upper, _mm512_set1_epi32(int32_t(2 * (oh - 1) * w)), _mm512_setzero_si512()));
      for (; pl + 1 < planes; pl += 2) {
        rows(pl, 0, oh - 1);
        step(std::true_type{}, x + pl * hw, oh - 1, x + (pl + 1) * hw, 0, cross, pl * ohw + (oh - 1) * ow);
        rows(pl + 1, 1, oh);
      }
    }
    for (; pl < planes; ++pl) rows(pl, 0, oh);
    return;
  }
  const __m512i e = even_lanes(), o = _mm512_add_epi32(e, one);
  for (int64_t pl = 0; pl < planes; ++pl) {
    for (int64_t r = 0; r < oh; ++r) {
      for (int64_t c0 = 0; c0 < ow; c0 += 16) {
        const int64_t n = std::min<int64_t>(16, ow - c0);
        const float* p = x + pl * hw + 2 * r * w + 2 * c0;
        const __mmask16 lo = first16(2 * n), hi = first16(2 * n - 16);
        const Corners k = corners(e, o, _mm512_maskz_loadu_ps(lo, p), _mm512_maskz_loadu_ps(hi, p + 16),
                                  _mm512_maskz_loadu_ps(lo, p + w), _mm512_maskz_loadu_ps(hi, p + w + 16));
        const __m512i ia = _mm512_add_epi32(_mm512_set1_epi32(int32_t(2 * r * w + 2 * c0)), e);
        f(k, ia, pl * ohw + r * ow + c0, n);
      }
    }
  }
}

// n floats of zeros (a libc memset call per plane cost a fifth of the small-plane backward).
inline void zero_floats(float* p, int64_t n) {
  for (int64_t i = 0; i < n; i += 16) _mm512_mask_storeu_ps(p + i, first16(n - i), _mm512_setzero_ps());
}

// Stores dx columns [2 c0, 2 c0 + 2n) of rows d and d + w from 16 lanes whose lanes >= 2n are
// zero; on a row's last step it also writes the columns no window reaches (w odd).
inline void store_dx_pair(float* d, int64_t w, int64_t c0, int64_t n, bool last, __m512 top, __m512 bottom) {
  const int64_t cols = last ? w - 2 * c0 : 2 * n;
  const __mmask16 m = first16(cols);
  _mm512_mask_storeu_ps(d + 2 * c0, m, top);
  _mm512_mask_storeu_ps(d + w + 2 * c0, m, bottom);
  if (cols > 16) {  // only when the last step has 8 windows and w is odd
    zero_floats(d + 2 * c0 + 16, cols - 16);
    zero_floats(d + w + 2 * c0 + 16, cols - 16);
  }
}

// Small planes (at most 32 windows, 256 inputs): the backward builds each 16-float vector of
// dx whole, so dx is written with full sequential stores, not two masked row pieces per
// window row. For dx element f of the plane, window[f] is the window covering it and lane
// window[f] of the plane's dy (two registers, 32 lanes) its gradient; `covered` masks out
// the elements no window reaches (last row / column of odd sizes).
constexpr int64_t kSmallWindows = 32, kSmallInputs = 256;
struct SmallPlane {
  int64_t vectors;  // ceil(h * w / 16)
  __m512i window[kSmallInputs / 16], offset[kSmallInputs / 16];
  __mmask16 covered[kSmallInputs / 16];
};
inline bool small_plane(int64_t h, int64_t w, int64_t oh, int64_t ow) {
  return oh * ow <= kSmallWindows && h * w <= kSmallInputs;
}
inline void build_small_plane(SmallPlane& sp, int64_t h, int64_t w, int64_t oh, int64_t ow) {
  const int64_t hw = h * w;
  sp.vectors = (hw + 15) / 16;
  alignas(64) int32_t win[16], off[16];
  for (int64_t v = 0; v < sp.vectors; ++v) {
    unsigned m = 0;
    for (int64_t l = 0; l < 16; ++l) {
      const int64_t f = 16 * v + l, row = f / w, col = f % w;
      off[l] = int32_t(f);
      win[l] = 0;
      if (f < hw && row < 2 * oh && col < 2 * ow) {
        win[l] = int32_t((row / 2) * ow + col / 2);
        m |= 1u << l;
      }
    }
    sp.window[v] = _mm512_load_si512(win);
    sp.offset[v] = _mm512_load_si512(off);
    sp.covered[v] = static_cast<__mmask16>(m);
  }
}
// Stores vector v of a small plane's dx: full stores except the plane's last vector.
inline void store_small(float* dxp, int64_t hw, int64_t v, int64_t vectors, __m512 val) {
  if (v + 1 < vectors) {
    _mm512_storeu_ps(dxp + 16 * v, val);
  } else {
    _mm512_mask_storeu_ps(dxp + 16 * v, first16(hw - 16 * v), val);
  }
}

}  // namespace

void max2x2_planes_avx512(float* y, int64_t* indices, const float* x, int64_t planes, int64_t h,
                          int64_t w, int64_t oh, int64_t ow) {
  const int32_t w32 = int32_t(w);
  const int64_t total = planes * oh * ow;
  for_windows(x, planes, h, w, oh, ow, [&](const Corners& k, __m512i ia, int64_t o, int64_t n) {
    __m512 m;
    __m512i idx;
    max_corners(k, ia, w32, m, idx);
    if (o + 16 <= total) {  // whole stores: see the overhang note at for_windows
      _mm512_storeu_ps(y + o, m);
      if (indices) {
        _mm512_storeu_si512(indices + o, _mm512_cvtepi32_epi64(_mm512_castsi512_si256(idx)));
        _mm512_storeu_si512(indices + o + 8, _mm512_cvtepi32_epi64(_mm512_extracti64x4_epi64(idx, 1)));
      }
      return;
    }
    _mm512_mask_storeu_ps(y + o, first16(n), m);
    if (indices) store_indices(indices + o, n, idx);
  });
}

void avg2x2_planes_avx512(float* y, const float* x, int64_t planes, int64_t h, int64_t w, int64_t oh,
                          int64_t ow) {
  const int64_t total = planes * oh * ow;
  for_windows(x, planes, h, w, oh, ow, [&](const Corners& k, __m512i, int64_t o, int64_t n) {
    if (o + 16 <= total) {
      _mm512_storeu_ps(y + o, avg_corners(k));
    } else {
      _mm512_mask_storeu_ps(y + o, first16(n), avg_corners(k));
    }
  });
}

void avg2x2_bwd_planes_avx512(float* dx, const float* dy, int64_t planes, int64_t h, int64_t w,
                              int64_t oh, int64_t ow) {
  const __m512i dup = dup_lanes();
  const __m512 q = _mm512_set1_ps(0.25f);
  if (small_plane(h, w, oh, ow)) {
    SmallPlane sp;
    build_small_plane(sp, h, w, oh, ow);
    const int64_t hw = h * w, ohw = oh * ow;
    for (int64_t pl = 0; pl < planes; ++pl) {
      const float* dyp = dy + pl * ohw;
      const __m512 g_lo = _mm512_mul_ps(_mm512_maskz_loadu_ps(first16(ohw), dyp), q);
      const __m512 g_hi = _mm512_mul_ps(_mm512_maskz_loadu_ps(first16(ohw - 16), dyp + 16), q);
      for (int64_t v = 0; v < sp.vectors; ++v)
        store_small(dx + pl * hw, hw, v, sp.vectors,
                    _mm512_maskz_permutex2var_ps(sp.covered[v], g_lo, sp.window[v], g_hi));
    }
    return;
  }
  for (int64_t pl = 0; pl < planes; ++pl) {
    float* dxp = dx + pl * h * w;
    const float* dyp = dy + pl * oh * ow;
    for (int64_t r = 0; r < oh; ++r) {
      for (int64_t c0 = 0; c0 < ow; c0 += 8) {
        const int64_t n = std::min<int64_t>(8, ow - c0);
        const __m512 g = _mm512_mul_ps(_mm512_maskz_loadu_ps(first16(n), dyp + r * ow + c0), q);
        const __m512 e = _mm512_permutexvar_ps(dup, g);  // lanes >= 2n: g's zero lane n
        store_dx_pair(dxp + 2 * r * w, w, c0, n, c0 + n == ow, e, e);
      }
    }
    zero_floats(dxp + 2 * oh * w, (h - 2 * oh) * w);  // rows below the last window
  }
}

int64_t max2x2_bwd_planes_avx512(float* dx, const float* dy, const int64_t* indices, int64_t planes,
                                 int64_t h, int64_t w, int64_t oh, int64_t ow) {
  const __m512i dup = dup_lanes();
  const __m512i iota = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  const __m512i down = _mm512_set1_epi32(int32_t(w));
  const int64_t hw = h * w, ohw = oh * ow;
  const bool small = small_plane(h, w, oh, ow);
  SmallPlane sp;
  if (small) build_small_plane(sp, h, w, oh, ow);
  int64_t outside = 0;
  for (int64_t pl = 0; pl < planes; ++pl) {
    float* dxp = dx + pl * hw;
    const float* dyp = dy + pl * ohw;
    const int64_t* ip = indices + pl * ohw;
    int64_t matched = 0;
    if (small) {
      // The plane's dy and indices (int32, saturated) in two registers each.
      const __m512 g_lo = _mm512_maskz_loadu_ps(first16(ohw), dyp);
      const __m512 g_hi = _mm512_maskz_loadu_ps(first16(ohw - 16), dyp + 16);
      __m256i q[4];
      for (int k = 0; k < 4; ++k)
        q[k] = _mm512_cvtsepi64_epi32(_mm512_maskz_loadu_epi64(first8(ohw - 8 * k), ip + 8 * k));
      const __m512i i_lo = _mm512_inserti64x4(_mm512_castsi256_si512(q[0]), q[1], 1);
      const __m512i i_hi = _mm512_inserti64x4(_mm512_castsi256_si512(q[2]), q[3], 1);
      for (int64_t v = 0; v < sp.vectors; ++v) {
        const __m512i iv = _mm512_permutex2var_epi32(i_lo, sp.window[v], i_hi);
        const __mmask16 hit = _mm512_mask_cmpeq_epi32_mask(sp.covered[v], iv, sp.offset[v]);
        matched += __builtin_popcount(hit);
        store_small(dxp, hw, v, sp.vectors, _mm512_maskz_permutex2var_ps(hit, g_lo, sp.window[v], g_hi));
      }
    }
    for (int64_t r = 0; r < oh && !small; ++r) {
      for (int64_t c0 = 0; c0 < ow; c0 += 8) {
        const int64_t n = std::min<int64_t>(8, ow - c0);
        const __m512 g = _mm512_permutexvar_ps(dup, _mm512_maskz_loadu_ps(first16(n), dyp + r * ow + c0));
        // Saturating narrowing: an index beyond int32 cannot alias an in-plane offset.
        const __m256i i32 = _mm512_cvtsepi64_epi32(_mm512_maskz_loadu_epi64(first8(n), ip + r * ow + c0));
        const __m512i iv = _mm512_permutexvar_epi32(dup, _mm512_castsi256_si512(i32));
        const __m512i off0 = _mm512_add_epi32(_mm512_set1_epi32(int32_t(2 * r * w + 2 * c0)), iota);
        const __mmask16 lanes = first16(2 * n);
        const __mmask16 m0 = _mm512_mask_cmpeq_epi32_mask(lanes, iv, off0);
        const __mmask16 m1 = _mm512_mask_cmpeq_epi32_mask(lanes, iv, _mm512_add_epi32(off0, down));
        matched += __builtin_popcount(m0) + __builtin_popcount(m1);
        store_dx_pair(dxp + 2 * r * w, w, c0, n, c0 + n == ow, _mm512_maskz_mov_ps(m0, g),
                      _mm512_maskz_mov_ps(m1, g));
      }
    }
    if (!small) zero_floats(dxp + 2 * oh * w, (h - 2 * oh) * w);
    // Each window's index equals at most one of its four offsets, so all matched iff the
    // count is the number of windows. Otherwise (indices from another pool) the plane is
    // redone as the general scatter: zeros, then += at every index inside the plane.
    if (matched != ohw) {
      zero_floats(dxp, hw);
      for (int64_t i = 0; i < ohw; ++i) {
        if (ip[i] >= 0 && ip[i] < hw) {
          dxp[ip[i]] += dyp[i];
        } else {
          ++outside;
        }
      }
    }
  }
  return outside;
}

}  // namespace lf

#pragma GCC pop_options
#endif
