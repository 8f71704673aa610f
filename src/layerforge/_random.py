"""The process-wide random generator behind initialisers and shuffling.

``set_random_seed(seed)`` (re-exported as ``layerforge.utils.set_random_seed``, like Keras's)
makes model construction and training reproducible: the same seed on the same backend gives
the same weights and the same loss curve.
"""

from __future__ import annotations

import numpy as np

_rng = np.random.default_rng()


def set_random_seed(seed: int) -> None:
    """Seed initialisers and shuffling (and NumPy's legacy global generator, as Keras does)."""
    global _rng
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"set_random_seed: expected an int >= 0, got {seed!r}")
    _rng = np.random.default_rng(int(seed))
    np.random.seed(int(seed) % 2**32)


def generator() -> np.random.Generator:
    return _rng
