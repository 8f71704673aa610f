"""Weight initialisers as Keras defines them (float32), drawing from a caller's Generator so a
seed reproduces a model exactly."""

from __future__ import annotations

import numpy as np


def glorot_uniform(rng: np.random.Generator, shape: tuple[int, ...], fan_in: int, fan_out: int) -> np.ndarray:
    """U(-l, l) with l = sqrt(6 / (fan_in + fan_out)); Keras's default kernel initialiser."""
    limit = np.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-limit, limit, shape).astype(np.float32)


def orthogonal(rng: np.random.Generator, shape: tuple[int, int], gain: float = 1.0) -> np.ndarray:
    """A random orthogonal matrix (QR of a Gaussian, signs fixed); Keras's recurrent initialiser."""
    a = rng.standard_normal((max(shape), min(shape)))
    q, r = np.linalg.qr(a)
    q *= np.sign(np.diag(r))
    q = q if shape[0] >= shape[1] else q.T
    return (gain * q[: shape[0], : shape[1]]).astype(np.float32)
