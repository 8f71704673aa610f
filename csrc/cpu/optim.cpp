// In-place optimiser updates on flat arrays of n elements (one parameter tensor per call).
// Adam (Keras's form): m = b1*m + (1-b1)*g; v = b2*v + (1-b2)*g^2; p -= (m / (sqrt(v) + eps)) * alpha,
// alpha = lr * sqrt(1 - b2^t) / (1 - b1^t) computed by the caller. The operations, their
// order and the float constants (1 - b computed in double, then rounded to T) are those of
// the NumPy form in optimizers.py, and nothing is contracted into FMAs on the baseline ISA,
// so both give bit-identical weights; one pass reads p, m, v, g once instead of ten ufuncs.
#include <cmath>

#include "cpu/simd.h"
#include "ops.h"

namespace lf {

template <typename T>
void adam_update_cpu(T* p, T* m, T* v, const T* g, int64_t n, double alpha, double beta1,
                     double beta2, double eps) {
  const T b1 = T(beta1), c1 = T(1.0 - beta1), b2 = T(beta2), c2 = T(1.0 - beta2);
  const T a = T(alpha), e = T(eps);
  const int nt = threads_for(n * 8, n);
#pragma omp parallel for simd num_threads(nt) schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    const T gi = g[i];
    const T mi = m[i] * b1 + gi * c1;
    const T vi = v[i] * b2 + (gi * gi) * c2;
    m[i] = mi;
    v[i] = vi;
    p[i] -= (mi / (std::sqrt(vi) + e)) * a;
  }
}

template void adam_update_cpu<float>(float*, float*, float*, const float*, int64_t, double,
                                     double, double, double);
template void adam_update_cpu<double>(double*, double*, double*, const double*, int64_t, double,
                                      double, double, double);

}  // namespace lf
