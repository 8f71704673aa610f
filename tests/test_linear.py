"""linear (the dense op) forward and backward, every backend and dtype, against the oracle."""

from __future__ import annotations

import numpy as np
import pytest
from cases import LINEAR
from conftest import assert_close, rand

from layerforge import _reference as ref
from layerforge import ops

THREADED_NUMBA = True  # conftest: also run 'numba:threads' (worker threads on every call)


def _case(c, dtype):
    xs, out, bias = c
    rng = np.random.default_rng(0)
    return rand(rng, xs, dtype), rand(rng, (out, xs[-1]), dtype), rand(rng, (out,), dtype) if bias else None


@pytest.mark.parametrize("c", LINEAR, ids=[str(c) for c in LINEAR])
def test_linear_forward(backend, dtype, c):
    x, w, b = _case(c, dtype)
    assert_close(ops.linear(x, w, b, backend=backend), ref.linear(x, w, b), dtype, "y")


@pytest.mark.parametrize("c", LINEAR, ids=[str(c) for c in LINEAR])
def test_linear_backward(backend, dtype, c):
    x, w, b = _case(c, dtype)
    dy = rand(np.random.default_rng(1), x.shape[:-1] + (w.shape[0],), dtype)
    got = ops.linear_backward(dy, x, w, b, backend=backend)
    for name, g, r in zip(("dx", "dw", "db"), got, ref.linear_backward(dy, x, w, b)):
        if r is None:
            assert g is None
        else:
            assert_close(g, r, dtype, name)


@pytest.mark.parametrize("c", LINEAR, ids=[str(c) for c in LINEAR])
def test_linear_backward_without_dx(backend, c):
    x, w, b = _case(c, np.float32)
    dy = rand(np.random.default_rng(1), x.shape[:-1] + (w.shape[0],), np.float32)
    dx, dw, db = ops.linear_backward(dy, x, w, b, need_dx=False, backend=backend)
    _, rdw, rdb = ref.linear_backward(dy, x, w, b)
    assert dx is None
    assert_close(dw, rdw, np.float32, "dw")
    if b is not None:
        assert_close(db, rdb, np.float32, "db")


def test_linear_noncontiguous(backend):
    rng = np.random.default_rng(2)
    x = rand(rng, (12, 9), np.float32).T[::-1]      # (9, 12), transposed and reversed
    w = rand(rng, (12, 5), np.float32).T            # (5, 12)
    y = ops.linear(x, w, backend=backend)
    np.testing.assert_array_equal(y, ops.linear(np.ascontiguousarray(x), np.ascontiguousarray(w), backend=backend))
