"""layerforge's kernels as JAX functions with ``jax.custom_vjp``: usable under jax.grad and jax.jit.

    import layerforge.interop.jax as lfj

    loss = lambda p: lfj.cross_entropy(lfj.linear(lfj.relu(lfj.conv2d(x, p["w"])).reshape(n, -1), p["v"]), y)
    grads = jax.jit(jax.grad(loss))(params)

Every op of ``layerforge.ops`` with a gradient is here with the same names, semantics and
parameters (torch.nn.functional's: NCHW, conv weights (K, C, R, S), dense weights (OUT, IN),
an explicit softmax ``dim``): conv2d, max_pool2d, avg_pool2d, linear, softmax, log_softmax,
cross_entropy (mean over the batch, integer labels), relu, sigmoid, tanh, and rnn (an Elman
RNN, batch first: x (N, T, I) -> every hidden state (N, T, H), one kernel call per direction
for the whole sequence). Each is a ``jax.custom_vjp`` whose forward and backward both call
``layerforge.ops``; the non-array parameters (stride, padding, dim, activation, ...) are static.

How a call reaches the kernels:

- Eager, on CPU: ``np.asarray`` of the JAX array (a zero-copy read-only view of a CPU buffer),
  the ``layerforge.ops`` call, and ``jnp.asarray`` of the result.
- Traced (``jax.jit``, ``jax.vmap``, grad of a jitted function): ``jax.pure_callback`` with the
  result's ``ShapeDtypeStruct``, so XLA calls back into the same host kernels at run time
  (every op, rnn included: its forward and its BPTT are one callback each).
  Output shapes are computed (and the parameters validated) while tracing. Under vmap the
  callback runs once per batch element (``vmap_method="sequential"``). Under jit on a GPU,
  XLA copies the operands to the host and back around the callback: correct, but the CPU
  kernels do the work. Running the CUDA kernels inside a jitted program would need an XLA
  FFI custom call, which this adapter does not have.
- Eager, on a GPU: the JAX arrays go to ``layerforge.ops`` as they are; its device path
  (issue 4) wraps any CUDA ``__dlpack__`` producer without a copy (through CuPy) and returns
  CuPy arrays, which come back to JAX through ``jnp.from_dlpack``. UNVERIFIED: written against
  that contract, never run (no GPU, no CUDA op set yet); the kernels would run on CuPy's
  current stream, and DLPack's stream handshake is what orders them after JAX's work.

dtypes: float32 and float64 (the latter needs ``jax_enable_x64``); labels any integer dtype.
"""

from __future__ import annotations

from functools import partial
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from .. import ops
from . import check_rnn_activation

__all__ = [
    "conv2d", "max_pool2d", "avg_pool2d", "linear", "softmax", "log_softmax",
    "cross_entropy", "relu", "sigmoid", "tanh", "rnn",
]

_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


# ---------------------------------------------------------------------------- calling layerforge.ops

def _spec(shape: Sequence[int], dtype: Any) -> jax.ShapeDtypeStruct:
    return jax.ShapeDtypeStruct(tuple(int(d) for d in shape), dtype)


def _on_gpu(a: Any) -> bool:
    return isinstance(a, jax.Array) and any(d.platform != "cpu" for d in a.devices())


def _cast(out: Any, spec: Any) -> Any:
    # ops returns int64 pooling indices; JAX without x64 wants int32 (and pure_callback checks
    # dtypes exactly). Float results already have the inputs' dtype: no copy.
    return jax.tree.map(lambda o, s: o if o.dtype == s.dtype else o.astype(s.dtype), out, spec)


def _run(fn: Callable[..., Any], spec: Any, *args: Any) -> Any:
    """fn(*args) for a layerforge.ops call fn; args are JAX arrays or None, spec the result's
    ShapeDtypeStruct (or a tuple of them). Returns JAX arrays."""
    present = [a for a in args if a is not None]

    def fill(arrays: Sequence[Any]) -> list[Any]:
        it = iter(arrays)
        return [None if a is None else next(it) for a in args]

    if any(isinstance(a, jax.core.Tracer) for a in present):
        def host(*arrays: Any) -> Any:
            # np.asarray: newer JAX hands callbacks CPU jax.Arrays; this views them, no copy
            return _cast(fn(*fill([np.asarray(a) for a in arrays])), spec)
        return jax.pure_callback(host, spec, *present, vmap_method="sequential")
    if any(_on_gpu(a) for a in present):
        # UNVERIFIED (see the header): ops' device path takes the CUDA arrays via DLPack.
        out = _cast(fn(*args), spec)
        return jax.tree.map(jnp.from_dlpack, out)
    out = _cast(fn(*fill([np.asarray(a) for a in present])), spec)
    return jax.tree.map(jnp.asarray, out)


