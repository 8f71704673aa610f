"""The functional op set: validate -> allocate -> dispatch to a backend's kernel.

Semantics follow torch.nn.functional: NCHW activations, conv weights (K, C, R, S), dense
weights (OUT, IN), cross-correlation, an explicit softmax ``dim``. Every op ``f`` has
``f_backward(dy, <f's array inputs>, <f's params>)`` returning the gradients of f's array
inputs in order (None for an absent bias). Backwards return fresh arrays unless ``out=``
is given, and never accumulate into their outputs.

Inputs may be any float32/float64 array-likes; non-contiguous or negative-stride arrays are
copied to C order first (results are identical). All array arguments of a call must share
one dtype, one kind and one device. Every op takes ``backend=`` ('cpp', 'numba', 'cuda';
None = ``LAYERFORGE_BACKEND`` or the C++ module when built, else Numba, for host arrays).

CUDA arrays (CuPy, torch CUDA tensors, any ``__cuda_array_interface__`` / ``__dlpack__``
producer on a CUDA device) go to the CUDA backend without a copy; outputs come from the
caller's framework (torch for torch, else CuPy) and the kernels run on its current stream.
On the device nothing is synchronised, so class labels and pooling indices are not
range-checked there (an out-of-range label gives a NaN loss row; the host kernels count
them and the op raises).
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Sequence

import numpy as np

from . import _backend, _device

Array = np.ndarray
_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))

__all__ = [
    "conv2d", "conv2d_backward", "conv2d_output_shape", "conv2d_relu_maxpool", "conv2d_relu_maxpool_backward",
    "max_pool2d", "max_pool2d_backward", "avg_pool2d", "avg_pool2d_backward",
    "linear", "linear_backward",
    "softmax", "softmax_backward", "log_softmax", "log_softmax_backward",
    "cross_entropy", "cross_entropy_backward",
    "relu", "relu_backward", "sigmoid", "sigmoid_backward", "tanh", "tanh_backward",
    "adam_update", "RNN_ACTIVATIONS", "rnn", "rnn_backward",
]


# ---------------------------------------------------------------------------- validation

def _array(op: str, name: str, a: Any, ndim: int | tuple[int, ...] | None = None) -> Any:
    """A C-contiguous float32/float64 array of a's kind (NumPy on the host, or a CUDA array),
    or a TypeError/ValueError naming op and argument."""
    if type(a) is np.ndarray and a.dtype in _FLOATS and a.flags.c_contiguous and (ndim is None or a.ndim == ndim):
        return a  # the common case, checked with no further calls (per-op overhead matters)
    ns = _kind(op, name, a)
    arr = ns.asarray(a)
    dt = ns.dtype(arr)
    if dt not in _FLOATS:
        raise TypeError(f"{op}: {name} must be float32 or float64, got dtype {dt}")
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else ndim
        if arr.ndim not in allowed:
            want = " or ".join(f"{d}-D" for d in allowed)
            raise ValueError(f"{op}: {name} must be {want}, got shape {tuple(arr.shape)} ({arr.ndim}-D)")
    return ns.contiguous(arr)


def _kind(op: str, name: str, a: Any) -> type:
    """The array kind (_device namespace) of argument ``name``, or a TypeError naming it."""
    if a is None:
        raise TypeError(f"{op}: {name} must be an array, got None")
    try:
        return _device.namespace(a)
    except TypeError as exc:
        raise TypeError(f"{op}: {name}: {exc}") from None


def _ns(a: Any) -> type:
    return _device.namespace(a)


def _size(a: Any) -> int:
    return a.size if type(a) is np.ndarray else _ns(a).size(a)


def _kernels(op: str, backend: str | None, x: Any) -> Any:
    """The kernel module for a call whose first array is x (host or device)."""
    device = type(x) is not np.ndarray and _ns(x).is_device
    return _backend.resolve(backend, device, op)[1]


def _same_dtype(op: str, **arrays: Any) -> np.dtype:
    """The one dtype of the call's arrays, which must also share one kind and one device."""
    dt = None
    for v in arrays.values():  # the common case (NumPy arrays of one dtype), no allocations
        if v is None:
            continue
        if type(v) is not np.ndarray:
            break
        if dt is None:
            dt = v.dtype
        elif v.dtype is not dt and v.dtype != dt:
            break
    else:
        return dt
    items = [(k, v) for k, v in arrays.items() if v is not None]
    k0, a0 = items[0]
    ns = _ns(a0)
    dt = ns.dtype(a0)
    for k, v in items[1:]:
        nv = _ns(v)
        if nv is not ns or nv.device_id(v) != ns.device_id(a0):
            raise TypeError(
                f"{op}: all arrays must be of one kind on one device; {k0} is a {ns.name} array "
                f"(device {ns.device_id(a0)}) but {k} is a {nv.name} array (device {nv.device_id(v)})"
            )
        if nv.dtype(v) != dt:
            raise TypeError(
                f"{op}: all arrays must share one dtype; {k0} is {dt} but {k} is {nv.dtype(v)}"
            )
    return dt


def _int(op: str, name: str, v: Any) -> int:
    if type(v) is int:  # the common case, without the slow ABC checks below
        return v
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Integral):
        if isinstance(v, numbers.Real) and not math.isfinite(float(v)):
            raise ValueError(f"{op}: {name} must be a finite integer, got {v!r}")
        raise TypeError(f"{op}: {name} must be an int, got {type(v).__name__} {v!r}")
    return int(v)


def _pair(op: str, name: str, v: Any) -> tuple[int, int]:
    if type(v) is int:
        return v, v
    if isinstance(v, (tuple, list)):
        if len(v) != 2:
            raise ValueError(f"{op}: {name} must be an int or a pair of ints, got {v!r}")
        return _int(op, name, v[0]), _int(op, name, v[1])
    i = _int(op, name, v)
    return i, i


def _positive(op: str, name: str, v: Any, minimum: int = 1) -> tuple[int, int]:
    p = _pair(op, name, v)
    if min(p) < minimum:
        raise ValueError(f"{op}: {name} must be >= {minimum}, got {v!r}")
    return p


