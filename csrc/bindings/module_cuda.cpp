// pybind11 module layerforge._cuda: build info, device discovery and the CUDA kernels.
// Importing it never needs a GPU or a driver (cudart is static; the driver is looked up at
// the first call).
//
// Kernel interface: the same function names and positional arguments as the CPU module _C
// (src/layerforge/_backend.py), plus two trailing ints: `stream` (a cudaStream_t as an
// integer; 0 = the legacy default stream) and `device` (the CUDA ordinal holding the arrays).
// Every array is a descriptor tuple (ptr: int, shape: tuple[int, ...], typestr: str) with
// typestr '<f4', '<f8' or '<i8', describing a C-contiguous device array (the Python side
// guarantees contiguity), or None for an optional one. Each call is re-checked here like _C
// does (type / dtype -> TypeError, rank / shape / parameter / null pointer -> ValueError,
// messages naming the function and the argument), so no direct call with a bad descriptor can
// crash the process; the contents of device memory cannot be checked without a sync, so
// labels are the caller's to range-check (the kernels turn a bad label into NaN, never an
// out-of-bounds access).
// Calls only enqueue work on `stream` (never synchronize), with `device` made current for the
// call and the previous current device restored after, and the GIL released. A call whose
// outputs are all empty launches nothing; empty reductions still overwrite (dw / db = 0).
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <string>
#include <vector>

#include "check.h"
#include "cuda/device.h"
#include "ops.h"

namespace py = pybind11;

namespace {

enum class DT { F32, F64, I64 };

const char* dt_name(DT d) { return d == DT::F32 ? "float32" : d == DT::F64 ? "float64" : "int64"; }

using lf::shape_str;

// One parsed descriptor; a default-constructed Arr is "None" (false in `if (a)`).
struct Arr {
  uintptr_t ptr = 0;
  std::vector<int64_t> shape;
  DT dt = DT::F32;
  bool present = false;

  explicit operator bool() const { return present; }
  int64_t dim(size_t i) const { return shape[i]; }
  int64_t size() const {
    int64_t n = 1;
    for (int64_t v : shape) n *= v;
    return n;
  }
  bool empty() const { return !present || size() == 0; }
  template <typename T>
  T* p() const {
    return present ? reinterpret_cast<T*>(ptr) : nullptr;
  }
};

// One kernel call's argument checks; messages name the function and the argument.
class Call {
 public:
  explicit Call(const char* fn) : fn_(fn) {}

  // (ptr, shape, typestr) -> Arr, any dtype and rank; malformed -> TypeError / ValueError.
  Arr parse(const py::object& o, const char* name) const {
    const bool seq = py::isinstance<py::tuple>(o) || py::isinstance<py::list>(o);
    if (!seq || py::len(o) != 3) {
      std::string got = py::str(py::type::of(o).attr("__name__"));
      throw py::type_error(prefix(name) + "expected an array descriptor (ptr, shape, typestr), got " +
                           (seq ? "a sequence of length " + std::to_string(py::len(o)) : got));
    }
    py::sequence t = py::reinterpret_borrow<py::sequence>(o);
    Arr a;
    a.present = true;

    py::object ptr = t[0];
    if (!py::isinstance<py::int_>(ptr))
      throw py::type_error(prefix(name) + "descriptor ptr must be an int, got " +
                           std::string(py::str(py::type::of(ptr).attr("__name__"))));
    const unsigned long long pv = PyLong_AsUnsignedLongLong(ptr.ptr());
    if (PyErr_Occurred()) {  // negative or wider than 64 bits
      PyErr_Clear();
      LF_CHECK(false, prefix(name) << "descriptor ptr must be an address in [0, 2^64), got "
                                   << std::string(py::str(ptr)));
    }
    a.ptr = static_cast<uintptr_t>(pv);

    py::object shp = t[1];
    if (!(py::isinstance<py::tuple>(shp) || py::isinstance<py::list>(shp)))
      throw py::type_error(prefix(name) + "descriptor shape must be a tuple of ints, got " +
                           std::string(py::str(py::type::of(shp).attr("__name__"))));
    constexpr int64_t kMaxElems = int64_t(1) << 62;
    int64_t elems = 1;
    for (py::handle h : py::reinterpret_borrow<py::sequence>(shp)) {
      if (!PyIndex_Check(h.ptr()))
        throw py::type_error(prefix(name) + "descriptor shape must be a tuple of ints, got an item of type " +
                             std::string(py::str(py::type::of(h).attr("__name__"))));
      const long long v = PyLong_AsLongLong(py::reinterpret_steal<py::object>(PyNumber_Index(h.ptr())).ptr());
      if (PyErr_Occurred()) {
        PyErr_Clear();
        LF_CHECK(false, prefix(name) << "descriptor shape entries must fit in 64 bits");
      }
      LF_CHECK(v >= 0, prefix(name) << "descriptor shape entries must be >= 0, got " << v);
      a.shape.push_back(static_cast<int64_t>(v));
      if (elems != 0) {
        LF_CHECK(v == 0 || elems <= kMaxElems / v,
                 prefix(name) << "array of shape " << shape_str(a.shape) << "... is too large");
        elems *= v;
      }
    }

    py::object ts = t[2];
    if (!py::isinstance<py::str>(ts))
      throw py::type_error(prefix(name) + "descriptor typestr must be a str, got " +
                           std::string(py::str(py::type::of(ts).attr("__name__"))));
    const std::string s = py::str(ts);
    if (s == "<f4") {
      a.dt = DT::F32;
    } else if (s == "<f8") {
      a.dt = DT::F64;
    } else if (s == "<i8") {
      a.dt = DT::I64;
    } else {
      throw py::type_error(prefix(name) + "unsupported typestr '" + s +
                           "' (expected '<f4', '<f8' or '<i8')");
    }
    LF_CHECK(a.ptr != 0 || elems == 0,
             prefix(name) << "null device pointer for a non-empty array of shape " << shape_str(a.shape));
    return a;
  }

