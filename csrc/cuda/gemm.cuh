// The one tiled GEMM of the CUDA backend, used by linear (plain strided operands) and by
// conv2d (implicit GEMM: the operand loaders compute im2col / the dx gather on the fly, so
// no im2col buffer is ever allocated).
//
//   C (M x N) = A (M x K) * B (K x N),   C[i, j] written once, by one thread, via a Store.
//
// Tiles of 64 x 64 outputs, k-steps of 16, 256 threads each computing 4 x 4 outputs at
// (ty + 16a, tx + 16b) (conflict-free shared reads: a warp reads 2 A values and 16 adjacent
// B values). The grid is a 1-D grid-stride loop over tiles (no gridDim.y limit) times
// gridDim.z split-K slices.
//
// Operand loaders (A: outer = row i, B: outer = column j):
//   static constexpr bool kKFast;   // global memory is contiguous along k (else along i / j);
//                                   // the tile load maps consecutive threads along that axis
//   struct Ctx;   Ctx ctx(int64_t outer, bool valid) const;   // once per tile per thread
//   struct KInfo; KInfo kinfo(int64_t k, bool valid) const;   // once per k-step per block,
//                                                             // shared: divisions stay out of
//                                                             // the per-element path
//   T load(const Ctx&, const KInfo&) const;                   // 0 when invalid / padding
// Store: void store(int64_t i, int64_t j, int64_t split, T v) const.
//
// Determinism and chunking: the k range is cut into chunks of k_chunk (a multiple of 16,
// chosen from the shapes only). Each chunk is summed from zero in k order, and the chunk sums
// are added in chunk order: total = ((0 + c0) + c1) + ... A block either walks all chunks
// itself (fused) or, split-K, one chunk per gridDim.z slice into a workspace that
// splitk_reduce_kernel1 then adds in the same order from zero, so both executions give
// bitwise the same C. No atomics anywhere.
#pragma once
#include <algorithm>

#include "common.cuh"

