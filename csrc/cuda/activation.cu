// Elementwise activations on flat arrays of n elements (any n up to 2^62; int64 grid-stride
// loops): forward y = f(x); backward from x (relu) or from the forward output y (sigmoid, tanh).
// Numerics as the CPU kernels: relu is `x < 0 ? 0 : x` (keeps NaN); sigmoid uses exp(-|x|),
// which never overflows; backward formulas dy*y*(1-y) and dy*(1-y^2).
// Launch: 256 threads, one element per thread per pass, coalesced; blocks capped (common.cuh).
#include "common.cuh"
#include "ops.h"

namespace lf {
namespace {

constexpr int kThreads = 256;

enum class Act { ReluF, SigmoidF, TanhF, ReluB, SigmoidB, TanhB };

// ---- kernels

template <typename T, Act act>
__global__ void __launch_bounds__(kThreads)
    activation_forward_kernel1(T* __restrict__ y, const T* __restrict__ x, int64_t n) {
  for (int64_t i = global_thread(); i < n; i += grid_threads()) {
    const T v = x[i];
    T r;
    if constexpr (act == Act::ReluF) {
      r = v < T(0) ? T(0) : v;
    } else if constexpr (act == Act::SigmoidF) {
      const T e = dev_exp(-dev_fabs(v));
      const T inv = T(1) / (T(1) + e);
      r = v >= T(0) ? inv : e * inv;
    } else {
      r = dev_tanh(v);
    }
    y[i] = r;
  }
}

template <typename T, Act act>
__global__ void __launch_bounds__(kThreads)
    activation_backward_kernel1(T* __restrict__ dx, const T* __restrict__ dy,
                                const T* __restrict__ z, int64_t n) {
  for (int64_t i = global_thread(); i < n; i += grid_threads()) {
    const T g = dy[i], v = z[i];
    T r;
    if constexpr (act == Act::ReluB) {
      r = v > T(0) ? g : T(0);
    } else if constexpr (act == Act::SigmoidB) {
      r = g * v * (T(1) - v);
    } else {
      r = g * (T(1) - v * v);
    }
    dx[i] = r;
  }
}

// ---- launchers

template <typename T, Act act>
void forward(T* y, const T* x, int64_t n, cudaStream_t stream) {
  if (n <= 0) return;
  activation_forward_kernel1<T, act><<<grid_blocks(n, kThreads), kThreads, 0, stream>>>(y, x, n);
  CUDA_CHECK_LAUNCH();
}

template <typename T, Act act>
void backward(T* dx, const T* dy, const T* z, int64_t n, cudaStream_t stream) {
  if (n <= 0 || dx == nullptr) return;
  activation_backward_kernel1<T, act>
      <<<grid_blocks(n, kThreads), kThreads, 0, stream>>>(dx, dy, z, n);
  CUDA_CHECK_LAUNCH();
}

}  // namespace

template <typename T>
void relu_forward_cuda(T* y, const T* x, int64_t n, cudaStream_t stream) {
  forward<T, Act::ReluF>(y, x, n, stream);
}
template <typename T>
void relu_backward_cuda(T* dx, const T* dy, const T* x, int64_t n, cudaStream_t stream) {
  backward<T, Act::ReluB>(dx, dy, x, n, stream);
}
template <typename T>
void sigmoid_forward_cuda(T* y, const T* x, int64_t n, cudaStream_t stream) {
  forward<T, Act::SigmoidF>(y, x, n, stream);
}
template <typename T>
void sigmoid_backward_cuda(T* dx, const T* dy, const T* y, int64_t n, cudaStream_t stream) {
  backward<T, Act::SigmoidB>(dx, dy, y, n, stream);
}
template <typename T>
void tanh_forward_cuda(T* y, const T* x, int64_t n, cudaStream_t stream) {
  forward<T, Act::TanhF>(y, x, n, stream);
}
template <typename T>
void tanh_backward_cuda(T* dx, const T* dy, const T* y, int64_t n, cudaStream_t stream) {
  backward<T, Act::TanhB>(dx, dy, y, n, stream);
}

#define LF_INSTANTIATE(T)                                                                \
  template void relu_forward_cuda<T>(T*, const T*, int64_t, cudaStream_t);               \
  template void relu_backward_cuda<T>(T*, const T*, const T*, int64_t, cudaStream_t);    \
  template void sigmoid_forward_cuda<T>(T*, const T*, int64_t, cudaStream_t);            \
  template void sigmoid_backward_cuda<T>(T*, const T*, const T*, int64_t, cudaStream_t); \
  template void tanh_forward_cuda<T>(T*, const T*, int64_t, cudaStream_t);               \
  template void tanh_backward_cuda<T>(T*, const T*, const T*, int64_t, cudaStream_t);
LF_INSTANTIATE(float)
LF_INSTANTIATE(double)
#undef LF_INSTANTIATE

}  // namespace lf
