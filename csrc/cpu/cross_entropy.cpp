// Softmax cross entropy on logits (n, classes) with int64 labels (n,):
//   forward   mean over i of logsumexp(logits[i, :]) - logits[i, labels[i]]
//   backward  dlogits[i, j] = scale * (softmax(logits[i, :])[j] - [j == labels[i]])
// logsumexp subtracts the row max first, so huge logits stay finite. A label outside
// [0, classes) is counted and its row is never indexed by it: its loss / dlogits row is NaN,
// and the caller raises on a count > 0 (the range check costs no pass of its own, as in
// max_pool2d_backward). OpenMP over rows. float32 rows on the AVX-512 path run vmath.h's
// vectorised forms (a few ulp); the scalar path uses std::exp: 320 of those calls were most
// of a (32, 10) forward.
#include <algorithm>
#include <cmath>
#include <limits>
#include <type_traits>
#include <vector>

#include "cpu/simd.h"
#include "cpu/vmath.h"
#include "ops.h"

namespace lf {
namespace {

template <typename T>
T row_max(const T* row, int64_t classes) {
  T m = row[0];
  for (int64_t j = 1; j < classes; ++j) m = std::max(m, row[j]);
  return m;
}

// vec: the AVX-512 path is in force (only float32 rows use it).
template <typename T>
T logsumexp(const T* row, int64_t classes, bool vec) {
#if LF_X86_SIMD
  if constexpr (std::is_same_v<T, float>) {
    if (vec) return logsumexp_f32_avx512(row, classes);
  }
#endif
  (void)vec;
  const T m = row_max(row, classes);
  T sum = T(0);
  for (int64_t j = 0; j < classes; ++j) sum += std::exp(row[j] - m);
  return m + std::log(sum);
}

// out = scale * softmax(row). One exp per logit, kept in out, then scaled by scale / sum:
// the form exp(x - logsumexp) took two exps (and a log) per logit.
template <typename T>
void softmax_scaled(T* out, const T* row, int64_t classes, T scale, bool vec) {
#if LF_X86_SIMD
  if constexpr (std::is_same_v<T, float>) {
    if (vec) return softmax_scaled_f32_avx512(out, row, classes, scale);
  }
#endif
  (void)vec;
  const T m = row_max(row, classes);
  T sum = T(0);
  for (int64_t j = 0; j < classes; ++j) sum += (out[j] = std::exp(row[j] - m));
  const T r = scale / sum;
  for (int64_t j = 0; j < classes; ++j) out[j] *= r;
}

}  // namespace

template <typename T>
int64_t cross_entropy_mean_cpu(T* mean, const T* logits, const int64_t* labels, int64_t n,
                               int64_t classes) {
  // Each row's loss computed in T, summed in float64: in row order
  // within blocks of kBlock rows, then the block sums in order, so the result does not
  // depend on the thread count.
  constexpr int64_t kBlock = 1024;
  const int64_t blocks = (n + kBlock - 1) / kBlock;
  double one[1];
  std::vector<double> many(blocks > 1 ? blocks : 0);
  double* part = blocks > 1 ? many.data() : one;
  int64_t bad = 0;
  const bool vec = simd_path() == SimdPath::Avx512;
  const int nt = threads_for(n * classes * 8, blocks);
#pragma omp parallel for num_threads(nt) schedule(static) reduction(+ : bad)
  for (int64_t b = 0; b < blocks; ++b) {
    double s = 0.0;
    for (int64_t i = b * kBlock, end = std::min(n, i + kBlock); i < end; ++i) {
      const int64_t l = labels[i];
      if (l < 0 || l >= classes) {
        ++bad;
        s = std::numeric_limits<double>::quiet_NaN();
        continue;
      }
      const T* row = logits + i * classes;
      s += static_cast<double>(logsumexp(row, classes, vec) - row[l]);
    }
    part[b] = s;
  }
  double s = 0.0;
  for (int64_t b = 0; b < blocks; ++b) s += part[b];
  *mean = static_cast<T>(n ? s / static_cast<double>(n)
                            : std::numeric_limits<double>::quiet_NaN());
  return bad;
}

template <typename T>
int64_t cross_entropy_backward_cpu(T* dlogits, const T* logits, const int64_t* labels, T scale,
                                   int64_t n, int64_t classes) {
  if (n == 0) return 0;
  int64_t bad = 0;
  const bool vec = simd_path() == SimdPath::Avx512;
  const int nt = threads_for(n * classes * 8, n);
#pragma omp parallel for num_threads(nt) schedule(static) reduction(+ : bad)
  for (int64_t i = 0; i < n; ++i) {
    const T* row = logits + i * classes;
    T* out = dlogits + i * classes;
    const int64_t l = labels[i];
    if (l < 0 || l >= classes) {
      ++bad;
      std::fill(out, out + classes, std::numeric_limits<T>::quiet_NaN());
      continue;
    }
    softmax_scaled(out, row, classes, scale, vec);
    out[l] -= scale;
  }
  return bad;
}

#define LF_INSTANTIATE(T)                                                                    \
  template int64_t cross_entropy_mean_cpu<T>(T*, const T*, const int64_t*, int64_t, int64_t); \
  template int64_t cross_entropy_backward_cpu<T>(T*, const T*, const int64_t*, T, int64_t,    \
                                                 int64_t);
LF_INSTANTIATE(float)
LF_INSTANTIATE(double)
#undef LF_INSTANTIATE

}  // namespace lf