def _output(op: str, out: Any, shape: tuple[int, ...], dtype: np.dtype, like: Any, name: str = "out") -> Any:
    """A fresh output of like's kind and device, or the caller's ``out`` after checking it."""
    if out is None and type(like) is np.ndarray:
        return np.empty(shape, dtype)
    ns = _ns(like)
    if out is None:
        return ns.empty(tuple(shape), dtype, like)
    if (not ns.is_device and not isinstance(out, np.ndarray)) or _ns(out) is not ns \
            or ns.device_id(out) != ns.device_id(like):
        raise TypeError(f"{op}: {name} must be a {ns.name} array on the inputs' device, got {type(out).__name__}")
    if tuple(out.shape) != tuple(shape) or ns.dtype(out) != dtype:
        raise ValueError(f"{op}: {name} must have shape {tuple(shape)} and dtype {dtype}, "
                         f"got {tuple(out.shape)} {ns.dtype(out)}")
    if not ns.is_contiguous(out):
        raise ValueError(f"{op}: {name} must be a writeable C-contiguous array")
    return out


def _zero(*arrays: Any) -> None:
    for a in arrays:
        if a is not None:
            _ns(a).zero_(a)


def _expect_shape(op: str, name: str, a: Any, shape: tuple[int, ...]) -> None:
    if tuple(a.shape) != tuple(shape):
        raise ValueError(f"{op}: {name} must have shape {tuple(shape)}, got {tuple(a.shape)}")


def _outs(op: str, out: Sequence[Array | None] | None, count: int) -> list[Array | None]:
    if out is None:
        return [None] * count
    if not isinstance(out, (tuple, list)) or len(out) != count:
        raise TypeError(f"{op}: out must be a tuple of {count} arrays (or None entries), got {out!r}")
    return list(out)


# ---------------------------------------------------------------------------- convolution

def _conv_params(op: str, x_shape: Sequence[int], w_shape: Sequence[int], stride: Any, padding: Any, dilation: Any):
    """Validated (sh, sw, pt, pb, pl, pr, dh, dw, oh, ow) for inputs of these shapes."""
    n, c, h, wd = x_shape
    k, cw, r, s = w_shape
    if cw != c:
        raise ValueError(f"{op}: x has {c} channels but w expects {cw} "
                         f"(w shape {tuple(w_shape)}, x shape {tuple(x_shape)})")
    sh, sw = _positive(op, "stride", stride)
    dh, dw = _positive(op, "dilation", dilation)
    if r < 1 or s < 1:
        raise ValueError(f"{op}: kernel must be at least 1x1, got w shape {tuple(w_shape)}")
    if isinstance(padding, str):
        if padding == "valid":
            pt = pb = pl = pr = 0
        elif padding == "same":
            if (sh, sw) != (1, 1):
                raise ValueError(f"{op}: padding='same' needs stride 1, got stride {(sh, sw)}")
            th, tw = dh * (r - 1), dw * (s - 1)
            pt, pb, pl, pr = th // 2, th - th // 2, tw // 2, tw - tw // 2
        else:
            raise ValueError(f"{op}: padding must be an int, a pair, 'valid' or 'same', got {padding!r}")
    else:
        ph, pw = _positive(op, "padding", padding, minimum=0)
        pt, pb, pl, pr = ph, ph, pw, pw
    eh, ew = dh * (r - 1) + 1, dw * (s - 1) + 1
    hp, wp = h + pt + pb, wd + pl + pr
    if eh > hp or ew > wp:
        raise ValueError(
            f"{op}: kernel extent {(eh, ew)} (kernel {(r, s)}, dilation {(dh, dw)}) is larger than "
            f"the padded input {(hp, wp)}"
        )
    return sh, sw, pt, pb, pl, pr, dh, dw, (hp - eh) // sh + 1, (wp - ew) // sw + 1


def conv2d_output_shape(
    x_shape: Sequence[int], w_shape: Sequence[int], stride: Any = 1, padding: Any = 0, dilation: Any = 1
) -> tuple[int, int, int, int]:
    """(N, K, OH, OW) of conv2d for inputs of these shapes (validates like conv2d)."""
    x_shape, w_shape = tuple(int(d) for d in x_shape), tuple(int(d) for d in w_shape)
    if len(x_shape) != 4 or len(w_shape) != 4:
        raise ValueError(f"conv2d_output_shape: expected 4-D shapes, got {x_shape} and {w_shape}")
    p = _conv_params("conv2d", x_shape, w_shape, stride, padding, dilation)
    return (x_shape[0], w_shape[0], p[8], p[9])


def _conv_inputs(op: str, x: Any, w: Any, b: Any):
    x = _array(op, "x", x, 4)
    w = _array(op, "w", w, 4)
    b = None if b is None else _array(op, "b", b, 1)
    dt = _same_dtype(op, x=x, w=w, b=b)
    if b is not None:
        _expect_shape(op, "b", b, (w.shape[0],))
    return x, w, b, dt


def _conv_activation(op: str, activation: Any) -> bool:
    """True for the fused relu; None means no activation."""
    if activation is None:
        return False
    if activation != "relu":
        raise ValueError(f"{op}: activation must be None or 'relu', got {activation!r}")
    return True


def conv2d(
    x: Any, w: Any, b: Any = None, stride: Any = 1, padding: Any = 0, dilation: Any = 1,
    *, activation: str | None = None, backend: str | None = None, out: Array | None = None,
) -> Array:
    """2-D cross-correlation. x (N, C, H, W), w (K, C, R, S), b (K,) -> (N, K, OH, OW).

    padding: int, (ph, pw), 'valid' or 'same' (stride 1; the odd extra row/column of an even
    kernel goes bottom/right, as in PyTorch).
    activation: None, or 'relu' applied to the output in the same pass (host backends; on a
    CUDA device it runs as a second kernel).
    """
    op = "conv2d"
    relu = _conv_activation(op, activation)
    x, w, b, dt = _conv_inputs(op, x, w, b)
    sh, sw, pt, _, pl, _, dh, dw, oh, ow = _conv_params(op, x.shape, w.shape, stride, padding, dilation)
    k = _kernels(op, backend, x)
    y = _output(op, out, (x.shape[0], w.shape[0], oh, ow), dt, x)
    if not _size(y):
        return y
    if relu and _ns(x).is_device:  # the CUDA kernels have no fused epilogue
        a = _ns(x).empty(tuple(y.shape), dt, x)
        k.conv2d_forward(a, x, w, b, sh, sw, pt, pl, dh, dw)
        k.relu_forward(y, a)
    else:
        k.conv2d_forward(y, x, w, b, sh, sw, pt, pl, dh, dw, *((True,) if relu else ()))
    return y


