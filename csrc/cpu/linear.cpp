// Dense layer: x (M, IN), w (OUT, IN), b (OUT,), y (M, OUT).
//   forward   y  = x w^T + b       GEMM M x OUT x IN  (B = w^T, a strided view)
//   backward  dx = dy w            GEMM M x IN x OUT
//             dw = dy^T x          GEMM OUT x IN x M  (A = dy^T, a strided view)
//             db = column sums of dy
// Every product goes through gemm_parallel, which splits one GEMM over the team only when
// it is big enough to pay for waking it. The bias is written first and the GEMM
// accumulates onto it, saving a pass over y.
#include <algorithm>

#include "cpu/gemm.h"
#include "cpu/simd.h"
#include "ops.h"

namespace lf {

template <typename T>
void linear_forward_cpu(T* y, const T* x, const T* w, const T* b, const LinearShape& s) {
  const int64_t M = s.m, IN = s.in, OUT = s.out;
  if (M == 0 || OUT == 0) return;
  if (b) {
    for (int64_t i = 0; i < M; ++i) std::copy(b, b + OUT, y + i * OUT);
  }
  const GemmUkernel<T>& uk = gemm_ukernel<T>();
  gemm_parallel(uk, M, OUT, IN, GemmOperand<T>::strided(x, IN, 1),
                GemmOperand<T>::strided(w, 1, IN), y, OUT, b != nullptr);
}

template <typename T>
void linear_backward_cpu(T* dx, T* dw, T* db, const T* dy, const T* x, const T* w,
                         const LinearShape& s) {
  const int64_t M = s.m, IN = s.in, OUT = s.out;
  const GemmUkernel<T>& uk = gemm_ukernel<T>();
  if (dx && M > 0 && IN > 0) {
    gemm_parallel(uk, M, IN, OUT, GemmOperand<T>::strided(dy, OUT, 1),
                  GemmOperand<T>::strided(w, IN, 1), dx, IN, false);
  }
  if (dw && OUT > 0 && IN > 0) {
    gemm_parallel(uk, OUT, IN, M, GemmOperand<T>::strided(dy, 1, OUT),
                  GemmOperand<T>::strided(x, IN, 1), dw, IN, false);
  }
  if (db && OUT > 0) {
    // Rows added in order m = 0..M-1 into a vector of OUT partial sums: vectorises along
    // OUT and gives the same bits for any thread count.
    std::fill(db, db + OUT, T(0));
    for (int64_t i = 0; i < M; ++i) {
      const T* row = dy + i * OUT;
      for (int64_t o = 0; o < OUT; ++o) db[o] += row[o];
    }
  }
}

#define LF_INSTANTIATE(T)                                                                  \
  template void linear_forward_cpu<T>(T*, const T*, const T*, const T*, const LinearShape&); \
  template void linear_backward_cpu<T>(T*, T*, T*, const T*, const T*, const T*,           \
                                       const LinearShape&);
LF_INSTANTIATE(float)
LF_INSTANTIATE(double)
#undef LF_INSTANTIATE

}  // namespace lf
