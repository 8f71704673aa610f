// Fused Elman RNN over a whole sequence: x (N, T, I), w_xh (H, I), w_hh (H, H), b (H,),
// h0 (N, H), hs / dhs (N, T, H); dx (N, T, I), dw_xh (H, I), dw_hh (H, H), db (H,), dh0 (N, H).
//
// forward   hs[:, :] = x W_xh^T + b        one GEMM (N*T) x H x I, written straight into hs
//           hs[:, s] = act(hs[:, s] + h_{s-1} W_hh^T)   per step an (N x H) x (H x H) GEMM
//                                                        accumulating onto hs, then act in place
// backward  da_s = (dhs_s + dh_{s+1}) * act'(h_s)       (from the output, as the elementwise ops)
//           dh_s = da_s W_hh                            per step, in reverse; dh0 = da_0 W_hh
//           dx = da W_xh                                 one GEMM (N*T) x I x H
//           [dw_xh | dw_hh] = da^T [x | h_prev]           K = N*T, da^T packed once for both
//           db = column sums of da
//
// Threading: the batch rows of a recurrence are independent, so each thread takes whole
// MR-row panels of the batch and runs its own input projection and all T steps for them,
// with no barrier between steps (the per-step GEMM is only N x H x H = 32 x 128 x 128 at the
// documents' sizes, far too small to split and re-join 28 times). W_hh is packed once per
// call, before the team starts (a few microseconds; a barrier after a shared pack would be one
// more point where a thread descheduled on a busy machine stalls the others). The backward's
// weight gradients need every row's da, so after its one barrier the same team splits them
// by rows of dW (MR panels of H; both operands are pre-packed, so nothing is packed twice)
// and db by columns. The forward has no barrier at all, the backward one.
// Every output element is computed by the same arithmetic in the same order whatever the
// thread count and split, so results are bitwise identical for any number of threads.
//
// All scratch is allocated before the parallel region (an exception cannot leave an OpenMP
// region). float32 tanh/sigmoid use the vectorised versions of vmath.h on the AVX2 and
// AVX-512 paths: std::tanh per element costs more than the recurrent GEMM at these sizes.
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "cpu/gemm.h"
#include "cpu/simd.h"
#include "cpu/vmath.h"
#include "ops.h"

namespace lf {
namespace {

template <typename T>
using RowFn = void (*)(T* y, int64_t n);

template <typename T>
void tanh_row(T* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] = std::tanh(y[i]);
}

template <typename T>
void sigmoid_row(T* y, int64_t n) {
  // exp(-|a|) never overflows, so +-1000 gives exactly 1 / 0 (as sigmoid_forward_cpu).
  for (int64_t i = 0; i < n; ++i) {
    const T a = y[i];
    const T e = std::exp(-std::fabs(a));
    const T r = T(1) / (T(1) + e);
    y[i] = a >= T(0) ? r : e * r;
  }
}

template <typename T>
void relu_row(T* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] = y[i] < T(0) ? T(0) : y[i];
}

template <typename T>
void linear_row(T*, int64_t) {}

// The in-place activation for one row of pre-activations, chosen once per call.
template <typename T>
RowFn<T> row_activation(RnnActivation act);

template <>
RowFn<double> row_activation<double>(RnnActivation act) {
  switch (act) {
    case RnnActivation::Tanh: return &tanh_row<double>;
    case RnnActivation::Sigmoid: return &sigmoid_row<double>;
    case RnnActivation::Relu: return &relu_row<double>;
    default: return &linear_row<double>;
  }
}

template <>
RowFn<float> row_activation<float>(RnnActivation act) {
#if LF_X86_SIMD
  const SimdPath p = simd_path();
  if (act == RnnActivation::Tanh && p == SimdPath::Avx512) return &tanh_f32_avx512;
  if (act == RnnActivation::Tanh && p == SimdPath::Avx2) return &tanh_f32_avx2;
  if (act == RnnActivation::Sigmoid && p == SimdPath::Avx512) return &sigmoid_f32_avx512;
  if (act == RnnActivation::Sigmoid && p == SimdPath::Avx2) return &sigmoid_f32_avx2;
#endif
  switch (act) {
    case RnnActivation::Tanh: return &tanh_row<float>;
    case RnnActivation::Sigmoid: return &sigmoid_row<float>;
    case RnnActivation::Relu: return &relu_row<float>;
    default: return &linear_row<float>;
  }
}

