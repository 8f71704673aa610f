"""The float64 oracle: every op of layerforge.ops, forward and backward, in plain NumPy.

Written to be read, not to be fast. Every computation is done in float64 whatever the input
dtype, and returns float64 arrays. Semantics are torch.nn.functional's: NCHW, conv weights
(K, C, R, S), dense weights (OUT, IN), cross-correlation. The tests check this module itself
against central finite differences (tests/test_reference.py), and every backend against it.

Shapes: x (N, C, H, W); conv y (N, K, OH, OW) with OH = (H + pt + pb - dh*(R-1) - 1)//sh + 1;
pool y (N, C, OH, OW) with OH = (H + 2*ph - kh)//sh + 1.
"""

from __future__ import annotations

import numpy as np

Array = np.ndarray


def _pair(v: int | tuple[int, int]) -> tuple[int, int]:
    return (int(v), int(v)) if np.isscalar(v) else (int(v[0]), int(v[1]))


def conv2d_padding(
    padding: int | tuple[int, int] | str, kernel: tuple[int, int], dilation: tuple[int, int]
) -> tuple[int, int, int, int]:
    """(top, bottom, left, right). 'same' puts the odd extra row/column at the bottom/right,
    as PyTorch does."""
    if padding == "valid":
        return (0, 0, 0, 0)
    if padding == "same":
        th = dilation[0] * (kernel[0] - 1)
        tw = dilation[1] * (kernel[1] - 1)
        return (th // 2, th - th // 2, tw // 2, tw - tw // 2)
    ph, pw = _pair(padding)  # type: ignore[arg-type]
    return (ph, ph, pw, pw)


def _conv_geometry(x: Array, w: Array, stride, padding, dilation):
    sh, sw = _pair(stride)
    dh, dw = _pair(dilation)
    pt, pb, pl, pr = conv2d_padding(padding, (w.shape[2], w.shape[3]), (dh, dw))
    hp, wp = x.shape[2] + pt + pb, x.shape[3] + pl + pr
    oh = (hp - dh * (w.shape[2] - 1) - 1) // sh + 1
    ow = (wp - dw * (w.shape[3] - 1) - 1) // sw + 1
    return sh, sw, dh, dw, (pt, pb, pl, pr), oh, ow


def _tap(i: int, j: int, oh: int, ow: int, sh: int, sw: int, dh: int, dw: int):
    """The (rows, cols) slices of the padded input that kernel tap (i, j) meets."""
    return (slice(i * dh, i * dh + sh * (oh - 1) + 1, sh), slice(j * dw, j * dw + sw * (ow - 1) + 1, sw))


def conv2d(x: Array, w: Array, b: Array | None = None, stride=1, padding=0, dilation=1) -> Array:
    x = np.asarray(x, np.float64)
    w = np.asarray(w, np.float64)
    sh, sw, dh, dw, (pt, pb, pl, pr), oh, ow = _conv_geometry(x, w, stride, padding, dilation)
    xp = np.pad(x, ((0, 0), (0, 0), (pt, pb), (pl, pr)))
    y = np.zeros((x.shape[0], w.shape[0], oh, ow))
    for i in range(w.shape[2]):
        for j in range(w.shape[3]):
            rows, cols = _tap(i, j, oh, ow, sh, sw, dh, dw)
            y += np.einsum("nchw,kc->nkhw", xp[:, :, rows, cols], w[:, :, i, j])
    if b is not None:
        y += np.asarray(b, np.float64)[None, :, None, None]
    return y


def conv2d_backward(
    dy: Array, x: Array, w: Array, b: Array | None = None, stride=1, padding=0, dilation=1
) -> tuple[Array, Array, Array | None]:
    dy = np.asarray(dy, np.float64)
    x = np.asarray(x, np.float64)
    w = np.asarray(w, np.float64)
    sh, sw, dh, dw, (pt, pb, pl, pr), oh, ow = _conv_geometry(x, w, stride, padding, dilation)
    xp = np.pad(x, ((0, 0), (0, 0), (pt, pb), (pl, pr)))
    dxp = np.zeros_like(xp)
    dwt = np.zeros_like(w)
    for i in range(w.shape[2]):
        for j in range(w.shape[3]):
            rows, cols = _tap(i, j, oh, ow, sh, sw, dh, dw)
            dxp[:, :, rows, cols] += np.einsum("nkhw,kc->nchw", dy, w[:, :, i, j])
            dwt[:, :, i, j] = np.einsum("nkhw,nchw->kc", dy, xp[:, :, rows, cols])
    dx = dxp[:, :, pt : pt + x.shape[2], pl : pl + x.shape[3]]
    db = dy.sum(axis=(0, 2, 3)) if b is not None else None
    return np.ascontiguousarray(dx), dwt, db


def _pool_geometry(x: Array, kernel_size, stride, padding):
    kh, kw = _pair(kernel_size)
    sh, sw = _pair(kernel_size if stride is None else stride)
    ph, pw = _pair(padding)
    oh = (x.shape[2] + 2 * ph - kh) // sh + 1
    ow = (x.shape[3] + 2 * pw - kw) // sw + 1
    return kh, kw, sh, sw, ph, pw, oh, ow


def _window(p: int, q: int, geo, h: int, w: int):
    """In-bounds input coordinates of output (p, q)'s window, in row-major order."""
    kh, kw, sh, sw, ph, pw = geo[:6]
    return [
        (r, c)
        for r in range(p * sh - ph, p * sh - ph + kh)
        for c in range(q * sw - pw, q * sw - pw + kw)
        if 0 <= r < h and 0 <= c < w
    ]


def max_pool2d_with_indices(x: Array, kernel_size, stride=None, padding=0) -> tuple[Array, Array]:
    """Padding never wins; ties keep the first maximum; a NaN beats any number and a later
    NaN replaces an earlier one (PyTorch's `v > m or isnan(v)`)."""
    x = np.asarray(x, np.float64)
    n, c, h, w = x.shape
    geo = _pool_geometry(x, kernel_size, stride, padding)
    oh, ow = geo[6], geo[7]
    y = np.empty((n, c, oh, ow))
    idx = np.empty((n, c, oh, ow), np.int64)
    for p in range(oh):
        for q in range(ow):
            win = _window(p, q, geo, h, w)
            m = np.full((n, c), -np.inf)
            arg = np.full((n, c), win[0][0] * w + win[0][1], np.int64)
            for r, s in win:
                v = x[:, :, r, s]
                take = (v > m) | np.isnan(v)
                m = np.where(take, v, m)
                arg = np.where(take, r * w + s, arg)
            y[:, :, p, q] = m
            idx[:, :, p, q] = arg
    return y, idx


def max_pool2d(x: Array, kernel_size, stride=None, padding=0) -> Array:
    return max_pool2d_with_indices(x, kernel_size, stride, padding)[0]


def max_pool2d_backward(dy: Array, x: Array, kernel_size, stride=None, padding=0) -> Array:
    x = np.asarray(x, np.float64)
    n, c, h, w = x.shape
    _, idx = max_pool2d_with_indices(x, kernel_size, stride, padding)
    dx = np.zeros((n * c, h * w))
    rows = np.repeat(np.arange(n * c), idx.shape[2] * idx.shape[3])
    np.add.at(dx, (rows, idx.reshape(-1)), np.asarray(dy, np.float64).reshape(-1))
    return dx.reshape(x.shape)


def avg_pool2d(x: Array, kernel_size, stride=None, padding=0, count_include_pad: bool = True) -> Array:
    x = np.asarray(x, np.float64)
    n, c, h, w = x.shape
    geo = _pool_geometry(x, kernel_size, stride, padding)
    y = np.zeros((n, c, geo[6], geo[7]))
    for p in range(geo[6]):
        for q in range(geo[7]):
            win = _window(p, q, geo, h, w)
            div = geo[0] * geo[1] if count_include_pad else len(win)
            y[:, :, p, q] = sum(x[:, :, r, s] for r, s in win) / div
    return y


def avg_pool2d_backward(
    dy: Array, x: Array, kernel_size, stride=None, padding=0, count_include_pad: bool = True
) -> Array:
    x = np.asarray(x, np.float64)
    dy = np.asarray(dy, np.float64)
    n, c, h, w = x.shape
    geo = _pool_geometry(x, kernel_size, stride, padding)
    dx = np.zeros_like(x)
    for p in range(geo[6]):
        for q in range(geo[7]):
            win = _window(p, q, geo, h, w)
            div = geo[0] * geo[1] if count_include_pad else len(win)
            for r, s in win:
                dx[:, :, r, s] += dy[:, :, p, q] / div
    return dx


def linear(x: Array, w: Array, b: Array | None = None) -> Array:
    y = np.asarray(x, np.float64) @ np.asarray(w, np.float64).T
    return y + np.asarray(b, np.float64) if b is not None else y


def linear_backward(
    dy: Array, x: Array, w: Array, b: Array | None = None
) -> tuple[Array, Array, Array | None]:
    dy = np.asarray(dy, np.float64)
    x = np.asarray(x, np.float64)
    dy2 = dy.reshape(-1, dy.shape[-1])
    x2 = x.reshape(-1, x.shape[-1])
    dx = (dy2 @ np.asarray(w, np.float64)).reshape(x.shape)
    dw = dy2.T @ x2
    db = dy2.sum(axis=0) if b is not None else None
    return dx, dw, db


def softmax(x: Array, dim: int) -> Array:
    x = np.asarray(x, np.float64)
    e = np.exp(x - x.max(axis=dim, keepdims=True))
    return e / e.sum(axis=dim, keepdims=True)


def softmax_backward(dy: Array, x: Array, dim: int) -> Array:
    y = softmax(x, dim)
    dy = np.asarray(dy, np.float64)
    return y * (dy - (dy * y).sum(axis=dim, keepdims=True))


def log_softmax(x: Array, dim: int) -> Array:
    x = np.asarray(x, np.float64)
    z = x - x.max(axis=dim, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=dim, keepdims=True))


