// Softmax cross entropy on logits (n, classes) with int64 labels (n,):
//   forward   loss[i] = logsumexp(logits[i, :]) - logits[i, labels[i]]   (mean taken by caller)
//   backward  dlogits[i, j] = scale * (softmax(logits[i, :])[j] - [j == labels[i]])
// logsumexp subtracts the row max first, so huge logits stay finite. Labels are range-
// checked by the caller (the bindings check them too). OpenMP over rows.
#include <algorithm>
#include <cmath>

#include "cpu/simd.h"
#include "ops.h"

namespace lf {
namespace {

template <typename T>
T row_max(const T* row, int64_t classes) {
  T m = row[0];
  for (int64_t j = 1; j < classes; ++j) m = std::max(m, row[j]);
  return m;
}

template <typename T>
T logsumexp(const T* row, int64_t classes) {
  const T m = row_max(row, classes);
  T sum = T(0);
  for (int64_t j = 0; j < classes; ++j) sum += std::exp(row[j] - m);
  return m + std::log(sum);
}

}  // namespace

template <typename T>
void cross_entropy_forward_cpu(T* loss, const T* logits, const int64_t* labels, int64_t n,
                               int64_t classes) {
  if (n == 0 || classes == 0) return;
  const int nt = threads_for(n * classes * 8, n);
#pragma omp parallel for num_threads(nt) schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    const T* row = logits + i * classes;
    loss[i] = logsumexp(row, classes) - row[labels[i]];
  }
}

template <typename T>
void cross_entropy_backward_cpu(T* dlogits, const T* logits, const int64_t* labels, T scale,
                                int64_t n, int64_t classes) {
  if (n == 0 || classes == 0) return;
  const int nt = threads_for(n * classes * 8, n);
#pragma omp parallel for num_threads(nt) schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    const T* row = logits + i * classes;
    T* out = dlogits + i * classes;
    // One exp per logit, kept in out, then scaled by scale / sum: the form exp(x - logsumexp)
    // took two exps (and a log) per logit, 20.5 us of a (256, 10) call against PyTorch's 20.
    const T m = row_max(row, classes);
    T sum = T(0);
    for (int64_t j = 0; j < classes; ++j) sum += (out[j] = std::exp(row[j] - m));
    const T r = scale / sum;
    for (int64_t j = 0; j < classes; ++j) out[j] *= r;
    out[labels[i]] -= scale;
  }
}

#define LF_INSTANTIATE(T)                                                                    \
  template void cross_entropy_forward_cpu<T>(T*, const T*, const int64_t*, int64_t, int64_t); \
  template void cross_entropy_backward_cpu<T>(T*, const T*, const int64_t*, T, int64_t,      \
                                              int64_t);
LF_INSTANTIATE(float)
LF_INSTANTIATE(double)
#undef LF_INSTANTIATE

}  // namespace lf
