// FMA-throughput and memory-copy microbenchmarks behind `layerforge bench`'s "% of peak".
//
// FMA: each thread runs kChains independent chains acc = acc * m + a (m just below 1, so the
// values stay normal and finite). One FMA has a latency of about 4 cycles and a core issues
// two per cycle (Zen 4: two 256-bit pipes, a zmm FMA double-pumped; Intel server parts: two
// 512-bit ports), so at least 8 chains are needed to keep both pipes busy. AVX2 runs 12
// (12 accumulators + the two constants fit the 16 ymm registers; 16 would spill), AVX-512
// and the scalar/SSE2 loop 16 (32 zmm / 16 xmm registers). The
// kernels are compiled per function with target pragmas and picked with the same run-time
// dispatch as the GEMM (simd_path()), so the peak is the one the GEMM microkernels can reach.
//
// Copy: std::memcpy of each thread's slice of the buffer, first-touched by the same thread,
// repeated inside one parallel region so no fork/join is timed between repetitions.
#include "cpu/peak.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <memory>

#include "check.h"
#include "cpu/simd.h"

#if LF_X86_SIMD
#include <immintrin.h>
#endif

namespace lf {
namespace {

constexpr int kChains = 16;     // scalar (SSE2 after vectorisation) and AVX-512
constexpr int kChainsAvx2 = 12;
constexpr float kMul = 0.999999f;
constexpr float kAdd = 1e-6f;

volatile double g_sink = 0.0;  // keeps every measured result live

// Each kernel runs `iters` rounds of one FMA per chain and returns a value that depends on all
// of them. flops per round: 2 * chains * lanes.
using FmaKernel = double (*)(int64_t iters);

__attribute__((noinline)) double fma_scalar(int64_t iters) {
  float acc[kChains];
  for (int r = 0; r < kChains; ++r) acc[r] = 1.0f + 1e-3f * static_cast<float>(r);
  for (int64_t i = 0; i < iters; ++i) {
#pragma GCC unroll 16
    for (int r = 0; r < kChains; ++r) acc[r] = acc[r] * kMul + kAdd;
  }
  double s = 0.0;
  for (int r = 0; r < kChains; ++r) s += acc[r];
  return s;
}

#if LF_X86_SIMD
#pragma GCC push_options
#pragma GCC target("avx2,fma")
__attribute__((noinline)) double fma_avx2(int64_t iters) {
  __m256 acc[kChainsAvx2];
#pragma GCC unroll 16
  for (int r = 0; r < kChainsAvx2; ++r) acc[r] = _mm256_set1_ps(1.0f + 1e-3f * static_cast<float>(r));
  const __m256 m = _mm256_set1_ps(kMul), a = _mm256_set1_ps(kAdd);
  for (int64_t i = 0; i < iters; ++i) {
#pragma GCC unroll 16
    for (int r = 0; r < kChainsAvx2; ++r) acc[r] = _mm256_fmadd_ps(acc[r], m, a);
  }
  __m256 s = acc[0];
  for (int r = 1; r < kChainsAvx2; ++r) s = _mm256_add_ps(s, acc[r]);
  alignas(32) float out[8];
  _mm256_store_ps(out, s);
  double t = 0.0;
  for (float v : out) t += v;
  return t;
}
#pragma GCC pop_options

#pragma GCC push_options
#pragma GCC target("avx512f,avx2,fma")
__attribute__((noinline)) double fma_avx512(int64_t iters) {
  __m512 acc[kChains];
#pragma GCC unroll 16
  for (int r = 0; r < kChains; ++r) acc[r] = _mm512_set1_ps(1.0f + 1e-3f * static_cast<float>(r));
  const __m512 m = _mm512_set1_ps(kMul), a = _mm512_set1_ps(kAdd);
  for (int64_t i = 0; i < iters; ++i) {
#pragma GCC unroll 16
    for (int r = 0; r < kChains; ++r) acc[r] = _mm512_fmadd_ps(acc[r], m, a);
  }
  __m512 s = acc[0];
  for (int r = 1; r < kChains; ++r) s = _mm512_add_ps(s, acc[r]);
  return static_cast<double>(_mm512_reduce_add_ps(s));
}
#pragma GCC pop_options
#endif

void check_threads(const char* fn, int threads) {
  LF_CHECK(threads >= 1 && threads <= 1024,
           fn << ": expected threads in [1, 1024], got " << threads);
}

// Seconds for every thread of the team to run body(thread, team); the clock starts and
// stops at barriers, so the slowest thread decides.
template <class Body>
double timed_region(int threads, Body body) {
  double t0 = 0.0, t1 = 0.0;
#pragma omp parallel num_threads(threads)
  {
    const int tid = omp_get_thread_num(), team = omp_get_num_threads();
#pragma omp barrier
#pragma omp master
    t0 = omp_get_wtime();
#pragma omp barrier
    body(tid, team);
#pragma omp barrier
#pragma omp master
    t1 = omp_get_wtime();
  }
  return t1 - t0;
}

}  // namespace

double fma_peak_gflops(int threads) {
  check_threads("fma_peak_gflops", threads);
  FmaKernel kernel = &fma_scalar;
  int per_round = kChains;  // FMAs per round, lanes included
#if LF_X86_SIMD
  switch (simd_path()) {
    case SimdPath::Avx512: kernel = &fma_avx512; per_round = kChains * 16; break;
    case SimdPath::Avx2: kernel = &fma_avx2; per_round = kChainsAvx2 * 8; break;
    default: break;
  }
#endif
  // Calibrate on one thread to about 20 ms per trial, so the timer and the barriers are noise.
  int64_t iters = 1 << 14;
  for (;;) {
    const double t0 = omp_get_wtime();
    g_sink = g_sink + kernel(iters);
    const double dt = omp_get_wtime() - t0;
    if (dt >= 2e-3 || iters >= (int64_t{1} << 32)) {
      iters = std::max<int64_t>(1, static_cast<int64_t>(static_cast<double>(iters) * 0.02 / std::max(dt, 1e-9)));
      break;
    }
    iters *= 4;
  }
  double best = 0.0;
  for (int trial = 0; trial < 5; ++trial) {
    int team_size = 1;
    double sink = 0.0;
    const double dt = timed_region(threads, [&](int tid, int team) {
      const double v = kernel(iters);
#pragma omp atomic
      sink += v;
      if (tid == 0) team_size = team;
    });
    g_sink = g_sink + sink;
    const double flops = 2.0 * per_round * static_cast<double>(iters) * team_size;
    if (dt > 0.0) best = std::max(best, flops / dt / 1e9);
  }
  return best;
}

double copy_bandwidth_gbs(int threads, int64_t nbytes) {
  check_threads("copy_bandwidth_gbs", threads);
  LF_CHECK(nbytes >= 64 && nbytes <= (int64_t{1} << 34),
           "copy_bandwidth_gbs: expected nbytes in [64, 2^34], got " << nbytes);
  // Below 64 KiB per thread the barriers cost more than the copy: use fewer threads.
  const int64_t per_thread_min = int64_t{1} << 16;
  const int nt = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(threads, nbytes / per_thread_min)));
  const int64_t n = (nbytes + 63) / 64 * 64;
  std::unique_ptr<char[]> src_buf(new char[n + 64]), dst_buf(new char[n + 64]);
  char* src = src_buf.get() + (64 - reinterpret_cast<uintptr_t>(src_buf.get()) % 64) % 64;
  char* dst = dst_buf.get() + (64 - reinterpret_cast<uintptr_t>(dst_buf.get()) % 64) % 64;
  // Slices on 64-byte boundaries; slice t is first touched (so placed) by thread t.
  auto slice = [n](int tid, int team, int64_t* begin, int64_t* len) {
    const int64_t lines = n / 64;
    const int64_t b = lines * tid / team, e = lines * (tid + 1) / team;
    *begin = b * 64;
    *len = (e - b) * 64;
  };
  auto copy = [&](int64_t reps) {
    return timed_region(nt, [&](int tid, int team) {
      int64_t b, len;
      slice(tid, team, &b, &len);
      for (int64_t r = 0; r < reps; ++r) {
        std::memcpy(dst + b, src + b, static_cast<size_t>(len));
#if defined(__GNUC__)
        asm volatile("" ::: "memory");  // each repetition is a real copy
#endif
      }
    });
  };
  timed_region(nt, [&](int tid, int team) {
    int64_t b, len;
    slice(tid, team, &b, &len);
    std::memset(src + b, 1, static_cast<size_t>(len));
    std::memset(dst + b, 0, static_cast<size_t>(len));
  });
  // Calibrate to about 5 ms per trial.
  int64_t reps = 1;
  for (;;) {
    const double dt = copy(reps);
    if (dt >= 1e-3 || reps >= (int64_t{1} << 30)) {
      reps = std::max<int64_t>(1, static_cast<int64_t>(static_cast<double>(reps) * 5e-3 / std::max(dt, 1e-9)));
      break;
    }
    reps *= 8;
  }
  double best = 0.0;
  for (int trial = 0; trial < 5; ++trial) {
    const double dt = copy(reps);
    g_sink = g_sink + dst[n / 2];
    if (dt > 0.0) best = std::max(best, 2.0 * static_cast<double>(n) * static_cast<double>(reps) / dt / 1e9);
  }
  return best;
}

}  // namespace lf