def log_softmax_backward(dy: Array, x: Array, dim: int) -> Array:
    dy = np.asarray(dy, np.float64)
    return dy - softmax(x, dim) * dy.sum(axis=dim, keepdims=True)


def cross_entropy(logits: Array, labels: Array) -> float:
    """Mean over the batch of -log softmax(logits)[label]; NaN for an empty batch (as torch)."""
    lp = log_softmax(logits, 1)
    labels = np.asarray(labels, np.int64)
    if lp.shape[0] == 0:
        return float("nan")
    return float(-lp[np.arange(lp.shape[0]), labels].mean())


def cross_entropy_backward(dloss: float, logits: Array, labels: Array) -> Array:
    g = softmax(logits, 1)
    n = g.shape[0]
    g[np.arange(n), np.asarray(labels, np.int64)] -= 1.0
    return g * (float(dloss) / max(n, 1))


def relu(x: Array) -> Array:
    x = np.asarray(x, np.float64)
    return np.where(x < 0, 0.0, x)  # keeps NaN, as torch.relu does


def relu_backward(dy: Array, x: Array) -> Array:
    return np.where(np.asarray(x) > 0, np.asarray(dy, np.float64), 0.0)


def sigmoid(x: Array) -> Array:
    x = np.asarray(x, np.float64)
    e = np.exp(-np.abs(x))  # never overflows
    return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def sigmoid_backward(dy: Array, x: Array) -> Array:
    y = sigmoid(x)
    return np.asarray(dy, np.float64) * y * (1.0 - y)


