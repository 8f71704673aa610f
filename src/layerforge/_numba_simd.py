"""Explicit SIMD for the Numba backend (``_numba.py``), for the loops LLVM leaves scalar there:
- 2x2 / stride-2 pooling of small planes (``pool_kernel``, ``avg_bwd_kernel``), below;
- 2x2 max pooling with indices, 16 windows of a row a step (``max_pool_rows``), and the same
  with the bias and relu fused for the conv -> relu -> pool forward (``unchunk_relu_pool``);
- GEMMs of depth up to 32 (``small_gemm``: conv 1's 9 rows), register-blocked;
- the same shallow convolutions, unpadded, straight from the input rows with no column matrix
  (``conv_rows``: conv 1's plain forward; ``conv_pool_rows``: its fused conv -> relu -> pool);
- ``pow2``, 2^n from its exponent bits, for ``_numba._k_sigmoid32``'s exp.

A plane is small when its input holds at most 256 values and its output at most 32 (the
documents' 11x11 -> 5x5 pooling: 121 and 25), the limits of csrc/cpu/pool2d_avx512.cpp's
small-plane path. Such a plane is pooled in registers: its input is loaded as whole vectors,
every output (or, backward, every input) position is picked by a shuffle whose lane map is a
constant of the plane's shape, and the results are stored as whole vectors.

Numba leaves these loops scalar: an 11-wide plane gives rows of 5 windows, and LLVM's loop
vectoriser starts at 8 iterations (the row-by-row kernels in ``_numba.py`` measured 3.5-6x
slower than C++ there). So the plane's code is LLVM IR, written here through Numba's
``intrinsic`` extension API with llvmlite: portable vector types and ``shufflevector``, which
LLVM lowers for the machine it compiles on (permutes on AVX-512 and AVX2, other shuffles
elsewhere). No masked loads or stores and no target-specific intrinsics are used (only
``llvm.fma``), so the IR is the same for every LLVM that Numba ships with.

The lane maps depend on (H, W), so each shape gets its own jitted kernel (``pool_kernel``):
(H, W) are closure constants, Numba keys its disk cache on them, and a new shape costs one
compile of about 0.5 s (once per dtype; ``small_gemm`` likewise per depth and row count). Whole-vector loads may read, and whole-vector stores write, up to one
vector past a plane. That stays inside the array, except on its last planes, which go through
a zero-padded copy; what lands on the next plane is overwritten when that plane is written,
since the planes are written in order. A kernel sees one thread's range of planes as its
whole array (``_numba._split``), so no store reaches another thread's planes.

Results are bit-identical to ``_numba``'s row kernels (same operations in the same order):
- max: a value replaces the running maximum when it is greater or NaN, in window row order;
  indices h*W + w in the plane;
- average: ((a + b) + c) + d, times 0.25, in the input's dtype;
- average backward: dy * 0.25 on each window, 0 where no window reaches;
- shallow convolutions (``conv_rows``): the column path's sums (``small_gemm``'s chain of fused
  multiply-adds in im2col's row order, then + bias, then relu); fused with the 2x2 max pool
  (``conv_pool_rows``), those values pooled as ``max_pool_rows`` pools them.
"""

from __future__ import annotations

from collections.abc import Callable

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

AVG, MAX, MAX_INDICES = 0, 1, 2

_LANES = 16  # the vector length the planes are cut into (one AVX-512 float32 register)
_SMALL_IN, _SMALL_OUT = 256, 32
_I32, _I64 = ir.IntType(32), ir.IntType(64)


