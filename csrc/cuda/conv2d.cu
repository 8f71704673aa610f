// 2-D convolution (cross-correlation), NCHW, as implicit GEMMs on the tiled GEMM of gemm.cuh:
//   x (N, C, H, W), w (K, C, R, S), b (K,), y / dy (N, K, OH, OW); P = OH*OW, CRS = C*R*S.
//   forward  y  (K x N*P)   = W (K x CRS)   * im2col(x) (CRS x N*P)             [+ b]
//   dx       dx (C x N*HW)  = W' (C x K*RS) * gather(dy) (K*RS x N*HW)
//            a GATHER: dx[n,c,h,w] sums w[k,c,r,s] * dy[n,k,p,q] over the (k, r, s) whose
//            tap lands on (h, w), i.e. p = (h + ph - r*dh) / sh exactly divisible and in range
//            (other terms load 0) -- each dx element written once, no scatter, no atomics;
//   dw       dw (K x CRS)   = dy (K x N*P)  * im2col(x)^T (N*P x CRS)  chunked / split-K
//   db       db[k] = sum over n, p of dy[n,k,p]: one block per k, fixed tree (block_reduce).
// The loaders below compute the operands on the fly (no im2col buffer; the only allocation is
// the split-K workspace of dw, gemm.cuh). Their per-k index decompositions run once per k-step
// per block (KInfo), their per-row / per-column ones once per tile (Ctx).
// Every reduction has a fixed order given the shapes: deterministic, bitwise.
#include "common.cuh"
#include "gemm.cuh"
#include "ops.h"