def tanh(x: Array) -> Array:
    return np.tanh(np.asarray(x, np.float64))


def tanh_backward(dy: Array, x: Array) -> Array:
    return np.asarray(dy, np.float64) * (1.0 - tanh(x) ** 2)


def adam_update(p: Array, g: Array, m: Array, v: Array, alpha: float, beta_1: float, beta_2: float,
                epsilon: float) -> tuple[Array, Array, Array]:
    """(new p, new m, new v) of one Adam step (Keras's form, bias correction in alpha)."""
    p, g, m, v = (np.asarray(a, np.float64) for a in (p, g, m, v))
    m = beta_1 * m + (1.0 - beta_1) * g
    v = beta_2 * v + (1.0 - beta_2) * g * g
    return p - alpha * m / (np.sqrt(v) + epsilon), m, v


# ---------------------------------------------------------------------------- recurrent
# Elman RNN over a sequence: x (N, T, I), w_xh (H, I), w_hh (H, H), b (H,), h0 (N, H),
# hs (N, T, H):  a_t = x_t W_xh^T + h_{t-1} W_hh^T + b,  h_t = act(a_t),  h_{-1} = h0 or 0.

RNN_ACTIVATIONS = {
    "tanh": (tanh, lambda a: 1.0 - np.tanh(a) ** 2),
    "sigmoid": (sigmoid, lambda a: sigmoid(a) * (1.0 - sigmoid(a))),
    "relu": (relu, lambda a: (a > 0).astype(np.float64)),
    "linear": (lambda a: a, lambda a: np.ones_like(a)),
}


