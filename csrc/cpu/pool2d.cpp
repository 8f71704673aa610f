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

template <typename T>
inline void max2x2_plane(T* yp, int64_t* ip, const T* xp, const Pool2dShape& s) {
  for (int64_t oh = 0; oh < s.oh; ++oh) {
    const T* r0 = xp + 2 * oh * s.w;
    const T* r1 = r0 + s.w;
    T* yr = yp + oh * s.ow;
    int64_t* ir = ip ? ip + oh * s.ow : nullptr;
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

template <typename T>
void max_pool2d_forward_cpu(T* y, int64_t* indices, const T* x, const Pool2dShape& s) {
  const int64_t planes = s.planes(), HW = s.hw(), OHW = s.ohw();
  const int nt = threads_for(planes * OHW * s.kh * s.kw, planes);
  const bool two_by_two = s.kh == 2 && s.kw == 2 && s.sh == 2 && s.sw == 2 && s.ph == 0 &&
                          s.pw == 0 && 2 * s.oh <= s.h && 2 * s.ow <= s.w;
#pragma omp parallel for num_threads(nt) schedule(static)
  for (int64_t pl = 0; pl < planes; ++pl) {
    if (two_by_two) {
      max2x2_plane(y + pl * OHW, indices ? indices + pl * OHW : nullptr, x + pl * HW, s);
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
void max_pool2d_backward_cpu(T* dx, const T* dy, const int64_t* indices, const Pool2dShape& s) {
  const int64_t planes = s.planes(), HW = s.hw(), OHW = s.ohw();
  const int nt = threads_for(planes * (HW + OHW), planes);
#pragma omp parallel for num_threads(nt) schedule(static)
  for (int64_t pl = 0; pl < planes; ++pl) {
    T* dxp = dx + pl * HW;
    const T* dyp = dy + pl * OHW;
    const int64_t* ip = indices + pl * OHW;
    std::fill(dxp, dxp + HW, T(0));
    // Indices outside the plane (only from a bad direct call, or -1 from an empty window)
    // are skipped rather than written out of bounds.
    for (int64_t o = 0; o < OHW; ++o) {
      const int64_t idx = ip[o];
      if (idx >= 0 && idx < HW) dxp[idx] += dyp[o];
    }
  }
}

template <typename T>
void avg_pool2d_forward_cpu(T* y, const T* x, const Pool2dShape& s, bool count_include_pad) {
  const int64_t planes = s.planes(), HW = s.hw(), OHW = s.ohw();
  const int nt = threads_for(planes * OHW * s.kh * s.kw, planes);
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
  template void max_pool2d_backward_cpu<T>(T*, const T*, const int64_t*, const Pool2dShape&); \
  template void avg_pool2d_forward_cpu<T>(T*, const T*, const Pool2dShape&, bool);         \
  template void avg_pool2d_backward_cpu<T>(T*, const T*, const Pool2dShape&, bool);
LF_INSTANTIATE(float)
LF_INSTANTIATE(double)
#undef LF_INSTANTIATE

}  // namespace lf