// da = (g + dh) * act'(y) on one row of n; dh == nullptr means zero (the last step).
// Branch-free selects, so the loops vectorise.
template <typename T>
void act_grad_row(T* da, const T* g, const T* dh, const T* y, int64_t n, RnnActivation act) {
  switch (act) {
    case RnnActivation::Tanh:
      if (dh) {
        for (int64_t i = 0; i < n; ++i) da[i] = (g[i] + dh[i]) * (T(1) - y[i] * y[i]);
      } else {
        for (int64_t i = 0; i < n; ++i) da[i] = g[i] * (T(1) - y[i] * y[i]);
      }
      break;
    case RnnActivation::Sigmoid:
      if (dh) {
        for (int64_t i = 0; i < n; ++i) da[i] = (g[i] + dh[i]) * (y[i] * (T(1) - y[i]));
      } else {
        for (int64_t i = 0; i < n; ++i) da[i] = g[i] * (y[i] * (T(1) - y[i]));
      }
      break;
    case RnnActivation::Relu:
      // relu(a) > 0 exactly when a > 0: the gradient of relu_backward_cpu, from the output.
      for (int64_t i = 0; i < n; ++i) {
        const T v = dh ? g[i] + dh[i] : g[i];
        da[i] = y[i] > T(0) ? v : T(0);
      }
      break;
    default:
      if (dh) {
        for (int64_t i = 0; i < n; ++i) da[i] = g[i] + dh[i];
      } else {
        std::memcpy(da, g, static_cast<size_t>(n) * sizeof(T));
      }
      break;
  }
}

// Scratch gemm() needs for an M x N x K product with a strided A and (unless b_packed) a
// strided B: the same sizes it reserves, so reserving them first means gemm() never
// allocates inside a parallel region.
template <typename T>
void reserve_gemm(GemmWorkspace<T>& ws, const GemmUkernel<T>& uk, int64_t M, int64_t N,
                  int64_t K, bool b_packed) {
  if (M <= 0 || N <= 0 || K <= 0) return;
  const int64_t MR = uk.mr, NR = uk.nr;
  const int64_t MC = std::max<int64_t>(MR, uk.mc / MR * MR);
  const int64_t NC = std::max<int64_t>(NR, uk.nc / NR * NR);
  ws.a.reserve(std::min(MC, round_up(M, MR)) * std::min(uk.kc, K));
  if (!b_packed) ws.b.reserve(std::min(NC, round_up(N, NR)) * std::min(uk.kc, K));
}

// Rows [k0, k1) of a K x ncols matrix B into full-K panel layout (gemm.h), where row k is
// row(k) (nullptr: a zero row). Reads each source row once, writes its NR-wide slices.
template <typename T, class RowPtr>
void pack_b_rows(T* dst, int64_t K, int64_t ncols, int NR, int64_t k0, int64_t k1, RowPtr row) {
  const int64_t panels = (ncols + NR - 1) / NR;
  for (int64_t k = k0; k < k1; ++k) {
    const T* src = row(k);
    for (int64_t p = 0; p < panels; ++p) {
      T* d = dst + p * K * NR + k * NR;
      const int64_t c0 = p * NR, w = std::min<int64_t>(NR, ncols - c0);
      int64_t c = 0;
      if (src)
        for (; c < w; ++c) d[c] = src[c0 + c];
      for (; c < NR; ++c) d[c] = T(0);
    }
  }
}

// [lo, hi) of `count` items for member `t` of a team of `nt`.
inline void share(int64_t count, int t, int nt, int64_t* lo, int64_t* hi) {
  *lo = count * t / nt;
  *hi = count * (t + 1) / nt;
}

}  // namespace

