"""The oracle checked against itself: every backward of _reference by central finite differences,
and a few forward values by hand."""

from __future__ import annotations

import numpy as np
import pytest

from layerforge import _reference as ref

EPS = 1e-6


def numeric_grad(f, x: np.ndarray) -> np.ndarray:
    g = np.zeros_like(x)
    it = np.nditer(x, flags=["multi_index"])
    for _ in it:
        i = it.multi_index
        old = x[i]
        x[i] = old + EPS
        hi = f()
        x[i] = old - EPS
        lo = f()
        x[i] = old
        g[i] = (hi - lo) / (2 * EPS)
    return g


def check(forward, backward_grads, inputs: list[np.ndarray], out_shape, seed=1):
    """forward() -> array of out_shape; backward_grads(dy) -> grads of each of ``inputs``."""
    dy = np.random.default_rng(seed).standard_normal(out_shape)
    analytic = backward_grads(dy)
    for a, x in zip(analytic, inputs):
        n = numeric_grad(lambda: float(np.sum(forward() * dy)), x)
        np.testing.assert_allclose(a, n, rtol=1e-5, atol=1e-7)


R = np.random.default_rng(0)


@pytest.mark.parametrize("kw", [dict(), dict(stride=2, padding=1), dict(padding=(1, 2), dilation=(2, 1)),
                                dict(padding="same"), dict(stride=(1, 2), padding="valid")])
def test_conv2d_backward(kw):
    x, w, b = R.standard_normal((2, 3, 6, 5)), R.standard_normal((2, 3, 2, 3)), R.standard_normal(2)
    y = ref.conv2d(x, w, b, **kw)
    check(lambda: ref.conv2d(x, w, b, **kw), lambda dy: ref.conv2d_backward(dy, x, w, b, **kw), [x, w, b], y.shape)


@pytest.mark.parametrize("kw", [dict(kernel_size=2), dict(kernel_size=3, stride=2, padding=1),
                                dict(kernel_size=(2, 3), stride=1, padding=(1, 1))])
def test_pool_backward(kw):
    x = R.permutation(2 * 2 * 5 * 6).reshape(2, 2, 5, 6) / 7.0  # distinct values: no ties under EPS
    y = ref.max_pool2d(x, **kw)
    check(lambda: ref.max_pool2d(x, **kw), lambda dy: [ref.max_pool2d_backward(dy, x, **kw)], [x], y.shape)
    for cip in (True, False):
        y = ref.avg_pool2d(x, **kw, count_include_pad=cip)
        check(lambda: ref.avg_pool2d(x, **kw, count_include_pad=cip),
              lambda dy: [ref.avg_pool2d_backward(dy, x, **kw, count_include_pad=cip)], [x], y.shape)


def test_linear_backward():
    x, w, b = R.standard_normal((2, 3, 4)), R.standard_normal((5, 4)), R.standard_normal(5)
    check(lambda: ref.linear(x, w, b), lambda dy: ref.linear_backward(dy, x, w, b), [x, w, b], (2, 3, 5))


@pytest.mark.parametrize("dim", [0, 1, 2])
def test_softmax_family_backward(dim):
    x = R.standard_normal((3, 4, 2))
    check(lambda: ref.softmax(x, dim), lambda dy: [ref.softmax_backward(dy, x, dim)], [x], x.shape)
    check(lambda: ref.log_softmax(x, dim), lambda dy: [ref.log_softmax_backward(dy, x, dim)], [x], x.shape)


def test_cross_entropy_backward():
    z, lab = R.standard_normal((5, 4)), np.array([0, 3, 1, 1, 2])
    n = numeric_grad(lambda: ref.cross_entropy(z, lab), z)
    np.testing.assert_allclose(ref.cross_entropy_backward(1.0, z, lab), n, rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("name", ["relu", "sigmoid", "tanh"])
def test_activation_backward(name):
    x = R.standard_normal((4, 5)) + 0.01  # keep relu away from its kink at 0
    check(lambda: getattr(ref, name)(x), lambda dy: [getattr(ref, name + "_backward")(dy, x)], [x], x.shape)


def test_forward_values_by_hand():
    x = np.arange(16.0).reshape(1, 1, 4, 4)
    np.testing.assert_array_equal(ref.conv2d(x, np.ones((1, 1, 2, 2)))[0, 0, 0], [10, 14, 18])
    np.testing.assert_array_equal(ref.max_pool2d(x, 2)[0, 0], [[5, 7], [13, 15]])
    np.testing.assert_array_equal(ref.avg_pool2d(x, 2)[0, 0], [[2.5, 4.5], [10.5, 12.5]])
    assert ref.avg_pool2d(x, 3, 1, 1)[0, 0, 0, 0] == (0 + 1 + 4 + 5) / 9
    assert ref.avg_pool2d(x, 3, 1, 1, count_include_pad=False)[0, 0, 0, 0] == (0 + 1 + 4 + 5) / 4
    np.testing.assert_allclose(ref.softmax(np.array([[1e4, 0.0]]), 1), [[1.0, 0.0]])
    assert ref.cross_entropy(np.zeros((3, 4)), np.array([0, 1, 2])) == pytest.approx(np.log(4))
    assert ref.sigmoid(np.array([-1000.0]))[0] == 0.0 and ref.sigmoid(np.array([1000.0]))[0] == 1.0
    assert ref.conv2d_padding("same", (4, 4), (1, 1)) == (1, 2, 1, 2)


@pytest.mark.parametrize("activation", ["tanh", "sigmoid", "relu", "linear"])
@pytest.mark.parametrize("bias,with_h0", [(True, True), (False, False)])
def test_rnn_backward(activation, bias, with_h0):
    rng = np.random.default_rng(9)
    x, w_xh, w_hh = rng.standard_normal((2, 4, 3)), rng.standard_normal((5, 3)) / 2, rng.standard_normal((5, 5)) / 3
    b = rng.standard_normal(5) if bias else None
    h0 = rng.standard_normal((2, 5)) if with_h0 else None
    inputs = [a for a in (x, w_xh, w_hh, b, h0) if a is not None]

    def grads(dy):
        return [g for g in ref.rnn_backward(dy, x, w_xh, w_hh, b, h0, activation) if g is not None]

    check(lambda: ref.rnn(x, w_xh, w_hh, b, h0, activation), grads, inputs, (2, 4, 5))
