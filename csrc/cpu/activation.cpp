// Elementwise activations on flat arrays of n elements (forward y = f(x); backward takes
// dy and x (relu) or the forward output y (sigmoid, tanh)).
// NaN propagates: relu uses `x < 0 ? 0 : x`; sigmoid uses exp(-|x|), which never
// overflows (x = +-1000 gives exactly 1 / 0), so no inf/inf. float32 tanh and sigmoid run
// vmath.h's vectorised forms (a few ulp) on the SIMD paths, std:: calls on the scalar path. OpenMP over contiguous
// chunks above a size threshold; the relu loops are branch-free selects that vectorise. On the
// AVX-512 path the float32 relu and backward loops run eltwise_avx512.cpp's explicit forms.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <type_traits>

#include "cpu/simd.h"
#include "cpu/vmath.h"
#include "ops.h"

#include <omp.h>

namespace lf {

namespace {

// Threads for a cheap elementwise pass over n elements: each element weighs half a unit of
// threads_for's grain, so one thread below 65536 elements. A second thread
// saved nothing on the relu and backward loops at 32768 elements (5.2 vs 5.3 us) and little
// on sigmoid (9.8 vs 7.5 us), and waking a sleeping OpenMP worker costs 20-80 us on our
// machine when PyTorch's calls run in between (layerforge bench: sigmoid (256, 128) took
// 37-87 us a call threaded, 6 us with OMP_WAIT_POLICY=active).
inline int eltwise_threads(int64_t n, int64_t items) {
  return threads_for(n / 2, items);
}

// float32 on the AVX-512 path: f(out, a, b, count, stream) on each thread's contiguous share
// (cut at multiples of 16 floats, so no two threads write one cache line); stream when the
// call's arrays are too big for the caches (simd.h). False elsewhere.
template <typename T, class F>
bool avx512_split(T* out, const T* a, const T* b, int64_t n, F f) {
#if LF_X86_SIMD
  if constexpr (std::is_same_v<T, float>) {
    if (simd_path() != SimdPath::Avx512) return false;
    const bool stream = n * int64_t(sizeof(float)) * (b ? 3 : 2) >= stream_min_bytes();
    const int nt = eltwise_threads(n, (n + 15) / 16);
    if (nt == 1) {  // no OpenMP region at all: even a one-thread team costs a small call
      f(out, a, b, n, stream);
      return true;
    }
#pragma omp parallel num_threads(nt)
    {
      const int64_t t = omp_get_thread_num(), tn = omp_get_num_threads(), blocks = (n + 15) / 16;
      const int64_t i0 = std::min(n, blocks * t / tn * 16), i1 = std::min(n, blocks * (t + 1) / tn * 16);
      if (i1 > i0) f(out + i0, a + i0, b ? b + i0 : nullptr, i1 - i0, stream);
    }
    return true;
  }
#endif
  (void)out, (void)a, (void)b, (void)n, (void)f;
  return false;
}

}  // namespace

template <typename T>
void relu_forward_cpu(T* y, const T* x, int64_t n) {
  if (avx512_split(y, x, static_cast<const T*>(nullptr), n,
                   [](float* o, const float* a, const float*, int64_t m, bool st) { relu_f32_avx512(o, a, m, st); }))
    return;
  const int nt = eltwise_threads(n, n);
#pragma omp parallel for simd num_threads(nt) schedule(static)
  for (int64_t i = 0; i < n; ++i) y[i] = x[i] < T(0) ? T(0) : x[i];
}

template <typename T>
void relu_backward_cpu(T* dx, const T* dy, const T* x, int64_t n) {
  if (avx512_split(dx, dy, x, n, [](float* o, const float* d, const float* v, int64_t m, bool st) {
        relu_bwd_f32_avx512(o, d, v, m, st);
      }))
    return;
  const int nt = eltwise_threads(n, n);
#pragma omp parallel for simd num_threads(nt) schedule(static)
  // Both loads are unconditional so the select if-converts and vectorises: written as
  // `x > 0 ? dy[i] : 0` the compiler may not hoist the load of dy[i] and branches instead,
  // which on real activations (signs at random) mispredicts about half the time (50x slower).
  for (int64_t i = 0; i < n; ++i) {
    const T d = dy[i];
    dx[i] = x[i] > T(0) ? d : T(0);
  }
}

namespace {

// float32 on a SIMD path: the vectorised tanh / sigmoid of vmath.h (same formulas, 8 or 16
// lanes) on chunks copied from x, threaded over chunks. Returns false on the scalar path.
template <typename T>
bool vmath_forward(T* y, const T* x, int64_t n, bool tanh_not_sigmoid) {
  if constexpr (!std::is_same_v<T, float>) {
    return false;
  } else {
    const SimdPath path = simd_path();
    if (path == SimdPath::Scalar) return false;
    if (path == SimdPath::Avx512) {  // out of place: no copy of x first
      if (avx512_split(y, x, static_cast<const float*>(nullptr), n,
                       [tanh_not_sigmoid](float* o, const float* a, const float*, int64_t m, bool) {
                         if (tanh_not_sigmoid) {
                           tanh_f32_avx512(o, a, m);
                         } else {
                           sigmoid_f32_avx512(o, a, m);
                         }
                       }))
        return true;
    }
    // AVX2: in place on copied chunks.
    void (*f)(float*, int64_t) = tanh_not_sigmoid ? &tanh_f32_avx2 : &sigmoid_f32_avx2;
    constexpr int64_t kChunk = 4096;
    const int64_t chunks = (n + kChunk - 1) / kChunk;
    const int nt = threads_for(n * 2, chunks);
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int64_t c = 0; c < chunks; ++c) {
      const int64_t i0 = c * kChunk, m = std::min(kChunk, n - i0);
      if (y != x) std::memcpy(y + i0, x + i0, sizeof(float) * m);
      f(y + i0, m);
    }
    return true;
  }
}

}  // namespace

