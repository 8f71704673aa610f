// GEMM microkernel descriptors: one per (SIMD path, dtype).
//
// A microkernel computes one full MR x NR tile  C = [C +] Ap * Bp  over kc steps, where
//   Ap is an A micro-panel, k-major: Ap[k * MR + r]  (r < MR)
//   Bp is a B micro-panel, k-major: Bp[k * NR + j]  (j < NR), 64-byte aligned
//   C  is row-major with row stride ldc (unaligned).
// Partial tiles are handled by the driver (gemm.cpp) through a scratch tile.
#pragma once
#include <cstdint>

namespace lf {

template <typename T>
using GemmUkernelFn = void (*)(int64_t kc, const T* a, const T* b, T* c, int64_t ldc,
                               bool accumulate);

template <typename T>
struct GemmUkernel {
  int mr, nr;           // register tile
  int64_t mc, kc, nc;   // cache blocking: MC x KC block of A (L2), KC x NR panel of B (L1)
  GemmUkernelFn<T> fn;
  const char* name;
};

// Largest tile over all kernels (sizes the driver's scratch tile).
constexpr int kMaxMr = 16;
constexpr int kMaxNr = 32;

extern const GemmUkernel<float> kUkrScalarF32;
extern const GemmUkernel<double> kUkrScalarF64;
extern const GemmUkernel<float> kUkrAvx2F32;
extern const GemmUkernel<double> kUkrAvx2F64;
extern const GemmUkernel<float> kUkrAvx512F32;
extern const GemmUkernel<double> kUkrAvx512F64;

}  // namespace lf
