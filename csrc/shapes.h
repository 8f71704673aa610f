// Plain-old-data shape structs passed from the bindings to every launcher (CPU and CUDA).
// All sizes are int64_t so index math stays 64-bit end to end. Output sizes are given,
// not derived, so asymmetric padding (padding="same" with an even kernel) needs no extra
// field: only the top/left padding moves the window; the bottom/right padding only makes
// the output larger.
#pragma once
#include <cstdint>

#if defined(__CUDACC__)
#define LF_HD __host__ __device__
#else
#define LF_HD
#endif

namespace lf {

// x (n, c, h, w), w (k, c, r, s), y (n, k, oh, ow); cross-correlation:
// y[n,k,p,q] = b[k] + sum_{c,i,j} x[n, c, p*sh - ph + i*dh, q*sw - pw + j*dw] * w[k,c,i,j]
struct Conv2dShape {
  int64_t n, c, h, w;        // input
  int64_t k, r, s;           // filters, kernel height, kernel width
  int64_t oh, ow;            // output
  int64_t sh, sw;            // stride
  int64_t ph, pw;            // top / left padding
  int64_t dh, dw;            // dilation
  LF_HD int64_t crs() const { return c * r * s; }
  LF_HD int64_t ohw() const { return oh * ow; }
  LF_HD int64_t hw() const { return h * w; }
};

// x (n, c, h, w), y (n, c, oh, ow); window (kh, kw) at (p*sh - ph, q*sw - pw).
struct Pool2dShape {
  int64_t n, c, h, w;
  int64_t oh, ow;
  int64_t kh, kw;
  int64_t sh, sw;
  int64_t ph, pw;
  LF_HD int64_t planes() const { return n * c; }
  LF_HD int64_t hw() const { return h * w; }
  LF_HD int64_t ohw() const { return oh * ow; }
};

// x (m, in), w (out, in), y (m, out).
struct LinearShape {
  int64_t m, in, out;
};

// softmax over the middle axis of a (outer, dim, inner) view of a C-contiguous array.
struct SoftmaxShape {
  int64_t outer, dim, inner;
};

// ---- recurrent ----
// Elman RNN over a whole sequence: x (n, t, in), w_xh (hidden, in), w_hh (hidden, hidden),
// b (hidden,), h0 (n, hidden), hs (n, t, hidden);
// hs[:, s] = act(hs[:, s-1] W_hh^T + x[:, s] W_xh^T + b), hs[:, -1] = h0 (zeros if absent).
enum class RnnActivation : int { Tanh = 0, Sigmoid = 1, Relu = 2, Linear = 3 };

struct RnnShape {
  int64_t n, t, in, hidden;
};

}  // namespace lf
