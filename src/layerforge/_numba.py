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

Threads: every jitted kernel is serial (no prange: a Numba thread pool next to BLAS's own is
two pools spinning against each other; on 2 cores, alternating an OpenMP prange kernel with a
BLAS call measured 8 ms for 50 us of work; with our worker threads it doubled a pool-then-conv
sequence). The convolutions and large dense products instead split into chunks that run on
plain Python threads (the caller plus helpers, ``_Workers``): each chunk's im2col, GEMM and
copy-out run in one thread, with the GIL released, and each
thread's GEMMs run on ONE BLAS thread (OpenBLAS's per-thread setting), so the BLAS's own
threads never wake. Two one-thread GEMMs side by side ran conv2-sized chunks twice as fast
as one two-thread GEMM after another, the serial passes get both cores too, and OpenBLAS's
idle worker, which spins for about 0.1 s after each call, no longer competes with them: with
two-thread GEMMs the batch-256 CNN step had phases of seconds at 1.7-2x its time, which
one-thread GEMMs (set this way, or by OPENBLAS_NUM_THREADS=1) do not show. Without that
OpenBLAS call (another BLAS) everything runs in the calling thread, as before. Large
poolings and elementwise ops split the same way (``_split``: ranges of planes or elements,
from about 1 M elements, since a dispatch to a helper costs 55-60 us). From 64 K elements up
to that, the ones with a kernel in ``_serve`` run in two halves with ``_numba_spin``'s helper,
which waits inside a nogil Numba loop and takes a request in well under a microsecond; it
parks when these worker threads start.
Matrix products go through NumPy at the Python level rather than ``np.dot`` inside ``njit``,
because Numba's in-kernel BLAS needs SciPy, which is not a dependency.

Convolution is im2col into a column matrix (C*R*S, n, OH*OW) for a chunk of n images, so each
direction is ONE large GEMM per chunk; the chunks are the same for any thread count and dW
is summed over them in batch order, so results do not depend on the thread count.
Transcendentals (exp, tanh) go through NumPy's SIMD ufuncs, which are several times faster
than Numba's scalar libm calls, except the float32 sigmoid, which computes its own exp in
one vectorised pass (``_k_sigmoid32``).
The 2x2 poolings whose rows are too short for LLVM's loop vectoriser (small planes, rows
of up to 32 windows with indices, conv 1's fused pooling) are explicit SIMD written as LLVM
IR in ``_numba_simd.py``, bit-identical to the loops here, and so are the convolutions'
shallow GEMMs (depth <= 32), which OpenBLAS runs far below its speed.

Hot loops index flat views with unsigned offsets (``_u``): with signed indices Numba emits a
negative-index wraparound check per access, which blocks vectorisation (3-5x slower copies).
fastmath is off except for float64 reductions (see ``_rjit``): pooling, softmax and the
activations must propagate NaN and handle inf. Sums of many terms (bias gradients, softmax
normalisers, pooling windows) accumulate in float64.
"""

from __future__ import annotations

import ctypes
import os
import queue
import threading
from collections.abc import Callable

import numba
import numpy as np

from . import _backend
from . import _numba_simd as _simd
from . import _numba_spin as _spin

Array = np.ndarray

# A chunk's column matrix and GEMM result (or dy copy) together stay near this size (at least
# one image): they are then cache-resident between im2col, the GEMM and the copy back, and a
# huge batch never allocates a column matrix of many GiB. Counting only the column matrix, at
# 8 MiB, conv 1 (9 column rows, 32 output channels) ran as one 28 MB chunk at batch 256: the
# documents' CNN step took 71.8 ms against 59.6 with this rule (2 and 4 MiB alike; 1 MiB 60.7).
_COL_BYTES = 4 << 20

# Scratch (column matrices, GEMM results, chunk gradients) is reused between calls, per
# thread, up to this size per buffer; a larger one is allocated for the call. Fresh
# multi-MiB arrays each call made the CNN step's speed depend on the allocator's state: the
# same process alternated between 45 and 75-85 ms per batch-256 step for seconds at a time,
# and with every large array mmap'ed (MALLOC_MMAP_THRESHOLD_=65536) it took 115 ms.
_SCRATCH_CAP = 32 << 20
_local = threading.local()


def _scratch(slot: int, shape: tuple[int, ...], dtype: np.dtype) -> Array:
    """An uninitialised C-contiguous array that reuses this thread's buffer ``slot`` (0-3;
    arrays in use at the same time need different slots). It starts at address
    slot * 1 KiB modulo 4 KiB: 64-byte aligned, and copies between two slots do not alias."""
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if nbytes > _SCRATCH_CAP:
        return np.empty(shape, dtype)
    bufs = getattr(_local, "bufs", None)
    if bufs is None:
        bufs = _local.bufs = [None] * 4
    buf = bufs[slot]
    if buf is None or buf.nbytes < nbytes + 4096:
        buf = bufs[slot] = np.empty(nbytes + 4096, np.uint8)
    start = (slot * 1024 - buf.ctypes.data) % 4096
    return buf[start:start + nbytes].view(dtype).reshape(shape)


# ---------------------------------------------------------------------------- threads

# The convolutions run their chunks on worker threads (the caller plus helpers), each chunk's
# GEMM on one BLAS thread, so that both cores do every pass. NumPy's own BLAS threads are
# kept out of it: a two-thread GEMM per chunk ran conv2-sized chunks at 78 GFLOP/s against
# 152 for two one-thread GEMMs side by side, and OpenBLAS's idle worker spins for about
# 0.1 s after each call, against our threads.
# Multiply-adds below which the chunks run in the calling thread. _simd.conv_rows and
# conv_pool_rows split their images from the same size: conv 1's plain forward (32 filters of
# 3x3 on 28x28) at batch 16 took 70 us on one thread and 100 on two, 32 143 and 139, 64 285
# and 217. At batch 32 they ran on one thread first (session 15), and the Numba ops after them
# in the benchmark suite then ran up to 2x slower (conv 2's backward at batch 32 3.8-5.2 ms
# in three pytest runs against 3.1-3.3 in two with conv 1 on the workers; our reading: long
# stretches with the second core idle leave the worker threads slow for a while on this VM).
_PARALLEL_WORK = 4e6


def _find_blas_local() -> Callable[[int], int] | None:
    """OpenBLAS's openblas_set_num_threads_local (the calling thread's count; OpenBLAS
    0.3.27+) from the OpenBLAS that NumPy loaded, or None: then the chunks run in the calling
    thread and the GEMMs use the BLAS's own threads."""
    try:
        with open("/proc/self/maps") as f:
            paths = {ln.split()[-1] for ln in f if "openblas" in ln.lower() and ".so" in ln}
    except OSError:
        return None
    for path in sorted(paths, key=lambda q: "numpy" not in q):  # NumPy's own first
        try:
            fn = ctypes.CDLL(path).openblas_set_num_threads_local
        except (OSError, AttributeError):
            continue
        fn.argtypes, fn.restype = [ctypes.c_int], ctypes.c_int
        return fn
    return None


