// The framework-free contract every backend implements: one declaration per launcher.
//
// Layout: NCHW, C-contiguous, no aliasing between outputs and inputs. conv weights
// (k, c, r, s), dense weights (out, in). T is float or double. Index math is int64_t.
// Argument order: outputs, then const inputs, then the shape struct (then the stream on CUDA).
//
// Gradient contract: every backward OVERWRITES its outputs (never accumulates); any
// gradient output may be nullptr, meaning "not wanted", and is then skipped entirely.
// Accumulation across calls is the caller's job (what torch autograd / jax.custom_vjp expect).
//
// Numerics:
// - max_pool2d: padding never wins (it is -inf); ties keep the first maximum in row-major
//   window order; a NaN wins over any number and a later NaN replaces an earlier one
//   (PyTorch's rule `val > max || isnan(val)`). indices are int64 offsets h*W + w into the
//   input plane, as in PyTorch.
// - avg_pool2d: divisor kh*kw when count_include_pad, else the number of in-bounds
//   elements of the window.
// - softmax / log_softmax: subtract the row max before exp, so +-1e4 logits are finite.
// - cross_entropy: loss[i] = logsumexp(logits[i,:]) - logits[i, labels[i]]; the CPU forward
//   returns their mean (summed in float64), the CUDA forward the rows (the caller takes the
//   mean). backward: dlogits[i,j] = scale * (softmax[i,j] - [j == labels[i]]). Labels are
//   int64; a label outside [0, classes) gives a NaN loss / a NaN dlogits row, and the CPU
//   launchers return how many there were (the caller raises).
//
// CUDA launchers (<op>_<dir>_cuda, csrc/cuda/*.cu): the same arguments on device pointers,
// then the caller's stream. They only enqueue work on that stream (never synchronize), throw
// on a launch error, and are deterministic: no floating-point atomics; every sum runs in a
// fixed order that depends only on the shapes. Differences from the CPU launchers, forced by
// the device side not being able to raise errors:
// - cross_entropy: a label outside [0, classes) is not counted (the NaN rows are the only
//   sign of it).
// - max_pool2d_backward gathers: each input element sums dy over the windows that contain it
//   and whose index points at it, so an index that points outside its own window (never
//   produced by the forward) is ignored rather than scattered.
// The current device must be the one holding the pointers; the bindings set it.
#pragma once
#include <cstdint>

#include "shapes.h"