template <typename T>
void sigmoid_forward_cpu(T* y, const T* x, int64_t n) {
  if (vmath_forward(y, x, n, false)) return;
  const int nt = threads_for(n * 8, n);
#pragma omp parallel for num_threads(nt) schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    const T e = std::exp(-std::fabs(x[i]));
    const T r = T(1) / (T(1) + e);
    y[i] = x[i] >= T(0) ? r : e * r;
  }
}

template <typename T>
void sigmoid_backward_cpu(T* dx, const T* dy, const T* y, int64_t n) {
  if (avx512_split(dx, dy, y, n, [](float* o, const float* d, const float* v, int64_t m, bool st) {
        sigmoid_bwd_f32_avx512(o, d, v, m, st);
      }))
    return;
  const int nt = eltwise_threads(n, n);
#pragma omp parallel for simd num_threads(nt) schedule(static)
  for (int64_t i = 0; i < n; ++i) dx[i] = dy[i] * y[i] * (T(1) - y[i]);
}

template <typename T>
void tanh_forward_cpu(T* y, const T* x, int64_t n) {
  if (vmath_forward(y, x, n, true)) return;
  const int nt = threads_for(n * 8, n);
#pragma omp parallel for num_threads(nt) schedule(static)
  for (int64_t i = 0; i < n; ++i) y[i] = std::tanh(x[i]);
}

template <typename T>
void tanh_backward_cpu(T* dx, const T* dy, const T* y, int64_t n) {
  if (avx512_split(dx, dy, y, n, [](float* o, const float* d, const float* v, int64_t m, bool st) {
        tanh_bwd_f32_avx512(o, d, v, m, st);
      }))
    return;
  const int nt = eltwise_threads(n, n);
#pragma omp parallel for simd num_threads(nt) schedule(static)
  for (int64_t i = 0; i < n; ++i) dx[i] = dy[i] * (T(1) - y[i] * y[i]);
}

#define LF_INSTANTIATE(T)                                                  \
  template void relu_forward_cpu<T>(T*, const T*, int64_t);                \
  template void relu_backward_cpu<T>(T*, const T*, const T*, int64_t);     \
  template void sigmoid_forward_cpu<T>(T*, const T*, int64_t);             \
  template void sigmoid_backward_cpu<T>(T*, const T*, const T*, int64_t);  \
  template void tanh_forward_cpu<T>(T*, const T*, int64_t);                \
  template void tanh_backward_cpu<T>(T*, const T*, const T*, int64_t);
LF_INSTANTIATE(float)
LF_INSTANTIATE(double)
#undef LF_INSTANTIATE

}  // namespace lf
