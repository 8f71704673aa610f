"""Keras-like layers: composition only, every bit of heavy arithmetic goes through layerforge.ops.

Shapes a user sees are Keras's (channels_last): ``input_shape=(28, 28, 1)``, Conv2D output
``(None, 26, 26, 32)``. Inside, image tensors are NCHW, the layout of the ops: the model
converts its input once, at the entry (``Sequential`` shows it in ``summary()``), and back once
at the exit if the output is an image. Weights are stored in the ops' layout: conv (K, C, R, S),
dense (OUT, IN); ``get_weights()`` returns them in that layout.

Each layer implements ``build(input_shape)`` (Keras shape without the batch axis),
``forward(x, training)`` and ``backward(dy) -> dx``; backward fills ``self.grads`` aligned with
``self.params``. A layer whose activation is softmax can hand its pre-activation logits to a
fused softmax cross-entropy (``forward(..., logits=True)`` / ``backward(dz, logits=True)``).
"""

from __future__ import annotations

import re
from typing import Any, Sequence

import numpy as np

from . import ops
from ._device import array_module as _xp
from .initializers import glorot_uniform, orthogonal

Shape = tuple  # a Keras shape without the batch axis, e.g. (26, 26, 32)

ACTIVATIONS = ("relu", "sigmoid", "tanh", "softmax", "linear")


def _activation_name(activation: str | None, where: str) -> str:
    if activation is None:
        return "linear"
    if not isinstance(activation, str) or activation.lower() not in ACTIVATIONS:
        raise ValueError(f"{where}: activation must be one of {ACTIVATIONS} or None, got {activation!r}")
    return activation.lower()


def _pair(v: Any, what: str, where: str) -> tuple[int, int]:
    p = (v, v) if isinstance(v, (int, np.integer)) else tuple(v)
    if len(p) != 2 or not all(isinstance(i, (int, np.integer)) and not isinstance(i, bool) and i >= 1 for i in p):
        raise ValueError(f"{where}: {what} must be a positive int or a pair of them, got {v!r}")
    return int(p[0]), int(p[1])


def _padding(padding: str, where: str) -> str:
    if not isinstance(padding, str) or padding.lower() not in ("valid", "same"):
        raise ValueError(f"{where}: padding must be 'valid' or 'same', got {padding!r}")
    return padding.lower()