namespace lf {

// ---- convolution ----
// relu: the forward applies relu (x < 0 ? 0 : x) to its output in the same pass.
// relu_y (may be nullptr): the forward output after that relu; dy is then the gradient with
// respect to it, and only positions with relu_y > 0 pass it on (the fused relu backward).
template <typename T>
void conv2d_forward_cpu(T* y, const T* x, const T* w, const T* b, const Conv2dShape& s,
                        bool relu);
template <typename T>
void conv2d_backward_cpu(T* dx, T* dw, T* db, const T* dy, const T* x, const T* w,
                         const Conv2dShape& s, const T* relu_y);

// conv -> relu -> 2x2 / stride-2 max pool, fused (conv2d_pool.cpp): y, indices
// (n, k, oh/2, ow/2) as max_pool2d gives on relu(conv2d(x)); indices index the conv output
// plane. The backward takes the pooled gradient dy, the forward's indices and pooled y.
template <typename T>
void conv2d_relu_pool_forward_cpu(T* y, int64_t* indices, const T* x, const T* w, const T* b,
                                  const Conv2dShape& s);
template <typename T>
void conv2d_relu_pool_backward_cpu(T* dx, T* dw, T* db, const T* dy, const int64_t* indices,
                                   const T* y, const T* x, const T* w, const Conv2dShape& s);

// ---- pooling ----
// indices may be nullptr (forward without return_indices).
template <typename T>
void max_pool2d_forward_cpu(T* y, int64_t* indices, const T* x, const Pool2dShape& s);
// dx is zeroed, then dx[plane, indices[o]] += dy[o] (overlapping windows accumulate).
// Indices outside [0, H*W) are skipped; returns how many there were (the caller's error).
template <typename T>
int64_t max_pool2d_backward_cpu(T* dx, const T* dy, const int64_t* indices, const Pool2dShape& s);
template <typename T>
void avg_pool2d_forward_cpu(T* y, const T* x, const Pool2dShape& s, bool count_include_pad);
template <typename T>
void avg_pool2d_backward_cpu(T* dx, const T* dy, const Pool2dShape& s, bool count_include_pad);

// ---- dense ----
// y = x w^T + b (b may be nullptr)
template <typename T>
void linear_forward_cpu(T* y, const T* x, const T* w, const T* b, const LinearShape& s);
// dx = dy w, dw = dy^T x, db = sum_m dy
template <typename T>
void linear_backward_cpu(T* dx, T* dw, T* db, const T* dy, const T* x, const T* w,
                         const LinearShape& s);

// ---- softmax family ----
template <typename T>
void softmax_forward_cpu(T* y, const T* x, const SoftmaxShape& s);
// dx = y * (dy - sum(dy * y))
template <typename T>
void softmax_backward_cpu(T* dx, const T* dy, const T* y, const SoftmaxShape& s);
template <typename T>
void log_softmax_forward_cpu(T* y, const T* x, const SoftmaxShape& s);
// dx = dy - exp(y) * sum(dy)
template <typename T>
void log_softmax_backward_cpu(T* dx, const T* dy, const T* y, const SoftmaxShape& s);
// logits (n, classes); mean: one value (NaN when n == 0). Both return the number of labels
// outside [0, classes).
template <typename T>
int64_t cross_entropy_mean_cpu(T* mean, const T* logits, const int64_t* labels, int64_t n,
                               int64_t classes);
template <typename T>
int64_t cross_entropy_backward_cpu(T* dlogits, const T* logits, const int64_t* labels, T scale,
                                   int64_t n, int64_t classes);

// ---- elementwise ----
template <typename T> void relu_forward_cpu(T* y, const T* x, int64_t n);
// dx = dy where x > 0, else 0
template <typename T> void relu_backward_cpu(T* dx, const T* dy, const T* x, int64_t n);
template <typename T> void sigmoid_forward_cpu(T* y, const T* x, int64_t n);
// dx = dy * y * (1 - y)
template <typename T> void sigmoid_backward_cpu(T* dx, const T* dy, const T* y, int64_t n);
template <typename T> void tanh_forward_cpu(T* y, const T* x, int64_t n);
// dx = dy * (1 - y^2)
template <typename T> void tanh_backward_cpu(T* dx, const T* dy, const T* y, int64_t n);

// ---- optimiser updates (in place: p, m, v are read and written) ----
// Adam, Keras's form: m = b1*m + (1-b1)*g; v = b2*v + (1-b2)*g^2; p -= m / (sqrt(v) + eps) * alpha.
template <typename T>
void adam_update_cpu(T* p, T* m, T* v, const T* g, int64_t n, double alpha, double beta1,
                     double beta2, double eps);

// ---- recurrent (Elman RNN over the whole sequence; shapes in shapes.h, RnnShape) ----
// forward: hs[:, s] = act(W_hh h_{s-1} + W_xh x_s + b), h_{-1} = h0 (zeros when nullptr);
// b may be nullptr. tanh/sigmoid/relu/linear as the elementwise ops (NaN propagates).
template <typename T>
void rnn_forward_cpu(T* hs, const T* x, const T* w_xh, const T* w_hh, const T* b, const T* h0,
                     const RnnShape& s, RnnActivation act);
// backward (BPTT): dhs (n, t, hidden) is the loss gradient w.r.t. every h_s; hs the forward
// output. da_s = (dhs_s + dh_{s+1}) * act'(h_s) (from the output), dh_s = da_s W_hh;
// dx = da W_xh, dw_xh = sum_s da_s^T x_s, dw_hh = sum_s da_s^T h_{s-1}, db = sum da,
// dh0 = da_0 W_hh. h0 may be nullptr (zeros); any gradient output may be nullptr.
template <typename T>
void rnn_backward_cpu(T* dx, T* dw_xh, T* dw_hh, T* db, T* dh0, const T* dhs, const T* x,
                      const T* w_xh, const T* w_hh, const T* h0, const T* hs, const RnnShape& s,
                      RnnActivation act);

}  // namespace lf

