"""The one place that imports compiled or optional code, and picks the backend for a call.

Backends are modules exposing the same *kernel interface*. ops.py validates and allocates;
a kernel only computes. Every kernel takes C-contiguous NumPy arrays of one float dtype
(float32 or float64; labels/indices int64), outputs first, then inputs, then int params;
outputs are preallocated by the caller and OVERWRITTEN; a gradient output given as None is
not computed. Kernels never allocate their outputs and never see bad shapes.

Kernel interface (both ``_C`` and ``_numba`` implement all of it):

    conv2d_forward(y, x, w, b|None, sh, sw, ph, pw, dh, dw)
        x (N,C,H,W), w (K,C,R,S), b (K,), y (N,K,OH,OW); ph/pw are top/left padding.
    conv2d_backward(dx|None, dw|None, db|None, dy, x, w, sh, sw, ph, pw, dh, dw)
    max_pool2d_forward(y, indices|None, x, kh, kw, sh, sw, ph, pw)
        indices int64 (N,C,OH,OW): offset h*W + w in the input plane.
    max_pool2d_backward(dx, dy, indices, kh, kw, sh, sw, ph, pw) -> int
        indices outside [0, H*W) are skipped and counted (ops.py raises on a count > 0;
        the CUDA backend returns None and skips them).
    avg_pool2d_forward(y, x, kh, kw, sh, sw, ph, pw, count_include_pad)
    avg_pool2d_backward(dx, dy, kh, kw, sh, sw, ph, pw, count_include_pad)
    linear_forward(y, x, w, b|None)                 x (M,IN), w (OUT,IN), y (M,OUT)
    linear_backward(dx|None, dw|None, db|None, dy, x, w)
    softmax_forward(y, x)  /  log_softmax_forward(y, x)        3-D (outer, dim, inner)
    softmax_backward(dx, dy, y)  /  log_softmax_backward(dx, dy, y)
    cross_entropy_mean(mean, logits, labels) -> int
        mean 0-d, logits (N,C), labels int64 (N,): the mean row loss, summed in float64.
        Host backends only; the CUDA backend has cross_entropy_forward(loss, logits, labels)
        instead, loss (N,), whose mean ops.py takes on the device.
    cross_entropy_backward(dlogits, logits, labels, scale) -> int
        Both count labels outside [0, C) and give NaN for their rows (ops.py raises on a
        count > 0); the CUDA backend gives the NaN rows and returns None.
    relu_forward(y, x), sigmoid_forward(y, x), tanh_forward(y, x)       any shape, all alike
    relu_backward(dx, dy, x), sigmoid_backward(dx, dy, y), tanh_backward(dx, dy, y)
    rnn_forward(hs, x, w_xh, w_hh, b|None, h0|None, activation)
        x (N,T,I), w_xh (H,I), w_hh (H,H), b (H,), h0 (N,H), hs (N,T,H); activation is
        'tanh' | 'sigmoid' | 'relu' | 'linear'. Optional: ops.rnn composes linear and the
        activations per step for a backend without it (the CUDA backend today).
    rnn_backward(dx|None, dw_xh|None, dw_hh|None, db|None, dh0|None, dhs, x, w_xh, w_hh, h0|None, hs, activation)

Optional (ops.py composes the three ops where a backend lacks them; _C and _numba have them):

    conv2d_relu_pool_forward(y, indices, x, w, b|None, oh, ow, sh, sw, ph, pw, dh, dw)
        max_pool2d(relu(conv2d(x)), 2) with indices; oh, ow: the convolution output (>= 2).
    conv2d_relu_pool_backward(dx|None, dw|None, db|None, dy, indices, y, x, w, oh, ow, sh, sw, ph, pw, dh, dw)

The semantics (NaN and tie rules, gradient formulas) are those of csrc/ops.h and
_reference.py.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType
from typing import Any

BACKENDS: tuple[str, ...] = ("cpp", "numba", "cuda")
_MODULES = {"cpp": "layerforge._C", "numba": "layerforge._numba", "cuda": "layerforge._cuda"}
_loaded: dict[str, ModuleType | None] = {}
_errors: dict[str, str] = {}
_resolved: dict[tuple[Any, Any], tuple[str, ModuleType]] = {}
# Threads asked of layerforge.set_num_threads before the Numba backend loaded (it reads this).
numba_threads: int | None = None

# The raw value of LAYERFORGE_BACKEND, read on every op call: os.environ.get costs about
# 0.7 us (key encoding, value decoding), a lookup in the mapping behind it 0.05 us. That
# mapping (os.environ._data) is what os.environ and putenv-through-os.environ update, so a
# change made at run time is still seen; platforms without it use os.environ.get.
_ENV_DATA: Any = getattr(os.environ, "_data", None)
_ENV_KEY: Any = os.environ.encodekey("LAYERFORGE_BACKEND") if hasattr(os.environ, "encodekey") else None


def _env_backend_raw() -> Any:
    if _ENV_DATA is not None and _ENV_KEY is not None:
        return _ENV_DATA.get(_ENV_KEY)
    return os.environ.get("LAYERFORGE_BACKEND")


def load(name: str) -> ModuleType | None:
    """Import backend ``name`` once; None (with the reason kept) when it is unavailable."""
    if name not in _loaded:
        try:
            _loaded[name] = importlib.import_module(_MODULES[name])
        except Exception as exc:  # missing build, missing numba, broken driver: never fatal
            _loaded[name] = None
            _errors[name] = f"{type(exc).__name__}: {exc}"
    return _loaded[name]


def unavailable_reason(name: str) -> str | None:
    load(name)
    return _errors.get(name)


def available() -> list[str]:
    """CPU backends that can run ops here, in automatic-choice order."""
    return [n for n in ("cpp", "numba") if load(n) is not None]


def default_backend() -> str:
    """LAYERFORGE_BACKEND if set, else C++ when _C imports, else Numba."""
    env = os.environ.get("LAYERFORGE_BACKEND", "").strip().lower()
    if env and env != "auto":
        return _check_name(env, "LAYERFORGE_BACKEND")  # 'cuda' here: host arrays are refused by resolve
    avail = available()
    if not avail:
        raise RuntimeError(
            "no CPU backend: the compiled module layerforge._C failed to import "
            f"({_errors.get('cpp')}) and Numba is unavailable ({_errors.get('numba')})"
        )
    return avail[0]


def _check_name(name: str, where: str) -> str:
    if name not in BACKENDS:
        raise ValueError(f"{where}: expected one of {BACKENDS} or 'auto', got {name!r}")
    return name


def resolve(backend: str | None, device: bool = False, where: str = "backend") -> tuple[str, Any]:
    """(name, kernels) for a call's ``backend=`` argument (None or 'auto' = the default).

    ``device``: the call's arrays live on a CUDA device, so only the CUDA backend can run it;
    its kernels come wrapped by _device.cuda_kernels (same interface as _C).
    """
    key = None
    if not device and (backend is None or type(backend) is str):
        # The host path of every op call: cached per (backend, LAYERFORGE_BACKEND).
        key = (backend, _env_backend_raw())
        hit = _resolved.get(key)
        if hit is not None:
            return hit
    if backend is not None and not isinstance(backend, str):
        raise TypeError(f"{where}: backend must be a str such as 'cpp' or 'numba', got {type(backend).__name__}")
    asked = None if backend is None or backend == "auto" else _check_name(backend.lower(), f"{where}: backend")
    if device:
        if asked not in (None, "cuda"):
            raise ValueError(f"{where}: backend={asked!r} runs on the CPU but the arrays are on a CUDA device; "
                             "use backend='cuda' or leave it unset")
        mod = load("cuda")
        if mod is None:
            raise RuntimeError(f"{where}: CUDA arrays need layerforge._cuda, which is not available here: "
                               f"{_errors.get('cuda')}")
        if not hasattr(mod, "has_kernels"):
            raise RuntimeError(f"{where}: this build of layerforge._cuda has no op kernels")
        from . import _device

        return "cuda", _device.cuda_kernels(mod)
    name = asked or default_backend()
    if name == "cuda":
        raise ValueError(f"{where}: backend 'cuda' needs CUDA arrays (CuPy arrays, torch CUDA tensors, ...); "
                         "got host arrays")
    mod = load(name)
    if mod is None:
        raise RuntimeError(f"{where}: backend {name!r} is not available here: {_errors.get(name)}")
    if key is not None:
        _resolved[key] = (name, mod)
    return name, mod