def _same_pads(size: int, k: int, s: int) -> tuple[int, int]:
    """TensorFlow's 'same': output ceil(size/s), the odd padding row/column at the end."""
    out = -(-size // s)
    total = max((out - 1) * s + k - size, 0)
    return total // 2, total - total // 2


class Layer:
    """Base of every layer. Subclasses set ``params``/``grads`` in ``build``."""

    _count: dict[str, int] = {}

    def __init__(self, name: str | None = None, input_shape: Sequence[int] | None = None, **kwargs: Any) -> None:
        if kwargs:
            raise TypeError(f"{type(self).__name__}: unexpected arguments {sorted(kwargs)}")
        base = re.sub(r"(?<=[a-z])(?=[A-Z])", "_", type(self).__name__).lower()  # Keras: max_pooling2d
        n = Layer._count.get(base, 0)
        Layer._count[base] = n + 1
        self.name = name or (base if n == 0 else f"{base}_{n}")
        self.input_shape: Shape | None = tuple(int(d) for d in input_shape) if input_shape is not None else None
        self.output_shape: Shape | None = None
        self.built = False
        self.params: list[np.ndarray] = []
        self.grads: list[np.ndarray | None] = []
        self.backend: str | None = None
        self.activation = "linear"
        self.trainable = True
        # False when nothing upstream needs this layer's input gradient (a model's first
        # layer): Conv2D and Dense then skip computing dx and backward returns None.
        self.input_grad = True
        # Set by Sequential for a Conv2D(relu) followed by a 2x2 MaxPooling2D: the convolution
        # runs ops.conv2d_relu_maxpool (its forward returns the pooled output) and the pooling
        # layer passes values and gradients through unchanged.
        self.pool_fused = False

    # -- to override
    def build(self, input_shape: Shape, rng: np.random.Generator) -> None:
        self.input_shape = tuple(input_shape)
        self.output_shape = self.compute_output_shape(self.input_shape)
        self.built = True

    def compute_output_shape(self, input_shape: Shape) -> Shape:
        return tuple(input_shape)

    def forward(self, x: np.ndarray, training: bool = False, logits: bool = False) -> np.ndarray:
        raise NotImplementedError

    def backward(self, dy: np.ndarray, logits: bool = False) -> np.ndarray:
        raise NotImplementedError

    # -- shared
    def _set_params(self, **named: np.ndarray | None) -> None:
        """Keep each weight both as an attribute (self.kernel, ...) and in self.params."""
        self._param_names = [k for k, v in named.items() if v is not None]
        for k, v in named.items():
            setattr(self, k, v)
        self.params = [named[k] for k in self._param_names]
        self.grads = [None] * len(self.params)

    def to_device(self, convert: Any) -> None:
        """Move every weight with ``convert`` (e.g. cupy.asarray); the layer keeps no host copy."""
        self._set_params(**{k: convert(getattr(self, k)) for k in getattr(self, "_param_names", [])})

    def count_params(self) -> int:
        return int(sum(p.size for p in self.params))

    def get_weights(self) -> list[np.ndarray]:
        """Host (NumPy) copies of the weights, wherever the layer lives."""
        return [p.get() if hasattr(p, "get") and not isinstance(p, np.ndarray) else p.copy() for p in self.params]

    def set_weights(self, weights: Sequence[np.ndarray]) -> None:
        if len(weights) != len(self.params):
            raise ValueError(f"{self.name}: expected {len(self.params)} weight arrays, got {len(weights)}")
        for p, w in zip(self.params, weights):
            w = np.asarray(w)
            if w.shape != p.shape:
                raise ValueError(f"{self.name}: weight of shape {w.shape} does not fit {p.shape}")
            p[...] = _xp(p).asarray(w)

    def _act_forward(self, a: np.ndarray, logits: bool) -> np.ndarray:
        act = "linear" if logits else self.activation
        if act == "linear":
            return a
        if act == "softmax":
            return ops.softmax(a, 1 if a.ndim == 4 else -1, backend=self.backend)
        return getattr(ops, act)(a, backend=self.backend)

    def _act_backward(self, dy: np.ndarray, y: np.ndarray, logits: bool) -> np.ndarray:
        """Gradient through the activation from its output y (relu' is (y > 0) too)."""
        act = "linear" if logits else self.activation
        if act == "linear":
            return dy
        if act == "relu":
            return ops.relu_backward(dy, y, backend=self.backend)
        if act == "softmax":
            return ops.softmax_backward(dy, dim=1 if y.ndim == 4 else -1, y=y, backend=self.backend)
        return getattr(ops, act + "_backward")(dy, y=y, backend=self.backend)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} output_shape={self.output_shape}>"


