// GEMM driver (blocking, packing, partial tiles, thread split) and the scalar microkernel.
// Layouts and blocking are described in gemm.h; the SIMD microkernels live in
// gemm_avx2.cpp / gemm_avx512.cpp.
#include "cpu/gemm.h"

#include <omp.h>

#include <algorithm>
#include <cstring>

#include "cpu/simd.h"

namespace lf {
namespace {

// Portable fallback: a 4 x 16 tile written so the compiler can vectorise the j loop with
// the baseline SSE2 (64 accumulators live in 16 xmm registers for float).
template <typename T, int MR, int NR>
void ukr_scalar(int64_t kc, const T* a, const T* b, T* c, int64_t ldc, bool accumulate) {
  T acc[MR][NR] = {};
  for (int64_t k = 0; k < kc; ++k) {
    for (int r = 0; r < MR; ++r) {
      const T av = a[r];
      for (int j = 0; j < NR; ++j) acc[r][j] += av * b[j];
    }
    a += MR;
    b += NR;
  }
  for (int r = 0; r < MR; ++r) {
    T* cr = c + r * ldc;
    if (accumulate) {
      for (int j = 0; j < NR; ++j) cr[j] += acc[r][j];
    } else {
      for (int j = 0; j < NR; ++j) cr[j] = acc[r][j];
    }
  }
}

}  // namespace

extern const GemmUkernel<float> kUkrScalarF32 = {4, 16, 128, 256, 2048,
                                                 &ukr_scalar<float, 4, 16>, "scalar 4x16"};
extern const GemmUkernel<double> kUkrScalarF64 = {4, 8, 128, 256, 2048,
                                                  &ukr_scalar<double, 4, 8>, "scalar 4x8"};

template <>
const GemmUkernel<float>& gemm_ukernel<float>() {
#if LF_X86_SIMD
  switch (simd_path()) {
    case SimdPath::Avx512: return kUkrAvx512F32;
    case SimdPath::Avx2: return kUkrAvx2F32;
    default: break;
  }
#endif
  return kUkrScalarF32;
}

template <>
const GemmUkernel<double>& gemm_ukernel<double>() {
#if LF_X86_SIMD
  switch (simd_path()) {
    case SimdPath::Avx512: return kUkrAvx512F64;
    case SimdPath::Avx2: return kUkrAvx2F64;
    default: break;
  }
#endif
  return kUkrScalarF64;
}

template <typename T>
void pack_panels(T* dst, const T* src, int64_t os, int64_t ks, int64_t n, int64_t k,
                 int width) {
  const int64_t w = width;
  for (int64_t p0 = 0; p0 < n; p0 += w) {
    const int64_t rows = std::min(w, n - p0);
    T* d = dst + (p0 / w) * k * w;
    const T* s = src + p0 * os;
    if (os == 1) {
      // Panel rows are contiguous in the source: one short copy per k.
      for (int64_t kk = 0; kk < k; ++kk) {
        const T* sk = s + kk * ks;
        T* dk = d + kk * w;
        for (int64_t r = 0; r < rows; ++r) dk[r] = sk[r];
        for (int64_t r = rows; r < w; ++r) dk[r] = T(0);
      }
    } else {
      // Transposing pack: read each source row along k (unit stride when ks == 1), write
      // with stride w into the panel, which is small enough to stay in L1. Blocking k by 64
      // keeps the `rows` read streams and the written lines resident together.
      constexpr int64_t KB = 64;
      for (int64_t k0 = 0; k0 < k; k0 += KB) {
        const int64_t k1 = std::min(k, k0 + KB);
        for (int64_t r = 0; r < rows; ++r) {
          const T* sr = s + r * os;
          T* dr = d + r;
          for (int64_t kk = k0; kk < k1; ++kk) dr[kk * w] = sr[kk * ks];
        }
        for (int64_t r = rows; r < w; ++r)
          for (int64_t kk = k0; kk < k1; ++kk) d[kk * w + r] = T(0);
      }
    }
  }
}

template <typename T>
void gemm(const GemmUkernel<T>& uk, int64_t M, int64_t N, int64_t K, const GemmOperand<T>& A,
          const GemmOperand<T>& B, T* C, int64_t ldc, bool accumulate, GemmWorkspace<T>& ws) {
  if (M <= 0 || N <= 0) return;
  if (K <= 0) {
    if (!accumulate)
      for (int64_t i = 0; i < M; ++i) std::fill(C + i * ldc, C + i * ldc + N, T(0));
    return;
  }
  const int64_t MR = uk.mr, NR = uk.nr;
  const int64_t KC = uk.kc;
  const int64_t MC = std::max<int64_t>(MR, uk.mc / MR * MR);
  const int64_t NC = std::max<int64_t>(NR, uk.nc / NR * NR);
  T* abuf = A.packed ? nullptr : ws.a.reserve(std::min(MC, round_up(M, MR)) * std::min(KC, K));
  T* bbuf = B.packed ? nullptr : ws.b.reserve(std::min(NC, round_up(N, NR)) * std::min(KC, K));
  alignas(64) T tile[kMaxMr * kMaxNr];

  for (int64_t jc = 0; jc < N; jc += NC) {
    const int64_t nc = std::min(NC, N - jc);
    for (int64_t pc = 0; pc < K; pc += KC) {
      const int64_t kc = std::min(KC, K - pc);
      const bool acc = accumulate || pc > 0;
      const T* bbase;
      int64_t bstride;
      if (B.packed) {
        bbase = B.p + (jc / NR) * K * NR + pc * NR;
        bstride = K * NR;
      } else {
        pack_panels(bbuf, B.p + pc * B.rs + jc * B.cs, B.cs, B.rs, nc, kc, uk.nr);
        bbase = bbuf;
        bstride = kc * NR;
      }
      for (int64_t ic = 0; ic < M; ic += MC) {
        const int64_t mc = std::min(MC, M - ic);
        const T* abase;
        int64_t astride;
        if (A.packed) {
          abase = A.p + (ic / MR) * K * MR + pc * MR;
          astride = K * MR;
        } else {
          pack_panels(abuf, A.p + ic * A.rs + pc * A.cs, A.rs, A.cs, mc, kc, uk.mr);
          abase = abuf;
          astride = kc * MR;
        }
        for (int64_t jr = 0; jr < nc; jr += NR) {
          const int64_t nr = std::min(NR, nc - jr);
          const T* b = bbase + (jr / NR) * bstride;
          for (int64_t ir = 0; ir < mc; ir += MR) {
            const int64_t mr = std::min(MR, mc - ir);
            const T* a = abase + (ir / MR) * astride;
            T* c = C + (ic + ir) * ldc + jc + jr;
            if (mr == MR && nr == NR) {
              uk.fn(kc, a, b, c, ldc, acc);
            } else {
              uk.fn(kc, a, b, tile, NR, false);
              for (int64_t r = 0; r < mr; ++r) {
                T* cr = c + r * ldc;
                const T* tr = tile + r * NR;
                if (acc) {
                  for (int64_t j = 0; j < nr; ++j) cr[j] += tr[j];
                } else {
                  for (int64_t j = 0; j < nr; ++j) cr[j] = tr[j];
                }
              }
            }
          }
        }
      }
    }
  }
}

template <typename T>
void gemm_parallel(const GemmUkernel<T>& uk, int64_t M, int64_t N, int64_t K,
                   const GemmOperand<T>& A, const GemmOperand<T>& B, T* C, int64_t ldc,
                   bool accumulate) {
  if (M <= 0 || N <= 0) return;
  const int64_t MR = uk.mr, NR = uk.nr;
  const int64_t mpanels = (M + MR - 1) / MR, npanels = (N + NR - 1) / NR;
  // Each part re-packs the operand it shares, so split the side whose other operand is
  // cheaper to duplicate (splitting N duplicates A's M x K, splitting M duplicates B's K x N),
  // as long as it has a panel per thread.
  const int64_t flops = 2 * M * N * std::max<int64_t>(K, 1);
  int nt = num_threads();
  bool split_n = M <= N;
  if ((split_n ? npanels : mpanels) < nt) split_n = npanels >= mpanels;
  const int64_t parts = split_n ? npanels : mpanels;
  if (nt > parts) nt = static_cast<int>(parts);
  if (flops < 8 * kParallelGrain || nt < 2) {
    GemmWorkspace<T> ws;
    gemm(uk, M, N, K, A, B, C, ldc, accumulate, ws);
    return;
  }
#pragma omp parallel num_threads(nt)
  {
    const int t = omp_get_thread_num();
    const int nteam = omp_get_num_threads();
    const int64_t p0 = parts * t / nteam, p1 = parts * (t + 1) / nteam;
    if (p1 > p0) {
      GemmWorkspace<T> ws;
      if (split_n) {
        const int64_t j0 = p0 * NR, j1 = std::min(N, p1 * NR);
        GemmOperand<T> Bs = B;
        Bs.p = B.packed ? B.p + p0 * K * NR : B.p + j0 * B.cs;
        gemm(uk, M, j1 - j0, K, A, Bs, C + j0, ldc, accumulate, ws);
      } else {
        const int64_t i0 = p0 * MR, i1 = std::min(M, p1 * MR);
        GemmOperand<T> As = A;
        As.p = A.packed ? A.p + p0 * K * MR : A.p + i0 * A.rs;
        gemm(uk, i1 - i0, N, K, As, B, C + i0 * ldc, ldc, accumulate, ws);
      }
    }
  }
}

#define LF_INSTANTIATE(T)                                                                   \
  template void pack_panels<T>(T*, const T*, int64_t, int64_t, int64_t, int64_t, int);      \
  template void gemm<T>(const GemmUkernel<T>&, int64_t, int64_t, int64_t,                   \
                        const GemmOperand<T>&, const GemmOperand<T>&, T*, int64_t, bool,    \
                        GemmWorkspace<T>&);                                                 \
  template void gemm_parallel<T>(const GemmUkernel<T>&, int64_t, int64_t, int64_t,          \
                                 const GemmOperand<T>&, const GemmOperand<T>&, T*, int64_t, \
                                 bool);
LF_INSTANTIATE(float)
LF_INSTANTIATE(double)
#undef LF_INSTANTIATE

}  // namespace lf