  // The float dtype of the call is taken from its first float input.
  DT float_dtype(const py::object& o, const char* name) const {
    const Arr a = parse(o, name);
    if (a.dt == DT::I64)
      throw py::type_error(prefix(name) + "expected float32 or float64, got int64");
    return a.dt;
  }

  // ndim < 0: any rank.
  Arr check(const py::object& o, const char* name, DT d, int ndim) const {
    if (o.is_none()) throw py::type_error(prefix(name) + "expected an array descriptor, got None");
    Arr a = parse(o, name);
    if (a.dt != d)
      throw py::type_error(prefix(name) + "expected dtype " + dt_name(d) + ", got " + dt_name(a.dt));
    LF_CHECK(ndim < 0 || static_cast<int>(a.shape.size()) == ndim,
             prefix(name) << "expected a " << ndim << "-D array, got shape " << shape_str(a.shape));
    return a;
  }

  // None -> an absent Arr (the gradient is not wanted).
  Arr optional(const py::object& o, const char* name, DT d, int ndim) const {
    if (o.is_none()) return Arr{};
    return check(o, name, d, ndim);
  }

  void shape(const Arr& a, const char* name, const std::vector<int64_t>& want) const {
    LF_CHECK(a.shape == want,
             prefix(name) << "expected shape " << shape_str(want) << ", got " << shape_str(a.shape));
  }

  void same_shape(const Arr& a, const char* name, const Arr& ref) const { shape(a, name, ref.shape); }

  void at_least(int64_t v, int64_t lo, const char* name) const {
    LF_CHECK(v >= lo, fn_ << ": " << name << " must be >= " << lo << ", got " << v);
  }

  void device(int d) const { LF_CHECK(d >= 0, fn_ << ": device must be >= 0, got " << d); }

  std::string prefix(const char* name) const { return std::string(fn_) + ": " + name + ": "; }

