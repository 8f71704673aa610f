"""Data sets in Keras's shapes, read from local files only (nothing is ever downloaded).

``from layerforge.datasets import fashion_mnist; fashion_mnist.load_data()`` returns
``((x_train, y_train), (x_test, y_test))`` with uint8 images ``(N, 28, 28)`` and uint8
labels ``(N,)``, like ``keras.datasets.fashion_mnist``. ``mnist`` is the same for MNIST.
Fashion-MNIST also ships a small embedded sample (``fashion_mnist.load_sample()``).

Importing needs only NumPy and the standard library.
"""

from __future__ import annotations

from . import fashion_mnist, mnist

__all__ = ["fashion_mnist", "mnist"]
