"""The Numba backend's spinning helper (``_numba_spin``): every op it serves gives the same
bits whether the helper ran the second half of the call or the caller took it back, on
uneven halves, in float32 and float64, and a bad max-pool index in the helper's half still
raises."""

from __future__ import annotations

import time

import numpy as np
import pytest
from conftest import rand, threaded_numba

from layerforge import ops

# The helper compiles its loop (every served kernel, both dtypes) on first use, in the
# background: minutes at most on a slow machine, then cached on disk.
_WARM_S = 300.0


def _calls(dtype):
    """(name, call) for every kernel the helper serves; each call returns its outputs."""
    rng = np.random.default_rng(21)
    out = []
    for shape in [(1, 7, 26, 26), (3, 3, 13, 13), (1, 5, 9, 40)]:  # planes too big for the in-register kernels
        x = rand(rng, shape, dtype)
        x.reshape(-1)[::17] = np.nan
        dy = rand(rng, shape[:2] + (shape[2] // 2, shape[3] // 2), dtype)
        y, idx = ops.max_pool2d(x, 2, return_indices=True, backend="numba")
        out += [
            (f"max+indices {shape}", lambda x=x: ops.max_pool2d(x, 2, return_indices=True, backend="numba")),
            (f"max {shape}", lambda x=x: [ops.max_pool2d(x, 2, backend="numba")]),
            (f"max backward {shape}", lambda x=x, dy=dy, idx=idx: [ops.max_pool2d_backward(dy, x, 2, indices=idx, backend="numba")]),
            (f"avg {shape}", lambda x=x: [ops.avg_pool2d(x, 2, backend="numba")]),
            (f"avg backward {shape}", lambda x=x, dy=dy: [ops.avg_pool2d_backward(dy, x, 2, backend="numba")]),
        ]
    a = rand(rng, (7, 143), dtype)  # 1001 elements: halves of 500 and 501
    g = rand(rng, a.shape, dtype)
    s, t = ops.sigmoid(a, backend="numba"), ops.tanh(a, backend="numba")
    out += [
        ("relu", lambda: [ops.relu(a, backend="numba")]),
        ("relu backward", lambda: [ops.relu_backward(g, a, backend="numba")]),
        ("sigmoid backward", lambda: [ops.sigmoid_backward(g, y=s, backend="numba")]),
        ("tanh backward", lambda: [ops.tanh_backward(g, y=t, backend="numba")]),
    ]
    return out


@pytest.fixture
def spin_numba(monkeypatch):
    """The Numba backend with every served call split in two (2 threads)."""
    nb = threaded_numba()
    monkeypatch.setattr(nb, "_SPLIT2", 0)
    monkeypatch.setattr(nb, "_POOL_PARALLEL", 1 << 60)
    monkeypatch.setattr(nb, "_ELTWISE_PARALLEL", 1 << 60)
    saved = nb.get_num_threads()
    nb.set_num_threads(2)
    yield nb
    nb.set_num_threads(saved)


def _one_thread(nb, call):
    saved = nb.get_num_threads()
    nb.set_num_threads(1)
    try:
        return call()
    finally:
        nb.set_num_threads(2)


def _parked(nb) -> None:
    """Parks the helper (and waits until it is asleep)."""
    from layerforge import _numba_spin as spin

    nb._spinner.stop()
    end = time.monotonic() + _WARM_S
    while nb._spinner._thread is not None and nb._spinner.ctl[spin.PARKED] != 1:
        assert time.monotonic() < end, "the spinning helper did not park"
        time.sleep(0.001)


def _same(got, want, what):
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g.dtype == w.dtype and g.shape == w.shape, what
        assert np.array_equal(g.view(np.uint8), w.view(np.uint8)), f"{what}: bits differ from one thread"


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_spinning_helper_same_bits_taken_back_or_served(spin_numba, dtype):
    nb = spin_numba
    calls = _calls(dtype)
    want = {name: _one_thread(nb, call) for name, call in calls}
    # Taken back: the helper is asleep when each call is posted, so the caller runs both halves.
    for name, call in calls:
        _parked(nb)
        before = nb._spinner.served
        _same(call(), want[name], f"{name} (taken back)")
        assert nb._spinner.served == before, f"{name}: a parked helper served the call"
    # Served: once the helper spins (its loop compiled), it takes the second halves.
    end = time.monotonic() + _WARM_S
    for name, call in calls:
        before = nb._spinner.served
        while nb._spinner.served == before:
            assert time.monotonic() < end, f"{name}: the spinning helper served no call"
            _same(call(), want[name], f"{name} (served or taken back)")


def test_spinning_helper_counts_a_bad_index_in_its_half(spin_numba):
    nb = spin_numba
    x = rand(np.random.default_rng(22), (1, 5, 26, 26), np.float32)
    _, idx = ops.max_pool2d(x, 2, return_indices=True, backend="numba")
    idx[0, -1, -1, -1] = 26 * 26  # the last plane: the helper's half
    dy = np.ones(idx.shape, np.float32)
    end = time.monotonic() + _WARM_S
    before = nb._spinner.served
    while nb._spinner.served == before:
        assert time.monotonic() < end, "the spinning helper served no call"
        with pytest.raises(ValueError, match="indices must lie in"):
            ops.max_pool2d_backward(dy, x, 2, indices=idx, backend="numba")
