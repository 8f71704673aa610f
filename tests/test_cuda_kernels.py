"""The CUDA kernels of layerforge._cuda, called directly on CuPy arrays, against the oracle.

Every op and direction of the kernel interface, float32 and float64, on the shape grids of
cases.py (plus shapes that reach the other launch paths: block-per-row softmax, column
softmax, split-K weight gradients), compared with layerforge._reference through
conftest.assert_close. Outputs are pre-filled with NaN so a missed element shows. Also: a
non-default stream driving many dependent launches with no sync until that stream's own
synchronize; bitwise run-to-run determinism of dw / db; NaN and tie rules of max pooling; a
relu above 2^31 elements (only with enough free GPU memory); the binding's argument checks.

The binding takes array descriptors (ptr, shape, typestr) plus a stream handle and a device
ordinal. Skipped, with the reason, unless layerforge._cuda imports with its kernels, reports a
device, and CuPy imports and sees a device; the argument-check tests need only the module.
"""

from __future__ import annotations

import importlib
from types import SimpleNamespace

import numpy as np
import pytest
from cases import CONV, CROSS_ENTROPY, ELEMENTWISE, LINEAR, POOL, SOFTMAX
from conftest import assert_close, rand

from layerforge import _reference as ref

pytestmark = pytest.mark.gpu

DTYPES = [np.float32, np.float64]
DT_IDS = ["f32", "f64"]


def _pair(v):
    return (int(v), int(v)) if np.isscalar(v) else (int(v[0]), int(v[1]))


# ---------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def cuda_module():
    """layerforge._cuda with its kernels (no device needed)."""
    try:
        mod = importlib.import_module("layerforge._cuda")
    except Exception as exc:  # not built, or a broken build: skip with the reason
        pytest.skip(f"layerforge._cuda is not importable: {type(exc).__name__}: {exc}")
    if not getattr(mod, "has_kernels", lambda: False)():
        pytest.skip("layerforge._cuda was built without the op kernels")
    return mod


@pytest.fixture(scope="module")
def gpu(cuda_module):
    """Namespace with the module, cupy and helpers; skips without a device or CuPy."""
    try:
        count = cuda_module.device_count()
    except Exception as exc:
        pytest.skip(f"layerforge._cuda cannot query devices: {type(exc).__name__}: {exc}")
    if count < 1:
        pytest.skip(f"no CUDA device: {cuda_module.status().get('error')}")
    try:
        cp = importlib.import_module("cupy")
        if cp.cuda.runtime.getDeviceCount() < 1:
            pytest.skip("CuPy sees no CUDA device")
    except pytest.skip.Exception:
        raise
    except Exception as exc:
        pytest.skip(f"cupy is not usable: {type(exc).__name__}: {exc}")
    return SimpleNamespace(k=cuda_module, cp=cp)


def D(a):
    """The binding's descriptor of a CuPy array (None stays None).

    Only ever pass arrays held by a name: a temporary (``D(cp.asarray(h))``) is freed as soon
    as D returns, and CuPy's pool may hand its memory to the next allocation before the
    kernel reads it.
    """
    if a is None:
        return None
    return (int(a.data.ptr), tuple(int(s) for s in a.shape), a.dtype.str)


def SD(g, a):
    """(stream, device) for a call on array a: CuPy's current stream, a's device."""
    return g.cp.cuda.get_current_stream().ptr, int(a.device.id)


def out(g, shape, dtype):
    """A device output pre-filled with NaN (int64: -7), so unwritten elements show."""
    fill = -7 if np.dtype(dtype) == np.int64 else np.nan
    return g.cp.full(shape, fill, dtype)


def host(a):
    return None if a is None else a.get()


# ---------------------------------------------------------------------------- convolution

