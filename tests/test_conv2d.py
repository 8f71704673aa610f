"""conv2d forward and backward, every backend and dtype, against the float64 oracle."""

from __future__ import annotations

import numpy as np
import pytest
from cases import CONV
from conftest import assert_close, rand, same_bits_on_1_2_3_threads, threaded_numba

from layerforge import _backend
from layerforge import _reference as ref
from layerforge import ops

THREADED_NUMBA = True  # conftest: also run 'numba:threads' (worker threads on every call)


def _case(c, dtype, seed=0):
    n, ci, h, w, k, r, s, stride, padding, dilation, bias = c
    rng = np.random.default_rng(seed)
    x = rand(rng, (n, ci, h, w), dtype)
    wt = rand(rng, (k, ci, r, s), dtype)
    b = rand(rng, (k,), dtype) if bias else None
    return x, wt, b, dict(stride=stride, padding=padding, dilation=dilation)


@pytest.mark.parametrize("c", CONV, ids=[str(c) for c in CONV])
def test_conv2d_forward(backend, dtype, c):
    x, w, b, kw = _case(c, dtype)
    assert_close(ops.conv2d(x, w, b, **kw, backend=backend), ref.conv2d(x, w, b, **kw), dtype, "y")


@pytest.mark.parametrize("c", CONV, ids=[str(c) for c in CONV])
def test_conv2d_backward(backend, dtype, c):
    x, w, b, kw = _case(c, dtype)
    y_shape = ref.conv2d(x, w, b, **kw).shape
    dy = rand(np.random.default_rng(1), y_shape, dtype)
    got = ops.conv2d_backward(dy, x, w, b, **kw, backend=backend)
    want = ref.conv2d_backward(dy, x, w, b, **kw)
    for name, g, r in zip(("dx", "dw", "db"), got, want):
        if r is None:
            assert g is None, f"{name} must be None without a bias"
        else:
            assert_close(g, r, dtype, name)


@pytest.mark.parametrize("c", CONV, ids=[str(c) for c in CONV])
def test_conv2d_backward_without_dx(backend, c):
    # A network's first layer asks for the weight gradients only.
    x, w, b, kw = _case(c, np.float32)
    dy = rand(np.random.default_rng(1), ref.conv2d(x, w, b, **kw).shape, np.float32)
    dx, dw, db = ops.conv2d_backward(dy, x, w, b, **kw, need_dx=False, backend=backend)
    _, rdw, rdb = ref.conv2d_backward(dy, x, w, b, **kw)
    assert dx is None
    assert_close(dw, rdw, np.float32, "dw")
    if b is not None:
        assert_close(db, rdb, np.float32, "db")


@pytest.mark.parametrize("c", CONV, ids=[str(c) for c in CONV])
def test_conv2d_fused_relu(backend, dtype, c):
    # activation='relu': the forward applies relu in its output pass; the backward takes the
    # gradient with respect to that output and masks it with y > 0 itself.
    x, w, b, kw = _case(c, dtype)
    want_y = ref.relu(ref.conv2d(x, w, b, **kw))
    y = ops.conv2d(x, w, b, **kw, activation="relu", backend=backend)
    assert_close(y, want_y, dtype, "y")
    dy = rand(np.random.default_rng(1), y.shape, dtype)
    got = ops.conv2d_backward(dy, x, w, b, **kw, activation="relu", y=y, backend=backend)
    want = ref.conv2d_backward(np.where(y > 0, dy, 0).astype(dtype), x, w, b, **kw)
    for name, g, r in zip(("dx", "dw", "db"), got, want):
        if r is not None:
            assert_close(g, r, dtype, name)


def test_conv2d_activation_errors():
    x, w, b, kw = _case(CONV[2], np.float32)
    with pytest.raises(ValueError, match="activation must be None or 'relu'"):
        ops.conv2d(x, w, b, activation="tanh")
    dy = np.zeros(ops.conv2d(x, w, b).shape, np.float32)
    with pytest.raises(TypeError, match="needs the forward's output y="):
        ops.conv2d_backward(dy, x, w, b, activation="relu")
    with pytest.raises(TypeError, match="only used with activation='relu'"):
        ops.conv2d_backward(dy, x, w, b, y=dy)
    with pytest.raises(ValueError, match="y must have shape"):
        ops.conv2d_backward(dy, x, w, b, activation="relu", y=dy[:1])


