// AVX-512 kernels of the 2x2 / stride 2 / unpadded float32 pool, one NCHW plane per call
// (pool2d_avx512.cpp), used by pool2d.cpp on the AVX-512 path. Planes are h x w with
// oh = h / 2, ow = w / 2 outputs (floor); in-plane offsets are int32, so the caller
// guarantees h * w < 2^31. Results (values, indices, NaN and tie rules, sum order) are those
// of pool2d.cpp's scalar loops, bit for bit (but see the max backward's zeros).
#pragma once
#include <cstdint>

namespace lf {

// Each kernel runs `planes` consecutive planes (one thread's share).

// y (oh, ow) and optionally indices (oh, ow) (in-plane offsets) of each plane x (h, w).
void max2x2_planes_avx512(float* y, int64_t* indices, const float* x, int64_t planes, int64_t h,
                          int64_t w, int64_t oh, int64_t ow);
// y = ((a + b) + c) + d times 0.25.
void avg2x2_planes_avx512(float* y, const float* x, int64_t planes, int64_t h, int64_t w, int64_t oh,
                          int64_t ow);
// dx (h, w), all of it written: dy / 4 on each window, 0 where no window reaches.
void avg2x2_bwd_planes_avx512(float* dx, const float* dy, int64_t planes, int64_t h, int64_t w,
                              int64_t oh, int64_t ow);
// dx (h, w), all of it written: dy at each window's recorded index, 0 elsewhere. A plane
// whose indices are not all inside their own windows (indices from another pool) is
// scattered the general way instead (indices outside the plane skipped and counted), as
// pool2d.cpp does; returns that count. A zero gradient may come out as -0 where the scatter
// gives +0.
int64_t max2x2_bwd_planes_avx512(float* dx, const float* dy, const int64_t* indices, int64_t planes,
                                 int64_t h, int64_t w, int64_t oh, int64_t ow);

}  // namespace lf
