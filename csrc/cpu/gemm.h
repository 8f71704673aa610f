// Blocked GEMM used by the conv and dense kernels:
//   C (M x N, row stride ldc) = [C +] A (M x K) * B (K x N)
//
// Operands are either strided views (element (i, k) of A at p[i*rs + k*cs]; any strides,
// so transposes cost nothing to express) that the driver packs block by block, or
// operands packed ahead of time in "full-K panel" layout, so that a weight shared by every
// image of a batch is packed once per call and an im2col can write B straight into the
// layout the microkernel reads:
//   packed A: ceil(M/MR) panels, panel i = K x MR k-major:  Ap[i*K*MR + k*MR + r] = A(i*MR+r, k)
//   packed B: ceil(N/NR) panels, panel j = K x NR k-major:  Bp[j*K*NR + k*NR + c] = B(k, j*NR+c)
// Rows/columns past M/N are zero. MR/NR come from the microkernel in force
// (gemm_ukernel<T>()), which a launcher fetches once and passes everywhere.
//
// Blocking (BLIS order): jc over NC columns, pc over KC of K, ic over MC rows, then NR x MR
// register tiles; a KC x NR panel of B stays in L1 while the MC x KC block of A streams
// from L2. gemm() is single-threaded (callers parallelise over images); gemm_parallel()
// splits one product over the OpenMP team for the dense layers.
#pragma once
#include <cstddef>
#include <cstdint>
#include <new>
#include <utility>

#include "cpu/gemm_ukernels.h"
#include "cpu/scratch.h"

namespace lf {

// Grow-only 64-byte aligned scratch; allocated once per call (per thread), never in loops.
// The memory comes from the per-thread scratch cache (scratch.h), so repeated calls reuse
// blocks that are already paged in.
template <typename T>
class AlignedBuffer {
 public:
  AlignedBuffer() = default;
  AlignedBuffer(const AlignedBuffer&) = delete;
  AlignedBuffer& operator=(const AlignedBuffer&) = delete;
  ~AlignedBuffer() { release(); }
  T* reserve(int64_t n) {
    const size_t bytes = static_cast<size_t>(n) * sizeof(T);
    if (bytes > cap_) {
      release();
      p_ = static_cast<T*>(scratch_acquire(bytes, &cap_));
    }
    return p_;
  }
  T* data() const { return p_; }

 private:
  void release() {
    scratch_release(p_, cap_);
    p_ = nullptr;
    cap_ = 0;
  }
  T* p_ = nullptr;
  size_t cap_ = 0;
};

template <typename T>
struct GemmOperand {
  const T* p = nullptr;
  int64_t rs = 0, cs = 0;  // strided view (ignored when packed)
  bool packed = false;     // full-K panel layout described above
  static GemmOperand strided(const T* p, int64_t rs, int64_t cs) { return {p, rs, cs, false}; }
  static GemmOperand prepacked(const T* p) { return {p, 0, 0, true}; }
};

template <typename T>
struct GemmWorkspace {
  AlignedBuffer<T> a, b;
};

template <typename T>
const GemmUkernel<T>& gemm_ukernel();  // for simd_path() now

inline int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

// Elements of a full-K panel buffer for `n` rows (A, width MR) or columns (B, width NR).
inline int64_t packed_size(int64_t n, int64_t k, int width) { return round_up(n, width) * k; }

// Pack `n` rows of width-`width` panels over `k`: dst[p*k*w + kk*w + r] = src[(p*w+r)*os + kk*ks].
// For A: os = A.rs, ks = A.cs. For B: os = B.cs, ks = B.rs.
template <typename T>
void pack_panels(T* dst, const T* src, int64_t os, int64_t ks, int64_t n, int64_t k, int width);

template <typename T>
void gemm(const GemmUkernel<T>& uk, int64_t M, int64_t N, int64_t K, const GemmOperand<T>& A,
          const GemmOperand<T>& B, T* C, int64_t ldc, bool accumulate, GemmWorkspace<T>& ws);

template <typename T>
void gemm_parallel(const GemmUkernel<T>& uk, int64_t M, int64_t N, int64_t K,
                   const GemmOperand<T>& A, const GemmOperand<T>& B, T* C, int64_t ldc,
                   bool accumulate);

}  // namespace lf