# ---------------------------------------------------------------------------- validation at trace time

def _dtype(a: Any) -> np.dtype:
    # never np.asarray a tracer: under jit that raises
    return np.dtype(a.dtype if hasattr(a, "dtype") else np.asarray(a).dtype)


def _float(op: str, name: str, a: Any) -> Any:
    dt = _dtype(a)
    if dt not in _FLOATS:
        raise TypeError(f"layerforge {op}: {name} must be float32 or float64, got dtype {dt}")
    return a


def _ndim(op: str, name: str, a: Any, ndim: int) -> None:
    if len(a.shape) != ndim:
        raise ValueError(f"layerforge {op}: {name} must be {ndim}-D, got shape {tuple(a.shape)}")


def _pair(op: str, name: str, v: Any) -> tuple[int, int]:
    """A hashable (a, b) for custom_vjp's static arguments."""
    if isinstance(v, (tuple, list)):
        if len(v) != 2:
            raise ValueError(f"layerforge {op}: {name} must be an int or a pair of ints, got {v!r}")
        a, b = v
    else:
        a = b = v
    for i in (a, b):
        if isinstance(i, bool) or not isinstance(i, (int, np.integer)):
            raise TypeError(f"layerforge {op}: {name} must be an int or a pair of ints, got {v!r}")
    return int(a), int(b)


def _pool_shape(op: str, shape: Sequence[int], k: tuple[int, int], s: tuple[int, int],
                p: tuple[int, int]) -> tuple[int, int, int, int]:
    """(N, C, OH, OW), refusing what ops would refuse, while tracing rather than at run time."""
    if min(k) < 1 or min(s) < 1 or min(p) < 0:
        raise ValueError(f"layerforge {op}: need kernel_size >= 1, stride >= 1, padding >= 0; got {k}, {s}, {p}")
    if 2 * p[0] > k[0] or 2 * p[1] > k[1]:
        raise ValueError(f"layerforge {op}: padding {p} must be at most half the kernel size {k}")
    hp, wp = shape[2] + 2 * p[0], shape[3] + 2 * p[1]
    if k[0] > hp or k[1] > wp:
        raise ValueError(f"layerforge {op}: kernel_size {k} is larger than the padded input {(hp, wp)}")
    return (shape[0], shape[1], (hp - k[0]) // s[0] + 1, (wp - k[1]) // s[1] + 1)


def _like(a: Any) -> jax.ShapeDtypeStruct:
    return _spec(a.shape, a.dtype)


# ---------------------------------------------------------------------------- conv2d

@partial(jax.custom_vjp, nondiff_argnums=(3, 4, 5))
def _conv2d(x, w, b, stride, padding, dilation):
    return _conv2d_fwd(x, w, b, stride, padding, dilation)[0]


def _conv2d_fwd(x, w, b, stride, padding, dilation):
    shape = ops.conv2d_output_shape(x.shape, w.shape, stride, padding, dilation)
    y = _run(lambda x, w, b: ops.conv2d(x, w, b, stride, padding, dilation), _spec(shape, x.dtype), x, w, b)
    return y, (x, w, b)


def _conv2d_bwd(stride, padding, dilation, res, g):
    x, w, b = res
    specs = (_like(x), _like(w)) + ((_like(b),) if b is not None else ())
    n = len(specs)
    grads = _run(lambda g, x, w, b: ops.conv2d_backward(g, x, w, b, stride, padding, dilation)[:n], specs, g, x, w, b)
    return grads[0], grads[1], (grads[2] if b is not None else None)


_conv2d.defvjp(_conv2d_fwd, _conv2d_bwd)


def conv2d(x: Any, w: Any, b: Any = None, stride: Any = 1, padding: Any = 0, dilation: Any = 1) -> jax.Array:
    """2-D cross-correlation. x (N, C, H, W), w (K, C, R, S), b (K,) -> (N, K, OH, OW).

    padding: int, pair, 'valid' or 'same' (stride 1; an even kernel's extra row/column goes
    bottom/right, as in PyTorch).
    """
    op = "conv2d"
    _float(op, "x", x)
    _float(op, "w", w)
    if b is not None:
        _float(op, "b", b)
    _ndim(op, "x", x, 4)
    _ndim(op, "w", w, 4)
    pad = padding if isinstance(padding, str) else _pair(op, "padding", padding)
    return _conv2d(x, w, b, _pair(op, "stride", stride), pad, _pair(op, "dilation", dilation))


# ---------------------------------------------------------------------------- pooling

@partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3))
def _max_pool2d(x, k, s, p):
    return _max_pool2d_fwd(x, k, s, p)[0]