namespace lf {
namespace gemm {

constexpr int kBM = 64, kBN = 64, kBK = 16, kThreads = 256;
constexpr int kRowsPerThread = 4, kColsPerThread = 4, kTY = kThreads / 16;

// Plain strided operand: element (outer, k) at p[outer * s_outer + k * s_k].
template <typename T, bool kKFastT>
struct Strided {
  static constexpr bool kKFast = kKFastT;
  const T* p;
  int64_t s_outer, s_k;
  struct Ctx {
    int64_t off;
    bool valid;
  };
  struct KInfo {
    int64_t off;
    bool valid;
  };
  __device__ __forceinline__ Ctx ctx(int64_t o, bool v) const { return Ctx{v ? o * s_outer : 0, v}; }
  __device__ __forceinline__ KInfo kinfo(int64_t k, bool v) const { return KInfo{v ? k * s_k : 0, v}; }
  __device__ __forceinline__ T load(const Ctx& c, const KInfo& k) const {
    return (c.valid && k.valid) ? p[c.off + k.off] : T(0);
  }
};

// Row-major C with leading dimension ld; slice `split` at split * split_stride (split-K
// workspace); optional per-column bias (linear forward).
template <typename T>
struct RowMajorStore {
  T* c;
  int64_t ld, split_stride;
  const T* col_bias;
  __device__ __forceinline__ void store(int64_t i, int64_t j, int64_t split, T v) const {
    if (col_bias != nullptr) v += col_bias[j];
    c[split * split_stride + i * ld + j] = v;
  }
};

// ---- kernels

// blockIdx.z handles chunks [z * chunks_per_block, min(nchunks, (z + 1) * chunks_per_block))
// and stores with split = z.
template <typename T, class LA, class LB, class ST>
__global__ void __launch_bounds__(kThreads)
    gemm_kernel1(LA a, LB b, ST st, int64_t M, int64_t N, int64_t K, int64_t k_chunk,
                 int64_t chunks_per_block) {
  __shared__ T As[kBK][kBM + 1];
  __shared__ T Bs[kBK][kBN + 1];
  __shared__ typename LA::KInfo ka[kBK];
  __shared__ typename LB::KInfo kb[kBK];
  constexpr int kCA = LA::kKFast ? kRowsPerThread : 1;
  constexpr int kCB = LB::kKFast ? kColsPerThread : 1;
  const int tid = threadIdx.x, tx = tid % 16, ty = tid / 16;
  const int64_t tiles_n = ceil_div<int64_t>(N, kBN), tiles = ceil_div<int64_t>(M, kBM) * tiles_n;
  const int64_t nchunks = K > 0 ? ceil_div<int64_t>(K, k_chunk) : 0;
  const int64_t split = blockIdx.z;
  const int64_t c_begin = split * chunks_per_block;
  const int64_t c_end = c_begin + chunks_per_block < nchunks ? c_begin + chunks_per_block : nchunks;

  for (int64_t t = blockIdx.x; t < tiles; t += gridDim.x) {
    const int64_t i0 = (t / tiles_n) * kBM, j0 = (t % tiles_n) * kBN;
    // Tile-load mapping, element e = tid + 256u: k-fast: (k = e % 16, outer = e / 16);
    // outer-fast: (outer = e % 64, k = e / 64), whose outer is the same for every u.
    typename LA::Ctx ca[kCA];
    typename LB::Ctx cb[kCB];
#pragma unroll
    for (int u = 0; u < kCA; ++u) {
      const int64_t i = i0 + (LA::kKFast ? tid / kBK + u * (kThreads / kBK) : tid % kBM);
      ca[u] = a.ctx(i, i < M);
    }
#pragma unroll
    for (int u = 0; u < kCB; ++u) {
      const int64_t j = j0 + (LB::kKFast ? tid / kBK + u * (kThreads / kBK) : tid % kBN);
      cb[u] = b.ctx(j, j < N);
    }

    T total[kRowsPerThread][kColsPerThread];
#pragma unroll
    for (int r = 0; r < kRowsPerThread; ++r)
#pragma unroll
      for (int c = 0; c < kColsPerThread; ++c) total[r][c] = T(0);

    for (int64_t chunk = c_begin; chunk < c_end; ++chunk) {
      const int64_t k_lo = chunk * k_chunk, k_hi = k_lo + k_chunk < K ? k_lo + k_chunk : K;
      T acc[kRowsPerThread][kColsPerThread];
#pragma unroll
      for (int r = 0; r < kRowsPerThread; ++r)
#pragma unroll
        for (int c = 0; c < kColsPerThread; ++c) acc[r][c] = T(0);

      for (int64_t k0 = k_lo; k0 < k_hi; k0 += kBK) {
        // Per-k decompositions, by two different warps so they run side by side.
        if (tid < kBK) {
          const int64_t k = k0 + tid;
          ka[tid] = a.kinfo(k, k < k_hi);
        } else if (tid >= 32 && tid < 32 + kBK) {
          const int64_t k = k0 + tid - 32;
          kb[tid - 32] = b.kinfo(k, k < k_hi);
        }
        __syncthreads();
#pragma unroll
        for (int u = 0; u < kRowsPerThread; ++u) {
          const int e = tid + u * kThreads;
          const int kk = LA::kKFast ? e % kBK : e / kBM;
          const int mm = LA::kKFast ? e / kBK : e % kBM;
          As[kk][mm] = a.load(ca[LA::kKFast ? u : 0], ka[kk]);
        }
#pragma unroll
        for (int u = 0; u < kColsPerThread; ++u) {
          const int e = tid + u * kThreads;
          const int kk = LB::kKFast ? e % kBK : e / kBN;
          const int nn = LB::kKFast ? e / kBK : e % kBN;
          Bs[kk][nn] = b.load(cb[LB::kKFast ? u : 0], kb[kk]);
        }
        __syncthreads();
#pragma unroll
        for (int kk = 0; kk < kBK; ++kk) {
          T av[kRowsPerThread], bv[kColsPerThread];
#pragma unroll
          for (int r = 0; r < kRowsPerThread; ++r) av[r] = As[kk][ty + kTY * r];
#pragma unroll
          for (int c = 0; c < kColsPerThread; ++c) bv[c] = Bs[kk][tx + 16 * c];
#pragma unroll
          for (int r = 0; r < kRowsPerThread; ++r)
#pragma unroll
            for (int c = 0; c < kColsPerThread; ++c) acc[r][c] += av[r] * bv[c];
        }
        __syncthreads();
      }
#pragma unroll
      for (int r = 0; r < kRowsPerThread; ++r)
#pragma unroll
        for (int c = 0; c < kColsPerThread; ++c) total[r][c] += acc[r][c];
    }

#pragma unroll
    for (int r = 0; r < kRowsPerThread; ++r) {
      const int64_t i = i0 + ty + kTY * r;
#pragma unroll
      for (int c = 0; c < kColsPerThread; ++c) {
        const int64_t j = j0 + tx + 16 * c;
        if (i < M && j < N) st.store(i, j, split, total[r][c]);
      }
    }
  }
}

// out[e] = ((0 + ws[0][e]) + ws[1][e]) + ... : the fused kernel's chunk order.
template <typename T>
__global__ void __launch_bounds__(256)
    splitk_reduce_kernel1(T* __restrict__ out, const T* __restrict__ ws, int64_t mn,
                          int64_t splits) {
  for (int64_t e = global_thread(); e < mn; e += grid_threads()) {
    T s = T(0);
    for (int64_t z = 0; z < splits; ++z) s += ws[z * mn + e];
    out[e] = s;
  }
}

// ---- launchers

// One launch; chunks_per_block = all chunks (fused) unless splits > 1.
template <typename T, class LA, class LB, class ST>
void launch(const LA& a, const LB& b, const ST& st, int64_t M, int64_t N, int64_t K,
            int64_t k_chunk, int64_t splits, int64_t chunks_per_block, cudaStream_t stream) {
  if (M <= 0 || N <= 0) return;
  const int64_t tiles = ceil_div<int64_t>(M, kBM) * ceil_div<int64_t>(N, kBN);
  const dim3 grid(grid_blocks(tiles, 1), 1, static_cast<unsigned int>(splits));
  gemm_kernel1<T, LA, LB, ST><<<grid, kThreads, 0, stream>>>(a, b, st, M, N, K, k_chunk,
                                                            chunks_per_block);
  CUDA_CHECK_LAUNCH();
}

// Single-chunk GEMM (forward-type products, where C has many tiles or a custom layout).
template <typename T, class LA, class LB, class ST>
void gemm(const LA& a, const LB& b, const ST& st, int64_t M, int64_t N, int64_t K,
          cudaStream_t stream) {
  const int64_t k_chunk = std::max<int64_t>(K, 1);
  launch<T>(a, b, st, M, N, K, k_chunk, 1, 1, stream);
}

// Chunk length from the shapes only (never from the device), so results are the same on
// every GPU: one chunk unless the reduction is long and C has few tiles to spread.
inline int64_t plan_k_chunk(int64_t M, int64_t N, int64_t K) {
  constexpr int64_t kMinChunk = 512, kTargetBlocks = 1024, kMaxSplits = 64;
  const int64_t tiles = ceil_div<int64_t>(M, kBM) * ceil_div<int64_t>(N, kBN);
  int64_t splits = 1;
  if (K >= 2 * kMinChunk) {
    splits = std::min({ceil_div<int64_t>(K, kMinChunk), ceil_div<int64_t>(kTargetBlocks, tiles),
                       kMaxSplits});
    splits = std::max<int64_t>(splits, 1);
  }
  const int64_t chunk = ceil_div<int64_t>(ceil_div<int64_t>(std::max<int64_t>(K, 1), splits), kBK) * kBK;
  return chunk;
}

// Frees a stream-ordered allocation on scope exit (also when a launch check throws).
struct AsyncBuffer {
  void* p = nullptr;
  cudaStream_t stream = nullptr;
  AsyncBuffer() = default;
  AsyncBuffer(const AsyncBuffer&) = delete;
  AsyncBuffer& operator=(const AsyncBuffer&) = delete;
  ~AsyncBuffer() {
    if (p != nullptr) (void)cudaFreeAsync(p, stream);
  }
};

// Whether stream-ordered allocation may be used on the current device.
inline bool async_alloc_supported() {
  int dev = 0, v = 0;
  if (cudaGetDevice(&dev) != cudaSuccess) return false;
  if (cudaDeviceGetAttribute(&v, cudaDevAttrMemoryPoolsSupported, dev) != cudaSuccess) {
    (void)cudaGetLastError();
    return false;
  }
  return v != 0;
}

// C (M x N, row-major, overwritten) = A * B for a long reduction (weight gradients): chunked
// as planned from the shapes; split-K over a cudaMallocAsync workspace (nchunks * M * N
// values, freed stream-ordered) when there is more than one chunk and the workspace is at
// most 256 MiB and can be had, else fused -- bitwise the same result either way.
template <typename T, class LA, class LB>
void gemm_rowmajor_long_k(T* c, const LA& a, const LB& b, int64_t M, int64_t N, int64_t K,
                          cudaStream_t stream) {
  if (M <= 0 || N <= 0 || c == nullptr) return;
  const int64_t k_chunk = plan_k_chunk(M, N, K);
  const int64_t nchunks = K > 0 ? ceil_div<int64_t>(K, k_chunk) : 0;
  constexpr int64_t kMaxWorkspace = int64_t(256) << 20;
  const int64_t mn = M * N;
  if (nchunks > 1 && mn <= kMaxWorkspace / (nchunks * static_cast<int64_t>(sizeof(T))) &&
      async_alloc_supported()) {
    AsyncBuffer ws;
    ws.stream = stream;
    const size_t bytes = static_cast<size_t>(nchunks * mn) * sizeof(T);
    if (cudaMallocAsync(&ws.p, bytes, stream) == cudaSuccess) {
      T* w = static_cast<T*>(ws.p);
      launch<T>(a, b, RowMajorStore<T>{w, N, mn, nullptr}, M, N, K, k_chunk, nchunks, 1, stream);
      splitk_reduce_kernel1<T><<<grid_blocks(mn, 256), 256, 0, stream>>>(c, w, mn, nchunks);
      CUDA_CHECK_LAUNCH();
      return;
    }
    ws.p = nullptr;
    (void)cudaGetLastError();  // the failed allocation; fall back to the fused pass
  }
  launch<T>(a, b, RowMajorStore<T>{c, N, 0, nullptr}, M, N, K, k_chunk, 1,
            std::max<int64_t>(nchunks, 1), stream);
}

}  // namespace gemm
}  // namespace lf
