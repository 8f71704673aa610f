"""Framework adapters: layerforge's kernels as drop-in ops of other frameworks.

- ``layerforge.interop.torch``: every op registered as a ``torch.library.custom_op`` under the
  ``layerforge::`` namespace (fake/meta shapes and autograd included, so ``torch.compile``
  sees them as opaque nodes), a ``torch.nn.functional``-style API and ``lft.nn`` modules.
- ``layerforge.interop.jax``: every op as a ``jax.custom_vjp`` function, eager or under
  ``jax.jit`` (through ``jax.pure_callback``).

CuPy and NumPy need no adapter: ``layerforge.ops`` takes their arrays directly.

This package never imports a framework itself: ``import layerforge.interop`` stays as cheap as
``import layerforge`` (tests/test_interop_torch.py checks that torch/jax are not pulled in). Import
the submodule you need; ``frameworks()`` says which are installed without importing them.
"""

from __future__ import annotations

import importlib.util

__all__ = ["frameworks"]


def frameworks() -> dict[str, bool]:
    """Which adapter frameworks are importable here, found without importing them."""
    return {name: importlib.util.find_spec(name) is not None for name in ("torch", "jax", "cupy")}


def check_rnn_activation(op: str, activation: object) -> None:
    """The adapters' rnn activation rule: exactly one of ``ops.RNN_ACTIVATIONS`` as a str
    (stricter than ``ops.rnn``, which also takes None and any case). Raises TypeError or
    ValueError naming what was given."""
    from ..ops import RNN_ACTIVATIONS

    if not isinstance(activation, str):
        raise TypeError(f"layerforge {op}: activation must be a str, one of {RNN_ACTIVATIONS}, "
                        f"got {type(activation).__name__}")
    if activation not in RNN_ACTIVATIONS:
        raise ValueError(f"layerforge {op}: activation must be one of {RNN_ACTIVATIONS}, got {activation!r}")