def test_conv2d_backward_overwrites_out(backend):
    x, w, b, kw = _case(CONV[2], np.float32)
    dy = rand(np.random.default_rng(1), ops.conv2d(x, w, b, **kw, backend=backend).shape, np.float32)
    out = tuple(np.full(a.shape, 7.0, np.float32) for a in (x, w, b))
    got = ops.conv2d_backward(dy, x, w, b, **kw, backend=backend, out=out)
    assert all(g is o for g, o in zip(got, out))
    for g, r in zip(got, ref.conv2d_backward(dy, x, w, b, **kw)):
        assert_close(g, r, np.float32)


def test_conv2d_noncontiguous_inputs(backend):
    rng = np.random.default_rng(3)
    x = rand(rng, (3, 4, 9, 10), np.float64)[:, :, ::-1, ::2]   # negative and step strides
    w = rand(rng, (5, 3, 3, 4), np.float64).transpose(0, 3, 1, 2)  # (5, 4, 3, 3), non-contiguous
    b = rand(rng, (10,), np.float64)[::2]
    y = ops.conv2d(x, w, b, padding=1, backend=backend)
    yc = ops.conv2d(np.ascontiguousarray(x), np.ascontiguousarray(w), np.ascontiguousarray(b), padding=1, backend=backend)
    np.testing.assert_array_equal(y, yc)
    dy = rand(rng, y.shape, np.float64)[..., ::-1]
    for g, gc in zip(ops.conv2d_backward(dy, x, w, b, padding=1, backend=backend),
                     ops.conv2d_backward(np.ascontiguousarray(dy), np.ascontiguousarray(x), np.ascontiguousarray(w),
                                         np.ascontiguousarray(b), padding=1, backend=backend)):
        np.testing.assert_array_equal(g, gc)


def test_conv2d_weight_grad_is_deterministic(backend):
    x, w, b, kw = _case(CONV[4], np.float32, seed=5)
    dy = rand(np.random.default_rng(6), ops.conv2d(x, w, b, backend=backend).shape, np.float32)
    first = ops.conv2d_backward(dy, x, w, b, backend=backend)
    for _ in range(3):
        again = ops.conv2d_backward(dy, x, w, b, backend=backend)
        for a, g in zip(first, again):
            np.testing.assert_array_equal(a, g)


def test_conv2d_output_shape_matches():
    assert ops.conv2d_output_shape((2, 1, 28, 28), (32, 1, 3, 3)) == (2, 32, 26, 26)
    assert ops.conv2d_output_shape((2, 3, 8, 8), (4, 3, 4, 4), padding="same") == (2, 4, 8, 8)
    assert ops.conv2d_output_shape((1, 1, 10, 10), (1, 1, 3, 3), stride=2, padding=1, dilation=2) == (1, 1, 4, 4)


def _pooled_cases():
    out = []
    for c in CONV:
        x, w, _, kw = _case(c, np.float64)
        oh, ow = ref.conv2d(x, w, None, **kw).shape[2:]
        if oh >= 2 and ow >= 2:
            out.append(c)
    return out


POOLED = _pooled_cases()


def _assert_same_as_three_ops(backend, dtype, y, idx, a):
    """The fused op against max_pool2d(a, 2) of the same backend's conv + relu output a.

    The C++ fused op runs the same kernels: bit-identical y and indices. Numba's products are
    NumPy's BLAS, whose summation order depends on the matrix sizes, and the fused op
    multiplies only the even part of the output: y agrees to rounding, and an index may
    differ only where its window holds a near-tie (the value it points to in a is the max).
    """
    y3, idx3 = ops.max_pool2d(a, 2, return_indices=True, backend=backend)
    if backend != "numba":
        np.testing.assert_array_equal(y, y3)
        np.testing.assert_array_equal(idx, idx3)
        return
    assert_close(y, y3, dtype, "y against the three ops")
    planes = a.reshape(a.shape[0] * a.shape[1], a.shape[2] * a.shape[3])
    at = np.take_along_axis(planes, idx.reshape(planes.shape[0], y.shape[2] * y.shape[3]), axis=1)
    at = at.reshape(y.shape)
    assert_close(at, y3, dtype, "a at the fused op's indices")
    assert idx.size == 0 or (idx == idx3).mean() > 0.9, "the fused op's indices differ from the three ops' beyond near-ties"


@pytest.mark.parametrize("c", POOLED, ids=[str(c) for c in POOLED])
def test_conv2d_relu_maxpool_matches_the_three_ops(backend, dtype, c):
    # The fused op runs the same kernels: bit-identical y and indices to conv -> relu -> pool,
    # which are themselves checked against the oracle; y is checked against the oracle too.
    x, w, b, kw = _case(c, dtype)
    y, idx = ops.conv2d_relu_maxpool(x, w, b, **kw, backend=backend)
    a = ops.conv2d(x, w, b, **kw, activation="relu", backend=backend)
    _assert_same_as_three_ops(backend, dtype, y, idx, a)
    assert_close(y, ref.max_pool2d(ref.relu(ref.conv2d(x, w, b, **kw)), 2), dtype, "y")


