"""Randomised geometry (hypothesis, derandomised so CI is repeatable): conv and pooling with
random sizes, strides, paddings and dilations, every backend, against the oracle. Catches the
index edge cases a hand-written grid misses."""

from __future__ import annotations

import numpy as np
from conftest import assert_close
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from layerforge import _reference as ref
from layerforge import ops

SETTINGS = settings(max_examples=40, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])


@st.composite
def conv_case(draw):
    r, s = draw(st.integers(1, 5)), draw(st.integers(1, 5))
    dh, dw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    ph, pw = draw(st.integers(0, 3)), draw(st.integers(0, 3))
    h = draw(st.integers(max(1, dh * (r - 1) + 1 - 2 * ph), 14))
    w = draw(st.integers(max(1, dw * (s - 1) + 1 - 2 * pw), 14))
    return dict(n=draw(st.integers(0, 3)), c=draw(st.integers(1, 6)), h=h, w=w, k=draw(st.integers(1, 7)),
                r=r, s=s, stride=(draw(st.integers(1, 3)), draw(st.integers(1, 3))), padding=(ph, pw),
                dilation=(dh, dw), bias=draw(st.booleans()), dtype=draw(st.sampled_from([np.float32, np.float64])))


@st.composite
def pool_case(draw):
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    ph, pw = draw(st.integers(0, kh // 2)), draw(st.integers(0, kw // 2))
    return dict(n=draw(st.integers(0, 3)), c=draw(st.integers(1, 4)),
                h=draw(st.integers(max(1, kh - 2 * ph), 12)), w=draw(st.integers(max(1, kw - 2 * pw), 12)),
                kernel_size=(kh, kw), stride=(draw(st.integers(1, 3)), draw(st.integers(1, 3))), padding=(ph, pw),
                dtype=draw(st.sampled_from([np.float32, np.float64])))


@SETTINGS
@given(conv_case())
def test_conv2d_random(backend, case):
    c = case
    rng = np.random.default_rng(0)
    dt = c["dtype"]
    x = rng.standard_normal((c["n"], c["c"], c["h"], c["w"])).astype(dt)
    w = rng.standard_normal((c["k"], c["c"], c["r"], c["s"])).astype(dt)
    b = rng.standard_normal(c["k"]).astype(dt) if c["bias"] else None
    kw = dict(stride=c["stride"], padding=c["padding"], dilation=c["dilation"])
    y = ops.conv2d(x, w, b, **kw, backend=backend)
    assert_close(y, ref.conv2d(x, w, b, **kw), dt, "y")
    dy = rng.standard_normal(y.shape).astype(dt)
    for g, r in zip(ops.conv2d_backward(dy, x, w, b, **kw, backend=backend), ref.conv2d_backward(dy, x, w, b, **kw)):
        if r is not None:
            assert_close(g, r, dt, "grad")


@SETTINGS
@given(pool_case())
def test_pools_random(backend, case):
    c = dict(case)
    dt = c.pop("dtype")
    rng = np.random.default_rng(1)
    x = rng.integers(-3, 4, (c.pop("n"), c.pop("c"), c.pop("h"), c.pop("w"))).astype(dt)  # ties on purpose
    y, idx = ops.max_pool2d(x, **c, return_indices=True, backend=backend)
    ry, ridx = ref.max_pool2d_with_indices(x, **c)
    assert_close(y, ry, dt, "max y")
    np.testing.assert_array_equal(idx, ridx)
    dy = rng.standard_normal(y.shape).astype(dt)
    assert_close(ops.max_pool2d_backward(dy, x, **c, indices=idx, backend=backend),
                 ref.max_pool2d_backward(dy, x, **c), dt, "max dx")
    assert_close(ops.avg_pool2d(x, **c, backend=backend), ref.avg_pool2d(x, **c), dt, "avg y")
    assert_close(ops.avg_pool2d_backward(dy, x, **c, backend=backend), ref.avg_pool2d_backward(dy, x, **c), dt, "avg dx")