def conv2d_backward(
    dy: Any, x: Any, w: Any, b: Any = None, stride: Any = 1, padding: Any = 0, dilation: Any = 1,
    *, need_dx: bool = True, activation: str | None = None, y: Any = None,
    backend: str | None = None, out: Sequence[Array | None] | None = None,
) -> tuple[Array | None, Array, Array | None]:
    """Gradients (dx (N,C,H,W), dw (K,C,R,S), db (K,) or None) of conv2d for dy (N,K,OH,OW).

    ``need_dx=False`` skips the input gradient (a network's first layer) and returns None for it.
    ``activation='relu'`` with the forward's output ``y=`` (after the relu): dy is the gradient
    with respect to y, and the relu backward runs fused into the convolution's.
    """
    op = "conv2d_backward"
    relu = _conv_activation(op, activation)
    x, w, b, dt = _conv_inputs(op, x, w, b)
    dy = _array(op, "dy", dy, 4)
    _same_dtype(op, x=x, dy=dy)
    sh, sw, pt, _, pl, _, dh, dw, oh, ow = _conv_params(op, x.shape, w.shape, stride, padding, dilation)
    _expect_shape(op, "dy", dy, (x.shape[0], w.shape[0], oh, ow))
    if relu:
        if y is None:
            raise TypeError(f"{op}: activation='relu' needs the forward's output y=")
        y = _array(op, "y", y, 4)
        _same_dtype(op, x=x, y=y)
        _expect_shape(op, "y", y, tuple(dy.shape))
    elif y is not None:
        raise TypeError(f"{op}: y= is only used with activation='relu'")
    k = _kernels(op, backend, x)
    if relu and _ns(x).is_device:  # the CUDA kernels have no fused epilogue
        dy = relu_backward(dy, y, backend=backend)
        relu = False
    o = _outs(op, out, 3)
    dx = _output(op, o[0], x.shape, dt, x, "out[0]") if need_dx else None
    dwt = _output(op, o[1], w.shape, dt, x, "out[1]")
    db = _output(op, o[2], (w.shape[0],), dt, x, "out[2]") if b is not None else None
    if _size(dy) == 0 or _size(x) == 0:
        _zero(dx, dwt, db)
    else:
        k.conv2d_backward(dx, dwt, db, dy, x, w, sh, sw, pt, pl, dh, dw, *((y,) if relu else ()))
    return dx, dwt, db


def _conv_pool_params(op: str, x: Array, w: Array, stride: Any, padding: Any, dilation: Any):
    """The convolution's (sh, sw, top pad, left pad, dh, dw, oh, ow); its output must hold a 2x2 window."""
    sh, sw, pt, _, pl, _, dh, dw, oh, ow = _conv_params(op, x.shape, w.shape, stride, padding, dilation)
    if oh < 2 or ow < 2:
        raise ValueError(f"{op}: the convolution output {(oh, ow)} is smaller than the 2x2 pooling window")
    return sh, sw, pt, pl, dh, dw, oh, ow


