"""rnn (the fused Elman RNN over a sequence) forward and backward, every backend, dtype and
activation, against the float64 oracle; plus determinism, out=, the composed per-step path
the CUDA backend uses, and bad input."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import assert_close, rand

from layerforge import _backend, ops
from layerforge import _reference as ref

ACTIVATIONS = ["tanh", "sigmoid", "relu", "linear"]

# (N, T, I, H, bias, h0)
RNN = [
    (1, 1, 1, 1, True, False),        # smallest
    (0, 3, 4, 5, True, True),         # empty batch
    (2, 0, 3, 4, True, True),         # empty sequence
    (3, 1, 5, 7, False, True),        # one step, no bias, initial state
    (2, 5, 1, 33, True, False),       # one feature, H off the tile multiples
    (5, 4, 6, 130, True, True),       # H just over 4 tiles
    (33, 3, 9, 7, False, False),      # N off the row-panel multiples (threads split rows)
    (32, 28, 28, 128, True, False),   # the documents' SimpleRNN(128) over 28 rows of 28
    (17, 3, 300, 20, True, True),     # I > the GEMM's K block
    (3, 3, 5, 260, True, True),       # H > the GEMM's K block (recurrent K blocked)
    (4, 3, 0, 6, True, True),         # no input features
    (2, 3, 4, 0, True, True),         # no hidden units
]
IDS = [f"N{c[0]}-T{c[1]}-I{c[2]}-H{c[3]}{'-b' if c[4] else ''}{'-h0' if c[5] else ''}" for c in RNN]


def _case(c, dtype, seed=0):
    """Weights scaled like Keras's initialisers, so pre-activations are O(1) and tanh/sigmoid
    are not saturated (where every error would hide), and relu/linear do not blow up."""
    n, t, i, h, bias, with_h0 = c
    rng = np.random.default_rng(seed)
    x = rand(rng, (n, t, i), dtype)
    w_xh = (rng.standard_normal((h, i)) / np.sqrt(max(i, 1))).astype(dtype)
    w_hh = (rng.standard_normal((h, h)) / np.sqrt(max(h, 1))).astype(dtype)
    b = rand(rng, (h,), dtype) if bias else None
    h0 = rand(rng, (n, h), dtype) if with_h0 else None
    return x, w_xh, w_hh, b, h0


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("c", RNN, ids=IDS)
def test_rnn_forward(backend, dtype, c, activation):
    x, w_xh, w_hh, b, h0 = _case(c, dtype)
    hs = ops.rnn(x, w_xh, w_hh, b, h0, activation, backend=backend)
    assert_close(hs, ref.rnn(x, w_xh, w_hh, b, h0, activation), dtype, "hs")


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("c", RNN, ids=IDS)
def test_rnn_backward(backend, dtype, c, activation):
    x, w_xh, w_hh, b, h0 = _case(c, dtype)
    dhs = rand(np.random.default_rng(1), x.shape[:2] + (w_hh.shape[0],), dtype)
    hs = ops.rnn(x, w_xh, w_hh, b, h0, activation, backend=backend)
    got = ops.rnn_backward(dhs, x, w_xh, w_hh, b, h0, activation, hs=hs, backend=backend)
    want = ref.rnn_backward(dhs, x, w_xh, w_hh, b, h0, activation)
    for name, g, r in zip(("dx", "dw_xh", "dw_hh", "db", "dh0"), got, want):
        if r is None:
            assert g is None, name
        else:
            assert_close(g, r, dtype, name)


@pytest.mark.parametrize("activation", ["tanh", "sigmoid"])
def test_rnn_backward_last_step_loss(backend, dtype, activation):
    """A loss on the last state only (the SimpleRNN classifier): dhs is zero elsewhere."""
    x, w_xh, w_hh, b, h0 = _case((6, 9, 5, 24, True, False), dtype)
    dhs = np.zeros((6, 9, 24), dtype)
    dhs[:, -1] = rand(np.random.default_rng(2), (6, 24), dtype)
    got = ops.rnn_backward(dhs, x, w_xh, w_hh, b, None, activation, backend=backend)  # hs recomputed
    for name, g, r in zip(("dx", "dw_xh", "dw_hh", "db"), got, ref.rnn_backward(dhs, x, w_xh, w_hh, b, None, activation)):
        assert_close(g, r, dtype, name)
    assert got[4] is None


def test_rnn_deterministic_across_threads():
    """Bitwise the same results for 1 and 2 threads, and from call to call."""
    c = _backend.load("cpp")
    if c is None:
        pytest.skip("the C++ backend is not built")
    x, w_xh, w_hh, b, h0 = _case((37, 6, 11, 45, True, True), np.float32)
    dhs = rand(np.random.default_rng(3), (37, 6, 45), np.float32)
    old = c.get_num_threads()
    results = []
    try:
        for threads in (1, 2, 2):
            c.set_num_threads(threads)
            hs = ops.rnn(x, w_xh, w_hh, b, h0, backend="cpp")
            results.append([hs, *ops.rnn_backward(dhs, x, w_xh, w_hh, b, h0, hs=hs, backend="cpp")])
    finally:
        c.set_num_threads(old)
    for other in results[1:]:
        for a, o in zip(results[0], other):
            np.testing.assert_array_equal(a, o)


def test_rnn_out_and_noncontiguous(backend):
    x, w_xh, w_hh, b, h0 = _case((4, 5, 6, 9, True, True), np.float64)
    hs = np.empty((4, 5, 9))
    assert ops.rnn(x, w_xh, w_hh, b, h0, backend=backend, out=hs) is hs
    xt = np.asfortranarray(x)
    np.testing.assert_array_equal(ops.rnn(xt, w_xh.T.copy().T, w_hh, b, h0, backend=backend), hs)
    dhs = rand(np.random.default_rng(4), hs.shape, np.float64)
    outs = (np.empty_like(x), np.empty_like(w_xh), np.empty_like(w_hh), np.empty_like(b), np.empty_like(h0))
    got = ops.rnn_backward(dhs, x, w_xh, w_hh, b, h0, hs=hs, backend=backend, out=outs)
    for o, g, r in zip(outs, got, ops.rnn_backward(dhs, x, w_xh, w_hh, b, h0, backend=backend)):
        assert g is o
        np.testing.assert_array_equal(g, r)


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_rnn_nan_propagates(backend, activation):
    x, w_xh, w_hh, b, h0 = _case((3, 4, 5, 17, True, False), np.float32)
    x[1, 1, 2] = np.nan
    hs = ops.rnn(x, w_xh, w_hh, b, h0, activation, backend=backend)
    assert np.isnan(hs[1, 1:]).all() and not np.isnan(hs[[0, 2]]).any() and not np.isnan(hs[1, 0]).any()


@pytest.mark.parametrize("backend_name", ["cpp", "numba"])
@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("c", [RNN[3], RNN[5], RNN[2], RNN[10]], ids=[IDS[3], IDS[5], IDS[2], IDS[10]])
def test_rnn_composed_path(backend_name, activation, c):
    """The per-step composition of linear and the activations that ops.rnn uses where a backend
    has no fused kernel (CUDA today), run here on a CPU backend against the oracle."""
    if _backend.load(backend_name) is None:
        pytest.skip(f"backend {backend_name} unavailable")
    x, w_xh, w_hh, b, h0 = _case(c, np.float64)
    n, t, _ = x.shape
    h = w_hh.shape[0]
    hs = np.empty((n, t, h))
    if hs.size:
        ops._rnn_forward_composed(hs, x, w_xh, w_hh, b, h0, activation, backend_name)
    assert_close(hs, ref.rnn(x, w_xh, w_hh, b, h0, activation), np.float64, "hs")
    if hs.size == 0:
        return
    dhs = rand(np.random.default_rng(5), hs.shape, np.float64)
    outs = [np.empty_like(x), np.empty_like(w_xh), np.empty_like(w_hh),
            np.empty_like(b) if b is not None else None, np.empty_like(h0) if h0 is not None else None]
    ops._rnn_backward_composed(*outs, dhs, x, w_xh, w_hh, h0, hs, activation, backend_name)
    for name, g, r in zip(("dx", "dw_xh", "dw_hh", "db", "dh0"), outs, ref.rnn_backward(dhs, x, w_xh, w_hh, b, h0, activation)):
        if r is None:
            assert g is None
        else:
            assert_close(g, r, np.float64, name)


def test_rnn_matches_torch():
    torch = pytest.importorskip("torch")
    x, w_xh, w_hh, b, h0 = _case((4, 7, 5, 12, True, True), np.float64)
    m = torch.nn.RNN(5, 12, batch_first=True, dtype=torch.float64)
    with torch.no_grad():
        m.weight_ih_l0.copy_(torch.from_numpy(w_xh))
        m.weight_hh_l0.copy_(torch.from_numpy(w_hh))
        m.bias_ih_l0.copy_(torch.from_numpy(b))
        m.bias_hh_l0.zero_()
    xt, h0t = torch.from_numpy(x).requires_grad_(True), torch.from_numpy(h0)[None].requires_grad_(True)
    out, _ = m(xt, h0t)
    dhs = np.random.default_rng(6).standard_normal(out.shape)
    out.backward(torch.from_numpy(dhs))
    hs = ops.rnn(x, w_xh, w_hh, b, h0)
    np.testing.assert_allclose(hs, out.detach().numpy(), rtol=1e-12, atol=1e-12)
    dx, dw_xh, dw_hh, db, dh0 = ops.rnn_backward(dhs, x, w_xh, w_hh, b, h0, hs=hs)
    for ours, theirs in [(dx, xt.grad), (dw_xh, m.weight_ih_l0.grad), (dw_hh, m.weight_hh_l0.grad),
                         (db, m.bias_ih_l0.grad), (dh0, h0t.grad[0])]:
        np.testing.assert_allclose(ours, theirs.numpy(), rtol=1e-10, atol=1e-12)


# ---------------------------------------------------------------------------- bad input

def _good():
    return _case((2, 3, 4, 5, True, True), np.float32)


@pytest.mark.parametrize("mutate,err,match", [
    (lambda a: a.update(x=a["x"][0]), ValueError, r"rnn: x must be 3-D, got shape \(3, 4\)"),
    (lambda a: a.update(w_xh=a["w_xh"][:, :3]), ValueError, r"w_xh must have shape \(hidden, features\) = \(5, 4\).*got \(5, 3\)"),
    (lambda a: a.update(w_hh=a["w_hh"][:4]), ValueError, r"w_hh must be square \(hidden, hidden\), got shape \(4, 5\)"),
    (lambda a: a.update(b=a["b"][:4]), ValueError, r"b must have shape \(5,\), got \(4,\)"),
    (lambda a: a.update(h0=a["h0"][:1]), ValueError, r"h0 must have shape \(2, 5\), got \(1, 5\)"),
    (lambda a: a.update(w_hh=a["w_hh"].astype(np.float64)), TypeError, r"one dtype; x is float32 but w_hh is float64"),
    (lambda a: a.update(x=a["x"].astype(np.int32)), TypeError, r"x must be float32 or float64, got dtype int32"),
    (lambda a: a.update(activation="softmax"), ValueError, r"activation must be one of .*got 'softmax'"),
    (lambda a: a.update(activation=3), TypeError, r"activation must be one of .*got int 3"),
    (lambda a: a.update(h0=np.zeros((2, 5, 1), np.float32)), ValueError, r"h0 must be 2-D"),
])
def test_rnn_bad_input(backend, mutate, err, match):
    x, w_xh, w_hh, b, h0 = _good()
    args = dict(x=x, w_xh=w_xh, w_hh=w_hh, b=b, h0=h0, activation="tanh")
    mutate(args)
    with pytest.raises(err, match=match):
        ops.rnn(**args, backend=backend)
    dhs = np.zeros((2, 3, 5), np.float32)
    with pytest.raises(err, match=match.replace("rnn:", "rnn_backward:")):
        ops.rnn_backward(dhs, **args, backend=backend)


def test_rnn_backward_bad_gradient_shapes(backend):
    x, w_xh, w_hh, b, h0 = _good()
    with pytest.raises(ValueError, match=r"rnn_backward: dhs must have shape \(2, 3, 5\), got \(2, 3, 4\)"):
        ops.rnn_backward(np.zeros((2, 3, 4), np.float32), x, w_xh, w_hh, b, h0, backend=backend)
    with pytest.raises(ValueError, match=r"rnn_backward: hs must have shape \(2, 3, 5\), got \(2, 2, 5\)"):
        ops.rnn_backward(np.zeros((2, 3, 5), np.float32), x, w_xh, w_hh, b, h0, hs=np.zeros((2, 2, 5), np.float32),
                         backend=backend)
    with pytest.raises(TypeError, match=r"out must be a tuple of 5 arrays"):
        ops.rnn_backward(np.zeros((2, 3, 5), np.float32), x, w_xh, w_hh, b, h0, backend=backend, out=(None,) * 3)
    with pytest.raises(ValueError, match=r"out\[2\] must have shape \(5, 5\) and dtype float32"):
        ops.rnn_backward(np.zeros((2, 3, 5), np.float32), x, w_xh, w_hh, b, h0, backend=backend,
                         out=(None, None, np.empty((5, 4), np.float32), None, None))


def test_rnn_kernels_recheck_their_arguments():
    """Direct calls of the compiled kernels with bad arguments raise instead of crashing."""
    c = _backend.load("cpp")
    if c is None:
        pytest.skip("the C++ backend is not built")
    x, w_xh, w_hh, b, h0 = _good()
    hs = np.empty((2, 3, 5), np.float32)
    with pytest.raises(ValueError, match=r"rnn_forward: hs: expected shape \(2, 3, 5\), got \(2, 3, 4\)"):
        c.rnn_forward(np.empty((2, 3, 4), np.float32), x, w_xh, w_hh, b, h0, "tanh")
    with pytest.raises(ValueError, match=r"rnn_forward: w_xh: expected shape \(5, 4\)"):
        c.rnn_forward(hs, x, w_xh[:, :3].copy(), w_hh, b, h0, "tanh")
    with pytest.raises(ValueError, match=r"rnn_forward: activation: expected 'tanh'"):
        c.rnn_forward(hs, x, w_xh, w_hh, b, h0, "gelu")
    with pytest.raises(TypeError, match=r"rnn_forward: w_hh: expected dtype float32, got float64"):
        c.rnn_forward(hs, x, w_xh, w_hh.astype(np.float64), b, h0, "tanh")
    with pytest.raises(ValueError, match=r"rnn_forward: x: expected a C-contiguous array"):
        c.rnn_forward(hs, np.asfortranarray(x), w_xh, w_hh, b, h0, "tanh")
    dhs = np.zeros((2, 3, 5), np.float32)
    with pytest.raises(ValueError, match=r"rnn_backward: dh0: expected shape \(2, 5\), got \(5, 2\)"):
        c.rnn_backward(None, None, None, None, np.empty((5, 2), np.float32), dhs, x, w_xh, w_hh, h0, hs, "tanh")
    with pytest.raises(ValueError, match=r"rnn_backward: dhs: expected shape \(2, 3, 5\)"):
        c.rnn_backward(None, None, None, None, None, dhs[:, :2].copy(), x, w_xh, w_hh, h0, hs, "tanh")


# ---------------------------------------------------------------------------- the layer

@pytest.mark.parametrize("return_sequences", [False, True])
@pytest.mark.parametrize("activation", ["tanh", "sigmoid"])
def test_simple_rnn_layer_against_the_oracle(backend, activation, return_sequences):
    from layerforge.layers import SimpleRNN

    layer = SimpleRNN(9, activation=activation, return_sequences=return_sequences)
    layer.backend = backend
    layer.build((6, 4), np.random.default_rng(7))
    assert [p.shape for p in layer.params] == [(9, 4), (9, 9), (9,)] and layer.count_params() == 9 * 4 + 81 + 9
    rng = np.random.default_rng(8)
    x = rand(rng, (5, 6, 4), np.float32)
    w_xh, w_hh, b = layer.params
    y = layer.forward(x, training=True)
    hs = ref.rnn(x, w_xh, w_hh, b, None, activation)
    assert_close(y, hs if return_sequences else hs[:, -1], np.float32, "y")
    assert_close(layer.forward(x), hs if return_sequences else hs[:, -1], np.float32, "y (inference)")
    dy = rand(rng, y.shape, np.float32)
    dhs = dy if return_sequences else np.concatenate([np.zeros((5, 5, 9)), dy[:, None]], axis=1)
    dx = layer.backward(dy)
    want = ref.rnn_backward(dhs, x, w_xh, w_hh, b, None, activation)
    assert_close(dx, want[0], np.float32, "dx")
    for name, g, r in zip(("dw_xh", "dw_hh", "db"), layer.grads, want[1:4]):
        assert_close(g, r, np.float32, name)