def small_plane(h: int, w: int) -> bool:
    """Whether an (h, w) plane takes the in-register 2x2 kernels (h, w >= 2)."""
    return h >= 2 and w >= 2 and h * w <= _SMALL_IN and (h // 2) * (w // 2) <= _SMALL_OUT


def _lanes(n: int) -> int:
    """Vector length holding n values: 16 or 32."""
    return _LANES if n <= _LANES else 2 * _LANES


def _vectors(n: int) -> int:
    return (n + _LANES - 1) // _LANES


def _literals(*ts: types.Type) -> tuple[int, ...] | None:
    if not all(isinstance(t, (types.IntegerLiteral, types.BooleanLiteral)) for t in ts):
        return None
    return tuple(t.literal_value for t in ts)


@intrinsic
def _data(typingctx, a):
    """a's data pointer. The kernels pass pointers, not arrays, to the intrinsics below: an
    array argument costs a reference count increment and decrement around every call, which
    made a 16-window step 2x slower than the scalar loop. The arrays stay alive in the
    kernel's frame."""
    sig = types.CPointer(a.dtype)(a)

    def codegen(context, builder, sig, args):
        return context.make_array(sig.args[0])(context, builder, args[0]).data

    return sig, codegen


def _pointer(builder, ary, offset, vt: ir.VectorType):
    """Pointer to a vt at element ``offset`` of a data pointer."""
    return builder.bitcast(builder.gep(ary, [offset]), vt.as_pointer())


def _shuffle(builder, vec, lanes: list[int]):
    return builder.shuffle_vector(vec, vec, ir.Constant(ir.VectorType(_I32, len(lanes)), lanes))


def _concat(builder, vecs: list):
    """One vector of the given vectors' lanes in order (padded with zero vectors to a power
    of two of them)."""
    n = 1
    while n < len(vecs):
        n *= 2
    vecs = vecs + [ir.Constant(vecs[0].type, None)] * (n - len(vecs))
    while len(vecs) > 1:
        width = 2 * vecs[0].type.count
        mask = ir.Constant(ir.VectorType(_I32, width), list(range(width)))
        vecs = [builder.shuffle_vector(vecs[i], vecs[i + 1], mask) for i in range(0, len(vecs), 2)]
    return vecs[0]


def _load_plane(context, builder, aryty, ary, offset, count: int):
    """The ``count`` values from ``offset`` (and the rest of the last vector) as one vector."""
    et = context.get_value_type(aryty.dtype)
    vt = ir.VectorType(et, _LANES)
    step = ir.Constant(_I64, _LANES)
    vecs = []
    for v in range(_vectors(count)):
        vecs.append(builder.load(_pointer(builder, ary, offset, vt), align=aryty.dtype.bitwidth // 8))
        offset = builder.add(offset, step)
    return _concat(builder, vecs)


def _splat(builder, scalar, n: int):
    v = builder.insert_element(ir.Constant(ir.VectorType(scalar.type, n), None), scalar, ir.Constant(_I32, 0))
    return _shuffle(builder, v, [0] * n)


def _store(context, builder, aryty, ary, offset, vec) -> None:
    builder.store(vec, _pointer(builder, ary, offset, vec.type), align=aryty.dtype.bitwidth // 8)


@intrinsic
def _pool_plane(typingctx, y, yo, ind, x, xo, h, w, op):
    """y[yo : yo + OH*OW] (and ind[...] for MAX_INDICES) <- the 2x2 pool of the (h, w)
    plane x[xo : xo + h*w]. Reads up to one vector past the plane's input and writes up to
    one past its output (see the module docstring)."""
    lit = _literals(h, w, op)
    if lit is None:
        return None
    hh, ww, kind = lit
    oh, ow = hh // 2, ww // 2
    out = _lanes(oh * ow)
    # Lane l < OH*OW is window (p, q) = divmod(l, OW); corner c of it is x's lane
    # base + (0, 1, W, W + 1)[c], base = 2pW + 2q. Lanes past the windows repeat lane 0.
    base = [2 * (l // ow) * ww + 2 * (l % ow) if l < oh * ow else 0 for l in range(out)]
    corners = [[b + d for b in base] for d in (0, 1, ww, ww + 1)]
    sig = types.void(y, yo, ind, x, xo, h, w, op)

    def codegen(context, builder, sig, args):
        yty, _, indty, xty = sig.args[:4]
        y_, yo_, ind_, x_, xo_ = args[:5]
        plane = _load_plane(context, builder, xty, x_, xo_, hh * ww)
        a, b, c, d = (_shuffle(builder, plane, k) for k in corners)
        if kind == AVG:
            s = builder.fadd(builder.fadd(builder.fadd(a, b), c), d)
            _store(context, builder, yty, y_, yo_, builder.fmul(s, ir.Constant(s.type, [0.25] * out)))
            return context.get_dummy_value()
        it = ir.VectorType(_I64, out)
        m, k = a, ir.Constant(it, corners[0])
        for v, idx in ((b, corners[1]), (c, corners[2]), (d, corners[3])):
            g = builder.or_(builder.fcmp_ordered(">", v, m), builder.fcmp_unordered("uno", v, v))
            m = builder.select(g, v, m)
            if kind == MAX_INDICES:
                k = builder.select(g, ir.Constant(it, idx), k)
        _store(context, builder, yty, y_, yo_, m)
        if kind == MAX_INDICES:
            _store(context, builder, indty, ind_, yo_, k)
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def _avg_bwd_plane(typingctx, dx, xo, dy, yo, h, w):
    """dx[xo : xo + h*w] <- the 2x2 average backward of dy[yo : yo + OH*OW]. Reads up to one
    vector past the plane's dy and writes up to one past its dx."""
    lit = _literals(h, w)
    if lit is None:
        return None
    hh, ww = lit
    oh, ow = hh // 2, ww // 2
    src = _lanes(oh * ow)
    # dx's lane f (row r, column c) is dy's lane (r // 2) * OW + c // 2 inside the windows and
    # a lane of the zero vector (src) outside them.
    lanes = []
    for f in range(_vectors(hh * ww) * _LANES):
        r, c = divmod(f, ww)
        lanes.append((r // 2) * ow + c // 2 if f < hh * ww and r < 2 * oh and c < 2 * ow else src)
    sig = types.void(dx, xo, dy, yo, h, w)

    def codegen(context, builder, sig, args):
        dxty, _, dyty = sig.args[:3]
        dx_, xo_, dy_, yo_ = args[:4]
        g = _load_plane(context, builder, dyty, dy_, yo_, oh * ow)  # src lanes
        g = builder.fmul(g, ir.Constant(g.type, [0.25] * src))
        zero = ir.Constant(g.type, None)
        step = ir.Constant(_I64, _LANES)
        for v in range(0, len(lanes), _LANES):
            mask = ir.Constant(ir.VectorType(_I32, _LANES), lanes[v:v + _LANES])
            _store(context, builder, dxty, dx_, xo_, builder.shuffle_vector(g, zero, mask))
            xo_ = builder.add(xo_, step)
        return context.get_dummy_value()

    return sig, codegen


_kernels: dict[tuple, Callable] = {}


def pool_kernel(h: int, w: int, kind: int) -> Callable:
    """The jitted forward kernel k(y, ind, x) for (h, w) planes: y, ind (planes, OH, OW),
    x (planes, h, w), C-contiguous; ind is read only for MAX_INDICES. Needs small_plane(h, w)."""
    key = ("fwd", h, w, kind)
    if key not in _kernels:
        hh, ww, op = h, w, kind
        hw, ohw = h * w, (h // 2) * (w // 2)
        n_in, n_out = _vectors(hw) * _LANES, _lanes(ohw)

        @numba.njit(cache=True, nogil=True, error_model="numpy")
        def k(y, ind, x):
            xf, yf, indf = x.reshape(x.size), y.reshape(y.size), ind.reshape(ind.size)
            xt, yt, it = np.zeros(n_in, x.dtype), np.empty(n_out, y.dtype), np.empty(n_out, np.int64)
            xp, yp, ip = _data(xf), _data(yf), _data(indf)
            for t in range(x.shape[0]):
                xo, yo = t * hw, t * ohw
                if xo + n_in <= xf.size and yo + n_out <= yf.size:
                    _pool_plane(yp, yo, ip, xp, xo, hh, ww, op)
                else:  # the array's last planes: through padded copies
                    xt[:hw] = xf[xo:xo + hw]
                    _pool_plane(_data(yt), 0, _data(it), _data(xt), 0, hh, ww, op)
                    yf[yo:yo + ohw] = yt[:ohw]
                    if op == MAX_INDICES:
                        indf[yo:yo + ohw] = it[:ohw]

        _kernels[key] = k
    return _kernels[key]


def avg_bwd_kernel(h: int, w: int) -> Callable:
    """The jitted kernel k(dx, dy) of the 2x2 average backward for (h, w) planes: dx
    (planes, h, w), dy (planes, OH, OW), C-contiguous. Needs small_plane(h, w)."""
    key = ("avg_bwd", h, w)
    if key not in _kernels:
        hh, ww = h, w
        hw, ohw = h * w, (h // 2) * (w // 2)
        n_in, n_out = _lanes(ohw), _vectors(hw) * _LANES

        @numba.njit(cache=True, nogil=True, error_model="numpy")
        def k(dx, dy):
            dxf, dyf = dx.reshape(dx.size), dy.reshape(dy.size)
            yt, xt = np.zeros(n_in, dy.dtype), np.empty(n_out, dx.dtype)
            xp, yp = _data(dxf), _data(dyf)
            for t in range(dx.shape[0]):
                xo, yo = t * hw, t * ohw
                if xo + n_out <= dxf.size and yo + n_in <= dyf.size:
                    _avg_bwd_plane(xp, xo, yp, yo, hh, ww)
                else:
                    yt[:ohw] = dyf[yo:yo + ohw]
                    _avg_bwd_plane(_data(xt), 0, _data(yt), 0, hh, ww)
                    dxf[xo:xo + hw] = xt[:hw]

        _kernels[key] = k
    return _kernels[key]


# ---------------------------------------------------------------------------- rows of any width

_ROW = 16  # outputs a step


@intrinsic
def _max_pool_row(typingctx, y, ind, yo, x, x0, x1, i0, w, bias, relu):
    """y[yo : yo + 16], ind[yo : yo + 16] <- the 2x2 max pool of 16 windows whose rows start
    at x[x0] and x[x1] (32 values each); window l's index is i0 + 2l + (0, 1, w, w + 1)[corner].
    With ``relu`` (a literal), each value is first relu(value + bias), as ``_numba._k_relu_fwd``
    (NaN passes)."""
    lit = _literals(relu)
    if lit is None:
        return None
    with_relu = bool(lit[0])
    sig = types.void(y, ind, yo, x, x0, x1, i0, w, bias, relu)
    even, odd = list(range(0, 2 * _ROW, 2)), list(range(1, 2 * _ROW, 2))

    def codegen(context, builder, sig, args):
        yty, indty, _, xty = sig.args[:4]
        y_, ind_, yo_, x_, x0_, x1_, i0_, w_, b_ = args[:9]
        r0 = _load_plane(context, builder, xty, x_, x0_, 2 * _ROW)
        r1 = _load_plane(context, builder, xty, x_, x1_, 2 * _ROW)
        if with_relu:
            bs = _splat(builder, b_, 2 * _ROW)
            r0, r1 = _relu(builder, builder.fadd(r0, bs)), _relu(builder, builder.fadd(r1, bs))
        m, k = _max4(builder, *(_shuffle(builder, r, lanes) for r in (r0, r1) for lanes in (even, odd)), w_)
        _store(context, builder, yty, y_, yo_, m)
        base = builder.add(_splat(builder, i0_, _ROW), ir.Constant(k.type, even))
        _store(context, builder, indty, ind_, yo_, builder.add(base, k))
        return context.get_dummy_value()

    return sig, codegen


def _relu(builder, v):
    """As _numba._k_relu_fwd: 0 where v <= 0, NaN passes."""
    zero = ir.Constant(v.type, None)
    return builder.select(builder.fcmp_ordered("<=", v, zero), zero, v)


def _max4(builder, a, b, c, d, w_):
    """(max, corner) of 2x2 windows given as their corner vectors a, b, c, d (window rows 0, 0,
    1, 1; columns 0, 1, 0, 1): a value replaces the running maximum when it is greater or NaN,
    in that order; corner is the offset (0, 1, w, w + 1) of the winner (int64 lanes)."""
    n = a.type.count
    it = ir.VectorType(_I64, n)
    one, ws = ir.Constant(it, [1] * n), _splat(builder, w_, n)
    m, k = a, ir.Constant(it, [0] * n)
    for v, off in ((b, one), (c, ws), (d, builder.add(ws, one))):
        g = builder.or_(builder.fcmp_ordered(">", v, m), builder.fcmp_unordered("uno", v, v))
        m, k = builder.select(g, v, m), builder.select(g, off, k)
    return m, k


@numba.njit(cache=True, nogil=True, error_model="numpy")
def max_pool_rows(y, ind, x):
    """The 2x2 max pool of x (planes, H, W) into y and its indices ind (planes, OH, OW), any
    plane size, 16 windows of a row a step (``_numba`` takes it for rows of up to 32 windows).
    Steps whose vectors would pass the array's end go through padded copies. The 2x2 average
    forward and backward were tried the same way and measured no faster than ``_numba``'s
    row loops, which LLVM vectorises from 8 windows a row."""
    planes, h, w = x.shape
    oh, ow = y.shape[1], y.shape[2]
    xf, yf, indf = x.reshape(x.size), y.reshape(y.size), ind.reshape(ind.size)
    xt, yt, it = np.zeros(4 * _ROW, x.dtype), np.empty(_ROW, y.dtype), np.empty(_ROW, np.int64)
    xp, yp, ip = _data(xf), _data(yf), _data(indf)
    zero = xt[0]
    for t in range(planes):
        for p in range(oh):
            x0, yo = (t * h + 2 * p) * w, (t * oh + p) * ow
            for q0 in range(0, ow, _ROW):
                i0 = 2 * p * w + 2 * q0
                if x0 + w + 2 * q0 + 2 * _ROW <= xf.size and yo + q0 + _ROW <= yf.size:
                    _max_pool_row(yp, ip, yo + q0, xp, x0 + 2 * q0, x0 + w + 2 * q0, i0, w, zero, False)
                    continue
                n = min(_ROW, ow - q0)
                xt[:2 * n] = xf[x0 + 2 * q0:x0 + 2 * q0 + 2 * n]
                xt[2 * _ROW:2 * _ROW + 2 * n] = xf[x0 + w + 2 * q0:x0 + w + 2 * q0 + 2 * n]
                _max_pool_row(_data(yt), _data(it), 0, _data(xt), 0, 2 * _ROW, i0, w, zero, False)
                yf[yo + q0:yo + q0 + n] = yt[:n]
                indf[yo + q0:yo + q0 + n] = it[:n]


@numba.njit(cache=True, nogil=True, error_model="numpy")
def unchunk_relu_pool(y, ind, tmp, b, n0, ew, w_full):
    """y, ind (N, K, PH*PW) <- the 2x2 max pool of relu(tmp[k, n] + b[k]) for images
    n0 .. n0+n, tmp (K, n, EH*EW) the even part of the convolution's output (``_numba``'s
    fused conv -> relu -> pool); indices h*W + w in the full convolution plane, W = w_full.
    Bit-identical to ``_numba._k_unchunk_relu_pool``. Whole-vector stores stay inside the
    chunk's own images of y (another thread's chunk starts after them). The window loop is
    max_pool_rows' again: shared through an inlined helper taking the arrays it measured 3x
    slower (81 -> 252 us a conv-1 chunk)."""
    k_out, nc, ehw = tmp.shape
    ph, pw = ehw // ew // 2, ew // 2
    yf, indf, tf = y.reshape(y.size), ind.reshape(ind.size), tmp.reshape(tmp.size)
    xt, yt, it = np.zeros(4 * _ROW, tmp.dtype), np.empty(_ROW, y.dtype), np.empty(_ROW, np.int64)
    xp, yp, ip = _data(tf), _data(yf), _data(indf)
    end = (n0 + nc) * k_out * ph * pw  # the chunk's last output
    for n in range(nc):
        for k in range(k_out):
            bk = b[k]
            src, dst = (k * nc + n) * ehw, ((n0 + n) * k_out + k) * ph * pw
            for p in range(ph):
                x0, yo = src + 2 * p * ew, dst + p * pw
                for q0 in range(0, pw, _ROW):
                    i0 = 2 * p * w_full + 2 * q0
                    if x0 + ew + 2 * q0 + 2 * _ROW <= tf.size and yo + q0 + _ROW <= end:
                        _max_pool_row(yp, ip, yo + q0, xp, x0 + 2 * q0, x0 + ew + 2 * q0, i0, w_full, bk, True)
                        continue
                    m = min(_ROW, pw - q0)
                    xt[:2 * m] = tf[x0 + 2 * q0:x0 + 2 * q0 + 2 * m]
                    xt[2 * _ROW:2 * _ROW + 2 * m] = tf[x0 + ew + 2 * q0:x0 + ew + 2 * q0 + 2 * m]
                    _max_pool_row(_data(yt), _data(it), 0, _data(xt), 0, 2 * _ROW, i0, w_full, bk, True)
                    yf[yo + q0:yo + q0 + m] = yt[:m]
                    indf[yo + q0:yo + q0 + m] = it[:m]


# ---------------------------------------------------------------------------- bits

@intrinsic
def pow2(typingctx, n):
    """2**n as a float32, for a float32 n holding an integer in [-126, 127]: its exponent
    bits (an int32 shift and a bitcast, which LLVM vectorises; Numba has no bitcast)."""
    if n != types.float32:
        return None
    sig = types.float32(n)

    def codegen(context, builder, sig, args):
        i = builder.fptosi(args[0], _I32)
        i = builder.shl(builder.add(i, ir.Constant(_I32, 127)), ir.Constant(_I32, 23))
        return builder.bitcast(i, ir.FloatType())

    return sig, codegen


# ---------------------------------------------------------------------------- small-depth GEMM

GEMM_DEPTH, GEMM_ROWS = 32, 64  # small_gemm's limits: its column vectors stay in registers, and
# its code (one block of GEMM_ROWS * GEMM_DEPTH multiply-adds, unrolled) stays small


@intrinsic
def _gemm_block(typingctx, out, oo, w, col, co, n, depth, k_out):
    """out[k * n + oo + l] = sum_j w[k * depth + j] * col[j * n + co + l] for the 16 columns l
    and every k < k_out (depth, k_out literals): the block's ``depth`` column vectors are
    loaded once and each output row is a chain of fused multiply-adds, in j order."""
    lit = _literals(depth, k_out)
    if lit is None:
        return None
    dd, kk = lit
    sig = types.void(out, oo, w, col, co, n, depth, k_out)

    def codegen(context, builder, sig, args):
        outty, _, wty, colty = sig.args[:4]
        out_, oo_, w_, col_, co_, n_ = args[:6]
        et = context.get_value_type(colty.dtype)
        vt = ir.VectorType(et, _LANES)
        align = colty.dtype.bitwidth // 8
        cols = []
        off = co_
        for _ in range(dd):
            cols.append(builder.load(_pointer(builder, col_, off, vt), align=align))
            off = builder.add(off, n_)
        name = f"llvm.fma.v{_LANES}{'f64' if colty.dtype.bitwidth == 64 else 'f32'}"
        fma = builder.module.declare_intrinsic(name, fnty=ir.FunctionType(vt, [vt, vt, vt]))
        off = oo_
        for k in range(kk):
            acc = None
            for j in range(dd):
                wk = builder.load(builder.gep(w_, [ir.Constant(_I64, k * dd + j)]))
                ws = _splat(builder, wk, _LANES)
                acc = builder.fmul(ws, cols[j]) if acc is None else builder.call(fma, [ws, cols[j], acc])
            _store(context, builder, outty, out_, off, acc)
            off = builder.add(off, n_)
        return context.get_dummy_value()

    return sig, codegen


def small_gemm(depth: int, k_out: int) -> Callable:
    """The jitted k(out, w, col): out (k_out, n) = w (k_out, depth) @ col (depth, n), all
    C-contiguous in one float dtype, 16 columns a step (``_gemm_block``); the last columns go
    through padded copies. For depth <= GEMM_DEPTH and k_out <= GEMM_ROWS: OpenBLAS runs
    such shapes far below its speed (conv 1's (32, 9) @ (9, 10816) in 107 us on one thread)."""
    key = ("gemm", depth, k_out)
    if key not in _kernels:
        dd, kk = depth, k_out

        @numba.njit(cache=True, nogil=True, error_model="numpy")
        def k(out, w, col):
            n = col.shape[1]
            of, wf, cf = out.reshape(out.size), w.reshape(w.size), col.reshape(col.size)
            op, wp, cp = _data(of), _data(wf), _data(cf)
            full = n // _LANES * _LANES
            for c0 in range(0, full, _LANES):
                _gemm_block(op, c0, wp, cp, c0, n, dd, kk)
            if full < n:
                m = n - full
                ct, ot = np.zeros((dd, _LANES), col.dtype), np.empty((kk, _LANES), out.dtype)
                for j in range(dd):
                    ct[j, :m] = col[j, full:]
                _gemm_block(_data(ot.reshape(ot.size)), 0, wp, _data(ct.reshape(ct.size)), 0, _LANES, dd, kk)
                for r in range(kk):
                    out[r, full:] = ot[r, :m]

        _kernels[key] = k
    return _kernels[key]


# ---------------------------------------------------------------------------- shallow direct convolution

def _conv_taps(builder, vt, align, x_, xo_, w_in_, plane_, cc: int, rows: int, ss: int) -> dict:
    """{(ci, dy, dx): the vector at x[xo + ci * plane + dy * w_in + dx]} for dy < rows."""
    taps = {}
    for ci in range(cc):
        for dy in range(rows):
            row = builder.add(builder.add(xo_, builder.mul(ir.Constant(_I64, ci), plane_)),
                              builder.mul(ir.Constant(_I64, dy), w_in_))
            for dx in range(ss):
                taps[ci, dy, dx] = builder.load(_pointer(builder, x_, builder.add(row, ir.Constant(_I64, dx)), vt),
                                                align=align)
    return taps


def _conv_sums(builder, w_, b_, k: int, taps: list[list]):
    """For each list of D vectors in ``taps``: (sum_j w[k * D + j] * vector_j) + b[k], the sum
    in _gemm_block's chain (a multiply, then fused multiply-adds in j order); the lists' chains
    are interleaved."""
    vt = taps[0][0].type
    fma = builder.module.declare_intrinsic(f"llvm.fma.v{_LANES}{'f64' if vt.element == ir.DoubleType() else 'f32'}",
                                           fnty=ir.FunctionType(vt, [vt, vt, vt]))
    dd = len(taps[0])
    acc: list = [None] * len(taps)
    for j in range(dd):
        ws = _splat(builder, builder.load(builder.gep(w_, [ir.Constant(_I64, k * dd + j)])), _LANES)
        for t, vecs in enumerate(taps):
            acc[t] = builder.fmul(ws, vecs[j]) if j == 0 else builder.call(fma, [ws, vecs[j], acc[t]])
    bias = _splat(builder, builder.load(builder.gep(b_, [ir.Constant(_I64, k)])), _LANES)
    return [builder.fadd(a, bias) for a in acc]


def _tap_order(taps: dict, cc: int, rr: int, ss: int, dy0: int = 0) -> list:
    """The taps of one output row (the input rows from dy0) in im2col's row order (ci, dy, dx)."""
    return [taps[ci, dy0 + dy, dx] for ci in range(cc) for dy in range(rr) for dx in range(ss)]


@intrinsic
def _conv_block(typingctx, y, yo, ys, x, xo, w_in, plane, w, b, c, r, s, k_out, relu):
    """y[yo + k * ys + l] = (sum_j w[k * D + j] * x[xo + tap_j + l]) + b[k] for the 16 output
    columns l and every filter k < k_out, then relu with ``relu`` (c, r, s, k_out, relu literals,
    D = c*r*s): tap j = (ci, dy, dx) in that order sits at ci * plane + dy * w_in + dx. The D
    input vectors are loaded once; each output row is _gemm_block's chain, so the result is
    bit-identical to the column-matrix path (im2col, ``small_gemm``, then
    ``_numba._k_unchunk_bias``'s bias and relu)."""
    lit = _literals(c, r, s, k_out, relu)
    if lit is None:
        return None
    cc, rr, ss, kk, with_relu = lit
    sig = types.void(y, yo, ys, x, xo, w_in, plane, w, b, c, r, s, k_out, relu)

    def codegen(context, builder, sig, args):
        yty, xty = sig.args[0], sig.args[3]
        y_, yo_, ys_, x_, xo_, win_, plane_, w_, b_ = args[:9]
        vt = ir.VectorType(context.get_value_type(xty.dtype), _LANES)
        taps = _tap_order(_conv_taps(builder, vt, xty.dtype.bitwidth // 8, x_, xo_, win_, plane_, cc, rr, ss),
                          cc, rr, ss)
        off = yo_
        for k in range(kk):
            v = _conv_sums(builder, w_, b_, k, [taps])[0]
            _store(context, builder, yty, y_, off, _relu(builder, v) if with_relu else v)
            off = builder.add(off, ys_)
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def _conv_pool_block(typingctx, y, ind, yo, ys, x, xo, w_in, plane, w, b, i0, w_full, c, r, s, k_out):
    """The fused conv -> relu -> 2x2 max pool of _conv_block's output rows 0 and 1 (from x[xo])
    over 16 columns: y[yo + k * ys + l] and ind[...] for the 8 windows l and every filter k
    (c, r, s, k_out literals); window l's index is i0 + 2l + (0, 1, w_full, w_full + 1)[corner].
    The rows are _conv_block's values and the windows _max_pool_row's steps, so the result is
    bit-identical to conv -> relu -> max pool."""
    lit = _literals(c, r, s, k_out)
    if lit is None:
        return None
    cc, rr, ss, kk = lit
    sig = types.void(y, ind, yo, ys, x, xo, w_in, plane, w, b, i0, w_full, c, r, s, k_out)
    half = _LANES // 2
    even, odd = list(range(0, _LANES, 2)), list(range(1, _LANES, 2))

    def codegen(context, builder, sig, args):
        yty, indty, xty = sig.args[0], sig.args[1], sig.args[4]
        y_, ind_, yo_, ys_, x_, xo_, win_, plane_, w_, b_, i0_, wf_ = args[:12]
        vt = ir.VectorType(context.get_value_type(xty.dtype), _LANES)
        taps = _conv_taps(builder, vt, xty.dtype.bitwidth // 8, x_, xo_, win_, plane_, cc, rr + 1, ss)
        rows = [_tap_order(taps, cc, rr, ss, t) for t in (0, 1)]
        it = ir.VectorType(_I64, half)
        base = builder.add(_splat(builder, i0_, half), ir.Constant(it, even))
        off = yo_
        for k in range(kk):
            r0, r1 = (_relu(builder, v) for v in _conv_sums(builder, w_, b_, k, rows))
            m, kx = _max4(builder, *(_shuffle(builder, v, lanes) for v in (r0, r1) for lanes in (even, odd)), wf_)
            _store(context, builder, yty, y_, off, m)
            _store(context, builder, indty, ind_, off, builder.add(base, kx))
            off = builder.add(off, ys_)
        return context.get_dummy_value()

    return sig, codegen


def conv_rows_apply(c_in: int, r: int, s: int, k_out: int, ow: int) -> bool:
    """Whether ``conv_rows`` and ``conv_pool_rows`` take a stride-1, undilated, unpadded
    convolution of this shape: depth and filters within small_gemm's limits (its taps stay in
    registers and its code stays small) and output rows of at least one vector (then the
    pooled rows hold at least 8 windows)."""
    return c_in * r * s <= GEMM_DEPTH and k_out <= GEMM_ROWS and ow >= _LANES


def conv_rows(c_in: int, r: int, s: int, k_out: int) -> Callable:
    """The jitted k(y, x, w, b, n0, n1, relu): y[n0:n1] (N, K, OH, OW) <- the stride-1,
    undilated, unpadded convolution of x[n0:n1] (N, C, H, W) by w (K, C, R, S) plus b (K), then
    relu with ``relu``; all C-contiguous in one float dtype; OW >= 16 (``conv_rows_apply``).
    Each output row is cut into 16-column steps, the last one moved back to end at the row's
    end (it recomputes a few columns, so no load or store leaves the row and no padded copy is
    needed). Conv 1 at batch 32 on one thread: 140 us against 310-330 for im2col +
    small_gemm + bias, whose results it matches bit for bit."""
    key = ("conv_rows", c_in, r, s, k_out)
    if key not in _kernels:
        cc, rr, ss, kk = c_in, r, s, k_out

        @numba.njit(cache=True, nogil=True, error_model="numpy")
        def k(y, x, w, b, n0, n1, relu):
            oh, ow = y.shape[2], y.shape[3]
            w_in = x.shape[3]
            plane, ohw = x.shape[2] * w_in, oh * ow
            yp, xp = _data(y.reshape(y.size)), _data(x.reshape(x.size))
            wp, bp = _data(w.reshape(w.size)), _data(b)
            last = ow - _LANES
            for n in range(n0, n1):
                for i in range(oh):
                    xo, yo = n * cc * plane + i * w_in, n * kk * ohw + i * ow
                    q = 0
                    while True:
                        q = min(q, last)
                        if relu:
                            _conv_block(yp, yo + q, ohw, xp, xo + q, w_in, plane, wp, bp, cc, rr, ss, kk, True)
                        else:
                            _conv_block(yp, yo + q, ohw, xp, xo + q, w_in, plane, wp, bp, cc, rr, ss, kk, False)
                        if q == last:
                            break
                        q += _LANES

        _kernels[key] = k
    return _kernels[key]


def conv_pool_rows(c_in: int, r: int, s: int, k_out: int) -> Callable:
    """The jitted k(y, ind, x, w, b, n0, n1): y[n0:n1], ind[n0:n1] (N, K, OH // 2, OW // 2) <-
    max_pool2d(relu(conv2d(x, w, b)), 2) with its indices (h * OW + w in the convolution
    plane), for the shapes of ``conv_rows`` (``conv_rows_apply``). Each pair of output rows is
    cut into 8-window steps (16 convolution columns), the last one moved back to end at the
    row's end. Bit-identical to conv_rows -> max_pool_rows. Conv 1 at batch 32 on one thread:
    290-350 us, against 390-450 for the column path on two worker threads."""
    key = ("conv_pool_rows", c_in, r, s, k_out)
    if key not in _kernels:
        cc, rr, ss, kk = c_in, r, s, k_out
        half = _LANES // 2

        @numba.njit(cache=True, nogil=True, error_model="numpy")
        def k(y, ind, x, w, b, n0, n1):
            ph, pw = y.shape[2], y.shape[3]
            w_in = x.shape[3]
            ow = w_in - ss + 1
            plane, phw = x.shape[2] * w_in, ph * pw
            yp, ip, xp = _data(y.reshape(y.size)), _data(ind.reshape(ind.size)), _data(x.reshape(x.size))
            wp, bp = _data(w.reshape(w.size)), _data(b)
            last = pw - half
            for n in range(n0, n1):
                for p in range(ph):
                    xo, yo = n * cc * plane + 2 * p * w_in, n * kk * phw + p * pw
                    q = 0
                    while True:
                        q = min(q, last)
                        _conv_pool_block(yp, ip, yo + q, phw, xp, xo + 2 * q, w_in, plane, wp, bp,
                                         2 * p * ow + 2 * q, ow, cc, rr, ss, kk)
                        if q == last:
                            break
                        q += half

        _kernels[key] = k
    return _kernels[key]