 private:
  const char* fn_;
};

// Calls f(T{}) with T = float or double.
template <class F>
void dispatch(DT d, F&& f) {
  if (d == DT::F32) {
    f(float{});
  } else {
    f(double{});
  }
}

// Runs the launch with the GIL released and `device` current.
template <class F>
void on_device(int device, F&& f) {
  py::gil_scoped_release nogil;
  lf::CudaDeviceGuard guard(device);
  f();
}

cudaStream_t as_stream(uintptr_t s) { return reinterpret_cast<cudaStream_t>(s); }

// ---- convolution -----------------------------------------------------------------------

void conv2d_forward(py::object y_, py::object x_, py::object w_, py::object b_, int64_t sh,
                    int64_t sw, int64_t ph, int64_t pw, int64_t dh, int64_t dw, uintptr_t stream,
                    int device) {
  Call c("conv2d_forward");
  const DT d = c.float_dtype(x_, "x");
  Arr x = c.check(x_, "x", d, 4), w = c.check(w_, "w", d, 4);
  Arr y = c.check(y_, "y", d, 4), b = c.optional(b_, "b", d, 1);
  c.at_least(sh, 1, "stride_h"); c.at_least(sw, 1, "stride_w");
  c.at_least(ph, 0, "padding_h"); c.at_least(pw, 0, "padding_w");
  c.at_least(dh, 1, "dilation_h"); c.at_least(dw, 1, "dilation_w");
  c.device(device);
  const int64_t N = x.dim(0), C = x.dim(1), K = w.dim(0);
  c.shape(w, "w", {K, C, w.dim(2), w.dim(3)});
  c.shape(y, "y", {N, K, y.dim(2), y.dim(3)});
  if (b) c.shape(b, "b", {K});
  if (y.empty()) return;
  const lf::Conv2dShape s{N, C, x.dim(2), x.dim(3), K, w.dim(2), w.dim(3),
                          y.dim(2), y.dim(3), sh, sw, ph, pw, dh, dw};
  dispatch(d, [&](auto tag) {
    using T = decltype(tag);
    on_device(device, [&] {
      lf::conv2d_forward_cuda<T>(y.p<T>(), x.p<T>(), w.p<T>(), b.p<T>(), s, as_stream(stream));
    });
  });
}

void conv2d_backward(py::object dx_, py::object dw_, py::object db_, py::object dy_,
                     py::object x_, py::object w_, int64_t sh, int64_t sw, int64_t ph,
                     int64_t pw, int64_t dh, int64_t dw, uintptr_t stream, int device) {
  Call c("conv2d_backward");
  const DT d = c.float_dtype(dy_, "dy");
  Arr dy = c.check(dy_, "dy", d, 4), x = c.check(x_, "x", d, 4);
  Arr w = c.check(w_, "w", d, 4);
  Arr gx = c.optional(dx_, "dx", d, 4), gw = c.optional(dw_, "dw", d, 4);
  Arr gb = c.optional(db_, "db", d, 1);
  c.at_least(sh, 1, "stride_h"); c.at_least(sw, 1, "stride_w");
  c.at_least(ph, 0, "padding_h"); c.at_least(pw, 0, "padding_w");
  c.at_least(dh, 1, "dilation_h"); c.at_least(dw, 1, "dilation_w");
  c.device(device);
  const int64_t N = x.dim(0), C = x.dim(1), K = w.dim(0);
  c.shape(w, "w", {K, C, w.dim(2), w.dim(3)});
  c.shape(dy, "dy", {N, K, dy.dim(2), dy.dim(3)});
  if (gx) c.same_shape(gx, "dx", x);
  if (gw) c.same_shape(gw, "dw", w);
  if (gb) c.shape(gb, "db", {K});
  if (gx.empty() && gw.empty() && gb.empty()) return;
  const lf::Conv2dShape s{N, C, x.dim(2), x.dim(3), K, w.dim(2), w.dim(3),
                          dy.dim(2), dy.dim(3), sh, sw, ph, pw, dh, dw};
  dispatch(d, [&](auto tag) {
    using T = decltype(tag);
    on_device(device, [&] {
      lf::conv2d_backward_cuda<T>(gx.p<T>(), gw.p<T>(), gb.p<T>(), dy.p<T>(), x.p<T>(), w.p<T>(),
                                  s, as_stream(stream));
    });
  });
}

// ---- pooling ---------------------------------------------------------------------------

void check_pool_params(const Call& c, int64_t kh, int64_t kw, int64_t sh, int64_t sw,
                       int64_t ph, int64_t pw) {
  c.at_least(kh, 1, "kernel_h"); c.at_least(kw, 1, "kernel_w");
  c.at_least(sh, 1, "stride_h"); c.at_least(sw, 1, "stride_w");
  c.at_least(ph, 0, "padding_h"); c.at_least(pw, 0, "padding_w");
}

lf::Pool2dShape pool_shape(const Arr& in, const Arr& out, int64_t kh, int64_t kw, int64_t sh,
                           int64_t sw, int64_t ph, int64_t pw) {
  return lf::Pool2dShape{in.dim(0), in.dim(1), in.dim(2), in.dim(3), out.dim(2),
                         out.dim(3), kh, kw, sh, sw, ph, pw};
}

void max_pool2d_forward(py::object y_, py::object idx_, py::object x_, int64_t kh, int64_t kw,
                        int64_t sh, int64_t sw, int64_t ph, int64_t pw, uintptr_t stream,
                        int device) {
  Call c("max_pool2d_forward");
  const DT d = c.float_dtype(x_, "x");
  Arr x = c.check(x_, "x", d, 4), y = c.check(y_, "y", d, 4);
  Arr idx = c.optional(idx_, "indices", DT::I64, 4);
  check_pool_params(c, kh, kw, sh, sw, ph, pw);
  c.device(device);
  c.shape(y, "y", {x.dim(0), x.dim(1), y.dim(2), y.dim(3)});
  if (idx) c.same_shape(idx, "indices", y);
  if (y.empty()) return;
  const lf::Pool2dShape s = pool_shape(x, y, kh, kw, sh, sw, ph, pw);
  dispatch(d, [&](auto tag) {
    using T = decltype(tag);
    on_device(device, [&] {
      lf::max_pool2d_forward_cuda<T>(y.p<T>(), idx.p<int64_t>(), x.p<T>(), s, as_stream(stream));
    });
  });
}

void max_pool2d_backward(py::object dx_, py::object dy_, py::object idx_, int64_t kh,
                         int64_t kw, int64_t sh, int64_t sw, int64_t ph, int64_t pw,
                         uintptr_t stream, int device) {
  Call c("max_pool2d_backward");
  const DT d = c.float_dtype(dy_, "dy");
  Arr dy = c.check(dy_, "dy", d, 4), dx = c.check(dx_, "dx", d, 4);
  Arr idx = c.check(idx_, "indices", DT::I64, 4);
  check_pool_params(c, kh, kw, sh, sw, ph, pw);
  c.device(device);
  c.shape(dy, "dy", {dx.dim(0), dx.dim(1), dy.dim(2), dy.dim(3)});
  c.same_shape(idx, "indices", dy);
  if (dx.empty()) return;
  const lf::Pool2dShape s = pool_shape(dx, dy, kh, kw, sh, sw, ph, pw);
  dispatch(d, [&](auto tag) {
    using T = decltype(tag);
    on_device(device, [&] {
      lf::max_pool2d_backward_cuda<T>(dx.p<T>(), dy.p<T>(), idx.p<int64_t>(), s, as_stream(stream));
    });
  });
}

void avg_pool2d_forward(py::object y_, py::object x_, int64_t kh, int64_t kw, int64_t sh,
                        int64_t sw, int64_t ph, int64_t pw, bool count_include_pad,
                        uintptr_t stream, int device) {
  Call c("avg_pool2d_forward");
  const DT d = c.float_dtype(x_, "x");
  Arr x = c.check(x_, "x", d, 4), y = c.check(y_, "y", d, 4);
  check_pool_params(c, kh, kw, sh, sw, ph, pw);
  c.device(device);
  c.shape(y, "y", {x.dim(0), x.dim(1), y.dim(2), y.dim(3)});
  if (y.empty()) return;
  const lf::Pool2dShape s = pool_shape(x, y, kh, kw, sh, sw, ph, pw);
  dispatch(d, [&](auto tag) {
    using T = decltype(tag);
    on_device(device, [&] {
      lf::avg_pool2d_forward_cuda<T>(y.p<T>(), x.p<T>(), s, count_include_pad, as_stream(stream));
    });
  });
}

void avg_pool2d_backward(py::object dx_, py::object dy_, int64_t kh, int64_t kw, int64_t sh,
                         int64_t sw, int64_t ph, int64_t pw, bool count_include_pad,
                         uintptr_t stream, int device) {
  Call c("avg_pool2d_backward");
  const DT d = c.float_dtype(dy_, "dy");
  Arr dy = c.check(dy_, "dy", d, 4), dx = c.check(dx_, "dx", d, 4);
  check_pool_params(c, kh, kw, sh, sw, ph, pw);
  c.device(device);
  c.shape(dy, "dy", {dx.dim(0), dx.dim(1), dy.dim(2), dy.dim(3)});
  if (dx.empty()) return;
  const lf::Pool2dShape s = pool_shape(dx, dy, kh, kw, sh, sw, ph, pw);
  dispatch(d, [&](auto tag) {
    using T = decltype(tag);
    on_device(device, [&] {
      lf::avg_pool2d_backward_cuda<T>(dx.p<T>(), dy.p<T>(), s, count_include_pad,
                                      as_stream(stream));
    });
  });
}

// ---- dense -----------------------------------------------------------------------------

void linear_forward(py::object y_, py::object x_, py::object w_, py::object b_,
                    uintptr_t stream, int device) {
  Call c("linear_forward");
  const DT d = c.float_dtype(x_, "x");
  Arr x = c.check(x_, "x", d, 2), w = c.check(w_, "w", d, 2);
  Arr y = c.check(y_, "y", d, 2), b = c.optional(b_, "b", d, 1);
  c.device(device);
  const int64_t M = x.dim(0), IN = x.dim(1), OUT = w.dim(0);
  c.shape(w, "w", {OUT, IN});
  c.shape(y, "y", {M, OUT});
  if (b) c.shape(b, "b", {OUT});
  if (y.empty()) return;
  const lf::LinearShape s{M, IN, OUT};
  dispatch(d, [&](auto tag) {
    using T = decltype(tag);
    on_device(device, [&] {
      lf::linear_forward_cuda<T>(y.p<T>(), x.p<T>(), w.p<T>(), b.p<T>(), s, as_stream(stream));
    });
  });
}

void linear_backward(py::object dx_, py::object dw_, py::object db_, py::object dy_,
                     py::object x_, py::object w_, uintptr_t stream, int device) {
  Call c("linear_backward");
  const DT d = c.float_dtype(dy_, "dy");
  Arr dy = c.check(dy_, "dy", d, 2), x = c.check(x_, "x", d, 2);
  Arr w = c.check(w_, "w", d, 2);
  Arr gx = c.optional(dx_, "dx", d, 2), gw = c.optional(dw_, "dw", d, 2);
  Arr gb = c.optional(db_, "db", d, 1);
  c.device(device);
  const int64_t M = x.dim(0), IN = x.dim(1), OUT = w.dim(0);
  c.shape(w, "w", {OUT, IN});
  c.shape(dy, "dy", {M, OUT});
  if (gx) c.same_shape(gx, "dx", x);
  if (gw) c.same_shape(gw, "dw", w);
  if (gb) c.shape(gb, "db", {OUT});
  if (gx.empty() && gw.empty() && gb.empty()) return;
  const lf::LinearShape s{M, IN, OUT};
  dispatch(d, [&](auto tag) {
    using T = decltype(tag);
    on_device(device, [&] {
      lf::linear_backward_cuda<T>(gx.p<T>(), gw.p<T>(), gb.p<T>(), dy.p<T>(), x.p<T>(), w.p<T>(),
                                  s, as_stream(stream));
    });
  });
}

// ---- softmax family --------------------------------------------------------------------

enum class SmOp { SoftmaxF, SoftmaxB, LogSoftmaxF, LogSoftmaxB };

void softmax_fwd(const char* fn, SmOp op, py::object y_, py::object x_, uintptr_t stream,
                 int device) {
  Call c(fn);
  const DT d = c.float_dtype(x_, "x");
  Arr x = c.check(x_, "x", d, 3), y = c.check(y_, "y", d, 3);
  c.device(device);
  c.same_shape(y, "y", x);
  if (y.empty()) return;
  const lf::SoftmaxShape s{x.dim(0), x.dim(1), x.dim(2)};
  dispatch(d, [&](auto tag) {
    using T = decltype(tag);
    on_device(device, [&] {
      if (op == SmOp::SoftmaxF) {
        lf::softmax_forward_cuda<T>(y.p<T>(), x.p<T>(), s, as_stream(stream));
      } else {
        lf::log_softmax_forward_cuda<T>(y.p<T>(), x.p<T>(), s, as_stream(stream));
      }
    });
  });
}

void softmax_bwd(const char* fn, SmOp op, py::object dx_, py::object dy_, py::object y_,
                 uintptr_t stream, int device) {
  Call c(fn);
  const DT d = c.float_dtype(dy_, "dy");
  Arr dy = c.check(dy_, "dy", d, 3), y = c.check(y_, "y", d, 3);
  Arr dx = c.check(dx_, "dx", d, 3);
  c.device(device);
  c.same_shape(y, "y", dy);
  c.same_shape(dx, "dx", dy);
  if (dx.empty()) return;
  const lf::SoftmaxShape s{dy.dim(0), dy.dim(1), dy.dim(2)};
  dispatch(d, [&](auto tag) {
    using T = decltype(tag);
    on_device(device, [&] {
      if (op == SmOp::SoftmaxB) {
        lf::softmax_backward_cuda<T>(dx.p<T>(), dy.p<T>(), y.p<T>(), s, as_stream(stream));
      } else {
        lf::log_softmax_backward_cuda<T>(dx.p<T>(), dy.p<T>(), y.p<T>(), s, as_stream(stream));
      }
    });
  });
}

// ---- cross entropy ---------------------------------------------------------------------
// Labels live on the device: their range is the caller's to check (a bad one gives NaN).

void cross_entropy_forward(py::object loss_, py::object logits_, py::object labels_,
                           uintptr_t stream, int device) {
  Call c("cross_entropy_forward");
  const DT d = c.float_dtype(logits_, "logits");
  Arr logits = c.check(logits_, "logits", d, 2);
  Arr loss = c.check(loss_, "loss", d, 1);
  Arr labels = c.check(labels_, "labels", DT::I64, 1);
  c.device(device);
  const int64_t n = logits.dim(0), classes = logits.dim(1);
  c.shape(loss, "loss", {n});
  c.shape(labels, "labels", {n});
  if (loss.empty()) return;
  dispatch(d, [&](auto tag) {
    using T = decltype(tag);
    on_device(device, [&] {
      lf::cross_entropy_forward_cuda<T>(loss.p<T>(), logits.p<T>(), labels.p<int64_t>(), n,
                                        classes, as_stream(stream));
    });
  });
}

void cross_entropy_backward(py::object dlogits_, py::object logits_, py::object labels_,
                            double scale, uintptr_t stream, int device) {
  Call c("cross_entropy_backward");
  const DT d = c.float_dtype(logits_, "logits");
  Arr logits = c.check(logits_, "logits", d, 2);
  Arr dlogits = c.check(dlogits_, "dlogits", d, 2);
  Arr labels = c.check(labels_, "labels", DT::I64, 1);
  c.device(device);
  const int64_t n = logits.dim(0), classes = logits.dim(1);
  c.same_shape(dlogits, "dlogits", logits);
  c.shape(labels, "labels", {n});
  if (dlogits.empty()) return;
  dispatch(d, [&](auto tag) {
    using T = decltype(tag);
    on_device(device, [&] {
      lf::cross_entropy_backward_cuda<T>(dlogits.p<T>(), logits.p<T>(), labels.p<int64_t>(),
                                         static_cast<T>(scale), n, classes, as_stream(stream));
    });
  });
}

// ---- elementwise -----------------------------------------------------------------------
// Any rank is accepted as long as all arrays have the same shape (the data are flat).

template <class F32, class F64>
void unary(const char* fn, const char* out_name, const char* in_name, py::object out_,
           py::object in_, uintptr_t stream, int device, F32 f32, F64 f64) {
  Call c(fn);
  const DT d = c.float_dtype(in_, in_name);
  Arr in = c.check(in_, in_name, d, -1), out = c.check(out_, out_name, d, -1);
  c.device(device);
  c.same_shape(out, out_name, in);
  if (out.empty()) return;
  const int64_t n = in.size();
  on_device(device, [&] {
    if (d == DT::F32) {
      f32(out.p<float>(), in.p<float>(), n, as_stream(stream));
    } else {
      f64(out.p<double>(), in.p<double>(), n, as_stream(stream));
    }
  });
}

template <class F32, class F64>
void binary(const char* fn, const char* in2_name, py::object dx_, py::object dy_, py::object z_,
            uintptr_t stream, int device, F32 f32, F64 f64) {
  Call c(fn);
  const DT d = c.float_dtype(dy_, "dy");
  Arr dy = c.check(dy_, "dy", d, -1), z = c.check(z_, in2_name, d, -1);
  Arr dx = c.check(dx_, "dx", d, -1);
  c.device(device);
  c.same_shape(z, in2_name, dy);
  c.same_shape(dx, "dx", dy);
  if (dx.empty()) return;
  const int64_t n = dy.size();
  on_device(device, [&] {
    if (d == DT::F32) {
      f32(dx.p<float>(), dy.p<float>(), z.p<float>(), n, as_stream(stream));
    } else {
      f64(dx.p<double>(), dy.p<double>(), z.p<double>(), n, as_stream(stream));
    }
  });
}

}  // namespace

