"""relu, sigmoid and tanh, forward and backward, every backend and dtype, against the oracle."""

from __future__ import annotations

import numpy as np
import pytest
from cases import ELEMENTWISE
from conftest import assert_close, rand

from layerforge import _reference as ref
from layerforge import ops

NAMES = ["relu", "sigmoid", "tanh"]


def _x(shape, dtype):
    x = rand(np.random.default_rng(0), shape, dtype) * 3
    flat = x.reshape(-1)
    special = np.array([0.0, -0.0, 1000.0, -1000.0, 20.0, -20.0, 1e-30][: flat.size], dtype)
    flat[: special.size] = special  # saturation and zero, where the formulas go wrong first
    return x


@pytest.mark.parametrize("shape", ELEMENTWISE, ids=[str(s) for s in ELEMENTWISE])
@pytest.mark.parametrize("name", NAMES)
def test_activation(backend, dtype, name, shape):
    x = _x(shape, dtype)
    y = getattr(ops, name)(x, backend=backend)
    assert_close(y, getattr(ref, name)(x), dtype, "y")
    dy = rand(np.random.default_rng(1), shape, dtype)
    want = getattr(ref, name + "_backward")(dy, x)
    bwd = getattr(ops, name + "_backward")
    assert_close(bwd(dy, x, backend=backend), want, dtype, "dx")
    if name != "relu":
        assert_close(bwd(dy, y=y, backend=backend), want, dtype, "dx from y")


def test_relu_keeps_nan_and_zero_grad_at_zero(backend):
    x = np.array([np.nan, -1.0, 0.0, 2.0], np.float32)
    y = ops.relu(x, backend=backend)
    assert np.isnan(y[0]) and list(y[1:]) == [0.0, 0.0, 2.0]
    assert list(ops.relu_backward(np.ones(4, np.float32), x, backend=backend)) == [0.0, 0.0, 0.0, 1.0]


@pytest.mark.parametrize("name", ["sigmoid", "tanh"])
def test_sigmoid_tanh_at_infinities_and_nan(backend, dtype, name):
    # The vectorised forms clamp and saturate; +-inf must give the limits, NaN must stay NaN,
    # in the SIMD body and in the masked tail alike (19 elements: one vector and a tail).
    x = np.linspace(-3, 3, 19).astype(dtype)
    x[[0, 17]] = np.inf
    x[[1, 18]] = -np.inf
    x[[2, 16]] = np.nan
    y = getattr(ops, name)(x, backend=backend)
    lo = 0.0 if name == "sigmoid" else -1.0
    assert list(y[[0, 17]]) == [1.0, 1.0] and list(y[[1, 18]]) == [lo, lo]
    assert np.isnan(y[[2, 16]]).all()
    want = getattr(ref, name)(x[3:16].astype(np.float64))
    assert_close(y[3:16], want, dtype, name)
