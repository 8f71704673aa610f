"""The Numba CPU backend: the kernel interface of ``_backend.py`` in Numba and NumPy.

Shapes (NCHW, C-contiguous, one float dtype, float32 or float64; labels/indices int64):
    conv2d      x (N, C, H, W), w (K, C, R, S), b (K,), y (N, K, OH, OW)
    pool2d      x (N, C, H, W), y / indices (N, C, OH, OW)
    linear      x (M, IN), w (OUT, IN), b (OUT,), y (M, OUT)
    softmax     x, y (outer, dim, inner), normalised over the middle axis
    cross_ent.  logits (N, CLASSES), labels (N,), loss (N,)
    elementwise 1-D

Every output is preallocated by the caller and overwritten; a gradient output given as None
is not computed. The public functions are thin wrappers that turn None into flags and
reshape views; the ``_k_*`` functions are the jitted kernels, compiled lazily per dtype and
cached on disk.

Threads: every jitted kernel is SERIAL (no prange) and the parallelism comes from the
multi-threaded BLAS that NumPy calls for the matrix products, which carry almost all of the
work. A Numba thread pool next to BLAS's own is two pools spinning against each other: on
2 cores, alternating an OpenMP prange kernel with a BLAS call measured 8 ms for 50 us of work.
Plain Python threads over nogil kernels were tried too and rejected: each hand-off costs about
50 us, a worker woken next to BLAS's still-spinning threads made the batch-256 step slower
(83 -> 110 ms), and splitting the batch between two threads each running a one-thread GEMM
was slower than one two-thread GEMM (505 against 390 us for two conv2-sized products).
Matrix products go through NumPy at the Python level rather than ``np.dot`` inside ``njit``,
because Numba's in-kernel BLAS needs SciPy, which is not a dependency.

Convolution is im2col into a column matrix (C*R*S, n, OH*OW) for a chunk of n images, so each
direction is ONE large GEMM per chunk, and dW is summed over chunks in batch order, so results
do not depend on the thread count. Transcendentals (exp, tanh) go through NumPy's SIMD
ufuncs, which are several times faster than Numba's scalar libm calls.

Hot loops index flat views with unsigned offsets (``_u``): with signed indices Numba emits a
negative-index wraparound check per access, which blocks vectorisation (3-5x slower copies).
fastmath is off except for float64 reductions (see ``_rjit``): pooling, softmax and the
activations must propagate NaN and handle inf. Sums of many terms (bias gradients, softmax
normalisers, pooling windows) accumulate in float64.
"""

from __future__ import annotations

import numba
import numpy as np

Array = np.ndarray

# A chunk's column matrix and GEMM result (or dy copy) together stay near this size (at least
# one image): they are then cache-resident between im2col, the GEMM and the copy back, and a
# huge batch never allocates a column matrix of many GiB. Counting only the column matrix, at
# 8 MiB, conv 1 (9 column rows, 32 output channels) ran as one 28 MB chunk at batch 256: the
# documents' CNN step took 71.8 ms against 59.6 with this rule (2 and 4 MiB alike; 1 MiB 60.7).
_COL_BYTES = 4 << 20

_jit = numba.njit(cache=True, nogil=True)
# For kernels whose long sums are float64 accumulators: their order may change so that they
# vectorise (still fixed per build). No NaN/inf assumptions ('nnan'/'ninf' stay off), so NaN
# and inf still propagate.
_rjit = numba.njit(cache=True, nogil=True, fastmath={"reassoc", "nsz", "contract"})
_u = numba.uint64


# ---------------------------------------------------------------------------- convolution

@_jit
def _tap_cols(j, dw, pw, sw, w_in, ow):
    """(off, q_lo, q_hi): input column of output column q is q*sw + off, and it lies inside
    the input row exactly for q in [q_lo, q_hi)."""
    off = j * dw - pw
    q_lo = 0 if off >= 0 else (-off + sw - 1) // sw
    q_hi = (w_in - off + sw - 1) // sw if w_in - off > 0 else 0
    q_lo = min(q_lo, ow)
    q_hi = max(min(q_hi, ow), q_lo)
    return off, q_lo, q_hi