template <typename T>
void rnn_forward_cpu(T* hs, const T* x, const T* w_xh, const T* w_hh, const T* b, const T* h0,
                     const RnnShape& s, RnnActivation act) {
  const int64_t N = s.n, TT = s.t, I = s.in, H = s.hidden;
  if (N <= 0 || TT <= 0 || H <= 0) return;
  const GemmUkernel<T>& uk = gemm_ukernel<T>();
  const RowFn<T> activate = row_activation<T>(act);
  const int64_t MR = uk.mr;
  const int64_t mpanels = (N + MR - 1) / MR;
  const int64_t ldh = TT * H;  // row stride of hs[:, s]

  const int nt = threads_for(2 * N * TT * H * (H + I), mpanels);
  AlignedBuffer<T> whh_buf;
  // B(k, j) = W_hh[j, k] (W_hh^T), packed once for every step of every thread.
  T* whh_t = whh_buf.reserve(packed_size(H, H, uk.nr));
  std::vector<GemmWorkspace<T>> wss(nt);
  const int64_t max_rows = std::min(N, (mpanels + nt - 1) / nt * MR);
  for (GemmWorkspace<T>& ws : wss) {
    reserve_gemm(ws, uk, max_rows * TT, H, I, false);
    reserve_gemm(ws, uk, max_rows, H, H, true);
  }

  pack_panels(whh_t, w_hh, H, 1, H, H, uk.nr);

#pragma omp parallel num_threads(nt) if (nt > 1)
  {
    const int tid = omp_get_thread_num(), team = omp_get_num_threads();
    int64_t q0, q1;
    share(mpanels, tid, team, &q0, &q1);
    const int64_t n0 = q0 * MR, n1 = std::min(N, q1 * MR), rows = n1 - n0;
    if (rows > 0) {
      GemmWorkspace<T>& ws = wss[tid];
      T* hsr = hs + n0 * ldh;
      if (b) {
        for (int64_t r = 0; r < rows * TT; ++r) std::copy(b, b + H, hsr + r * H);
      }
      // Input projection of all steps of these rows; with no bias and I == 0 gemm zeroes.
      gemm(uk, rows * TT, H, I, GemmOperand<T>::strided(x + n0 * TT * I, I, 1),
           GemmOperand<T>::strided(w_xh, 1, I), hsr, H, b != nullptr, ws);
      const GemmOperand<T> whh_op = GemmOperand<T>::prepacked(whh_t);
      for (int64_t t = 0; t < TT; ++t) {
        T* c = hsr + t * H;
        if (t > 0) {
          gemm(uk, rows, H, H, GemmOperand<T>::strided(c - H, ldh, 1), whh_op, c, ldh, true, ws);
        } else if (h0) {
          gemm(uk, rows, H, H, GemmOperand<T>::strided(h0 + n0 * H, H, 1), whh_op, c, ldh, true,
               ws);
        }
        for (int64_t r = 0; r < rows; ++r) activate(c + r * ldh, H);
      }
    }
  }
}

