"""layerforge: hand-written C++/CUDA kernels for CNN and RNN layers, with Numba fallbacks.

Public names: ``layerforge.ops`` (the functional op set), the Keras-like API in
``layers``, ``models``, ``losses``, ``optimizers``, ``callbacks``, ``datasets``, ``utils``,
and ``info()``, ``set_num_threads()``, ``get_num_threads()``, ``steady_allocator()``,
``available_backends()``, ``default_backend()``. Importing the package
needs only NumPy: compiled modules, Numba and frameworks load on first use.
"""

from __future__ import annotations

from . import ops
from ._backend import available as available_backends
from ._backend import default_backend
from ._info import get_num_threads, info, set_num_threads, steady_allocator

__version__ = "0.1.0"

__all__ = [
    "__version__", "ops", "info", "available_backends", "default_backend",
    "get_num_threads", "set_num_threads", "steady_allocator",
    "layers", "models", "losses", "optimizers", "callbacks", "datasets", "utils",
]

_SUBMODULES = {"layers", "models", "losses", "optimizers", "callbacks", "datasets", "utils", "initializers"}


def __getattr__(name: str):
    """``layerforge.models`` etc. without importing them at package import time."""
    if name in _SUBMODULES:
        import importlib

        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module 'layerforge' has no attribute {name!r}")
