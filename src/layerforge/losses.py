"""Losses as Keras names them. Each returns the batch-mean loss and its gradient with respect to
the model output; with ``logits=True`` the output is pre-softmax and cross-entropy runs as the
fused op (ops.cross_entropy and its fused gradient).

Shapes: output (N, C); sparse targets (N,) or (N, 1) integer class indices; categorical targets
(N, C) one-hot or probabilities; MSE targets the output's shape.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import ops
from ._device import array_module as _xp

_EPS = 1e-7  # Keras's probability clip, so log(0) never appears on the non-fused path


class Loss:
    name = "loss"
    from_logits = False
    is_crossentropy = False

    def prepare_targets(self, y: Any, out_shape: tuple[int, ...]) -> np.ndarray:
        """Validated targets for model outputs of shape (N,) + out_shape."""
        raise NotImplementedError

    def value_and_grad(self, t: np.ndarray, out: np.ndarray, logits: bool, backend: str | None) -> tuple[float, np.ndarray]:
        raise NotImplementedError

    def __call__(self, y_true: Any, y_pred: Any) -> float:
        """Keras-style standalone use: loss(y_true, y_pred) -> the batch-mean loss."""
        y_pred = np.asarray(y_pred, np.float32)
        t = self.prepare_targets(y_true, y_pred.shape[1:])
        return self.value_and_grad(t, y_pred, self.from_logits, None)[0]

    def __repr__(self) -> str:
        return f"{type(self).__name__}(from_logits={self.from_logits})"


class SparseCategoricalCrossentropy(Loss):
    """Cross-entropy against integer class indices."""

    name = "sparse_categorical_crossentropy"
    is_crossentropy = True

    def __init__(self, from_logits: bool = False) -> None:
        self.from_logits = bool(from_logits)

    def prepare_targets(self, y: Any, out_shape: tuple[int, ...]) -> np.ndarray:
        y = np.asarray(y)
        if y.ndim == 2 and y.shape[1] == 1:
            y = y[:, 0]
        if y.ndim != 1:
            raise ValueError(f"{self.name}: targets must be class indices of shape (N,) or (N, 1), got {y.shape}"
                             + (" (one-hot targets go with 'categorical_crossentropy')" if y.ndim == 2 else ""))
        if y.dtype.kind == "f":
            if not np.all(np.isfinite(y)) or np.any(y != np.round(y)):
                raise ValueError(f"{self.name}: targets must be whole class indices, got non-integer values")
        elif y.dtype.kind not in "iu":
            raise TypeError(f"{self.name}: targets must be integer class indices, got dtype {y.dtype}")
        classes = out_shape[-1]
        if y.size and (y.min() < 0 or y.max() >= classes):
            raise ValueError(f"{self.name}: labels must lie in [0, {classes}) for a {classes}-way output, "
                             f"got values in [{y.min()}, {y.max()}]")
        return y.astype(np.int64)

    def value_and_grad(self, t, out, logits, backend):
        if logits:
            loss = float(ops.cross_entropy(out, t, backend=backend))
            return loss, ops.cross_entropy_backward(1.0, out, t, backend=backend)
        n = out.shape[0]
        xp = _xp(out)
        rows = xp.arange(n)
        p = xp.clip(out[rows, t], _EPS, 1 - _EPS)
        grad = xp.zeros_like(out)
        grad[rows, t] = -1.0 / (p * n)
        return float(-xp.log(p).mean()), grad


class CategoricalCrossentropy(Loss):
    """Cross-entropy against one-hot (or probability) targets."""

    name = "categorical_crossentropy"
    is_crossentropy = True

    def __init__(self, from_logits: bool = False) -> None:
        self.from_logits = bool(from_logits)

    def prepare_targets(self, y: Any, out_shape: tuple[int, ...]) -> np.ndarray:
        y = np.asarray(y)
        if y.dtype.kind not in "fiu":
            raise TypeError(f"{self.name}: targets must be numeric, got dtype {y.dtype}")
        if y.shape[1:] != tuple(out_shape):
            hint = " (integer labels go with 'sparse_categorical_crossentropy' or to_categorical)" if y.ndim == 1 else ""
            raise ValueError(f"{self.name}: targets must have shape (N,) + {tuple(out_shape)}, got {y.shape}{hint}")
        if not np.all(np.isfinite(y)) or y.size and y.min() < 0:
            raise ValueError(f"{self.name}: targets must be finite and non-negative")
        return y.astype(np.float32)

    def value_and_grad(self, t, out, logits, backend):
        n = out.shape[0]
        xp = _xp(out)
        if logits and bool(xp.all(t.max(axis=1) == 1.0)) and bool(xp.all(t.sum(axis=1) == 1.0)):
            labels = t.argmax(axis=1)  # exactly one-hot: the fused op is the same function
            loss = float(ops.cross_entropy(out, labels, backend=backend))
            return loss, ops.cross_entropy_backward(1.0, out, labels, backend=backend)
        if logits:
            lsm = ops.log_softmax(out, 1, backend=backend)
            loss = float(-(t * lsm).sum() / n)
            return loss, (xp.exp(lsm) * t.sum(axis=1, keepdims=True) - t) / n
        p = xp.clip(out, _EPS, 1 - _EPS)
        return float(-(t * xp.log(p)).sum() / n), (-t / p / n).astype(out.dtype)


class MeanSquaredError(Loss):
    """mean((y_pred - y_true)^2) over every element."""

    name = "mean_squared_error"

    def prepare_targets(self, y: Any, out_shape: tuple[int, ...]) -> np.ndarray:
        y = np.asarray(y)
        if y.dtype.kind not in "fiu":
            raise TypeError(f"{self.name}: targets must be numeric, got dtype {y.dtype}")
        if y.ndim == 1 and tuple(out_shape) == (1,):
            y = y[:, None]
        if y.shape[1:] != tuple(out_shape):
            raise ValueError(f"{self.name}: targets must have shape (N,) + {tuple(out_shape)}, got {y.shape}")
        if not np.all(np.isfinite(y)):
            raise ValueError(f"{self.name}: targets contain NaN or infinity")
        return y.astype(np.float32)

    def value_and_grad(self, t, out, logits, backend):
        diff = out - t
        return float((diff * diff).mean(dtype=np.float64)), (2.0 / max(diff.size, 1)) * diff


_NAMES = {
    "sparse_categorical_crossentropy": SparseCategoricalCrossentropy,
    "categorical_crossentropy": CategoricalCrossentropy,
    "mse": MeanSquaredError, "mean_squared_error": MeanSquaredError,
}


def get(loss: str | Loss) -> Loss:
    """A Loss from a Keras name or an instance."""
    if isinstance(loss, Loss):
        return loss
    if isinstance(loss, str) and loss.lower() in _NAMES:
        return _NAMES[loss.lower()]()
    raise ValueError(f"loss must be one of {sorted(_NAMES)} or a layerforge.losses.Loss, got {loss!r}")


__all__ = ["Loss", "SparseCategoricalCrossentropy", "CategoricalCrossentropy", "MeanSquaredError", "get"]
