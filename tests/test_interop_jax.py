"""layerforge.interop.jax: every op's vjp against the float64 oracle, a small CNN's and a small
RNN classifier's jax.grad (eager and under jax.jit) against the oracle's chained backward, vmap,
trace-time validation, and the README/docs JAX code block.

Skipped when JAX is not installed. float64 cases turn on jax_enable_x64 only inside the test
(the ``precision`` fixture), so other tests keep JAX's float32 default. GPU arrays are not
exercised (no GPU in CI).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
from conftest import assert_close

jax = pytest.importorskip("jax")
lfj = pytest.importorskip("layerforge.interop.jax")
import jax.numpy as jnp  # noqa: E402  (after the skip: jax is present from here on)

from layerforge import _reference as ref  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DOC_HEADING = "## Using layerforge from"


@pytest.fixture(params=[np.float32, np.float64], ids=["f32", "f64"])
def precision(request):
    """The dtype of the test's arrays; float64 runs with jax_enable_x64 on, for this test only."""
    old = bool(jax.config.jax_enable_x64)
    jax.config.update("jax_enable_x64", request.param == np.float64)
    try:
        yield request.param
    finally:
        jax.config.update("jax_enable_x64", old)


@pytest.fixture(params=["eager", "jit"])
def mode(request):
    return request.param


def _rand(rng: np.random.Generator, shape: tuple[int, ...], dtype: Any) -> Any:
    return rng.standard_normal(shape).astype(dtype)


def _vjp(fn: Callable[..., Any], args: tuple[Any, ...], dy: Any) -> tuple[Any, Any]:
    y, pullback = jax.vjp(fn, *args)
    return y, pullback(dy)


_vjp_jit = jax.jit(_vjp, static_argnums=0)


# ---------------------------------------------------------------------------- each op's vjp