template <typename T>
void rnn_backward_cpu(T* dx, T* dw_xh, T* dw_hh, T* db, T* dh0, const T* dhs, const T* x,
                      const T* w_xh, const T* w_hh, const T* h0, const T* hs, const RnnShape& s,
                      RnnActivation act) {
  const int64_t N = s.n, TT = s.t, I = s.in, H = s.hidden;
  if (N <= 0 || TT <= 0 || H <= 0) {
    // Nothing flows: every gradient is exactly zero (dh0 too: no step reads h0).
    if (dx) std::fill(dx, dx + std::max<int64_t>(N * TT * I, 0), T(0));
    if (dw_xh) std::fill(dw_xh, dw_xh + std::max<int64_t>(H * I, 0), T(0));
    if (dw_hh) std::fill(dw_hh, dw_hh + std::max<int64_t>(H * H, 0), T(0));
    if (db) std::fill(db, db + std::max<int64_t>(H, 0), T(0));
    if (dh0) std::fill(dh0, dh0 + std::max<int64_t>(N * H, 0), T(0));
    return;
  }
  const GemmUkernel<T>& uk = gemm_ukernel<T>();
  const int64_t MR = uk.mr;
  const int64_t K = N * TT, ldh = TT * H;
  const int64_t mpanels = (N + MR - 1) / MR;
  const int64_t hpanels_m = (H + MR - 1) / MR;
  const bool want_w = dw_xh || dw_hh;

  const int nt = threads_for(2 * N * TT * H * (2 * H + 2 * I), std::max(mpanels, hpanels_m));
  AlignedBuffer<T> whh_buf, da_buf, ap_buf, bx_buf, bh_buf, dh_buf;
  // B(j, k) = W_hh[j, k]: dh = da W_hh.
  T* whh = whh_buf.reserve(packed_size(H, H, uk.nr));
  T* da = da_buf.reserve(K * H);
  T* ap = want_w ? ap_buf.reserve(packed_size(H, K, uk.mr)) : nullptr;        // da^T
  T* bx = dw_xh && I > 0 ? bx_buf.reserve(packed_size(I, K, uk.nr)) : nullptr;  // x
  T* bh = dw_hh ? bh_buf.reserve(packed_size(H, K, uk.nr)) : nullptr;          // h_prev
  const int64_t max_rows = std::min(N, (mpanels + nt - 1) / nt * MR);
  T* dh_all = dh_buf.reserve(N * H);  // dh_{s} of every row; each thread uses its own rows
  std::vector<GemmWorkspace<T>> wss(nt);
  for (GemmWorkspace<T>& ws : wss) {
    reserve_gemm(ws, uk, max_rows, H, H, true);
    if (dx) reserve_gemm(ws, uk, max_rows * TT, I, H, false);
  }

  pack_panels(whh, w_hh, 1, H, H, H, uk.nr);

#pragma omp parallel num_threads(nt) if (nt > 1)
  {
    const int tid = omp_get_thread_num(), team = omp_get_num_threads();
    GemmWorkspace<T>& ws = wss[tid];
    int64_t q0, q1;
    share(mpanels, tid, team, &q0, &q1);
    const int64_t n0 = q0 * MR, n1 = std::min(N, q1 * MR), rows = n1 - n0;
    // This thread's rows of the weight-gradient B operands (k = n*T + t).
    if (bx && rows > 0)
      pack_b_rows(bx, K, I, uk.nr, n0 * TT, n1 * TT, [&](int64_t k) { return x + k * I; });
    if (bh && rows > 0)
      pack_b_rows(bh, K, H, uk.nr, n0 * TT, n1 * TT, [&](int64_t k) -> const T* {
        const int64_t t = k % TT;
        if (t > 0) return hs + (k - 1) * H;
        return h0 ? h0 + (k / TT) * H : nullptr;
      });
    if (rows > 0) {
      T* dh = dh_all + n0 * H;
      const GemmOperand<T> whh_op = GemmOperand<T>::prepacked(whh);
      for (int64_t t = TT - 1; t >= 0; --t) {
        for (int64_t r = 0; r < rows; ++r) {
          const int64_t o = (n0 + r) * ldh + t * H;
          act_grad_row(da + o, dhs + o, t < TT - 1 ? dh + r * H : nullptr, hs + o, H, act);
        }
        const GemmOperand<T> da_t = GemmOperand<T>::strided(da + n0 * ldh + t * H, ldh, 1);
        if (t > 0) {
          gemm(uk, rows, H, H, da_t, whh_op, dh, H, false, ws);
        } else if (dh0) {
          gemm(uk, rows, H, H, da_t, whh_op, dh0 + n0 * H, H, false, ws);
        }
      }
      if (dx && I > 0)
        gemm(uk, rows * TT, I, H, GemmOperand<T>::strided(da + n0 * ldh, H, 1),
             GemmOperand<T>::strided(w_xh, I, 1), dx + n0 * TT * I, I, false, ws);
    }
#pragma omp barrier
    if (want_w) {
      int64_t m0, m1;
      share(hpanels_m, tid, team, &m0, &m1);
      if (m1 > m0) {
        const int64_t i0 = m0 * MR, i1 = std::min(H, m1 * MR);
        T* a = ap + m0 * K * MR;
        pack_panels(a, da + i0, 1, H, i1 - i0, K, uk.mr);
        const GemmOperand<T> a_op = GemmOperand<T>::prepacked(a);
        if (dw_xh && I > 0)
          gemm(uk, i1 - i0, I, K, a_op, GemmOperand<T>::prepacked(bx), dw_xh + i0 * I, I, false,
               ws);
        if (dw_hh)
          gemm(uk, i1 - i0, H, K, a_op, GemmOperand<T>::prepacked(bh), dw_hh + i0 * H, H, false,
               ws);
      }
    }
    if (db) {
      // Columns split over the team; rows added in order, so the bits do not depend on it.
      int64_t j0, j1;
      share(H, tid, team, &j0, &j1);
      if (j1 > j0) {
        std::fill(db + j0, db + j1, T(0));
        for (int64_t k = 0; k < K; ++k) {
          const T* row = da + k * H;
          for (int64_t j = j0; j < j1; ++j) db[j] += row[j];
        }
      }
    }
  }
}

#define LF_INSTANTIATE(T)                                                                     \
  template void rnn_forward_cpu<T>(T*, const T*, const T*, const T*, const T*, const T*,      \
                                   const RnnShape&, RnnActivation);                           \
  template void rnn_backward_cpu<T>(T*, T*, T*, T*, T*, const T*, const T*, const T*,         \
                                    const T*, const T*, const T*, const RnnShape&,            \
                                    RnnActivation);
LF_INSTANTIATE(float)
LF_INSTANTIATE(double)
#undef LF_INSTANTIATE

}  // namespace lf
