// AVX-512 float32 loops of the cheap elementwise kernels (activation.cpp), on one thread's
// contiguous range. The module's baseline is SSE2, where these loops move 4 floats per
// instruction; on data resident in L2 / L3 that halved relu's throughput against PyTorch's
// AVX-512 kernels. Same formulas and rounding as the scalar loops (no contraction into FMA),
// NaN rules included: relu keeps NaN (x < 0 is false for it), its backward passes dy only
// where x > 0. Tails use masked loads and stores.
#include <immintrin.h>

#include <algorithm>
#include <cstdint>

#include "cpu/simd.h"
#include "cpu/vmath.h"

#if LF_X86_SIMD
#pragma GCC push_options
#pragma GCC target("avx512f,avx2,fma")
// The lambdas below pass __m512 by value; they are file-local and inlined, so the note that
// such a signature's ABI depends on AVX-512 being enabled does not apply.
#pragma GCC diagnostic ignored "-Wpsabi"

namespace lf {
namespace {

inline __mmask16 tail(int64_t n) { return static_cast<__mmask16>((1u << n) - 1u); }

// Whether a pass over y from the top down avoids a 4K-aliasing stall that the upward pass
// would hit. A load whose address matches a store still in flight in its low 12 bits waits
// for it; on the upward pass that is every load when y runs a little ahead of an input within
// the page, 0 < (y - input) mod 4096 < 512 bytes, and on the downward pass when y runs a
// little behind (the mirror window). Measured (relu, 2 threads, 1 MB and 2.8 MB, medians of
// 21 interleaved samples): upward at a distance of 64-384 bytes 10-15% slower than at 1-3 KB,
// downward there as fast as upward at 1-3 KB, and downward at 3904-4032 as slow as upward at
// 64-384. glibc's memmove picks its copy direction by the same test. NumPy places each large
// buffer at whatever offset malloc gives, so one call in eight or so would run in the window.
inline bool downward(const float* y, const float* a, const float* b) {
  constexpr uintptr_t kPage = 4096, kNear = 512;
  bool up_stalls = false, down_stalls = false;
  for (const float* in : {a, b}) {
    if (!in) continue;
    const uintptr_t d = (reinterpret_cast<uintptr_t>(y) - reinterpret_cast<uintptr_t>(in)) % kPage;
    up_stalls |= d != 0 && d < kNear;
    down_stalls |= d > kPage - kNear;
  }
  return up_stalls && !down_stalls;
}

// y[i] = F(a[i], b[i]) over n elements (b unused by unary F). Whole 64-byte lines of y are
// stored with full stores, and the masked stores cover the partial lines at either end: a
// 64-byte store across two lines cost 7% of relu's speed on cache-resident data (NumPy's
// large buffers start 16 bytes past a line), and the streaming store needs the alignment.
// With `stream` (a call too big for the caches, simd.h) those whole lines bypass the caches.
// The lines run upward, or downward where `downward` says so; every element is computed the
// same way in either order, so the results do not depend on it.
template <class F>
inline void map2(float* y, const float* a, const float* b, int64_t n, bool stream, F&& f) {
  const auto at = [&](int64_t i, __mmask16 m) {
    return f(_mm512_maskz_loadu_ps(m, a + i), b ? _mm512_maskz_loadu_ps(m, b + i) : _mm512_setzero_ps());
  };
  const auto part = [&](int64_t i, int64_t m) { _mm512_mask_storeu_ps(y + i, tail(m), at(i, tail(m))); };
  const uintptr_t addr = reinterpret_cast<uintptr_t>(y);
  if (addr % sizeof(float) != 0) {  // not even float-aligned: no whole lines to find
    for (int64_t i = 0; i < n; i += 16) part(i, std::min<int64_t>(16, n - i));
    return;
  }
  // [i0, i1): the whole lines of y.
  const int64_t i0 = std::min<int64_t>(n, int64_t((64 - addr % 64) % 64 / sizeof(float)));
  const int64_t i1 = i0 + (n - i0) / 16 * 16;
  if (i0) part(0, i0);
  const bool down = downward(y, a, b);
  const auto lines = [&](auto store) {
    if (down) {
      for (int64_t i = i1 - 16; i >= i0; i -= 16) store(y + i, at(i, __mmask16(0xFFFF)));
    } else {
      for (int64_t i = i0; i < i1; i += 16) store(y + i, at(i, __mmask16(0xFFFF)));
    }
  };
  if (stream) {
    lines([](float* p, __m512 r) { _mm512_stream_ps(p, r); });
  } else {
    lines([](float* p, __m512 r) { _mm512_storeu_ps(p, r); });
  }
  if (i1 < n) part(i1, n - i1);
  if (stream) _mm_sfence();  // the streamed lines are visible before any later store of this thread
}

}  // namespace

void relu_f32_avx512(float* y, const float* x, int64_t n, bool stream) {
  map2(y, x, nullptr, n, stream, [](__m512 v, __m512) {
    return _mm512_maskz_mov_ps(static_cast<__mmask16>(~_mm512_cmp_ps_mask(v, _mm512_setzero_ps(), _CMP_LT_OQ)), v);
  });
}

void relu_bwd_f32_avx512(float* dx, const float* dy, const float* x, int64_t n, bool stream) {
  map2(dx, x, dy, n, stream, [](__m512 v, __m512 d) {
    return _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(v, _mm512_setzero_ps(), _CMP_GT_OQ), d);
  });
}

void sigmoid_bwd_f32_avx512(float* dx, const float* dy, const float* y, int64_t n, bool stream) {
  map2(dx, dy, y, n, stream, [](__m512 d, __m512 v) {  // (dy * y) * (1 - y)
    return _mm512_mul_ps(_mm512_mul_ps(d, v), _mm512_sub_ps(_mm512_set1_ps(1.0f), v));
  });
}

void tanh_bwd_f32_avx512(float* dx, const float* dy, const float* y, int64_t n, bool stream) {
  map2(dx, dy, y, n, stream, [](__m512 d, __m512 v) {  // dy * (1 - y * y)
    return _mm512_mul_ps(d, _mm512_sub_ps(_mm512_set1_ps(1.0f), _mm512_mul_ps(v, v)));
  });
}

}  // namespace lf

#pragma GCC pop_options
#endif
