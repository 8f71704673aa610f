"""Small array utilities with Keras's names and semantics (``keras.utils``).

``to_categorical(y, num_classes=None, dtype="float32")``: integer class labels of shape
``S`` -> one-hot array of shape ``S + (num_classes,)``, except that a trailing axis of size 1
is dropped first (so ``(N, 1)`` gives ``(N, num_classes)``), as Keras does.
NumPy only.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, DTypeLike

from ._random import set_random_seed  # Keras has it in keras.utils too


def _as_labels(y: ArrayLike) -> np.ndarray:
    """``y`` as an int64 array, refusing values that are not whole numbers."""
    a = np.asarray(y)
    kind = a.dtype.kind
    if kind == "b" or kind in "iu":
        if kind == "u" and a.size and a.max() > np.iinfo(np.int64).max:
            raise ValueError(f"to_categorical: label {a.max()} is too large")
        return a.astype(np.int64)
    if kind == "f":
        # Keras truncates floats silently (2.7 -> class 2); accepting only whole numbers
        # keeps float label arrays (common after np.loadtxt) working without that trap.
        if a.size:
            finite = np.isfinite(a)
            if not finite.all():
                i = int(np.flatnonzero(~finite.ravel())[0])
                raise ValueError(f"to_categorical: labels must be finite integers, got "
                                 f"{a.ravel()[i]} at flat index {i}")
            frac = a != np.round(a)
            if frac.any():
                i = int(np.flatnonzero(frac.ravel())[0])
                raise ValueError(f"to_categorical: labels must be integers, got "
                                 f"{a.ravel()[i]} at flat index {i}")
        return a.astype(np.int64)
    raise TypeError(f"to_categorical: labels must be integers, got dtype {a.dtype}")


def to_categorical(y: ArrayLike, num_classes: int | None = None,
                   dtype: DTypeLike = "float32") -> np.ndarray:
    """One-hot encode integer class labels, as ``keras.utils.to_categorical``.

    Args:
        y: class labels in ``0..num_classes-1``, any shape ``S`` (a scalar, ``(N,)``,
            ``(N, 1)``, ...); integer, bool, or float holding whole numbers.
        num_classes: number of classes; ``None`` infers ``max(y) + 1``.
        dtype: dtype of the result.

    Returns:
        Array of shape ``S[:-1] + (num_classes,)`` when ``S`` has more than one axis and its
        last is 1 (``(N, 1)`` -> ``(N, num_classes)``), else ``S + (num_classes,)``; 1 at each
        label, 0 elsewhere.

    Raises:
        ValueError: a label is negative, not a whole number, or >= ``num_classes``;
            ``num_classes`` < 1; ``y`` is empty and ``num_classes`` is None.
            (Keras wraps a negative label to the last classes and truncates 2.7 to 2.)
        TypeError: ``y`` is not numeric, or ``num_classes`` is not an integer.
    """
    labels = _as_labels(y)
    shape = labels.shape
    if len(shape) > 1 and shape[-1] == 1:
        shape = shape[:-1]
    flat = labels.reshape(-1)
    if flat.size and flat.min() < 0:
        i = int(np.argmin(flat))
        raise ValueError(f"to_categorical: labels must be >= 0, got {flat[i]} at flat index {i}")
    if num_classes is None:
        if not flat.size:
            raise ValueError("to_categorical: cannot infer num_classes from empty labels; "
                             "pass num_classes")
        num_classes = int(flat.max()) + 1
    else:
        if isinstance(num_classes, (bool, np.bool_)) or not isinstance(
                num_classes, (int, np.integer)):
            raise TypeError(f"to_categorical: num_classes must be an int, "
                            f"got {type(num_classes).__name__}")
        num_classes = int(num_classes)
        if num_classes < 1:
            raise ValueError(f"to_categorical: num_classes must be >= 1, got {num_classes}")
        if flat.size and flat.max() >= num_classes:
            i = int(np.argmax(flat))
            raise ValueError(f"to_categorical: label {flat[i]} at flat index {i} is out of "
                             f"range for num_classes={num_classes} (labels must be "
                             f"0..{num_classes - 1})")
    out = np.zeros((flat.size, num_classes), dtype=dtype)
    out[np.arange(flat.size), flat] = 1
    return out.reshape(shape + (num_classes,))


__all__ = ["to_categorical", "set_random_seed"]
