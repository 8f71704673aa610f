"""max_pool2d and avg_pool2d, forward and backward, every backend and dtype, against the oracle.

Includes NaN in windows (PyTorch's propagation rule) and ties (first maximum wins), checked
on the values, the returned indices and the gradient's destination.
"""

from __future__ import annotations

import numpy as np
import pytest
from cases import POOL
from conftest import assert_close, assert_only_written, placed, rand, same_bits_on_1_2_3_threads, threaded_numba

from layerforge import _reference as ref
from layerforge import ops

IDS = [str(c) for c in POOL]
THREADED_NUMBA = True  # conftest: also run 'numba:threads' (plane ranges on 3 worker threads)


def _case(c, dtype, kind="normal", seed=0):
    n, ch, h, w, k, s, p = c
    rng = np.random.default_rng(seed)
    if kind == "ties":
        x = rng.integers(0, 3, (n, ch, h, w)).astype(dtype)  # many equal maxima per window
    else:
        x = rand(rng, (n, ch, h, w), dtype)
    if kind == "nan" and x.size:
        flat = x.reshape(-1)
        flat[rng.choice(flat.size, max(1, flat.size // 7), replace=False)] = np.nan
    return x, dict(kernel_size=k, stride=s, padding=p)


@pytest.mark.parametrize("kind", ["normal", "ties", "nan"])
@pytest.mark.parametrize("c", POOL, ids=IDS)
def test_max_pool2d_forward(backend, dtype, c, kind):
    x, kw = _case(c, dtype, kind)
    y, idx = ops.max_pool2d(x, **kw, return_indices=True, backend=backend)
    ry, ridx = ref.max_pool2d_with_indices(x, **kw)
    assert_close(y, ry, dtype, "y")
    assert idx.dtype == np.int64
    np.testing.assert_array_equal(idx, ridx, err_msg="indices")
    assert_close(ops.max_pool2d(x, **kw, backend=backend), ry, dtype, "y without indices")


@pytest.mark.parametrize("kind", ["normal", "ties", "nan"])
@pytest.mark.parametrize("c", POOL, ids=IDS)
def test_max_pool2d_backward(backend, dtype, c, kind):
    x, kw = _case(c, dtype, kind)
    y, idx = ops.max_pool2d(x, **kw, return_indices=True, backend=backend)
    dy = rand(np.random.default_rng(1), y.shape, dtype)
    want = ref.max_pool2d_backward(dy, x, **kw)
    assert_close(ops.max_pool2d_backward(dy, x, **kw, backend=backend), want, dtype, "dx (argmax recomputed)")
    assert_close(ops.max_pool2d_backward(dy, x, **kw, indices=idx, backend=backend), want, dtype, "dx (indices given)")


@pytest.mark.parametrize("count_include_pad", [True, False])
@pytest.mark.parametrize("c", POOL, ids=IDS)
def test_avg_pool2d(backend, dtype, c, count_include_pad):
    x, kw = _case(c, dtype)
    y = ops.avg_pool2d(x, **kw, count_include_pad=count_include_pad, backend=backend)
    assert_close(y, ref.avg_pool2d(x, **kw, count_include_pad=count_include_pad), dtype, "y")
    dy = rand(np.random.default_rng(1), y.shape, dtype)
    assert_close(ops.avg_pool2d_backward(dy, x, **kw, count_include_pad=count_include_pad, backend=backend),
                 ref.avg_pool2d_backward(dy, x, **kw, count_include_pad=count_include_pad), dtype, "dx")


def test_max_pool2d_nan_rules(backend):
    # One window: [1, nan, 5, nan] -> value NaN, index of the last NaN (PyTorch's rule);
    # [2, 2, 1, 0] -> first maximum.
    x = np.array([[[[1, np.nan, 2, 2], [5, np.nan, 1, 0]]]], np.float32)
    y, idx = ops.max_pool2d(x, 2, return_indices=True, backend=backend)
    assert np.isnan(y[0, 0, 0, 0]) and y[0, 0, 0, 1] == 2
    assert idx[0, 0, 0, 0] == 5 and idx[0, 0, 0, 1] == 2


def test_max_pool2d_overlapping_windows_accumulate(backend):
    x = np.zeros((1, 1, 3, 3), np.float64)
    x[0, 0, 1, 1] = 10.0  # the centre is the max of all four 2x2 windows (stride 1)
    dx = ops.max_pool2d_backward(np.ones((1, 1, 2, 2)), x, 2, stride=1, backend=backend)
    assert dx[0, 0, 1, 1] == 4.0 and dx.sum() == 4.0


@pytest.mark.parametrize("shape", [(2, 3, 11, 11), (1, 2, 8, 36)])
def test_max_pool2d_backward_foreign_indices(backend, dtype, shape):
    # Indices are the caller's to give: ones outside their own window (here all pointing at
    # a plane's first or last element) must be scattered there, as documented, not dropped.
    rng = np.random.default_rng(3)
    x = rand(rng, shape, dtype)
    n, c, h, w = shape
    dy = rand(rng, (n, c, h // 2, w // 2), dtype)
    idx = np.zeros(dy.shape, np.int64)
    idx[1:] = h * w - 1
    idx[0, 0, 0, 0] = 0  # one plane where only some windows disagree
    idx[0, 0, -1, -1] = (h // 2 * 2 - 1) * w + (w // 2 * 2 - 1)  # its own window's last input
    want = np.zeros((n * c, h * w), np.float64)
    flat_dy, flat_idx = dy.reshape(n * c, -1), idx.reshape(n * c, -1)
    for pl in range(n * c):
        np.add.at(want[pl], flat_idx[pl], flat_dy[pl].astype(np.float64))
    got = ops.max_pool2d_backward(dy, x, 2, indices=idx, backend=backend)
    assert_close(got, want.reshape(shape), dtype, "dx")


@pytest.mark.parametrize("kernel_size", [2, 3])
@pytest.mark.parametrize("bad", [-1, 121, 2**40, -(2**62)])
@pytest.mark.parametrize("where", ["first", "last"])
def test_max_pool2d_backward_index_outside_plane_raises(backend, dtype, kernel_size, bad, where):
    # The kernels count the indices outside the plane (no pass of its own in ops.py); one bad
    # index among valid ones, in the first or the last plane (another thread's share), must
    # raise, on the 2x2 fast path and on the general window loop alike.
    x = rand(np.random.default_rng(4), (3, 5, 11, 11), dtype)
    _, idx = ops.max_pool2d(x, kernel_size, return_indices=True, backend=backend)
    idx[(0, 0, 0, 0) if where == "first" else (-1, -1, -1, -1)] = bad
    dy = np.ones(idx.shape, dtype)
    with pytest.raises(ValueError, match=r"indices must lie in \[0, 121\), got \[" + str(min(bad, 0))):
        ops.max_pool2d_backward(dy, x, kernel_size, indices=idx, backend=backend)



@pytest.mark.parametrize("shape", [(1, 1, 11, 11), (2, 3, 11, 11), (3, 5, 7, 7), (3, 5, 4, 4), (2, 3, 26, 26),
                                   (2, 3, 7, 40), (32, 64, 11, 11), (5, 7, 26, 26)], ids=str)
@pytest.mark.parametrize("offset", [0, 3])
def test_pool_kernels_write_only_their_outputs(backend, shape, offset):
    # The AVX-512 2x2 forwards store each step's 16 lanes whole while that stays inside the
    # thread's outputs (the next step overwrites the overhang), masked at the end, and pair a
    # plane's last output row with the next plane's first where the rows are odd (15 planes of
    # 3 rows: pairs of planes, then one alone); Numba's 2x2 average backward writes even rows
    # in whole groups of 16 values the same way. Called on outputs laid inside guard bytes, the
    # kernels must fill the outputs exactly and touch nothing else, also where two threads
    # split the planes (32 x 64 planes).
    from layerforge import _backend

    k = _backend.resolve(backend, False, "test")[1]
    x = rand(np.random.default_rng(3), shape, np.float32)
    oshape = shape[:2] + (shape[2] // 2, shape[3] // 2)
    dy = rand(np.random.default_rng(4), oshape, np.float32)
    y, ybuf = placed(oshape, np.float32, offset * 4)
    idx, ibuf = placed(oshape, np.int64, offset * 8)
    a, abuf = placed(oshape, np.float32, offset * 4)
    dxm, mbuf = placed(shape, np.float32, offset * 4)
    dxa, dbuf = placed(shape, np.float32, offset * 4)
    k.max_pool2d_forward(y, idx, x, 2, 2, 2, 2, 0, 0)
    k.avg_pool2d_forward(a, x, 2, 2, 2, 2, 0, 0, True)
    assert k.max_pool2d_backward(dxm, dy, idx, 2, 2, 2, 2, 0, 0) == 0
    k.avg_pool2d_backward(dxa, dy, 2, 2, 2, 2, 0, 0, True)
    want_y, want_idx = ref.max_pool2d_with_indices(x, 2, 2, 0)
    assert_close(y, want_y, np.float32, "max y")
    assert np.array_equal(idx, want_idx), "max indices"
    assert_close(a, ref.avg_pool2d(x, 2, 2, 0), np.float32, "avg y")
    assert_close(dxm, ref.max_pool2d_backward(dy, x, 2, 2, 0), np.float32, "max dx")
    assert_close(dxa, ref.avg_pool2d_backward(dy, x, 2, 2, 0), np.float32, "avg dx")
    for what, arr, buf in (("max y", y, ybuf), ("indices", idx, ibuf), ("avg y", a, abuf),
                           ("max dx", dxm, mbuf), ("avg dx", dxa, dbuf)):
        assert_only_written(arr, buf, what)


@pytest.mark.parametrize("shape", [(2, 64, 11, 11), (1, 3, 7, 7), (2, 3, 26, 26), (1, 2, 5, 39)], ids=str)
def test_avg_pool_2x2_same_bits_on_every_backend(backend, dtype, shape):
    # The 2x2 average is ((a + b) + c) + d times 0.25 in the input's dtype on every path (the
    # C++ SIMD and scalar loops, Numba's own 2x2 kernel), and its gradient dy * 0.25: the same
    # bits as the plain C++ backend, not just close to the oracle.
    from layerforge import _backend

    x = rand(np.random.default_rng(5), shape, dtype)
    dy = rand(np.random.default_rng(6), shape[:2] + (shape[2] // 2, shape[3] // 2), dtype)
    y = ops.avg_pool2d(x, 2, backend=backend)
    dx = ops.avg_pool2d_backward(dy, x, 2, backend=backend)
    assert_close(y, ref.avg_pool2d(x, 2, 2, 0), dtype, "y")
    c = _backend.load("cpp")
    if c is None:
        pytest.skip(f"no C++ backend to compare bits with: {_backend.unavailable_reason('cpp')}")
    forced = c.simd_path()
    c.set_simd_path("avx512")  # clamped to the best path this CPU has
    try:
        want_y, want_dx = ops.avg_pool2d(x, 2, backend="cpp"), ops.avg_pool2d_backward(dy, x, 2, backend="cpp")
    finally:
        c.set_simd_path(forced)
    assert np.array_equal(y, want_y), "y differs in its bits from the C++ backend's best SIMD path"
    assert np.array_equal(dx, want_dx), "dx differs in its bits from the C++ backend's best SIMD path"


def test_numba_pooling_same_bits_in_any_plane_split(monkeypatch):
    # Large Numba poolings split their planes over the worker threads; every split (1, 2 and 3
    # threads, 7 planes: uneven ranges) gives the same bits, on the 2x2 kernels and the general
    # window loops, and a bad index in the last range still counts.
    nb = threaded_numba()
    monkeypatch.setattr(nb, "_POOL_PARALLEL", 0)
    rng = np.random.default_rng(8)
    x = rand(rng, (1, 7, 9, 11), np.float32)

    def run():
        out = []
        for kw in (dict(kernel_size=2), dict(kernel_size=3, stride=2, padding=1)):
            y, idx = ops.max_pool2d(x, **kw, return_indices=True, backend="numba")
            dy = rand(np.random.default_rng(9), y.shape, np.float32)
            bad = idx.copy()
            bad[0, -1, -1, -1] = x.shape[2] * x.shape[3]
            with pytest.raises(ValueError, match="indices must lie in"):
                ops.max_pool2d_backward(dy, x, **kw, indices=bad, backend="numba")
            out += [y, idx, ops.max_pool2d_backward(dy, x, **kw, indices=idx, backend="numba"),
                    ops.avg_pool2d(x, **kw, backend="numba"), ops.avg_pool2d_backward(dy, x, **kw, backend="numba")]
        return out

    first = same_bits_on_1_2_3_threads(nb, run)
    want = ref.max_pool2d_with_indices(x, 2)
    assert_close(first[0], want[0], np.float32, "y")