@pytest.mark.parametrize("c", POOLED, ids=[str(c) for c in POOLED])
def test_conv2d_relu_maxpool_backward(backend, dtype, c):
    x, w, b, kw = _case(c, dtype)
    y, idx = ops.conv2d_relu_maxpool(x, w, b, **kw, backend=backend)
    dy = rand(np.random.default_rng(1), y.shape, dtype)
    got = ops.conv2d_relu_maxpool_backward(dy, x, w, b, **kw, y=y, indices=idx, backend=backend)
    # The oracle: the pooled gradient scattered to the argmax where the relu passed it, then
    # the convolution's backward.
    n, k, oh, ow = ref.conv2d(x, w, b, **kw).shape
    full = np.zeros((n * k, oh * ow))
    src = np.where(y > 0, dy, 0).astype(np.float64).reshape(n * k, (oh // 2) * (ow // 2))
    for q in range(n * k):
        np.add.at(full[q], idx.reshape(n * k, -1)[q], src[q])
    want = ref.conv2d_backward(full.reshape(n, k, oh, ow), x, w, b, **kw)
    for name, g, r in zip(("dx", "dw", "db"), got, want):
        if r is not None:
            assert_close(g, r, dtype, name)
    dx, dw, db = ops.conv2d_relu_maxpool_backward(dy, x, w, b, **kw, y=y, indices=idx, need_dx=False,
                                                  backend=backend)
    assert dx is None
    assert_close(dw, want[1], dtype, "dw")


def test_conv2d_relu_maxpool_errors():
    x, w, b, kw = _case(CONV[2], np.float32)
    y, idx = ops.conv2d_relu_maxpool(x, w, b, **kw)
    with pytest.raises(ValueError, match="smaller than the 2x2 pooling window"):
        ops.conv2d_relu_maxpool(np.zeros((1, 1, 3, 3), np.float32), np.zeros((1, 1, 3, 3), np.float32))
    with pytest.raises(ValueError, match="dy must have shape"):
        ops.conv2d_relu_maxpool_backward(y[:, :1], x, w, b, **kw, y=y, indices=idx)
    with pytest.raises(TypeError, match="indices must be an integer array"):
        ops.conv2d_relu_maxpool_backward(y, x, w, b, **kw, y=y, indices=y)


@pytest.mark.parametrize("stride", [1, 2], ids=["sparse-backward", "dense-backward"])
def test_conv2d_relu_maxpool_in_chunks(backend, dtype, stride):
    # Planes big enough that the batch runs in several chunks (about 512 KB of conv output
    # each), with an odd last chunk: dW and db are summed over the chunks. Stride 1 (8 input
    # channels) takes the sparse backward (from the non-zero pooled gradients, images split
    # over the threads), stride 2 the dense one.
    rng = np.random.default_rng(7)
    x, w, b = rand(rng, (7, 8, 40, 41), dtype), rand(rng, (64, 8, 3, 3), dtype), rand(rng, (64,), dtype)
    y, idx = ops.conv2d_relu_maxpool(x, w, b, stride, padding=1, backend=backend)
    a = ops.conv2d(x, w, b, stride, padding=1, activation="relu", backend=backend)
    _assert_same_as_three_ops(backend, dtype, y, idx, a)
    dy = rand(rng, y.shape, dtype)
    got = ops.conv2d_relu_maxpool_backward(dy, x, w, b, stride, padding=1, y=y, indices=idx, backend=backend)
    da = ops.max_pool2d_backward(dy, a, 2, indices=idx, backend=backend)
    want = ref.conv2d_backward(np.where(a > 0, da, 0), x, w, b, stride, padding=1)
    for name, g, r in zip(("dx", "dw", "db"), got, want):
        assert_close(g, r, dtype, name)


def test_numba_results_do_not_depend_on_threads(monkeypatch):
    # The Numba backend's chunks are the same for any thread count, each chunk's dW (and
    # bias sum) is kept apart and they are summed in batch order: 1, 2 and 3 worker threads
    # give bit-identical results, which also match the oracle.
    nb = threaded_numba()
    monkeypatch.setattr(nb, "_PARALLEL_WORK", 0)
    monkeypatch.setattr(nb, "_COL_BYTES", 1 << 14)
    rng = np.random.default_rng(3)
    x, w, b = rand(rng, (9, 5, 12, 13), np.float32), rand(rng, (7, 5, 3, 3), np.float32), rand(rng, (7,), np.float32)
    dy = rand(rng, (9, 7, 10, 11), np.float32)
    dyp = rand(rng, (9, 7, 5, 5), np.float32)
    xl, wl, dyl = rand(rng, (70, 33), np.float32), rand(rng, (40, 33), np.float32), rand(rng, (70, 40), np.float32)

    def run():
        y, idx = ops.conv2d_relu_maxpool(x, w, b, backend="numba")
        return (ops.conv2d(x, w, b, backend="numba"),
                *ops.conv2d_backward(dy, x, w, b, backend="numba"),
                y, idx, *ops.conv2d_relu_maxpool_backward(dyp, x, w, b, y=y, indices=idx, backend="numba"),
                ops.linear(xl, wl, backend="numba"), *ops.linear_backward(dyl, xl, wl, backend="numba")[:2])

    first = same_bits_on_1_2_3_threads(nb, run)
    want = ref.conv2d_backward(dy, x, w, b)
    for name, g, r in zip(("dx", "dw", "db"), first[1:4], want):
        assert_close(g, r, np.float32, name)


# The cases _numba_simd.conv_rows takes: stride 1, no padding, no dilation, depth C*R*S <= 32,
# at most 64 filters, output rows of at least 16 columns.
DIRECT_NUMBA = [c for c in CONV if c[7:10] in ((1, 0, 1), (1, "valid", 1))
                and c[1] * c[5] * c[6] <= 32 and c[4] <= 64 and c[3] - c[6] + 1 >= 16]


@pytest.mark.parametrize("c", DIRECT_NUMBA, ids=[str(c) for c in DIRECT_NUMBA])
@pytest.mark.parametrize("relu", [False, True])
def test_numba_direct_forward_matches_the_column_path_bit_for_bit(dtype, c, relu):
    # The forward of shallow unpadded convolutions (conv 1) runs _numba_simd.conv_rows, and the
    # fused conv -> relu -> pool conv_pool_rows. conv_rows must give the column path's bits
    # (im2col + small_gemm + bias), and the fused op those of conv -> relu -> max pool (which
    # _assert_same_as_three_ops checks only to rounding for Numba).
    nb = _backend.load("numba")
    if nb is None:
        pytest.skip(f"numba unavailable: {_backend.unavailable_reason('numba')}")
    x, w, b, kw = _case(c, dtype)
    y = ops.conv2d(x, w, b, **kw, activation="relu" if relu else None, backend="numba")
    n, k_out, oh, ow = y.shape
    col = np.empty_like(y)
    bias = np.zeros(k_out, dtype) if b is None else b
    nb._forward_chunks(lambda tmp, n0: nb._k_unchunk_bias(col.reshape(n, k_out, -1), tmp, bias, n0, relu),
                       x, w, 1, 1, 0, 0, 1, 1, oh, ow)
    np.testing.assert_array_equal(y, col)
    if relu and oh >= 2:  # pooling needs two rows
        yp, idx = ops.conv2d_relu_maxpool(x, w, b, **kw, backend="numba")
        y3, idx3 = ops.max_pool2d(y, 2, return_indices=True, backend="numba")
        np.testing.assert_array_equal(yp, y3)
        np.testing.assert_array_equal(idx, idx3)


def test_conv2d_relu_maxpool_backward_takes_any_index(backend, dtype):
    # Indices need not come from the forward: each goes where it points in the even part of
    # the convolution output (the rows and columns pooling reads); one in the odd last row or
    # column, which no 2x2 window reads, is dropped, as is a gradient where y <= 0.
    rng = np.random.default_rng(11)
    x, w, b = rand(rng, (3, 2, 8, 8), dtype), rand(rng, (4, 2, 2, 2), dtype), rand(rng, (4,), dtype)
    dy, y = rand(rng, (3, 4, 3, 3), dtype), rand(rng, (3, 4, 3, 3), dtype)
    idx = rng.integers(0, 49, size=(3, 4, 3, 3)).astype(np.int64)  # the conv output is 7x7
    got = ops.conv2d_relu_maxpool_backward(dy, x, w, b, y=y, indices=idx, backend=backend)
    full = np.zeros((12, 49))
    for q, (d, i, v) in enumerate(zip(dy.reshape(12, 9), idx.reshape(12, 9), y.reshape(12, 9))):
        for g, j, yv in zip(d, i, v):
            if yv > 0 and j // 7 < 6 and j % 7 < 6:
                full[q, j] += g
    want = ref.conv2d_backward(full.reshape(3, 4, 7, 7), x, w, b)
    for name, g, r in zip(("dx", "dw", "db"), got, want):
        assert_close(g, r, dtype, name)
