"""layerforge's kernels as PyTorch ops: ``torch.library`` custom ops, a functional API and nn modules.

    import layerforge.interop.torch as lft

    y = lft.conv2d(x, w, b, padding=1)          # torch.nn.functional signatures
    model = torch.nn.Sequential(lft.nn.Conv2d(1, 32, 3), lft.nn.ReLU(), ...)

Three layers, top to bottom:

- ``lft.nn``: Conv2d, MaxPool2d, AvgPool2d, Linear, ReLU, Sigmoid, Tanh, Softmax, LogSoftmax,
  CrossEntropyLoss, RNN, subclasses of the torch.nn classes of the same names (same constructor,
  same Parameters and initialisation, same state_dict keys) whose ``forward`` calls
  layerforge. Every other name (Module, Sequential, Flatten, Dropout, ...) is torch.nn's, so
  ``nn`` -> ``lft.nn`` is a drop-in swap. ``lft.nn.functional`` is this module's functional API.
  RNN is one layer, unidirectional (tanh or relu, bias or not, batch_first or not, hx, unbatched
  input); under torch.compile it needs ``torch._dynamo.config.allow_rnn = True``, because Dynamo
  refuses every torch.nn.RNN subclass without it.
- The functional API (``conv2d``, ``max_pool2d``, ...), with torch.nn.functional's signatures;
  arguments layerforge does not support (groups != 1, ceil_mode, dilated pooling, class
  weights, ...) raise ValueError naming the argument rather than computing
  something else. ``rnn`` (x (N, T, I), w_xh (H, I), w_hh (H, H), b, h0 (N, H) -> hs (N, T, H))
  has layerforge.ops' signature: torch.nn.functional has no RNN function.
- The custom ops ``torch.ops.layerforge.<op>`` and ``<op>_backward``: one schema per op, a fake
  (meta) implementation giving output shapes and dtypes so ``torch.compile`` and
  ``torch.export`` trace through them without graph breaks, and an autograd formula whose
  backward is itself the ``<op>_backward`` custom op (so a compiled backward graph holds
  layerforge nodes, not Python). The backward ops have autograd formulas of their own, built
  from the forward ops, so double backward works (gradgradcheck passes), except
  ``rnn_backward``, whose formula raises: no double backward through an RNN.

Devices. CPU tensors are made contiguous (a no-op when they already are) and handed to
``layerforge.ops`` as zero-copy NumPy views (``t.detach().numpy()``); results come back through
``torch.from_numpy`` without a copy. CUDA tensors are handed to ``layerforge.ops`` as they are:
its device path (issue 4) allocates outputs with torch's caching allocator and runs on torch's
current stream. The CUDA path is written against that contract and is not exercised by the
tests on CPU-only machines. The backend is ``layerforge.ops``' default (``LAYERFORGE_BACKEND``).

Shapes are torch's: x (N, C, H, W) (or unbatched (C, H, W) for conv/pool), conv weight
(K, C, R, S), linear weight (OUT, IN) with any leading batch shape, cross_entropy logits (N, C)
with int64 class indices (N,), rnn input (N, T, I) (lft.nn.RNN: torch.nn.RNN's shapes).
dtypes: float32 and float64, one per call.
"""

from __future__ import annotations

import sys
import types
from typing import Any, Callable, Optional, Sequence

import torch
from torch import Tensor
from torch.nn.utils.rnn import PackedSequence

from .. import ops
from . import check_rnn_activation

__all__ = [
    "conv2d", "max_pool2d", "avg_pool2d", "linear", "softmax", "log_softmax",
    "relu", "sigmoid", "tanh", "cross_entropy", "rnn", "nn", "OPS",
]

_DEVICES = ("cpu", "cuda")
_FLOATS = (torch.float32, torch.float64)


# ---------------------------------------------------------------------------- calling layerforge.ops

def _host(a: Any) -> Any:
    """A zero-copy NumPy view of a CPU tensor (contiguous() copies only a non-contiguous one)."""
    return a.detach().contiguous().numpy() if isinstance(a, Tensor) else a


def _device(a: Any) -> Any:
    return a.detach().contiguous() if isinstance(a, Tensor) else a


def _from_device(a: Any) -> Any:
    # The device path returns torch tensors for torch inputs; a DLPack producer is accepted
    # too, so a future change of output kind in ops.py cannot silently break this adapter.
    if a is None or isinstance(a, Tensor):
        return a
    return torch.from_dlpack(a)


def _wrap(out: Any, conv: Callable[[Any], Any]) -> Any:
    if isinstance(out, tuple):
        return tuple(None if o is None else conv(o) for o in out)
    return conv(out)


