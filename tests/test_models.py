"""The Keras-like API: the documents' three CNN listings as written (imports changed), the RNN,
summary and parameter counts, gradients against the float64 oracle, reproducibility, weights
files, and the errors fit() gives for bad data."""

from __future__ import annotations

import os

import numpy as np
import pytest

from layerforge import _backend, _reference, cli
from layerforge.datasets import fashion_mnist

# The documents' imports, mapped one to one.
from layerforge.layers import Conv2D, Dense, Flatten, MaxPooling2D, SimpleRNN
from layerforge.models import Sequential
from layerforge.optimizers import SGD, Adam
from layerforge.utils import set_random_seed, to_categorical


@pytest.fixture(scope="module")
def sample():
    (x_train, y_train), (x_test, y_test) = fashion_mnist.load_sample()
    return (x_train / 255.0).astype(np.float32), y_train, (x_test / 255.0).astype(np.float32), y_test


def documents_cnn():
    model = Sequential()
    model.add(Conv2D(32, (3, 3), activation='relu', input_shape=(28, 28, 1)))
    model.add(MaxPooling2D((2, 2)))
    model.add(Conv2D(64, (3, 3), activation='relu'))
    model.add(MaxPooling2D((2, 2)))
    model.add(Flatten())
    model.add(Dense(64, activation='relu'))
    model.add(Dense(10, activation='softmax'))
    return model


def test_documents_cnn_trains_on_the_sample(sample):
    """The first listing verbatim; ~300 steps must cut the loss clearly and beat chance widely."""
    x_train, y_train, x_test, y_test = sample
    x_train, x_test = x_train.reshape(-1, 28, 28, 1), x_test.reshape(-1, 28, 28, 1)
    set_random_seed(0)
    model = documents_cnn()
    model.compile(optimizer='adam', loss='sparse_categorical_crossentropy', metrics=['accuracy'])
    history = model.fit(x_train, y_train, epochs=2, batch_size=32, validation_data=(x_test, y_test), verbose=0)
    h = history.history
    assert set(h) == {"loss", "accuracy", "val_loss", "val_accuracy"} and len(h["loss"]) == 2
    first = model.evaluate(x_test, y_test, verbose=0)
    assert h["loss"][1] < 0.75 * h["loss"][0] < 0.75 * np.log(10)
    assert first[1] > 0.65, f"test accuracy {first[1]} after 2 epochs on the sample (chance is 0.1)"
    assert h["val_accuracy"][-1] == pytest.approx(first[1])


def test_documents_cifar_variant_sgd_categorical():
    """32x32x3 input, Dense(128), SGD and Adam(lr=...), categorical cross-entropy on to_categorical."""
    rng = np.random.default_rng(0)
    train_images = rng.random((256, 32, 32, 3), dtype=np.float32)
    train_labels = (train_images[:, :16].mean(axis=(1, 2, 3)) > train_images[:, 16:].mean(axis=(1, 2, 3))).astype(int)
    test_images, test_labels = train_images[:64], train_labels[:64]
    for opt in ('sgd', Adam(lr=0.001)):
        set_random_seed(1)
        model = Sequential()
        model.add(Conv2D(32, (3, 3), activation='relu', input_shape=(32, 32, 3)))
        model.add(MaxPooling2D((2, 2)))
        model.add(Conv2D(64, (3, 3), activation='relu'))
        model.add(MaxPooling2D((2, 2)))
        model.add(Flatten())
        model.add(Dense(128, activation='relu'))
        model.add(Dense(10, activation='softmax'))
        assert model.count_params() == 315722  # Keras's count for this model
        model.compile(optimizer=opt, loss='categorical_crossentropy', metrics=['accuracy'])
        model.fit(train_images, to_categorical(train_labels, 10), epochs=2, batch_size=32, verbose=0)
        test_loss, test_acc = model.evaluate(test_images, to_categorical(test_labels, 10), verbose=0)
        assert np.isfinite(test_loss) and 0.0 <= test_acc <= 1.0


def test_documents_list_form_from_logits():
    from layerforge import layers, losses, models

    rng = np.random.default_rng(0)
    x = rng.random((96, 32, 32, 3), dtype=np.float32)
    y = rng.integers(0, 10, 96)
    set_random_seed(2)
    model = models.Sequential([
        layers.Conv2D(32, (3, 3), activation='relu', input_shape=(32, 32, 3)),
        layers.MaxPooling2D((2, 2)),
        layers.Conv2D(64, (3, 3), activation='relu'),
        layers.MaxPooling2D((2, 2)),
        layers.Conv2D(64, (3, 3), activation='relu'),
        layers.Flatten(),
        layers.Dense(64, activation='relu'),
        layers.Dense(10),
    ])
    assert model.count_params() == 122570  # the TensorFlow CNN tutorial's figure
    model.compile(optimizer='adam', loss=losses.SparseCategoricalCrossentropy(from_logits=True), metrics=['accuracy'])
    history = model.fit(x, y, epochs=3, validation_data=(x[:32], y[:32]), verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]