@_jit
def _k_im2col(col, x, n0, r, s, sh, sw, ph, pw, dh, dw, oh, ow):
    # col (C*R*S, n, OH*OW) <- images n0 .. n0+n of x; padding reads as zero.
    rows, nc, ohw = col.shape
    c_in, h_in, w_in = x.shape[1], x.shape[2], x.shape[3]
    cf = col.reshape(col.size)
    xf = x.reshape(x.size)
    usw = _u(sw)
    for row in range(rows):
        c = row // (r * s)
        i = (row // s) % r
        j = row % s
        off, q_lo, q_hi = _tap_cols(j, dw, pw, sw, w_in, ow)
        n_lo, n_mid, n_hi = _u(q_lo), _u(q_hi - q_lo), _u(ow - q_hi)
        for n in range(nc):
            dbase = (row * nc + n) * ohw
            # First in-bounds input element of tap (i, j) in this plane (before the row offset).
            sbase = ((n0 + n) * c_in + c) * h_in * w_in + off + q_lo * sw
            for p in range(oh):
                h = p * sh - ph + i * dh
                d0 = _u(dbase + p * ow)
                if h < 0 or h >= h_in:
                    for q in range(_u(ow)):
                        cf[d0 + q] = 0
                    continue
                for q in range(n_lo):
                    cf[d0 + q] = 0
                d1 = d0 + n_lo
                s1 = _u(sbase + h * w_in)
                if sw == 1:
                    for q in range(n_mid):
                        cf[d1 + q] = xf[s1 + q]
                else:
                    for q in range(n_mid):
                        cf[d1 + q] = xf[s1 + q * usw]
                d2 = d1 + n_mid
                for q in range(n_hi):
                    cf[d2 + q] = 0


@_jit
def _k_col2im(dx, dcol, n0, r, s, sh, sw, ph, pw, dh, dw, oh, ow):
    # dx[n0 + n] <- sum of the columns of dcol (C*R*S, n, OH*OW) that read each pixel. Planes
    # are filled one at a time, each in a fixed tap order, so the result is deterministic.
    nc, ohw = dcol.shape[1], dcol.shape[2]
    c_in, h_in, w_in = dx.shape[1], dx.shape[2], dx.shape[3]
    cf = dcol.reshape(dcol.size)
    xf = dx.reshape(dx.size)
    usw = _u(sw)
    for n in range(nc):
        for c in range(c_in):
            pbase = ((n0 + n) * c_in + c) * h_in * w_in
            up = _u(pbase)
            for e in range(_u(h_in * w_in)):
                xf[up + e] = 0
            for i in range(r):
                for j in range(s):
                    row = (c * r + i) * s + j
                    off, q_lo, q_hi = _tap_cols(j, dw, pw, sw, w_in, ow)
                    n_mid = _u(q_hi - q_lo)
                    for p in range(oh):
                        h = p * sh - ph + i * dh
                        if h < 0 or h >= h_in:
                            continue
                        d = _u(pbase + h * w_in + off + q_lo * sw)
                        src = _u((row * nc + n) * ohw + p * ow + q_lo)
                        if sw == 1:
                            for q in range(n_mid):
                                xf[d + q] += cf[src + q]
                        else:
                            for q in range(n_mid):
                                xf[d + q * usw] += cf[src + q]


@_jit
def _k_unchunk_bias(y, tmp, b, n0, relu):
    # y[n0 + n, k, :] = tmp[k, n, :] + b[k] (then relu, as _k_relu_fwd): the GEMM result is
    # (K, n, OH*OW). The relu rides on this pass instead of a second one over y.
    k_out, nc, ohw = tmp.shape
    yf = y.reshape(y.size)
    tf = tmp.reshape(tmp.size)
    for n in range(nc):
        for k in range(k_out):
            bk = b[k]
            d = _u(((n0 + n) * k_out + k) * ohw)
            src = _u((k * nc + n) * ohw)
            if relu:
                for e in range(_u(ohw)):
                    v = tf[src + e] + bk
                    yf[d + e] = 0 if v <= 0 else v  # NaN passes, as in _k_relu_fwd
            else:
                for e in range(_u(ohw)):
                    yf[d + e] = tf[src + e] + bk


@_jit
def _k_chunk(dst, src, n0):
    # dst (K, n, OH*OW) <- src[n0 .. n0+n] (N, K, OH*OW): dy in the column layout.
    k_out, nc, ohw = dst.shape
    df = dst.reshape(dst.size)
    sf = src.reshape(src.size)
    for k in range(k_out):
        for n in range(nc):
            d = _u((k * nc + n) * ohw)
            s0 = _u(((n0 + n) * k_out + k) * ohw)
            for e in range(_u(ohw)):
                df[d + e] = sf[s0 + e]


@_rjit
def _k_bias_grad(db, dy):
    # db[k] = sum over n and pixels of dy (N, K, P). float64 accumulation over N*P terms;
    # reassociation only lets LLVM vectorise the sum, the order is still fixed per build.
    n_img, k_out, npix = dy.shape
    dyf = dy.reshape(dy.size)
    for k in range(k_out):
        acc = 0.0
        for n in range(n_img):
            base = _u((n * k_out + k) * npix)
            for e in range(_u(npix)):
                acc += dyf[base + e]
        db[k] = acc


def _chunk_images(n: int, rows: int, ohw: int, itemsize: int) -> int:
    """Images per chunk for ``rows`` (column-matrix rows + output channels) of OH*OW each."""
    per_image = max(rows * ohw * itemsize, 1)
    return max(1, min(n, _COL_BYTES // per_image))


def conv2d_forward(
    y: Array, x: Array, w: Array, b: Array | None,
    sh: int, sw: int, ph: int, pw: int, dh: int, dw: int, relu: bool = False,
) -> None:
    n = x.shape[0]
    k_out, c_in, r, s = w.shape
    oh, ow = y.shape[2], y.shape[3]
    if y.size == 0:
        return
    ohw = oh * ow
    crs = c_in * r * s
    w2 = w.reshape(k_out, crs)
    y3 = y.reshape(n, k_out, ohw)
    bias = np.zeros(k_out, y.dtype) if b is None else b
    step = _chunk_images(n, crs + k_out, ohw, y.itemsize)
    for n0 in range(0, n, step):
        nc = min(step, n - n0)
        col = np.empty((crs, nc, ohw), y.dtype)
        tmp = np.empty((k_out, nc, ohw), y.dtype)
        _k_im2col(col, x, n0, r, s, sh, sw, ph, pw, dh, dw, oh, ow)
        np.dot(w2, col.reshape(crs, nc * ohw), out=tmp.reshape(k_out, nc * ohw))
        _k_unchunk_bias(y3, tmp, bias, n0, relu)


def conv2d_backward(
    dx: Array | None, dwt: Array | None, db: Array | None, dy: Array, x: Array, w: Array,
    sh: int, sw: int, ph: int, pw: int, dh: int, dw: int, relu_y: Array | None = None,
) -> None:
    if relu_y is not None:
        da = np.empty_like(dy)
        _k_relu_bwd(da.reshape(-1), dy.reshape(-1), relu_y.reshape(-1))
        dy = da
    n = x.shape[0]
    k_out, c_in, r, s = w.shape
    oh, ow = dy.shape[2], dy.shape[3]
    ohw = oh * ow
    crs = c_in * r * s
    dy3 = dy.reshape(n, k_out, ohw)
    if db is not None:
        _k_bias_grad(db, dy3)
    if dx is None and dwt is None:
        return
    if n == 0 or ohw == 0 or k_out == 0 or crs == 0:
        # Nothing reaches x or w: the gradients are exactly zero, and BLAS is not asked
        # about empty products.
        if dx is not None:
            dx.fill(0)
        if dwt is not None:
            dwt.fill(0)
        return
    w2 = w.reshape(k_out, crs)
    dw2 = dwt.reshape(k_out, crs) if dwt is not None else None
    step = _chunk_images(n, crs + k_out, ohw, dy.itemsize)
    part = np.empty((k_out, crs), dy.dtype) if dw2 is not None and step < n else None
    for n0 in range(0, n, step):
        nc = min(step, n - n0)
        dyc = np.empty((k_out, nc, ohw), dy.dtype)
        _k_chunk(dyc, dy3, n0)
        dy2 = dyc.reshape(k_out, nc * ohw)
        col = np.empty((crs, nc, ohw), dy.dtype)
        col2 = col.reshape(crs, nc * ohw)
        if dw2 is not None:
            _k_im2col(col, x, n0, r, s, sh, sw, ph, pw, dh, dw, oh, ow)
            # Chunks are summed in batch order, so dW does not depend on the thread count.
            np.dot(dy2, col2.T, out=dw2 if n0 == 0 else part)
            if n0 != 0:
                dw2 += part
        if dx is not None:
            # col is free again: it now receives the column gradient W^T dY.
            np.dot(w2.T, dy2, out=col2)
            _k_col2im(dx, col, n0, r, s, sh, sw, ph, pw, dh, dw, oh, ow)


# ---------------------------------------------------------------------------- pooling

@_jit
def _span(o, stride, pad, k, n):
    """[start, end) of the inputs that output o's window (size k) covers inside [0, n)."""
    i0 = o * stride - pad
    return max(i0, 0), min(i0 + k, n)


@_jit
def _k_max_pool_fwd(y, ind, x, kh, kw, sh, sw, ph, pw, want_ind):
    # y, ind (planes, OH, OW); x (planes, H, W).
    planes, h_in, w_in = x.shape
    oh, ow = y.shape[1], y.shape[2]
    xf = x.reshape(x.size)
    yf = y.reshape(y.size)
    indf = ind.reshape(ind.size)
    for t in range(planes):
        xb = t * h_in * w_in
        for p in range(oh):
            hs, he = _span(p, sh, ph, kh, h_in)
            for q in range(ow):
                ws, we = _span(q, sw, pw, kw, w_in)
                o = _u((t * oh + p) * ow + q)
                if hs >= he or ws >= we:
                    # A window wholly in the padding: -inf, and an index backward skips.
                    yf[o] = -np.inf
                    if want_ind:
                        indf[o] = -1
                    continue
                # Starting from the first in-bounds element equals starting from -inf with
                # that element's index, which is PyTorch's rule (an all -inf window points there).
                mi = hs * w_in + ws
                m = xf[_u(xb + mi)]
                for h in range(hs, he):
                    rb = _u(xb + h * w_in)
                    for v in range(_u(ws), _u(we)):
                        val = xf[rb + v]
                        if val > m or np.isnan(val):
                            m = val
                            mi = h * w_in + np.int64(v)
                yf[o] = m
                if want_ind:
                    indf[o] = mi


@_jit
def _k_max_pool_2x2(y, ind, x, want_ind):
    # The 2x2 / stride 2 / no padding case of _k_max_pool_fwd (the documents' pooling), with
    # the same rule: the window is scanned in row order and a value replaces the running
    # maximum when it is greater or NaN. Unsigned offsets and branch-free selects. The
    # window-local index is chosen as a float32 (0, 1, W or W+1, exact), so every select is
    # on 32-bit lanes and the loop vectorises; int64 selects compiled to branches that random
    # data mispredicts. A second loop turns it into the plane index: 3x faster in all.
    planes, h_in, w_in = x.shape
    oh, ow = y.shape[1], y.shape[2]
    xf = x.reshape(x.size)
    yf = y.reshape(y.size)
    indf = ind.reshape(ind.size)
    one, two, uw = _u(1), _u(2), _u(w_in)
    z, k1, k2, k3 = np.float32(0), np.float32(1), np.float32(w_in), np.float32(w_in + 1)
    kbuf = np.empty(ow, np.float32)
    for t in range(planes):
        for p in range(oh):
            r0 = _u((t * h_in + 2 * p) * w_in)
            r1 = r0 + uw
            o = _u((t * oh + p) * ow)
            if want_ind:
                for q in range(_u(ow)):
                    a = two * q
                    m = xf[r0 + a]
                    v = xf[r0 + a + one]
                    g = (v > m) | (v != v)
                    m = v if g else m
                    k = k1 if g else z
                    v = xf[r1 + a]
                    g = (v > m) | (v != v)
                    m = v if g else m
                    k = k2 if g else k
                    v = xf[r1 + a + one]
                    g = (v > m) | (v != v)
                    yf[o + q] = v if g else m
                    kbuf[q] = k3 if g else k
                i0 = np.int64(2 * p * w_in)
                for q in range(_u(ow)):
                    indf[o + q] = i0 + np.int64(two * q) + np.int64(kbuf[q])
            else:
                for q in range(_u(ow)):
                    a = two * q
                    m = xf[r0 + a]
                    v = xf[r0 + a + one]
                    m = v if (v > m) | (v != v) else m
                    v = xf[r1 + a]
                    m = v if (v > m) | (v != v) else m
                    v = xf[r1 + a + one]
                    yf[o + q] = v if (v > m) | (v != v) else m


@_jit
def _k_max_pool_bwd(dx, dy, ind):
    # dx (planes, H*W), dy / ind (planes, OH*OW). Each plane is scattered in output order,
    # so overlapping windows accumulate in a fixed order.
    planes, hw = dx.shape
    ohw = dy.shape[1]
    # Indices outside the plane are skipped and counted (the caller raises on them).
    dxf = dx.reshape(dx.size)
    dyf = dy.reshape(dy.size)
    indf = ind.reshape(ind.size)
    outside = 0
    for t in range(planes):
        base = _u(t * hw)
        for e in range(_u(hw)):
            dxf[base + e] = 0
        ob = _u(t * ohw)
        for o in range(_u(ohw)):
            i = indf[ob + o]
            if 0 <= i < hw:
                dxf[base + _u(i)] += dyf[ob + o]
            else:
                outside += 1
    return outside


@_jit
def _avg_divisor(hs, he, ws, we, kh, kw, count_include_pad):
    if count_include_pad:
        return kh * kw
    return max((he - hs) * (we - ws), 1)


@_jit
def _k_avg_pool_fwd(y, x, kh, kw, sh, sw, ph, pw, count_include_pad):
    planes, h_in, w_in = x.shape
    oh, ow = y.shape[1], y.shape[2]
    xf = x.reshape(x.size)
    yf = y.reshape(y.size)
    for t in range(planes):
        xb = t * h_in * w_in
        for p in range(oh):
            hs, he = _span(p, sh, ph, kh, h_in)
            for q in range(ow):
                ws, we = _span(q, sw, pw, kw, w_in)
                acc = 0.0
                for h in range(hs, he):
                    rb = _u(xb + h * w_in)
                    for v in range(_u(ws), _u(we)):
                        acc += xf[rb + v]
                div = _avg_divisor(hs, he, ws, we, kh, kw, count_include_pad)
                yf[_u((t * oh + p) * ow + q)] = acc / div


@_jit
def _k_avg_pool_bwd(dx, dy, kh, kw, sh, sw, ph, pw, count_include_pad):
    planes, h_in, w_in = dx.shape
    oh, ow = dy.shape[1], dy.shape[2]
    dxf = dx.reshape(dx.size)
    dyf = dy.reshape(dy.size)
    for t in range(planes):
        xb = t * h_in * w_in
        for e in range(_u(h_in * w_in)):
            dxf[_u(xb) + e] = 0
        for p in range(oh):
            hs, he = _span(p, sh, ph, kh, h_in)
            for q in range(ow):
                ws, we = _span(q, sw, pw, kw, w_in)
                div = _avg_divisor(hs, he, ws, we, kh, kw, count_include_pad)
                g = dyf[_u((t * oh + p) * ow + q)] / div
                for h in range(hs, he):
                    rb = _u(xb + h * w_in)
                    for v in range(_u(ws), _u(we)):
                        dxf[rb + v] += g


def _planes(a: Array) -> Array:
    return a.reshape(a.shape[0] * a.shape[1], a.shape[2], a.shape[3])


_NO_INDICES = np.zeros((1, 1, 1), np.int64)


def max_pool2d_forward(
    y: Array, indices: Array | None, x: Array,
    kh: int, kw: int, sh: int, sw: int, ph: int, pw: int,
) -> None:
    if y.size == 0:
        return
    ind = _NO_INDICES if indices is None else _planes(indices)
    # The 2x2 kernel holds window offsets (up to W + 1) exactly in float32.
    if kh == kw == sh == sw == 2 and ph == pw == 0 and x.shape[3] < (1 << 24):
        _k_max_pool_2x2(_planes(y), ind, _planes(x), indices is not None)
        return
    _k_max_pool_fwd(_planes(y), ind, _planes(x), kh, kw, sh, sw, ph, pw, indices is not None)


def max_pool2d_backward(
    dx: Array, dy: Array, indices: Array,
    kh: int, kw: int, sh: int, sw: int, ph: int, pw: int,
) -> int:
    planes = dx.shape[0] * dx.shape[1]
    hw, ohw = dx.shape[2] * dx.shape[3], dy.shape[2] * dy.shape[3]
    return _k_max_pool_bwd(dx.reshape(planes, hw), dy.reshape(planes, ohw), indices.reshape(planes, ohw))


def avg_pool2d_forward(
    y: Array, x: Array, kh: int, kw: int, sh: int, sw: int, ph: int, pw: int,
    count_include_pad: bool,
) -> None:
    if y.size == 0:
        return
    _k_avg_pool_fwd(_planes(y), _planes(x), kh, kw, sh, sw, ph, pw, bool(count_include_pad))


def avg_pool2d_backward(
    dx: Array, dy: Array, kh: int, kw: int, sh: int, sw: int, ph: int, pw: int,
    count_include_pad: bool,
) -> None:
    _k_avg_pool_bwd(_planes(dx), _planes(dy), kh, kw, sh, sw, ph, pw, bool(count_include_pad))


# ---------------------------------------------------------------------------- dense

@_jit
def _k_col_sum(out, a):
    # out[j] = sum_i a[i, j], rows added in order into float64 partial sums.
    m, n = a.shape
    af = a.reshape(a.size)
    acc = np.zeros(n, np.float64)
    for i in range(m):
        rb = _u(i * n)
        for j in range(_u(n)):
            acc[j] += af[rb + j]
    for j in range(n):
        out[j] = acc[j]


def linear_forward(y: Array, x: Array, w: Array, b: Array | None) -> None:
    np.dot(x, w.T, out=y)
    if b is not None:
        y += b


def linear_backward(
    dx: Array | None, dwt: Array | None, db: Array | None, dy: Array, x: Array, w: Array,
) -> None:
    if dx is not None:
        np.dot(dy, w, out=dx)
    if dwt is not None:
        np.dot(dy.T, x, out=dwt)
    if db is not None:
        _k_col_sum(db, dy)


# ---------------------------------------------------------------------------- softmax family

@_jit
def _k_shift_by_max(y, x):
    # y = x - max over dim, per (outer, inner) column. A NaN makes the max NaN, hence the
    # whole column NaN, as in torch.
    outer, dim, inner = x.shape
    if inner == 1:
        xf, yf = x.reshape(x.size), y.reshape(y.size)
        for o in range(outer):
            rb = _u(o * dim)
            mo = xf[rb]
            for d in range(_u(dim)):
                v = xf[rb + d]
                if v > mo or np.isnan(v):
                    mo = v
            for d in range(_u(dim)):
                yf[rb + d] = xf[rb + d] - mo
        return
    m = np.empty(inner, x.dtype)
    for o in range(outer):
        for i in range(inner):
            m[i] = x[o, 0, i]
        for d in range(1, dim):
            for i in range(inner):
                v = x[o, d, i]
                if v > m[i] or np.isnan(v):
                    m[i] = v
        for d in range(dim):
            for i in range(inner):
                y[o, d, i] = x[o, d, i] - m[i]


@_rjit
def _k_softmax_finish(y, e, log):
    # e = exp(y) with y already shifted by the max. softmax: y = e / sum(e);
    # log_softmax: y = y - log(sum(e)). Sums in float64.
    outer, dim, inner = y.shape
    if inner == 1:
        yf, ef = y.reshape(y.size), e.reshape(e.size)
        for o in range(outer):
            rb = _u(o * dim)
            s = 0.0
            for d in range(_u(dim)):
                s += ef[rb + d]
            if log:
                ls = np.log(s)
                for d in range(_u(dim)):
                    yf[rb + d] = yf[rb + d] - ls
            else:
                inv = 1.0 / s
                for d in range(_u(dim)):
                    yf[rb + d] = ef[rb + d] * inv
        return
    acc = np.empty(inner, np.float64)
    for o in range(outer):
        acc[:] = 0.0
        for d in range(dim):
            for i in range(inner):
                acc[i] += e[o, d, i]
        if log:
            for i in range(inner):
                acc[i] = np.log(acc[i])
            for d in range(dim):
                for i in range(inner):
                    y[o, d, i] = y[o, d, i] - acc[i]
        else:
            for i in range(inner):
                acc[i] = 1.0 / acc[i]
            for d in range(dim):
                for i in range(inner):
                    y[o, d, i] = e[o, d, i] * acc[i]


@_rjit
def _k_softmax_bwd(dx, dy, y, p, log):
    # softmax:     dx = y * (dy - sum(dy * y))       (p is y)
    # log_softmax: dx = dy - exp(y) * sum(dy)        (p is exp(y), which may be dx itself)
    outer, dim, inner = y.shape
    if inner == 1:
        dxf, dyf, yf, pf = dx.reshape(dx.size), dy.reshape(dy.size), y.reshape(y.size), p.reshape(p.size)
        for o in range(outer):
            rb = _u(o * dim)
            s = 0.0
            for d in range(_u(dim)):
                s += dyf[rb + d] if log else dyf[rb + d] * yf[rb + d]
            for d in range(_u(dim)):
                if log:
                    dxf[rb + d] = dyf[rb + d] - pf[rb + d] * s
                else:
                    dxf[rb + d] = yf[rb + d] * (dyf[rb + d] - s)
        return
    acc = np.empty(inner, np.float64)
    for o in range(outer):
        acc[:] = 0.0
        for d in range(dim):
            for i in range(inner):
                if log:
                    acc[i] += dy[o, d, i]
                else:
                    acc[i] += dy[o, d, i] * y[o, d, i]
        for d in range(dim):
            for i in range(inner):
                if log:
                    dx[o, d, i] = dy[o, d, i] - p[o, d, i] * acc[i]
                else:
                    dx[o, d, i] = y[o, d, i] * (dy[o, d, i] - acc[i])


# exp runs through NumPy's SIMD ufunc: Numba's scalar exp is several times slower.

def softmax_forward(y: Array, x: Array) -> None:
    if y.size == 0:
        return
    _k_shift_by_max(y, x)
    np.exp(y, out=y)
    _k_softmax_finish(y, y, False)


def softmax_backward(dx: Array, dy: Array, y: Array) -> None:
    _k_softmax_bwd(dx, dy, y, y, False)


def log_softmax_forward(y: Array, x: Array) -> None:
    if y.size == 0:
        return
    _k_shift_by_max(y, x)
    _k_softmax_finish(y, np.exp(y), True)


def log_softmax_backward(dx: Array, dy: Array, y: Array) -> None:
    np.exp(y, out=dx)
    _k_softmax_bwd(dx, dy, y, dx, True)


# ---------------------------------------------------------------------------- cross entropy

@_jit
def _k_cross_entropy(loss, dlogits, logits, labels, scale, grad):
    # Forward: loss[i] = (max - logits[i, label]) + log(sum exp(logits[i] - max)), which keeps
    # full precision when the max is huge. Backward: dlogits = scale * (softmax - onehot).
    n, classes = logits.shape
    for i in range(n):
        m = logits[i, 0]
        for j in range(1, classes):
            v = logits[i, j]
            if v > m or np.isnan(v):
                m = v
        acc = 0.0
        for j in range(classes):
            acc += np.exp(logits[i, j] - m)
        lab = labels[i]
        if grad:
            inv = 1.0 / acc
            for j in range(classes):
                p = np.exp(logits[i, j] - m) * inv
                dlogits[i, j] = scale * (p - 1.0 if j == lab else p)
        else:
            loss[i] = (m - logits[i, lab]) + np.log(acc)


def cross_entropy_forward(loss: Array, logits: Array, labels: Array) -> None:
    if logits.shape[0] == 0:
        return
    _k_cross_entropy(loss, np.empty((0, 0), logits.dtype), logits, labels, 0.0, False)


def cross_entropy_backward(dlogits: Array, logits: Array, labels: Array, scale: float) -> None:
    if logits.shape[0] == 0:
        return
    _k_cross_entropy(np.empty(0, logits.dtype), dlogits, logits, labels, float(scale), True)


# ---------------------------------------------------------------------------- elementwise

@_jit
def _k_relu_fwd(y, x):
    for i in range(x.shape[0]):
        v = x[i]
        # `v <= 0` is False for NaN, so NaN passes through as in torch.relu.
        y[i] = 0 if v <= 0 else v


@_jit
def _k_relu_bwd(dx, dy, x):
    for i in range(x.shape[0]):
        dx[i] = dy[i] if x[i] > 0 else 0


@_jit
def _k_sigmoid_finish(y, x):
    # y holds exp(-|x|) <= 1 on entry, so nothing overflows for any x, +-1000 included.
    one = np.ones(1, y.dtype)[0]  # keeps float32 arithmetic in float32, so it vectorises
    yf, xf = y, x
    for i in range(_u(x.shape[0])):
        e = yf[i]
        r = one / (one + e)
        yf[i] = r if xf[i] >= 0 else e * r


@_jit
def _k_sigmoid_bwd(dx, dy, y):
    for i in range(y.shape[0]):
        dx[i] = dy[i] * y[i] * (1 - y[i])


@_jit
def _k_tanh_bwd(dx, dy, y):
    for i in range(y.shape[0]):
        dx[i] = dy[i] * (1 - y[i] * y[i])


def relu_forward(y: Array, x: Array) -> None:
    _k_relu_fwd(y.reshape(-1), x.reshape(-1))


def relu_backward(dx: Array, dy: Array, x: Array) -> None:
    _k_relu_bwd(dx.reshape(-1), dy.reshape(-1), x.reshape(-1))


def sigmoid_forward(y: Array, x: Array) -> None:
    # The transcendental part runs through NumPy's SIMD ufuncs.
    np.abs(x, out=y)
    np.negative(y, out=y)
    np.exp(y, out=y)
    _k_sigmoid_finish(y.reshape(-1), x.reshape(-1))


def sigmoid_backward(dx: Array, dy: Array, y: Array) -> None:
    _k_sigmoid_bwd(dx.reshape(-1), dy.reshape(-1), y.reshape(-1))


def tanh_forward(y: Array, x: Array) -> None:
    np.tanh(x, out=y)


def tanh_backward(dx: Array, dy: Array, y: Array) -> None:
    _k_tanh_bwd(dx.reshape(-1), dy.reshape(-1), y.reshape(-1))


# ---------------------------------------------------------------------------- optimiser updates

@_jit
def _k_adam(p, m, v, g, a, b1, c1, b2, c2, e):
    # Scalars arrive in the arrays' dtype, so float32 stays float32 and matches the NumPy form.
    for i in range(p.shape[0]):
        gi = g[i]
        mi = m[i] * b1 + gi * c1
        vi = v[i] * b2 + (gi * gi) * c2
        m[i] = mi
        v[i] = vi
        p[i] -= (mi / (np.sqrt(vi) + e)) * a


def adam_update(p: Array, m: Array, v: Array, g: Array, alpha: float, beta1: float, beta2: float,
                eps: float) -> None:
    t = p.dtype.type
    _k_adam(p.reshape(-1), m.reshape(-1), v.reshape(-1), g.reshape(-1), t(alpha), t(beta1), t(1.0 - beta1),
            t(beta2), t(1.0 - beta2), t(eps))


# ---------------------------------------------------------------------------- recurrent
# x (N, T, I), w_xh (H, I), w_hh (H, H), b (H,), h0 (N, H), hs / dhs (N, T, H). The matrix
# products go through NumPy's BLAS like the rest of this backend: one GEMM for the input
# projection of every step, one (N x H) x (H x H) per step, and single GEMMs over all steps
# for the weight gradients; the per-step elementwise work is jitted.

_RNN_CODES = {"tanh": 0, "sigmoid": 1, "relu": 2, "linear": 3}


@_jit
def _k_rnn_add_step(a, hs, s):
    # a (N, H) += hs[:, s]: the recurrent term plus the step's input projection and bias.
    n, h = a.shape
    for i in range(n):
        for j in range(h):
            a[i, j] += hs[i, s, j]


@_jit
def _k_rnn_store_step(hs, a, s):
    n, h = a.shape
    for i in range(n):
        for j in range(h):
            hs[i, s, j] = a[i, j]


@_jit
def _k_rnn_grad_step(da, dhs, dh, hs, s, code, last):
    # da[:, s] = (dhs[:, s] + dh) * act'(hs[:, s]), from the output; dh is zero at the last step.
    n, h = dh.shape
    one = np.ones(1, da.dtype)[0]  # keeps float32 arithmetic in float32
    zero = np.zeros(1, da.dtype)[0]
    for i in range(n):
        for j in range(h):
            g = dhs[i, s, j] if last else dhs[i, s, j] + dh[i, j]
            y = hs[i, s, j]
            if code == 0:
                g = g * (one - y * y)
            elif code == 1:
                g = g * (y * (one - y))
            elif code == 2:
                g = g if y > 0 else zero
            da[i, s, j] = g


def _rnn_activate(a: Array, code: int) -> None:
    """The activation in place on a C-contiguous (N, H) block."""
    flat = a.reshape(-1)
    if code == 0:
        np.tanh(flat, out=flat)
    elif code == 1:
        x = flat.copy()
        sigmoid_forward(flat, x)
    elif code == 2:
        _k_relu_fwd(flat, flat)


def rnn_forward(
    hs: Array, x: Array, w_xh: Array, w_hh: Array, b: Array | None, h0: Array | None, activation: str,
) -> None:
    n, t, i = x.shape
    h = w_hh.shape[0]
    if hs.size == 0:
        return
    code = _RNN_CODES[activation]
    hs2 = hs.reshape(n * t, h)
    if i:
        np.dot(x.reshape(n * t, i), w_xh.T, out=hs2)
    else:
        hs2.fill(0)
    if b is not None:
        hs2 += b
    a = np.empty((n, h), hs.dtype)
    for s in range(t):
        prev = hs[:, s - 1] if s > 0 else h0
        if prev is None:
            a.fill(0)
        else:
            np.dot(prev, w_hh.T, out=a)
        _k_rnn_add_step(a, hs, s)
        _rnn_activate(a, code)
        _k_rnn_store_step(hs, a, s)


def rnn_backward(
    dx: Array | None, dw_xh: Array | None, dw_hh: Array | None, db: Array | None, dh0: Array | None,
    dhs: Array, x: Array, w_xh: Array, w_hh: Array, h0: Array | None, hs: Array, activation: str,
) -> None:
    n, t, i = x.shape
    h = w_hh.shape[0]
    if n == 0 or t == 0 or h == 0:
        for g in (dx, dw_xh, dw_hh, db, dh0):
            if g is not None:
                g.fill(0)
        return
    code = _RNN_CODES[activation]
    da = np.empty((n, t, h), dhs.dtype)
    dh = np.zeros((n, h), dhs.dtype)
    for s in range(t - 1, -1, -1):
        _k_rnn_grad_step(da, dhs, dh, hs, s, code, s == t - 1)
        if s > 0:
            np.dot(da[:, s], w_hh, out=dh)
        elif dh0 is not None:
            np.dot(da[:, 0], w_hh, out=dh0)
    da2 = da.reshape(n * t, h)
    if dx is not None and i:
        np.dot(da2, w_xh, out=dx.reshape(n * t, i))
    if dw_xh is not None and i:
        np.dot(da2.T, x.reshape(n * t, i), out=dw_xh)
    if dw_hh is not None:
        # sum_s da_s^T h_{s-1}: steps 1.. pair with hs[:, :-1] in one GEMM; step 0 with h0.
        if t > 1:
            np.dot(da[:, 1:].reshape(-1, h).T, hs[:, :-1].reshape(-1, h), out=dw_hh)
        else:
            dw_hh.fill(0)
        if h0 is not None:
            dw_hh += da[:, 0].T @ h0
    if db is not None:
        _k_col_sum(db, da2)