def conv2d_relu_maxpool(
    x: Any, w: Any, b: Any = None, stride: Any = 1, padding: Any = 0, dilation: Any = 1,
    *, backend: str | None = None,
) -> tuple[Array, Array]:
    """``max_pool2d(relu(conv2d(x, w, b, ...)), 2, return_indices=True)`` in one call: the
    documents' Conv2D(relu) -> MaxPooling2D(2) pair. x (N, C, H, W) -> y, indices
    (N, K, OH // 2, OW // 2), indices into the (N, K, OH, OW) convolution output planes.

    Same results as the three ops; on the host the full-size convolution output stays in
    cache (the batch runs in chunks). CUDA arrays run the three ops.
    """
    op = "conv2d_relu_maxpool"
    x, w, b, dt = _conv_inputs(op, x, w, b)
    sh, sw, pt, pl, dh, dw, oh, ow = _conv_pool_params(op, x, w, stride, padding, dilation)
    k = _kernels(op, backend, x)
    fused = getattr(k, "conv2d_relu_pool_forward", None)
    if fused is None:
        a = conv2d(x, w, b, stride, padding, dilation, activation="relu", backend=backend)
        return max_pool2d(a, 2, return_indices=True, backend=backend)
    y = _output(op, None, (x.shape[0], w.shape[0], oh // 2, ow // 2), dt, x)
    idx = _output(op, None, tuple(y.shape), np.dtype(np.int64), x)
    if _size(y):
        fused(y, idx, x, w, b, oh, ow, sh, sw, pt, pl, dh, dw)
    return y, idx


def conv2d_relu_maxpool_backward(
    dy: Any, x: Any, w: Any, b: Any = None, stride: Any = 1, padding: Any = 0, dilation: Any = 1,
    *, y: Any, indices: Any, need_dx: bool = True, backend: str | None = None,
) -> tuple[Array | None, Array, Array | None]:
    """(dx, dw, db) of ``conv2d_relu_maxpool`` for dy (N, K, OH // 2, OW // 2), from the
    forward's pooled ``y`` and ``indices``; ``need_dx=False`` skips dx (returns None)."""
    op = "conv2d_relu_maxpool_backward"
    x, w, b, dt = _conv_inputs(op, x, w, b)
    sh, sw, pt, pl, dh, dw, oh, ow = _conv_pool_params(op, x, w, stride, padding, dilation)
    shape = (x.shape[0], w.shape[0], oh // 2, ow // 2)
    dy = _array(op, "dy", dy, 4)
    y = _array(op, "y", y, 4)
    _same_dtype(op, x=x, dy=dy, y=y)
    _expect_shape(op, "dy", dy, shape)
    _expect_shape(op, "y", y, shape)
    idx = _indices(op, "indices", indices, x)
    _expect_shape(op, "indices", idx, shape)
    k = _kernels(op, backend, x)
    fused = getattr(k, "conv2d_relu_pool_backward", None)
    if fused is None:
        ns = _ns(x)
        full = ns.empty((x.shape[0], w.shape[0], oh, ow), dt, x)  # only its shape is read
        da = max_pool2d_backward(relu_backward(dy, y, backend=backend), full, 2, indices=idx, backend=backend)
        return conv2d_backward(da, x, w, b, stride, padding, dilation, need_dx=need_dx, backend=backend)
    dx = _output(op, None, x.shape, dt, x) if need_dx else None
    dwt = _output(op, None, w.shape, dt, x)
    db = _output(op, None, (w.shape[0],), dt, x) if b is not None else None
    if _size(x) == 0:
        _zero(dx, dwt, db)
    else:
        fused(dx, dwt, db, dy, idx, y, x, w, oh, ow, sh, sw, pt, pl, dh, dw)
    return dx, dwt, db


# ---------------------------------------------------------------------------- pooling

def _pool_params(op: str, x: Array, kernel_size: Any, stride: Any, padding: Any):
    if (type(kernel_size) is int and stride is None and type(padding) is int and padding == 0
            and 1 <= kernel_size <= min(x.shape[2:])):
        # The documents' call (kernel_size=2), checked without the general path's pairs
        # (0.3 us of the 3.9 us that max_pool2d spent in Python; the kernel is 30 us there).
        k = kernel_size
        return k, k, k, k, 0, 0, (x.shape[2] - k) // k + 1, (x.shape[3] - k) // k + 1
    kh, kw = _positive(op, "kernel_size", kernel_size)
    sh, sw = (kh, kw) if stride is None else _positive(op, "stride", stride)
    ph, pw = _positive(op, "padding", padding, minimum=0)
    if 2 * ph > kh or 2 * pw > kw:
        raise ValueError(f"{op}: padding {(ph, pw)} must be at most half the kernel size {(kh, kw)}")
    hp, wp = x.shape[2] + 2 * ph, x.shape[3] + 2 * pw
    if kh > hp or kw > wp:
        raise ValueError(f"{op}: kernel_size {(kh, kw)} is larger than the padded input {(hp, wp)}")
    return kh, kw, sh, sw, ph, pw, (hp - kh) // sh + 1, (wp - kw) // sw + 1


def max_pool2d(
    x: Any, kernel_size: Any, stride: Any = None, padding: Any = 0, return_indices: bool = False,
    *, backend: str | None = None,
) -> Array | tuple[Array, Array]:
    """Max pooling. x (N, C, H, W) -> y (N, C, OH, OW) [, indices int64 (N, C, OH, OW)].

    NaN propagates; ties go to the first maximum; indices are h*W + w in the input plane.
    """
    op = "max_pool2d"
    x = _array(op, "x", x, 4)
    kh, kw, sh, sw, ph, pw, oh, ow = _pool_params(op, x, kernel_size, stride, padding)
    k = _kernels(op, backend, x)
    y = _output(op, None, (x.shape[0], x.shape[1], oh, ow), _ns(x).dtype(x), x)
    idx = _output(op, None, tuple(y.shape), np.dtype(np.int64), x) if return_indices else None
    if _size(y):
        k.max_pool2d_forward(y, idx, x, kh, kw, sh, sw, ph, pw)
    return (y, idx) if return_indices else y


def max_pool2d_backward(
    dy: Any, x: Any, kernel_size: Any, stride: Any = None, padding: Any = 0,
    *, indices: Any = None, backend: str | None = None, out: Array | None = None,
) -> Array:
    """dx (N, C, H, W) for dy (N, C, OH, OW); pass the forward's ``indices`` to skip the argmax.

    Indices outside [0, H*W) raise ValueError (on host arrays); ``out`` is then left
    partly written."""
    op = "max_pool2d_backward"
    x = _array(op, "x", x, 4)
    dy = _array(op, "dy", dy, 4)
    _same_dtype(op, x=x, dy=dy)
    kh, kw, sh, sw, ph, pw, oh, ow = _pool_params(op, x, kernel_size, stride, padding)
    shape = (x.shape[0], x.shape[1], oh, ow)
    _expect_shape(op, "dy", dy, shape)
    k = _kernels(op, backend, x)
    ns = _ns(x)
    dt = ns.dtype(x)
    dx = _output(op, out, x.shape, dt, x)
    if _size(dy) == 0:
        _zero(dx)
        return dx
    if indices is None:
        idx = ns.empty(shape, np.int64, x)
        k.max_pool2d_forward(ns.empty(shape, dt, x), idx, x, kh, kw, sh, sw, ph, pw)
    else:
        idx = _indices(op, "indices", indices, x)
        _expect_shape(op, "indices", idx, shape)
    # The host kernels skip and count indices outside the plane: the range check costs no
    # pass of its own (a NumPy max over the indices cost a sixth of the call on the
    # documents' shapes). The CUDA kernel skips them too and returns None.
    if k.max_pool2d_backward(dx, dy, idx, kh, kw, sh, sw, ph, pw):
        plane = x.shape[2] * x.shape[3]
        raise ValueError(f"{op}: indices must lie in [0, {plane}), got [{idx.min()}, {idx.max()}]")
    return dx


def avg_pool2d(
    x: Any, kernel_size: Any, stride: Any = None, padding: Any = 0, count_include_pad: bool = True,
    *, backend: str | None = None,
) -> Array:
    """Average pooling. x (N, C, H, W) -> (N, C, OH, OW); divisor kh*kw, or the in-bounds
    count when count_include_pad=False."""
    op = "avg_pool2d"
    x = _array(op, "x", x, 4)
    kh, kw, sh, sw, ph, pw, oh, ow = _pool_params(op, x, kernel_size, stride, padding)
    k = _kernels(op, backend, x)
    y = _output(op, None, (x.shape[0], x.shape[1], oh, ow), _ns(x).dtype(x), x)
    if _size(y):
        k.avg_pool2d_forward(y, x, kh, kw, sh, sw, ph, pw, bool(count_include_pad))
    return y


def avg_pool2d_backward(
    dy: Any, x: Any, kernel_size: Any, stride: Any = None, padding: Any = 0, count_include_pad: bool = True,
    *, backend: str | None = None, out: Array | None = None,
) -> Array:
    """dx (N, C, H, W) of avg_pool2d for dy (N, C, OH, OW)."""
    op = "avg_pool2d_backward"
    x = _array(op, "x", x, 4)
    dy = _array(op, "dy", dy, 4)
    _same_dtype(op, x=x, dy=dy)
    kh, kw, sh, sw, ph, pw, oh, ow = _pool_params(op, x, kernel_size, stride, padding)
    _expect_shape(op, "dy", dy, (x.shape[0], x.shape[1], oh, ow))
    k = _kernels(op, backend, x)
    dx = _output(op, out, x.shape, _ns(x).dtype(x), x)
    if _size(dy) == 0:
        _zero(dx)
    else:
        k.avg_pool2d_backward(dx, dy, kh, kw, sh, sw, ph, pw, bool(count_include_pad))
    return dx


# ---------------------------------------------------------------------------- dense

def _linear_inputs(op: str, x: Any, w: Any, b: Any):
    x = _array(op, "x", x)
    w = _array(op, "w", w, 2)
    b = None if b is None else _array(op, "b", b, 1)
    dt = _same_dtype(op, x=x, w=w, b=b)
    if x.ndim < 1:
        raise ValueError(f"{op}: x must have at least 1 dimension (..., in), got a scalar")
    if x.shape[-1] != w.shape[1]:
        raise ValueError(f"{op}: x has {x.shape[-1]} features (shape {x.shape}) but w expects {w.shape[1]} (w shape {w.shape})")
    if b is not None:
        _expect_shape(op, "b", b, (w.shape[0],))
    return x, w, b, dt


def linear(x: Any, w: Any, b: Any = None, *, backend: str | None = None, out: Array | None = None) -> Array:
    """Dense layer y = x w^T + b. x (..., IN), w (OUT, IN), b (OUT,) -> (..., OUT)."""
    op = "linear"
    x, w, b, dt = _linear_inputs(op, x, w, b)
    k = _kernels(op, backend, x)
    y = _output(op, out, tuple(x.shape[:-1]) + (w.shape[0],), dt, x)
    if _size(y):
        if x.shape[-1] == 0:
            y[...] = 0 if b is None else b
        else:
            k.linear_forward(y.reshape(-1, w.shape[0]), x.reshape(-1, w.shape[1]), w, b)
    return y


def linear_backward(
    dy: Any, x: Any, w: Any, b: Any = None,
    *, need_dx: bool = True, backend: str | None = None, out: Sequence[Array | None] | None = None,
) -> tuple[Array | None, Array, Array | None]:
    """(dx (..., IN), dw (OUT, IN), db (OUT,) or None) for dy (..., OUT).

    ``need_dx=False`` skips the input gradient and returns None for it.
    """
    op = "linear_backward"
    x, w, b, dt = _linear_inputs(op, x, w, b)
    dy = _array(op, "dy", dy)
    _same_dtype(op, x=x, dy=dy)
    _expect_shape(op, "dy", dy, tuple(x.shape[:-1]) + (w.shape[0],))
    k = _kernels(op, backend, x)
    o = _outs(op, out, 3)
    dx = _output(op, o[0], x.shape, dt, x, "out[0]") if need_dx else None
    dwt = _output(op, o[1], w.shape, dt, x, "out[1]")
    db = _output(op, o[2], (w.shape[0],), dt, x, "out[2]") if b is not None else None
    if _size(dy) == 0 or _size(x) == 0:
        _zero(dx, dwt, db)
        if db is not None and _size(dy):
            db[...] = _ns(dy).sum0(dy.reshape(-1, w.shape[0]))
    else:
        k.linear_backward(dx.reshape(-1, w.shape[1]) if dx is not None else None, dwt, db, dy.reshape(-1, w.shape[0]), x.reshape(-1, w.shape[1]), w)
    return dx, dwt, db


# ---------------------------------------------------------------------------- softmax family

def _dim(op: str, x: Array, dim: Any) -> tuple[int, int, int]:
    """The (outer, dim, inner) view of x around axis ``dim``."""
    if dim is None:
        raise TypeError(f"{op}: dim must be given explicitly (as in torch.nn.functional)")
    d = _int(op, "dim", dim)
    if x.ndim == 0:
        raise ValueError(f"{op}: x must have at least 1 dimension, got a scalar")
    if not -x.ndim <= d < x.ndim:
        raise ValueError(f"{op}: dim {d} is out of range for a {x.ndim}-D input of shape {x.shape}")
    d %= x.ndim
    return (math.prod(x.shape[:d]), x.shape[d], math.prod(x.shape[d + 1:]))


def _softmax_fwd(op: str, kernel: str, x: Any, dim: Any, backend: str | None, out: Array | None) -> Array:
    x = _array(op, "x", x)
    v = _dim(op, x, dim)
    k = _kernels(op, backend, x)
    y = _output(op, out, x.shape, _ns(x).dtype(x), x)
    if _size(y):
        getattr(k, kernel)(y.reshape(v), x.reshape(v))
    return y


def _softmax_bwd(op: str, kernel: str, forward, dy: Any, x: Any, dim: Any, y: Any, backend: str | None, out: Array | None) -> Array:
    dy = _array(op, "dy", dy)
    if y is None:
        if x is None:
            raise TypeError(f"{op}: give x or the forward output y=")
        y = forward(_array(op, "x", x), dim, backend=backend)
    y = _array(op, "y", y)
    _same_dtype(op, dy=dy, y=y)
    _expect_shape(op, "dy", dy, y.shape)
    v = _dim(op, y, dim)
    k = _kernels(op, backend, y)
    dx = _output(op, out, y.shape, _ns(y).dtype(y), y)
    if _size(dx):
        getattr(k, kernel)(dx.reshape(v), dy.reshape(v), y.reshape(v))
    return dx


def softmax(x: Any, dim: int, *, backend: str | None = None, out: Array | None = None) -> Array:
    """exp(x) / sum(exp(x)) along ``dim`` (max-subtracted: finite for +-1e4 logits). Any shape."""
    return _softmax_fwd("softmax", "softmax_forward", x, dim, backend, out)


def softmax_backward(
    dy: Any, x: Any = None, dim: int | None = None, *, y: Any = None,
    backend: str | None = None, out: Array | None = None,
) -> Array:
    """dx = y * (dy - sum(dy * y, dim)); pass the forward's ``y=`` to skip recomputing it."""
    return _softmax_bwd("softmax_backward", "softmax_backward", softmax, dy, x, dim, y, backend, out)


def log_softmax(x: Any, dim: int, *, backend: str | None = None, out: Array | None = None) -> Array:
    """x - logsumexp(x, dim), stable for +-1e4 logits. Any shape."""
    return _softmax_fwd("log_softmax", "log_softmax_forward", x, dim, backend, out)


def log_softmax_backward(
    dy: Any, x: Any = None, dim: int | None = None, *, y: Any = None,
    backend: str | None = None, out: Array | None = None,
) -> Array:
    """dx = dy - exp(y) * sum(dy, dim); pass the forward's ``y=`` to skip recomputing it."""
    return _softmax_bwd("log_softmax_backward", "log_softmax_backward", log_softmax, dy, x, dim, y, backend, out)


def _indices(op: str, name: str, a: Any, like: Any) -> Any:
    """An int64 C-contiguous index array of like's kind and device."""
    ns = _ns(like)
    try:
        if _ns(a) is not ns:
            raise TypeError
        arr = ns.asarray(a)
    except TypeError:
        raise TypeError(f"{op}: {name} must be a {ns.name} array like the other inputs, got {type(a).__name__}") from None
    if ns.device_id(arr) != ns.device_id(like):
        raise TypeError(f"{op}: {name} is on device {ns.device_id(arr)}, the inputs on {ns.device_id(like)}")
    if ns.dtype(arr).kind not in "iu":
        raise TypeError(f"{op}: {name} must be an integer array, got dtype {ns.dtype(arr)}")
    return ns.astype(arr, np.int64)


def _ce_inputs(op: str, logits: Any, labels: Any) -> tuple[Any, Any]:
    """logits as a C-contiguous float array and labels as int64 (host) or the device's
    integer indices, with their shapes checked. The label range is checked by the kernels."""
    logits = _array(op, "logits", logits, 2)
    if _ns(logits).is_device:
        lab = _indices(op, "labels", labels, logits)
    else:
        lab = labels if type(labels) is np.ndarray else np.asarray(labels)
        if lab.dtype.kind not in "iu":
            raise TypeError(f"{op}: labels must be an integer array of class indices, got dtype {lab.dtype}")
    _expect_shape(op, "labels", lab, (logits.shape[0],))
    n, c = logits.shape
    if n and c == 0:
        raise ValueError(f"{op}: logits must have at least one class, got shape {tuple(logits.shape)}")
    if _ns(logits).is_device:
        return logits, lab  # a bad label gives NaN rows there, never a device sync
    # A uint64 label above the int64 range wraps to a negative one: still out of range.
    return logits, np.ascontiguousarray(lab, np.int64)


def _label_error(op: str, labels: Any, classes: int) -> ValueError:
    """The error for a host kernel's count of labels outside [0, classes), naming them as given."""
    lab = np.asarray(labels)
    return ValueError(f"{op}: labels must lie in [0, {classes}), got values in [{lab.min()}, {lab.max()}]")


def cross_entropy(logits: Any, labels: Any, *, backend: str | None = None) -> Any:
    """Mean over the batch of -log_softmax(logits)[i, labels[i]], fused and stable.

    logits (N, C) float, labels (N,) int -> 0-d array of logits' kind and dtype (NaN when
    N == 0, as torch). The row losses are summed in float64.
    """
    op = "cross_entropy"
    logits, lab = _ce_inputs(op, logits, labels)
    k = _kernels(op, backend, logits)
    ns = _ns(logits)
    dt = ns.dtype(logits)
    n = logits.shape[0]
    if n == 0:
        return ns.scalar(np.nan, dt, logits)
    if ns.is_device:
        loss = ns.empty((n,), dt, logits)
        k.cross_entropy_forward(loss, logits, lab)
        return ns.mean64(loss, dt)
    mean = np.empty((), dt)
    # The host kernels count labels outside [0, C) instead of reading by them: the range
    # check costs no pass of its own (a NumPy reduction was a third of a (32, 10) call).
    if k.cross_entropy_mean(mean, logits, lab):
        raise _label_error(op, labels, logits.shape[1])
    return mean


def cross_entropy_backward(
    dloss: Any, logits: Any, labels: Any, *, backend: str | None = None, out: Any = None
) -> Any:
    """dlogits (N, C) = dloss * (softmax(logits) - onehot(labels)) / N.

    dloss: a real scalar, or a 0-d array of the logits' kind (on a device it is applied there,
    without reading it back to the host). Labels outside [0, C) raise ValueError (on host
    arrays); ``out`` is then left written, with NaN rows for those labels.
    """
    op = "cross_entropy_backward"
    logits, lab = _ce_inputs(op, logits, labels)
    ns = _ns(logits)
    on_device = ns.is_device and not isinstance(dloss, (int, float, np.number, np.ndarray))
    if on_device:
        if _ns(dloss) is not ns or _size(dloss) != 1:
            raise TypeError(f"{op}: dloss must be a real scalar or a one-element {ns.name} array, got {dloss!r}")
    else:
        g = np.asarray(dloss)
        if g.size != 1 or g.dtype.kind not in "fiu":
            raise TypeError(f"{op}: dloss must be a real scalar, got {dloss!r}")
    k = _kernels(op, backend, logits)
    dlogits = _output(op, out, logits.shape, ns.dtype(logits), logits)
    if _size(dlogits):
        n = logits.shape[0]
        # The host kernels return their count of bad labels (the CUDA one None: NaN rows).
        if k.cross_entropy_backward(dlogits, logits, lab, (1.0 if on_device else float(g.reshape(()))) / n):
            raise _label_error(op, labels, logits.shape[1])
        if on_device:
            dlogits *= dloss.reshape(())
    return dlogits


# ---------------------------------------------------------------------------- elementwise

def _host_out(out: Any, like: np.ndarray) -> np.ndarray | None:
    """A fresh output like ``like``, or the caller's ``out`` when it is a writeable C-contiguous
    NumPy array of like's shape and dtype; None for anything else (the general path checks
    it and names what is wrong)."""
    if out is None:
        return np.empty(like.shape, like.dtype)
    if (type(out) is np.ndarray and out.dtype == like.dtype and out.shape == like.shape
            and out.flags.c_contiguous and out.flags.writeable):
        return out
    return None


def _unary(op: str, kernel: str, x: Any, backend: str | None, out: Array | None) -> Array:
    if type(x) is np.ndarray and x.dtype in _FLOATS and x.flags.c_contiguous:
        # The host fast path: on a (32, 128) activation the general path below cost twice
        # PyTorch's whole call, and with out= on (32, 32, 26, 26) a tenth of relu's 35 us.
        # Host kernels take any shape, so no flattening either.
        y = _host_out(out, x)
        if y is not None:
            if y.size:
                getattr(_backend.resolve(backend, False, op)[1], kernel)(y, x)
            return y
    x = _array(op, "x", x)
    k = _kernels(op, backend, x)
    y = _output(op, out, x.shape, _ns(x).dtype(x), x)
    if _size(y):
        getattr(k, kernel)(y.reshape(-1), x.reshape(-1))
    return y


def _unary_bwd(op: str, kernel: str, dy: Any, saved: Any, saved_name: str, backend: str | None, out: Array | None) -> Array:
    if (type(dy) is np.ndarray and type(saved) is np.ndarray and dy.dtype in _FLOATS
            and saved.dtype == dy.dtype and dy.shape == saved.shape and dy.flags.c_contiguous
            and saved.flags.c_contiguous):
        dx = _host_out(out, dy)  # the host fast path, as in _unary
        if dx is not None:
            if dx.size:
                getattr(_backend.resolve(backend, False, op)[1], kernel)(dx, dy, saved)
            return dx
    dy = _array(op, "dy", dy)
    s = _array(op, saved_name, saved)
    _same_dtype(op, dy=dy, **{saved_name: s})
    _expect_shape(op, "dy", dy, s.shape)
    k = _kernels(op, backend, s)
    dx = _output(op, out, s.shape, _ns(s).dtype(s), s)
    if _size(dx):
        getattr(k, kernel)(dx.reshape(-1), dy.reshape(-1), s.reshape(-1))
    return dx


def relu(x: Any, *, backend: str | None = None, out: Array | None = None) -> Array:
    """max(x, 0), elementwise (NaN stays NaN). Any shape."""
    return _unary("relu", "relu_forward", x, backend, out)


def relu_backward(dy: Any, x: Any, *, backend: str | None = None, out: Array | None = None) -> Array:
    """dx = dy where x > 0, else 0."""
    return _unary_bwd("relu_backward", "relu_backward", dy, x, "x", backend, out)


def sigmoid(x: Any, *, backend: str | None = None, out: Array | None = None) -> Array:
    """1 / (1 + exp(-x)), elementwise, without overflow for large |x|. Any shape."""
    return _unary("sigmoid", "sigmoid_forward", x, backend, out)


def _from_output(op: str, kernel: str, forward, dy: Any, x: Any, y: Any, backend: str | None, out: Array | None) -> Array:
    if y is None:
        if x is None:
            raise TypeError(f"{op}: give x or the forward output y=")
        y = forward(x, backend=backend)
    return _unary_bwd(op, kernel, dy, y, "y", backend, out)


def sigmoid_backward(
    dy: Any, x: Any = None, *, y: Any = None, backend: str | None = None, out: Array | None = None
) -> Array:
    """dx = dy * y * (1 - y); pass the forward's ``y=`` to skip recomputing it."""
    return _from_output("sigmoid_backward", "sigmoid_backward", sigmoid, dy, x, y, backend, out)


def tanh(x: Any, *, backend: str | None = None, out: Array | None = None) -> Array:
    """tanh(x), elementwise. Any shape."""
    return _unary("tanh", "tanh_forward", x, backend, out)


def tanh_backward(
    dy: Any, x: Any = None, *, y: Any = None, backend: str | None = None, out: Array | None = None
) -> Array:
    """dx = dy * (1 - y^2); pass the forward's ``y=`` to skip recomputing it."""
    return _from_output("tanh_backward", "tanh_backward", tanh, dy, x, y, backend, out)


# ---------------------------------------------------------------------------- optimiser updates

def _inplace(op: str, name: str, a: Any) -> Any:
    """An array updated in place: it must already be a writeable C-contiguous float array."""
    ns = _kind(op, name, a)
    if ns.dtype(a) not in _FLOATS:
        raise TypeError(f"{op}: {name} must be float32 or float64, got dtype {ns.dtype(a)}")
    if not ns.is_contiguous(a):
        raise ValueError(f"{op}: {name} is updated in place, so it must be a writeable C-contiguous array")
    return a


def adam_update(
    p: Any, g: Any, m: Any, v: Any, *, alpha: float, beta_1: float = 0.9, beta_2: float = 0.999,
    epsilon: float = 1e-7, backend: str | None = None,
) -> None:
    """One Adam step in place, Keras's form, with the bias correction folded into ``alpha``:

    m = b1*m + (1-b1)*g;  v = b2*v + (1-b2)*g^2;  p -= m / (sqrt(v) + epsilon) * alpha,
    alpha = lr * sqrt(1 - b2^t) / (1 - b1^t) at step t.

    p, m, v (any one shape) are updated in place and must be writeable and C-contiguous; g has
    their shape and dtype. Host arrays run one fused kernel pass; CUDA arrays run the same
    formula as in-place array operations of their framework.
    """
    op = "adam_update"
    p, m, v = (_inplace(op, n, a) for n, a in (("p", p), ("m", m), ("v", v)))
    g = _array(op, "g", g)
    _same_dtype(op, p=p, g=g, m=m, v=v)
    for name, a in (("g", g), ("m", m), ("v", v)):
        _expect_shape(op, name, a, tuple(p.shape))
    for name, c in (("beta_1", beta_1), ("beta_2", beta_2)):
        if not 0.0 <= float(c) < 1.0:
            raise ValueError(f"{op}: {name} must be in [0, 1), got {c!r}")
    alpha, beta_1, beta_2, epsilon = float(alpha), float(beta_1), float(beta_2), float(epsilon)
    k = _kernels(op, backend, p)
    if hasattr(k, "adam_update"):
        k.adam_update(p, m, v, g, alpha, beta_1, beta_2, epsilon)
        return
    m *= beta_1
    m += g * (1.0 - beta_1)
    v *= beta_2
    v += (g * g) * (1.0 - beta_2)
    root = v.sqrt() if _ns(v).name == "torch" else _device.array_module(v).sqrt(v)
    p -= m / (root + epsilon) * alpha


# ---------------------------------------------------------------------------- recurrent

RNN_ACTIVATIONS = ("tanh", "sigmoid", "relu", "linear")


def _rnn_activation(op: str, activation: Any) -> str:
    if activation is None:
        return "linear"
    if not isinstance(activation, str):
        raise TypeError(f"{op}: activation must be one of {RNN_ACTIVATIONS} (or None for 'linear'), "
                        f"got {type(activation).__name__} {activation!r}")
    if activation.lower() not in RNN_ACTIVATIONS:
        raise ValueError(f"{op}: activation must be one of {RNN_ACTIVATIONS} (or None for 'linear'), got {activation!r}")
    return activation.lower()


def _rnn_inputs(op: str, x: Any, w_xh: Any, w_hh: Any, b: Any, h0: Any):
    x = _array(op, "x", x, 3)
    w_xh = _array(op, "w_xh", w_xh, 2)
    w_hh = _array(op, "w_hh", w_hh, 2)
    b = None if b is None else _array(op, "b", b, 1)
    h0 = None if h0 is None else _array(op, "h0", h0, 2)
    dt = _same_dtype(op, x=x, w_xh=w_xh, w_hh=w_hh, b=b, h0=h0)
    n, _, i = x.shape
    hidden = w_hh.shape[0]
    if tuple(w_hh.shape) != (hidden, hidden):
        raise ValueError(f"{op}: w_hh must be square (hidden, hidden), got shape {tuple(w_hh.shape)}")
    if tuple(w_xh.shape) != (hidden, i):
        raise ValueError(f"{op}: w_xh must have shape (hidden, features) = {(hidden, i)} for x of shape "
                         f"{tuple(x.shape)} and w_hh of shape {tuple(w_hh.shape)}, got {tuple(w_xh.shape)}")
    if b is not None:
        _expect_shape(op, "b", b, (hidden,))
    if h0 is not None:
        _expect_shape(op, "h0", h0, (n, hidden))
    return x, w_xh, w_hh, b, h0, dt


def rnn(
    x: Any, w_xh: Any, w_hh: Any, b: Any = None, h0: Any = None, activation: str = "tanh",
    *, backend: str | None = None, out: Array | None = None,
) -> Array:
    """Elman RNN over a whole sequence: every hidden state hs (N, T, H).

    x (N, T, I), w_xh (H, I), w_hh (H, H), b (H,) or None, h0 (N, H) or None (zeros);
    h_t = act(W_hh h_{t-1} + W_xh x_t + b), act one of 'tanh', 'sigmoid', 'relu', 'linear'
    (None = 'linear'). hs[:, -1] is the last state.

    The CPU backends run it fused (one input-projection GEMM, then one small GEMM plus the
    activation per step, in one kernel call). On CUDA arrays, where no fused kernel exists
    yet, it is composed from the CUDA ``linear`` and activation ops, one group per step.
    """
    op = "rnn"
    act = _rnn_activation(op, activation)
    x, w_xh, w_hh, b, h0, dt = _rnn_inputs(op, x, w_xh, w_hh, b, h0)
    k = _kernels(op, backend, x)
    hs = _output(op, out, (x.shape[0], x.shape[1], w_hh.shape[0]), dt, x)
    if _size(hs):
        fused = getattr(k, "rnn_forward", None)
        if fused is not None:
            fused(hs, x, w_xh, w_hh, b, h0, act)
        else:
            _rnn_forward_composed(hs, x, w_xh, w_hh, b, h0, act, backend)
    return hs


def rnn_backward(
    dhs: Any, x: Any, w_xh: Any, w_hh: Any, b: Any = None, h0: Any = None, activation: str = "tanh",
    *, hs: Any = None, need_dx: bool = True, backend: str | None = None,
    out: Sequence[Array | None] | None = None,
) -> tuple[Array | None, Array, Array, Array | None, Array | None]:
    """Backpropagation through time: (dx (N,T,I), dw_xh (H,I), dw_hh (H,H), db (H,) or None,
    dh0 (N,H) or None) for dhs (N, T, H), the loss gradient w.r.t. every h_t of ``rnn``.

    A loss on the last state only has dhs zero except dhs[:, -1]. db is None when b is, dh0
    when h0 is (absent means a constant zero state). Pass the forward's ``hs=`` to skip
    recomputing it (it must be ``rnn``'s output for these inputs). The activation's
    derivative is taken from the output h_t, as the elementwise backwards do.
    ``need_dx=False`` skips the input gradient and returns None for it.
    """
    op = "rnn_backward"
    act = _rnn_activation(op, activation)
    x, w_xh, w_hh, b, h0, dt = _rnn_inputs(op, x, w_xh, w_hh, b, h0)
    n, t, _ = x.shape
    hidden = w_hh.shape[0]
    dhs = _array(op, "dhs", dhs, 3)
    _same_dtype(op, x=x, dhs=dhs)
    _expect_shape(op, "dhs", dhs, (n, t, hidden))
    if hs is None:
        hs = rnn(x, w_xh, w_hh, b, h0, act, backend=backend)
    else:
        hs = _array(op, "hs", hs, 3)
        _same_dtype(op, x=x, hs=hs)
        _expect_shape(op, "hs", hs, (n, t, hidden))
    k = _kernels(op, backend, x)
    o = _outs(op, out, 5)
    dx = _output(op, o[0], x.shape, dt, x, "out[0]") if need_dx else None
    dwx = _output(op, o[1], w_xh.shape, dt, x, "out[1]")
    dwh = _output(op, o[2], w_hh.shape, dt, x, "out[2]")
    db = _output(op, o[3], (hidden,), dt, x, "out[3]") if b is not None else None
    dh0 = _output(op, o[4], (n, hidden), dt, x, "out[4]") if h0 is not None else None
    if _size(dhs) == 0:
        _zero(dx, dwx, dwh, db, dh0)
    else:
        fused = getattr(k, "rnn_backward", None)
        if fused is not None:
            fused(dx, dwx, dwh, db, dh0, dhs, x, w_xh, w_hh, h0, hs, act)
        else:
            _rnn_backward_composed(dx, dwx, dwh, db, dh0, dhs, x, w_xh, w_hh, h0, hs, act, backend)
    return dx, dwx, dwh, db, dh0


# The per-step composition of existing ops, for a backend without a fused RNN kernel (the
# CUDA backend today). Same outputs-first interface as the kernels; any array kind.

def _rnn_forward_composed(hs: Any, x: Any, w_xh: Any, w_hh: Any, b: Any, h0: Any, act: str,
                          backend: str | None) -> None:
    xw = linear(x, w_xh, b, backend=backend)  # the input projection of every step at once
    h = h0
    for s in range(x.shape[1]):
        a = xw[:, s] if h is None else xw[:, s] + linear(h, w_hh, backend=backend)
        h = a if act == "linear" else _RNN_FORWARD[act](a, backend=backend)
        hs[:, s] = h


def _rnn_backward_composed(dx: Any, dwx: Any, dwh: Any, db: Any, dh0: Any, dhs: Any, x: Any, w_xh: Any,
                           w_hh: Any, h0: Any, hs: Any, act: str, backend: str | None) -> None:
    ns = _ns(x)
    n, t, _ = x.shape
    hidden = w_hh.shape[0]
    dt = ns.dtype(x)
    w_hh_t = ns.contiguous(w_hh.T)  # dh = da W_hh is linear(da, W_hh^T)
    da = ns.empty((n, t, hidden), dt, x)
    dh = None
    for s in range(t - 1, -1, -1):
        g = dhs[:, s] if dh is None else dhs[:, s] + dh
        if act == "relu":  # relu(a) > 0 exactly where a > 0, so the output serves as x
            da_s = relu_backward(g, hs[:, s], backend=backend)
        elif act == "linear":
            da_s = g
        else:
            da_s = _RNN_BACKWARD[act](g, y=hs[:, s], backend=backend)
        da[:, s] = da_s
        if s > 0:
            dh = linear(da_s, w_hh_t, backend=backend)
        elif dh0 is not None:
            linear(da_s, w_hh_t, backend=backend, out=dh0)
    h_prev = ns.empty((n, t, hidden), dt, x)
    h_prev[:, 1:] = hs[:, :-1]
    h_prev[:, 0] = 0 if h0 is None else h0
    da2 = da.reshape(n * t, hidden)
    if dx is not None:
        linear(da, ns.contiguous(w_xh.T), backend=backend, out=dx)
    linear(da2.T, x.reshape(n * t, x.shape[2]).T, backend=backend, out=dwx)
    linear(da2.T, h_prev.reshape(n * t, hidden).T, backend=backend, out=dwh)
    if db is not None:
        db[...] = ns.sum0(da2)


_RNN_FORWARD = {"tanh": tanh, "sigmoid": sigmoid, "relu": relu}
_RNN_BACKWARD = {"tanh": tanh_backward, "sigmoid": sigmoid_backward}