def _max_pool2d_fwd(x, k, s, p):
    shape = _pool_shape("max_pool2d", x.shape, k, s, p)
    spec = (_spec(shape, x.dtype), _spec(shape, jax.dtypes.canonicalize_dtype(np.int64)))
    y, idx = _run(lambda x: ops.max_pool2d(x, k, s, p, return_indices=True), spec, x)
    return (y, idx), (x, idx)


def _max_pool2d_bwd(k, s, p, res, g):
    x, idx = res
    gy, _ = g  # the indices' cotangent is float0: nothing flows through integers
    return (_run(lambda gy, x, idx: ops.max_pool2d_backward(gy, x, k, s, p, indices=idx), _like(x), gy, x, idx),)


_max_pool2d.defvjp(_max_pool2d_fwd, _max_pool2d_bwd)


def max_pool2d(x: Any, kernel_size: Any, stride: Any = None, padding: Any = 0,
               return_indices: bool = False) -> jax.Array | tuple[jax.Array, jax.Array]:
    """Max pooling. x (N, C, H, W) -> y (N, C, OH, OW) [, integer indices h*W + w in the input plane].

    NaN propagates; ties go to the first maximum; the gradient is routed by the indices.
    """
    op = "max_pool2d"
    _float(op, "x", x)
    _ndim(op, "x", x, 4)
    k = _pair(op, "kernel_size", kernel_size)
    y, idx = _max_pool2d(x, k, k if stride is None else _pair(op, "stride", stride), _pair(op, "padding", padding))
    return (y, idx) if return_indices else y


@partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3, 4))
def _avg_pool2d(x, k, s, p, count_include_pad):
    return _avg_pool2d_fwd(x, k, s, p, count_include_pad)[0]


def _avg_pool2d_fwd(x, k, s, p, count_include_pad):
    shape = _pool_shape("avg_pool2d", x.shape, k, s, p)
    y = _run(lambda x: ops.avg_pool2d(x, k, s, p, count_include_pad), _spec(shape, x.dtype), x)
    return y, x


def _avg_pool2d_bwd(k, s, p, count_include_pad, x, g):
    return (_run(lambda g, x: ops.avg_pool2d_backward(g, x, k, s, p, count_include_pad), _like(x), g, x),)


_avg_pool2d.defvjp(_avg_pool2d_fwd, _avg_pool2d_bwd)


def avg_pool2d(x: Any, kernel_size: Any, stride: Any = None, padding: Any = 0,
               count_include_pad: bool = True) -> jax.Array:
    """Average pooling. x (N, C, H, W) -> (N, C, OH, OW); divisor kh*kw, or the in-bounds count
    when count_include_pad=False."""
    op = "avg_pool2d"
    _float(op, "x", x)
    _ndim(op, "x", x, 4)
    k = _pair(op, "kernel_size", kernel_size)
    return _avg_pool2d(x, k, k if stride is None else _pair(op, "stride", stride), _pair(op, "padding", padding),
                       bool(count_include_pad))


# ---------------------------------------------------------------------------- linear

@jax.custom_vjp
def _linear(x, w, b):
    return _linear_fwd(x, w, b)[0]


def _linear_fwd(x, w, b):
    y = _run(ops.linear, _spec((*x.shape[:-1], w.shape[0]), x.dtype), x, w, b)
    return y, (x, w, b)


def _linear_bwd(res, g):
    x, w, b = res
    specs = (_like(x), _like(w)) + ((_like(b),) if b is not None else ())
    n = len(specs)
    grads = _run(lambda g, x, w, b: ops.linear_backward(g, x, w, b)[:n], specs, g, x, w, b)
    return grads[0], grads[1], (grads[2] if b is not None else None)


_linear.defvjp(_linear_fwd, _linear_bwd)


def linear(x: Any, w: Any, b: Any = None) -> jax.Array:
    """Dense layer x w^T + b. x (..., IN), w (OUT, IN), b (OUT,) -> (..., OUT)."""
    op = "linear"
    _float(op, "x", x)
    _float(op, "w", w)
    _ndim(op, "w", w, 2)
    if len(x.shape) < 1 or x.shape[-1] != w.shape[1]:
        raise ValueError(f"layerforge {op}: x has shape {tuple(x.shape)} but w expects {w.shape[1]} "
                         f"features (w shape {tuple(w.shape)})")
    if b is not None:
        _float(op, "b", b)
        if tuple(b.shape) != (w.shape[0],):
            raise ValueError(f"layerforge {op}: b must have shape {(w.shape[0],)}, got {tuple(b.shape)}")
    return _linear(x, w, b)


