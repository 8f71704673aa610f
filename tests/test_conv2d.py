"""conv2d forward and backward, every backend and dtype, against the float64 oracle."""

from __future__ import annotations

import numpy as np
import pytest
from cases import CONV
from conftest import assert_close, rand

from layerforge import _reference as ref
from layerforge import ops


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