def test_summary_matches_keras(capsys):
    documents_cnn().summary()
    out = capsys.readouterr().out
    for shape, params in [("(None, 26, 26, 32)", "320"), ("(None, 13, 13, 32)", "0"), ("(None, 11, 11, 64)", "18,496"),
                          ("(None, 5, 5, 64)", "0"), ("(None, 1600)", "0"), ("(None, 64)", "102,464"), ("(None, 10)", "650")]:
        assert any(shape in line and line.rstrip().endswith(params) for line in out.splitlines()), (shape, params)
    assert "Total params: 121,930" in out
    assert "max_pooling2d" in out and "channels_last" in out


def test_model_gradients_match_the_oracle():
    """One SGD step of the layer API moves every weight by -lr * (the oracle's gradient)."""
    set_random_seed(3)
    model = documents_cnn()
    lr = 0.5
    model.compile(optimizer=SGD(learning_rate=lr), loss='sparse_categorical_crossentropy')
    rng = np.random.default_rng(4)
    x = rng.random((6, 28, 28, 1), dtype=np.float32)
    y = rng.integers(0, 10, 6)
    before = model.get_weights()
    names = ["w1", "b1", "w2", "b2", "w3", "b3", "w4", "b4"]
    _, ref = cli._cnn_step(_reference, dict(zip(names, before)), x.transpose(0, 3, 1, 2), y)
    model.train_on_batch(x, y)
    for name, b, a in zip(names, before, model.get_weights()):
        g = (b.astype(np.float64) - a) / lr
        np.testing.assert_allclose(g, ref[name], rtol=2e-3, atol=2e-5 * max(1.0, np.abs(ref[name]).max()), err_msg=name)


def _rnn_loss_f64(x, y, wxh, whh, b, wo, bo, act):
    f = np.tanh if act == "tanh" else (lambda a: 1 / (1 + np.exp(-a)))
    h = np.zeros((x.shape[0], whh.shape[0]))
    for t in range(x.shape[1]):
        h = f(x[:, t] @ wxh.T + h @ whh.T + b)
    return _reference.cross_entropy(h @ wo.T + bo, y)


@pytest.mark.parametrize("act", ["tanh", "sigmoid"])
def test_rnn_bptt_matches_finite_differences(act):
    set_random_seed(5)
    model = Sequential([SimpleRNN(5, activation=act, input_shape=(4, 3)), Dense(3)])
    model.compile(optimizer=SGD(learning_rate=1.0), loss=__import__("layerforge").losses.SparseCategoricalCrossentropy(from_logits=True))
    rng = np.random.default_rng(6)
    x = rng.standard_normal((3, 4, 3)).astype(np.float32)
    y = rng.integers(0, 3, 3)
    before = [w.astype(np.float64) for w in model.get_weights()]
    model.train_on_batch(x, y)
    grads = [b - a for b, a in zip(before, model.get_weights())]
    for k, w in enumerate(before):
        num = np.zeros_like(w)
        for i in np.ndindex(w.shape):
            ws = [v.copy() for v in before]
            ws[k][i] += 1e-6
            hi = _rnn_loss_f64(x.astype(np.float64), y, *ws, act)
            ws[k][i] -= 2e-6
            lo = _rnn_loss_f64(x.astype(np.float64), y, *ws, act)
            num[i] = (hi - lo) / 2e-6
        np.testing.assert_allclose(grads[k], num, rtol=1e-3, atol=1e-5, err_msg=f"weight {k}")


def test_rnn_row_sequence_classifier_trains(sample):
    x_train, y_train, x_test, y_test = sample
    set_random_seed(7)
    model = Sequential([SimpleRNN(128, input_shape=(28, 28)), Dense(10, activation='softmax')])
    model.compile(optimizer='adam', loss='sparse_categorical_crossentropy', metrics=['accuracy'])
    assert model.count_params() == 28 * 128 + 128 * 128 + 128 + 1290
    h = model.fit(x_train[:2048], y_train[:2048], epochs=2, batch_size=32, verbose=0)
    assert h.history["loss"][-1] < 0.8 * h.history["loss"][0]
    assert model.evaluate(x_test, y_test, verbose=0)[1] > 0.45


def test_same_seed_same_loss_curve(sample):
    x, y = sample[0][:320].reshape(-1, 28, 28, 1), sample[1][:320]
    curves = []
    for _ in range(2):
        set_random_seed(11)
        model = documents_cnn()
        model.compile(optimizer='adam', loss='sparse_categorical_crossentropy')
        curves.append(model.fit(x, y, epochs=2, verbose=0).history["loss"])
    assert curves[0] == curves[1]


