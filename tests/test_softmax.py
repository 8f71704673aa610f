"""softmax, log_softmax and the fused cross-entropy, every backend and dtype, against the oracle."""

from __future__ import annotations

import numpy as np
import pytest
from cases import CROSS_ENTROPY, SOFTMAX
from conftest import assert_close, rand

from layerforge import _reference as ref
from layerforge import ops


@pytest.mark.parametrize("scale", [1.0, 1e4], ids=["unit", "huge"])
@pytest.mark.parametrize("c", SOFTMAX, ids=[str(c) for c in SOFTMAX])
@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
def test_softmax_family(backend, dtype, c, name, scale):
    shape, dim = c
    rng = np.random.default_rng(0)
    x = (rand(rng, shape, dtype) * scale).astype(dtype)
    fwd, bwd = getattr(ops, name), getattr(ops, name + "_backward")
    y = fwd(x, dim, backend=backend)
    assert np.all(np.isfinite(y))
    assert_close(y, getattr(ref, name)(x, dim), dtype, "y")
    dy = rand(np.random.default_rng(1), shape, dtype)
    want = getattr(ref, name + "_backward")(dy, x, dim)
    assert_close(bwd(dy, x, dim, backend=backend), want, dtype, "dx from x")
    assert_close(bwd(dy, dim=dim, y=y, backend=backend), want, dtype, "dx from y")


@pytest.mark.parametrize("scale", [1.0, 1e4], ids=["unit", "huge"])
@pytest.mark.parametrize("c", CROSS_ENTROPY, ids=[str(c) for c in CROSS_ENTROPY])
def test_cross_entropy(backend, dtype, c, scale):
    n, k = c
    rng = np.random.default_rng(0)
    logits = (rand(rng, (n, k), dtype) * scale).astype(dtype)
    labels = rng.integers(0, k, n)
    loss = ops.cross_entropy(logits, labels, backend=backend)
    assert loss.shape == () and loss.dtype == dtype
    assert_close(loss, ref.cross_entropy(logits, labels), dtype, "loss")
    assert_close(ops.cross_entropy_backward(0.5, logits, labels, backend=backend),
                 ref.cross_entropy_backward(0.5, logits, labels), dtype, "dlogits")


def test_cross_entropy_int32_labels_match_int64(backend):
    rng = np.random.default_rng(4)
    logits = rand(rng, (9, 6), np.float64)
    lab = rng.integers(0, 6, 9)
    a = ops.cross_entropy(logits, lab.astype(np.int32), backend=backend)
    b = ops.cross_entropy(logits, lab, backend=backend)
    assert a == b
