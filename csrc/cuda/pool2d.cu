// 2-D max and average pooling, NCHW: x / dx (N, C, H, W), y / dy / indices (N, C, OH, OW).
// Window of output (p, q): rows p*sh - ph + [0, kh), columns q*sw - pw + [0, kw), clipped to
// the input (padding never wins a max; it counts in an average only when count_include_pad).
//
// Forward: one thread per output element (int64 grid-stride loop), row-major window scan with
// PyTorch's NaN rule `v > m || isnan(v)`: ties keep the first maximum, a NaN wins and a later
// NaN replaces an earlier one; the initial index is the window's first in-bounds element.
// Backward is a GATHER, one thread per input element: it visits, in row-major output order,
// the windows that contain it (p in [ceil((h+ph-kh+1)/sh), floor((h+ph)/sh)], same for q) and
// sums their contributions. No atomics, each dx written once, and the summation order is the
// CPU kernel's (output order), so results are deterministic.
#include "common.cuh"
#include "ops.h"

namespace lf {
namespace {

constexpr int kThreads = 256;

// Range [lo, hi) of output positions whose window (start o*stride - pad, length k) covers
// input coordinate i, clipped to [0, out).
__device__ __forceinline__ void covering(int64_t i, int64_t k, int64_t stride, int64_t pad,
                                         int64_t out, int64_t& lo, int64_t& hi) {
  const int64_t num = i + pad - k + 1;
  lo = num <= 0 ? 0 : ceil_div<int64_t>(num, stride);
  hi = (i + pad) / stride + 1;  // i + pad >= 0
  if (hi > out) hi = out;
}

// ---- kernels

template <typename T>
__global__ void __launch_bounds__(kThreads)
    max_pool2d_forward_kernel1(T* __restrict__ y, int64_t* __restrict__ indices,
                               const T* __restrict__ x, Pool2dShape s) {
  const int64_t ohw = s.ohw(), hw = s.hw(), total = s.planes() * ohw;
  for (int64_t o = global_thread(); o < total; o += grid_threads()) {
    const int64_t plane = o / ohw, rem = o - plane * ohw;
    const int64_t p = rem / s.ow, q = rem - p * s.ow;
    const int64_t hs = p * s.sh - s.ph, ws = q * s.sw - s.pw;
    const int64_t h0 = hs > 0 ? hs : 0, h1 = hs + s.kh < s.h ? hs + s.kh : s.h;
    const int64_t w0 = ws > 0 ? ws : 0, w1 = ws + s.kw < s.w ? ws + s.kw : s.w;
    const T* xp = x + plane * hw;
    // An empty window (only from inconsistent direct-call shapes) gives -inf and index -1,
    // as on the CPU.
    T m = neg_inf<T>();
    int64_t idx = -1;
    if (h0 < h1 && w0 < w1) {
      idx = h0 * s.w + w0;
      m = xp[idx];
      for (int64_t h = h0; h < h1; ++h) {
        for (int64_t w = w0; w < w1; ++w) {
          const int64_t e = h * s.w + w;
          const T v = xp[e];
          if (v > m || isnan(v)) {
            m = v;
            idx = e;
          }
        }
      }
    }
    y[o] = m;
    if (indices != nullptr) indices[o] = idx;
  }
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
    max_pool2d_backward_kernel1(T* __restrict__ dx, const T* __restrict__ dy,
                                const int64_t* __restrict__ indices, Pool2dShape s) {
  const int64_t ohw = s.ohw(), hw = s.hw(), total = s.planes() * hw;
  for (int64_t i = global_thread(); i < total; i += grid_threads()) {
    const int64_t plane = i / hw, rem = i - plane * hw;
    const int64_t h = rem / s.w, w = rem - h * s.w;
    int64_t p0, p1, q0, q1;
    covering(h, s.kh, s.sh, s.ph, s.oh, p0, p1);
    covering(w, s.kw, s.sw, s.pw, s.ow, q0, q1);
    const int64_t* ip = indices + plane * ohw;
    const T* gp = dy + plane * ohw;
    T acc = T(0);
    for (int64_t p = p0; p < p1; ++p) {
      for (int64_t q = q0; q < q1; ++q) {
        const int64_t o = p * s.ow + q;
        if (ip[o] == rem) acc += gp[o];
      }
    }
    dx[i] = acc;
  }
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
    avg_pool2d_forward_kernel1(T* __restrict__ y, const T* __restrict__ x, Pool2dShape s,
                               bool count_include_pad) {
  const int64_t ohw = s.ohw(), hw = s.hw(), total = s.planes() * ohw;
  for (int64_t o = global_thread(); o < total; o += grid_threads()) {
    const int64_t plane = o / ohw, rem = o - plane * ohw;
    const int64_t p = rem / s.ow, q = rem - p * s.ow;
    const int64_t hs = p * s.sh - s.ph, ws = q * s.sw - s.pw;
    const int64_t h0 = hs > 0 ? hs : 0, h1 = hs + s.kh < s.h ? hs + s.kh : s.h;
    const int64_t w0 = ws > 0 ? ws : 0, w1 = ws + s.kw < s.w ? ws + s.kw : s.w;
    const T* xp = x + plane * hw;
    T sum = T(0);
    for (int64_t h = h0; h < h1; ++h)
      for (int64_t w = w0; w < w1; ++w) sum += xp[h * s.w + w];
    const int64_t cnt = (h1 > h0 ? h1 - h0 : 0) * (w1 > w0 ? w1 - w0 : 0);
    const int64_t div = count_include_pad ? s.kh * s.kw : cnt;
    y[o] = div > 0 ? sum / static_cast<T>(div) : T(0);
  }
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
    avg_pool2d_backward_kernel1(T* __restrict__ dx, const T* __restrict__ dy, Pool2dShape s,
                                bool count_include_pad) {
  const int64_t ohw = s.ohw(), hw = s.hw(), total = s.planes() * hw;
  for (int64_t i = global_thread(); i < total; i += grid_threads()) {
    const int64_t plane = i / hw, rem = i - plane * hw;
    const int64_t h = rem / s.w, w = rem - h * s.w;
    int64_t p0, p1, q0, q1;
    covering(h, s.kh, s.sh, s.ph, s.oh, p0, p1);
    covering(w, s.kw, s.sw, s.pw, s.ow, q0, q1);
    const T* gp = dy + plane * ohw;
    T acc = T(0);
    for (int64_t p = p0; p < p1; ++p) {
      const int64_t hs = p * s.sh - s.ph;
      const int64_t rows = (hs + s.kh < s.h ? hs + s.kh : s.h) - (hs > 0 ? hs : 0);
      for (int64_t q = q0; q < q1; ++q) {
        const int64_t ws = q * s.sw - s.pw;
        const int64_t cols = (ws + s.kw < s.w ? ws + s.kw : s.w) - (ws > 0 ? ws : 0);
        // The window contains (h, w), so rows and cols are >= 1.
        const int64_t div = count_include_pad ? s.kh * s.kw : rows * cols;
        acc += gp[p * s.ow + q] / static_cast<T>(div);
      }
    }
    dx[i] = acc;
  }
}

}  // namespace

// ---- launchers

template <typename T>
void max_pool2d_forward_cuda(T* y, int64_t* indices, const T* x, const Pool2dShape& s,
                             cudaStream_t stream) {
  const int64_t total = s.planes() * s.ohw();
  if (total <= 0) return;
  max_pool2d_forward_kernel1<T>
      <<<grid_blocks(total, kThreads), kThreads, 0, stream>>>(y, indices, x, s);
  CUDA_CHECK_LAUNCH();
}

template <typename T>
void max_pool2d_backward_cuda(T* dx, const T* dy, const int64_t* indices, const Pool2dShape& s,
                              cudaStream_t stream) {
  const int64_t total = s.planes() * s.hw();
  if (total <= 0 || dx == nullptr) return;
  if (s.ohw() <= 0) {  // no windows: the gradient is zero (dy / indices may be null)
    CUDA_CHECK(cudaMemsetAsync(dx, 0, static_cast<size_t>(total) * sizeof(T), stream));
    return;
  }
  max_pool2d_backward_kernel1<T>
      <<<grid_blocks(total, kThreads), kThreads, 0, stream>>>(dx, dy, indices, s);
  CUDA_CHECK_LAUNCH();
}

template <typename T>
void avg_pool2d_forward_cuda(T* y, const T* x, const Pool2dShape& s, bool count_include_pad,
                             cudaStream_t stream) {
  const int64_t total = s.planes() * s.ohw();
  if (total <= 0) return;
  avg_pool2d_forward_kernel1<T>
      <<<grid_blocks(total, kThreads), kThreads, 0, stream>>>(y, x, s, count_include_pad);
  CUDA_CHECK_LAUNCH();
}

template <typename T>
void avg_pool2d_backward_cuda(T* dx, const T* dy, const Pool2dShape& s, bool count_include_pad,
                              cudaStream_t stream) {
  const int64_t total = s.planes() * s.hw();
  if (total <= 0 || dx == nullptr) return;
  if (s.ohw() <= 0) {
    CUDA_CHECK(cudaMemsetAsync(dx, 0, static_cast<size_t>(total) * sizeof(T), stream));
    return;
  }
  avg_pool2d_backward_kernel1<T>
      <<<grid_blocks(total, kThreads), kThreads, 0, stream>>>(dx, dy, s, count_include_pad);
  CUDA_CHECK_LAUNCH();
}

#define LF_INSTANTIATE(T)                                                                     \
  template void max_pool2d_forward_cuda<T>(T*, int64_t*, const T*, const Pool2dShape&,        \
                                           cudaStream_t);                                     \
  template void max_pool2d_backward_cuda<T>(T*, const T*, const int64_t*, const Pool2dShape&, \
                                            cudaStream_t);                                    \
  template void avg_pool2d_forward_cuda<T>(T*, const T*, const Pool2dShape&, bool,            \
                                           cudaStream_t);                                     \
  template void avg_pool2d_backward_cuda<T>(T*, const T*, const Pool2dShape&, bool, cudaStream_t);
LF_INSTANTIATE(float)
LF_INSTANTIATE(double)
#undef LF_INSTANTIATE

}  // namespace lf