def _cases() -> list[Any]:
    """(lfj function of float arrays, oracle forward, oracle backward(dy, *args) -> grads, shapes)."""
    lab6, lab1 = np.array([0, 4, 2, 1, 4, 3]), np.array([2])
    return [
        pytest.param(lambda x, w, b: lfj.conv2d(x, w, b, 1, 1), lambda x, w, b: ref.conv2d(x, w, b, 1, 1),
                     lambda dy, x, w, b: ref.conv2d_backward(dy, x, w, b, 1, 1),
                     [(2, 3, 7, 6), (4, 3, 3, 3), (4,)], id="conv2d"),
        pytest.param(lambda x, w: lfj.conv2d(x, w, padding="same"), lambda x, w: ref.conv2d(x, w, None, 1, "same"),
                     lambda dy, x, w: ref.conv2d_backward(dy, x, w, None, 1, "same")[:2],
                     [(1, 2, 8, 7), (3, 2, 4, 4)], id="conv2d_same_even_kernel"),
        pytest.param(lambda x, w: lfj.conv2d(x, w, stride=(2, 1), dilation=2),
                     lambda x, w: ref.conv2d(x, w, None, (2, 1), 0, 2),
                     lambda dy, x, w: ref.conv2d_backward(dy, x, w, None, (2, 1), 0, 2)[:2],
                     [(2, 2, 9, 8), (3, 2, 3, 2)], id="conv2d_stride_dilation"),
        pytest.param(lambda x: lfj.max_pool2d(x, 3, 2, 1), lambda x: ref.max_pool2d(x, 3, 2, 1),
                     lambda dy, x: (ref.max_pool2d_backward(dy, x, 3, 2, 1),), [(2, 3, 7, 9)], id="max_pool2d_overlap"),
        pytest.param(lambda x: lfj.max_pool2d(x, 2), lambda x: ref.max_pool2d(x, 2),
                     lambda dy, x: (ref.max_pool2d_backward(dy, x, 2),), [(1, 2, 7, 6)], id="max_pool2d"),
        pytest.param(lambda x: lfj.avg_pool2d(x, 3, 2, 1, count_include_pad=False),
                     lambda x: ref.avg_pool2d(x, 3, 2, 1, False),
                     lambda dy, x: (ref.avg_pool2d_backward(dy, x, 3, 2, 1, False),), [(2, 3, 7, 9)], id="avg_pool2d"),
        pytest.param(lambda x: lfj.avg_pool2d(x, (2, 3)), lambda x: ref.avg_pool2d(x, (2, 3)),
                     lambda dy, x: (ref.avg_pool2d_backward(dy, x, (2, 3)),), [(1, 2, 6, 6)], id="avg_pool2d_rect"),
        pytest.param(lfj.linear, ref.linear, ref.linear_backward, [(2, 3, 5), (4, 5), (4,)], id="linear"),
        pytest.param(lambda x, w: lfj.linear(x, w), lambda x, w: ref.linear(x, w),
                     lambda dy, x, w: ref.linear_backward(dy, x, w)[:2], [(6, 7), (3, 7)], id="linear_nobias"),
        pytest.param(lambda x: lfj.softmax(x, 1), lambda x: ref.softmax(x, 1),
                     lambda dy, x: (ref.softmax_backward(dy, x, 1),), [(3, 5, 7)], id="softmax"),
        pytest.param(lambda x: lfj.softmax(x, -1), lambda x: ref.softmax(x, -1),
                     lambda dy, x: (ref.softmax_backward(dy, x, -1),), [(4, 6)], id="softmax_last"),
        pytest.param(lambda x: lfj.log_softmax(x, 0), lambda x: ref.log_softmax(x, 0),
                     lambda dy, x: (ref.log_softmax_backward(dy, x, 0),), [(4, 6)], id="log_softmax"),
        pytest.param(lambda x: lfj.log_softmax(x, 2), lambda x: ref.log_softmax(x, 2),
                     lambda dy, x: (ref.log_softmax_backward(dy, x, 2),), [(2, 3, 5)], id="log_softmax_3d"),
        pytest.param(lfj.relu, ref.relu, lambda dy, x: (ref.relu_backward(dy, x),), [(3, 4, 5)], id="relu"),
        pytest.param(lfj.sigmoid, ref.sigmoid, lambda dy, x: (ref.sigmoid_backward(dy, x),), [(3, 4, 5)], id="sigmoid"),
        pytest.param(lfj.tanh, ref.tanh, lambda dy, x: (ref.tanh_backward(dy, x),), [(7,)], id="tanh"),
        pytest.param(lambda z: lfj.cross_entropy(z, lab6), lambda z: np.array(ref.cross_entropy(z, lab6)),
                     lambda dy, z: (ref.cross_entropy_backward(float(dy), z, lab6),), [(6, 5)], id="cross_entropy"),
        pytest.param(lambda z: lfj.cross_entropy(z, lab1), lambda z: np.array(ref.cross_entropy(z, lab1)),
                     lambda dy, z: (ref.cross_entropy_backward(float(dy), z, lab1),), [(1, 3)], id="cross_entropy_n1"),
        pytest.param(lfj.rnn, ref.rnn, ref.rnn_backward, [(3, 5, 4), (6, 4), (6, 6), (6,), (3, 6)], id="rnn_tanh"),
        pytest.param(lambda x, u, w: lfj.rnn(x, u, w, activation="relu"),
                     lambda x, u, w: ref.rnn(x, u, w, activation="relu"),
                     lambda dy, x, u, w: ref.rnn_backward(dy, x, u, w, activation="relu")[:3],
                     [(2, 4, 3), (5, 3), (5, 5)], id="rnn_relu_nobias_noh0"),
        pytest.param(lambda x, u, w, b: lfj.rnn(x, u, w, b, activation="sigmoid"),
                     lambda x, u, w, b: ref.rnn(x, u, w, b, activation="sigmoid"),
                     lambda dy, x, u, w, b: ref.rnn_backward(dy, x, u, w, b, activation="sigmoid")[:4],
                     [(1, 6, 2), (3, 2), (3, 3), (3,)], id="rnn_sigmoid_n1"),
    ]


@pytest.mark.parametrize("fn, fwd, bwd, shapes", _cases())
def test_vjp_matches_oracle(fn, fwd, bwd, shapes, precision, mode):
    rng = np.random.default_rng(0)
    args = tuple(_rand(rng, s, precision) for s in shapes)
    y_ref = fwd(*args)
    dy = _rand(rng, np.shape(y_ref), precision)
    y, grads = (_vjp if mode == "eager" else _vjp_jit)(fn, tuple(jnp.asarray(a) for a in args), jnp.asarray(dy))
    assert_close(np.asarray(y), y_ref, precision, "y")
    expected = bwd(dy, *args)
    assert len(grads) == len(expected)
    for i, (g, e) in enumerate(zip(grads, expected)):
        assert_close(np.asarray(g), e, precision, f"grad {i}")


# ---------------------------------------------------------------------------- a small CNN, end to end

def _cnn_loss(x, w, b, v, c, labels):
    h = lfj.relu(lfj.conv2d(x, w, b))                   # (N, 4, 7, 7)
    h = lfj.max_pool2d(h, 2).reshape(x.shape[0], -1)    # (N, 36)
    return lfj.cross_entropy(lfj.linear(h, v, c), labels)


