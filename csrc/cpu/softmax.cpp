// softmax / log_softmax over the middle axis of a C-contiguous (outer, dim, inner) view.
// Element (o, d, i) sits at (o*dim + d)*inner + i.
// Numerics: the row max is subtracted before exp, so +-1e4 logits stay finite; a NaN in a
// row makes the whole row NaN (it reaches the sum), as in PyTorch.
// inner == 1 (the last axis) walks contiguous rows. inner > 1 processes a block of up to
// kCols adjacent columns at once so every pass over d reads contiguous memory; the per-
// column max/sum live in small stack arrays. float32 rows (inner == 1) on the AVX-512 path
// run vmath.h's vectorised exp (a few ulp): 320 std::exp calls were most of a (32, 10)
// forward.
#include <algorithm>
#include <cmath>
#include <type_traits>

#include "cpu/simd.h"
#include "cpu/vmath.h"
#include "ops.h"

namespace lf {
namespace {

constexpr int64_t kCols = 64;

enum class Kind { Softmax, LogSoftmax };

// vec: the AVX-512 path is in force (only float32 rows use it).
template <typename T, Kind kind>
void forward_row(T* y, const T* x, int64_t dim, bool vec) {
#if LF_X86_SIMD
  if constexpr (std::is_same_v<T, float>) {
    if (vec) {
      if (kind == Kind::Softmax) return softmax_scaled_f32_avx512(y, x, dim, 1.0f);
      const float shift = logsumexp_f32_avx512(x, dim);
      for (int64_t d = 0; d < dim; ++d) y[d] = x[d] - shift;
      return;
    }
  }
#endif
  (void)vec;
  T m = x[0];
  for (int64_t d = 1; d < dim; ++d) m = std::max(m, x[d]);
  T sum = T(0);
  if (kind == Kind::Softmax) {
    for (int64_t d = 0; d < dim; ++d) {
      y[d] = std::exp(x[d] - m);
      sum += y[d];
    }
    const T inv = T(1) / sum;
    for (int64_t d = 0; d < dim; ++d) y[d] *= inv;
  } else {
    for (int64_t d = 0; d < dim; ++d) sum += std::exp(x[d] - m);
    const T shift = m + std::log(sum);
    for (int64_t d = 0; d < dim; ++d) y[d] = x[d] - shift;
  }
}

template <typename T, Kind kind>
void forward_cols(T* y, const T* x, int64_t dim, int64_t inner, int64_t nc) {
  T m[kCols], sum[kCols];
  for (int64_t c = 0; c < nc; ++c) { m[c] = x[c]; sum[c] = T(0); }
  for (int64_t d = 1; d < dim; ++d)
    for (int64_t c = 0; c < nc; ++c) m[c] = std::max(m[c], x[d * inner + c]);
  for (int64_t d = 0; d < dim; ++d) {
    for (int64_t c = 0; c < nc; ++c) {
      const T e = std::exp(x[d * inner + c] - m[c]);
      if (kind == Kind::Softmax) y[d * inner + c] = e;
      sum[c] += e;
    }
  }
  if (kind == Kind::Softmax) {
    for (int64_t c = 0; c < nc; ++c) sum[c] = T(1) / sum[c];
    for (int64_t d = 0; d < dim; ++d)
      for (int64_t c = 0; c < nc; ++c) y[d * inner + c] *= sum[c];
  } else {
    for (int64_t c = 0; c < nc; ++c) m[c] += std::log(sum[c]);
    for (int64_t d = 0; d < dim; ++d)
      for (int64_t c = 0; c < nc; ++c) y[d * inner + c] = x[d * inner + c] - m[c];
  }
}

// softmax:     dx = y * (dy - sum(dy * y))
// log_softmax: dx = dy - exp(y) * sum(dy)
template <typename T, Kind kind>
void backward_cols(T* dx, const T* dy, const T* y, int64_t dim, int64_t inner, int64_t nc) {
  T acc[kCols];
  for (int64_t c = 0; c < nc; ++c) acc[c] = T(0);
  for (int64_t d = 0; d < dim; ++d) {
    for (int64_t c = 0; c < nc; ++c) {
      const int64_t e = d * inner + c;
      acc[c] += kind == Kind::Softmax ? dy[e] * y[e] : dy[e];
    }
  }
  for (int64_t d = 0; d < dim; ++d) {
    for (int64_t c = 0; c < nc; ++c) {
      const int64_t e = d * inner + c;
      dx[e] = kind == Kind::Softmax ? y[e] * (dy[e] - acc[c]) : dy[e] - std::exp(y[e]) * acc[c];
    }
  }
}

template <typename T, Kind kind>
void backward_row(T* dx, const T* dy, const T* y, int64_t dim, bool vec) {
  T acc = T(0);
  if (kind == Kind::Softmax) {
    for (int64_t d = 0; d < dim; ++d) acc += dy[d] * y[d];
    for (int64_t d = 0; d < dim; ++d) dx[d] = y[d] * (dy[d] - acc);
    return;
  }
  for (int64_t d = 0; d < dim; ++d) acc += dy[d];
#if LF_X86_SIMD
  if constexpr (std::is_same_v<T, float>) {
    if (vec) {
      exp_f32_avx512(dx, y, dim);  // dx and y distinct (ops.h: no aliasing)
      for (int64_t d = 0; d < dim; ++d) dx[d] = dy[d] - dx[d] * acc;
      return;
    }
  }
#endif
  (void)vec;
  for (int64_t d = 0; d < dim; ++d) dx[d] = dy[d] - std::exp(y[d]) * acc;
}

// Work items: one row when inner == 1, else one (outer, column block) pair.
template <typename T, Kind kind>
void forward(T* y, const T* x, const SoftmaxShape& s) {
  const int64_t outer = s.outer, dim = s.dim, inner = s.inner;
  if (outer == 0 || dim == 0 || inner == 0) return;
  const int64_t blocks = (inner + kCols - 1) / kCols, items = outer * blocks;
  const int nt = threads_for(outer * dim * inner * 8, items);
  const bool vec = simd_path() == SimdPath::Avx512;
#pragma omp parallel for num_threads(nt) schedule(static)
  for (int64_t it = 0; it < items; ++it) {
    const int64_t o = it / blocks, c0 = (it % blocks) * kCols;
    const int64_t off = o * dim * inner + c0;
    if (inner == 1) {
      forward_row<T, kind>(y + off, x + off, dim, vec);
    } else {
      forward_cols<T, kind>(y + off, x + off, dim, inner, std::min(kCols, inner - c0));
    }
  }
}

template <typename T, Kind kind>
void backward(T* dx, const T* dy, const T* y, const SoftmaxShape& s) {
  const int64_t outer = s.outer, dim = s.dim, inner = s.inner;
  if (outer == 0 || dim == 0 || inner == 0) return;
  const int64_t blocks = (inner + kCols - 1) / kCols, items = outer * blocks;
  const int nt = threads_for(outer * dim * inner * 4, items);
  const bool vec = simd_path() == SimdPath::Avx512;
#pragma omp parallel for num_threads(nt) schedule(static)
  for (int64_t it = 0; it < items; ++it) {
    const int64_t o = it / blocks, c0 = (it % blocks) * kCols;
    const int64_t off = o * dim * inner + c0;
    if (inner == 1) {
      backward_row<T, kind>(dx + off, dy + off, y + off, dim, vec);
    } else {
      backward_cols<T, kind>(dx + off, dy + off, y + off, dim, inner, std::min(kCols, inner - c0));
    }
  }
}

}  // namespace

template <typename T>
void softmax_forward_cpu(T* y, const T* x, const SoftmaxShape& s) {
  forward<T, Kind::Softmax>(y, x, s);
}
template <typename T>
void softmax_backward_cpu(T* dx, const T* dy, const T* y, const SoftmaxShape& s) {
  backward<T, Kind::Softmax>(dx, dy, y, s);
}
template <typename T>
void log_softmax_forward_cpu(T* y, const T* x, const SoftmaxShape& s) {
  forward<T, Kind::LogSoftmax>(y, x, s);
}
template <typename T>
void log_softmax_backward_cpu(T* dx, const T* dy, const T* y, const SoftmaxShape& s) {
  backward<T, Kind::LogSoftmax>(dx, dy, y, s);
}

#define LF_INSTANTIATE(T)                                                                  \
  template void softmax_forward_cpu<T>(T*, const T*, const SoftmaxShape&);                 \
  template void softmax_backward_cpu<T>(T*, const T*, const T*, const SoftmaxShape&);      \
  template void log_softmax_forward_cpu<T>(T*, const T*, const SoftmaxShape&);             \
  template void log_softmax_backward_cpu<T>(T*, const T*, const T*, const SoftmaxShape&);
LF_INSTANTIATE(float)
LF_INSTANTIATE(double)
#undef LF_INSTANTIATE

}  // namespace lf