def _rnn_steps(x, w_xh, w_hh, b, h0, activation):
    """(pre-activations a, outputs hs, the initial state), all float64."""
    f = RNN_ACTIVATIONS[activation][0]
    x = np.asarray(x, np.float64)
    w_xh = np.asarray(w_xh, np.float64)
    w_hh = np.asarray(w_hh, np.float64)
    n, t, _ = x.shape
    hidden = w_hh.shape[0]
    h_init = np.zeros((n, hidden)) if h0 is None else np.asarray(h0, np.float64)
    a = np.zeros((n, t, hidden))
    hs = np.zeros((n, t, hidden))
    h = h_init
    for s in range(t):
        a[:, s] = x[:, s] @ w_xh.T + h @ w_hh.T
        if b is not None:
            a[:, s] += np.asarray(b, np.float64)
        h = f(a[:, s])
        hs[:, s] = h
    return a, hs, h_init


def rnn(x: Array, w_xh: Array, w_hh: Array, b: Array | None = None, h0: Array | None = None,
        activation: str = "tanh") -> Array:
    """hs (N, T, H): every hidden state of the sequence."""
    return _rnn_steps(x, w_xh, w_hh, b, h0, activation)[1]


def rnn_backward(
    dhs: Array, x: Array, w_xh: Array, w_hh: Array, b: Array | None = None, h0: Array | None = None,
    activation: str = "tanh",
) -> tuple[Array, Array, Array, Array | None, Array | None]:
    """(dx, dw_xh, dw_hh, db or None, dh0 or None) by backpropagation through time, one step
    at a time in reverse; dhs (N, T, H) is the loss gradient w.r.t. every h_t."""
    dact = RNN_ACTIVATIONS[activation][1]
    a, hs, h_init = _rnn_steps(x, w_xh, w_hh, b, h0, activation)
    x = np.asarray(x, np.float64)
    w_xh = np.asarray(w_xh, np.float64)
    w_hh = np.asarray(w_hh, np.float64)
    dhs = np.asarray(dhs, np.float64)
    n, t, _ = x.shape
    dx = np.zeros_like(x)
    dw_xh = np.zeros_like(w_xh)
    dw_hh = np.zeros_like(w_hh)
    db = np.zeros(w_hh.shape[0])
    dh = np.zeros((n, w_hh.shape[0]))  # gradient reaching h_s from step s + 1
    for s in range(t - 1, -1, -1):
        da = (dhs[:, s] + dh) * dact(a[:, s])
        h_prev = hs[:, s - 1] if s > 0 else h_init
        dx[:, s] = da @ w_xh
        dw_xh += da.T @ x[:, s]
        dw_hh += da.T @ h_prev
        db += da.sum(axis=0)
        dh = da @ w_hh
    return dx, dw_xh, dw_hh, (db if b is not None else None), (dh if h0 is not None else None)