def _call(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run ``layerforge.ops`` function fn on tensor arguments; tensors (or tuples) come back."""
    dev = next(a.device for a in (*args, *kwargs.values()) if isinstance(a, Tensor))
    if dev.type == "cpu":
        out = fn(*map(_host, args), **{k: _host(v) for k, v in kwargs.items()})
        return _wrap(out, torch.from_numpy)
    if dev.type == "cuda":
        out = fn(*map(_device, args), **{k: _device(v) for k, v in kwargs.items()})
        return _wrap(out, _from_device)
    raise RuntimeError(f"layerforge: tensors on {dev.type!r} are not supported (CPU and CUDA only)")


def _opt(t: Optional[Tensor], like: Tensor) -> Tensor:
    """A custom op cannot return None: an absent bias gradient travels as an empty tensor."""
    return like.new_empty((0,)) if t is None else t


# ---------------------------------------------------------------------------- shapes for the fake kernels
# Plain integer arithmetic so it also works on SymInts (dynamic shapes under torch.compile).

def _conv_hw(x: Tensor, w: Tensor, stride: Sequence[int], padding: Sequence[int],
             dilation: Sequence[int], same: bool) -> tuple[Any, Any]:
    h, wd = x.shape[2], x.shape[3]
    if same:  # 'same' is only allowed with stride 1
        return h, wd
    r, s = w.shape[2], w.shape[3]
    oh = (h + 2 * padding[0] - dilation[0] * (r - 1) - 1) // stride[0] + 1
    ow = (wd + 2 * padding[1] - dilation[1] * (s - 1) - 1) // stride[1] + 1
    return oh, ow


def _pool_shape(x: Tensor, k: Sequence[int], stride: Sequence[int], padding: Sequence[int]) -> tuple[Any, ...]:
    oh = (x.shape[2] + 2 * padding[0] - k[0]) // stride[0] + 1
    ow = (x.shape[3] + 2 * padding[1] - k[1]) // stride[1] + 1
    return (x.shape[0], x.shape[1], oh, ow)


def _conv_kw(stride: Sequence[int], padding: Sequence[int], dilation: Sequence[int], same: bool) -> dict[str, Any]:
    return dict(stride=tuple(stride), padding="same" if same else tuple(padding), dilation=tuple(dilation))


# ---------------------------------------------------------------------------- custom ops: convolution

@torch.library.custom_op("layerforge::conv2d", mutates_args=(), device_types=_DEVICES)
def _conv2d(x: Tensor, weight: Tensor, bias: Optional[Tensor], stride: Sequence[int],
            padding: Sequence[int], dilation: Sequence[int], same: bool) -> Tensor:
    """x (N,C,H,W), weight (K,C,R,S), bias (K,) -> (N,K,OH,OW); same=True is padding='same'."""
    return _call(ops.conv2d, x, weight, bias, **_conv_kw(stride, padding, dilation, same))


@_conv2d.register_fake
def _(x, weight, bias, stride, padding, dilation, same):
    return x.new_empty((x.shape[0], weight.shape[0], *_conv_hw(x, weight, stride, padding, dilation, same)))


@torch.library.custom_op("layerforge::conv2d_backward", mutates_args=(), device_types=_DEVICES)
def _conv2d_backward(grad: Tensor, x: Tensor, weight: Tensor, bias: Optional[Tensor], stride: Sequence[int],
                     padding: Sequence[int], dilation: Sequence[int], same: bool) -> tuple[Tensor, Tensor, Tensor]:
    """(dx (N,C,H,W), dw (K,C,R,S), db (K,), or (0,) when bias is None) for grad (N,K,OH,OW)."""
    dx, dw, db = _call(ops.conv2d_backward, grad, x, weight, bias, **_conv_kw(stride, padding, dilation, same))
    return dx, dw, _opt(db, weight)


@_conv2d_backward.register_fake
def _(grad, x, weight, bias, stride, padding, dilation, same):
    return x.new_empty(x.shape), weight.new_empty(weight.shape), weight.new_empty((weight.shape[0] if bias is not None else 0,))


def _conv2d_setup(ctx, inputs, output):
    x, weight, bias, *params = inputs
    ctx.save_for_backward(x, weight, bias)
    ctx.params = params


def _conv2d_grad(ctx, grad):
    x, weight, bias = ctx.saved_tensors
    dx, dw, db = _conv2d_backward(grad, x, weight, bias, *ctx.params)
    need = ctx.needs_input_grad
    return (dx if need[0] else None, dw if need[1] else None,
            db if bias is not None and need[2] else None, None, None, None, None)


_conv2d.register_autograd(_conv2d_grad, setup_context=_conv2d_setup)


# ---------------------------------------------------------------------------- custom ops: pooling

@torch.library.custom_op("layerforge::max_pool2d", mutates_args=(), device_types=_DEVICES)
def _max_pool2d(x: Tensor, kernel_size: Sequence[int], stride: Sequence[int],
                padding: Sequence[int]) -> tuple[Tensor, Tensor]:
    """x (N,C,H,W) -> (y (N,C,OH,OW), indices int64 (N,C,OH,OW), h*W + w in the input plane)."""
    return _call(ops.max_pool2d, x, tuple(kernel_size), tuple(stride), tuple(padding), return_indices=True)


@_max_pool2d.register_fake
def _(x, kernel_size, stride, padding):
    shape = _pool_shape(x, kernel_size, stride, padding)
    return x.new_empty(shape), x.new_empty(shape, dtype=torch.int64)


@torch.library.custom_op("layerforge::max_pool2d_backward", mutates_args=(), device_types=_DEVICES)
def _max_pool2d_backward(grad: Tensor, x: Tensor, indices: Tensor, kernel_size: Sequence[int],
                         stride: Sequence[int], padding: Sequence[int]) -> Tensor:
    """dx (N,C,H,W) for grad (N,C,OH,OW), routed by the forward's indices."""
    return _call(ops.max_pool2d_backward, grad, x, tuple(kernel_size), tuple(stride), tuple(padding), indices=indices)


@_max_pool2d_backward.register_fake
def _(grad, x, indices, kernel_size, stride, padding):
    return x.new_empty(x.shape)


def _max_pool2d_setup(ctx, inputs, output):
    x, *params = inputs
    ctx.mark_non_differentiable(output[1])
    ctx.save_for_backward(x, output[1])
    ctx.params = params


def _max_pool2d_grad(ctx, grad, _grad_indices):
    x, indices = ctx.saved_tensors
    return _max_pool2d_backward(grad, x, indices, *ctx.params), None, None, None


_max_pool2d.register_autograd(_max_pool2d_grad, setup_context=_max_pool2d_setup)


@torch.library.custom_op("layerforge::avg_pool2d", mutates_args=(), device_types=_DEVICES)
def _avg_pool2d(x: Tensor, kernel_size: Sequence[int], stride: Sequence[int], padding: Sequence[int],
                count_include_pad: bool) -> Tensor:
    """x (N,C,H,W) -> (N,C,OH,OW)."""
    return _call(ops.avg_pool2d, x, tuple(kernel_size), tuple(stride), tuple(padding), count_include_pad)


@_avg_pool2d.register_fake
def _(x, kernel_size, stride, padding, count_include_pad):
    return x.new_empty(_pool_shape(x, kernel_size, stride, padding))


@torch.library.custom_op("layerforge::avg_pool2d_backward", mutates_args=(), device_types=_DEVICES)
def _avg_pool2d_backward(grad: Tensor, x: Tensor, kernel_size: Sequence[int], stride: Sequence[int],
                         padding: Sequence[int], count_include_pad: bool) -> Tensor:
    """dx (N,C,H,W) for grad (N,C,OH,OW)."""
    return _call(ops.avg_pool2d_backward, grad, x, tuple(kernel_size), tuple(stride), tuple(padding), count_include_pad)


@_avg_pool2d_backward.register_fake
def _(grad, x, kernel_size, stride, padding, count_include_pad):
    return x.new_empty(x.shape)


def _avg_pool2d_setup(ctx, inputs, output):
    x, *params = inputs
    ctx.save_for_backward(x)  # ops.avg_pool2d_backward validates against x's shape
    ctx.params = params


def _avg_pool2d_grad(ctx, grad):
    (x,) = ctx.saved_tensors
    return _avg_pool2d_backward(grad, x, *ctx.params), None, None, None, None


_avg_pool2d.register_autograd(_avg_pool2d_grad, setup_context=_avg_pool2d_setup)


# ---------------------------------------------------------------------------- custom ops: dense

@torch.library.custom_op("layerforge::linear", mutates_args=(), device_types=_DEVICES)
def _linear(x: Tensor, weight: Tensor, bias: Optional[Tensor]) -> Tensor:
    """x (..., IN), weight (OUT, IN), bias (OUT,) -> (..., OUT)."""
    return _call(ops.linear, x, weight, bias)


@_linear.register_fake
def _(x, weight, bias):
    return x.new_empty((*x.shape[:-1], weight.shape[0]))


@torch.library.custom_op("layerforge::linear_backward", mutates_args=(), device_types=_DEVICES)
def _linear_backward(grad: Tensor, x: Tensor, weight: Tensor, bias: Optional[Tensor]) -> tuple[Tensor, Tensor, Tensor]:
    """(dx (..., IN), dw (OUT, IN), db (OUT,), or (0,) when bias is None) for grad (..., OUT)."""
    dx, dw, db = _call(ops.linear_backward, grad, x, weight, bias)
    return dx, dw, _opt(db, weight)


@_linear_backward.register_fake
def _(grad, x, weight, bias):
    return x.new_empty(x.shape), weight.new_empty(weight.shape), weight.new_empty((weight.shape[0] if bias is not None else 0,))


def _linear_setup(ctx, inputs, output):
    ctx.save_for_backward(*inputs)


def _linear_grad(ctx, grad):
    x, weight, bias = ctx.saved_tensors
    dx, dw, db = _linear_backward(grad, x, weight, bias)
    need = ctx.needs_input_grad
    return dx if need[0] else None, dw if need[1] else None, db if bias is not None and need[2] else None


_linear.register_autograd(_linear_grad, setup_context=_linear_setup)


# ---------------------------------------------------------------------------- custom ops: softmax family

@torch.library.custom_op("layerforge::softmax", mutates_args=(), device_types=_DEVICES)
def _softmax(x: Tensor, dim: int) -> Tensor:
    """softmax along dim; any shape."""
    return _call(ops.softmax, x, dim)


@torch.library.custom_op("layerforge::softmax_backward", mutates_args=(), device_types=_DEVICES)
def _softmax_backward(grad: Tensor, y: Tensor, dim: int) -> Tensor:
    """dx from the forward's output y (same shape as grad)."""
    return _call(ops.softmax_backward, grad, dim=dim, y=y)


@torch.library.custom_op("layerforge::log_softmax", mutates_args=(), device_types=_DEVICES)
def _log_softmax(x: Tensor, dim: int) -> Tensor:
    """log_softmax along dim; any shape."""
    return _call(ops.log_softmax, x, dim)


@torch.library.custom_op("layerforge::log_softmax_backward", mutates_args=(), device_types=_DEVICES)
def _log_softmax_backward(grad: Tensor, y: Tensor, dim: int) -> Tensor:
    """dx from the forward's output y (same shape as grad)."""
    return _call(ops.log_softmax_backward, grad, dim=dim, y=y)


def _same_shape_fake(x, *args):
    return x.new_empty(x.shape)


def _save_output(ctx, inputs, output):
    # softmax/log_softmax/sigmoid/tanh differentiate from their output: no recomputation.
    ctx.save_for_backward(output)
    ctx.params = inputs[1:]


def _from_output_grad(backward_op):
    def grad_fn(ctx, grad):
        (y,) = ctx.saved_tensors
        return (backward_op(grad, y, *ctx.params), *([None] * len(ctx.params)))
    return grad_fn


# ---------------------------------------------------------------------------- custom ops: elementwise

@torch.library.custom_op("layerforge::relu", mutates_args=(), device_types=_DEVICES)
def _relu(x: Tensor) -> Tensor:
    """max(x, 0); any shape."""
    return _call(ops.relu, x)


@torch.library.custom_op("layerforge::relu_backward", mutates_args=(), device_types=_DEVICES)
def _relu_backward(grad: Tensor, x: Tensor) -> Tensor:
    """grad where x > 0, else 0."""
    return _call(ops.relu_backward, grad, x)


@torch.library.custom_op("layerforge::sigmoid", mutates_args=(), device_types=_DEVICES)
def _sigmoid(x: Tensor) -> Tensor:
    """1 / (1 + exp(-x)); any shape."""
    return _call(ops.sigmoid, x)


@torch.library.custom_op("layerforge::sigmoid_backward", mutates_args=(), device_types=_DEVICES)
def _sigmoid_backward(grad: Tensor, y: Tensor) -> Tensor:
    """grad * y * (1 - y) from the forward's output y."""
    return _call(ops.sigmoid_backward, grad, y=y)


@torch.library.custom_op("layerforge::tanh", mutates_args=(), device_types=_DEVICES)
def _tanh(x: Tensor) -> Tensor:
    """tanh(x); any shape."""
    return _call(ops.tanh, x)


@torch.library.custom_op("layerforge::tanh_backward", mutates_args=(), device_types=_DEVICES)
def _tanh_backward(grad: Tensor, y: Tensor) -> Tensor:
    """grad * (1 - y^2) from the forward's output y."""
    return _call(ops.tanh_backward, grad, y=y)


def _relu_setup(ctx, inputs, output):
    ctx.save_for_backward(inputs[0])


def _relu_grad(ctx, grad):
    (x,) = ctx.saved_tensors
    return _relu_backward(grad, x)


for _op in (_softmax, _softmax_backward, _log_softmax, _log_softmax_backward, _relu, _relu_backward,
            _sigmoid, _sigmoid_backward, _tanh, _tanh_backward):
    _op.register_fake(_same_shape_fake)
_softmax.register_autograd(_from_output_grad(_softmax_backward), setup_context=_save_output)
_log_softmax.register_autograd(_from_output_grad(_log_softmax_backward), setup_context=_save_output)
_sigmoid.register_autograd(_from_output_grad(_sigmoid_backward), setup_context=_save_output)
_tanh.register_autograd(_from_output_grad(_tanh_backward), setup_context=_save_output)
_relu.register_autograd(_relu_grad, setup_context=_relu_setup)


# ---------------------------------------------------------------------------- custom ops: loss

@torch.library.custom_op("layerforge::cross_entropy", mutates_args=(), device_types=_DEVICES)
def _cross_entropy(logits: Tensor, target: Tensor, reduction: str) -> Tensor:
    """logits (N, C), target int64 (N,) -> 0-d loss; reduction 'mean' (NaN for N == 0) or 'sum'."""
    loss = _call(ops.cross_entropy, logits, target)
    if reduction == "sum":
        # ops computes the mean (accumulated in float64); torch's empty sum is 0, not NaN.
        n = logits.shape[0]
        loss = loss * n if n else torch.zeros_like(loss)
    return loss


@_cross_entropy.register_fake
def _(logits, target, reduction):
    return logits.new_empty(())


@torch.library.custom_op("layerforge::cross_entropy_backward", mutates_args=(), device_types=_DEVICES)
def _cross_entropy_backward(grad: Tensor, logits: Tensor, target: Tensor, reduction: str) -> Tensor:
    """dlogits (N, C) for the 0-d grad of the loss."""
    # ops divides by N (the mean); a sum's gradient is N times that. grad stays a tensor so a
    # CUDA grad is applied on the device, never read back to the host.
    dloss = grad * logits.shape[0] if reduction == "sum" else grad
    return _call(ops.cross_entropy_backward, dloss, logits, target)


@_cross_entropy_backward.register_fake
def _(grad, logits, target, reduction):
    return logits.new_empty(logits.shape)


def _cross_entropy_setup(ctx, inputs, output):
    logits, target, reduction = inputs
    ctx.save_for_backward(logits, target)  # target is integer: autograd never asks for its grad
    ctx.reduction = reduction


def _cross_entropy_grad(ctx, grad):
    logits, target = ctx.saved_tensors
    return _cross_entropy_backward(grad, logits, target, ctx.reduction), None, None


_cross_entropy.register_autograd(_cross_entropy_grad, setup_context=_cross_entropy_setup)


# ---------------------------------------------------------------------------- custom ops: recurrent
# An Elman RNN, batch first: x (N, T, I), w_xh (H, I), w_hh (H, H), b (H,) or None, h0 (N, H) or
# None (zeros) -> hs (N, T, H), h_t = act(x_t W_xh^T + h_{t-1} W_hh^T + b). One op call runs the
# whole sequence (layerforge's fused kernel), so autograd and a compiled graph hold one node per
# direction, not T.

@torch.library.custom_op("layerforge::rnn", mutates_args=(), device_types=_DEVICES)
def _rnn(x: Tensor, w_xh: Tensor, w_hh: Tensor, b: Optional[Tensor], h0: Optional[Tensor],
         activation: str) -> Tensor:
    """x (N,T,I), w_xh (H,I), w_hh (H,H), b (H,) or None, h0 (N,H) or None -> hs (N,T,H);
    activation 'tanh', 'sigmoid', 'relu' or 'linear'."""
    return _call(ops.rnn, x, w_xh, w_hh, b, h0, activation)


@_rnn.register_fake
def _(x, w_xh, w_hh, b, h0, activation):
    return x.new_empty((x.shape[0], x.shape[1], w_hh.shape[0]))


@torch.library.custom_op("layerforge::rnn_backward", mutates_args=(), device_types=_DEVICES)
def _rnn_backward(grad: Tensor, x: Tensor, w_xh: Tensor, w_hh: Tensor, b: Optional[Tensor],
                  h0: Optional[Tensor], hs: Tensor, activation: str,
                  need_dx: bool) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """BPTT for grad (N,T,H) = dloss/dhs, hs the forward's output: (dx (N,T,I), dw_xh (H,I),
    dw_hh (H,H), db (H,), dh0 (N,H)); dx is (0,) when need_dx is False, db when b is None,
    dh0 when h0 is None.

    Not differentiable: its autograd formula raises (no double backward through an RNN).
    """
    dx, dwx, dwh, db, dh0 = _call(ops.rnn_backward, grad, x, w_xh, w_hh, b, h0, activation,
                                  hs=hs, need_dx=need_dx)
    return _opt(dx, x), dwx, dwh, _opt(db, w_hh), _opt(dh0, x)


@_rnn_backward.register_fake
def _(grad, x, w_xh, w_hh, b, h0, hs, activation, need_dx):
    return (x.new_empty(x.shape if need_dx else (0,)), w_xh.new_empty(w_xh.shape), w_hh.new_empty(w_hh.shape),
            w_hh.new_empty((w_hh.shape[0] if b is not None else 0,)),
            x.new_empty((x.shape[0], w_hh.shape[0]) if h0 is not None else (0,)))


def _rnn_setup(ctx, inputs, output):
    x, w_xh, w_hh, b, h0, activation = inputs
    ctx.save_for_backward(x, w_xh, w_hh, b, h0, output)  # the backward reads h_t from hs
    ctx.activation = activation


def _rnn_grad(ctx, grad):
    x, w_xh, w_hh, b, h0, hs = ctx.saved_tensors
    need = ctx.needs_input_grad
    dx, dwx, dwh, db, dh0 = _rnn_backward(grad, x, w_xh, w_hh, b, h0, hs, ctx.activation, need[0])
    return (dx if need[0] else None, dwx if need[1] else None, dwh if need[2] else None,
            db if b is not None and need[3] else None, dh0 if h0 is not None and need[4] else None, None)


_rnn.register_autograd(_rnn_grad, setup_context=_rnn_setup)


def _rnn_backward_setup(ctx, inputs, output):
    pass


def _rnn_backward_grad(ctx, *grads):
    # Registered so that double backward fails loudly: without a formula, autograd would treat
    # the op's outputs as constants and a second derivative would come out silently zero.
    raise RuntimeError(
        "layerforge::rnn_backward is not differentiable: double backward (grad of grad, "
        "gradgradcheck, create_graph=True followed by another backward) is not implemented for rnn")


_rnn_backward.register_autograd(_rnn_backward_grad, setup_context=_rnn_backward_setup)



# ---------------------------------------------------------------------------- second derivatives
# The *_backward ops are differentiable too (with the forward ops and torch arithmetic), so
# double backward, gradgradcheck and opcheck with grad-requiring inputs all work. Each backward
# is linear in its upstream gradient, so d/dgrad is the forward op (or its adjoint) applied to
# the incoming gradient; pooling and relu backwards are piecewise constant in x (zero there).

def _save_all(ctx, inputs, output):
    # every backward op's schema is: tensors (an absent bias is None), then plain parameters
    n = next((i for i, a in enumerate(inputs) if not (isinstance(a, Tensor) or a is None)), len(inputs))
    ctx.save_for_backward(*inputs[:n])
    ctx.params = inputs[n:]


def _conv2d_backward_grad(ctx, ggx, ggw, ggb):
    grad, x, weight, bias = ctx.saved_tensors
    need = ctx.needs_input_grad
    dgrad = dx = dw = None
    if need[0]:  # <ggx, dX(g, w)> + <ggw, dW(g, x)> + <ggb, dB(g)> = <g, conv(ggx, w) + conv(x, ggw) + ggb>
        dgrad = _conv2d(ggx, weight, None, *ctx.params) + _conv2d(x, ggw, ggb if bias is not None else None, *ctx.params)
    if need[1]:
        dx = _conv2d_backward(grad, x, ggw, None, *ctx.params)[0]
    if need[2]:
        dw = _conv2d_backward(grad, ggx, weight, None, *ctx.params)[1]
    return dgrad, dx, dw, None, None, None, None, None


def _linear_backward_grad(ctx, ggx, ggw, ggb):
    grad, x, weight, bias = ctx.saved_tensors
    need = ctx.needs_input_grad
    dgrad = dx = dw = None
    if need[0]:
        dgrad = _linear(ggx, weight, None) + _linear(x, ggw, ggb if bias is not None else None)
    if need[1]:
        dx = _linear_backward(grad, x, ggw, None)[0]
    if need[2]:
        dw = _linear_backward(grad, ggx, weight, None)[1]
    return dgrad, dx, dw, None


def _max_pool2d_backward_grad(ctx, ggx):
    grad, x, indices = ctx.saved_tensors
    # dx = scatter-add of grad at the indices, so its adjoint gathers ggx there
    dgrad = ggx.flatten(2).gather(2, indices.flatten(2)).view_as(grad)
    return dgrad, None, None, None, None, None


def _avg_pool2d_backward_grad(ctx, ggx):
    return _avg_pool2d(ggx, *ctx.params), None, None, None, None, None


def _softmax_backward_grad(ctx, ggx):
    grad, y = ctx.saved_tensors
    (dim,) = ctx.params
    # dx = y * (g - s), s = sum(g * y): the Jacobian in g is symmetric
    s = (grad * y).sum(dim, keepdim=True)
    dy = ggx * (grad - s) - grad * (ggx * y).sum(dim, keepdim=True)
    return _softmax_backward(ggx, y, dim), dy, None


def _log_softmax_backward_grad(ctx, ggx):
    grad, y = ctx.saved_tensors
    (dim,) = ctx.params
    # dx = g - exp(y) * sum(g)
    e = y.exp()
    dgrad = ggx - (ggx * e).sum(dim, keepdim=True)
    dy = -ggx * e * grad.sum(dim, keepdim=True)
    return dgrad, dy, None


def _relu_backward_grad(ctx, ggx):
    grad, x = ctx.saved_tensors
    return _relu_backward(ggx, x), None


def _sigmoid_backward_grad(ctx, ggx):
    grad, y = ctx.saved_tensors
    return _sigmoid_backward(ggx, y), ggx * grad * (1 - 2 * y)


def _tanh_backward_grad(ctx, ggx):
    grad, y = ctx.saved_tensors
    return _tanh_backward(ggx, y), -2 * ggx * grad * y


def _cross_entropy_backward_grad(ctx, ggz):
    grad, logits, target = ctx.saved_tensors
    (reduction,) = ctx.params
    n = logits.shape[0]
    # dz = grad * c * (softmax(z) - onehot(t)), c = 1/N for the mean
    c = 1.0 / max(n, 1) if reduction == "mean" else 1.0
    p = _softmax(logits, 1)
    picked = ggz.gather(1, target.view(-1, 1).to(torch.int64)).sum()
    dgrad = c * ((ggz * p).sum() - picked)
    dz = (grad * c) * _softmax_backward(ggz, p, 1)
    return dgrad.to(grad.dtype), dz, None, None


for _op, _grad in (
    (_conv2d_backward, _conv2d_backward_grad), (_linear_backward, _linear_backward_grad),
    (_max_pool2d_backward, _max_pool2d_backward_grad), (_avg_pool2d_backward, _avg_pool2d_backward_grad),
    (_softmax_backward, _softmax_backward_grad), (_log_softmax_backward, _log_softmax_backward_grad),
    (_relu_backward, _relu_backward_grad), (_sigmoid_backward, _sigmoid_backward_grad),
    (_tanh_backward, _tanh_backward_grad), (_cross_entropy_backward, _cross_entropy_backward_grad),
):
    _op.register_autograd(_grad, setup_context=_save_all)

OPS: dict[str, Any] = {
    "conv2d": _conv2d, "conv2d_backward": _conv2d_backward,
    "max_pool2d": _max_pool2d, "max_pool2d_backward": _max_pool2d_backward,
    "avg_pool2d": _avg_pool2d, "avg_pool2d_backward": _avg_pool2d_backward,
    "linear": _linear, "linear_backward": _linear_backward,
    "softmax": _softmax, "softmax_backward": _softmax_backward,
    "log_softmax": _log_softmax, "log_softmax_backward": _log_softmax_backward,
    "relu": _relu, "relu_backward": _relu_backward,
    "sigmoid": _sigmoid, "sigmoid_backward": _sigmoid_backward,
    "tanh": _tanh, "tanh_backward": _tanh_backward,
    "cross_entropy": _cross_entropy, "cross_entropy_backward": _cross_entropy_backward,
    "rnn": _rnn, "rnn_backward": _rnn_backward,
}
"""Every registered custom op by name (also reachable as ``torch.ops.layerforge.<name>``)."""


# ---------------------------------------------------------------------------- functional API

def _float(op: str, name: str, t: Any) -> Tensor:
    if not isinstance(t, Tensor):
        raise TypeError(f"layerforge {op}: {name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dtype not in _FLOATS:
        raise TypeError(f"layerforge {op}: {name} must be float32 or float64, got {t.dtype}")
    return t


def _ints(op: str, name: str, v: Any) -> tuple[int, int]:
    """An int or a pair (torch accepts 1-element sequences too) -> a validated pair of ints."""
    if isinstance(v, (tuple, list, torch.Size)):
        if len(v) == 1:
            v = (v[0], v[0])
        if len(v) != 2:
            raise ValueError(f"layerforge {op}: {name} must be an int or a pair of ints, got {v!r}")
        a, b = v
    else:
        a = b = v
    for i in (a, b):
        if isinstance(i, bool) or not isinstance(i, (int, torch.SymInt)):
            raise TypeError(f"layerforge {op}: {name} must be an int or a pair of ints, got {v!r}")
    return a, b


def _only(op: str, name: str, value: Any, allowed: Any) -> None:
    if value != allowed:
        raise ValueError(f"layerforge {op}: only {name}={allowed!r} is supported, got {value!r}")


def _batched(op: str, x: Tensor) -> tuple[Tensor, bool]:
    """(N, C, H, W) view of x, and whether x was unbatched (C, H, W), as torch allows."""
    if x.dim() == 3:
        return x.unsqueeze(0), True
    if x.dim() != 4:
        raise ValueError(f"layerforge {op}: input must be 3-D (C, H, W) or 4-D (N, C, H, W), got shape {tuple(x.shape)}")
    return x, False


def conv2d(input: Tensor, weight: Tensor, bias: Optional[Tensor] = None, stride: Any = 1,
           padding: Any = 0, dilation: Any = 1, groups: int = 1) -> Tensor:
    """torch.nn.functional.conv2d: input (N, C, H, W) or (C, H, W), weight (K, C, R, S), bias (K,).

    padding: int, pair, 'valid' or 'same' (stride 1). groups must be 1.
    """
    op = "conv2d"
    _only(op, "groups", groups, 1)
    _float(op, "input", input)
    _float(op, "weight", weight)
    if bias is not None:
        _float(op, "bias", bias)
    stride, dilation = _ints(op, "stride", stride), _ints(op, "dilation", dilation)
    same = False
    if isinstance(padding, str):
        if padding not in ("same", "valid"):
            raise ValueError(f"layerforge {op}: padding must be an int, a pair, 'valid' or 'same', got {padding!r}")
        if padding == "same" and stride != (1, 1):
            raise ValueError(f"layerforge {op}: padding='same' needs stride 1, got stride {stride}")
        same, pad = padding == "same", (0, 0)
    else:
        pad = _ints(op, "padding", padding)
    x, unbatched = _batched(op, input)
    y = _conv2d(x, weight, bias, stride, pad, dilation, same)
    return y.squeeze(0) if unbatched else y


def _pool_args(op: str, kernel_size: Any, stride: Any, padding: Any):
    k = _ints(op, "kernel_size", kernel_size)
    # torch treats stride=None and stride=[] as "the kernel size"
    s = k if stride is None or (isinstance(stride, (tuple, list)) and len(stride) == 0) else _ints(op, "stride", stride)
    return k, s, _ints(op, "padding", padding)


def max_pool2d(input: Tensor, kernel_size: Any, stride: Any = None, padding: Any = 0, dilation: Any = 1,
               ceil_mode: bool = False, return_indices: bool = False) -> Tensor | tuple[Tensor, Tensor]:
    """torch.nn.functional.max_pool2d: (N, C, H, W) or (C, H, W) -> pooled [, int64 indices h*W + w].

    dilation must be 1 and ceil_mode False.
    """
    op = "max_pool2d"
    _float(op, "input", input)
    _only(op, "dilation", _ints(op, "dilation", dilation), (1, 1))
    _only(op, "ceil_mode", bool(ceil_mode), False)
    x, unbatched = _batched(op, input)
    y, idx = _max_pool2d(x, *_pool_args(op, kernel_size, stride, padding))
    if unbatched:
        y, idx = y.squeeze(0), idx.squeeze(0)
    return (y, idx) if return_indices else y


def avg_pool2d(input: Tensor, kernel_size: Any, stride: Any = None, padding: Any = 0, ceil_mode: bool = False,
               count_include_pad: bool = True, divisor_override: Optional[int] = None) -> Tensor:
    """torch.nn.functional.avg_pool2d: (N, C, H, W) or (C, H, W) -> pooled.

    ceil_mode must be False and divisor_override None.
    """
    op = "avg_pool2d"
    _float(op, "input", input)
    _only(op, "ceil_mode", bool(ceil_mode), False)
    _only(op, "divisor_override", divisor_override, None)
    x, unbatched = _batched(op, input)
    y = _avg_pool2d(x, *_pool_args(op, kernel_size, stride, padding), bool(count_include_pad))
    return y.squeeze(0) if unbatched else y


def linear(input: Tensor, weight: Tensor, bias: Optional[Tensor] = None) -> Tensor:
    """torch.nn.functional.linear: input (..., IN), weight (OUT, IN), bias (OUT,) -> (..., OUT)."""
    op = "linear"
    _float(op, "input", input)
    _float(op, "weight", weight)
    if bias is not None:
        _float(op, "bias", bias)
    return _linear(input, weight, bias)


def _dim_only(op: str, dim: Any, dtype: Any) -> int:
    if dim is None:
        raise TypeError(f"layerforge {op}: dim must be given explicitly (torch's implicit dim is deprecated)")
    _only(op, "dtype", dtype, None)
    return int(dim)


def softmax(input: Tensor, dim: Optional[int] = None, _stacklevel: int = 3, dtype: Any = None) -> Tensor:
    """torch.nn.functional.softmax along dim (required); any shape. dtype must be None."""
    return _softmax(_float("softmax", "input", input), _dim_only("softmax", dim, dtype))


def log_softmax(input: Tensor, dim: Optional[int] = None, _stacklevel: int = 3, dtype: Any = None) -> Tensor:
    """torch.nn.functional.log_softmax along dim (required); any shape. dtype must be None."""
    return _log_softmax(_float("log_softmax", "input", input), _dim_only("log_softmax", dim, dtype))


def relu(input: Tensor, inplace: bool = False) -> Tensor:
    """torch.nn.functional.relu. inplace=True is accepted and computes out of place: the result
    is returned either way, which is how models use it."""
    return _relu(_float("relu", "input", input))


def sigmoid(input: Tensor) -> Tensor:
    """torch.sigmoid; any shape."""
    return _sigmoid(_float("sigmoid", "input", input))


def tanh(input: Tensor) -> Tensor:
    """torch.tanh; any shape."""
    return _tanh(_float("tanh", "input", input))


def cross_entropy(input: Tensor, target: Tensor, weight: Optional[Tensor] = None, size_average: Any = None,
                  ignore_index: int = -100, reduce: Any = None, reduction: str = "mean",
                  label_smoothing: float = 0.0) -> Tensor:
    """torch.nn.functional.cross_entropy for logits (N, C) and class indices (N,) -> 0-d loss.

    reduction 'mean' or 'sum'; weight, size_average, reduce and label_smoothing must keep their
    defaults. ignore_index is accepted at its default only in the sense that every target must
    be a valid class (a target of -100 is refused as out of range, not ignored).
    """
    op = "cross_entropy"
    _float(op, "input", input)
    _only(op, "weight", weight, None)
    _only(op, "size_average", size_average, None)
    _only(op, "reduce", reduce, None)
    _only(op, "label_smoothing", float(label_smoothing), 0.0)
    if reduction not in ("mean", "sum"):
        raise ValueError(f"layerforge {op}: reduction must be 'mean' or 'sum', got {reduction!r}")
    if input.dim() != 2:
        raise ValueError(f"layerforge {op}: input must be 2-D logits (N, C), got shape {tuple(input.shape)}")
    if not isinstance(target, Tensor) or target.dtype.is_floating_point or target.dtype.is_complex or target.dtype == torch.bool:
        got = target.dtype if isinstance(target, Tensor) else type(target).__name__
        raise TypeError(f"layerforge {op}: target must be an integer tensor of class indices (N,), got {got}")
    return _cross_entropy(input, target, reduction)


def _shape(op: str, name: str, t: Tensor, expected: tuple[Any, ...], what: str) -> None:
    if tuple(t.shape) != tuple(expected):
        raise ValueError(f"layerforge {op}: {name} must have shape {what} = {tuple(expected)}, got {tuple(t.shape)}")


def rnn(input: Tensor, w_xh: Tensor, w_hh: Tensor, b: Optional[Tensor] = None, h0: Optional[Tensor] = None,
        activation: str = "tanh") -> Tensor:
    """layerforge.ops.rnn on tensors (not a torch.nn.functional name: torch has none): an Elman
    RNN over the whole sequence, batch first.

    input (N, T, I), w_xh (H, I), w_hh (H, H), b (H,) or None, h0 (N, H) or None (zeros) ->
    hs (N, T, H), every hidden state; h_t = act(x_t w_xh^T + h_{t-1} w_hh^T + b), activation
    'tanh', 'sigmoid', 'relu' or 'linear'. Differentiable once (double backward raises).
    """
    op = "rnn"
    check_rnn_activation(op, activation)
    named = {"input": input, "w_xh": w_xh, "w_hh": w_hh, "b": b, "h0": h0}
    for name, t in named.items():
        if t is not None:
            _float(op, name, t)
    dtypes = {name: t.dtype for name, t in named.items() if t is not None}
    if len(set(dtypes.values())) > 1:
        raise TypeError(f"layerforge {op}: all tensors must have one dtype, got {dtypes}")
    if input.dim() != 3:
        raise ValueError(f"layerforge {op}: input must be 3-D (N, T, I), got shape {tuple(input.shape)}")
    if w_hh.dim() != 2:
        raise ValueError(f"layerforge {op}: w_hh must be 2-D (H, H), got shape {tuple(w_hh.shape)}")
    n, _, i = input.shape
    hidden = w_hh.shape[0]
    _shape(op, "w_hh", w_hh, (hidden, hidden), "(H, H)")
    _shape(op, "w_xh", w_xh, (hidden, i), "(H, I)")
    if b is not None:
        _shape(op, "b", b, (hidden,), "(H,)")
    if h0 is not None:
        _shape(op, "h0", h0, (n, hidden), "(N, H)")
    return _rnn(input, w_xh, w_hh, b, h0, activation)


# ---------------------------------------------------------------------------- lft.nn

class Conv2d(torch.nn.Conv2d):
    """torch.nn.Conv2d computed by layerforge (groups=1, padding_mode='zeros' only)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _only("Conv2d", "groups", self.groups, 1)
        _only("Conv2d", "padding_mode", self.padding_mode, "zeros")

    def forward(self, input: Tensor) -> Tensor:
        return conv2d(input, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)


class MaxPool2d(torch.nn.MaxPool2d):
    """torch.nn.MaxPool2d computed by layerforge (dilation=1, ceil_mode=False only)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _only("MaxPool2d", "dilation", _ints("MaxPool2d", "dilation", self.dilation), (1, 1))
        _only("MaxPool2d", "ceil_mode", bool(self.ceil_mode), False)

    def forward(self, input: Tensor) -> Tensor | tuple[Tensor, Tensor]:
        return max_pool2d(input, self.kernel_size, self.stride, self.padding, self.dilation,
                          self.ceil_mode, self.return_indices)


class AvgPool2d(torch.nn.AvgPool2d):
    """torch.nn.AvgPool2d computed by layerforge (ceil_mode=False, divisor_override=None only)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _only("AvgPool2d", "ceil_mode", bool(self.ceil_mode), False)
        _only("AvgPool2d", "divisor_override", self.divisor_override, None)

    def forward(self, input: Tensor) -> Tensor:
        return avg_pool2d(input, self.kernel_size, self.stride, self.padding, self.ceil_mode,
                          self.count_include_pad, self.divisor_override)


class Linear(torch.nn.Linear):
    """torch.nn.Linear computed by layerforge."""

    def forward(self, input: Tensor) -> Tensor:
        return linear(input, self.weight, self.bias)


class ReLU(torch.nn.ReLU):
    """torch.nn.ReLU computed by layerforge (inplace=True computes out of place)."""

    def forward(self, input: Tensor) -> Tensor:
        return relu(input)


class Sigmoid(torch.nn.Sigmoid):
    """torch.nn.Sigmoid computed by layerforge."""

    def forward(self, input: Tensor) -> Tensor:
        return sigmoid(input)


class Tanh(torch.nn.Tanh):
    """torch.nn.Tanh computed by layerforge."""

    def forward(self, input: Tensor) -> Tensor:
        return tanh(input)


class Softmax(torch.nn.Softmax):
    """torch.nn.Softmax computed by layerforge (dim required)."""

    def forward(self, input: Tensor) -> Tensor:
        return softmax(input, self.dim)


class LogSoftmax(torch.nn.LogSoftmax):
    """torch.nn.LogSoftmax computed by layerforge (dim required)."""

    def forward(self, input: Tensor) -> Tensor:
        return log_softmax(input, self.dim)


class CrossEntropyLoss(torch.nn.CrossEntropyLoss):
    """torch.nn.CrossEntropyLoss computed by layerforge: logits (N, C), class indices (N,);
    reduction 'mean' or 'sum'; no class weights or label smoothing."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # refuse unsupported settings when the model is built, not at the first step
        _only("CrossEntropyLoss", "weight", None if self.weight is None else "a tensor", None)
        _only("CrossEntropyLoss", "label_smoothing", float(self.label_smoothing), 0.0)
        if self.reduction not in ("mean", "sum"):
            raise ValueError(f"layerforge CrossEntropyLoss: reduction must be 'mean' or 'sum', got {self.reduction!r}")

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return cross_entropy(input, target, reduction=self.reduction)


class RNN(torch.nn.RNN):
    """torch.nn.RNN computed by layerforge: one ``layerforge::rnn`` op for the whole sequence.

    Same constructor, Parameters (weight_ih_l0 (H, I), weight_hh_l0 (H, H), bias_ih_l0 and
    bias_hh_l0 (H,)), initialisation and state_dict keys as torch.nn.RNN. Supported:
    num_layers=1, bidirectional=False, nonlinearity 'tanh' or 'relu', bias True or False,
    batch_first True or False; dropout is accepted and, as in torch with one layer, has no
    effect. Anything else (num_layers > 1, bidirectional, PackedSequence input) raises ValueError
    naming the argument.

    forward(input, hx=None) -> (output, h_n), torch's shapes: input (N, T, I) with
    batch_first, (T, N, I) without, or unbatched (T, I); hx (1, N, H), or (1, H) for unbatched
    input, or None for zeros; output (N, T, H) / (T, N, H) / (T, H), h_n (1, N, H) / (1, H).
    The kernel's bias is bias_ih_l0 + bias_hh_l0 (autograd gives both the same gradient).
    Differentiable once: double backward raises.

    torch.compile: Dynamo refuses to trace any torch.nn.RNN, subclasses included (a graph
    break, an error with fullgraph=True), unless ``torch._dynamo.config.allow_rnn = True``.
    With that flag set the forward and backward compile as one graph with one layerforge node
    each way. The functional ``rnn`` compiles without the flag.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._refuse_unsupported()

    def _refuse_unsupported(self) -> None:
        _only("RNN", "num_layers", self.num_layers, 1)
        _only("RNN", "bidirectional", bool(self.bidirectional), False)
        _only("RNN", "proj_size", self.proj_size, 0)
        if self.nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"layerforge RNN: nonlinearity must be 'tanh' or 'relu', got {self.nonlinearity!r}")

    def forward(self, input: Tensor, hx: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:  # type: ignore[override]
        op = "RNN"
        if isinstance(input, PackedSequence):  # an unsupported argument, like num_layers: ValueError
            raise ValueError(  # noqa: TRY004
                f"layerforge {op}: PackedSequence input is not supported; pass a padded tensor "
                "(torch.nn.utils.rnn.pad_packed_sequence)")
        self._refuse_unsupported()  # the attributes may have been changed since __init__
        _float(op, "input", input)
        if input.dim() not in (2, 3):
            raise ValueError(f"layerforge {op}: input must be 2-D (T, I) or 3-D ({'N, T' if self.batch_first else 'T, N'}, I), "
                             f"got shape {tuple(input.shape)}")
        batched = input.dim() == 3
        if not batched:
            x = input.unsqueeze(0)
        else:
            x = input if self.batch_first else input.transpose(0, 1)
        n, t, i = x.shape
        if i != self.input_size:
            raise ValueError(f"layerforge {op}: input must have input_size={self.input_size} features in its last "
                             f"dimension, got shape {tuple(input.shape)}")
        if t == 0:
            raise ValueError(f"layerforge {op}: the sequence must have at least one step, got shape {tuple(input.shape)}")
        h0 = None
        if hx is not None:
            _float(op, "hx", hx)
            expected = (1, n, self.hidden_size) if batched else (1, self.hidden_size)
            if tuple(hx.shape) != expected:
                raise ValueError(f"layerforge {op}: hx must have shape {expected} (num_layers, "
                                 f"{'N, ' if batched else ''}hidden_size), got {tuple(hx.shape)}")
            h0 = hx[0] if batched else hx
        b = self.bias_ih_l0 + self.bias_hh_l0 if self.bias else None
        hs = rnn(x, self.weight_ih_l0, self.weight_hh_l0, b, h0, self.nonlinearity)  # (N, T, H)
        # torch returns contiguous tensors; callers .view() them
        h_n = hs[:, -1].contiguous()
        if not batched:
            return hs[0], h_n
        return (hs if self.batch_first else hs.transpose(0, 1).contiguous()), h_n.unsqueeze(0)


def _namespace(name: str, doc: str, members: dict[str, Any], fallback: Any) -> types.ModuleType:
    """A module object holding members, answering every other name from fallback."""
    mod = types.ModuleType(name, doc)
    mod.__dict__.update(members)
    mod.__all__ = sorted(members)

    def __getattr__(attr: str) -> Any:
        return getattr(fallback, attr)

    mod.__getattr__ = __getattr__  # PEP 562: consulted only for names not defined above
    return mod


_FUNCTIONAL = {n: globals()[n] for n in ("conv2d", "max_pool2d", "avg_pool2d", "linear", "softmax",
                                         "log_softmax", "relu", "sigmoid", "tanh", "cross_entropy")}
_functional = _namespace(
    f"{__name__}.nn.functional",
    "torch.nn.functional with layerforge's kernels for the ops it has; every other name is torch's.",
    _FUNCTIONAL, torch.nn.functional,
)
nn = _namespace(
    f"{__name__}.nn",
    "torch.nn with layerforge's kernels in Conv2d, MaxPool2d, AvgPool2d, Linear, ReLU, Sigmoid, Tanh, "
    "Softmax, LogSoftmax, CrossEntropyLoss and RNN; every other name (Module, Sequential, Flatten, ...) is torch.nn's.",
    {"Conv2d": Conv2d, "MaxPool2d": MaxPool2d, "AvgPool2d": AvgPool2d, "Linear": Linear, "ReLU": ReLU,
     "Sigmoid": Sigmoid, "Tanh": Tanh, "Softmax": Softmax, "LogSoftmax": LogSoftmax,
     "CrossEntropyLoss": CrossEntropyLoss, "RNN": RNN, "Flatten": torch.nn.Flatten, "functional": _functional},
    torch.nn,
)
# So that `import layerforge.interop.torch.nn as lnn` and `from ...torch.nn import Conv2d` work.
sys.modules[nn.__name__] = nn
sys.modules[_functional.__name__] = _functional
