"""Optimisers against Keras's update rules written out by hand, losses against their
definitions, and EarlyStopping."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import assert_close

from layerforge import _reference as ref
from layerforge import losses, ops, optimizers
from layerforge.callbacks import EarlyStopping
from layerforge.layers import Dense
from layerforge.models import Sequential
from layerforge.utils import set_random_seed

G = [np.array([0.5, -1.0, 2.0], np.float32), np.array([-0.25, 0.75, 1.5], np.float32), np.array([1.0, 1.0, -3.0], np.float32)]


def _run(opt, steps=3):
    w = np.array([1.0, 2.0, -1.0], np.float32)
    for g in G[:steps]:
        opt.apply([w], [g])
    return w


@pytest.mark.parametrize("momentum,nesterov", [(0.0, False), (0.9, False), (0.9, True)])
def test_sgd_matches_keras_rule(momentum, nesterov):
    w = np.array([1.0, 2.0, -1.0])
    v = np.zeros(3)
    for g in G:
        v = momentum * v - 0.1 * g
        w = w + (momentum * v - 0.1 * g if nesterov else v)
    np.testing.assert_allclose(_run(optimizers.SGD(0.1, momentum=momentum, nesterov=nesterov)), w, rtol=1e-6)


def test_adam_matches_keras_rule_and_lr_alias():
    w, m, v = np.array([1.0, 2.0, -1.0]), np.zeros(3), np.zeros(3)
    for t, g in enumerate(G, 1):
        m = 0.9 * m + 0.1 * g
        v = 0.999 * v + 0.001 * g * g
        w = w - 0.01 * np.sqrt(1 - 0.999 ** t) / (1 - 0.9 ** t) * m / (np.sqrt(v) + 1e-7)
    np.testing.assert_allclose(_run(optimizers.Adam(lr=0.01)), w, rtol=1e-5)
    assert optimizers.Adam().learning_rate == 0.001 and optimizers.SGD().learning_rate == 0.01


@pytest.mark.parametrize("n", [0, 1, 37, 102400])
def test_adam_update_op_matches_oracle(backend, dtype, n):
    rng = np.random.default_rng(n)
    p, g = rng.standard_normal(n).astype(dtype), rng.standard_normal(n).astype(dtype)
    m, v = (rng.standard_normal(n).astype(dtype) * 0.1), np.abs(rng.standard_normal(n)).astype(dtype)
    g[: n // 3] *= 1e-6  # tiny gradients: sqrt(v) and eps of similar size
    want = ref.adam_update(p, g, m, v, 3e-3, 0.9, 0.999, 1e-7)
    ops.adam_update(p, g, m, v, alpha=3e-3, beta_1=0.9, beta_2=0.999, epsilon=1e-7, backend=backend)
    for name, got, w in zip("pmv", (p, m, v), want):
        assert_close(got, w, dtype, name)


def test_adam_update_is_bitwise_the_numpy_form(backend):
    # The fused kernels keep the NumPy expression's operation order and float32 constants.
    rng = np.random.default_rng(4)
    p, g, m = (rng.standard_normal(999).astype(np.float32) for _ in range(3))
    v = np.abs(rng.standard_normal(999)).astype(np.float32)
    pe, me, ve = p.copy(), m.copy(), v.copy()
    me *= 0.9
    me += g * (1.0 - 0.9)
    ve *= 0.999
    ve += (g * g) * (1.0 - 0.999)
    pe -= me / (np.sqrt(ve) + 1e-7) * 2e-3
    ops.adam_update(p, g, m, v, alpha=2e-3, beta_1=0.9, beta_2=0.999, epsilon=1e-7, backend=backend)
    for got, want in ((p, pe), (m, me), (v, ve)):
        np.testing.assert_array_equal(got, want)


def test_adam_update_divides_as_ieee_with_zero_epsilon(backend):
    # epsilon=0 with a zero second moment divides by zero: NaN (0/0) and +-inf (m/0) as NumPy,
    # PyTorch and the C++ kernels give it, on every backend (Numba's Python division rule
    # raised ZeroDivisionError here).
    p = np.ones(4, np.float32)
    g = np.array([0, 0, 1, -1], np.float32)
    m = np.array([0, 1, 0, 0], np.float32)
    v = np.array([0, 0, 0, 0], np.float32)
    pe, me, ve = p.copy(), m * 0.9 + g * np.float32(0.1), g * g * np.float32(0.001)
    with np.errstate(divide="ignore", invalid="ignore"):
        pe -= me / np.sqrt(ve) * np.float32(0.1)
    ops.adam_update(p, g, m, v, alpha=0.1, epsilon=0.0, backend=backend)
    np.testing.assert_array_equal(p, pe)
    assert np.isnan(p[0]) and np.isinf(p[1])


def test_adam_update_errors():
    p, g = np.zeros(4, np.float32), np.zeros(4, np.float32)
    kw = dict(alpha=1e-3)
    with pytest.raises(ValueError, match="v must have shape"):
        ops.adam_update(p, g, np.zeros(4, np.float32), np.zeros(5, np.float32), **kw)
    with pytest.raises(TypeError, match="one dtype"):
        ops.adam_update(p, g, np.zeros(4, np.float64), np.zeros(4, np.float32), **kw)
    with pytest.raises(ValueError, match="in place"):
        ops.adam_update(np.zeros(8, np.float32)[::2], g, np.zeros(4, np.float32), np.zeros(4, np.float32), **kw)
    with pytest.raises(ValueError, match="beta_1"):
        ops.adam_update(p, g, np.zeros(4, np.float32), np.zeros(4, np.float32), beta_1=1.0, **kw)
    with pytest.raises(TypeError, match="float32 or float64"):
        ops.adam_update(np.zeros(4, np.int32), g, np.zeros(4, np.float32), np.zeros(4, np.float32), **kw)


def test_optimizer_errors():
    with pytest.raises(ValueError, match="learning_rate must be a positive number"):
        optimizers.Adam(learning_rate=-1)
    with pytest.raises(ValueError, match="optimizer must be one of"):
        optimizers.get("adagrad")
    with pytest.raises(TypeError, match="unexpected arguments"):
        optimizers.SGD(decay=0.1)


def test_crossentropy_variants_agree():
    rng = np.random.default_rng(0)
    z = rng.standard_normal((6, 4)).astype(np.float32)
    y = rng.integers(0, 4, 6)
    p = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    onehot = np.eye(4, dtype=np.float32)[y]
    want = float(-np.log(p[np.arange(6), y]).mean())
    assert losses.SparseCategoricalCrossentropy(from_logits=True)(y, z) == pytest.approx(want, rel=1e-5)
    assert losses.SparseCategoricalCrossentropy()(y, p) == pytest.approx(want, rel=1e-5)
    assert losses.CategoricalCrossentropy(from_logits=True)(onehot, z) == pytest.approx(want, rel=1e-5)
    assert losses.CategoricalCrossentropy()(onehot, p) == pytest.approx(want, rel=1e-5)
    soft = np.full((6, 4), 0.25, np.float32)
    _, g = losses.CategoricalCrossentropy(from_logits=True).value_and_grad(soft, z, True, None)
    np.testing.assert_allclose(g, (p - soft) / 6, rtol=1e-5, atol=1e-7)


def test_mse_value_and_gradient():
    pred = np.array([[1.0, 2.0], [3.0, 5.0]], np.float32)
    t = np.array([[1.0, 1.0], [1.0, 1.0]], np.float32)
    loss, g = losses.MeanSquaredError().value_and_grad(t, pred, False, None)
    assert loss == pytest.approx((0 + 1 + 4 + 16) / 4)
    np.testing.assert_allclose(g, 2 * (pred - t) / 4)
    assert losses.get("mse").name == "mean_squared_error"


def test_mse_model_trains_regression():
    set_random_seed(0)
    model = Sequential([Dense(8, activation="tanh", input_shape=(2,)), Dense(1)])
    model.compile(optimizer="adam", loss="mse")
    x = np.random.default_rng(1).uniform(-1, 1, (256, 2)).astype(np.float32)
    y = x[:, 0] * x[:, 1]
    h = model.fit(x, y, epochs=20, verbose=0)
    assert h.history["loss"][-1] < 0.5 * h.history["loss"][0]


def test_early_stopping_stops():
    set_random_seed(0)
    model = Sequential([Dense(2, activation="softmax", input_shape=(3,))])
    model.compile(optimizer=optimizers.SGD(1e-9), loss="sparse_categorical_crossentropy")
    x, y = np.ones((16, 3), np.float32), np.zeros(16, int)
    h = model.fit(x, y, epochs=50, verbose=0, validation_data=(x, y),
                  callbacks=[EarlyStopping(monitor="val_loss", patience=2, min_delta=1e-3)])
    assert len(h.history["loss"]) == 3
