// Machine peaks for the benchmarks' "% of peak" columns (not part of the op contract in ops.h):
// float32 FMA throughput on the SIMD path in force, and the bandwidth of a multithreaded
// memory copy. Both are measured, never looked up, so the percentages hold on any machine.
#pragma once
#include <cstdint>

namespace lf {

// Best-of-5 float32 GFLOP/s (an FMA counts 2 flops) of `threads` OpenMP threads each running
// independent FMA chains on the current SIMD path (avx512: zmm, avx2: ymm, scalar: the
// portable SSE2 mul + add). Throws std::invalid_argument for threads outside [1, 1024].
double fma_peak_gflops(int threads);

// Best-of-5 GB/s of copying `nbytes` bytes from one buffer to another with up to `threads`
// threads (fewer for small copies, each thread copying its slice repeatedly), counting bytes
// read + written (2 * nbytes per copy, as STREAM does). Small sizes measure cache bandwidth.
// Throws std::invalid_argument for threads outside [1, 1024] or nbytes outside [64, 2^34].
double copy_bandwidth_gbs(int threads, int64_t nbytes);

}  // namespace lf