PYBIND11_MODULE(_cuda, m) {
  m.doc() = "layerforge CUDA kernels (the _C kernel interface on device-array descriptors, "
            "plus stream and device) and device discovery";
  m.def("build_info", [] {
    py::dict d;
    d["cuda_compiler_version"] = LAYERFORGE_CUDA_COMPILER_VERSION;
    d["architectures"] = LAYERFORGE_CUDA_ARCHS;
    d["cudart"] = "static";
    return d;
  });
  m.def("device_count", [] {
    lf::CudaStatus st;
    {
      py::gil_scoped_release nogil;
      st = lf::cuda_status();
    }
    return st.device_count;
  });
  m.def("status", [] {
    lf::CudaStatus st;
    {
      py::gil_scoped_release nogil;
      st = lf::cuda_status();
    }
    py::dict d;
    d["device_count"] = st.device_count;
    d["runtime_version"] = st.runtime_version;
    d["driver_version"] = st.driver_version;
    d["error"] = st.error.empty() ? py::object(py::none()) : py::object(py::str(st.error));
    py::list devs;
    for (const auto& dv : st.devices) {
      py::dict e;
      e["index"] = dv.index;
      e["name"] = dv.name;
      e["compute_capability"] = py::make_tuple(dv.major, dv.minor);
      e["total_memory"] = dv.total_memory;
      e["multiprocessors"] = dv.multiprocessors;
      devs.append(e);
    }
    d["devices"] = devs;
    return d;
  });
  m.def("has_kernels", [] { return true; },
        "True: this build holds the op kernels (the kernel interface of _backend.py).");

  m.def("conv2d_forward", &conv2d_forward, py::arg("y"), py::arg("x"), py::arg("w"),
        py::arg("b").none(true), py::arg("sh"), py::arg("sw"), py::arg("ph"), py::arg("pw"),
        py::arg("dh"), py::arg("dw"), py::arg("stream"), py::arg("device"));
  m.def("conv2d_backward", &conv2d_backward, py::arg("dx").none(true), py::arg("dw").none(true),
        py::arg("db").none(true), py::arg("dy"), py::arg("x"), py::arg("w"), py::arg("sh"),
        py::arg("sw"), py::arg("ph"), py::arg("pw"), py::arg("dh"), py::arg("dw_"),
        py::arg("stream"), py::arg("device"));
  m.def("max_pool2d_forward", &max_pool2d_forward, py::arg("y"), py::arg("indices").none(true),
        py::arg("x"), py::arg("kh"), py::arg("kw"), py::arg("sh"), py::arg("sw"), py::arg("ph"),
        py::arg("pw"), py::arg("stream"), py::arg("device"));
  m.def("max_pool2d_backward", &max_pool2d_backward, py::arg("dx"), py::arg("dy"),
        py::arg("indices"), py::arg("kh"), py::arg("kw"), py::arg("sh"), py::arg("sw"),
        py::arg("ph"), py::arg("pw"), py::arg("stream"), py::arg("device"));
  m.def("avg_pool2d_forward", &avg_pool2d_forward, py::arg("y"), py::arg("x"), py::arg("kh"),
        py::arg("kw"), py::arg("sh"), py::arg("sw"), py::arg("ph"), py::arg("pw"),
        py::arg("count_include_pad"), py::arg("stream"), py::arg("device"));
  m.def("avg_pool2d_backward", &avg_pool2d_backward, py::arg("dx"), py::arg("dy"),
        py::arg("kh"), py::arg("kw"), py::arg("sh"), py::arg("sw"), py::arg("ph"),
        py::arg("pw"), py::arg("count_include_pad"), py::arg("stream"), py::arg("device"));
  m.def("linear_forward", &linear_forward, py::arg("y"), py::arg("x"), py::arg("w"),
        py::arg("b").none(true), py::arg("stream"), py::arg("device"));
  m.def("linear_backward", &linear_backward, py::arg("dx").none(true), py::arg("dw").none(true),
        py::arg("db").none(true), py::arg("dy"), py::arg("x"), py::arg("w"), py::arg("stream"),
        py::arg("device"));

  m.def("softmax_forward", [](py::object y, py::object x, uintptr_t stream, int device) {
    softmax_fwd("softmax_forward", SmOp::SoftmaxF, y, x, stream, device);
  }, py::arg("y"), py::arg("x"), py::arg("stream"), py::arg("device"));
  m.def("log_softmax_forward", [](py::object y, py::object x, uintptr_t stream, int device) {
    softmax_fwd("log_softmax_forward", SmOp::LogSoftmaxF, y, x, stream, device);
  }, py::arg("y"), py::arg("x"), py::arg("stream"), py::arg("device"));
  m.def("softmax_backward", [](py::object dx, py::object dy, py::object y, uintptr_t stream,
                               int device) {
    softmax_bwd("softmax_backward", SmOp::SoftmaxB, dx, dy, y, stream, device);
  }, py::arg("dx"), py::arg("dy"), py::arg("y"), py::arg("stream"), py::arg("device"));
  m.def("log_softmax_backward", [](py::object dx, py::object dy, py::object y, uintptr_t stream,
                                   int device) {
    softmax_bwd("log_softmax_backward", SmOp::LogSoftmaxB, dx, dy, y, stream, device);
  }, py::arg("dx"), py::arg("dy"), py::arg("y"), py::arg("stream"), py::arg("device"));

  m.def("cross_entropy_forward", &cross_entropy_forward, py::arg("loss"), py::arg("logits"),
        py::arg("labels"), py::arg("stream"), py::arg("device"));
  m.def("cross_entropy_backward", &cross_entropy_backward, py::arg("dlogits"),
        py::arg("logits"), py::arg("labels"), py::arg("scale"), py::arg("stream"),
        py::arg("device"));

  m.def("relu_forward", [](py::object y, py::object x, uintptr_t stream, int device) {
    unary("relu_forward", "y", "x", y, x, stream, device, &lf::relu_forward_cuda<float>,
          &lf::relu_forward_cuda<double>);
  }, py::arg("y"), py::arg("x"), py::arg("stream"), py::arg("device"));
  m.def("sigmoid_forward", [](py::object y, py::object x, uintptr_t stream, int device) {
    unary("sigmoid_forward", "y", "x", y, x, stream, device, &lf::sigmoid_forward_cuda<float>,
          &lf::sigmoid_forward_cuda<double>);
  }, py::arg("y"), py::arg("x"), py::arg("stream"), py::arg("device"));
  m.def("tanh_forward", [](py::object y, py::object x, uintptr_t stream, int device) {
    unary("tanh_forward", "y", "x", y, x, stream, device, &lf::tanh_forward_cuda<float>,
          &lf::tanh_forward_cuda<double>);
  }, py::arg("y"), py::arg("x"), py::arg("stream"), py::arg("device"));
  m.def("relu_backward", [](py::object dx, py::object dy, py::object x, uintptr_t stream,
                            int device) {
    binary("relu_backward", "x", dx, dy, x, stream, device, &lf::relu_backward_cuda<float>,
           &lf::relu_backward_cuda<double>);
  }, py::arg("dx"), py::arg("dy"), py::arg("x"), py::arg("stream"), py::arg("device"));
  m.def("sigmoid_backward", [](py::object dx, py::object dy, py::object y, uintptr_t stream,
                               int device) {
    binary("sigmoid_backward", "y", dx, dy, y, stream, device, &lf::sigmoid_backward_cuda<float>,
           &lf::sigmoid_backward_cuda<double>);
  }, py::arg("dx"), py::arg("dy"), py::arg("y"), py::arg("stream"), py::arg("device"));
  m.def("tanh_backward", [](py::object dx, py::object dy, py::object y, uintptr_t stream,
                            int device) {
    binary("tanh_backward", "y", dx, dy, y, stream, device, &lf::tanh_backward_cuda<float>,
           &lf::tanh_backward_cuda<double>);
  }, py::arg("dx"), py::arg("dy"), py::arg("y"), py::arg("stream"), py::arg("device"));
}