_blas_local = _find_blas_local()


def _default_threads() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


_threads = (_backend.numba_threads or _default_threads()) if _blas_local is not None else 1


def set_num_threads(n: int) -> None:
    """Worker threads for the convolutions (1 without a per-thread OpenBLAS setting)."""
    global _threads
    _threads = max(1, int(n)) if _blas_local is not None else 1


def get_num_threads() -> int:
    return _threads


class _Workers:
    """Helper threads that each run one job of a call while the caller runs the first; the
    call returns when all are done and re-raises the first exception. Each helper's BLAS
    runs on one thread. Helpers start on first use and are forgotten in a forked child."""

    def __init__(self) -> None:
        self._queues: list[queue.SimpleQueue] = []
        self._lock = threading.Lock()

    def reset(self) -> None:
        self._queues = []
        self._lock = threading.Lock()  # a forked child may have inherited it held

    def _loop(self, q: queue.SimpleQueue) -> None:
        _blas_local(1)
        while True:
            job, done, errors = q.get()
            try:
                job()
            except BaseException as exc:  # re-raised in the caller
                errors.append(exc)
            done.release()

    def run(self, jobs: list[Callable[[], None]]) -> None:
        _spinner.stop()  # the cores are these threads' now
        with self._lock:
            while len(self._queues) < len(jobs) - 1:
                q: queue.SimpleQueue = queue.SimpleQueue()
                threading.Thread(target=self._loop, args=(q,), daemon=True,
                                 name=f"layerforge-numba-{len(self._queues) + 1}").start()
                self._queues.append(q)
            queues = self._queues[:len(jobs) - 1]
        done = threading.Semaphore(0)
        errors: list[BaseException] = []
        for q, job in zip(queues, jobs[1:]):
            q.put((job, done, errors))
        prev = _blas_local(1)
        try:
            jobs[0]()
        finally:
            _blas_local(prev)
            for _ in queues:
                done.acquire()
        if errors:
            raise errors[0]


_workers = _Workers()


# error_model="numpy": a float division by zero gives inf/NaN as in NumPy, C++ and PyTorch
# instead of raising ZeroDivisionError, and the check Python's rule needs before every
# division is gone. That check kept every loop with a division scalar: Adam's update on the
# CNN's 122k parameters took 287 us against 40 now, the sigmoid's finish pass 29 against 4
# on (256, 128). (Integer divisions see only sizes that ops.py has validated as positive.)
_jit = numba.njit(cache=True, nogil=True, error_model="numpy")
# For kernels whose long sums are float64 accumulators, and the dense forward's dot products:
# their order may change so that they vectorise (still fixed per build). No NaN/inf assumptions ('nnan'/'ninf' stay off), so NaN
# and inf still propagate.
_rjit = numba.njit(cache=True, nogil=True, error_model="numpy",
                   fastmath={"reassoc", "nsz", "contract"})
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