def test_save_and_load_weights_round_trip(tmp_path):
    set_random_seed(12)
    a = documents_cnn()
    path = tmp_path / "cnn.weights"
    a.save_weights(path)
    b = documents_cnn()
    b.load_weights(path)
    for wa, wb in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_array_equal(wa, wb)
    other = Sequential([Dense(3, input_shape=(4,))])
    with pytest.raises(ValueError, match="holds weights for layers"):
        other.load_weights(path)
    (tmp_path / "junk").write_bytes(b"not a weights file")
    with pytest.raises(ValueError, match="not a layerforge weights file"):
        a.load_weights(tmp_path / "junk")


def test_save_weights_is_atomic(tmp_path, monkeypatch):
    """A crash between writing and renaming leaves the old file loadable and no temp file behind."""
    set_random_seed(13)
    model = documents_cnn()
    path = tmp_path / "cnn.weights"
    model.save_weights(path)
    old = path.read_bytes()
    model.set_weights([w + 1 for w in model.get_weights()])

    def crash(src, dst):
        raise OSError("simulated crash before the rename")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="simulated crash"):
        model.save_weights(path)
    monkeypatch.undo()
    assert path.read_bytes() == old and os.listdir(tmp_path) == ["cnn.weights"]
    fresh = documents_cnn()
    fresh.load_weights(path)


def test_nan_loss_stops_before_the_update():
    set_random_seed(14)
    model = Sequential([Dense(4, activation='relu', input_shape=(3,)), Dense(2, activation='softmax')])
    model.compile(optimizer='sgd', loss='sparse_categorical_crossentropy')
    w = model.get_weights()
    w[0][0, 0] = np.inf
    model.set_weights(w)
    with pytest.raises(FloatingPointError, match="the update was not applied"):
        model.fit(np.ones((8, 3), np.float32), np.zeros(8, int), epochs=1, verbose=0)
    for a, b in zip(w, model.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_fit_rejects_bad_data():
    model = documents_cnn()
    model.compile(optimizer='adam', loss='sparse_categorical_crossentropy', metrics=['accuracy'])
    x = np.zeros((4, 28, 28, 1), np.float32)
    with pytest.raises(ValueError, match=r"expected inputs of shape \(None, 28, 28, 1\), got \(4, 28, 28\).*x\[\.\.\., None\]"):
        model.fit(x[..., 0], np.zeros(4, int), verbose=0)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 10\)"):
        model.fit(x, np.array([0, 1, 2, 10]), verbose=0)
    with pytest.raises(ValueError, match="x has 4 samples but y has 3"):
        model.fit(x, np.zeros(3, int), verbose=0)
    bad = x.copy()
    bad[2, 5, 5, 0] = np.nan
    with pytest.raises(ValueError, match="NaN or infinity"):
        model.fit(bad, np.zeros(4, int), verbose=0)
    with pytest.raises(ValueError, match="one-hot targets go with 'categorical_crossentropy'"):
        model.fit(x, to_categorical([0, 1, 2, 3], 10), verbose=0)
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
        model.fit(x, np.zeros(4, int), batch_size=0, verbose=0)
    with pytest.raises(RuntimeError, match="compile"):
        documents_cnn().fit(x, np.zeros(4, int))


def test_progress_bar_and_silence(capsys):
    set_random_seed(15)
    model = Sequential([Dense(2, activation='softmax', input_shape=(3,))])
    model.compile(optimizer='adam', loss='sparse_categorical_crossentropy', metrics=['accuracy'])
    x, y = np.ones((64, 3), np.float32), np.zeros(64, int)
    model.fit(x, y, epochs=1, verbose=0)
    assert capsys.readouterr().err == ""
    model.fit(x, y, epochs=2, verbose=1)
    err = capsys.readouterr().err
    assert "Epoch 1/2" in err and "Epoch 2/2" in err and "loss=" in err and "acc=" in err


def test_validation_split_and_predict_shapes():
    set_random_seed(16)
    model = documents_cnn()
    model.compile(optimizer='adam', loss='sparse_categorical_crossentropy', metrics=['accuracy'])
    x = np.random.default_rng(0).random((40, 28, 28, 1), dtype=np.float32)
    h = model.fit(x, np.arange(40) % 10, epochs=1, validation_split=0.25, verbose=0)
    assert "val_accuracy" in h.history
    p = model.predict(x[:5])
    assert p.shape == (5, 10)
    np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=1e-5)


@pytest.mark.parametrize("name", ["cpp", "numba"])
def test_same_model_on_each_backend(name):
    if _backend.load(name) is None:
        pytest.skip(f"{name} unavailable")
    set_random_seed(17)
    model = documents_cnn()
    ref_w = model.get_weights()
    x = np.random.default_rng(1).random((8, 28, 28, 1), dtype=np.float32)
    set_random_seed(17)
    other = Sequential(documents_cnn().layers, backend=name)
    other.set_weights(ref_w)
    np.testing.assert_allclose(other.predict(x), model.predict(x), rtol=1e-4, atol=1e-6)
