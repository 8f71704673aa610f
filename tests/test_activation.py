"""relu, sigmoid and tanh, forward and backward, every backend and dtype, against the oracle."""

from __future__ import annotations

import numpy as np
import pytest
from cases import ELEMENTWISE
from conftest import assert_close, assert_only_written, placed, rand

from layerforge import _reference as ref
from layerforge import ops

NAMES = ["relu", "sigmoid", "tanh"]
STREAMING_KERNELS = True  # conftest: also run 'cpp:stream' (non-temporal stores on every call)
THREADED_NUMBA = True  # conftest: also run 'numba:threads' (element ranges on 3 worker threads)


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


@pytest.mark.parametrize("n", [1, 15, 16, 17, 47, 100, 40_003])
@pytest.mark.parametrize("byte_offset", [0, 4, 16, 32, 60, 1])
@pytest.mark.parametrize("name", NAMES)
def test_activation_output_at_any_alignment(backend, name, n, byte_offset):
    # The AVX-512 loops store a masked head up to the output's first 64-byte boundary, then
    # whole lines (streamed under 'cpp:stream'), then a masked tail; an output that is not
    # even float-aligned (byte offset 1) takes the plain loop. Every split must cover the
    # output exactly: nothing outside it written (the guard bytes stay 0xA5), nothing skipped.
    dtype = np.float32
    x = _x((n,), dtype)
    dy = rand(np.random.default_rng(2), (n,), dtype)
    y, ybuf = placed((n,), dtype, byte_offset)
    getattr(ops, name)(x, backend=backend, out=y)
    assert_close(y, getattr(ref, name)(x), dtype, "y")
    dx, dxbuf = placed((n,), dtype, byte_offset)
    getattr(ops, name + "_backward")(dy, x, backend=backend, out=dx)
    assert_close(dx, getattr(ref, name + "_backward")(dy, x), dtype, "dx")
    assert_only_written(y, ybuf, "y")
    assert_only_written(dx, dxbuf, "dx")


@pytest.mark.parametrize("n", [1, 17, 100, 40_003, 70_001])
@pytest.mark.parametrize("distance", [0, 68, 128, 500, 2048, 3968, 4092])
@pytest.mark.parametrize("name", NAMES)
def test_activation_output_near_its_inputs_in_the_page(backend, name, n, distance):
    # The AVX-512 loops run over the output's lines from the top down where it lies less than
    # 512 bytes past an input within a 4096-byte page (4K aliasing), upward elsewhere: x sits at
    # page offset 0, dy at 2048 (and at 200 once, where both directions would stall), the
    # output `distance` bytes past x. Two threads from 65536 elements on; a distance that is
    # not a multiple of 64 gives masked parts at both ends. Whole output, guard bytes intact.
    dtype = np.float32
    x = _x((n,), dtype)
    dy = rand(np.random.default_rng(2), (n,), dtype)
    xs, dys = placed((n,), dtype, 0, 4096)[0], placed((n,), dtype, 200 if distance == 68 else 2048, 4096)[0]
    xs[...], dys[...] = x, dy
    fwd, bwd = getattr(ops, name), getattr(ops, name + "_backward")
    saved = xs if name == "relu" else placed((n,), dtype, 0, 4096)[0]
    if name != "relu":
        saved[...] = getattr(ref, name)(x)  # the forward output the backward reads, in place
    for what, run, want in (
        ("y", lambda out: fwd(xs, backend=backend, out=out), getattr(ref, name)(x)),
        ("dx", lambda out: (bwd(dys, xs, backend=backend, out=out) if name == "relu"
                            else bwd(dys, y=saved, backend=backend, out=out)),
         getattr(ref, name + "_backward")(dy, x)),
    ):
        out, buf = placed((n,), dtype, distance, 4096)
        run(out)
        assert_close(out, want, dtype, what)
        assert_only_written(out, buf, what)


@pytest.mark.parametrize("name", NAMES)
def test_activation_into_an_nd_out(backend, dtype, name):
    # A fitting out= of any rank goes to the kernels as it is (the host fast path), and holds
    # what the call without it returns.
    x = _x((3, 4, 5), dtype)
    dy = rand(np.random.default_rng(4), x.shape, dtype)
    fwd, bwd = getattr(ops, name), getattr(ops, name + "_backward")
    y = np.full_like(x, np.nan)
    assert fwd(x, backend=backend, out=y) is y
    assert_close(y, getattr(ref, name)(x), dtype, "y")
    dx = np.full_like(x, np.nan)
    assert bwd(dy, x, backend=backend, out=dx) is dx
    assert_close(dx, getattr(ref, name + "_backward")(dy, x), dtype, "dx")
