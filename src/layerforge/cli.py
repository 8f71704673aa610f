"""The `layerforge` command: `train` (the documents' CNN or RNN on Fashion-MNIST), `info` (what
is built), `demo` (one CNN step through the ops on every backend, checked against the oracle)
and `bench` (layerforge's kernels and training steps timed against PyTorch; see bench.py).

`train` uses the full Fashion-MNIST when it is found (see datasets.fashion_mnist.load_data for
the search order: --data, LAYERFORGE_DATA, /usr/share/datasets/fashion-mnist, the user cache),
else the sample embedded in the package, and says which.

`demo` runs one forward and backward pass of the documents' CNN (Conv2D(32,3x3,relu) ->
MaxPool(2) -> Conv2D(64,3x3,relu) -> MaxPool(2) -> Dense(64,relu) -> Dense(10) -> softmax
cross-entropy) on a batch of random 28x28x1 images with every available backend, checks each
gradient against the float64 oracle, and prints the time per step.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Callable

import numpy as np


def _cnn_step(ops, params: dict[str, np.ndarray], x: np.ndarray, labels: np.ndarray, **kw) -> tuple[float, dict[str, np.ndarray]]:
    """Loss and parameter gradients of the documents' CNN; ``ops`` is layerforge.ops or the oracle."""
    p = params
    a1 = ops.conv2d(x, p["w1"], p["b1"], **kw)
    r1 = ops.relu(a1, **kw)
    m1 = ops.max_pool2d(r1, 2, **kw)
    a2 = ops.conv2d(m1, p["w2"], p["b2"], **kw)
    r2 = ops.relu(a2, **kw)
    m2 = ops.max_pool2d(r2, 2, **kw)
    f = m2.reshape(m2.shape[0], -1)
    a3 = ops.linear(f, p["w3"], p["b3"], **kw)
    r3 = ops.relu(a3, **kw)
    z = ops.linear(r3, p["w4"], p["b4"], **kw)
    loss = float(ops.cross_entropy(z, labels, **kw))
    g: dict[str, np.ndarray] = {}
    dz = ops.cross_entropy_backward(1.0, z, labels, **kw)
    dr3, g["w4"], g["b4"] = ops.linear_backward(dz, r3, p["w4"], p["b4"], **kw)
    da3 = ops.relu_backward(dr3, a3, **kw)
    df, g["w3"], g["b3"] = ops.linear_backward(da3, f, p["w3"], p["b3"], **kw)
    dr2 = ops.max_pool2d_backward(df.reshape(m2.shape), r2, 2, **kw)
    da2 = ops.relu_backward(dr2, a2, **kw)
    dm1, g["w2"], g["b2"] = ops.conv2d_backward(da2, m1, p["w2"], p["b2"], **kw)
    dr1 = ops.max_pool2d_backward(dm1, r1, 2, **kw)
    da1 = ops.relu_backward(dr1, a1, **kw)
    _, g["w1"], g["b1"] = ops.conv2d_backward(da1, x, p["w1"], p["b1"], **kw)
    return loss, g


def _init_params(rng: np.random.Generator, dtype: type = np.float32) -> dict[str, np.ndarray]:
    def glorot(shape: tuple[int, ...], fan_in: int, fan_out: int) -> np.ndarray:
        lim = np.sqrt(6.0 / (fan_in + fan_out))
        return rng.uniform(-lim, lim, shape).astype(dtype)

    return {
        "w1": glorot((32, 1, 3, 3), 9, 288), "b1": np.zeros(32, dtype),
        "w2": glorot((64, 32, 3, 3), 288, 576), "b2": np.zeros(64, dtype),
        "w3": glorot((64, 1600), 1600, 64), "b3": np.zeros(64, dtype),
        "w4": glorot((10, 64), 64, 10), "b4": np.zeros(10, dtype),
    }


