"""Optimisers with Keras's names, defaults and update rules. Updates are in place, with slot
and scratch buffers allocated once (first step), so a training loop allocates nothing here.
``lr`` is accepted as the old Keras alias of ``learning_rate``."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from . import ops


class Optimizer:
    def __init__(self, learning_rate: float = 0.001, lr: float | None = None, **kwargs: Any) -> None:
        if kwargs:
            raise TypeError(f"{type(self).__name__}: unexpected arguments {sorted(kwargs)}")
        rate = learning_rate if lr is None else lr
        if not isinstance(rate, (int, float)) or isinstance(rate, bool) or not np.isfinite(rate) or rate <= 0:
            raise ValueError(f"{type(self).__name__}: learning_rate must be a positive number, got {rate!r}")
        self.learning_rate = float(rate)
        self.iterations = 0
        # Kernel backend of the fused updates (None: the default); Sequential.compile sets the model's.
        self.backend: str | None = None
        self._slots: list[list[np.ndarray]] | None = None

    def _make_slots(self, p: np.ndarray) -> list[np.ndarray]:
        return []

    def apply(self, params: Sequence[np.ndarray], grads: Sequence[np.ndarray]) -> None:
        """One update of every param in place from its gradient (same order, same shapes)."""
        if self._slots is None:
            self._slots = [self._make_slots(p) for p in params]
        self.iterations += 1
        for p, g, s in zip(params, grads, self._slots):
            self._update(p, g.astype(p.dtype, copy=False), s)

    def _update(self, p: np.ndarray, g: np.ndarray, slots: list[np.ndarray]) -> None:
        raise NotImplementedError

    def get_config(self) -> dict[str, Any]:
        return {"name": type(self).__name__, "learning_rate": self.learning_rate}


class SGD(Optimizer):
    """v = momentum*v - lr*g; w += v (nesterov: w += momentum*v - lr*g). Keras default lr 0.01."""

    def __init__(self, learning_rate: float = 0.01, momentum: float = 0.0, nesterov: bool = False, **kwargs: Any) -> None:
        super().__init__(learning_rate, **kwargs)
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"SGD: momentum must be in [0, 1), got {momentum!r}")
        self.momentum = float(momentum)
        self.nesterov = bool(nesterov)

    def _make_slots(self, p):
        return [np.zeros_like(p), np.empty_like(p)] if self.momentum else [np.empty_like(p)]

    def _update(self, p, g, slots):
        lr = self.learning_rate
        if not self.momentum:
            np.multiply(g, lr, out=slots[0])
            p -= slots[0]
            return
        v, tmp = slots
        v *= self.momentum
        np.multiply(g, lr, out=tmp)
        v -= tmp
        if self.nesterov:
            p -= tmp
            np.multiply(v, self.momentum, out=tmp)
            p += tmp
        else:
            p += v


class Adam(Optimizer):
    """Keras's Adam: m, v moments; w -= lr*sqrt(1-b2^t)/(1-b1^t) * m / (sqrt(v) + eps)."""

    def __init__(self, learning_rate: float = 0.001, beta_1: float = 0.9, beta_2: float = 0.999,
                 epsilon: float = 1e-7, **kwargs: Any) -> None:
        super().__init__(learning_rate, **kwargs)
        for name, b in (("beta_1", beta_1), ("beta_2", beta_2)):
            if not 0.0 <= b < 1.0:
                raise ValueError(f"Adam: {name} must be in [0, 1), got {b!r}")
        self.beta_1, self.beta_2, self.epsilon = float(beta_1), float(beta_2), float(epsilon)

    def _make_slots(self, p):
        return [np.zeros_like(p), np.zeros_like(p)]

    def _update(self, p, g, slots):
        m, v = slots
        t = self.iterations
        alpha = self.learning_rate * np.sqrt(1.0 - self.beta_2 ** t) / (1.0 - self.beta_1 ** t)
        # One fused pass per tensor (ops.adam_update), instead of ten array operations.
        ops.adam_update(p, g, m, v, alpha=alpha, beta_1=self.beta_1, beta_2=self.beta_2,
                        epsilon=self.epsilon, backend=self.backend)


class RMSprop(Optimizer):
    """Keras's RMSprop (no momentum): v = rho*v + (1-rho)*g^2; w -= lr*g/(sqrt(v)+eps)."""

    def __init__(self, learning_rate: float = 0.001, rho: float = 0.9, epsilon: float = 1e-7, **kwargs: Any) -> None:
        super().__init__(learning_rate, **kwargs)
        if not 0.0 <= rho < 1.0:
            raise ValueError(f"RMSprop: rho must be in [0, 1), got {rho!r}")
        self.rho, self.epsilon = float(rho), float(epsilon)

    def _make_slots(self, p):
        return [np.zeros_like(p), np.empty_like(p)]

    def _update(self, p, g, slots):
        v, tmp = slots
        v *= self.rho
        np.multiply(g, g, out=tmp)
        tmp *= 1.0 - self.rho
        v += tmp
        np.sqrt(v, out=tmp)
        tmp += self.epsilon
        np.divide(g, tmp, out=tmp)
        tmp *= self.learning_rate
        p -= tmp


_NAMES = {"sgd": SGD, "adam": Adam, "rmsprop": RMSprop}


def get(optimizer: str | Optimizer) -> Optimizer:
    """An Optimizer from a Keras name ('adam', 'sgd', 'rmsprop') or an instance."""
    if isinstance(optimizer, Optimizer):
        return optimizer
    if isinstance(optimizer, str) and optimizer.lower() in _NAMES:
        return _NAMES[optimizer.lower()]()
    raise ValueError(f"optimizer must be one of {sorted(_NAMES)} or a layerforge.optimizers.Optimizer, got {optimizer!r}")


__all__ = ["Optimizer", "SGD", "Adam", "RMSprop", "get"]
