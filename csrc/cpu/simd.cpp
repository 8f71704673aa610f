// Run-time SIMD path selection (CPUID + LAYERFORGE_SIMD), the process-wide thread count, and
// the streaming-store threshold.
#include "cpu/simd.h"

#include <omp.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cstdlib>

#include <cstdio>
#include <string>

namespace lf {
namespace {

// -1 = not yet decided. Relaxed atomics suffice: the value is a plain enum and every
// launcher reads it once.
std::atomic<int> g_path{-1};
std::atomic<int> g_threads{0};
std::atomic<int> g_conv{-1};
std::atomic<int64_t> g_stream{-1};

int64_t default_stream_bytes() {
  const char* env = std::getenv("LAYERFORGE_STREAM_BYTES");
  if (env && *env) {
    char* end = nullptr;
    const long long v = std::strtoll(env, &end, 10);
    if (end && *end == '\0' && v >= 0) return v;
  }
  // sysfs, not sysconf(_SC_LEVEL3_CACHE_SIZE): on our KVM guest glibc reports 320 MiB for a
  // 32 MiB L3 (it scales the CPUID figure by the sharing threads the host describes).
  // C stdio, not iostreams: on a GPU machine (gcc 13.3, Python 3.12 venv) `ifstream >> int`
  // crashed inside the module (SIGSEGV in std::istream::operator>>), as ostream formatting
  // did in _cuda; check.h's LF_CHECK builds its messages without streams for the same reason.
  int64_t l3 = -1;
  for (int i = 0; i < 8 && l3 < 0; ++i) {
    const std::string dir = "/sys/devices/system/cpu/cpu0/cache/index" + std::to_string(i) + "/";
    int lv = 0;
    long long kb = 0;
    char unit = 0;
    if (std::FILE* f = std::fopen((dir + "level").c_str(), "r")) {
      if (std::fscanf(f, "%d", &lv) != 1) lv = 0;
      std::fclose(f);
    }
    if (lv != 3) continue;
    if (std::FILE* f = std::fopen((dir + "size").c_str(), "r")) {
      if (std::fscanf(f, "%lld%c", &kb, &unit) < 1) kb = 0;
      std::fclose(f);
    }
    if (kb > 0) l3 = unit == 'M' ? kb << 20 : unit == 'K' ? kb << 10 : kb;
  }
  if (l3 <= 0) l3 = int64_t(32) << 20;
  return l3 + l3 / 2;
}

SimdPath detect() {
#if LF_X86_SIMD
  __builtin_cpu_init();
  // __builtin_cpu_supports checks XCR0 as well, so an OS that does not save the ZMM
  // state reports no avx512f.
  if (__builtin_cpu_supports("avx512f")) return SimdPath::Avx512;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return SimdPath::Avx2;
#endif
  return SimdPath::Scalar;
}

SimdPath initial_path() {
  SimdPath best = simd_best_supported();
  const char* env = std::getenv("LAYERFORGE_SIMD");
  SimdPath req;
  if (env && *env && parse_simd_path(env, &req)) return std::min(best, req);
  return best;
}

}  // namespace

SimdPath simd_best_supported() {
  static const SimdPath best = detect();
  return best;
}

SimdPath simd_path() {
  int p = g_path.load(std::memory_order_relaxed);
  if (p < 0) {
    p = static_cast<int>(initial_path());
    g_path.store(p, std::memory_order_relaxed);
  }
  return static_cast<SimdPath>(p);
}

SimdPath set_simd_path(SimdPath requested) {
  SimdPath p = std::min(simd_best_supported(), requested);
  g_path.store(static_cast<int>(p), std::memory_order_relaxed);
  return p;
}

const char* simd_path_name(SimdPath p) {
  switch (p) {
    case SimdPath::Avx512: return "avx512";
    case SimdPath::Avx2: return "avx2";
    default: return "scalar";
  }
}

bool parse_simd_path(const std::string& name, SimdPath* out) {
  std::string s;
  for (char ch : name) {
    if (!std::isspace(static_cast<unsigned char>(ch)))
      s += static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  }
  if (s == "scalar" || s == "none" || s == "generic") { *out = SimdPath::Scalar; return true; }
  if (s == "avx2") { *out = SimdPath::Avx2; return true; }
  if (s == "avx512" || s == "avx512f") { *out = SimdPath::Avx512; return true; }
  return false;
}

std::vector<std::string> simd_paths_compiled() {
#if LF_X86_SIMD
  return {"scalar", "avx2", "avx512"};
#else
  return {"scalar"};
#endif
}

std::vector<std::string> cpu_features() {
  std::vector<std::string> f;
#if LF_X86_SIMD
  __builtin_cpu_init();
  if (__builtin_cpu_supports("sse2")) f.push_back("sse2");
  if (__builtin_cpu_supports("avx")) f.push_back("avx");
  if (__builtin_cpu_supports("avx2")) f.push_back("avx2");
  if (__builtin_cpu_supports("fma")) f.push_back("fma");
  if (__builtin_cpu_supports("avx512f")) f.push_back("avx512f");
#endif
  return f;
}

int num_threads() {
  int n = g_threads.load(std::memory_order_relaxed);
  if (n <= 0) {
    n = std::max(1, omp_get_max_threads());
    g_threads.store(n, std::memory_order_relaxed);
  }
  return n;
}

void set_num_threads(int n) { g_threads.store(std::max(1, n), std::memory_order_relaxed); }

ConvAlgo conv_algo() {
  int a = g_conv.load(std::memory_order_relaxed);
  if (a < 0) {
    const char* env = std::getenv("LAYERFORGE_CONV");
    a = env && std::string(env) == "im2col" ? 1 : 0;
    g_conv.store(a, std::memory_order_relaxed);
  }
  return static_cast<ConvAlgo>(a);
}

void set_conv_algo(ConvAlgo a) { g_conv.store(static_cast<int>(a), std::memory_order_relaxed); }

int64_t stream_min_bytes() {
  int64_t b = g_stream.load(std::memory_order_relaxed);
  if (b < 0) {
    b = default_stream_bytes();
    g_stream.store(b, std::memory_order_relaxed);
  }
  return b;
}

void set_stream_min_bytes(int64_t bytes) {
  g_stream.store(bytes < 0 ? default_stream_bytes() : bytes, std::memory_order_relaxed);
}

}  // namespace lf
