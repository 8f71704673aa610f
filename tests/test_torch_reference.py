"""The same grids against torch.nn.functional (forward and autograd backward), where torch is
installed; skipped otherwise. Checks that our semantics are PyTorch's, not only our oracle's."""

from __future__ import annotations

import numpy as np
import pytest
from cases import CONV, CROSS_ENTROPY, LINEAR, POOL, SOFTMAX
from conftest import assert_close, rand

from layerforge import ops

torch = pytest.importorskip("torch")
F = torch.nn.functional
pytestmark = pytest.mark.torch


def _t(a):
    return None if a is None else torch.from_numpy(np.ascontiguousarray(a)).requires_grad_(True)


def _grads(y, dy, *leaves):
    y.backward(torch.from_numpy(dy))
    return [None if t is None else t.grad.numpy() for t in leaves]


@pytest.mark.parametrize("c", CONV, ids=[str(c) for c in CONV])
def test_conv2d_vs_torch(backend, dtype, c):
    n, ci, h, w, k, r, s, stride, padding, dilation, bias = c
    rng = np.random.default_rng(0)
    x, wt = rand(rng, (n, ci, h, w), dtype), rand(rng, (k, ci, r, s), dtype)
    b = rand(rng, (k,), dtype) if bias else None
    kw = dict(stride=stride, padding=padding, dilation=dilation)
    tx, tw, tb = _t(x), _t(wt), _t(b)
    ty = F.conv2d(tx, tw, tb, **kw)
    y = ops.conv2d(x, wt, b, **kw, backend=backend)
    assert_close(y, ty.detach().numpy(), dtype, "y")
    if y.size == 0:
        return
    dy = rand(rng, y.shape, dtype)
    for g, t in zip(ops.conv2d_backward(dy, x, wt, b, **kw, backend=backend), _grads(ty, dy, tx, tw, tb)):
        assert (g is None) == (t is None)
        if t is not None:
            assert_close(g, t, dtype, "grad")


@pytest.mark.parametrize("kind", ["normal", "ties", "nan"])
@pytest.mark.parametrize("c", POOL, ids=[str(c) for c in POOL])
def test_pools_vs_torch(backend, dtype, c, kind):
    n, ch, h, w, k, s, p = c
    rng = np.random.default_rng(0)
    x = rng.integers(0, 3, (n, ch, h, w)).astype(dtype) if kind == "ties" else rand(rng, (n, ch, h, w), dtype)
    if kind == "nan" and x.size:
        x.reshape(-1)[:: 5] = np.nan
    kw = dict(kernel_size=k, stride=s, padding=p)
    tx = _t(x)
    ty, tidx = F.max_pool2d(tx, **kw, return_indices=True)
    y, idx = ops.max_pool2d(x, **kw, return_indices=True, backend=backend)
    assert_close(y, ty.detach().numpy(), dtype, "max y")
    np.testing.assert_array_equal(idx, tidx.numpy())
    if y.size:
        dy = rand(rng, y.shape, dtype)
        assert_close(ops.max_pool2d_backward(dy, x, **kw, backend=backend), _grads(ty, dy, tx)[0], dtype, "max dx")
    if kind == "nan":
        return
    for cip in (True, False):
        tx = _t(x)
        ty = F.avg_pool2d(tx, **kw, count_include_pad=cip)
        y = ops.avg_pool2d(x, **kw, count_include_pad=cip, backend=backend)
        assert_close(y, ty.detach().numpy(), dtype, "avg y")
        if y.size:
            dy = rand(rng, y.shape, dtype)
            assert_close(ops.avg_pool2d_backward(dy, x, **kw, count_include_pad=cip, backend=backend),
                         _grads(ty, dy, tx)[0], dtype, "avg dx")


@pytest.mark.parametrize("c", LINEAR, ids=[str(c) for c in LINEAR])
def test_linear_vs_torch(backend, dtype, c):
    xs, out, bias = c
    rng = np.random.default_rng(0)
    x, w = rand(rng, xs, dtype), rand(rng, (out, xs[-1]), dtype)
    b = rand(rng, (out,), dtype) if bias else None
    tx, tw, tb = _t(x), _t(w), _t(b)
    ty = F.linear(tx, tw, tb)
    assert_close(ops.linear(x, w, b, backend=backend), ty.detach().numpy(), dtype, "y")
    dy = rand(rng, ty.shape, dtype)
    for g, t in zip(ops.linear_backward(dy, x, w, b, backend=backend), _grads(ty, dy, tx, tw, tb)):
        if t is not None:
            assert_close(g, t, dtype, "grad")


@pytest.mark.parametrize("c", SOFTMAX, ids=[str(c) for c in SOFTMAX])
@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
def test_softmax_vs_torch(backend, dtype, c, name):
    shape, dim = c
    rng = np.random.default_rng(0)
    x = rand(rng, shape, dtype) * np.asarray(1e3, dtype)
    tx = _t(x)
    ty = getattr(F, name)(tx, dim)
    assert_close(getattr(ops, name)(x, dim, backend=backend), ty.detach().numpy(), dtype, "y")
    dy = rand(rng, shape, dtype)
    assert_close(getattr(ops, name + "_backward")(dy, x, dim, backend=backend), _grads(ty, dy, tx)[0], dtype, "dx")


@pytest.mark.parametrize("c", CROSS_ENTROPY, ids=[str(c) for c in CROSS_ENTROPY])
def test_cross_entropy_vs_torch(backend, dtype, c):
    n, k = c
    rng = np.random.default_rng(0)
    z, lab = rand(rng, (n, k), dtype) * np.asarray(100, dtype), rng.integers(0, k, n)
    tz = _t(z)
    tl = F.cross_entropy(tz, torch.from_numpy(lab))
    assert_close(ops.cross_entropy(z, lab, backend=backend), tl.detach().numpy(), dtype, "loss")
    if n:
        tl.backward()
        assert_close(ops.cross_entropy_backward(1.0, z, lab, backend=backend), tz.grad.numpy(), dtype, "dlogits")


@pytest.mark.parametrize("name", ["relu", "sigmoid", "tanh"])
def test_activations_vs_torch(backend, dtype, name):
    x = rand(np.random.default_rng(0), (5, 7, 3), dtype) * np.asarray(10, dtype)
    x.reshape(-1)[:3] = [0.0, 1000.0, -1000.0]
    tx = _t(x)
    ty = getattr(torch, name)(tx)
    assert_close(getattr(ops, name)(x, backend=backend), ty.detach().numpy(), dtype, "y")
    dy = rand(np.random.default_rng(1), x.shape, dtype)
    assert_close(getattr(ops, name + "_backward")(dy, x, backend=backend), _grads(ty, dy, tx)[0], dtype, "dx")