def _cnn_oracle(x, w, b, v, c, labels):
    """The same composition in the float64 oracle: (loss, (dx, dw, db, dv, dc))."""
    z1 = ref.conv2d(x, w, b)
    a1 = ref.relu(z1)
    p1 = ref.max_pool2d(a1, 2)
    f = p1.reshape(x.shape[0], -1)
    z2 = ref.linear(f, v, c)
    loss = ref.cross_entropy(z2, labels)
    df, dv, dc = ref.linear_backward(ref.cross_entropy_backward(1.0, z2, labels), f, v, c)
    dz1 = ref.relu_backward(ref.max_pool2d_backward(df.reshape(p1.shape), a1, 2), z1)
    dx, dw, db = ref.conv2d_backward(dz1, x, w, b)
    return loss, (dx, dw, db, dv, dc)


def test_cnn_grad_matches_oracle(precision, mode):
    rng = np.random.default_rng(3)
    x = _rand(rng, (3, 1, 9, 9), precision)
    params = (_rand(rng, (4, 1, 3, 3), precision), _rand(rng, (4,), precision),
              _rand(rng, (5, 36), precision), _rand(rng, (5,), precision))
    labels = np.array([4, 0, 2])
    grad_fn = jax.value_and_grad(_cnn_loss, argnums=(0, 1, 2, 3, 4))
    if mode == "jit":
        grad_fn = jax.jit(grad_fn)
    loss, grads = grad_fn(jnp.asarray(x), *map(jnp.asarray, params), jnp.asarray(labels))
    loss_ref, grads_ref = _cnn_oracle(x, *params, labels)
    assert_close(np.asarray(loss), np.array(loss_ref), precision, "loss")
    for name, g, e in zip(("x", "w", "b", "v", "c"), grads, grads_ref):
        assert_close(np.asarray(g), e, precision, f"d{name}")


# ---------------------------------------------------------------------------- an RNN classifier, end to end

def _rnn_loss(x, w_xh, w_hh, b, h0, v, c, labels):
    hs = lfj.rnn(x, w_xh, w_hh, b, h0)                  # (N, T, H)
    return lfj.cross_entropy(lfj.linear(hs[:, -1], v, c), labels)


def _rnn_oracle(x, w_xh, w_hh, b, h0, v, c, labels):
    """The same composition in the float64 oracle: (loss, (dx, dw_xh, dw_hh, db, dh0, dv, dc))."""
    hs = ref.rnn(x, w_xh, w_hh, b, h0)
    z = ref.linear(hs[:, -1], v, c)
    loss = ref.cross_entropy(z, labels)
    dh, dv, dc = ref.linear_backward(ref.cross_entropy_backward(1.0, z, labels), hs[:, -1], v, c)
    dhs = np.zeros(hs.shape)
    dhs[:, -1] = dh  # the loss sees only the last state
    return loss, (*ref.rnn_backward(dhs, x, w_xh, w_hh, b, h0), dv, dc)


def test_rnn_grad_matches_oracle(precision, mode):
    rng = np.random.default_rng(6)
    n, t, i, h = 4, 7, 5, 6
    args = (_rand(rng, (n, t, i), precision), _rand(rng, (h, i), precision),
            (0.4 * _rand(rng, (h, h), precision)).astype(precision), _rand(rng, (h,), precision),
            _rand(rng, (n, h), precision), _rand(rng, (3, h), precision), _rand(rng, (3,), precision))
    labels = np.array([2, 0, 1, 2])
    grad_fn = jax.value_and_grad(_rnn_loss, argnums=tuple(range(7)))
    if mode == "jit":
        grad_fn = jax.jit(grad_fn)
    loss, grads = grad_fn(*map(jnp.asarray, args), jnp.asarray(labels))
    loss_ref, grads_ref = _rnn_oracle(*args, labels)
    assert_close(np.asarray(loss), np.array(loss_ref), precision, "loss")
    assert len(grads) == len(grads_ref)
    for name, g, e in zip(("x", "w_xh", "w_hh", "b", "h0", "v", "c"), grads, grads_ref):
        assert_close(np.asarray(g), e, precision, f"d{name}")


# ---------------------------------------------------------------------------- transforms and plumbing

