// Drivers of the direct convolution (see conv2d_direct.h): padding copies, weight packing,
// threading and the order of the work, on the baseline ISA.
//   packed weights: (KB, CI, R, S, L) with L = 16*NV output channels per block, zero-filled
//                   past the last channel, so every microkernel load is a full aligned vector;
//   forward/dx work items: (image, channel block, band of output rows), OpenMP over them
//       (dynamic when a band is a whole plane); a band's tiles go to an in-cache scratch,
//       then to y in one transposed store;
//   dW: images split statically over threads and taken in L2-sized chunks, per-thread
//       partials (KB, C*R*S, L) added in thread order, so dW is deterministic for a given
//       thread count (as in conv2d.cpp).
#include "cpu/conv2d_direct.h"

#include <omp.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "cpu/gemm.h"
#include "cpu/simd.h"

namespace lf {
namespace {

int nv_for(int64_t channels) {
  return static_cast<int>(std::min<int64_t>(kDirectMaxNV, (channels + 15) / 16));
}

bool direct_common(const Conv2dShape& s) {
  return simd_path() == SimdPath::Avx512 && conv_algo() == ConvAlgo::Auto && s.sh == 1 && s.sw == 1 && s.dh == 1 &&
         s.dw == 1 && s.n > 0 && s.c > 0 && s.k > 0 && s.oh > 0 && s.ow > 0 && s.r > 0 &&
         s.s > 0;
}

// planes (H, W) placed at row/column offset (pt, pl) in zero planes (Hp, Wp), cropped where
// they stick out (pt, pl may be negative); with a mask (same shape as x), x passes only where
// mask > 0. Returns x itself when that is the identity.
const float* pad_planes(AlignedBuffer<float>& buf, const float* x, int64_t planes, int64_t H,
                        int64_t W, int64_t Hp, int64_t Wp, int64_t pt, int64_t pl,
                        const float* mask = nullptr) {
  if (!mask && pt == 0 && pl == 0 && H == Hp && W == Wp) return x;
  float* d = buf.reserve(planes * Hp * Wp);
  const int64_t j0 = std::max<int64_t>(0, pl), j1 = std::min<int64_t>(Wp, W + pl);
  const int nt = threads_for(planes * Hp * Wp, planes);
#pragma omp parallel for num_threads(nt) schedule(static)
  for (int64_t q = 0; q < planes; ++q) {
    float* dp = d + q * Hp * Wp;
    const float* xp = x + q * H * W;
    std::fill(dp, dp + Hp * Wp, 0.f);
    for (int64_t i = 0; i < Hp; ++i) {
      const int64_t si = i - pt;
      if (si < 0 || si >= H || j1 <= j0) continue;
      if (mask) {
        const float* src = xp + si * W + (j0 - pl);
        const float* mk = mask + q * H * W + si * W + (j0 - pl);
        float* dst = dp + i * Wp + j0;
        for (int64_t j = 0; j < j1 - j0; ++j) {
          const float v = src[j];  // unconditional load: a select, not a branch
          dst[j] = mk[j] > 0.f ? v : 0.f;
        }
      } else {
        std::memcpy(dp + i * Wp + j0, xp + si * W + (j0 - pl), sizeof(float) * (j1 - j0));
      }
    }
  }
  return d;
}

// Share `part` of `parts` of the cache lines that [p, p + bytes) touches, prefetched into
// L2, for reading (RW = 0) or writing (RW = 1).
template <int RW = 0>
inline void prefetch_share(const void* p, int64_t bytes, int64_t part = 0, int64_t parts = 1) {
  if (bytes <= 0) return;
  const uintptr_t a = reinterpret_cast<uintptr_t>(p), first = a & ~uintptr_t(63);
  const int64_t lines = static_cast<int64_t>((a + static_cast<uintptr_t>(bytes) - 1 - first) / 64) + 1;
  const char* base = reinterpret_cast<const char*>(first);
  const int64_t l1 = lines * (part + 1) / parts;
  for (int64_t l = lines * part / parts; l < l1; ++l) __builtin_prefetch(base + l * 64, RW, 2);
}

// (KB, CI, R, S, L) from value(out_channel, in_channel, r, s).
template <class Value>
float* pack_weights(AlignedBuffer<float>& buf, int64_t KO, int64_t CI, int64_t R, int64_t S,
                    int nv, Value&& value) {
  const int64_t L = 16 * nv, KB = (KO + L - 1) / L, block = CI * R * S * L;
  float* p = buf.reserve(KB * block);
  for (int64_t kb = 0; kb < KB; ++kb)
    for (int64_t ci = 0; ci < CI; ++ci)
      for (int64_t r = 0; r < R; ++r)
        for (int64_t s = 0; s < S; ++s) {
          float* dst = p + kb * block + ((ci * R + r) * S + s) * L;
          for (int64_t l = 0; l < L; ++l) {
            const int64_t ko = kb * L + l;
            dst[l] = ko < KO ? value(ko, ci, r, s) : 0.f;
          }
        }
  return p;
}

// y (N, KO, OH, OW) [+ bias] = correlation of xin (N, CI, Hp, Wp) with the packed weights,
// Hp >= OH + R - 1, Wp >= OW + S - 1. Only rows [z0, z1) of xin can be non-zero (the rest is
// padding): kernel rows that would read only those are skipped, which for the dx correlation
// (dy padded by R - 1 on both sides) saves about a sixth of the work.
//
// full: xin is instead dy itself, unpadded ((N, CI, z1 - z0, Wp - 2 (S - 1)), its row t being
// row z0 + t of the padded planes), and each output row is one tile of the full-correlation
// kernel (S = 3, OW <= the register tile), which skips the zero columns as well.
//
// Work items are (image, channel block, band of output rows). The tiles of a band go to a
// per-thread (pixel, channel) scratch that stays in cache, and the band is then stored
// transposed in one pass: it is contiguous in every channel plane, so y is written in whole
// runs, and its lines were prefetched into L2 when the item began. On conv 2 at batch 256
// (6.04 ms before), the transpose in registers saved 10% and the bands and prefetch 3% more.
// An item whose successor starts a new image also prefetches that image's input planes into
// L2 (conv 2 forward at batch 256, static schedule: 6.04 -> 5.74 and 6.02 -> 5.78 ms; dx + dW
// 12.2 -> 11.8 and 11.7 -> 11.2 ms; in-process A/B). Where each item is a whole plane (one
// band), items are handed out one at a time (dynamic): each writes its own output, so the
// result does not depend on which thread takes it, and a thread slowed by the shared machine
// takes fewer (conv 2 forward at batch 256 with the prefetch: 5.74 -> 5.61 and 5.78 -> 5.65
// ms, and lower in 4 of 5 earlier interleaved runs). Bands of one plane keep the static
// schedule: neighbouring bands share a cache line at their edge. (The fused conv + pool
// forward's items are pooled rows of one plane, so they keep it too: dynamic there measured
// 4.8 -> 5.4-9.1 ms.)
void direct_corr(float* y, const float* xin, int64_t N, int64_t CI, int64_t Hp, int64_t Wp,
                 int64_t KO, int64_t R, int64_t S, int64_t OH, int64_t OW, const float* wpk,
                 int nv, const float* bias, int64_t z0, int64_t z1, bool relu, bool full = false) {
  const int64_t L = 16 * nv, KB = (KO + L - 1) / L, block = CI * R * S * L;
  // Row tiles of equal width (11 -> 6 + 5, 13 -> 7 + 6), each at most the register tile.
  const int64_t maxnp = full ? OW : kDirectMaxTile[nv - 1];
  const int64_t tiles = (OW + maxnp - 1) / maxnp, np = (OW + tiles - 1) / tiles;
  // Plane and row strides of xin, and the padded row its first row stands for.
  const int64_t xrs = full ? Wp - 2 * (S - 1) : Wp, xps = full ? (z1 - z0) * xrs : Hp * Wp;
  const int64_t shift = full ? z0 : 0;
  const int nt = threads_for(2 * N * KO * OH * OW * CI * R * S, N * KB * OH);
  // Bands of at most 64 KiB of scratch, and with threads enough of them for 4 items each.
  constexpr int64_t kScratchFloats = 16384;
  int64_t rows = std::max<int64_t>(1, std::min(OH, kScratchFloats / (OW * L)));
  while (nt > 1 && rows > 1 && N * KB * ((OH + rows - 1) / rows) < 4 * nt) rows = (rows + 1) / 2;
  const int64_t bands = (OH + rows - 1) / rows, items = N * KB * bands;
  AlignedBuffer<float> sbuf;
  float* scratch = sbuf.reserve(nt * rows * OW * L);
#pragma omp parallel num_threads(nt)
  {
    float* band = scratch + omp_get_thread_num() * rows * OW * L;
    const auto item = [&](int64_t it) {
      const int64_t n = it / (KB * bands), kb = (it / bands) % KB, oh0 = (it % bands) * rows;
      const int64_t oh1 = std::min(OH, oh0 + rows);
      const int64_t k0 = kb * L, kn = std::min(L, KO - k0);
      float* yb = y + (n * KO + k0) * OH * OW + oh0 * OW;
      // Ask for the band's lines of y in L2 now; they arrive while the tiles compute.
      const int64_t run = (oh1 - oh0) * OW * static_cast<int64_t>(sizeof(float));
      for (int64_t l = 0; l < kn; ++l) prefetch_share<1>(yb + l * OH * OW, run);
      if (it + 1 < items && (it + 1) / (KB * bands) != n)  // the next image's planes, to L2
        prefetch_share(xin + (n + 1) * CI * xps, CI * xps * static_cast<int64_t>(sizeof(float)));
      for (int64_t oh = oh0; oh < oh1; ++oh) {
        const int64_t r0 = std::max<int64_t>(0, z0 - oh), r1 = std::min(R, z1 - oh);
        const float* xr = xin + n * CI * xps + (oh + r0 - shift) * xrs;
        for (int64_t ow0 = 0; ow0 < OW; ow0 += np) {
          const int64_t w = std::min(np, OW - ow0);
          float* out = band + ((oh - oh0) * OW + ow0) * L;
          if (r1 > r0) {
            (full ? direct_fullcorr3_ukr_avx512 : direct_fwd_ukr_avx512)(nv, static_cast<int>(w))(
                xr + ow0, xps, xrs, CI, r1 - r0, S, wpk + kb * block + r0 * S * L, R * S * L, out);
          } else {
            std::fill(out, out + w * L, 0.f);
          }
        }
      }
      direct_store_tile_avx512(band, nv, (oh1 - oh0) * OW, kn, bias ? bias + k0 : nullptr, relu, yb,
                               OH * OW);
    };
    if (bands == 1) {  // dynamic only where no two items share a cache line (above)
#pragma omp for schedule(dynamic, 1)
      for (int64_t it = 0; it < items; ++it) item(it);
    } else {
#pragma omp for schedule(static)
      for (int64_t it = 0; it < items; ++it) item(it);
    }
  }
}

}  // namespace

// Below 16 output channels most vector lanes would be padding; below 32 taps per output the
// transposed stores cost more than the FMAs (conv 1 -> 32 stays on im2col + GEMM).
bool conv2d_direct_forward_applies(const Conv2dShape& s) {
  return direct_common(s) && s.k >= 16 && s.c * s.r * s.s >= 32;
}

bool conv2d_direct_dx_applies(const Conv2dShape& s) {
  return direct_common(s) && s.c >= 16 && s.k * s.r * s.s >= 32 && s.h > 0 && s.w > 0;
}

bool conv2d_direct_dw_applies(const Conv2dShape& s) { return direct_common(s) && s.k >= 16; }

void conv2d_direct_forward(float* y, const float* x, const float* w, const float* b,
                           const Conv2dShape& s, bool relu) {
  const int64_t Hp = s.oh + s.r - 1, Wp = s.ow + s.s - 1;
  AlignedBuffer<float> xbuf, wbuf;
  const float* xin = pad_planes(xbuf, x, s.n * s.c, s.h, s.w, Hp, Wp, s.ph, s.pw);
  const int nv = nv_for(s.k);
  const float* wpk = pack_weights(wbuf, s.k, s.c, s.r, s.s, nv, [&](int64_t k, int64_t c, int64_t r, int64_t q) {
    return w[((k * s.c + c) * s.r + r) * s.s + q];
  });
  direct_corr(y, xin, s.n, s.c, Hp, Wp, s.k, s.r, s.s, s.oh, s.ow, wpk, nv, b, s.ph, s.ph + s.h,
              relu);
}

// One input channel and 3x3 taps (conv 1 -> 32): 9 multiply-adds per output, too few for the
// (pixel, channel) tiles' transposed stores or for im2col's 9x copy of the input to pay off.
bool conv2d_c1_forward_applies(const Conv2dShape& s) {
  return direct_common(s) && s.c == 1 && s.r == 3 && s.s == 3;
}

void conv2d_c1_forward(float* y, const float* x, const float* w, const float* b, const Conv2dShape& s,
                       bool relu) {
  const int64_t Hp = s.oh + 2, Wp = s.ow + 2, P = s.ohw();
  AlignedBuffer<float> xbuf;
  const float* xin = pad_planes(xbuf, x, s.n, s.h, s.w, Hp, Wp, s.ph, s.pw);
  // Items of whole images where there are enough of them for the threads, else bands of rows.
  const int nt0 = threads_for(2 * s.n * s.k * P * 9, s.n * s.oh);
  const int64_t bands = std::min<int64_t>(s.oh, std::max<int64_t>(1, (2 * nt0 + s.n - 1) / s.n));
  const int64_t rows = (s.oh + bands - 1) / bands, items = s.n * bands;
  const int nt = static_cast<int>(std::min<int64_t>(nt0, items));
#pragma omp parallel for num_threads(nt) schedule(static)
  for (int64_t it = 0; it < items; ++it) {
    const int64_t n = it / bands, i0 = (it % bands) * rows, i1 = std::min(s.oh, i0 + rows);
    if (i1 > i0)
      conv_c1_3x3_rows_avx512(y + n * s.k * P + i0 * s.ow, P, xin + n * Hp * Wp + i0 * Wp, Wp, i1 - i0, s.ow, w, b,
                              s.k, relu);
  }
}

void conv2d_direct_dx(float* dx, const float* dy, const float* w, const Conv2dShape& s,
                      const float* relu_y) {
  // dx[c, i, j] = sum_{k, r, q} dy[k, i + ph - r, j + pw - q] w[k, c, r, q]: a correlation of
  // dy, shifted by (R-1-ph, S-1-pw) into zero planes, with the rotated, transposed kernel.
  const int64_t Hp = s.h + s.r - 1, Wp = s.w + s.s - 1;
  const int nv = nv_for(s.c);
  // Unpadded 3-wide kernels whose dx rows fit one tile read dy as it is (masked by relu_y in
  // a plain copy if need be); the rest reads a zero-bordered copy.
  const bool full = s.s == 3 && s.pw == 0 && s.w >= 3 && s.w <= kDirectMaxTile[nv - 1] && s.ow == s.w - 2;
  AlignedBuffer<float> dbuf, wbuf;
  const float* din = full ? pad_planes(dbuf, dy, s.n * s.k, s.oh, s.ow, s.oh, s.ow, 0, 0, relu_y)
                          : pad_planes(dbuf, dy, s.n * s.k, s.oh, s.ow, Hp, Wp, s.r - 1 - s.ph,
                                       s.s - 1 - s.pw, relu_y);
  const float* wpk = pack_weights(wbuf, s.c, s.k, s.r, s.s, nv, [&](int64_t c, int64_t k, int64_t r, int64_t q) {
    return w[((k * s.c + c) * s.r + (s.r - 1 - r)) * s.s + (s.s - 1 - q)];
  });
  direct_corr(dx, din, s.n, s.k, Hp, Wp, s.c, s.r, s.s, s.h, s.w, wpk, nv, nullptr,
              s.r - 1 - s.ph, s.r - 1 - s.ph + s.oh, false, full);
}

void conv2d_direct_dw(float* dw, float* db, const float* dy, const float* x, const Conv2dShape& s,
                      const float* relu_y) {
  const int64_t N = s.n, K = s.k, P = s.ohw(), T = s.crs();
  const int64_t Hp = s.oh + s.r - 1, Wp = s.ow + s.s - 1, plane = Hp * Wp;
  AlignedBuffer<float> xbuf, dbuf, part;
  const float* xin = pad_planes(xbuf, x, N * s.c, s.h, s.w, Hp, Wp, s.ph, s.pw);
  const int nv = nv_for(K);
  const int64_t L = 16 * nv, KB = (K + L - 1) / L, Kp = KB * L;

  std::vector<int64_t> off(static_cast<size_t>(T));
  for (int64_t c = 0; c < s.c; ++c)
    for (int64_t r = 0; r < s.r; ++r)
      for (int64_t q = 0; q < s.s; ++q) off[static_cast<size_t>((c * s.r + r) * s.s + q)] = c * plane + r * Wp + q;

  // Each thread takes a static share of the images, in chunks of about 256 KiB of (x, dy)
  // that stay in L2 while every tile of taps runs over them: dy is transposed per chunk into
  // the thread's scratch, and the tiles accumulate into the thread's partial dW (KB, T, L).
  // (One pass of each tile over all the thread's images had read them from memory 48 times
  // on conv 2 at batch 256.) The next chunk is prefetched into L2 meanwhile, a share per
  // tile: conv 2's dW at batch 256 5.44 -> 5.22 and 5.74 -> 5.44 ms (in-process A/B).
  const int64_t per_image = (P * Kp + s.c * plane) * static_cast<int64_t>(sizeof(float));
  const int64_t chunk = std::max<int64_t>(1, (int64_t(256) << 10) / per_image);
  const int64_t maxnt = kDirectMaxTile[nv - 1];
  const int64_t tiles = (T + maxnt - 1) / maxnt, tsz = (T + tiles - 1) / tiles;
  const int nt = threads_for(2 * N * K * P * T, N);
  const int64_t per = KB * T * L;  // one thread's partial
  AlignedBuffer<float> dbn;
  if (db) dbn.reserve(N * K);
  const int64_t dyt_floats = std::min(chunk, N) * P * Kp;  // one thread's chunk of dy
  float* parts = part.reserve(nt * per);
  float* dyts = dbuf.reserve(nt * dyt_floats);
#pragma omp parallel num_threads(nt)
  {
    const int tid = omp_get_thread_num(), team = omp_get_num_threads();
    const int64_t n0 = N * tid / team, n1 = N * (tid + 1) / team;
    float* mine = parts + tid * per;
    float* dyt = dyts + tid * dyt_floats;
    if (tid == 0 && team < nt) std::fill(parts + team * per, parts + nt * per, 0.f);  // never ran
    for (int64_t c0 = n0; c0 < n1; c0 += chunk) {
      const int64_t cn = std::min(chunk, n1 - c0);
      // dy as (P, Kp) per image: the channels of one pixel become one vector load. The relu
      // mask and the image's bias-gradient sums ride along with this copy.
      for (int64_t n = c0; n < c0 + cn; ++n)
        direct_transpose_dy_avx512(dy + n * K * P, relu_y ? relu_y + n * K * P : nullptr, K, P, Kp,
                                   dyt + (n - c0) * P * Kp, db ? dbn.data() + n * K : nullptr);
      // The next chunk's x and dy, a share per tile, into L2 while this chunk's tiles run.
      const int64_t nn = std::min(chunk, n1 - c0 - cn);
      const float* px = xin + (c0 + cn) * s.c * plane;
      const float* pd = dy + (c0 + cn) * K * P;
      const int64_t xbytes = nn * s.c * plane * int64_t(sizeof(float));
      const int64_t dbytes = nn * K * P * int64_t(sizeof(float));
      const int64_t shares = KB * tiles;
      int64_t share = 0;
      for (int64_t kb = 0; kb < KB; ++kb) {
        for (int64_t t0 = 0; t0 < T; t0 += tsz, ++share) {
          prefetch_share(px, xbytes, share, shares);
          prefetch_share(pd, dbytes, share, shares);
          const int64_t tw = std::min(tsz, T - t0);
          direct_dw_ukr_avx512(nv, static_cast<int>(tw))(
              xin + c0 * s.c * plane, s.c * plane, Wp, off.data() + t0, dyt + kb * L, Kp, P * Kp,
              cn, s.oh, s.ow, mine + (kb * T + t0) * L, c0 > n0);
        }
      }
    }
  }
  if (db) {  // the images' sums in order: deterministic for any thread count
    for (int64_t k = 0; k < K; ++k) {
      float acc = 0.f;
      for (int64_t n = 0; n < N; ++n) acc += dbn.data()[n * K + k];
      db[k] = acc;
    }
  }
  const int rt = threads_for(nt * K * T, K);
#pragma omp parallel for num_threads(rt) schedule(static)
  for (int64_t k = 0; k < K; ++k) {
    const int64_t kb = k / L, l = k % L;
    for (int64_t t = 0; t < T; ++t) {
      const int64_t e = (kb * T + t) * L + l;
      float acc = parts[e];
      for (int i = 1; i < nt; ++i) acc += parts[i * per + e];
      dw[k * T + t] = acc;
    }
  }
}

}  // namespace lf
