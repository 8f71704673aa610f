// pybind11 bindings of the CPU kernels: module layerforge._C.
// Implements the kernel interface documented in src/layerforge/_backend.py: C-contiguous
// NumPy arrays of one float dtype (float32 / float64; labels and indices int64), outputs
// first (overwritten), then inputs, then int parameters; a gradient output given as None is
// not computed. ops.py validates first, but every call is re-checked here (type -> TypeError,
// shape / layout / range -> ValueError) so no direct call can crash the process. Shape
// structs are built from the array shapes; output sizes come from y / dy (pool backward:
// H, W from dx). The GIL is released around every kernel call.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <omp.h>

#include <cstdint>
#include <string>
#include <vector>

#include "check.h"
#include "cpu/gemm.h"
#include "cpu/peak.h"
#include "cpu/simd.h"
#include "ops.h"

namespace py = pybind11;

namespace {

enum class DT { F32, F64, I64 };

const char* dt_name(DT d) { return d == DT::F32 ? "float32" : d == DT::F64 ? "float64" : "int64"; }

using lf::shape_str;

std::string shape_str(const py::array& a) {
  return shape_str(std::vector<int64_t>(a.shape(), a.shape() + a.ndim()));
}

// Read from the array's descriptor in place: dtype().equal(dtype::of<T>()) made two Python
// objects and an API call per argument, a fifth of a small elementwise call. A dtype matches
// when its kind, item size and byte order do ('=' / '|', or the explicit native order).
bool has_dtype(const py::array& a, DT d) {
  const auto* descr = py::detail::array_descriptor_proxy(py::detail::array_proxy(a.ptr())->descr);
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
  if (descr->byteorder == '<') return false;
#else
  if (descr->byteorder == '>') return false;
#endif
  const py::ssize_t size = a.itemsize();
  switch (d) {
    case DT::F32: return descr->kind == 'f' && size == 4;
    case DT::F64: return descr->kind == 'f' && size == 8;
    default: return descr->kind == 'i' && size == 8;
  }
}

// One kernel call's argument checks; messages name the function and the argument.
class Call {
 public:
  explicit Call(const char* fn) : fn_(fn) {}

  py::array array(const py::object& o, const char* name) const {
    if (!py::isinstance<py::array>(o)) {
      std::string got = py::str(py::type::of(o).attr("__name__"));
      throw py::type_error(prefix(name) + "expected a numpy.ndarray, got " + got);
    }
    return py::reinterpret_borrow<py::array>(o);
  }

  // The float dtype of the call is taken from its first float input.
  DT float_dtype(const py::array& a, const char* name) const {
    if (has_dtype(a, DT::F32)) return DT::F32;
    if (has_dtype(a, DT::F64)) return DT::F64;
    throw py::type_error(prefix(name) + "expected float32 or float64, got " +
                         std::string(py::str(a.dtype())));
  }

  // ndim < 0: any rank.
  py::array check(const py::object& o, const char* name, DT d, int ndim, bool output) const {
    py::array a = array(o, name);
    if (!has_dtype(a, d))
      throw py::type_error(prefix(name) + "expected dtype " + dt_name(d) + ", got " +
                           std::string(py::str(a.dtype())));
    LF_CHECK(ndim < 0 || a.ndim() == ndim,
             prefix(name) << "expected a " << ndim << "-D array, got shape " << shape_str(a));
    LF_CHECK(a.flags() & py::array::c_style, prefix(name) << "expected a C-contiguous array");
    LF_CHECK(!output || a.writeable(), prefix(name) << "output array is not writeable");
    return a;
  }

  // None -> a null handle, false in `if (a)` (the gradient is not wanted).
  py::array optional(const py::object& o, const char* name, DT d, int ndim, bool output) const {
    if (o.is_none()) return py::reinterpret_steal<py::array>(py::handle());  // null handle
    return check(o, name, d, ndim, output);
  }

  void shape(const py::array& a, const char* name, const std::vector<int64_t>& want) const {
    bool ok = a.ndim() == static_cast<py::ssize_t>(want.size());
    for (size_t i = 0; ok && i < want.size(); ++i) ok = a.shape(i) == want[i];
    LF_CHECK(ok, prefix(name) << "expected shape " << shape_str(want) << ", got " << shape_str(a));
  }

  void same_shape(const py::array& a, const char* name, const py::array& ref) const {
    std::vector<int64_t> want(ref.shape(), ref.shape() + ref.ndim());
    shape(a, name, want);
  }

  void at_least(int64_t v, int64_t lo, const char* name) const {
    LF_CHECK(v >= lo, fn_ << ": " << name << " must be >= " << lo << ", got " << v);
  }

  std::string prefix(const char* name) const { return std::string(fn_) + ": " + name + ": "; }