class Conv2D(Layer):
    """2-D convolution. Keras input (H, W, C) -> (OH, OW, filters); internally NCHW."""

    def __init__(self, filters: int, kernel_size: int | tuple[int, int], strides: int | tuple[int, int] = (1, 1),
                 padding: str = "valid", activation: str | None = None, use_bias: bool = True,
                 dilation_rate: int | tuple[int, int] = (1, 1), **kwargs: Any) -> None:
        super().__init__(**kwargs)
        where = f"Conv2D({filters!r})"
        if isinstance(filters, bool) or not isinstance(filters, (int, np.integer)) or filters < 1:
            raise ValueError(f"{where}: filters must be a positive int, got {filters!r}")
        self.filters = int(filters)
        self.kernel_size = _pair(kernel_size, "kernel_size", where)
        self.strides = _pair(strides, "strides", where)
        self.dilation_rate = _pair(dilation_rate, "dilation_rate", where)
        self.padding = _padding(padding, where)
        self.activation = _activation_name(activation, where)
        self.use_bias = bool(use_bias)

    def _pads(self, h: int, w: int) -> tuple[int, int, int, int]:
        if self.padding == "valid":
            return 0, 0, 0, 0
        eh = self.dilation_rate[0] * (self.kernel_size[0] - 1) + 1
        ew = self.dilation_rate[1] * (self.kernel_size[1] - 1) + 1
        return (*_same_pads(h, eh, self.strides[0]), *_same_pads(w, ew, self.strides[1]))

    def compute_output_shape(self, input_shape: Shape) -> Shape:
        if len(input_shape) != 3:
            raise ValueError(f"{self.name}: expects inputs (height, width, channels), got {input_shape}")
        h, w, _ = input_shape
        pt, pb, pl, pr = self._pads(h, w)
        eh = self.dilation_rate[0] * (self.kernel_size[0] - 1) + 1
        ew = self.dilation_rate[1] * (self.kernel_size[1] - 1) + 1
        oh = (h + pt + pb - eh) // self.strides[0] + 1
        ow = (w + pl + pr - ew) // self.strides[1] + 1
        if oh < 1 or ow < 1:
            raise ValueError(f"{self.name}: kernel {self.kernel_size} does not fit the input {input_shape}")
        return (oh, ow, self.filters)

    def build(self, input_shape: Shape, rng: np.random.Generator) -> None:
        super().build(input_shape, rng)
        c = input_shape[2]
        r, s = self.kernel_size
        self._set_params(
            kernel=glorot_uniform(rng, (self.filters, c, r, s), fan_in=c * r * s, fan_out=self.filters * r * s),
            bias=np.zeros(self.filters, np.float32) if self.use_bias else None)

    def _geometry(self, x: np.ndarray) -> tuple[np.ndarray, Any]:
        """(input, padding argument): asymmetric 'same' padding (stride > 1) pads explicitly."""
        pt, pb, pl, pr = self._pads(x.shape[2], x.shape[3])
        if pt == pb and pl == pr:
            return x, (pt, pl)
        return _xp(x).pad(x, ((0, 0), (0, 0), (pt, pb), (pl, pr))), 0

    def forward(self, x: np.ndarray, training: bool = False, logits: bool = False) -> np.ndarray:
        xin, pad = self._geometry(x)
        if self.pool_fused:
            y, idx = ops.conv2d_relu_maxpool(xin, self.kernel, self.bias, stride=self.strides, padding=pad,
                                             dilation=self.dilation_rate, backend=self.backend)
            if training:
                self._saved = (x, xin, pad, y, idx)
            return y
        # relu runs fused into the convolution (its output pass and its backward).
        fused = "relu" if self.activation == "relu" and not logits else None
        a = ops.conv2d(xin, self.kernel, self.bias, stride=self.strides, padding=pad,
                       dilation=self.dilation_rate, activation=fused, backend=self.backend)
        y = a if fused else self._act_forward(a, logits)
        if training:
            self._saved = (x, xin, pad, y, fused)
        return y

    def backward(self, dy: np.ndarray, logits: bool = False) -> np.ndarray:
        if self.pool_fused:
            x, xin, pad, y, idx = self._saved
            dx, dw, db = ops.conv2d_relu_maxpool_backward(
                dy, xin, self.kernel, self.bias, stride=self.strides, padding=pad, dilation=self.dilation_rate,
                y=y, indices=idx, need_dx=self.input_grad, backend=self.backend)
        else:
            x, xin, pad, y, fused = self._saved
            da = dy if fused else self._act_backward(dy, y, logits)
            dx, dw, db = ops.conv2d_backward(da, xin, self.kernel, self.bias, stride=self.strides, padding=pad,
                                             dilation=self.dilation_rate, need_dx=self.input_grad,
                                             activation=fused, y=y if fused else None, backend=self.backend)
        self.grads = [dw] + ([db] if self.use_bias else [])
        if dx is not None and xin is not x:
            pt, _, pl, _ = self._pads(x.shape[2], x.shape[3])
            dx = _xp(dx).ascontiguousarray(dx[:, :, pt:pt + x.shape[2], pl:pl + x.shape[3]])
        return dx


