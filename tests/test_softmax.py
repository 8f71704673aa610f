"""softmax, log_softmax and the fused cross-entropy, every backend and dtype, against the oracle."""

from __future__ import annotations

import numpy as np
import pytest
from cases import CROSS_ENTROPY, SOFTMAX
from conftest import assert_close, rand

from layerforge import _backend, ops
from layerforge import _reference as ref


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


def _non_finite_rows(dtype) -> np.ndarray:
    """Rows of 17 logits (a SIMD vector and a tail): a NaN (in the vector, in the tail), a +inf,
    all -inf, -inf twice among finite values, and a finite row."""
    inf = np.inf
    rows = np.zeros((6, 17))
    rows[0, 3] = np.nan
    rows[1, 16] = np.nan
    rows[2, 5] = inf
    rows[3, :] = -inf
    rows[4, [1, 16]] = -inf
    rows[5] = np.linspace(-3, 3, 17)
    return rows.astype(dtype)


@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
def test_softmax_family_non_finite_rows(backend, dtype, name):
    # NaN or +inf in a row, or a row all -inf: the whole row NaN (as the oracle and torch);
    # a -inf among finite logits: probability 0 (log: -inf).
    # The backward from that y: NaN rows stay NaN; exp(-inf) = 0 for log_softmax.
    x = _non_finite_rows(dtype)
    dy = rand(np.random.default_rng(3), x.shape, dtype)
    with np.errstate(invalid="ignore"):
        want = getattr(ref, name)(x, 1)
        want_dx = getattr(ref, name + "_backward")(dy, x, 1)
    assert np.isnan(want[:4]).all() and not np.isnan(want[4:]).any()
    y = getattr(ops, name)(x, 1, backend=backend)
    assert_close(y, want, dtype, "y")
    assert_close(getattr(ops, name + "_backward")(dy, dim=1, y=y, backend=backend), want_dx, dtype, "dx from y")


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


def test_cross_entropy_non_finite_logits(backend, dtype):
    # A NaN logit, a +inf one, a row all -inf: NaN loss and dlogits row (as the oracle and
    # torch); a -inf logit elsewhere in a row is a probability of 0. Row by row, since the
    # mean of a batch with one NaN row is NaN.
    rows = _non_finite_rows(dtype)
    for i in range(len(rows)):
        z, lab = rows[i:i + 1], np.array([2])
        with np.errstate(invalid="ignore"):
            want, want_g = ref.cross_entropy(z, lab), ref.cross_entropy_backward(1.0, z, lab)
        assert np.isnan(want) == (i < 4)
        assert_close(ops.cross_entropy(z, lab, backend=backend), want, dtype, f"loss, row {i}")
        assert_close(ops.cross_entropy_backward(1.0, z, lab, backend=backend), want_g, dtype, f"dlogits, row {i}")


@pytest.mark.parametrize("bad", [-1, 5, 2**40])
def test_cross_entropy_kernels_count_bad_labels(backend, bad):
    # The host kernels never index by a bad label: they count it and give NaN for its row
    # (ops raises on the count). 2**40 would read far outside the logits if indexed.
    name = backend.partition(":")[0]
    k = _backend.resolve(name, False, "test")[1]
    logits = rand(np.random.default_rng(2), (4, 5), np.float32)
    labels = np.array([0, bad, 4, bad], np.int64)
    mean = np.empty((), np.float32)
    assert k.cross_entropy_mean(mean, logits, labels) == 2
    assert np.isnan(mean)
    g = np.zeros_like(logits)
    assert k.cross_entropy_backward(g, logits, labels, 0.25) == 2
    assert np.isnan(g[[1, 3]]).all()
    good = np.array([0, 2])
    assert_close(g[[0, 2]], ref.cross_entropy_backward(1.0, logits[[0, 2]], labels[[0, 2]]) / 2, np.float32,
                 "dlogits of the good rows")
    assert k.cross_entropy_mean(mean, logits[good], labels[good]) == 0


def test_cross_entropy_int32_labels_match_int64(backend):
    rng = np.random.default_rng(4)
    logits = rand(rng, (9, 6), np.float64)
    lab = rng.integers(0, 6, 9)
    a = ops.cross_entropy(logits, lab.astype(np.int32), backend=backend)
    b = ops.cross_entropy(logits, lab, backend=backend)
    assert a == b
