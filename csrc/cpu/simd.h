// Run-time choice of the SIMD path and the thread count shared by every CPU kernel.
//
// The module is compiled for the portable x86-64 baseline; the AVX2+FMA and AVX-512
// microkernels are compiled per function (target pragmas) and one path is chosen at run
// time: the best the CPU (and OS, via XCR0) supports, lowered by LAYERFORGE_SIMD=
// scalar|avx2|avx512 when set. A launcher reads the path once at its start and keeps it
// for the whole call, so packing layouts and microkernels always agree even if the path
// is changed from another thread meanwhile.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
#define LF_X86_SIMD 1
#else
#define LF_X86_SIMD 0
#endif

namespace lf {

enum class SimdPath : int { Scalar = 0, Avx2 = 1, Avx512 = 2 };

// Best path this CPU supports (ignoring LAYERFORGE_SIMD).
SimdPath simd_best_supported();
// Path in force: min(best supported, LAYERFORGE_SIMD request, set_simd_path request).
SimdPath simd_path();
// Request a path; it is clamped to what the CPU supports. Returns the path now in force.
SimdPath set_simd_path(SimdPath requested);
const char* simd_path_name(SimdPath p);
// Parses "scalar" / "avx2" / "avx512"; returns false for anything else.
bool parse_simd_path(const std::string& name, SimdPath* out);
// Paths compiled into this build, lowest first.
std::vector<std::string> simd_paths_compiled();
// Instruction-set features the kernels use that this CPU supports.
std::vector<std::string> cpu_features();

// Convolution kernel version: Auto picks the direct kernels where they apply (AVX-512,
// float32, stride 1, dilation 1; conv2d_direct.h) and im2col + GEMM elsewhere; Im2col
// forces im2col + GEMM everywhere (LAYERFORGE_CONV=im2col, or set_conv_algo), so the
// benchmarks and tests can run both versions on one machine.
enum class ConvAlgo : int { Auto = 0, Im2col = 1 };
ConvAlgo conv_algo();
void set_conv_algo(ConvAlgo a);

// Non-temporal ("streaming") stores: a memory-bound kernel whose call touches at least this
// many bytes (every array it reads or writes) writes its output with stores that bypass the
// caches. Such a call cannot keep its data in the last-level cache anyway, and a normal store
// first reads each output line from memory (read for ownership), which the streaming store
// skips. Measured here (32 MiB L3, relu through ops.py on fresh outputs, streamed against
// normal stores, interleaved): backward (3 arrays) 33 MB 0.90x, 40 MB 1.10x, 66 MB 1.5x;
// forward (2 arrays) 32 MB 0.6x, 36 MB 0.86x, 44 MB 1.03-1.27x. But a streamed output is
// not in the cache for the op that reads it next: in a loop of producer -> relu -> 2x2 max
// pool on (256,32,26,26) (44 MB, session 13) the relu took 906-953 us streamed against
// 826-928 not, and the pool after it 820-863 against 614-654; in back-to-back relu calls
// alone, 895-952 against 738-810. The same loop with relu backward (66 MB) kept streaming
// ahead: 1220-1397 against 1543-1615 us, the reader after it 1312-1371 against 1281-1301.
// Default: 1.5x the L3 size the OS reports (32 MiB if none), between the two;
// LAYERFORGE_STREAM_BYTES or set_stream_min_bytes override it (0: always stream, as the
// tests do to run these paths on small arrays).
int64_t stream_min_bytes();
void set_stream_min_bytes(int64_t bytes);  // < 0: back to the default

// Threads used by every parallel region (a process-wide setting, unlike omp_set_num_threads,
// whose value is per calling thread).
int num_threads();
void set_num_threads(int n);

// Parallelise a loop only when it holds at least this much work (elements touched or
// flops); below it, waking the OpenMP team costs more than it saves.
constexpr int64_t kParallelGrain = 32768;
inline int threads_for(int64_t work, int64_t items) {
  int nt = num_threads();
  if (work < kParallelGrain || items < 2) return 1;
  if (items < nt) nt = static_cast<int>(items);
  return nt < 1 ? 1 : nt;
}

}  // namespace lf