class _Pool2D(Layer):
    _op: str = ""

    def __init__(self, pool_size: int | tuple[int, int] = (2, 2), strides: int | tuple[int, int] | None = None,
                 padding: str = "valid", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        where = type(self).__name__
        self.pool_size = _pair(pool_size, "pool_size", where)
        self.strides = self.pool_size if strides is None else _pair(strides, "strides", where)
        self.padding = _padding(padding, where)

    def _pads(self, h: int, w: int) -> tuple[int, int]:
        if self.padding == "valid":
            return 0, 0
        (pt, pb), (pl, pr) = _same_pads(h, self.pool_size[0], self.strides[0]), _same_pads(w, self.pool_size[1], self.strides[1])
        if pt != pb or pl != pr:
            raise ValueError(
                f"{self.name}: padding='same' here needs uneven padding ({pt},{pb}) x ({pl},{pr}) for input "
                f"{(h, w)}, which the pooling ops do not support; use padding='valid' or an input size "
                f"for which the padding is even"
            )
        return pt, pl

    def compute_output_shape(self, input_shape: Shape) -> Shape:
        if len(input_shape) != 3:
            raise ValueError(f"{self.name}: expects inputs (height, width, channels), got {input_shape}")
        h, w, c = input_shape
        ph, pw = self._pads(h, w)
        oh = (h + 2 * ph - self.pool_size[0]) // self.strides[0] + 1
        ow = (w + 2 * pw - self.pool_size[1]) // self.strides[1] + 1
        if oh < 1 or ow < 1:
            raise ValueError(f"{self.name}: pool {self.pool_size} does not fit the input {input_shape}")
        return (oh, ow, c)

    def _kw(self, x: np.ndarray) -> dict[str, Any]:
        return dict(kernel_size=self.pool_size, stride=self.strides, padding=self._pads(x.shape[2], x.shape[3]))


class MaxPooling2D(_Pool2D):
    """Max pooling, Keras (H, W, C) -> (OH, OW, C); internally NCHW."""

    def forward(self, x: np.ndarray, training: bool = False, logits: bool = False) -> np.ndarray:
        if self.pool_fused:  # the previous Conv2D has pooled already
            return x
        if not training:
            return ops.max_pool2d(x, **self._kw(x), backend=self.backend)
        y, idx = ops.max_pool2d(x, **self._kw(x), return_indices=True, backend=self.backend)
        self._saved = (x, idx)
        return y

    def backward(self, dy: np.ndarray, logits: bool = False) -> np.ndarray:
        if self.pool_fused:
            return dy
        x, idx = self._saved
        return ops.max_pool2d_backward(dy, x, **self._kw(x), indices=idx, backend=self.backend)


class AveragePooling2D(_Pool2D):
    """Average pooling (padding excluded from the mean, as Keras), (H, W, C) -> (OH, OW, C)."""

    def forward(self, x: np.ndarray, training: bool = False, logits: bool = False) -> np.ndarray:
        if training:
            self._saved = x
        return ops.avg_pool2d(x, **self._kw(x), count_include_pad=False, backend=self.backend)

    def backward(self, dy: np.ndarray, logits: bool = False) -> np.ndarray:
        x = self._saved
        return ops.avg_pool2d_backward(dy, x, **self._kw(x), count_include_pad=False, backend=self.backend)


class Flatten(Layer):
    """(…) -> (prod(…),). Image tensors are flattened in the internal (C, H, W) order."""

    def compute_output_shape(self, input_shape: Shape) -> Shape:
        return (int(np.prod(input_shape)),)

    def forward(self, x: np.ndarray, training: bool = False, logits: bool = False) -> np.ndarray:
        if training:
            self._shape = x.shape
        return x.reshape(x.shape[0], -1)

    def backward(self, dy: np.ndarray, logits: bool = False) -> np.ndarray:
        return dy.reshape(self._shape)


class Dense(Layer):
    """Fully connected, (..., IN) -> (..., units); kernel stored (units, IN) as ops.linear takes it."""

    def __init__(self, units: int, activation: str | None = None, use_bias: bool = True, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if isinstance(units, bool) or not isinstance(units, (int, np.integer)) or units < 1:
            raise ValueError(f"Dense: units must be a positive int, got {units!r}")
        self.units = int(units)
        self.activation = _activation_name(activation, f"Dense({units})")
        self.use_bias = bool(use_bias)

    def compute_output_shape(self, input_shape: Shape) -> Shape:
        if len(input_shape) < 1:
            raise ValueError(f"{self.name}: needs at least 1-D inputs, got {input_shape}")
        return tuple(input_shape[:-1]) + (self.units,)

    def build(self, input_shape: Shape, rng: np.random.Generator) -> None:
        super().build(input_shape, rng)
        fin = input_shape[-1]
        self._set_params(kernel=glorot_uniform(rng, (self.units, fin), fan_in=fin, fan_out=self.units),
                         bias=np.zeros(self.units, np.float32) if self.use_bias else None)

    def forward(self, x: np.ndarray, training: bool = False, logits: bool = False) -> np.ndarray:
        y = self._act_forward(ops.linear(x, self.kernel, self.bias, backend=self.backend), logits)
        if training:
            self._saved = (x, y)
        return y

    def backward(self, dy: np.ndarray, logits: bool = False) -> np.ndarray:
        x, y = self._saved
        da = self._act_backward(dy, y, logits)
        dx, dw, db = ops.linear_backward(da, x, self.kernel, self.bias, need_dx=self.input_grad,
                                         backend=self.backend)
        self.grads = [dw] + ([db] if self.use_bias else [])
        return dx


class Activation(Layer):
    """An activation as its own layer: 'relu', 'sigmoid', 'tanh', 'softmax' or 'linear'."""

    def __init__(self, activation: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.activation = _activation_name(activation, "Activation")

    def forward(self, x: np.ndarray, training: bool = False, logits: bool = False) -> np.ndarray:
        y = self._act_forward(x, logits)
        if training:
            self._saved = y
        return y

    def backward(self, dy: np.ndarray, logits: bool = False) -> np.ndarray:
        return self._act_backward(dy, self._saved, logits)


class Softmax(Activation):
    """Softmax over the last (Keras) axis; as a model's last layer it fuses with cross-entropy."""

    def __init__(self, axis: int = -1, **kwargs: Any) -> None:
        if axis != -1:
            raise ValueError(f"Softmax: only axis=-1 (the features/channels axis) is supported, got {axis}")
        super().__init__("softmax", **kwargs)


class SimpleRNN(Layer):
    """Elman RNN: h_t = act(W_hh h_{t-1} + W_xh x_t + b), trained by backpropagation through time.

    Input (T, D) -> (units,) or, with return_sequences, (T, units). Weights stored
    W_xh (units, D), W_hh (units, units), b (units,) -- Keras's parameter count.
    """

    def __init__(self, units: int, activation: str | None = "tanh", return_sequences: bool = False,
                 use_bias: bool = True, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if isinstance(units, bool) or not isinstance(units, (int, np.integer)) or units < 1:
            raise ValueError(f"SimpleRNN: units must be a positive int, got {units!r}")
        self.units = int(units)
        self.activation = _activation_name(activation, "SimpleRNN")
        if self.activation == "softmax":
            raise ValueError("SimpleRNN: activation must be 'tanh', 'sigmoid', 'relu' or 'linear'")
        self.return_sequences = bool(return_sequences)
        self.use_bias = bool(use_bias)

    def compute_output_shape(self, input_shape: Shape) -> Shape:
        if len(input_shape) != 2:
            raise ValueError(f"{self.name}: expects inputs (timesteps, features), got {input_shape}")
        return (input_shape[0], self.units) if self.return_sequences else (self.units,)

    def build(self, input_shape: Shape, rng: np.random.Generator) -> None:
        super().build(input_shape, rng)
        d = input_shape[1]
        self._set_params(kernel=glorot_uniform(rng, (self.units, d), fan_in=d, fan_out=self.units),
                         recurrent_kernel=orthogonal(rng, (self.units, self.units)),
                         bias=np.zeros(self.units, np.float32) if self.use_bias else None)

    def forward(self, x: np.ndarray, training: bool = False, logits: bool = False) -> np.ndarray:
        # The whole sequence in one fused op (one kernel call on the CPU backends); only the
        # input and every hidden state are kept for the backward.
        hs = ops.rnn(x, self.kernel, self.recurrent_kernel, self.bias, activation=self.activation,
                     backend=self.backend)
        if training:
            self._saved = (x, hs)
        return hs if self.return_sequences else hs[:, -1]

    def backward(self, dy: np.ndarray, logits: bool = False) -> np.ndarray:
        x, hs = self._saved
        if self.return_sequences:
            dhs = dy
        else:
            # The loss sees only the last state: its gradient, zeros for the other steps.
            dhs = _xp(hs).zeros_like(hs)
            dhs[:, -1] = dy
        dx, dwxh, dwhh, db, _ = ops.rnn_backward(dhs, x, self.kernel, self.recurrent_kernel, self.bias,
                                                 activation=self.activation, hs=hs,
                                                 need_dx=self.input_grad, backend=self.backend)
        self.grads = [dwxh, dwhh] + ([db] if self.use_bias else [])
        return dx


__all__ = ["Layer", "Conv2D", "MaxPooling2D", "AveragePooling2D", "Flatten", "Dense", "Activation",
           "Softmax", "SimpleRNN"]