def _median_time(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def cmd_demo(args: argparse.Namespace) -> int:
    from . import _backend, _reference, ops

    rng = np.random.default_rng(args.seed)
    params = _init_params(rng)
    x = rng.random((args.batch_size, 1, 28, 28), dtype=np.float32)
    labels = rng.integers(0, 10, args.batch_size)
    ref_loss, ref_g = _cnn_step(_reference, params, x, labels)
    backends = _backend.available() if args.backend == "all" else [args.backend]
    print(f"documents' CNN, one training step (forward + backward), batch {args.batch_size}, float32")
    print(f"{'backend':8s} {'loss':>10s} {'max rel. grad error':>20s} {'ms/step':>9s} {'images/s':>10s}")
    print(f"{'oracle':8s} {ref_loss:10.5f} {'(float64 NumPy)':>20s}")
    worst = 0.0
    for name in backends:
        loss, g = _cnn_step(ops, params, x, labels, backend=name)  # warm-up (Numba compiles here)
        err = max(float(np.max(np.abs(g[k] - ref_g[k])) / (np.max(np.abs(ref_g[k])) + 1e-12)) for k in g)
        worst = max(worst, err)
        t = _median_time(lambda: _cnn_step(ops, params, x, labels, backend=name), args.repeats)
        print(f"{name:8s} {loss:10.5f} {err:20.2e} {t * 1e3:9.2f} {args.batch_size / t:10.0f}")
    if worst > 1e-3:
        print(f"error: a backend's gradients differ from the oracle by {worst:.2e} (> 1e-3)", file=sys.stderr)
        return 1
    return 0


def build_model(kind: str, backend: str | None):
    """The documents' networks: the CNN (input 28x28x1) or the row-sequence RNN (28 steps x 28)."""
    from .layers import Conv2D, Dense, Flatten, MaxPooling2D, SimpleRNN
    from .models import Sequential

    if kind == "cnn":
        model = Sequential(backend=backend)
        model.add(Conv2D(32, (3, 3), activation="relu", input_shape=(28, 28, 1)))
        model.add(MaxPooling2D((2, 2)))
        model.add(Conv2D(64, (3, 3), activation="relu"))
        model.add(MaxPooling2D((2, 2)))
        model.add(Flatten())
        model.add(Dense(64, activation="relu"))
        model.add(Dense(10, activation="softmax"))
    else:
        model = Sequential([SimpleRNN(128, input_shape=(28, 28)), Dense(10, activation="softmax")], backend=backend)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def cmd_train(args: argparse.Namespace) -> int:
    from . import _backend
    from ._random import set_random_seed
    from .datasets import fashion_mnist

    backend = None if args.backend == "auto" else args.backend
    try:
        name, _ = _backend.resolve(backend)
    except (RuntimeError, ValueError) as exc:
        print(f"layerforge train: {exc}", file=sys.stderr)
        return 2
    try:
        ((x_train, y_train), (x_test, y_test)), source, _ = fashion_mnist.load_data_or_sample(args.data)
    except (FileNotFoundError, ValueError) as exc:
        print(f"layerforge train: {exc}", file=sys.stderr)
        return 2
    print(f"data: {source}")
    if args.limit:
        x_train, y_train = x_train[: args.limit], y_train[: args.limit]
    shape = (-1, 28, 28, 1) if args.model == "cnn" else (-1, 28, 28)
    x_train = (x_train.astype(np.float32) / 255.0).reshape(shape)
    x_test = (x_test.astype(np.float32) / 255.0).reshape(shape)
    set_random_seed(args.seed)
    model = build_model(args.model, backend)
    print(f"model: the documents' {args.model.upper()} ({model.count_params():,} parameters), Adam, "
          f"sparse categorical cross-entropy, batch {args.batch_size}, backend {name}, "
          f"{_threads()} threads, seed {args.seed}")
    t0 = time.perf_counter()
    model.fit(x_train, y_train, epochs=args.epochs, batch_size=args.batch_size,
              validation_data=(x_test, y_test), verbose=2 if args.quiet else 1)
    seconds = time.perf_counter() - t0
    test_loss, test_acc = model.evaluate(x_test, y_test, verbose=0)
    if args.save:
        model.save_weights(args.save)
        print(f"weights saved to {args.save}")
    per_epoch = seconds / max(args.epochs, 1)
    print(f"test accuracy {test_acc:.4f}  test loss {test_loss:.4f}  |  {per_epoch:.2f} s per epoch "
          f"(training + validation), {len(x_train) * args.epochs / seconds:,.0f} training images/s")
    return 0


def _threads() -> int:
    from ._info import get_num_threads

    return get_num_threads()


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="layerforge", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train the documents' CNN or RNN on Fashion-MNIST (or the embedded sample)")
    t.add_argument("model", choices=["cnn", "rnn"])
    t.add_argument("--epochs", type=int, default=None, help="default: 10 for the CNN, 5 for the RNN")
    t.add_argument("--batch-size", type=int, default=32)
    t.add_argument("--backend", default="auto", choices=["auto", "cpp", "numba"])
    t.add_argument("--data", default=None, help="folder holding the four Fashion-MNIST IDX files")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--limit", type=int, default=0, help="train on the first N training images only")
    t.add_argument("--save", default=None, help="write the trained weights to this file")
    t.add_argument("--quiet", action="store_true", help="one line per epoch instead of the progress bar")
    sub.add_parser("info", help="version, compiled backends, CPU features, threads, GPUs")
    d = sub.add_parser("demo", help="one CNN training step per backend, checked against the oracle")
    d.add_argument("--backend", default="all", choices=["all", "cpp", "numba"])
    d.add_argument("--batch-size", type=int, default=32)
    d.add_argument("--repeats", type=int, default=10)
    d.add_argument("--seed", type=int, default=0)
    from . import bench

    b = sub.add_parser("bench", help="time every op and the CNN/RNN training steps against PyTorch (quick by default)",
                       description="Time layerforge's ops (forward and backward) and the documents' CNN and RNN "
                                   "training steps against PyTorch in one process, and print one table.")
    bench.add_arguments(b)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "info":
        from ._info import info

        info()
        return 0
    if args.command == "bench":
        from . import bench

        return bench.main(args)
    if args.command == "train":
        if args.epochs is None:
            args.epochs = 10 if args.model == "cnn" else 5
        if args.epochs < 1 or args.batch_size < 1 or args.limit < 0 or args.seed < 0:
            print("layerforge train: --epochs and --batch-size must be >= 1, --limit and --seed >= 0", file=sys.stderr)
            return 2
        return cmd_train(args)
    if args.batch_size < 1 or args.repeats < 1:
        print("layerforge demo: --batch-size and --repeats must be >= 1", file=sys.stderr)
        return 2
    return cmd_demo(args)