def _chunk_bounds(n: int, rows: int, ohw: int, itemsize: int) -> list[tuple[int, int]]:
    """[n0, n1) image ranges for ``rows`` (column-matrix rows + output channels) of OH*OW
    each: equal chunks of at most about _COL_BYTES, an even number of them (two threads
    share them evenly), the same whatever the thread count."""
    per_image = max(rows * ohw * itemsize, 1)
    step = max(1, min(n, _COL_BYTES // per_image))
    count = -(-n // step)
    if count % 2 and count < n:
        count += 1
    return [(n * i // count, n * (i + 1) // count) for i in range(count)]


def _chunk_jobs(chunks: list[tuple[int, int]], work: float, run) -> None:
    """run(i, n0, n1) for every chunk i: over the worker threads (chunk i on thread
    i % threads) when there are several chunks and ``work`` (multiply-adds) is worth it,
    else in the calling thread. BLAS runs on one thread per worker, except for a single big
    chunk with threads to spare, which keeps the BLAS's own threads."""
    t = min(_threads, len(chunks)) if work >= _PARALLEL_WORK else 1
    if t >= 2:
        def job(first: int):
            def go():
                for i in range(first, len(chunks), t):
                    run(i, *chunks[i])
            return go

        _workers.run([job(j) for j in range(t)])
        return
    one = _blas_local is not None and not (len(chunks) == 1 and work >= _PARALLEL_WORK and _threads > 1)
    prev = _blas_local(1) if one else 0
    try:
        for i, (n0, n1) in enumerate(chunks):
            run(i, n0, n1)
    finally:
        if one:
            _blas_local(prev)


def _forward_chunks(
    emit, x: Array, w: Array, sh: int, sw: int, ph: int, pw: int, dh: int, dw: int, oh: int, ow: int,
) -> None:
    """The convolution's GEMM result for output rows/columns [0, oh) x [0, ow), a chunk of
    images at a time: ``emit(tmp, n0)`` gets it as tmp (K, n, oh*ow) for images n0 .. n0+n
    (chunks may run on several threads at once: emit must touch only those images)."""
    n = x.shape[0]
    k_out, c_in, r, s = w.shape
    ohw = oh * ow
    crs = c_in * r * s
    w2 = w.reshape(k_out, crs)

    # Shallow GEMMs (conv 1's 9 or 27 rows) take _numba_simd's register-blocked kernel:
    # (32, 9) @ (9, 10816), one thread, 112 -> 62 us (float64 213 -> 122), (32, 27) @
    # (27, 7200) 158 -> 117 (float64 level); OpenBLAS runs them far below its speed.
    small = _simd.small_gemm(crs, k_out) if crs <= _simd.GEMM_DEPTH and k_out <= _simd.GEMM_ROWS else None

    def run(i: int, n0: int, n1: int) -> None:
        nc = n1 - n0
        col = _scratch(0, (crs, nc, ohw), x.dtype)
        tmp = _scratch(1, (k_out, nc, ohw), x.dtype)
        _k_im2col(col, x, n0, r, s, sh, sw, ph, pw, dh, dw, oh, ow)
        if small is not None:
            small(tmp.reshape(k_out, nc * ohw), w2, col.reshape(crs, nc * ohw))
        else:
            np.dot(w2, col.reshape(crs, nc * ohw), out=tmp.reshape(k_out, nc * ohw))
        emit(tmp, n0)

    _chunk_jobs(_chunk_bounds(n, crs + k_out, ohw, x.itemsize), float(n) * ohw * crs * k_out, run)


def _bias_or_zeros(b: Array | None, k_out: int, dtype: np.dtype) -> Array:
    return np.zeros(k_out, dtype) if b is None else b


def _direct(x: Array, w: Array, oh: int, ow: int, sh: int, sw: int, ph: int, pw: int, dh: int, dw: int) -> bool:
    """Whether the forward of this convolution (output oh x ow) takes _simd.conv_rows /
    conv_pool_rows. They need every tap inside the input: no padding on any side (a 'same'
    padding of an even kernel pads only the bottom and right, so the output's size is checked
    too)."""
    k_out, c_in, r, s = w.shape
    return ((sh, sw, ph, pw, dh, dw) == (1, 1, 0, 0, 1, 1) and oh == x.shape[2] - r + 1 and ow == x.shape[3] - s + 1
            and _simd.conv_rows_apply(c_in, r, s, k_out, ow))


def conv2d_forward(
    y: Array, x: Array, w: Array, b: Array | None,
    sh: int, sw: int, ph: int, pw: int, dh: int, dw: int, relu: bool = False,
) -> None:
    if y.size == 0:
        return
    bias = _bias_or_zeros(b, w.shape[0], y.dtype)
    if _direct(x, w, y.shape[2], y.shape[3], sh, sw, ph, pw, dh, dw):
        kern = _simd.conv_rows(*w.shape[1:], w.shape[0])
        work = float(y.size) * w[0].size
        _split(lambda p: kern(y, x, w, bias, p.start, p.stop, relu), y.shape[0], work >= _PARALLEL_WORK)
        return
    y3 = y.reshape(y.shape[0], y.shape[1], -1)
    _forward_chunks(lambda tmp, n0: _k_unchunk_bias(y3, tmp, bias, n0, relu),
                    x, w, sh, sw, ph, pw, dh, dw, y.shape[2], y.shape[3])


def _backward_chunks(
    fill, dx: Array | None, dwt: Array | None, x: Array, w: Array,
    sh: int, sw: int, ph: int, pw: int, dh: int, dw: int, oh: int, ow: int,
) -> Array:
    """dx and dW of the convolution for output rows/columns [0, oh) x [0, ow), a chunk of
    images at a time: ``fill(dyc, acc, n0)`` writes the output gradient of images n0 .. n0+n
    into dyc (K, n, oh*ow) and may add to acc (K,) float64, zeroed per chunk. Returns the
    sum of the accs. Each chunk's dW (and acc) is kept apart and the chunks are summed in
    batch order, so dW does not depend on the thread count. Needs n, K, C*R*S and oh*ow
    all non-zero."""
    n = x.shape[0]
    k_out, c_in, r, s = w.shape
    ohw = oh * ow
    crs = c_in * r * s
    w2 = w.reshape(k_out, crs)
    chunks = _chunk_bounds(n, crs + k_out, ohw, x.itemsize)
    parts = np.empty((len(chunks), k_out, crs), x.dtype) if dwt is not None else None
    accs = np.zeros((len(chunks), k_out), np.float64)

    def run(i: int, n0: int, n1: int) -> None:
        nc = n1 - n0
        dyc = _scratch(1, (k_out, nc, ohw), x.dtype)
        fill(dyc, accs[i], n0)
        if parts is None and dx is None:  # the bias sums only
            return
        dy2 = dyc.reshape(k_out, nc * ohw)
        col = _scratch(0, (crs, nc, ohw), x.dtype)
        col2 = col.reshape(crs, nc * ohw)
        if parts is not None:
            _k_im2col(col, x, n0, r, s, sh, sw, ph, pw, dh, dw, oh, ow)
            np.dot(dy2, col2.T, out=parts[i])
        if dx is not None:
            # col is free again: it now receives the column gradient W^T dY.
            np.dot(w2.T, dy2, out=col2)
            _k_col2im(dx, col, n0, r, s, sh, sw, ph, pw, dh, dw, oh, ow)

    _chunk_jobs(chunks, float(n) * ohw * crs * k_out, run)
    if parts is not None:
        dw2 = dwt.reshape(k_out, crs)
        dw2[...] = parts[0]
        for part in parts[1:]:
            dw2 += part
    total = accs[0].copy()
    for a in accs[1:]:
        total += a
    return total


def _zero_grads(*grads: Array | None) -> None:
    for g in grads:
        if g is not None:
            g.fill(0)


def conv2d_backward(
    dx: Array | None, dwt: Array | None, db: Array | None, dy: Array, x: Array, w: Array,
    sh: int, sw: int, ph: int, pw: int, dh: int, dw: int, relu_y: Array | None = None,
) -> None:
    if relu_y is not None:
        da = _scratch(3, dy.shape, dy.dtype)
        _k_relu_bwd(da.reshape(-1), dy.reshape(-1), relu_y.reshape(-1))
        dy = da
    n, k_out, oh, ow = dy.shape
    dy3 = dy.reshape(n, k_out, oh * ow)
    if db is not None:
        _k_bias_grad(db, dy3)
    if dx is None and dwt is None:
        return
    if dy.size == 0 or w.size == 0:
        # Nothing reaches x or w: the gradients are exactly zero, and BLAS is not asked
        # about empty products.
        _zero_grads(dx, dwt)
        return
    _backward_chunks(lambda dyc, acc, n0: _k_chunk(dyc, dy3, n0), dx, dwt, x, w, sh, sw, ph, pw, dh, dw, oh, ow)


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


@numba.njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _max4(v0, v1, v2, v3, z, k1, k2, k3):
    """The 2x2 window rule on its values in row order: a value replaces the running maximum
    when it is greater or NaN. Returns (max, its window-local index z/k1/k2/k3)."""
    g = (v1 > v0) | (v1 != v1)
    m = v1 if g else v0
    k = k1 if g else z
    g = (v2 > m) | (v2 != v2)
    m = v2 if g else m
    k = k2 if g else k
    g = (v3 > m) | (v3 != v3)
    return (v3 if g else m), (k3 if g else k)


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
                    yf[o + q], kbuf[q] = _max4(xf[r0 + a], xf[r0 + a + one], xf[r1 + a], xf[r1 + a + one],
                                               z, k1, k2, k3)
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


@numba.njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _typed(a, v):
    """v in a's dtype: a float literal would widen float32 arithmetic to float64."""
    c = np.empty(1, a.dtype)
    c[0] = v
    return c[0]


@_jit
def _k_avg_pool_2x2(y, x):
    # The 2x2 / stride 2 / no padding case of _k_avg_pool_fwd, in x's dtype with the C++
    # kernels' sum order: ((a + b) + c) + d, times 0.25. The general kernel, which sums each
    # window in a float64 loop and divides, ran the documents' shapes 16-25x slower than C++.
    planes, h_in, w_in = x.shape
    oh, ow = y.shape[1], y.shape[2]
    xf = x.reshape(x.size)
    yf = y.reshape(y.size)
    qv = _typed(x, 0.25)
    one, two, uw = _u(1), _u(2), _u(w_in)
    for t in range(planes):
        for p in range(oh):
            r0 = _u((t * h_in + 2 * p) * w_in)
            r1 = r0 + uw
            o = _u((t * oh + p) * ow)
            for q in range(_u(ow)):
                a = two * q
                yf[o + q] = (((xf[r0 + a] + xf[r0 + a + one]) + xf[r1 + a]) + xf[r1 + a + one]) * qv


@_jit
def _k_avg_pool_2x2_bwd(dx, dy):
    # dx (planes, H, W), all of it written: dy * 0.25 on each 2x2 window (stride 2, no
    # padding), 0 on the odd last row / column no window reaches. (Building row 2p column by
    # column and copying it to row 2p + 1 measured no faster than these four stores.)
    planes, h_in, w_in = dx.shape
    oh, ow = dy.shape[1], dy.shape[2]
    dxf = dx.reshape(dx.size)
    dyf = dy.reshape(dy.size)
    qv, zero = _typed(dx, 0.25), _typed(dx, 0.0)
    one, two, uw = _u(1), _u(2), _u(w_in)
    # With an even W, each row is written as whole groups of 8 outputs (16 values): LLVM
    # vectorises the paired stores only from 8 iterations on, and the values past the row
    # land on the rows after it, which are written later. The last rows of the array (or of
    # this thread's planes) take the exact loop. Single-thread A/B, float32: (32,32,26,26)
    # 195 -> 100 us, (256,32,26,26) 1.6x; float64 1.1-1.5x. With an odd W the same loop
    # measured 1.2-1.7x slower than the exact one (W = 11 to 17), so odd widths keep it.
    q8 = _u((ow + 7) // 8 * 8)
    n_dx, n_dy = _u(dx.size), _u(dy.size)
    groups = w_in % 2 == 0
    for t in range(planes):
        base = _u(t * h_in * w_in)
        for p in range(oh):
            r0 = base + _u(2 * p) * uw
            r1 = r0 + uw
            o = _u((t * oh + p) * ow)
            if groups and r1 + two * q8 <= n_dx and o + q8 <= n_dy:
                for q in range(q8):
                    g = dyf[o + q] * qv
                    dxf[r0 + two * q] = g
                    dxf[r0 + two * q + one] = g
                for q in range(q8):  # after row 2p, whose last group reaches into this row
                    g = dyf[o + q] * qv
                    dxf[r1 + two * q] = g
                    dxf[r1 + two * q + one] = g
                continue
            for q in range(_u(ow)):
                g = dyf[o + q] * qv
                a = two * q
                dxf[r0 + a] = g
                dxf[r0 + a + one] = g
                dxf[r1 + a] = g
                dxf[r1 + a + one] = g
            for v in range(_u(2 * ow), uw):  # the odd last column
                dxf[r0 + v] = zero
                dxf[r1 + v] = zero
        for e in range(base + _u(2 * oh) * uw, base + _u(h_in) * uw):  # the odd last row
            dxf[e] = zero


def _small_2x2(x: Array, kh: int, kw: int, sh: int, sw: int, ph: int, pw: int) -> bool:
    """Whether a pooling of x (N, C, H, W) takes ``_numba_simd``'s in-register 2x2 kernels."""
    return kh == kw == sh == sw == 2 and ph == pw == 0 and _simd.small_plane(x.shape[2], x.shape[3])


def _planes(a: Array) -> Array:
    return a.reshape(a.shape[0] * a.shape[1], a.shape[2], a.shape[3])


# Elements (of the larger of a pooling's input and output) from which its planes are split
# over the worker threads. A dispatch costs 55-60 us, so below this it costs more than the
# second core saves: on (32,32,26,26), 0.7 M elements, the max forward took 163 us in one
# thread and 168 in two; on (256,64,11,11), 2 M elements, 700 against 447.
_POOL_PARALLEL = 1 << 20


def _split(run: Callable[[slice], object], n: int, parallel: bool) -> list:
    """[run(s) for each range s of [0, n)]: equal ranges, one per worker thread, when
    ``parallel``, else one range in the calling thread. The items (planes, elements) are
    independent, so the results do not depend on the split."""
    t = min(_threads, n) if parallel else 1
    parts = [slice(n * i // t, n * (i + 1) // t) for i in range(t)]
    if t < 2:
        return [run(parts[0])]
    out: list = [None] * t

    def job(i: int) -> Callable[[], None]:
        def go() -> None:
            out[i] = run(parts[i])
        return go

    _workers.run([job(i) for i in range(t)])
    return out


_NO_INDICES = np.zeros((1, 1, 1), np.int64)

# Calls from this many elements up to the _POOL_PARALLEL / _ELTWISE_PARALLEL splits run in two
# halves, the second on the spinning helper (_numba_spin), when they have a kernel in _serve.
# A split costs about 3 us: relu forward on 64K float32 took 6.8 us in one thread and 7.0 in
# two, 128K 14.3 and 10.0, 1M 100 and 57; relu backward 64K 10.7 and 8.8.
_SPLIT2 = 1 << 16

# _serve's ops (the request's layout is Spinner.split2's).
(_OP_AVG2, _OP_AVG2_BWD, _OP_MAX2, _OP_MAX_ROWS, _OP_MAX_BWD,
 _OP_RELU, _OP_RELU_BWD, _OP_SIGMOID_BWD, _OP_TANH_BWD) = range(1, 10)


@_jit
def _serve_as(a, z):
    op, lo, hi = a[0], a[2], a[3]
    d0, d1, d2, d3, d4 = a[7], a[8], a[9], a[10], a[11]
    p4, p5 = _spin.pointer(a[4], z), _spin.pointer(a[5], z)
    i6 = _spin.pointer(a[6], np.int64(0))
    if op == _OP_AVG2:
        _k_avg_pool_2x2(numba.carray(p4, (d0, d3, d4))[lo:hi], numba.carray(p5, (d0, d1, d2))[lo:hi])
    elif op == _OP_AVG2_BWD:
        _k_avg_pool_2x2_bwd(numba.carray(p4, (d0, d1, d2))[lo:hi], numba.carray(p5, (d0, d3, d4))[lo:hi])
    elif op == _OP_MAX2 or op == _OP_MAX_ROWS:
        y, x = numba.carray(p4, (d0, d3, d4))[lo:hi], numba.carray(p5, (d0, d1, d2))[lo:hi]
        want = a[12] != 0
        ind = numba.carray(i6, (d0, d3, d4))[lo:hi] if want else numba.carray(i6, (1, 1, 1))[0:1]
        if op == _OP_MAX_ROWS:
            _simd.max_pool_rows(y, ind, x)
        else:
            _k_max_pool_2x2(y, ind, x, want)
    elif op == _OP_MAX_BWD:
        a[13] = _k_max_pool_bwd(numba.carray(p4, (d0, d1))[lo:hi], numba.carray(p5, (d0, d2))[lo:hi],
                                numba.carray(i6, (d0, d2))[lo:hi])
    else:
        o, u, v = numba.carray(p4, d0)[lo:hi], numba.carray(p5, d0)[lo:hi], numba.carray(_spin.pointer(a[6], z), d0)[lo:hi]
        if op == _OP_RELU:
            _k_relu_fwd(o, u)
        elif op == _OP_RELU_BWD:
            _k_relu_bwd(o, u, v)
        elif op == _OP_SIGMOID_BWD:
            _k_sigmoid_bwd(o, u, v)
        elif op == _OP_TANH_BWD:
            _k_tanh_bwd(o, u, v)


@_jit
def _serve(ctl):
    a = ctl[_spin.ARGS:]
    if a[1] == 0:
        _serve_as(a, np.float32(0))
    else:
        _serve_as(a, np.float64(0))


@numba.njit(cache=True, nogil=True)
def _spin_loop(ctl, seen, spins):
    """The spinning helper's loop (the protocol is _numba_spin's): serves requests until
    idle for ``spins`` turns or told to stop; returns the last request seen."""
    idle = 0
    while True:
        seen, idle, action = _spin.serve_turn(ctl, seen, idle, spins)
        if action == 1:
            _serve(ctl)
            _spin.served(ctl, seen)
        elif action == 2:
            return seen


_spinner = _spin.Spinner(_spin_loop)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=lambda: (_workers.reset(), _spinner.reset()))


def _size_split(run: Callable[[slice], object], n: int, size: int, parallel_from: int, req: tuple | None = None,
                result: Callable[[], object] | None = None) -> list:
    """[run(s) for ranges s of n items (planes or elements), ``size`` elements in all]: over
    the worker threads from ``parallel_from`` elements, in two halves with the spinning helper
    from _SPLIT2 when ``req`` is the helper's request (op, out, a, b, dims[, flag];
    Spinner.split2), else in one range in this thread."""
    if size >= parallel_from:
        return _split(run, n, True)
    if req is not None and size >= _SPLIT2 and _threads >= 2 and n >= 2:
        return _spinner.split2(n, run, *req, result=result)
    return [run(slice(0, n))]


def max_pool2d_forward(
    y: Array, indices: Array | None, x: Array,
    kh: int, kw: int, sh: int, sw: int, ph: int, pw: int,
) -> None:
    if y.size == 0:
        return
    yp, xp, want = _planes(y), _planes(x), indices is not None
    ip = _planes(indices) if want else _NO_INDICES
    two = kh == kw == sh == sw == 2 and ph == pw == 0
    dims = (yp.shape[0], x.shape[2], x.shape[3], y.shape[2], y.shape[3])
    req = None
    if _small_2x2(x, kh, kw, sh, sw, ph, pw):
        k = _simd.pool_kernel(x.shape[2], x.shape[3], _simd.MAX_INDICES if want else _simd.MAX)

        def run(s: slice) -> None:
            k(yp[s], ip[s] if want else ip, xp[s])
    # Other 2x2 pools with indices (training) on rows of up to 32 windows take the explicit
    # SIMD rows, the rest the loop below, which LLVM vectorises. Kernel A/B against that loop,
    # float32 (float64), with indices: (1024,30,30) 1.9-2.1x (2.9-3.0x) faster, (1024,26,26)
    # 1.3x (2.8x), (256,13,13) 1.1-1.2x (1.6x), but (64,100,100) 0.80-0.90x (1.0x); the rows
    # without indices measured 0.75-0.8x on (256,13,13).
    elif two and want and y.shape[3] <= 32:
        req = (_OP_MAX_ROWS, yp, xp, ip, dims, 1)

        def run(s: slice) -> None:
            _simd.max_pool_rows(yp[s], ip[s], xp[s])
    # The 2x2 kernel holds window offsets (up to W + 1) exactly in float32.
    elif two and x.shape[3] < (1 << 24):
        req = (_OP_MAX2, yp, xp, ip, dims, int(want))

        def run(s: slice) -> None:
            _k_max_pool_2x2(yp[s], ip[s] if want else ip, xp[s], want)
    else:
        def run(s: slice) -> None:
            _k_max_pool_fwd(yp[s], ip[s] if want else ip, xp[s], kh, kw, sh, sw, ph, pw, want)
    _size_split(run, yp.shape[0], x.size, _POOL_PARALLEL, req)


def max_pool2d_backward(
    dx: Array, dy: Array, indices: Array,
    kh: int, kw: int, sh: int, sw: int, ph: int, pw: int,
) -> int:
    planes = dx.shape[0] * dx.shape[1]
    hw, ohw = dx.shape[2] * dx.shape[3], dy.shape[2] * dy.shape[3]
    dx2, dy2, ind2 = dx.reshape(planes, hw), dy.reshape(planes, ohw), indices.reshape(planes, ohw)
    req = (_OP_MAX_BWD, dx2, dy2, ind2, (planes, hw, ohw, 0, 0))
    return sum(_size_split(lambda s: _k_max_pool_bwd(dx2[s], dy2[s], ind2[s]), planes, dx.size, _POOL_PARALLEL,
                           req, lambda: int(_spinner.ctl[_spin.ARGS + 13])))


def avg_pool2d_forward(
    y: Array, x: Array, kh: int, kw: int, sh: int, sw: int, ph: int, pw: int,
    count_include_pad: bool,
) -> None:
    if y.size == 0:
        return
    yp, xp = _planes(y), _planes(x)
    req = None
    if _small_2x2(x, kh, kw, sh, sw, ph, pw):
        k = _simd.pool_kernel(x.shape[2], x.shape[3], _simd.AVG)

        def run(s: slice) -> None:
            k(yp[s], _NO_INDICES, xp[s])
    elif kh == kw == sh == sw == 2 and ph == pw == 0:
        req = (_OP_AVG2, yp, xp, None, (yp.shape[0], x.shape[2], x.shape[3], y.shape[2], y.shape[3]))

        def run(s: slice) -> None:
            _k_avg_pool_2x2(yp[s], xp[s])
    else:
        def run(s: slice) -> None:
            _k_avg_pool_fwd(yp[s], xp[s], kh, kw, sh, sw, ph, pw, bool(count_include_pad))
    _size_split(run, yp.shape[0], x.size, _POOL_PARALLEL, req)


def avg_pool2d_backward(
    dx: Array, dy: Array, kh: int, kw: int, sh: int, sw: int, ph: int, pw: int,
    count_include_pad: bool,
) -> None:
    dxp, dyp = _planes(dx), _planes(dy)
    req = None
    if _small_2x2(dx, kh, kw, sh, sw, ph, pw):
        k = _simd.avg_bwd_kernel(dx.shape[2], dx.shape[3])

        def run(s: slice) -> None:
            k(dxp[s], dyp[s])
    elif kh == kw == sh == sw == 2 and ph == pw == 0:
        req = (_OP_AVG2_BWD, dxp, dyp, None, (dxp.shape[0], dx.shape[2], dx.shape[3], dy.shape[2], dy.shape[3]))

        def run(s: slice) -> None:
            _k_avg_pool_2x2_bwd(dxp[s], dyp[s])
    else:
        def run(s: slice) -> None:
            _k_avg_pool_bwd(dxp[s], dyp[s], kh, kw, sh, sw, ph, pw, bool(count_include_pad))
    _size_split(run, dxp.shape[0], dx.size, _POOL_PARALLEL, req)


# ---------------------------------------------------------------------------- conv -> relu -> 2x2 max pool

# The fused pair of the documents' Conv2D(relu) -> MaxPooling2D(2), with the semantics of
# csrc/cpu/conv2d_pool.cpp: the convolution runs on its even part only (the rows and columns
# 2x2 pooling reads; an odd last row/column never reaches y or a gradient), and the
# full-size convolution output is never written: each chunk's GEMM result is pooled, or
# each chunk's output gradient is scattered from the pooled one, while it is in cache.

@_jit
def _k_unchunk_relu_pool(y, ind, tmp, b, n0, ew, w_full):
    # y, ind (N, K, PH*PW) <- max_pool 2x2 of relu(tmp[k, n] + b[k]) for images n0 .. n0+n;
    # tmp (K, n, EH*EW) is the even part. The window rule and the float32 window-local index
    # are those of _k_max_pool_2x2 (bit-identical y and indices, as _numba_simd's kernels);
    # indices are h*W + w in the full (OH, OW) convolution plane, W = w_full.
    k_out, nc, ehw = tmp.shape
    ph, pw = ehw // ew // 2, ew // 2
    yf = y.reshape(y.size)
    indf = ind.reshape(ind.size)
    tf = tmp.reshape(tmp.size)
    one, two, uw = _u(1), _u(2), _u(ew)
    z, k1, k2, k3 = np.float32(0), np.float32(1), np.float32(w_full), np.float32(w_full + 1)
    kbuf = np.empty(pw, np.float32)
    zero = _typed(tmp, 0.0)
    for n in range(nc):
        for k in range(k_out):
            bk = b[k]
            src = _u((k * nc + n) * ehw)
            dst = _u(((n0 + n) * k_out + k) * ph * pw)
            for p in range(ph):
                r0 = src + _u(2 * p) * uw
                r1 = r0 + uw
                o = dst + _u(p * pw)
                for q in range(_u(pw)):
                    a = two * q
                    v0, v1 = tf[r0 + a] + bk, tf[r0 + a + one] + bk
                    v2, v3 = tf[r1 + a] + bk, tf[r1 + a + one] + bk
                    # relu as _k_relu_fwd (NaN passes), then the window rule
                    yf[o + q], kbuf[q] = _max4(zero if v0 <= 0 else v0, zero if v1 <= 0 else v1,
                                               zero if v2 <= 0 else v2, zero if v3 <= 0 else v3,
                                               z, k1, k2, k3)
                i0 = np.int64(2 * p * w_full)
                for q in range(_u(pw)):
                    indf[o + q] = i0 + np.int64(two * q) + np.int64(kbuf[q])


@_jit
def _k_unpool_chunk(dyc, acc, dy, ind, y, n0, ew, h_full, w_full):
    # dyc (K, n, EH*EW) <- the convolution-output gradient of images n0 .. n0+n on the even
    # part: dy (N, K, PH*PW) goes to its window's argmax ind where the relu passed it (y > 0);
    # acc[k] (float64) sums what was scattered (the bias gradient). An index of another
    # window is placed where it points; one outside the even part is skipped.
    k_out, nc, ehw = dyc.shape
    eh = ehw // ew
    ph, pw = eh // 2, ew // 2
    phw = ph * pw
    df = dyc.reshape(dyc.size)
    dyf = dy.reshape(dy.size)
    indf = ind.reshape(ind.size)
    yf = y.reshape(y.size)
    wf = np.int64(w_full)
    zero = _typed(dyc, 0.0)
    for k in range(k_out):
        s = 0.0
        for n in range(nc):
            base = _u((k * nc + n) * ehw)
            for e in range(_u(ehw)):
                df[base + e] = 0
            src = _u(((n0 + n) * k_out + k) * phw)
            for p in range(ph):
                for q in range(pw):
                    o = src + _u(p * pw + q)
                    g = dyf[o] if yf[o] > 0 else zero
                    i = indf[o]
                    d = i - (np.int64(2 * p) * wf + np.int64(2 * q))
                    dr = np.int64(1) if d >= wf else np.int64(0)
                    dc = d - dr * wf
                    if d >= 0 and 0 <= dc <= 1:  # the window's own pixel: no division
                        df[base + _u((2 * p + dr) * ew + 2 * q + dc)] += g
                        s += g
                    elif 0 <= i < np.int64(h_full) * wf:
                        r = i // wf
                        c = i - r * wf
                        if r < eh and c < ew:
                            df[base + _u(r * ew + c)] += g
                            s += g
        acc[k] += s


def conv2d_relu_pool_forward(
    y: Array, indices: Array, x: Array, w: Array, b: Array | None,
    oh: int, ow: int, sh: int, sw: int, ph: int, pw: int, dh: int, dw: int,
) -> None:
    """y, indices (N, K, OH // 2, OW // 2) of max_pool2d(relu(conv2d(x, w, b)), 2); the
    convolution output is (N, K, OH, OW), OH and OW at least 2."""
    if y.size == 0:
        return
    n, k_out = y.shape[0], y.shape[1]
    y3, i3 = y.reshape(n, k_out, -1), indices.reshape(n, k_out, -1)
    bias = _bias_or_zeros(b, k_out, y.dtype)
    if _direct(x, w, oh, ow, sh, sw, ph, pw, dh, dw):
        kern = _simd.conv_pool_rows(*w.shape[1:], k_out)
        work = float(n) * k_out * oh * ow * w[0].size
        _split(lambda p: kern(y, indices, x, w, bias, p.start, p.stop), n, work >= _PARALLEL_WORK)
        return
    eh, ew = oh - oh % 2, ow - ow % 2
    # Rows of more than 8 windows go through _numba_simd's 16-window steps: conv 1's chunks
    # (26 wide, float32) 128 -> 81 us, float64 334 -> 104; on conv 2's (5 windows a row) they
    # measured 57 -> 69 us in float32, so short rows keep the loop.
    pool = _simd.unchunk_relu_pool if ew // 2 > 8 else _k_unchunk_relu_pool
    _forward_chunks(lambda tmp, n0: pool(y3, i3, tmp, bias, n0, ew, ow), x, w, sh, sw, ph, pw, dh, dw, eh, ew)


def conv2d_relu_pool_backward(
    dx: Array | None, dwt: Array | None, db: Array | None, dy: Array, indices: Array,
    y: Array, x: Array, w: Array,
    oh: int, ow: int, sh: int, sw: int, ph: int, pw: int, dh: int, dw: int,
) -> None:
    """(dx, dW, db) of conv2d_relu_pool_forward for the pooled gradient dy, from its pooled
    y and indices (N, K, OH // 2, OW // 2)."""
    n, k_out = dy.shape[0], dy.shape[1]
    if dy.size == 0 or w.size == 0:
        _zero_grads(dx, dwt, db)
        return
    dy3, i3, y3 = dy.reshape(n, k_out, -1), indices.reshape(n, k_out, -1), y.reshape(n, k_out, -1)
    eh, ew = oh - oh % 2, ow - ow % 2
    acc = _backward_chunks(lambda dyc, acc, n0: _k_unpool_chunk(dyc, acc, dy3, i3, y3, n0, ew, oh, ow),
                           dx, dwt, x, w, sh, sw, ph, pw, dh, dw, eh, ew)
    if db is not None:
        db[:] = acc


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


def _row_blocks(m: int, n: int, k: int, run) -> None:
    """run(i, r0, r1) for the row blocks of an (m, n) product of depth k: a large product in
    two blocks, on two workers when there are (the same blocks with any thread count, so the
    result does not depend on it), else one."""
    work = float(m) * n * k
    rows = [(0, m // 2), (m // 2, m)] if work >= _PARALLEL_WORK and m >= 32 else [(0, m)]
    _chunk_jobs(rows, work, run)


def _dot(a: Array, b: Array, out: Array) -> None:
    """out = a @ b (out C-contiguous) as the convolutions run their GEMMs, in _row_blocks."""
    _row_blocks(out.shape[0], out.shape[1], a.shape[1], lambda i, r0, r1: np.dot(a[r0:r1], b, out=out[r0:r1]))


@_rjit
def _k_linear_fwd(y, x, w, b, r0, r1):
    # y[i, j] = dot(x[i], w[j]) + b[j] for rows r0 .. r1 of y (M, OUT); x (M, IN), w (OUT, IN).
    # Blocks of 4 rows x 4 outputs share each loaded x and w element between 4 sums, so the
    # loop over IN (vectorised, reassociated) does 16 FMAs per 8 loads. Against NumPy's
    # OpenBLAS on x @ w.T (one thread): (32,1600)x64 62 against 115 us, (256,1600)x64 497
    # against 573, (32,2304)x128 195 against 326; OpenBLAS packs the transposed w slowly.
    k = x.shape[1]
    n = w.shape[0]
    z = _typed(y, 0.0)
    i = r0
    while i + 4 <= r1:
        j = 0
        while j + 4 <= n:
            a00 = z; a01 = z; a02 = z; a03 = z; a10 = z; a11 = z; a12 = z; a13 = z
            a20 = z; a21 = z; a22 = z; a23 = z; a30 = z; a31 = z; a32 = z; a33 = z
            for t in range(k):
                x0 = x[i, t]; x1 = x[i + 1, t]; x2 = x[i + 2, t]; x3 = x[i + 3, t]
                w0 = w[j, t]; w1 = w[j + 1, t]; w2 = w[j + 2, t]; w3 = w[j + 3, t]
                a00 += x0 * w0; a01 += x0 * w1; a02 += x0 * w2; a03 += x0 * w3
                a10 += x1 * w0; a11 += x1 * w1; a12 += x1 * w2; a13 += x1 * w3
                a20 += x2 * w0; a21 += x2 * w1; a22 += x2 * w2; a23 += x2 * w3
                a30 += x3 * w0; a31 += x3 * w1; a32 += x3 * w2; a33 += x3 * w3
            y[i, j] = a00 + b[j]; y[i, j + 1] = a01 + b[j + 1]; y[i, j + 2] = a02 + b[j + 2]; y[i, j + 3] = a03 + b[j + 3]
            y[i + 1, j] = a10 + b[j]; y[i + 1, j + 1] = a11 + b[j + 1]; y[i + 1, j + 2] = a12 + b[j + 2]; y[i + 1, j + 3] = a13 + b[j + 3]
            y[i + 2, j] = a20 + b[j]; y[i + 2, j + 1] = a21 + b[j + 1]; y[i + 2, j + 2] = a22 + b[j + 2]; y[i + 2, j + 3] = a23 + b[j + 3]
            y[i + 3, j] = a30 + b[j]; y[i + 3, j + 1] = a31 + b[j + 1]; y[i + 3, j + 2] = a32 + b[j + 2]; y[i + 3, j + 3] = a33 + b[j + 3]
            j += 4
        while j < n:  # the last outputs, 4 rows at a time
            a0 = z; a1 = z; a2 = z; a3 = z
            for t in range(k):
                wt = w[j, t]
                a0 += x[i, t] * wt; a1 += x[i + 1, t] * wt; a2 += x[i + 2, t] * wt; a3 += x[i + 3, t] * wt
            y[i, j] = a0 + b[j]; y[i + 1, j] = a1 + b[j]; y[i + 2, j] = a2 + b[j]; y[i + 3, j] = a3 + b[j]
            j += 1
        i += 4
    while i < r1:  # the last rows, one output at a time
        for j in range(n):
            a = z
            for t in range(k):
                a += x[i, t] * w[j, t]
            y[i, j] = a + b[j]
        i += 1


def linear_forward(y: Array, x: Array, w: Array, b: Array | None) -> None:
    """y = x @ w.T + b with our own inner-product kernel, in _row_blocks as _dot."""
    m, n = y.shape
    bias = _bias_or_zeros(b, n, y.dtype)
    _row_blocks(m, n, x.shape[1], lambda i, r0, r1: _k_linear_fwd(y, x, w, bias, r0, r1))


def linear_backward(
    dx: Array | None, dwt: Array | None, db: Array | None, dy: Array, x: Array, w: Array,
) -> None:
    if dx is not None:
        _dot(dy, w, dx)
    if dwt is not None:
        _dot(dy.T, x, dwt)
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
def _k_cross_entropy(dlogits, logits, labels, scale, grad):
    # Forward: returns sum_i (max - logits[i, label]) + log(sum exp(logits[i] - max)), summed
    # in float64 in row order; the form keeps full precision when the max is huge.
    # Backward: dlogits = scale * (softmax - onehot). A label outside [0, classes) is counted
    # and never indexed by: its row's loss (so the sum) and its dlogits row are NaN.
    n, classes = logits.shape
    total = 0.0
    bad = 0
    for i in range(n):
        lab = labels[i]
        if lab < 0 or lab >= classes:
            bad += 1
            total = np.nan
            if grad:
                dlogits[i, :] = np.nan
            continue
        m = logits[i, 0]
        for j in range(1, classes):
            v = logits[i, j]
            if v > m or np.isnan(v):
                m = v
        acc = 0.0
        if grad:  # one exp per logit, kept in dlogits, then scaled (as the C++ kernel)
            for j in range(classes):
                e = np.exp(logits[i, j] - m)
                dlogits[i, j] = e
                acc += e
            r = scale / acc
            for j in range(classes):
                dlogits[i, j] *= r
            dlogits[i, lab] -= scale
        else:
            for j in range(classes):
                acc += np.exp(logits[i, j] - m)
            total += (m - logits[i, lab]) + np.log(acc)
    return total, bad


def cross_entropy_mean(mean: Array, logits: Array, labels: Array) -> int:
    n = logits.shape[0]
    if n == 0:
        mean[...] = np.nan
        return 0
    total, bad = _k_cross_entropy(np.empty((0, 0), logits.dtype), logits, labels, 0.0, False)
    mean[...] = total / n
    return bad


def cross_entropy_backward(dlogits: Array, logits: Array, labels: Array, scale: float) -> int:
    if logits.shape[0] == 0:
        return 0
    return _k_cross_entropy(dlogits, logits, labels, float(scale), True)[1]


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


# Elements from which an elementwise op is split over the worker threads: relu backward on
# 2 M elements took 443 us in one thread and 253 in two, on 1 M 162 against 139; the
# forward (two arrays, not three) 224 against 156 at 2 M and 90 against 103 at 1 M.
_ELTWISE_PARALLEL = 3 << 19


def _eltwise(kernel: Callable[..., None], code: int, out: Array, *ins: Array) -> None:
    """kernel(out, *ins) on the flat arrays: their elements split over the worker threads
    from _ELTWISE_PARALLEL, in two halves with the spinning helper from _SPLIT2 when ``code``
    names the kernel in _serve, else in this thread."""
    o, a = out.reshape(-1), [v.reshape(-1) for v in ins]

    def run(s: slice) -> None:
        kernel(o[s], *(v[s] for v in a))

    req = (code, o, a[0], a[1] if len(a) > 1 else None, (o.size, 0, 0, 0, 0)) if code else None
    _size_split(run, o.size, o.size, _ELTWISE_PARALLEL, req)


# The ops below call their kernel directly under _SPLIT2 elements: any layer in between (even
# _eltwise's argument lists) cost small calls 0.6-2 us, (32,128) sigmoid backward 1.6 ->
# 2.2-3.7 us. One maker per arity keeps them a single call.

def _forward_op(kernel: Callable[[Array, Array], None], code: int = 0) -> Callable[[Array, Array], None]:
    def op(y: Array, x: Array) -> None:
        if y.size < _SPLIT2:
            kernel(y.reshape(-1), x.reshape(-1))
        else:
            _eltwise(kernel, code, y, x)
    return op


def _backward_op(kernel: Callable[[Array, Array, Array], None], code: int = 0) -> Callable[[Array, Array, Array], None]:
    def op(dx: Array, dy: Array, a: Array) -> None:
        if dx.size < _SPLIT2:
            kernel(dx.reshape(-1), dy.reshape(-1), a.reshape(-1))
        else:
            _eltwise(kernel, code, dx, dy, a)
    return op


@numba.njit(cache=True, nogil=True, error_model="numpy", fastmath={"contract"})
def _k_sigmoid32(y, x):
    # float32 sigmoid in one vectorised pass, the numerics of csrc/cpu/vmath.h: e = exp(-|x|)
    # by Cephes' expf (Cody-Waite reduction, degree-6 polynomial, 2^n from its exponent bits;
    # exactly 0 below ln(FLT_MIN)), r = 1 / (1 + e), y = r for x >= 0 else e * r; NaN stays
    # NaN. Against the NumPy form below: (256,128) 24 -> 13 us. 'contract' lets the
    # polynomial use fused multiply-adds (its dependency chain bounds the loop).
    lo = np.float32(-87.3365478515625)
    log2e, half, one, zero = np.float32(1.44269504088896341), np.float32(0.5), np.float32(1.0), np.float32(0.0)
    c1, c2 = np.float32(0.693359375), np.float32(-2.12194440e-4)
    p0, p1, p2 = np.float32(1.9875691500e-4), np.float32(1.3981999507e-3), np.float32(8.3334519073e-3)
    p3, p4, p5 = np.float32(4.1665795894e-2), np.float32(1.6666665459e-1), np.float32(5.0000001201e-1)
    for i in range(_u(x.shape[0])):
        v = x[i]
        t = -abs(v)
        tc = t if t > lo else lo
        n = np.floor(tc * log2e + half)
        r = (tc - n * c1) - n * c2
        p = ((((p0 * r + p1) * r + p2) * r + p3) * r + p4) * r + p5
        e = ((p * r) * r + r + one) * _simd.pow2(n)
        e = e if t >= lo else zero
        q = one / (one + e)
        o = q if v >= zero else e * q
        y[i] = o if v == v else v


def _sigmoid(y: Array, x: Array) -> None:
    if y.dtype == np.float32:
        _k_sigmoid32(y, x)
        return
    # float64: the transcendental part runs through NumPy's SIMD ufuncs (which release the GIL).
    np.abs(x, out=y)
    np.negative(y, out=y)
    np.exp(y, out=y)
    _k_sigmoid_finish(y, x)


def _tanh(y: Array, x: Array) -> None:
    np.tanh(x, out=y)


relu_forward = _forward_op(_k_relu_fwd, _OP_RELU)
relu_backward = _backward_op(_k_relu_bwd, _OP_RELU_BWD)  # (dx, dy, x)
sigmoid_forward = _forward_op(_sigmoid)
sigmoid_backward = _backward_op(_k_sigmoid_bwd, _OP_SIGMOID_BWD)  # (dx, dy, y)
tanh_forward = _forward_op(_tanh)
tanh_backward = _backward_op(_k_tanh_bwd, _OP_TANH_BWD)  # (dx, dy, y)


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
    zero = _typed(da, 0.0)
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
    # The steps' B operand as a contiguous array: OpenBLAS ran (32,128) @ w_hh.T (a transposed
    # view) in 19-31 us a step, against 10 with w_hh.T copied once per call.
    w_hh_t = np.ascontiguousarray(w_hh.T)
    for s in range(t):
        prev = hs[:, s - 1] if s > 0 else h0
        if prev is None:
            a.fill(0)
        else:
            np.dot(prev, w_hh_t, out=a)
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