// ---- CUDA launchers (csrc/cuda) ----
// cudaStream_t without the CUDA headers (the same typedef as driver_types.h), so host-only
// code such as the bindings can declare the launchers.
struct CUstream_st;
typedef CUstream_st* cudaStream_t;

namespace lf {

template <typename T>
void conv2d_forward_cuda(T* y, const T* x, const T* w, const T* b, const Conv2dShape& s,
                         cudaStream_t stream);
template <typename T>
void conv2d_backward_cuda(T* dx, T* dw, T* db, const T* dy, const T* x, const T* w,
                          const Conv2dShape& s, cudaStream_t stream);

template <typename T>
void max_pool2d_forward_cuda(T* y, int64_t* indices, const T* x, const Pool2dShape& s,
                             cudaStream_t stream);
template <typename T>
void max_pool2d_backward_cuda(T* dx, const T* dy, const int64_t* indices, const Pool2dShape& s,
                              cudaStream_t stream);
template <typename T>
void avg_pool2d_forward_cuda(T* y, const T* x, const Pool2dShape& s, bool count_include_pad,
                             cudaStream_t stream);
template <typename T>
void avg_pool2d_backward_cuda(T* dx, const T* dy, const Pool2dShape& s, bool count_include_pad,
                              cudaStream_t stream);

template <typename T>
void linear_forward_cuda(T* y, const T* x, const T* w, const T* b, const LinearShape& s,
                         cudaStream_t stream);
template <typename T>
void linear_backward_cuda(T* dx, T* dw, T* db, const T* dy, const T* x, const T* w,
                          const LinearShape& s, cudaStream_t stream);

template <typename T>
void softmax_forward_cuda(T* y, const T* x, const SoftmaxShape& s, cudaStream_t stream);
template <typename T>
void softmax_backward_cuda(T* dx, const T* dy, const T* y, const SoftmaxShape& s,
                           cudaStream_t stream);
template <typename T>
void log_softmax_forward_cuda(T* y, const T* x, const SoftmaxShape& s, cudaStream_t stream);
template <typename T>
void log_softmax_backward_cuda(T* dx, const T* dy, const T* y, const SoftmaxShape& s,
                               cudaStream_t stream);
template <typename T>
void cross_entropy_forward_cuda(T* loss, const T* logits, const int64_t* labels, int64_t n,
                                int64_t classes, cudaStream_t stream);
template <typename T>
void cross_entropy_backward_cuda(T* dlogits, const T* logits, const int64_t* labels, T scale,
                                 int64_t n, int64_t classes, cudaStream_t stream);

template <typename T> void relu_forward_cuda(T* y, const T* x, int64_t n, cudaStream_t stream);
template <typename T>
void relu_backward_cuda(T* dx, const T* dy, const T* x, int64_t n, cudaStream_t stream);
template <typename T> void sigmoid_forward_cuda(T* y, const T* x, int64_t n, cudaStream_t stream);
template <typename T>
void sigmoid_backward_cuda(T* dx, const T* dy, const T* y, int64_t n, cudaStream_t stream);
template <typename T> void tanh_forward_cuda(T* y, const T* x, int64_t n, cudaStream_t stream);
template <typename T>
void tanh_backward_cuda(T* dx, const T* dy, const T* y, int64_t n, cudaStream_t stream);

}  // namespace lf