# ---------------------------------------------------------------------------- softmax family

def _dim(op: str, x: Any, dim: Any) -> int:
    if dim is None:
        raise TypeError(f"layerforge {op}: dim must be given explicitly (as in torch.nn.functional)")
    d = int(dim)
    if not -len(x.shape) <= d < len(x.shape):
        raise ValueError(f"layerforge {op}: dim {d} is out of range for a {len(x.shape)}-D input of shape {tuple(x.shape)}")
    return d


@partial(jax.custom_vjp, nondiff_argnums=(1,))
def _softmax(x, dim):
    return _softmax_fwd(x, dim)[0]


def _softmax_fwd(x, dim):
    y = _run(lambda x: ops.softmax(x, dim), _like(x), x)
    return y, y  # the backward needs only the output


def _softmax_bwd(dim, y, g):
    return (_run(lambda g, y: ops.softmax_backward(g, dim=dim, y=y), _like(y), g, y),)


_softmax.defvjp(_softmax_fwd, _softmax_bwd)


@partial(jax.custom_vjp, nondiff_argnums=(1,))
def _log_softmax(x, dim):
    return _log_softmax_fwd(x, dim)[0]


def _log_softmax_fwd(x, dim):
    y = _run(lambda x: ops.log_softmax(x, dim), _like(x), x)
    return y, y


def _log_softmax_bwd(dim, y, g):
    return (_run(lambda g, y: ops.log_softmax_backward(g, dim=dim, y=y), _like(y), g, y),)


_log_softmax.defvjp(_log_softmax_fwd, _log_softmax_bwd)


def softmax(x: Any, dim: int) -> jax.Array:
    """exp(x) / sum(exp(x)) along dim, max-subtracted (finite for +-1e4 logits). Any shape."""
    _float("softmax", "x", x)
    return _softmax(x, _dim("softmax", x, dim))


def log_softmax(x: Any, dim: int) -> jax.Array:
    """x - logsumexp(x, dim), stable for +-1e4 logits. Any shape."""
    _float("log_softmax", "x", x)
    return _log_softmax(x, _dim("log_softmax", x, dim))


# ---------------------------------------------------------------------------- cross entropy

@jax.custom_vjp
def _cross_entropy(logits, labels):
    return _cross_entropy_fwd(logits, labels)[0]


def _cross_entropy_fwd(logits, labels):
    loss = _run(ops.cross_entropy, _spec((), logits.dtype), logits, labels)
    return loss, (logits, labels)


def _cross_entropy_bwd(res, g):
    logits, labels = res
    # labels are integers: their cotangent is "zero", which custom_vjp spells None
    return _run(lambda g, l, t: ops.cross_entropy_backward(g, l, t), _like(logits), g, logits, labels), None


_cross_entropy.defvjp(_cross_entropy_fwd, _cross_entropy_bwd)


def cross_entropy(logits: Any, labels: Any) -> jax.Array:
    """Mean over the batch of -log_softmax(logits)[i, labels[i]], fused and stable.

    logits (N, C) float, labels (N,) int -> 0-d loss of logits' dtype (NaN when N == 0).
    Out-of-range labels raise a ValueError eagerly. Under jit the check runs inside the
    callback, whose exception JAX reports as a runtime error (and formally calls undefined
    behaviour), so validate labels before a jitted step if they can be wrong.
    """
    op = "cross_entropy"
    _float(op, "logits", logits)
    _ndim(op, "logits", logits, 2)
    lab_dt = _dtype(labels)
    if lab_dt.kind not in "iu":
        raise TypeError(f"layerforge {op}: labels must be integer class indices, got dtype {lab_dt}")
    if tuple(np.shape(labels)) != (logits.shape[0],):
        raise ValueError(f"layerforge {op}: labels must have shape {(logits.shape[0],)}, got {tuple(np.shape(labels))}")
    return _cross_entropy(logits, labels)


# ---------------------------------------------------------------------------- elementwise

@jax.custom_vjp
def _relu(x):
    return _run(ops.relu, _like(x), x)


def _relu_fwd(x):
    return _run(ops.relu, _like(x), x), x


def _relu_bwd(x, g):
    return (_run(ops.relu_backward, _like(x), g, x),)


_relu.defvjp(_relu_fwd, _relu_bwd)


@jax.custom_vjp
def _sigmoid(x):
    return _run(ops.sigmoid, _like(x), x)


def _sigmoid_fwd(x):
    y = _run(ops.sigmoid, _like(x), x)
    return y, y


