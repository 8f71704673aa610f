// Convolution + relu + 2x2 / stride-2 max pooling, fused (the documents' Conv2D(relu) ->
// MaxPooling2D(2) pairs), NCHW:
//   x (N, C, H, W), w (K, C, R, S), b (K,) -> conv (N, K, OH, OW) -> relu -> pool ->
//   y, indices (N, K, OH/2, OW/2); indices are offsets h*OW + w into the conv output plane,
//   as max_pool2d's.
// The same kernels run as for the three ops in sequence, so the results are theirs (dW and
// db are summed chunk by chunk, a fixed order). What changes is the memory traffic: the
// batch runs in chunks whose full-size convolution output or gradient (per-thread scratch,
// scratch.h) stays in cache, so the full-size tensors never go to memory:
//   forward : conv + relu of a chunk into scratch, then pooled from there;
//   backward: the pooled gradient is scattered to its argmax (the relu mask is y > 0 there:
//             the pooled value is the relu output at the argmax) into a zeroed scratch
//             chunk, whose conv backward adds into dW and db.
// An odd conv output height or width leaves a last row or column that no pooling window
// reads: it is never computed (the conv kernels take the output size as given), and its
// gradient is zero, so the backward skips it too (for the documents' 11x11 conv 2 output,
// 17% of that layer's work). Indices still count in the full OH x OW plane.
#include <algorithm>
#include <cstring>

#include "cpu/gemm.h"
#include "cpu/simd.h"
#include "ops.h"

namespace lf {
namespace {

// Images per chunk: a chunk's full-size conv output about 512 KB (half an L2), and at least
// one image per thread so the kernels inside still have the batch to split.
int64_t chunk_images(const Conv2dShape& s, size_t elem) {
  const int64_t per_image = std::max<int64_t>(1, s.k * s.ohw() * static_cast<int64_t>(elem));
  const int64_t fit = (int64_t(512) << 10) / per_image;
  return std::min(s.n, std::max<int64_t>({fit, int64_t(num_threads()), int64_t(1)}));
}

// The conv shape restricted to the rows and columns the pooling windows read.
Conv2dShape even_part(const Conv2dShape& s) {
  Conv2dShape e = s;
  e.oh = s.oh / 2 * 2;
  e.ow = s.ow / 2 * 2;
  return e;
}

Pool2dShape pool_of(const Conv2dShape& e, int64_t n) {
  return Pool2dShape{n, e.k, e.oh, e.ow, e.oh / 2, e.ow / 2, 2, 2, 2, 2, 0, 0};
}

}  // namespace

template <typename T>
void conv2d_relu_pool_forward_cpu(T* y, int64_t* idx, const T* x, const T* w, const T* b,
                                  const Conv2dShape& s) {
  if (s.n == 0 || s.k == 0 || s.oh < 2 || s.ow < 2) return;
  const Conv2dShape e = even_part(s);
  const int64_t chunk = chunk_images(e, sizeof(T));
  const int64_t in_image = s.c * s.hw(), out_image = s.k * (s.oh / 2) * (s.ow / 2);
  AlignedBuffer<T> full;
  T* conv = full.reserve(chunk * e.k * e.ohw());
  for (int64_t n0 = 0; n0 < s.n; n0 += chunk) {
    Conv2dShape sc = e;
    sc.n = std::min(chunk, s.n - n0);
    conv2d_forward_cpu<T>(conv, x + n0 * in_image, w, b, sc, true);
    int64_t* ic = idx + n0 * out_image;
    max_pool2d_forward_cpu<T>(y + n0 * out_image, ic, conv, pool_of(e, sc.n));
    if (e.ow != s.ow) {  // offsets into the e.ow-wide planes -> into the OW-wide ones
      const int64_t m = sc.n * out_image;
      for (int64_t o = 0; o < m; ++o) ic[o] = ic[o] / e.ow * s.ow + ic[o] % e.ow;
    }
  }
}

template <typename T>
void conv2d_relu_pool_backward_cpu(T* dx, T* dw, T* db, const T* dy, const int64_t* idx,
                                   const T* y, const T* x, const T* w, const Conv2dShape& s) {
  const int64_t KCRS = s.k * s.crs();
  const Conv2dShape e = even_part(s);
  const int64_t PHW = (s.oh / 2) * (s.ow / 2), OHW = s.ohw(), EHW = e.ohw();
  if (s.n == 0 || s.k == 0 || PHW == 0) {  // no gradient reaches the convolution
    if (dx) std::fill(dx, dx + s.n * s.c * s.hw(), T(0));
    if (dw) std::fill(dw, dw + KCRS, T(0));
    if (db) std::fill(db, db + s.k, T(0));
    return;
  }
  const int64_t chunk = chunk_images(e, sizeof(T));
  const int64_t in_image = s.c * s.hw(), out_image = s.k * PHW;
  AlignedBuffer<T> full, part;
  T* dfull = full.reserve(chunk * s.k * EHW);
  T* dw_c = dw ? part.reserve(KCRS + s.k) : nullptr;  // this chunk's dW, then db
  T* db_c = db ? part.reserve(KCRS + s.k) + KCRS : nullptr;
  for (int64_t n0 = 0; n0 < s.n; n0 += chunk) {
    Conv2dShape sc = e;
    sc.n = std::min(chunk, s.n - n0);
    const int64_t planes = sc.n * s.k;
    const T* dyc = dy + n0 * out_image;
    const int64_t* ic = idx + n0 * out_image;
    const T* yc = y + n0 * out_image;
    const int nt = threads_for(planes * EHW, planes);
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int64_t q = 0; q < planes; ++q) {
      T* d = dfull + q * EHW;
      std::fill(d, d + EHW, T(0));
      for (int64_t o = q * PHW; o < (q + 1) * PHW; ++o) {
        const int64_t i = ic[o];
        const int64_t r = i / s.ow, col = i - r * s.ow;
        // Indices outside the pooled region (only from a bad direct call) are skipped.
        if (yc[o] > T(0) && i >= 0 && i < OHW && r < e.oh && col < e.ow) d[r * e.ow + col] += dyc[o];
      }
    }
    const bool first = n0 == 0;
    conv2d_backward_cpu<T>(dx ? dx + n0 * in_image : nullptr, first ? dw : dw_c,
                           first ? db : db_c, dfull, x + n0 * in_image, w, sc, nullptr);
    if (!first) {
      if (dw)
        for (int64_t e = 0; e < KCRS; ++e) dw[e] += dw_c[e];
      if (db)
        for (int64_t k = 0; k < s.k; ++k) db[k] += db_c[k];
    }
  }
}

#define LF_INSTANTIATE(T)                                                                    \
  template void conv2d_relu_pool_forward_cpu<T>(T*, int64_t*, const T*, const T*, const T*,  \
                                                const Conv2dShape&);                         \
  template void conv2d_relu_pool_backward_cpu<T>(T*, T*, T*, const T*, const int64_t*,       \
                                                 const T*, const T*, const T*,               \
                                                 const Conv2dShape&);
LF_INSTANTIATE(float)
LF_INSTANTIATE(double)
#undef LF_INSTANTIATE

}  // namespace lf