def test_vmap_runs_each_element_through_the_callback():
    rng = np.random.default_rng(4)
    xs = jnp.asarray(_rand(rng, (3, 2, 5), np.float32))
    w = jnp.asarray(_rand(rng, (4, 5), np.float32))
    ys = jax.vmap(lambda x: lfj.softmax(lfj.linear(x, w), 1))(xs)
    assert_close(np.asarray(ys), ref.softmax(ref.linear(np.asarray(xs), np.asarray(w)), 2), np.float32, "vmap")
    gs = jax.vmap(jax.grad(lambda x: lfj.tanh(x).sum()))(xs)
    assert_close(np.asarray(gs), ref.tanh_backward(np.ones(xs.shape), np.asarray(xs)), np.float32, "vmap grad")
    seqs = jnp.asarray(_rand(rng, (3, 2, 4, 5), np.float32))  # a batch of (N, T, I) sequences
    u = jnp.asarray(0.4 * _rand(rng, (4, 4), np.float32))
    hs = jax.vmap(lambda x: lfj.rnn(x, w, u))(seqs)
    assert_close(np.asarray(hs), np.stack([ref.rnn(np.asarray(x), np.asarray(w), np.asarray(u)) for x in seqs]),
                 np.float32, "vmap rnn")


def test_max_pool2d_indices_under_jit():
    x = jnp.asarray(np.random.default_rng(5).standard_normal((2, 3, 6, 6)).astype(np.float32))
    y, idx = jax.jit(lambda x: lfj.max_pool2d(x, 2, return_indices=True))(x)
    y_ref, idx_ref = ref.max_pool2d_with_indices(np.asarray(x), 2)
    assert_close(np.asarray(y), y_ref, np.float32, "y")
    np.testing.assert_array_equal(np.asarray(idx), idx_ref)


def test_eager_inputs_reach_the_kernels_without_copies(monkeypatch):
    from layerforge import ops

    seen: dict[str, Any] = {}
    real = ops.relu

    def spy(x, **kw):
        seen["x"] = x
        return real(x, **kw)

    monkeypatch.setattr(ops, "relu", spy)
    x = jnp.arange(-6.0, 6.0).reshape(3, 4)
    lfj.relu(x)
    assert isinstance(seen["x"], np.ndarray)
    assert seen["x"].__array_interface__["data"][0] == x.unsafe_buffer_pointer()


@pytest.mark.parametrize("call, exc, match", [
    (lambda x: lfj.max_pool2d(x, 9), ValueError, "larger than the padded input"),
    (lambda x: lfj.conv2d(x, jnp.ones((2, 5, 3, 3))), ValueError, "channels"),
    (lambda x: lfj.linear(x, jnp.ones((2, 5))), ValueError, "features"),
    (lambda x: lfj.softmax(x, 4), ValueError, "out of range"),
    (lambda x: lfj.relu(x.astype(jnp.int32)), TypeError, "float32 or float64"),
    (lambda x: lfj.cross_entropy(x[:, 0, 0], jnp.zeros(2)), TypeError, "integer"),
    (lambda x: lfj.rnn(x[:, :, 0], jnp.ones((4, 5)), jnp.ones((4, 4))), ValueError, r"w_xh must have shape \(H, I\)"),
    (lambda x: lfj.rnn(x[:, :, 0], jnp.ones((4, 6)), jnp.ones((4, 4)), h0=jnp.ones((3, 4))), ValueError, "h0"),
    (lambda x: lfj.rnn(x[:, :, 0], jnp.ones((4, 6)), jnp.ones((4, 4)), activation="elu"), ValueError, "activation"),
    (lambda x: lfj.rnn(x, jnp.ones((4, 6)), jnp.ones((4, 4))), ValueError, "3-D"),
])
def test_bad_arguments_are_refused_while_tracing(call, exc, match):
    x = jnp.ones((2, 3, 6, 6))
    with pytest.raises(exc, match=match):
        jax.jit(call)(x)
    with pytest.raises(exc, match=match):
        call(x)


# ---------------------------------------------------------------------------- the docs' code block

def _jax_blocks() -> list[Any]:
    """The python blocks of every '## Using layerforge from JAX' section (docs/interop.md, and
    README.md once the sections are pasted there)."""
    params = []
    for name in ("docs/interop.md", "README.md"):
        path = ROOT / name
        if not path.exists():
            continue
        heading, fence, block = None, None, []
        for line in path.read_text(encoding="utf-8").splitlines():
            if fence is None:
                if line.startswith("## "):
                    heading = line.strip()
                elif line.startswith("```"):
                    fence, block = line[3:].strip(), []
            elif line.startswith("```"):
                if fence == "python" and heading == f"{DOC_HEADING} JAX":
                    params.append(pytest.param("\n".join(block), id=f"{name}:JAX"))
                fence = None
            else:
                block.append(line)
    return params


def test_docs_have_a_jax_section():
    assert [p.id for p in _jax_blocks() if p.id.startswith("docs/")] == ["docs/interop.md:JAX"]


@pytest.mark.parametrize("code", _jax_blocks())
def test_docs_code_runs(code):
    exec(compile(code, "<docs example>", "exec"), {"__name__": "__docs_example__"})