def _conv_case(c, dtype, seed=0):
    n, ci, h, w, k, r, s, stride, padding, dilation, bias = c
    rng = np.random.default_rng(seed)
    x = rand(rng, (n, ci, h, w), dtype)
    wt = rand(rng, (k, ci, r, s), dtype)
    b = rand(rng, (k,), dtype) if bias else None
    sh, sw = _pair(stride)
    dh, dw = _pair(dilation)
    pt, _, pl, _ = ref.conv2d_padding(padding, (r, s), (dh, dw))
    kw = dict(stride=stride, padding=padding, dilation=dilation)
    return x, wt, b, kw, (sh, sw, pt, pl, dh, dw)


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
@pytest.mark.parametrize("c", CONV, ids=[str(c) for c in CONV])
def test_conv2d_forward(gpu, dtype, c):
    cp = gpu.cp
    x, w, b, kw, params = _conv_case(c, dtype)
    want = ref.conv2d(x, w, b, **kw)
    y = out(gpu, want.shape, dtype)
    xd, wd, bd = cp.asarray(x), cp.asarray(w), None if b is None else cp.asarray(b)
    gpu.k.conv2d_forward(D(y), D(xd), D(wd), D(bd), *params, *SD(gpu, y))
    assert_close(host(y), want, dtype, "y")


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
@pytest.mark.parametrize("c", CONV, ids=[str(c) for c in CONV])
def test_conv2d_backward(gpu, dtype, c):
    cp = gpu.cp
    x, w, b, kw, params = _conv_case(c, dtype)
    y_shape = ref.conv2d(x, w, b, **kw).shape
    dy = rand(np.random.default_rng(1), y_shape, dtype)
    want = ref.conv2d_backward(dy, x, w, b, **kw)
    dx, dw = out(gpu, x.shape, dtype), out(gpu, w.shape, dtype)
    db = out(gpu, (w.shape[0],), dtype) if b is not None else None
    dyd, xd, wd = cp.asarray(dy), cp.asarray(x), cp.asarray(w)
    gpu.k.conv2d_backward(D(dx), D(dw), D(db), D(dyd), D(xd), D(wd), *params, *SD(gpu, dw))
    for name, g, r in zip(("dx", "dw", "db"), (dx, dw, db), want):
        if r is None:
            assert g is None
        else:
            assert_close(host(g), r, dtype, name)


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
def test_conv2d_backward_skips_none_outputs(gpu, dtype):
    """Each gradient alone (the others None) is computed and nothing else is touched."""
    cp = gpu.cp
    c = (2, 3, 9, 8, 4, 3, 3, (2, 1), 1, (1, 2), True)
    x, w, b, kw, params = _conv_case(c, dtype)
    dy = rand(np.random.default_rng(1), ref.conv2d(x, w, b, **kw).shape, dtype)
    want = ref.conv2d_backward(dy, x, w, b, **kw)
    dyd, xd, wd = cp.asarray(dy), cp.asarray(x), cp.asarray(w)
    args = [D(dyd), D(xd), D(wd), *params]
    for which in range(3):
        outs = [None, None, None]
        g = out(gpu, want[which].shape, dtype)
        outs[which] = D(g)
        gpu.k.conv2d_backward(*outs, *args, *SD(gpu, g))
        assert_close(host(g), want[which], dtype, ("dx", "dw", "db")[which])


# ---------------------------------------------------------------------------- pooling