def _sigmoid_bwd(y, g):
    return (_run(lambda g, y: ops.sigmoid_backward(g, y=y), _like(y), g, y),)


_sigmoid.defvjp(_sigmoid_fwd, _sigmoid_bwd)


@jax.custom_vjp
def _tanh(x):
    return _run(ops.tanh, _like(x), x)


def _tanh_fwd(x):
    y = _run(ops.tanh, _like(x), x)
    return y, y


def _tanh_bwd(y, g):
    return (_run(lambda g, y: ops.tanh_backward(g, y=y), _like(y), g, y),)


_tanh.defvjp(_tanh_fwd, _tanh_bwd)


def relu(x: Any) -> jax.Array:
    """max(x, 0), elementwise (NaN stays NaN). Any shape."""
    return _relu(_float("relu", "x", x))


def sigmoid(x: Any) -> jax.Array:
    """1 / (1 + exp(-x)), elementwise. Any shape."""
    return _sigmoid(_float("sigmoid", "x", x))


def tanh(x: Any) -> jax.Array:
    """tanh(x), elementwise. Any shape."""
    return _tanh(_float("tanh", "x", x))


# ---------------------------------------------------------------------------- recurrent

@partial(jax.custom_vjp, nondiff_argnums=(5,))
def _rnn(x, w_xh, w_hh, b, h0, activation):
    return _rnn_fwd(x, w_xh, w_hh, b, h0, activation)[0]


def _rnn_fwd(x, w_xh, w_hh, b, h0, activation):
    spec = _spec((x.shape[0], x.shape[1], w_hh.shape[0]), x.dtype)
    hs = _run(lambda x, w_xh, w_hh, b, h0: ops.rnn(x, w_xh, w_hh, b, h0, activation), spec, x, w_xh, w_hh, b, h0)
    return hs, (x, w_xh, w_hh, b, h0, hs)  # the backward reads h_t from hs: no recomputation


def _rnn_bwd(activation, res, g):
    x, w_xh, w_hh, b, h0, hs = res
    # ops.rnn_backward returns None for an absent b or h0; pure_callback wants arrays only
    specs = tuple(_like(a) for a in (x, w_xh, w_hh, b, h0) if a is not None)

    def host(g, x, w_xh, w_hh, b, h0, hs):
        return tuple(o for o in ops.rnn_backward(g, x, w_xh, w_hh, b, h0, activation, hs=hs) if o is not None)

    it = iter(_run(host, specs, g, x, w_xh, w_hh, b, h0, hs))
    return next(it), next(it), next(it), (next(it) if b is not None else None), (next(it) if h0 is not None else None)


_rnn.defvjp(_rnn_fwd, _rnn_bwd)


def rnn(x: Any, w_xh: Any, w_hh: Any, b: Any = None, h0: Any = None, activation: str = "tanh") -> jax.Array:
    """Elman RNN over the whole sequence, batch first: every hidden state hs (N, T, H).

    x (N, T, I), w_xh (H, I), w_hh (H, H), b (H,) or None, h0 (N, H) or None (zeros);
    h_t = act(x_t w_xh^T + h_{t-1} w_hh^T + b), activation 'tanh', 'sigmoid', 'relu' or
    'linear'. hs[:, -1] is the last state. One kernel call each way (forward, and BPTT from
    the saved hs), not T; differentiable in every array argument.
    """
    op = "rnn"
    check_rnn_activation(op, activation)
    named = {"x": x, "w_xh": w_xh, "w_hh": w_hh, "b": b, "h0": h0}
    for name, a in named.items():
        if a is not None:
            _float(op, name, a)
    dtypes = {name: str(_dtype(a)) for name, a in named.items() if a is not None}
    if len(set(dtypes.values())) > 1:
        raise TypeError(f"layerforge {op}: all arrays must have one dtype, got {dtypes}")
    _ndim(op, "x", x, 3)
    _ndim(op, "w_hh", w_hh, 2)
    n, _, i = x.shape
    hidden = w_hh.shape[0]
    for name, a, expected, what in (("w_hh", w_hh, (hidden, hidden), "(H, H)"), ("w_xh", w_xh, (hidden, i), "(H, I)"),
                                    ("b", b, (hidden,), "(H,)"), ("h0", h0, (n, hidden), "(N, H)")):
        if a is not None and tuple(a.shape) != expected:
            raise ValueError(f"layerforge {op}: {name} must have shape {what} = {expected} for x of shape "
                             f"{tuple(x.shape)} and w_hh of shape {tuple(w_hh.shape)}, got {tuple(a.shape)}")
    return _rnn(x, w_xh, w_hh, b, h0, activation)