 private:
  const char* fn_;
};

template <typename T>
T* ptr(py::array& a) {
  return a.ptr() ? static_cast<T*>(a.mutable_data()) : nullptr;
}
template <typename T>
const T* cptr(const py::array& a) {
  return a.ptr() ? static_cast<const T*>(a.data()) : nullptr;
}

// Calls f(T{}) with T = float or double.
template <class F>
void dispatch(DT d, F&& f) {
  if (d == DT::F32) {
    f(float{});
  } else {
    f(double{});
  }
}

int64_t dim(const py::array& a, int i) { return static_cast<int64_t>(a.shape(i)); }

// ---- convolution -----------------------------------------------------------------------

void conv2d_forward(py::object y_, py::object x_, py::object w_, py::object b_, int64_t sh,
                    int64_t sw, int64_t ph, int64_t pw, int64_t dh, int64_t dw, bool relu) {
  Call c("conv2d_forward");
  const DT d = c.float_dtype(c.array(x_, "x"), "x");
  py::array x = c.check(x_, "x", d, 4, false), w = c.check(w_, "w", d, 4, false);
  py::array y = c.check(y_, "y", d, 4, true), b = c.optional(b_, "b", d, 1, false);
  c.at_least(sh, 1, "stride_h"); c.at_least(sw, 1, "stride_w");
  c.at_least(ph, 0, "padding_h"); c.at_least(pw, 0, "padding_w");
  c.at_least(dh, 1, "dilation_h"); c.at_least(dw, 1, "dilation_w");
  const int64_t N = dim(x, 0), C = dim(x, 1), K = dim(w, 0);
  c.shape(w, "w", {K, C, dim(w, 2), dim(w, 3)});
  c.shape(y, "y", {N, K, dim(y, 2), dim(y, 3)});
  if (b) c.shape(b, "b", {K});
  const lf::Conv2dShape s{N, C, dim(x, 2), dim(x, 3), K, dim(w, 2), dim(w, 3),
                          dim(y, 2), dim(y, 3), sh, sw, ph, pw, dh, dw};
  dispatch(d, [&](auto tag) {
    using T = decltype(tag);
    T* yp = ptr<T>(y);
    const T *xp = cptr<T>(x), *wp = cptr<T>(w), *bp = cptr<T>(b);
    py::gil_scoped_release nogil;
    lf::conv2d_forward_cpu<T>(yp, xp, wp, bp, s, relu);
  });
}

void conv2d_backward(py::object dx_, py::object dw_, py::object db_, py::object dy_,
                     py::object x_, py::object w_, int64_t sh, int64_t sw, int64_t ph,
                     int64_t pw, int64_t dh, int64_t dw, py::object relu_y_) {
  Call c("conv2d_backward");
  const DT d = c.float_dtype(c.array(dy_, "dy"), "dy");
  py::array dy = c.check(dy_, "dy", d, 4, false), x = c.check(x_, "x", d, 4, false);
  py::array w = c.check(w_, "w", d, 4, false);
  py::array gx = c.optional(dx_, "dx", d, 4, true), gw = c.optional(dw_, "dw", d, 4, true);
  py::array gb = c.optional(db_, "db", d, 1, true);
  c.at_least(sh, 1, "stride_h"); c.at_least(sw, 1, "stride_w");
  c.at_least(ph, 0, "padding_h"); c.at_least(pw, 0, "padding_w");
  c.at_least(dh, 1, "dilation_h"); c.at_least(dw, 1, "dilation_w");
  const int64_t N = dim(x, 0), C = dim(x, 1), K = dim(w, 0);
  c.shape(w, "w", {K, C, dim(w, 2), dim(w, 3)});
  c.shape(dy, "dy", {N, K, dim(dy, 2), dim(dy, 3)});
  if (gx) c.same_shape(gx, "dx", x);
  if (gw) c.same_shape(gw, "dw", w);
  if (gb) c.shape(gb, "db", {K});
  py::array ry = c.optional(relu_y_, "relu_y", d, 4, false);
  if (ry) c.same_shape(ry, "relu_y", dy);
  const lf::Conv2dShape s{N, C, dim(x, 2), dim(x, 3), K, dim(w, 2), dim(w, 3),
                          dim(dy, 2), dim(dy, 3), sh, sw, ph, pw, dh, dw};
  dispatch(d, [&](auto tag) {
    using T = decltype(tag);
    T *gxp = ptr<T>(gx), *gwp = ptr<T>(gw), *gbp = ptr<T>(gb);
    const T *dyp = cptr<T>(dy), *xp = cptr<T>(x), *wp = cptr<T>(w), *ryp = cptr<T>(ry);
    py::gil_scoped_release nogil;
    lf::conv2d_backward_cpu<T>(gxp, gwp, gbp, dyp, xp, wp, s, ryp);
  });
}

// conv -> relu -> 2x2 max pool, fused: y / indices (N, K, OH/2, OW/2) of the conv output
// (N, K, OH, OW), whose size the caller passes.
lf::Conv2dShape conv_pool_shape(const Call& c, const py::array& x, const py::array& w,
                                const py::array& y, int64_t oh, int64_t ow, int64_t sh,
                                int64_t sw, int64_t ph, int64_t pw, int64_t dh, int64_t dw) {
  c.at_least(sh, 1, "stride_h"); c.at_least(sw, 1, "stride_w");
  c.at_least(ph, 0, "padding_h"); c.at_least(pw, 0, "padding_w");
  c.at_least(dh, 1, "dilation_h"); c.at_least(dw, 1, "dilation_w");
  c.at_least(oh, 2, "conv output height"); c.at_least(ow, 2, "conv output width");
  const int64_t N = dim(x, 0), C = dim(x, 1), K = dim(w, 0);
  c.shape(w, "w", {K, C, dim(w, 2), dim(w, 3)});
  c.shape(y, "y", {N, K, oh / 2, ow / 2});
  return lf::Conv2dShape{N, C, dim(x, 2), dim(x, 3), K, dim(w, 2), dim(w, 3),
                         oh, ow, sh, sw, ph, pw, dh, dw};
}

void conv2d_relu_pool_forward(py::object y_, py::object idx_, py::object x_, py::object w_,
                              py::object b_, int64_t oh, int64_t ow, int64_t sh, int64_t sw,
                              int64_t ph, int64_t pw, int64_t dh, int64_t dw) {
  Call c("conv2d_relu_pool_forward");
  const DT d = c.float_dtype(c.array(x_, "x"), "x");
  py::array x = c.check(x_, "x", d, 4, false), w = c.check(w_, "w", d, 4, false);
  py::array y = c.check(y_, "y", d, 4, true), b = c.optional(b_, "b", d, 1, false);
  py::array idx = c.check(idx_, "indices", DT::I64, 4, true);
  const lf::Conv2dShape s = conv_pool_shape(c, x, w, y, oh, ow, sh, sw, ph, pw, dh, dw);
  c.same_shape(idx, "indices", y);
  if (b) c.shape(b, "b", {s.k});
  dispatch(d, [&](auto tag) {
    using T = decltype(tag);
    T* yp = ptr<T>(y);
    int64_t* ip = ptr<int64_t>(idx);
    const T *xp = cptr<T>(x), *wp = cptr<T>(w), *bp = cptr<T>(b);
    py::gil_scoped_release nogil;
    lf::conv2d_relu_pool_forward_cpu<T>(yp, ip, xp, wp, bp, s);
  });
}

void conv2d_relu_pool_backward(py::object dx_, py::object dw_, py::object db_, py::object dy_,
                               py::object idx_, py::object y_, py::object x_, py::object w_,
                               int64_t oh, int64_t ow, int64_t sh, int64_t sw, int64_t ph,
                               int64_t pw, int64_t dh, int64_t dw) {
  Call c("conv2d_relu_pool_backward");
  const DT d = c.float_dtype(c.array(dy_, "dy"), "dy");
  py::array dy = c.check(dy_, "dy", d, 4, false), y = c.check(y_, "y", d, 4, false);
  py::array x = c.check(x_, "x", d, 4, false), w = c.check(w_, "w", d, 4, false);
  py::array idx = c.check(idx_, "indices", DT::I64, 4, false);
  py::array gx = c.optional(dx_, "dx", d, 4, true), gw = c.optional(dw_, "dw", d, 4, true);
  py::array gb = c.optional(db_, "db", d, 1, true);
  const lf::Conv2dShape s = conv_pool_shape(c, x, w, y, oh, ow, sh, sw, ph, pw, dh, dw);
  c.same_shape(dy, "dy", y);
  c.same_shape(idx, "indices", y);
  if (gx) c.same_shape(gx, "dx", x);
  if (gw) c.same_shape(gw, "dw", w);
  if (gb) c.shape(gb, "db", {s.k});
  dispatch(d, [&](auto tag) {
    using T = decltype(tag);
    T *gxp = ptr<T>(gx), *gwp = ptr<T>(gw), *gbp = ptr<T>(gb);
    const T *dyp = cptr<T>(dy), *yp = cptr<T>(y), *xp = cptr<T>(x), *wp = cptr<T>(w);
    const int64_t* ip = cptr<int64_t>(idx);
    py::gil_scoped_release nogil;
    lf::conv2d_relu_pool_backward_cpu<T>(gxp, gwp, gbp, dyp, ip, yp, xp, wp, s);
  });
}

// ---- pooling ---------------------------------------------------------------------------

void check_pool_params(const Call& c, int64_t kh, int64_t kw, int64_t sh, int64_t sw,
                       int64_t ph, int64_t pw) {
  c.at_least(kh, 1, "kernel_h"); c.at_least(kw, 1, "kernel_w");
  c.at_least(sh, 1, "stride_h"); c.at_least(sw, 1, "stride_w");
  c.at_least(ph, 0, "padding_h"); c.at_least(pw, 0, "padding_w");
}

lf::Pool2dShape pool_shape(const py::array& in, const py::array& out, int64_t kh, int64_t kw,
                           int64_t sh, int64_t sw, int64_t ph, int64_t pw) {
  return lf::Pool2dShape{dim(in, 0), dim(in, 1), dim(in, 2), dim(in, 3), dim(out, 2),
                         dim(out, 3), kh, kw, sh, sw, ph, pw};
}

void max_pool2d_forward(py::object y_, py::object idx_, py::object x_, int64_t kh, int64_t kw,
                        int64_t sh, int64_t sw, int64_t ph, int64_t pw) {
  Call c("max_pool2d_forward");
  const DT d = c.float_dtype(c.array(x_, "x"), "x");
  py::array x = c.check(x_, "x", d, 4, false), y = c.check(y_, "y", d, 4, true);
  py::array idx = c.optional(idx_, "indices", DT::I64, 4, true);
  check_pool_params(c, kh, kw, sh, sw, ph, pw);
  c.shape(y, "y", {dim(x, 0), dim(x, 1), dim(y, 2), dim(y, 3)});
  if (idx) c.same_shape(idx, "indices", y);
  const lf::Pool2dShape s = pool_shape(x, y, kh, kw, sh, sw, ph, pw);
  dispatch(d, [&](auto tag) {
    using T = decltype(tag);
    T* yp = ptr<T>(y);
    int64_t* ip = ptr<int64_t>(idx);
    const T* xp = cptr<T>(x);
    py::gil_scoped_release nogil;
    lf::max_pool2d_forward_cpu<T>(yp, ip, xp, s);
  });
}

// Returns how many indices lay outside their input plane (skipped; ops.py raises on them).
int64_t max_pool2d_backward(py::object dx_, py::object dy_, py::object idx_, int64_t kh,
                            int64_t kw, int64_t sh, int64_t sw, int64_t ph, int64_t pw) {
  Call c("max_pool2d_backward");
  const DT d = c.float_dtype(c.array(dy_, "dy"), "dy");
  py::array dy = c.check(dy_, "dy", d, 4, false), dx = c.check(dx_, "dx", d, 4, true);
  py::array idx = c.check(idx_, "indices", DT::I64, 4, false);
  check_pool_params(c, kh, kw, sh, sw, ph, pw);
  c.shape(dy, "dy", {dim(dx, 0), dim(dx, 1), dim(dy, 2), dim(dy, 3)});
  c.same_shape(idx, "indices", dy);
  const lf::Pool2dShape s = pool_shape(dx, dy, kh, kw, sh, sw, ph, pw);
  int64_t outside = 0;
  dispatch(d, [&](auto tag) {
    using T = decltype(tag);
    T* dxp = ptr<T>(dx);
    const T* dyp = cptr<T>(dy);
    const int64_t* ip = cptr<int64_t>(idx);
    py::gil_scoped_release nogil;
    outside = lf::max_pool2d_backward_cpu<T>(dxp, dyp, ip, s);
  });
  return outside;
}

void avg_pool2d_forward(py::object y_, py::object x_, int64_t kh, int64_t kw, int64_t sh,
                        int64_t sw, int64_t ph, int64_t pw, bool count_include_pad) {
  Call c("avg_pool2d_forward");
  const DT d = c.float_dtype(c.array(x_, "x"), "x");
  py::array x = c.check(x_, "x", d, 4, false), y = c.check(y_, "y", d, 4, true);
  check_pool_params(c, kh, kw, sh, sw, ph, pw);
  c.shape(y, "y", {dim(x, 0), dim(x, 1), dim(y, 2), dim(y, 3)});
  const lf::Pool2dShape s = pool_shape(x, y, kh, kw, sh, sw, ph, pw);
  dispatch(d, [&](auto tag) {
    using T = decltype(tag);
    T* yp = ptr<T>(y);
    const T* xp = cptr<T>(x);
    py::gil_scoped_release nogil;
    lf::avg_pool2d_forward_cpu<T>(yp, xp, s, count_include_pad);
  });
}

void avg_pool2d_backward(py::object dx_, py::object dy_, int64_t kh, int64_t kw, int64_t sh,
                         int64_t sw, int64_t ph, int64_t pw, bool count_include_pad) {
  Call c("avg_pool2d_backward");
  const DT d = c.float_dtype(c.array(dy_, "dy"), "dy");
  py::array dy = c.check(dy_, "dy", d, 4, false), dx = c.check(dx_, "dx", d, 4, true);
  check_pool_params(c, kh, kw, sh, sw, ph, pw);
  c.shape(dy, "dy", {dim(dx, 0), dim(dx, 1), dim(dy, 2), dim(dy, 3)});
  const lf::Pool2dShape s = pool_shape(dx, dy, kh, kw, sh, sw, ph, pw);
  dispatch(d, [&](auto tag) {
    using T = decltype(tag);
    T* dxp = ptr<T>(dx);
    const T* dyp = cptr<T>(dy);
    py::gil_scoped_release nogil;
    lf::avg_pool2d_backward_cpu<T>(dxp, dyp, s, count_include_pad);
  });
}

// ---- dense -----------------------------------------------------------------------------

void linear_forward(py::object y_, py::object x_, py::object w_, py::object b_) {
  Call c("linear_forward");
  const DT d = c.float_dtype(c.array(x_, "x"), "x");
  py::array x = c.check(x_, "x", d, 2, false), w = c.check(w_, "w", d, 2, false);
  py::array y = c.check(y_, "y", d, 2, true), b = c.optional(b_, "b", d, 1, false);
  const int64_t M = dim(x, 0), IN = dim(x, 1), OUT = dim(w, 0);
  c.shape(w, "w", {OUT, IN});
  c.shape(y, "y", {M, OUT});
  if (b) c.shape(b, "b", {OUT});
  const lf::LinearShape s{M, IN, OUT};
  dispatch(d, [&](auto tag) {
    using T = decltype(tag);
    T* yp = ptr<T>(y);
    const T *xp = cptr<T>(x), *wp = cptr<T>(w), *bp = cptr<T>(b);
    py::gil_scoped_release nogil;
    lf::linear_forward_cpu<T>(yp, xp, wp, bp, s);
  });
}

void linear_backward(py::object dx_, py::object dw_, py::object db_, py::object dy_,
                     py::object x_, py::object w_) {
  Call c("linear_backward");
  const DT d = c.float_dtype(c.array(dy_, "dy"), "dy");
  py::array dy = c.check(dy_, "dy", d, 2, false), x = c.check(x_, "x", d, 2, false);
  py::array w = c.check(w_, "w", d, 2, false);
  py::array gx = c.optional(dx_, "dx", d, 2, true), gw = c.optional(dw_, "dw", d, 2, true);
  py::array gb = c.optional(db_, "db", d, 1, true);
  const int64_t M = dim(x, 0), IN = dim(x, 1), OUT = dim(w, 0);
  c.shape(w, "w", {OUT, IN});
  c.shape(dy, "dy", {M, OUT});
  if (gx) c.same_shape(gx, "dx", x);
  if (gw) c.same_shape(gw, "dw", w);
  if (gb) c.shape(gb, "db", {OUT});
  const lf::LinearShape s{M, IN, OUT};
  dispatch(d, [&](auto tag) {
    using T = decltype(tag);
    T *gxp = ptr<T>(gx), *gwp = ptr<T>(gw), *gbp = ptr<T>(gb);
    const T *dyp = cptr<T>(dy), *xp = cptr<T>(x), *wp = cptr<T>(w);
    py::gil_scoped_release nogil;
    lf::linear_backward_cpu<T>(gxp, gwp, gbp, dyp, xp, wp, s);
  });
}

// ---- softmax family --------------------------------------------------------------------

enum class SmOp { SoftmaxF, SoftmaxB, LogSoftmaxF, LogSoftmaxB };

void softmax_fwd(const char* fn, SmOp op, py::object y_, py::object x_) {
  Call c(fn);
  const DT d = c.float_dtype(c.array(x_, "x"), "x");
  py::array x = c.check(x_, "x", d, 3, false), y = c.check(y_, "y", d, 3, true);
  c.same_shape(y, "y", x);
  const lf::SoftmaxShape s{dim(x, 0), dim(x, 1), dim(x, 2)};
  dispatch(d, [&](auto tag) {
    using T = decltype(tag);
    T* yp = ptr<T>(y);
    const T* xp = cptr<T>(x);
    py::gil_scoped_release nogil;
    if (op == SmOp::SoftmaxF) {
      lf::softmax_forward_cpu<T>(yp, xp, s);
    } else {
      lf::log_softmax_forward_cpu<T>(yp, xp, s);
    }
  });
}

void softmax_bwd(const char* fn, SmOp op, py::object dx_, py::object dy_, py::object y_) {
  Call c(fn);
  const DT d = c.float_dtype(c.array(dy_, "dy"), "dy");
  py::array dy = c.check(dy_, "dy", d, 3, false), y = c.check(y_, "y", d, 3, false);
  py::array dx = c.check(dx_, "dx", d, 3, true);
  c.same_shape(y, "y", dy);
  c.same_shape(dx, "dx", dy);
  const lf::SoftmaxShape s{dim(dy, 0), dim(dy, 1), dim(dy, 2)};
  dispatch(d, [&](auto tag) {
    using T = decltype(tag);
    T* dxp = ptr<T>(dx);
    const T *dyp = cptr<T>(dy), *yp = cptr<T>(y);
    py::gil_scoped_release nogil;
    if (op == SmOp::SoftmaxB) {
      lf::softmax_backward_cpu<T>(dxp, dyp, yp, s);
    } else {
      lf::log_softmax_backward_cpu<T>(dxp, dyp, yp, s);
    }
  });
}

// ---- cross entropy ---------------------------------------------------------------------

// Both return the number of labels outside [0, classes) (the kernels never index by them;
// ops.py raises), so the range check costs no pass of its own.
int64_t cross_entropy_mean(py::object mean_, py::object logits_, py::object labels_) {
  Call c("cross_entropy_mean");
  const DT d = c.float_dtype(c.array(logits_, "logits"), "logits");
  py::array logits = c.check(logits_, "logits", d, 2, false);
  py::array mean = c.check(mean_, "mean", d, 0, true);
  py::array labels = c.check(labels_, "labels", DT::I64, 1, false);
  const int64_t n = dim(logits, 0), classes = dim(logits, 1);
  c.shape(labels, "labels", {n});
  int64_t bad = 0;
  dispatch(d, [&](auto tag) {
    using T = decltype(tag);
    T* mp = ptr<T>(mean);
    const T* xp = cptr<T>(logits);
    const int64_t* yp = cptr<int64_t>(labels);
    py::gil_scoped_release nogil;
    bad = lf::cross_entropy_mean_cpu<T>(mp, xp, yp, n, classes);
  });
  return bad;
}

int64_t cross_entropy_backward(py::object dlogits_, py::object logits_, py::object labels_,
                               double scale) {
  Call c("cross_entropy_backward");
  const DT d = c.float_dtype(c.array(logits_, "logits"), "logits");
  py::array logits = c.check(logits_, "logits", d, 2, false);
  py::array dlogits = c.check(dlogits_, "dlogits", d, 2, true);
  py::array labels = c.check(labels_, "labels", DT::I64, 1, false);
  const int64_t n = dim(logits, 0), classes = dim(logits, 1);
  c.same_shape(dlogits, "dlogits", logits);
  c.shape(labels, "labels", {n});
  int64_t bad = 0;
  dispatch(d, [&](auto tag) {
    using T = decltype(tag);
    T* gp = ptr<T>(dlogits);
    const T* xp = cptr<T>(logits);
    const int64_t* yp = cptr<int64_t>(labels);
    py::gil_scoped_release nogil;
    bad = lf::cross_entropy_backward_cpu<T>(gp, xp, yp, static_cast<T>(scale), n, classes);
  });
  return bad;
}

// ---- elementwise -----------------------------------------------------------------------
// Any rank is accepted as long as all arrays have the same shape (the data are flat).

template <class F32, class F64>
void unary(const char* fn, const char* out_name, const char* in_name, py::object out_,
           py::object in_, F32 f32, F64 f64) {
  Call c(fn);
  const DT d = c.float_dtype(c.array(in_, in_name), in_name);
  py::array in = c.check(in_, in_name, d, -1, false), out = c.check(out_, out_name, d, -1, true);
  c.same_shape(out, out_name, in);
  const int64_t n = static_cast<int64_t>(in.size());
  if (d == DT::F32) {
    float* o = ptr<float>(out);
    const float* i = cptr<float>(in);
    py::gil_scoped_release nogil;
    f32(o, i, n);
  } else {
    double* o = ptr<double>(out);
    const double* i = cptr<double>(in);
    py::gil_scoped_release nogil;
    f64(o, i, n);
  }
}

template <class F32, class F64>
void binary(const char* fn, const char* in2_name, py::object dx_, py::object dy_, py::object z_,
            F32 f32, F64 f64) {
  Call c(fn);
  const DT d = c.float_dtype(c.array(dy_, "dy"), "dy");
  py::array dy = c.check(dy_, "dy", d, -1, false), z = c.check(z_, in2_name, d, -1, false);
  py::array dx = c.check(dx_, "dx", d, -1, true);
  c.same_shape(z, in2_name, dy);
  c.same_shape(dx, "dx", dy);
  const int64_t n = static_cast<int64_t>(dy.size());
  if (d == DT::F32) {
    float* o = ptr<float>(dx);
    const float *g = cptr<float>(dy), *v = cptr<float>(z);
    py::gil_scoped_release nogil;
    f32(o, g, v, n);
  } else {
    double* o = ptr<double>(dx);
    const double *g = cptr<double>(dy), *v = cptr<double>(z);
    py::gil_scoped_release nogil;
    f64(o, g, v, n);
  }
}

// ---- optimiser updates -----------------------------------------------------------------

void adam_update(py::object p_, py::object m_, py::object v_, py::object g_, double alpha,
                 double beta1, double beta2, double eps) {
  Call c("adam_update");
  const DT d = c.float_dtype(c.array(p_, "p"), "p");
  py::array p = c.check(p_, "p", d, -1, true), m = c.check(m_, "m", d, -1, true);
  py::array v = c.check(v_, "v", d, -1, true), g = c.check(g_, "g", d, -1, false);
  c.same_shape(m, "m", p);
  c.same_shape(v, "v", p);
  c.same_shape(g, "g", p);
  const int64_t n = static_cast<int64_t>(p.size());
  dispatch(d, [&](auto tag) {
    using T = decltype(tag);
    T *pp = ptr<T>(p), *mp = ptr<T>(m), *vp = ptr<T>(v);
    const T* gp = cptr<T>(g);
    py::gil_scoped_release nogil;
    lf::adam_update_cpu<T>(pp, mp, vp, gp, n, alpha, beta1, beta2, eps);
  });
}

// ---- recurrent --------------------------------------------------------------------------

lf::RnnActivation rnn_activation(const Call& c, const std::string& name) {
  if (name == "tanh") return lf::RnnActivation::Tanh;
  if (name == "sigmoid") return lf::RnnActivation::Sigmoid;
  if (name == "relu") return lf::RnnActivation::Relu;
  if (name == "linear") return lf::RnnActivation::Linear;
  LF_CHECK(false, c.prefix("activation")
                      << "expected 'tanh', 'sigmoid', 'relu' or 'linear', got '" << name << "'");
  return lf::RnnActivation::Linear;
}

void rnn_forward(py::object hs_, py::object x_, py::object wxh_, py::object whh_, py::object b_,
                 py::object h0_, const std::string& activation) {
  Call c("rnn_forward");
  const DT d = c.float_dtype(c.array(x_, "x"), "x");
  py::array x = c.check(x_, "x", d, 3, false), wxh = c.check(wxh_, "w_xh", d, 2, false);
  py::array whh = c.check(whh_, "w_hh", d, 2, false), hs = c.check(hs_, "hs", d, 3, true);
  py::array b = c.optional(b_, "b", d, 1, false), h0 = c.optional(h0_, "h0", d, 2, false);
  const lf::RnnActivation act = rnn_activation(c, activation);
  const int64_t N = dim(x, 0), T = dim(x, 1), I = dim(x, 2), H = dim(whh, 0);
  c.shape(whh, "w_hh", {H, H});
  c.shape(wxh, "w_xh", {H, I});
  c.shape(hs, "hs", {N, T, H});
  if (b) c.shape(b, "b", {H});
  if (h0) c.shape(h0, "h0", {N, H});
  const lf::RnnShape s{N, T, I, H};
  dispatch(d, [&](auto tag) {
    using T_ = decltype(tag);
    T_* hp = ptr<T_>(hs);
    const T_ *xp = cptr<T_>(x), *wxp = cptr<T_>(wxh), *whp = cptr<T_>(whh);
    const T_ *bp = cptr<T_>(b), *h0p = cptr<T_>(h0);
    py::gil_scoped_release nogil;
    lf::rnn_forward_cpu<T_>(hp, xp, wxp, whp, bp, h0p, s, act);
  });
}

void rnn_backward(py::object dx_, py::object dwxh_, py::object dwhh_, py::object db_,
                  py::object dh0_, py::object dhs_, py::object x_, py::object wxh_,
                  py::object whh_, py::object h0_, py::object hs_, const std::string& activation) {
  Call c("rnn_backward");
  const DT d = c.float_dtype(c.array(dhs_, "dhs"), "dhs");
  py::array dhs = c.check(dhs_, "dhs", d, 3, false), x = c.check(x_, "x", d, 3, false);
  py::array wxh = c.check(wxh_, "w_xh", d, 2, false), whh = c.check(whh_, "w_hh", d, 2, false);
  py::array hs = c.check(hs_, "hs", d, 3, false), h0 = c.optional(h0_, "h0", d, 2, false);
  py::array gx = c.optional(dx_, "dx", d, 3, true), gwx = c.optional(dwxh_, "dw_xh", d, 2, true);
  py::array gwh = c.optional(dwhh_, "dw_hh", d, 2, true), gb = c.optional(db_, "db", d, 1, true);
  py::array gh0 = c.optional(dh0_, "dh0", d, 2, true);
  const lf::RnnActivation act = rnn_activation(c, activation);
  const int64_t N = dim(x, 0), T = dim(x, 1), I = dim(x, 2), H = dim(whh, 0);
  c.shape(whh, "w_hh", {H, H});
  c.shape(wxh, "w_xh", {H, I});
  c.shape(hs, "hs", {N, T, H});
  c.shape(dhs, "dhs", {N, T, H});
  if (h0) c.shape(h0, "h0", {N, H});
  if (gx) c.same_shape(gx, "dx", x);
  if (gwx) c.same_shape(gwx, "dw_xh", wxh);
  if (gwh) c.same_shape(gwh, "dw_hh", whh);
  if (gb) c.shape(gb, "db", {H});
  if (gh0) c.shape(gh0, "dh0", {N, H});
  const lf::RnnShape s{N, T, I, H};
  dispatch(d, [&](auto tag) {
    using T_ = decltype(tag);
    T_ *gxp = ptr<T_>(gx), *gwxp = ptr<T_>(gwx), *gwhp = ptr<T_>(gwh), *gbp = ptr<T_>(gb);
    T_* gh0p = ptr<T_>(gh0);
    const T_ *dhp = cptr<T_>(dhs), *xp = cptr<T_>(x), *wxp = cptr<T_>(wxh), *whp = cptr<T_>(whh);
    const T_ *h0p = cptr<T_>(h0), *hp = cptr<T_>(hs);
    py::gil_scoped_release nogil;
    lf::rnn_backward_cpu<T_>(gxp, gwxp, gwhp, gbp, gh0p, dhp, xp, wxp, whp, h0p, hp, s, act);
  });
}

// ---- module info -----------------------------------------------------------------------

py::dict build_info() {
  py::dict d;
#ifdef LAYERFORGE_VERSION
  d["version"] = std::string(LAYERFORGE_VERSION).empty() ? std::string("dev")
                                                         : std::string(LAYERFORGE_VERSION);
#else
  d["version"] = "dev";
#endif
#if defined(__clang__)
  d["compiler"] = std::string("clang ") + __clang_version__;
#elif defined(__GNUC__)
  d["compiler"] = std::string("gcc ") + __VERSION__;
#else
  d["compiler"] = "unknown";
#endif
#ifdef _OPENMP
  d["openmp"] = std::to_string(_OPENMP);
#else
  d["openmp"] = py::none();
#endif
  d["simd_compiled"] = lf::simd_paths_compiled();
  d["simd_path"] = lf::simd_path_name(lf::simd_path());
  d["conv_algorithm"] = lf::conv_algo() == lf::ConvAlgo::Im2col ? "im2col" : "auto";
  d["cpu_features"] = lf::cpu_features();
  d["gemm_float32"] = lf::gemm_ukernel<float>().name;
  d["gemm_float64"] = lf::gemm_ukernel<double>().name;
  d["num_threads"] = lf::num_threads();
  return d;
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "layerforge CPU kernels (C++, OpenMP, AVX2/AVX-512 GEMM microkernels)";

  m.def("conv2d_forward", &conv2d_forward, py::arg("y"), py::arg("x"), py::arg("w"),
        py::arg("b").none(true), py::arg("sh"), py::arg("sw"), py::arg("ph"), py::arg("pw"),
        py::arg("dh"), py::arg("dw"), py::arg("relu") = false);
  m.def("conv2d_backward", &conv2d_backward, py::arg("dx").none(true), py::arg("dw").none(true),
        py::arg("db").none(true), py::arg("dy"), py::arg("x"), py::arg("w"), py::arg("sh"),
        py::arg("sw"), py::arg("ph"), py::arg("pw"), py::arg("dh"), py::arg("dw_"),
        py::arg("relu_y").none(true) = py::none());
  m.def("conv2d_relu_pool_forward", &conv2d_relu_pool_forward, py::arg("y"),
        py::arg("indices"), py::arg("x"), py::arg("w"), py::arg("b").none(true), py::arg("oh"),
        py::arg("ow"), py::arg("sh"), py::arg("sw"), py::arg("ph"), py::arg("pw"),
        py::arg("dh"), py::arg("dw"));
  m.def("conv2d_relu_pool_backward", &conv2d_relu_pool_backward, py::arg("dx").none(true),
        py::arg("dw").none(true), py::arg("db").none(true), py::arg("dy"), py::arg("indices"),
        py::arg("y"), py::arg("x"), py::arg("w"), py::arg("oh"), py::arg("ow"), py::arg("sh"),
        py::arg("sw"), py::arg("ph"), py::arg("pw"), py::arg("dh"), py::arg("dw_"));
  m.def("max_pool2d_forward", &max_pool2d_forward, py::arg("y"), py::arg("indices").none(true),
        py::arg("x"), py::arg("kh"), py::arg("kw"), py::arg("sh"), py::arg("sw"), py::arg("ph"),
        py::arg("pw"));
  m.def("max_pool2d_backward", &max_pool2d_backward, py::arg("dx"), py::arg("dy"),
        py::arg("indices"), py::arg("kh"), py::arg("kw"), py::arg("sh"), py::arg("sw"),
        py::arg("ph"), py::arg("pw"));
  m.def("avg_pool2d_forward", &avg_pool2d_forward, py::arg("y"), py::arg("x"), py::arg("kh"),
        py::arg("kw"), py::arg("sh"), py::arg("sw"), py::arg("ph"), py::arg("pw"),
        py::arg("count_include_pad"));
  m.def("avg_pool2d_backward", &avg_pool2d_backward, py::arg("dx"), py::arg("dy"),
        py::arg("kh"), py::arg("kw"), py::arg("sh"), py::arg("sw"), py::arg("ph"),
        py::arg("pw"), py::arg("count_include_pad"));
  m.def("linear_forward", &linear_forward, py::arg("y"), py::arg("x"), py::arg("w"),
        py::arg("b").none(true));
  m.def("linear_backward", &linear_backward, py::arg("dx").none(true), py::arg("dw").none(true),
        py::arg("db").none(true), py::arg("dy"), py::arg("x"), py::arg("w"));

  m.def("softmax_forward", [](py::object y, py::object x) {
    softmax_fwd("softmax_forward", SmOp::SoftmaxF, y, x);
  }, py::arg("y"), py::arg("x"));
  m.def("log_softmax_forward", [](py::object y, py::object x) {
    softmax_fwd("log_softmax_forward", SmOp::LogSoftmaxF, y, x);
  }, py::arg("y"), py::arg("x"));
  m.def("softmax_backward", [](py::object dx, py::object dy, py::object y) {
    softmax_bwd("softmax_backward", SmOp::SoftmaxB, dx, dy, y);
  }, py::arg("dx"), py::arg("dy"), py::arg("y"));
  m.def("log_softmax_backward", [](py::object dx, py::object dy, py::object y) {
    softmax_bwd("log_softmax_backward", SmOp::LogSoftmaxB, dx, dy, y);
  }, py::arg("dx"), py::arg("dy"), py::arg("y"));

  m.def("cross_entropy_mean", &cross_entropy_mean, py::arg("mean"), py::arg("logits"),
        py::arg("labels"));
  m.def("cross_entropy_backward", &cross_entropy_backward, py::arg("dlogits"),
        py::arg("logits"), py::arg("labels"), py::arg("scale"));

  m.def("relu_forward", [](py::object y, py::object x) {
    unary("relu_forward", "y", "x", y, x, &lf::relu_forward_cpu<float>, &lf::relu_forward_cpu<double>);
  }, py::arg("y"), py::arg("x"));
  m.def("sigmoid_forward", [](py::object y, py::object x) {
    unary("sigmoid_forward", "y", "x", y, x, &lf::sigmoid_forward_cpu<float>,
          &lf::sigmoid_forward_cpu<double>);
  }, py::arg("y"), py::arg("x"));
  m.def("tanh_forward", [](py::object y, py::object x) {
    unary("tanh_forward", "y", "x", y, x, &lf::tanh_forward_cpu<float>, &lf::tanh_forward_cpu<double>);
  }, py::arg("y"), py::arg("x"));
  m.def("relu_backward", [](py::object dx, py::object dy, py::object x) {
    binary("relu_backward", "x", dx, dy, x, &lf::relu_backward_cpu<float>,
           &lf::relu_backward_cpu<double>);
  }, py::arg("dx"), py::arg("dy"), py::arg("x"));
  m.def("sigmoid_backward", [](py::object dx, py::object dy, py::object y) {
    binary("sigmoid_backward", "y", dx, dy, y, &lf::sigmoid_backward_cpu<float>,
           &lf::sigmoid_backward_cpu<double>);
  }, py::arg("dx"), py::arg("dy"), py::arg("y"));
  m.def("tanh_backward", [](py::object dx, py::object dy, py::object y) {
    binary("tanh_backward", "y", dx, dy, y, &lf::tanh_backward_cpu<float>,
           &lf::tanh_backward_cpu<double>);
  }, py::arg("dx"), py::arg("dy"), py::arg("y"));

  m.def("adam_update", &adam_update, py::arg("p"), py::arg("m"), py::arg("v"), py::arg("g"),
        py::arg("alpha"), py::arg("beta1"), py::arg("beta2"), py::arg("eps"));

  m.def("rnn_forward", &rnn_forward, py::arg("hs"), py::arg("x"), py::arg("w_xh"),
        py::arg("w_hh"), py::arg("b").none(true), py::arg("h0").none(true),
        py::arg("activation"));
  m.def("rnn_backward", &rnn_backward, py::arg("dx").none(true), py::arg("dw_xh").none(true),
        py::arg("dw_hh").none(true), py::arg("db").none(true), py::arg("dh0").none(true),
        py::arg("dhs"), py::arg("x"), py::arg("w_xh"), py::arg("w_hh"), py::arg("h0").none(true),
        py::arg("hs"), py::arg("activation"));

  m.def("build_info", &build_info, "Version, compiler, OpenMP, SIMD paths compiled and in use.");
  m.def("cpu_features", &lf::cpu_features,
        "Instruction-set features the kernels use that this CPU supports.");
  m.def("simd_path", [] { return std::string(lf::simd_path_name(lf::simd_path())); },
        "SIMD path in use: 'avx512', 'avx2' or 'scalar' (LAYERFORGE_SIMD may lower it).");
  m.def("set_simd_path", [](const std::string& name) {
    lf::SimdPath p;
    LF_CHECK(lf::parse_simd_path(name, &p),
             "set_simd_path: expected 'scalar', 'avx2' or 'avx512', got '" << name << "'");
    return std::string(lf::simd_path_name(lf::set_simd_path(p)));
  }, py::arg("name"),
        "Testing hook: request a SIMD path (clamped to what the CPU supports); returns the "
        "path now in use.");
  m.def("supported_simd_paths", [] {
    std::vector<std::string> out;
    for (const std::string& name : lf::simd_paths_compiled()) {
      lf::SimdPath p;
      if (lf::parse_simd_path(name, &p) && p <= lf::simd_best_supported()) out.push_back(name);
    }
    return out;
  }, "SIMD paths compiled in and supported by this CPU, lowest first.");
  m.def("conv_algorithm", [] {
    return std::string(lf::conv_algo() == lf::ConvAlgo::Im2col ? "im2col" : "auto");
  }, "Convolution kernel version: 'auto' (direct kernels where they apply) or 'im2col'.");
  m.def("set_conv_algorithm", [](const std::string& name) {
    LF_CHECK(name == "auto" || name == "im2col",
             "set_conv_algorithm: expected 'auto' or 'im2col', got '" << name << "'");
    lf::set_conv_algo(name == "im2col" ? lf::ConvAlgo::Im2col : lf::ConvAlgo::Auto);
  }, py::arg("name"),
        "Testing and benchmark hook: 'im2col' forces im2col + GEMM for every convolution "
        "(also LAYERFORGE_CONV=im2col); 'auto' is the default.");
  m.def("stream_threshold", &lf::stream_min_bytes,
        "Bytes a memory-bound call must touch before it writes its output with non-temporal "
        "(cache-bypassing) stores; default 1.5x the L3 size (LAYERFORGE_STREAM_BYTES overrides).");
  m.def("set_stream_threshold", [](int64_t nbytes) {
    lf::set_stream_min_bytes(nbytes);
    return lf::stream_min_bytes();
  }, py::arg("nbytes"),
        "Testing and benchmark hook: 0 streams every such call, a negative value restores the "
        "default; returns the threshold now in force.");
  m.def("fma_peak_gflops", [](int threads) {
    if (threads == 0) threads = lf::num_threads();
    py::gil_scoped_release nogil;
    return lf::fma_peak_gflops(threads);
  }, py::arg("threads") = 0,
        "Measured float32 FMA peak in GFLOP/s of `threads` threads (0: the kernels' thread "
        "count) on the SIMD path in force; best of 5 trials of about 20 ms.");
  m.def("copy_bandwidth_gbs", [](int threads, int64_t nbytes) {
    if (threads == 0) threads = lf::num_threads();
    py::gil_scoped_release nogil;
    return lf::copy_bandwidth_gbs(threads, nbytes);
  }, py::arg("threads") = 0, py::arg("nbytes") = int64_t{64} << 20,
        "Measured GB/s (bytes read + written) of a memcpy of `nbytes` bytes with up to "
        "`threads` threads (0: the kernels' thread count); best of 5 trials of about 5 ms.");
  m.def("get_num_threads", &lf::num_threads, "Threads the kernels use.");
  m.def("set_num_threads", [](int n) {
    LF_CHECK(n >= 1, "set_num_threads: expected n >= 1, got " << n);
    lf::set_num_threads(n);
  }, py::arg("n"));
}
