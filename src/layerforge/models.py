"""Sequential: the Keras model API (compile / fit / evaluate / predict / summary / weights) over
layerforge.layers.

Data come in Keras's shapes, channels_last: images (N, H, W, C), sequences (N, T, D). The one
layout change, NHWC -> NCHW for the ops, happens once per call at the model's entry (and
back at the exit for image outputs); ``summary()`` prints it as the model's first line.
Inputs are cast to float32 (uint8 images are not rescaled, as in Keras).

A softmax last layer trained with a cross-entropy loss is fused: the loss takes the
pre-softmax logits and the fused softmax cross-entropy gradient (ops.cross_entropy_backward),
which is exact and stable where softmax-then-log is not.
"""

from __future__ import annotations

import io
import json
import os
import sys
import tempfile
from typing import Any, Iterable, Sequence

import numpy as np

from . import _random, losses as _losses, optimizers as _optimizers
from .callbacks import Callback, History
from .layers import Layer


class Sequential:
    """A linear stack of layers. ``Sequential([...])`` or ``.add(layer)``; ``backend=`` picks the
    ops backend for every layer ('cpp', 'numba'; None = the default); ``device='cuda'`` keeps the
    weights on the current CUDA device as CuPy arrays and runs every op on the CUDA backend
    (data stay on the host and go over batch by batch)."""

    def __init__(self, layers: Sequence[Layer] | None = None, name: str | None = None, backend: str | None = None,
                 device: str | None = None) -> None:
        if device not in (None, "cpu", "cuda"):
            raise ValueError(f"Sequential: device must be 'cpu' or 'cuda', got {device!r}")
        if device == "cuda" and backend not in (None, "auto", "cuda"):
            raise ValueError(f"Sequential: device='cuda' runs the CUDA backend, not backend={backend!r}")
        self.device = device or "cpu"
        if self.device == "cuda":
            try:
                import cupy  # noqa: F401
            except ImportError as exc:
                raise RuntimeError("Sequential(device='cuda') needs CuPy: pip install 'layerforge[cuda]'") from exc
        self.name = name or "sequential"
        self.layers: list[Layer] = []
        self.backend = backend
        self.built = False
        self.input_shape: tuple[int, ...] | None = None
        self.optimizer: _optimizers.Optimizer | None = None
        self.loss: _losses.Loss | None = None
        self.metrics: list[str] = []
        self.stop_training = False
        for layer in layers or []:
            self.add(layer)

    # ------------------------------------------------------------------ building
    def add(self, layer: Layer) -> None:
        """Append a layer; with a known input shape it is built at once (so summary() works)."""
        if not isinstance(layer, Layer):
            raise TypeError(f"Sequential.add: expected a layerforge layer, got {type(layer).__name__}")
        if layer in self.layers:
            raise ValueError(f"Sequential.add: layer {layer.name} is already in the model")
        self.layers.append(layer)
        layer.backend = self.backend
        if len(self.layers) == 1 and layer.input_shape is not None:
            self.input_shape = tuple(layer.input_shape)
        if self.input_shape is not None:
            self.build(self.input_shape)

    def build(self, input_shape: Sequence[int]) -> None:
        """Build the layers not built yet, for per-sample inputs of Keras shape ``input_shape``."""
        shape = tuple(int(d) for d in input_shape)
        if self.input_shape is not None and shape != tuple(self.input_shape) and self.built:
            raise ValueError(f"build: the model is built for inputs {self.input_shape}, not {shape}")
        self.input_shape = shape
        rng = _random.generator()
        self._fuse_conv_pool()
        for i, layer in enumerate(self.layers):
            layer.input_grad = i > 0  # nothing upstream of the first layer needs its dx
            if not layer.built:
                layer.build(shape, rng)
                if self.device == "cuda":
                    import cupy

                    layer.to_device(cupy.asarray)
            shape = layer.output_shape
        self.built = True

    def _fuse_conv_pool(self) -> None:
        """Mark each Conv2D(relu) directly followed by a 2x2 / stride-2 'valid' MaxPooling2D to
        run as one ops.conv2d_relu_maxpool (same results; the full-size activation stays in cache)."""
        from .layers import Conv2D, MaxPooling2D

        for layer in self.layers:
            layer.pool_fused = False
        for conv, pool in zip(self.layers, self.layers[1:]):
            if (isinstance(conv, Conv2D) and conv.activation == "relu" and type(pool) is MaxPooling2D
                    and pool.pool_size == (2, 2) and pool.strides == (2, 2) and pool.padding == "valid"
                    and not conv.pool_fused):
                conv.pool_fused = pool.pool_fused = True

    @property
    def output_shape(self) -> tuple[int, ...] | None:
        return self.layers[-1].output_shape if self.built else None

    @property
    def _image_input(self) -> bool:
        return self.input_shape is not None and len(self.input_shape) == 3

    # ------------------------------------------------------------------ compile
    def compile(self, optimizer: str | _optimizers.Optimizer = "rmsprop", loss: str | _losses.Loss | None = None,
                metrics: Iterable[str] | None = None) -> None:
        """optimizer: 'adam' | 'sgd' | 'rmsprop' or an instance; loss: a Keras loss name or instance;
        metrics: ['accuracy'] (or 'acc') or None."""
        if loss is None:
            raise ValueError("compile: a loss is required, e.g. loss='sparse_categorical_crossentropy'")
        self.optimizer = _optimizers.get(optimizer)
        self.optimizer.backend = self.backend
        self.loss = _losses.get(loss)
        self.metrics = []
        for m in metrics or []:
            if m not in ("accuracy", "acc"):
                raise ValueError(f"compile: supported metrics are 'accuracy' ('acc'), got {m!r}")
            self.metrics.append("accuracy")

    @property
    def _fused(self) -> bool:
        """Softmax last layer + cross-entropy on probabilities: train on logits with the fused op."""
        return bool(self.loss is not None and self.loss.is_crossentropy and not self.loss.from_logits
                    and self.layers and self.layers[-1].activation == "softmax")

    # ------------------------------------------------------------------ data
    def _inputs(self, x: Any, where: str) -> np.ndarray:
        if x is None:
            raise ValueError(f"{where}: x is required")
        x = np.asarray(x)
        if x.dtype.kind not in "fiub":
            raise TypeError(f"{where}: x must be numeric, got dtype {x.dtype}")
        if not self.built:
            if not self.layers:
                raise ValueError(f"{where}: the model has no layers")
            self.build(x.shape[1:])
        want = (None,) + tuple(self.input_shape)
        if x.ndim != len(want) or tuple(x.shape[1:]) != tuple(self.input_shape):
            hint = ""
            if x.ndim + 1 == len(want) and tuple(x.shape[1:]) + (1,) == tuple(self.input_shape):
                hint = "; add the channel axis with x[..., None] (or x.reshape(-1, *input_shape))"
            raise ValueError(f"{where}: expected inputs of shape {want}, got {x.shape}{hint}")
        x = x.astype(np.float32, copy=False)
        if not np.all(np.isfinite(x)):
            raise ValueError(f"{where}: x contains NaN or infinity (at {np.argwhere(~np.isfinite(x))[0].tolist()})")
        if self._image_input:
            x = np.ascontiguousarray(x.transpose(0, 3, 1, 2))  # NHWC -> NCHW, once per call
        return x

    def _targets(self, y: Any, n: int, where: str) -> np.ndarray:
        if y is None:
            raise ValueError(f"{where}: y is required")
        t = self.loss.prepare_targets(y, self.output_shape)
        if t.shape[0] != n:
            raise ValueError(f"{where}: x has {n} samples but y has {t.shape[0]}")
        return t

    def _to_keras(self, out: np.ndarray) -> np.ndarray:
        return out.transpose(0, 2, 3, 1) if out.ndim == 4 else out

    def _dev(self, a: np.ndarray) -> Any:
        """A host batch on the model's device (one copy per batch for device='cuda')."""
        if self.device == "cuda":
            import cupy

            return cupy.asarray(a)
        return a

    @staticmethod
    def _host(a: Any) -> np.ndarray:
        return a if isinstance(a, np.ndarray) else a.get()

    # ------------------------------------------------------------------ core steps
    def _forward(self, x: np.ndarray, training: bool, logits: bool) -> np.ndarray:
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            x = layer.forward(x, training=training, logits=logits and i == last)
        return x

    def _loss_and_grad(self, out: np.ndarray, t: np.ndarray) -> tuple[float, np.ndarray]:
        return self.loss.value_and_grad(t, out, self._fused or self.loss.from_logits, self.backend)

    def _accuracy(self, out: np.ndarray, t: np.ndarray) -> float:
        if t.ndim == 1:
            return float((out.argmax(axis=-1) == t).mean())
        if out.shape[-1] == 1:
            return float(((out > 0.5) == (t > 0.5)).mean())
        return float((out.argmax(axis=-1) == t.argmax(axis=-1)).mean())

    def _train_step(self, x: np.ndarray, t: np.ndarray, where: str) -> dict[str, float]:
        self._require_compiled(where)
        fused = self._fused
        x, t = self._dev(x), self._dev(t)
        out = self._forward(x, training=True, logits=fused)
        loss, d = self._loss_and_grad(out, t)
        if not np.isfinite(loss):
            raise FloatingPointError(
                f"{where}: the loss became {loss} at step {self.optimizer.iterations + 1}; the update was not "
                "applied, so the weights are those of the last good step. Lower the learning rate or check the data."
            )
        last = len(self.layers) - 1
        for i in range(last, -1, -1):
            d = self.layers[i].backward(d, logits=fused and i == last)
        params, grads = self._params_and_grads()
        self.optimizer.apply(params, grads)
        logs = {"loss": loss}
        if self.metrics:
            logs["accuracy"] = self._accuracy(out, t)
        return logs

    def _params_and_grads(self) -> tuple[list[np.ndarray], list[np.ndarray]]:
        params: list[np.ndarray] = []
        grads: list[np.ndarray] = []
        for layer in self.layers:
            if layer.trainable:
                params += layer.params
                grads += layer.grads
        return params, grads

    def _require_compiled(self, where: str) -> None:
        if self.loss is None or self.optimizer is None:
            raise RuntimeError(f"{where}: call compile(optimizer=..., loss=...) first")

    @staticmethod
    def _batch_size(batch_size: Any) -> int:
        if batch_size is None:
            return 32
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        return int(batch_size)

    # ------------------------------------------------------------------ public API
    def train_on_batch(self, x: Any, y: Any) -> list[float] | float:
        """One optimiser step on one batch; returns [loss, accuracy] (or loss without metrics)."""
        self._require_compiled("train_on_batch")
        x = self._inputs(x, "train_on_batch")
        logs = self._train_step(x, self._targets(y, x.shape[0], "train_on_batch"), "train_on_batch")
        return [logs["loss"], logs["accuracy"]] if self.metrics else logs["loss"]

    def fit(self, x: Any = None, y: Any = None, batch_size: int | None = None, epochs: int = 1,
            verbose: int | str = "auto", callbacks: Sequence[Callback] | None = None,
            validation_split: float = 0.0, validation_data: tuple | None = None, shuffle: bool = True,
            initial_epoch: int = 0) -> History:
        """Train for ``epochs`` over (x, y) in batches; returns a History whose ``.history`` holds
        'loss', 'accuracy' and, with validation, 'val_loss', 'val_accuracy' per epoch.

        x: (N,) + input_shape (channels_last), y: targets for the loss. verbose: 0 silent,
        1/'auto' a progress bar per epoch with live loss and accuracy, 2 one line per epoch.
        """
        self._require_compiled("fit")
        bs = self._batch_size(batch_size)
        if isinstance(epochs, bool) or not isinstance(epochs, (int, np.integer)) or epochs < 0:
            raise ValueError(f"fit: epochs must be an int >= 0, got {epochs!r}")
        if not 0.0 <= float(validation_split) < 1.0:
            raise ValueError(f"fit: validation_split must be in [0, 1), got {validation_split!r}")
        verbose = 1 if verbose == "auto" else int(verbose)
        xs = self._inputs(x, "fit")
        ts = self._targets(y, xs.shape[0], "fit")
        if xs.shape[0] == 0:
            raise ValueError("fit: x holds no samples")
        val = None
        if validation_data is not None:
            if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
                raise ValueError("fit: validation_data must be a pair (x_val, y_val)")
            vx = self._inputs(validation_data[0], "fit (validation_data)")
            val = (vx, self._targets(validation_data[1], vx.shape[0], "fit (validation_data)"))
        elif validation_split:
            cut = int(xs.shape[0] * (1.0 - float(validation_split)))  # Keras: the last samples, before shuffling
            if cut in (0, xs.shape[0]):
                raise ValueError(f"fit: validation_split {validation_split} leaves no training or no validation samples")
            val, xs, ts = (xs[cut:], ts[cut:]), xs[:cut], ts[:cut]

        history = History()
        history.params = {"epochs": epochs, "steps": -(-xs.shape[0] // bs), "verbose": verbose}
        cbs = [history] + list(callbacks or [])
        for cb in cbs:
            if not isinstance(cb, Callback):
                raise TypeError(f"fit: callbacks must be layerforge.callbacks.Callback instances, got {type(cb).__name__}")
            cb.set_model(self)
        self.stop_training = False
        for cb in cbs:
            cb.on_train_begin()
        rng = _random.generator()
        n = xs.shape[0]
        steps = -(-n // bs)
        for epoch in range(initial_epoch, epochs):
            for cb in cbs:
                cb.on_epoch_begin(epoch)
            order = rng.permutation(n) if shuffle else np.arange(n)
            bar = _progress(steps, f"Epoch {epoch + 1}/{epochs}", verbose == 1)
            tot_loss = tot_acc = 0.0
            seen = 0
            try:
                for step in range(steps):
                    idx = order[step * bs:(step + 1) * bs]
                    logs = self._train_step(xs[idx], ts[idx], "fit")
                    k = idx.size
                    seen += k
                    tot_loss += logs["loss"] * k
                    tot_acc += logs.get("accuracy", 0.0) * k
                    for cb in cbs:
                        cb.on_train_batch_end(step, logs)
                    if bar is not None:
                        bar.update(1)
                        if step % 10 == 0 or step == steps - 1:
                            bar.set_postfix(self._postfix(tot_loss / seen, tot_acc / seen))
                epoch_logs = {"loss": tot_loss / seen}
                if self.metrics:
                    epoch_logs["accuracy"] = tot_acc / seen
                if val is not None:
                    vres = self._evaluate_arrays(val[0], val[1], bs)
                    epoch_logs["val_loss"] = vres["loss"]
                    if self.metrics:
                        epoch_logs["val_accuracy"] = vres["accuracy"]
                if bar is not None:
                    bar.set_postfix({k.replace("accuracy", "acc"): f"{v:.4f}" for k, v in epoch_logs.items()})
            finally:
                if bar is not None:
                    bar.close()
            if verbose == 2:
                print(f"Epoch {epoch + 1}/{epochs} - " + " - ".join(f"{k}: {v:.4f}" for k, v in epoch_logs.items()),
                      file=sys.stderr)
            for cb in cbs:
                cb.on_epoch_end(epoch, epoch_logs)
            if self.stop_training:
                break
        for cb in cbs:
            cb.on_train_end()
        return history

    def _postfix(self, loss: float, acc: float) -> dict[str, str]:
        d = {"loss": f"{loss:.4f}"}
        if self.metrics:
            d["acc"] = f"{acc:.4f}"
        return d

    def _evaluate_arrays(self, x: np.ndarray, t: np.ndarray, bs: int, bar: Any = None) -> dict[str, float]:
        self._require_compiled("evaluate")
        fused = self._fused
        tot_loss = tot_acc = 0.0
        n = x.shape[0]
        for s in range(0, n, bs):
            out = self._forward(self._dev(x[s:s + bs]), training=False, logits=fused)
            tb = self._dev(t[s:s + bs])
            loss, _ = self._loss_and_grad(out, tb)
            k = out.shape[0]
            tot_loss += loss * k
            if self.metrics:
                tot_acc += self._accuracy(out, tb) * k
            if bar is not None:
                bar.update(1)
        res = {"loss": tot_loss / max(n, 1)}
        if self.metrics:
            res["accuracy"] = tot_acc / max(n, 1)
        return res

    def evaluate(self, x: Any = None, y: Any = None, batch_size: int | None = None, verbose: int | str = "auto",
                 return_dict: bool = False) -> list[float] | float | dict[str, float]:
        """[loss, accuracy] over (x, y) (the loss alone without metrics, a dict with return_dict)."""
        self._require_compiled("evaluate")
        bs = self._batch_size(batch_size)
        xs = self._inputs(x, "evaluate")
        ts = self._targets(y, xs.shape[0], "evaluate")
        verbose = 1 if verbose == "auto" else int(verbose)
        bar = _progress(-(-xs.shape[0] // bs), "Evaluate", verbose == 1)
        try:
            res = self._evaluate_arrays(xs, ts, bs, bar)
        finally:
            if bar is not None:
                bar.close()
        if return_dict:
            return res
        return [res["loss"], res["accuracy"]] if self.metrics else res["loss"]

    def predict(self, x: Any, batch_size: int | None = None, verbose: int | str = 0) -> np.ndarray:
        """Model outputs for x, in Keras's shapes (softmax probabilities for the documents' CNN)."""
        bs = self._batch_size(batch_size)
        xs = self._inputs(x, "predict")
        outs = [self._host(self._forward(self._dev(xs[s:s + bs]), training=False, logits=False))
                for s in range(0, xs.shape[0], bs)]
        if not outs:
            return np.empty((0,) + tuple(self.output_shape), np.float32)
        return self._to_keras(np.concatenate(outs))

    def __call__(self, x: Any) -> np.ndarray:
        return self.predict(x)

    # ------------------------------------------------------------------ weights
    def get_weights(self) -> list[np.ndarray]:
        return [w for layer in self.layers for w in layer.get_weights()]

    def set_weights(self, weights: Sequence[np.ndarray]) -> None:
        weights = list(weights)
        need = sum(len(layer.params) for layer in self.layers)
        if len(weights) != need:
            raise ValueError(f"set_weights: the model has {need} weight arrays, got {len(weights)}")
        i = 0
        for layer in self.layers:
            k = len(layer.params)
            layer.set_weights(weights[i:i + k])
            i += k

    def count_params(self) -> int:
        return sum(layer.count_params() for layer in self.layers)

    def save_weights(self, filepath: str | os.PathLike, overwrite: bool = True) -> None:
        """Write every weight to ``filepath`` (NumPy .npz content) atomically: a temporary file in the
        same folder, flushed to disk, then renamed over the target, so a crash mid-save leaves the
        previous file intact and loadable."""
        if not self.built:
            raise ValueError("save_weights: the model is not built yet (give input_shape or call fit first)")
        path = os.fspath(filepath)
        if not overwrite and os.path.exists(path):
            raise FileExistsError(f"save_weights: {path} exists and overwrite=False")
        meta = {"format": "layerforge-weights-1", "input_shape": list(self.input_shape),
                "layers": [[type(layer).__name__, [list(p.shape) for p in layer.params]] for layer in self.layers]}
        buf = io.BytesIO()
        np.savez(buf, __meta__=np.frombuffer(json.dumps(meta).encode(), np.uint8),
                 **{f"w{i:04d}": w for i, w in enumerate(self.get_weights())})
        folder = os.path.dirname(os.path.abspath(path))
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".weights", dir=folder)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(buf.getbuffer())
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise

    def load_weights(self, filepath: str | os.PathLike) -> None:
        """Load weights saved by save_weights into this (same-architecture) model."""
        path = os.fspath(filepath)
        try:
            with np.load(path, allow_pickle=False) as z:
                meta = json.loads(bytes(z["__meta__"]).decode())
                weights = [z[f"w{i:04d}"] for i in range(len(z.files) - 1)]
        except FileNotFoundError:
            raise
        except Exception as exc:
            raise ValueError(f"load_weights: {path} is not a layerforge weights file ({type(exc).__name__}: {exc})") from exc
        if not self.built:
            self.build(meta["input_shape"])
        mine = [[type(layer).__name__, [list(p.shape) for p in layer.params]] for layer in self.layers]
        if mine != meta["layers"]:
            raise ValueError(f"load_weights: {path} holds weights for layers {meta['layers']}, this model has {mine}")
        self.set_weights(weights)

    # ------------------------------------------------------------------ summary
    def summary(self, print_fn: Any = print) -> None:
        """Keras-style table: layer (type), output shape, parameter count, totals."""
        if not self.built:
            raise ValueError("summary: the model is not built yet; give the first layer input_shape=")
        rows = [(f"{layer.name} ({type(layer).__name__})", str((None,) + tuple(layer.output_shape)), f"{layer.count_params():,}")
                for layer in self.layers]
        w0 = max(28, *(len(r[0]) + 2 for r in rows))
        w1 = max(26, *(len(r[1]) + 2 for r in rows))
        line = "=" * (w0 + w1 + 12)
        print_fn(f'Model: "{self.name}"')
        if self._image_input:
            print_fn(f"(input (None, {', '.join(map(str, self.input_shape))}) channels_last, converted once to NCHW for the kernels)")
        print_fn("_" * (w0 + w1 + 12))
        print_fn(f"{'Layer (type)':{w0}s}{'Output Shape':{w1}s}{'Param #':>12s}")
        print_fn(line)
        for r in rows:
            print_fn(f"{r[0]:{w0}s}{r[1]:{w1}s}{r[2]:>12s}")
        print_fn(line)
        total = self.count_params()
        print_fn(f"Total params: {total:,}")
        print_fn(f"Trainable params: {total:,}")
        print_fn("Non-trainable params: 0")


def _progress(total: int, desc: str, enabled: bool) -> Any:
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="step", leave=True, dynamic_ncols=True, mininterval=0.2)


Model = Sequential

__all__ = ["Sequential", "Model"]
