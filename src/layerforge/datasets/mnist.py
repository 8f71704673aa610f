"""MNIST handwritten digits, read from local IDX files (``keras.datasets.mnist`` shapes).

``load_data()`` -> ``((x_train, y_train), (x_test, y_test))``: images uint8 ``(60000, 28, 28)``
and ``(10000, 28, 28)``, labels uint8 ``(60000,)`` and ``(10000,)`` with values 0..9.

Nothing is downloaded: the four files are looked for, in order, in the ``path=`` folder,
``$LAYERFORGE_DATA/mnist``, ``$LAYERFORGE_DATA``, ``/usr/share/datasets/mnist`` and
``$XDG_CACHE_HOME/layerforge/mnist`` (default ``~/.cache/layerforge/mnist``).
Keras's own cache (``~/.keras/datasets/mnist.npz``) is a different format and is not read.
"""

from __future__ import annotations

import os

from . import _idx

__all__ = ["load_data", "NAME", "SYSTEM_DIR"]

NAME = "mnist"
SYSTEM_DIR = "/usr/share/datasets/mnist"
_TITLE = "MNIST"
_HOW_TO_GET = (
    "To get it: download train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, "
    "t10k-images-idx3-ubyte.gz and t10k-labels-idx1-ubyte.gz from the MNIST project page "
    "(http://yann.lecun.com/exdb/mnist/) into one of the folders above, or set "
    "LAYERFORGE_DATA to the folder holding them (or to its parent, with them in mnist/)."
)


def load_data(path: str | os.PathLike | None = None) -> _idx.ArraySets:
    """Load MNIST from the first folder in the search order holding all four IDX files.

    Args:
        path: a folder holding the files, then the only place looked at (not a file name, unlike Keras's ``path=``).

    Returns:
        ``((x_train, y_train), (x_test, y_test))``: uint8 images ``(N, 28, 28)``, uint8
        labels ``(N,)`` in 0..9.

    Raises:
        FileNotFoundError: no folder holds the four files; the message lists every place
            looked at and how to get the data.
        ValueError: a file is corrupt or truncated (named in the message).
    """
    _, files = _idx.locate_set(_TITLE, path, NAME, SYSTEM_DIR, _HOW_TO_GET)
    return _idx.load_set(files)