namespace lf {
namespace {

__device__ __forceinline__ bool in_range(int64_t v, int64_t n) {
  return static_cast<uint64_t>(v) < static_cast<uint64_t>(n);
}

// Forward B operand: (k = (c, r, s), j = (n, oh, ow)) -> x[n, c, oh*sh - ph + r*dh, ow*sw - pw + s*dw].
template <typename T>
struct Im2col {
  static constexpr bool kKFast = false;  // adjacent j -> adjacent ow
  const T* x;
  Conv2dShape s;
  struct Ctx {
    int64_t base, ih0, iw0;
    bool valid;
  };
  struct KInfo {
    int64_t coff, rh, sdw;
    bool valid;
  };
  __device__ __forceinline__ Ctx ctx(int64_t j, bool v) const {
    if (!v) return Ctx{0, 0, 0, false};
    const int64_t P = s.ohw(), n = j / P, p = j - n * P, oh = p / s.ow, ow = p - oh * s.ow;
    return Ctx{n * s.c * s.hw(), oh * s.sh - s.ph, ow * s.sw - s.pw, true};
  }
  __device__ __forceinline__ KInfo kinfo(int64_t k, bool v) const {
    if (!v) return KInfo{0, 0, 0, false};
    const int64_t RS = s.r * s.s, c = k / RS, rs = k - c * RS, r = rs / s.s, q = rs - r * s.s;
    return KInfo{c * s.hw(), r * s.dh, q * s.dw, true};
  }
  __device__ __forceinline__ T load(const Ctx& c, const KInfo& k) const {
    const int64_t ih = c.ih0 + k.rh, iw = c.iw0 + k.sdw;
    return (c.valid && k.valid && in_range(ih, s.h) && in_range(iw, s.w))
               ? x[c.base + k.coff + ih * s.w + iw]
               : T(0);
  }
};

// y[n, k, p] = v + b[k] for (i = k, j = (n, p)).
template <typename T>
struct ConvOutStore {
  T* y;
  const T* bias;
  int64_t k, p;
  __device__ __forceinline__ void store(int64_t i, int64_t j, int64_t, T v) const {
    const int64_t n = j / p, q = j - n * p;
    if (bias != nullptr) v += bias[i];
    y[(n * k + i) * p + q] = v;
  }
};

// dx A operand: (i = c, k = (ko, r, s)) -> w[ko, c, r, s].
template <typename T>
struct WeightT {
  static constexpr bool kKFast = true;  // adjacent k -> adjacent (r, s)
  const T* w;
  int64_t chans, rs;
  struct Ctx {
    int64_t off;
    bool valid;
  };
  struct KInfo {
    int64_t off;
    bool valid;
  };
  __device__ __forceinline__ Ctx ctx(int64_t i, bool v) const { return Ctx{v ? i * rs : 0, v}; }
  __device__ __forceinline__ KInfo kinfo(int64_t k, bool v) const {
    if (!v) return KInfo{0, false};
    const int64_t ko = k / rs;
    return KInfo{ko * chans * rs + (k - ko * rs), true};
  }
  __device__ __forceinline__ T load(const Ctx& c, const KInfo& k) const {
    return (c.valid && k.valid) ? w[c.off + k.off] : T(0);
  }
};

// dx B operand: (k = (ko, r, s), j = (n, h, w)) -> dy[n, ko, p, q] with p*sh = h + ph - r*dh,
// q*sw = w + pw - s*dw (exactly, in range), else 0.
template <typename T>
struct DyGather {
  static constexpr bool kKFast = false;  // adjacent j -> adjacent w
  const T* dy;
  Conv2dShape s;
  struct Ctx {
    int64_t base, th, tw;
    bool valid;
  };
  struct KInfo {
    int64_t koff, rh, sdw;
    bool valid;
  };
  __device__ __forceinline__ Ctx ctx(int64_t j, bool v) const {
    if (!v) return Ctx{0, 0, 0, false};
    const int64_t HW = s.hw(), n = j / HW, hw = j - n * HW, h = hw / s.w, w = hw - h * s.w;
    return Ctx{n * s.k * s.ohw(), h + s.ph, w + s.pw, true};
  }
  __device__ __forceinline__ KInfo kinfo(int64_t k, bool v) const {
    if (!v) return KInfo{0, 0, 0, false};
    const int64_t RS = s.r * s.s, ko = k / RS, rs = k - ko * RS, r = rs / s.s, q = rs - r * s.s;
    return KInfo{ko * s.ohw(), r * s.dh, q * s.dw, true};
  }
  __device__ __forceinline__ T load(const Ctx& c, const KInfo& k) const {
    if (!(c.valid && k.valid)) return T(0);
    const int64_t a = c.th - k.rh, b = c.tw - k.sdw;
    if (a < 0 || b < 0) return T(0);
    const int64_t p = s.sh == 1 ? a : a / s.sh, q = s.sw == 1 ? b : b / s.sw;
    if (p * s.sh != a || q * s.sw != b || p >= s.oh || q >= s.ow) return T(0);
    return dy[c.base + k.koff + p * s.ow + q];
  }
};

// dx[n, c, hw] = v for (i = c, j = (n, hw)).
template <typename T>
struct DxStore {
  T* dx;
  int64_t c, hw;
  __device__ __forceinline__ void store(int64_t i, int64_t j, int64_t, T v) const {
    const int64_t n = j / hw, e = j - n * hw;
    dx[(n * c + i) * hw + e] = v;
  }
};

// dw A operand: (i = ko, k = (n, p)) -> dy[n, ko, p].
template <typename T>
struct DyRows {
  static constexpr bool kKFast = true;  // adjacent k -> adjacent p
  const T* dy;
  int64_t kout, p;
  struct Ctx {
    int64_t off;
    bool valid;
  };
  struct KInfo {
    int64_t off;
    bool valid;
  };
  __device__ __forceinline__ Ctx ctx(int64_t i, bool v) const { return Ctx{v ? i * p : 0, v}; }
  __device__ __forceinline__ KInfo kinfo(int64_t k, bool v) const {
    if (!v) return KInfo{0, false};
    const int64_t n = k / p;
    return KInfo{n * kout * p + (k - n * p), true};
  }
  __device__ __forceinline__ T load(const Ctx& c, const KInfo& k) const {
    return (c.valid && k.valid) ? dy[c.off + k.off] : T(0);
  }
};

// dw B operand: (k = (n, oh, ow), j = (c, r, s)) -> x[n, c, oh*sh - ph + r*dh, ow*sw - pw + s*dw].
template <typename T>
struct Im2colT {
  static constexpr bool kKFast = true;  // adjacent k -> adjacent ow
  const T* x;
  Conv2dShape s;
  struct Ctx {
    int64_t coff, roff, soff;
    bool valid;
  };
  struct KInfo {
    int64_t base, ih, iw;
    bool valid;
  };
  __device__ __forceinline__ Ctx ctx(int64_t j, bool v) const {
    if (!v) return Ctx{0, 0, 0, false};
    const int64_t RS = s.r * s.s, c = j / RS, rs = j - c * RS, r = rs / s.s, q = rs - r * s.s;
    return Ctx{c * s.hw(), r * s.dh - s.ph, q * s.dw - s.pw, true};
  }
  __device__ __forceinline__ KInfo kinfo(int64_t k, bool v) const {
    if (!v) return KInfo{0, 0, 0, false};
    const int64_t P = s.ohw(), n = k / P, p = k - n * P, oh = p / s.ow, ow = p - oh * s.ow;
    return KInfo{n * s.c * s.hw(), oh * s.sh, ow * s.sw, true};
  }
  __device__ __forceinline__ T load(const Ctx& c, const KInfo& k) const {
    const int64_t ih = k.ih + c.roff, iw = k.iw + c.soff;
    return (c.valid && k.valid && in_range(ih, s.h) && in_range(iw, s.w))
               ? x[k.base + c.coff + ih * s.w + iw]
               : T(0);
  }
};

constexpr int kBiasThreads = 256;

// ---- kernels

// db[k] = sum over (n, p) of dy[n, k, p]; one block per k (grid-stride), thread t sums the
// flat positions t, t + 256, ... in order, then a fixed block tree.
template <typename T>
__global__ void __launch_bounds__(kBiasThreads)
    conv2d_bias_backward_kernel1(T* __restrict__ db, const T* __restrict__ dy, int64_t n,
                                 int64_t k, int64_t p) {
  __shared__ T scratch[33];
  const int64_t np = n * p;
  for (int64_t ko = blockIdx.x; ko < k; ko += gridDim.x) {
    T acc = T(0);
    for (int64_t t = threadIdx.x; t < np; t += kBiasThreads) {
      const int64_t b = t / p, e = t - b * p;
      acc += dy[(b * k + ko) * p + e];
    }
    acc = block_reduce(acc, SumOp{}, T(0), scratch);
    if (threadIdx.x == 0) db[ko] = acc;
  }
}

}  // namespace

// ---- launchers

template <typename T>
void conv2d_forward_cuda(T* y, const T* x, const T* w, const T* b, const Conv2dShape& s,
                         cudaStream_t stream) {
  const int64_t P = s.ohw(), cols = s.n * P;
  if (s.k <= 0 || cols <= 0 || y == nullptr) return;
  // A(i = k, kk) = w[k*CRS + kk]; with C == 0 the reduction is empty and y = b (or 0).
  gemm::gemm<T>(gemm::Strided<T, true>{w, s.crs(), 1}, Im2col<T>{x, s},
                ConvOutStore<T>{y, b, s.k, P}, s.k, cols, s.crs(), stream);
}

template <typename T>
void conv2d_backward_cuda(T* dx, T* dw, T* db, const T* dy, const T* x, const T* w,
                          const Conv2dShape& s, cudaStream_t stream) {
  const int64_t P = s.ohw(), RS = s.r * s.s;
  if (dx != nullptr && s.c > 0 && s.n * s.hw() > 0) {
    gemm::gemm<T>(WeightT<T>{w, s.c, RS}, DyGather<T>{dy, s}, DxStore<T>{dx, s.c, s.hw()}, s.c,
                  s.n * s.hw(), s.k * RS, stream);
  }
  if (dw != nullptr && s.k > 0 && s.crs() > 0) {
    // An empty batch (or output) is an empty reduction: the GEMM writes zeros.
    gemm::gemm_rowmajor_long_k<T>(dw, DyRows<T>{dy, s.k, P}, Im2colT<T>{x, s}, s.k, s.crs(),
                                  s.n * P, stream);
  }
  if (db != nullptr && s.k > 0) {
    if (s.n * P <= 0) {
      CUDA_CHECK(cudaMemsetAsync(db, 0, static_cast<size_t>(s.k) * sizeof(T), stream));
    } else {
      conv2d_bias_backward_kernel1<T>
          <<<grid_blocks(s.k, 1), kBiasThreads, 0, stream>>>(db, dy, s.n, s.k, P);
      CUDA_CHECK_LAUNCH();
    }
  }
}

#define LF_INSTANTIATE(T)                                                                    \
  template void conv2d_forward_cuda<T>(T*, const T*, const T*, const T*, const Conv2dShape&, \
                                       cudaStream_t);                                        \
  template void conv2d_backward_cuda<T>(T*, T*, T*, const T*, const T*, const T*,            \
                                        const Conv2dShape&, cudaStream_t);
LF_INSTANTIATE(float)
LF_INSTANTIATE(double)
#undef LF_INSTANTIATE

}  // namespace lf