def _pool_case(c, dtype, kind="normal", seed=0):
    n, ch, h, w, k, s, p = c
    rng = np.random.default_rng(seed)
    if kind == "ties":
        x = rng.integers(0, 3, (n, ch, h, w)).astype(dtype)
    else:
        x = rand(rng, (n, ch, h, w), dtype)
    if kind == "nan" and x.size:
        flat = x.reshape(-1)
        flat[rng.choice(flat.size, max(1, flat.size // 7), replace=False)] = np.nan
    if kind == "neginf":
        x[...] = -np.inf
    kh, kw = _pair(k)
    sh, sw = _pair(k if s is None else s)
    ph, pw = _pair(p)
    return x, dict(kernel_size=k, stride=s, padding=p), (kh, kw, sh, sw, ph, pw)


def _max_forward(gpu, x, params, want_shape, dtype, with_indices=True):
    cp = gpu.cp
    y = out(gpu, want_shape, dtype)
    idx = out(gpu, want_shape, np.int64) if with_indices else None
    xd = cp.asarray(x)
    gpu.k.max_pool2d_forward(D(y), D(idx), D(xd), *params, *SD(gpu, y))
    return y, idx


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
@pytest.mark.parametrize("kind", ["normal", "ties", "nan", "neginf"])
@pytest.mark.parametrize("c", POOL, ids=[str(c) for c in POOL])
def test_max_pool2d_forward(gpu, dtype, kind, c):
    x, kw, params = _pool_case(c, dtype, kind)
    want_y, want_i = ref.max_pool2d_with_indices(x, **kw)
    y, idx = _max_forward(gpu, x, params, want_y.shape, dtype)
    assert_close(host(y), want_y, dtype, "y")
    np.testing.assert_array_equal(host(idx), want_i, err_msg="indices")
    y2, _ = _max_forward(gpu, x, params, want_y.shape, dtype, with_indices=False)
    assert_close(host(y2), want_y, dtype, "y without indices")


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
@pytest.mark.parametrize("kind", ["normal", "ties", "nan"])
@pytest.mark.parametrize("c", POOL, ids=[str(c) for c in POOL])
def test_max_pool2d_backward(gpu, dtype, kind, c):
    cp = gpu.cp
    x, kw, params = _pool_case(c, dtype, kind)
    want_y, _ = ref.max_pool2d_with_indices(x, **kw)
    dy = rand(np.random.default_rng(1), want_y.shape, dtype)
    _, idx = _max_forward(gpu, x, params, want_y.shape, dtype)
    dx = out(gpu, x.shape, dtype)
    dyd = cp.asarray(dy)
    gpu.k.max_pool2d_backward(D(dx), D(dyd), D(idx), *params, *SD(gpu, dx))
    assert_close(host(dx), ref.max_pool2d_backward(dy, x, **kw), dtype, "dx")


def test_max_pool2d_nan_and_tie_rules(gpu):
    """Hand-made windows: first maximum wins a tie, the last NaN wins, padding never wins."""
    nan = np.nan
    x = np.array([[[[1, 3, 3, 0],
                    [3, 2, nan, 1],
                    [0, nan, nan, 5],
                    [-np.inf, -np.inf, nan, 4]]]], np.float32)
    params = (2, 2, 2, 2, 0, 0)
    y, idx = _max_forward(gpu, x, params, (1, 1, 2, 2), np.float32)
    # tie -> first 3; NaN beats the later 1; NaN beats 0 and -inf; the later NaN (14) replaces
    # the earlier one (10) and 5 / 4 never beat a NaN.
    np.testing.assert_array_equal(host(idx)[0, 0], [[1, 6], [9, 14]])
    got = host(y)[0, 0]
    assert got[0, 0] == 3 and np.isnan(got[0, 1]) and np.isnan(got[1, 0]) and np.isnan(got[1, 1])
    want_y, want_i = ref.max_pool2d_with_indices(x, 2)
    np.testing.assert_array_equal(host(idx), want_i)
    assert_close(host(y), want_y, np.float32, "y")
    # 3x3 windows, stride 1, padding 1 over all -inf: index = first in-bounds element.
    xi = np.full((1, 1, 3, 3), -np.inf, np.float64)
    y, idx = _max_forward(gpu, xi, (3, 3, 1, 1, 1, 1), (1, 1, 3, 3), np.float64)
    np.testing.assert_array_equal(host(idx)[0, 0], [[0, 0, 1], [0, 0, 1], [3, 3, 4]])
    assert np.all(host(y) == -np.inf)


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
@pytest.mark.parametrize("cip", [True, False], ids=["incl_pad", "excl_pad"])
@pytest.mark.parametrize("c", POOL, ids=[str(c) for c in POOL])
def test_avg_pool2d(gpu, dtype, cip, c):
    cp = gpu.cp
    x, kw, params = _pool_case(c, dtype)
    want = ref.avg_pool2d(x, **kw, count_include_pad=cip)
    y = out(gpu, want.shape, dtype)
    xd = cp.asarray(x)
    gpu.k.avg_pool2d_forward(D(y), D(xd), *params, cip, *SD(gpu, y))
    assert_close(host(y), want, dtype, "y")
    dy = rand(np.random.default_rng(1), want.shape, dtype)
    dx = out(gpu, x.shape, dtype)
    dyd = cp.asarray(dy)
    gpu.k.avg_pool2d_backward(D(dx), D(dyd), *params, cip, *SD(gpu, dx))
    assert_close(host(dx), ref.avg_pool2d_backward(dy, x, **kw, count_include_pad=cip), dtype, "dx")


# ---------------------------------------------------------------------------- dense

LINEAR_EXTRA = [((3000, 7), 5, True)]  # long M: the chunked / split-K dw path


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
@pytest.mark.parametrize("c", LINEAR + LINEAR_EXTRA, ids=[str(c) for c in LINEAR + LINEAR_EXTRA])
def test_linear(gpu, dtype, c):
    cp = gpu.cp
    x_shape, n_out, bias = c
    rng = np.random.default_rng(0)
    x = rand(rng, x_shape, dtype)
    w = rand(rng, (n_out, x_shape[-1]), dtype)
    b = rand(rng, (n_out,), dtype) if bias else None
    x2 = x.reshape(-1, x_shape[-1])
    want = ref.linear(x, w, b).reshape(-1, n_out)
    y = out(gpu, want.shape, dtype)
    xd, wd = cp.asarray(x2), cp.asarray(w)
    bd = None if b is None else cp.asarray(b)
    gpu.k.linear_forward(D(y), D(xd), D(wd), D(bd), *SD(gpu, y))
    assert_close(host(y), want, dtype, "y")

    dy = rand(np.random.default_rng(1), want.shape, dtype)
    rdx, rdw, rdb = ref.linear_backward(dy.reshape(ref.linear(x, w, b).shape), x, w, b)
    dx, dw = out(gpu, x2.shape, dtype), out(gpu, w.shape, dtype)
    db = out(gpu, (n_out,), dtype) if bias else None
    dyd = cp.asarray(dy)
    gpu.k.linear_backward(D(dx), D(dw), D(db), D(dyd), D(xd), D(wd), *SD(gpu, dw))
    assert_close(host(dx), rdx.reshape(x2.shape), dtype, "dx")
    assert_close(host(dw), rdw, dtype, "dw")
    if bias:
        assert_close(host(db), rdb, dtype, "db")


# ---------------------------------------------------------------------------- softmax family

# Beyond cases.SOFTMAX: block-per-row (dim > 1024), columns wider than one 32-wide tile, a
# long column reduction.
SOFTMAX_EXTRA = [((3, 4099), 1), ((2, 7, 70), 1), ((5, 3000, 3), 1), ((1, 1025), -1)]
SM_CASES = SOFTMAX + SOFTMAX_EXTRA


def _view(shape, dim):
    d = dim % len(shape)
    return (int(np.prod(shape[:d])), shape[d], int(np.prod(shape[d + 1:])))


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
@pytest.mark.parametrize("log", [False, True], ids=["softmax", "log_softmax"])
@pytest.mark.parametrize("scale", [1.0, 1e4], ids=["normal", "huge"])
@pytest.mark.parametrize("c", SM_CASES, ids=[str(c) for c in SM_CASES])
def test_softmax(gpu, dtype, log, scale, c):
    cp = gpu.cp
    shape, dim = c
    v = _view(shape, dim)
    x = (rand(np.random.default_rng(0), shape, dtype) * dtype(scale)).astype(dtype)
    fwd = gpu.k.log_softmax_forward if log else gpu.k.softmax_forward
    bwd = gpu.k.log_softmax_backward if log else gpu.k.softmax_backward
    want = ref.log_softmax(x, dim) if log else ref.softmax(x, dim)
    y = out(gpu, v, dtype)
    xd = cp.asarray(x.reshape(v))
    fwd(D(y), D(xd), *SD(gpu, y))
    assert_close(host(y).reshape(shape), want, dtype, "y")

    dy = rand(np.random.default_rng(1), shape, dtype)
    rb = ref.log_softmax_backward if log else ref.softmax_backward
    dx = out(gpu, v, dtype)
    dyd = cp.asarray(dy.reshape(v))
    bwd(D(dx), D(dyd), D(y), *SD(gpu, dx))
    assert_close(host(dx).reshape(shape), rb(dy, x, dim), dtype, "dx")


CE_CASES = CROSS_ENTROPY + [(3, 4099)]


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
@pytest.mark.parametrize("scale", [3.0, 1e4], ids=["normal", "huge"])
@pytest.mark.parametrize("c", CE_CASES, ids=[str(c) for c in CE_CASES])
def test_cross_entropy(gpu, dtype, scale, c):
    cp = gpu.cp
    n, classes = c
    rng = np.random.default_rng(0)
    logits = (rand(rng, (n, classes), dtype) * dtype(scale)).astype(dtype)
    labels = rng.integers(0, classes, n).astype(np.int64)
    ld, yd = cp.asarray(logits), cp.asarray(labels)
    loss = out(gpu, (n,), dtype)
    gpu.k.cross_entropy_forward(D(loss), D(ld), D(yd), *SD(gpu, loss))
    want = -ref.log_softmax(logits, 1)[np.arange(n), labels]
    assert_close(host(loss), want, dtype, "loss")

    dloss = 1.7
    g = out(gpu, (n, classes), dtype)
    gpu.k.cross_entropy_backward(D(g), D(ld), D(yd), dloss / max(n, 1), *SD(gpu, g))
    assert_close(host(g), ref.cross_entropy_backward(dloss, logits, labels), dtype, "dlogits")


def test_cross_entropy_bad_label_gives_nan(gpu):
    """The device cannot raise: an out-of-range label yields a NaN row, never a stray access."""
    cp = gpu.cp
    logits = cp.asarray(rand(np.random.default_rng(0), (3, 5), np.float32))
    labels = cp.asarray(np.array([1, 5, -1], np.int64))
    loss = out(gpu, (3,), np.float32)
    gpu.k.cross_entropy_forward(D(loss), D(logits), D(labels), *SD(gpu, loss))
    got = host(loss)
    assert np.isfinite(got[0]) and np.isnan(got[1]) and np.isnan(got[2])
    g = out(gpu, (3, 5), np.float32)
    gpu.k.cross_entropy_backward(D(g), D(logits), D(labels), 1.0, *SD(gpu, g))
    got = host(g)
    assert np.all(np.isfinite(got[0])) and np.all(np.isnan(got[1:]))


# ---------------------------------------------------------------------------- elementwise

ACTS = {
    "relu": (ref.relu, ref.relu_backward, "x"),
    "sigmoid": (ref.sigmoid, ref.sigmoid_backward, "y"),
    "tanh": (ref.tanh, ref.tanh_backward, "y"),
}
SPECIAL = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 1e3, -1e3, 20.0, -20.0, 1e-8, 0.5, -0.5])


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
@pytest.mark.parametrize("act", list(ACTS))
@pytest.mark.parametrize("shape", ELEMENTWISE + ["special"], ids=[str(s) for s in ELEMENTWISE] + ["special"])
def test_activation(gpu, dtype, act, shape):
    cp = gpu.cp
    f, fb, saved = ACTS[act]
    if shape == "special":
        x = SPECIAL.astype(dtype)
    else:
        x = (rand(np.random.default_rng(0), shape, dtype) * dtype(3)).astype(dtype)
    xd = cp.asarray(x)
    y = out(gpu, x.shape, dtype)
    getattr(gpu.k, f"{act}_forward")(D(y), D(xd), *SD(gpu, y))
    assert_close(host(y), f(x), dtype, "y")
    dy = rand(np.random.default_rng(1), x.shape, dtype)
    dx = out(gpu, x.shape, dtype)
    dyd = cp.asarray(dy)
    getattr(gpu.k, f"{act}_backward")(D(dx), D(dyd), D(xd if saved == "x" else y), *SD(gpu, dx))
    assert_close(host(dx), fb(dy, x), dtype, "dx")


def _relu_large(gpu, n, probe):
    """relu forward / backward over n float32 elements, checked on the device: the count of
    positives, every positive, the last element and the four around `probe`; a guard tail
    past the output must stay intact."""
    cp = gpu.cp
    guard = 1024
    x = cp.full(n, -1.0, cp.float32)
    x[1::3] = 2.0
    x[-1] = 5.0
    buf = cp.empty(n + guard, cp.float32)
    buf[n:] = 7.0
    y = buf[:n]
    positive = len(range(1, n, 3)) + (0 if (n - 1) % 3 == 1 else 1)

    def check(res, pos_value):
        assert int(cp.count_nonzero(res)) == positive
        assert bool((res[1:-1:3] == pos_value).all())
        assert float(res[-1]) == (5.0 if pos_value == 2.0 else pos_value)
        got = res[probe - 1 : probe + 3].get()
        want = [pos_value if j % 3 == 1 else 0.0 for j in range(probe - 1, probe + 3)]
        np.testing.assert_array_equal(got, np.array(want, np.float32))
        assert bool((buf[n:] == 7.0).all()), "wrote past the end"

    stream, dev = SD(gpu, y)
    gpu.k.relu_forward(D(y), D(x), stream, dev)
    check(y, 2.0)
    buf[:n] = np.float32(np.nan)  # y becomes dx: every element must be overwritten
    dy = cp.full(n, 3.0, cp.float32)
    gpu.k.relu_backward(D(y), D(dy), D(x), stream, dev)
    check(y, 3.0)


def test_relu_large_logic(gpu):
    """The checks of the 2^31 test, on a size every device has memory for."""
    _relu_large(gpu, 70_000 + 4099, 70_001)


def test_relu_above_2_31_elements(gpu):
    """int64 indexing: 2^31 + 4099 float32 elements, probed just past 2^31. Runs only with
    enough free GPU memory (three 8 GiB arrays and some headroom)."""
    n = 2**31 + 4099
    need = 3 * (n + 1024) * 4 + (2 << 30)
    free, _ = gpu.cp.cuda.runtime.memGetInfo()
    if free < need:
        pytest.skip(f"needs {need / 2**30:.1f} GiB of free GPU memory, {free / 2**30:.1f} GiB free")
    _relu_large(gpu, n, 2**31 + 1)


# ---------------------------------------------------------------------------- streams and determinism

def test_non_default_stream_many_launches(gpu):
    """Inputs made, kernels run and chained on a non-blocking stream, with no sync before that
    stream's synchronize; every result then matches the oracle."""
    cp = gpu.cp
    dtype = np.float32
    rng = np.random.default_rng(3)
    x = rand(rng, (4, 3, 12, 11), dtype)
    w = rand(rng, (5, 3, 3, 3), dtype)
    b = rand(rng, (5,), dtype)
    kw = dict(stride=1, padding=1, dilation=1)
    y_ref = ref.conv2d(x, w, b, **kw)
    dy = rand(rng, y_ref.shape, dtype)
    g_ref = ref.conv2d_backward(dy, x, w, b, **kw)
    z0 = rand(rng, (1000,), dtype)
    steps = 40
    z_ref = z0.astype(np.float64)
    for _ in range(steps):
        z_ref = np.tanh(z_ref * 1.5)

    s = cp.cuda.Stream(non_blocking=True)
    with s:
        assert cp.cuda.get_current_stream().ptr == s.ptr
        xd, wd, bd, dyd = cp.asarray(x), cp.asarray(w), cp.asarray(b), cp.asarray(dy)
        y = out(gpu, y_ref.shape, dtype)
        dx, dw, db = out(gpu, x.shape, dtype), out(gpu, w.shape, dtype), out(gpu, (5,), dtype)
        za, zb = cp.asarray(z0), out(gpu, (1000,), dtype)
        dev = int(y.device.id)
        for _ in range(10):
            gpu.k.conv2d_forward(D(y), D(xd), D(wd), D(bd), 1, 1, 1, 1, 1, 1, s.ptr, dev)
            gpu.k.conv2d_backward(D(dx), D(dw), D(db), D(dyd), D(xd), D(wd), 1, 1, 1, 1, 1, 1,
                                  s.ptr, dev)
        for _ in range(steps):  # each step reads the previous one's output
            za *= 1.5  # CuPy runs this on s too
            gpu.k.tanh_forward(D(zb), D(za), s.ptr, dev)
            za, zb = zb, za
    s.synchronize()
    assert_close(y.get(stream=s), y_ref, dtype, "y")
    for name, g, r in zip(("dx", "dw", "db"), (dx, dw, db), g_ref):
        assert_close(g.get(stream=s), r, dtype, name)
    assert_close(za.get(stream=s), z_ref, dtype, "tanh chain")


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
def test_weight_gradients_bitwise_deterministic(gpu, dtype):
    """dw / db (long, chunked reductions) are bitwise the same on every run and stream."""
    cp = gpu.cp
    rng = np.random.default_rng(5)
    x = rand(rng, (8, 16, 20, 20), dtype)
    w = rand(rng, (32, 16, 3, 3), dtype)
    dy = rand(rng, (8, 32, 20, 20), dtype)
    xd, wd, dyd = cp.asarray(x), cp.asarray(w), cp.asarray(dy)
    lx = rand(rng, (5000, 33), dtype)
    ldy = rand(rng, (5000, 17), dtype)
    lw = rand(rng, (17, 33), dtype)
    lxd, ldyd, lwd = cp.asarray(lx), cp.asarray(ldy), cp.asarray(lw)

    def run(stream):
        dx, dw, db = out(gpu, x.shape, dtype), out(gpu, w.shape, dtype), out(gpu, (32,), dtype)
        ldw, ldb = out(gpu, lw.shape, dtype), out(gpu, (17,), dtype)
        dev = int(dw.device.id)
        gpu.k.conv2d_backward(D(dx), D(dw), D(db), D(dyd), D(xd), D(wd), 1, 1, 1, 1, 1, 1,
                              stream, dev)
        gpu.k.linear_backward(None, D(ldw), D(ldb), D(ldyd), D(lxd), D(lwd), stream, dev)
        return dx, dw, db, ldw, ldb

    first = [a.get() for a in run(cp.cuda.get_current_stream().ptr)]
    kw = dict(stride=1, padding=1, dilation=1)
    want = ref.conv2d_backward(dy, x, w, np.zeros(32, dtype), **kw)
    for name, g, r in zip(("dx", "dw", "db"), first[:3], want):
        assert_close(g, r, dtype, name)
    _, lwant_dw, lwant_db = ref.linear_backward(ldy, lx, lw, np.zeros(17, dtype))
    assert_close(first[3], lwant_dw, dtype, "linear dw")
    assert_close(first[4], lwant_db, dtype, "linear db")

    s = cp.cuda.Stream(non_blocking=True)
    for i in range(6):
        if i % 2:
            with s:
                res = run(s.ptr)
            s.synchronize()
            got = [a.get(stream=s) for a in res]
        else:
            got = [a.get() for a in run(cp.cuda.get_current_stream().ptr)]
        for name, a, b in zip(("dx", "dw", "db", "linear dw", "linear db"), first, got):
            assert np.array_equal(a.view(np.uint8), b.view(np.uint8)), f"{name} differs on run {i}"


# ---------------------------------------------------------------------------- argument checks
# These never reach the device: every call below fails validation (or has only empty
# outputs), so they run wherever the module imports.

F4 = "<f4"


def _d(shape, typestr=F4, ptr=4096):
    return (ptr, tuple(shape), typestr)


def test_has_kernels(cuda_module):
    assert cuda_module.has_kernels() is True


def test_argument_errors(cuda_module):
    k = cuda_module
    x = _d((2, 3, 5, 5))
    w = _d((4, 3, 3, 3))
    y = _d((2, 4, 3, 3))
    with pytest.raises(TypeError, match="conv2d_forward: x: .*float32 or float64"):
        k.conv2d_forward(y, _d((2, 3, 5, 5), "<i8"), w, None, 1, 1, 0, 0, 1, 1, 0, 0)
    with pytest.raises(TypeError, match="conv2d_forward: w: expected dtype float32"):
        k.conv2d_forward(y, x, _d((4, 3, 3, 3), "<f8"), None, 1, 1, 0, 0, 1, 1, 0, 0)
    with pytest.raises(TypeError, match="unsupported typestr"):
        k.conv2d_forward(y, _d((2, 3, 5, 5), ">f4"), w, None, 1, 1, 0, 0, 1, 1, 0, 0)
    with pytest.raises(TypeError, match="array descriptor"):
        k.conv2d_forward(y, np.zeros((2, 3, 5, 5), np.float32), w, None, 1, 1, 0, 0, 1, 1, 0, 0)
    with pytest.raises(TypeError, match="array descriptor"):
        k.relu_forward(None, x, 0, 0)
    with pytest.raises(ValueError, match="conv2d_forward: x: expected a 4-D array"):
        k.conv2d_forward(y, _d((3, 5, 5)), w, None, 1, 1, 0, 0, 1, 1, 0, 0)
    with pytest.raises(ValueError, match="conv2d_forward: y: expected shape"):
        k.conv2d_forward(_d((2, 5, 3, 3)), x, w, None, 1, 1, 0, 0, 1, 1, 0, 0)
    with pytest.raises(ValueError, match="conv2d_forward: b: expected shape"):
        k.conv2d_forward(y, x, w, _d((5,)), 1, 1, 0, 0, 1, 1, 0, 0)
    with pytest.raises(ValueError, match="stride_h must be >= 1"):
        k.conv2d_forward(y, x, w, None, 0, 1, 0, 0, 1, 1, 0, 0)
    with pytest.raises(ValueError, match="device must be >= 0"):
        k.conv2d_forward(y, x, w, None, 1, 1, 0, 0, 1, 1, 0, -1)
    with pytest.raises(ValueError, match="null device pointer"):
        k.relu_forward(_d((3,)), _d((3,), ptr=0), 0, 0)
    with pytest.raises(ValueError, match="descriptor ptr"):
        k.relu_forward(_d((3,)), _d((3,), ptr=-5), 0, 0)
    with pytest.raises(ValueError, match="shape entries must be >= 0"):
        k.relu_forward(_d((3,)), _d((-3,)), 0, 0)
    with pytest.raises(ValueError, match="relu_backward: dx: expected shape"):
        k.relu_backward(_d((4,)), _d((3,)), _d((3,)), 0, 0)
    with pytest.raises(ValueError, match="max_pool2d_backward: indices: expected shape"):
        k.max_pool2d_backward(_d((1, 1, 4, 4)), _d((1, 1, 2, 2)), _d((1, 1, 2, 3), "<i8"),
                              2, 2, 2, 2, 0, 0, 0, 0)
    with pytest.raises(TypeError, match="max_pool2d_forward: indices: expected dtype int64"):
        k.max_pool2d_forward(_d((1, 1, 2, 2)), _d((1, 1, 2, 2)), _d((1, 1, 4, 4)),
                             2, 2, 2, 2, 0, 0, 0, 0)
    with pytest.raises(ValueError, match="linear_backward: db: expected shape"):
        k.linear_backward(None, None, _d((4,)), _d((2, 3)), _d((2, 5)), _d((3, 5)), 0, 0)
    with pytest.raises(ValueError, match="cross_entropy_forward: labels: expected shape"):
        k.cross_entropy_forward(_d((3,)), _d((3, 4)), _d((2,), "<i8"), 0, 0)
    with pytest.raises(ValueError, match="softmax_backward: y: expected shape"):
        k.softmax_backward(_d((2, 3, 1)), _d((2, 3, 1)), _d((2, 4, 1)), 0, 0)


def test_empty_outputs_launch_nothing(cuda_module):
    """All-empty outputs return before any device work (null pointers are fine when empty)."""
    k = cuda_module
    e = lambda *s, t=F4: (0, s, t)  # noqa: E731
    k.relu_forward(e(0), e(0), 0, 0)
    k.conv2d_forward(e(0, 4, 3, 3), e(0, 3, 5, 5), _d((4, 3, 3, 3)), None, 1, 1, 0, 0, 1, 1, 0, 0)
    k.softmax_forward(e(0, 5, 1), e(0, 5, 1), 0, 0)
    k.max_pool2d_forward(e(0, 3, 2, 2), e(0, 3, 2, 2, t="<i8"), e(0, 3, 4, 4), 2, 2, 2, 2, 0, 0, 0, 0)
    k.linear_backward(e(0, 5), None, None, e(0, 3), e(0, 5), _d((3, 5)), 0, 0)
    k.cross_entropy_backward(e(0, 5), e(0, 5), e(0, t="<i8"), 1.0, 0, 0)
