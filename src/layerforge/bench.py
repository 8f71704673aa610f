"""`layerforge bench`: layerforge's kernels and PyTorch side by side, in one process.

The same catalogue of cases feeds the command and the pytest-benchmark suite in
``benchmarks/``, so both time the same inputs:

- ``op_cases(batches)``: every op of ``layerforge.ops``, forward and backward, on the
  documents' CNN layer shapes (conv1: 1->32 3x3 on 28x28; conv2: 32->64 3x3 on 13x13; max and
  average 2x2 pooling on (N,32,26,26) and (N,64,11,11), max with indices as a training step
  uses them; relu on both conv outputs; dense1 1600->64; dense2 64->10; softmax, log_softmax
  and the fused cross-entropy on (N,10)) and on the RNN's (N,128) hidden state (sigmoid, tanh).
- ``train_cases(batches)``: one whole training step (forward, backward, Adam lr 1e-3) of the
  documents' CNN and of the RNN (SimpleRNN(128, tanh) over 28 rows of 28 -> Dense(10,
  softmax)), layerforge's ``Sequential.train_on_batch`` against the same model in PyTorch with
  copied weights (one forward of each is checked to give the same loss first).

Implementations (``impl``): 'cpp' and 'numba' (``layerforge.ops`` with that backend; 'cpp:<path>'
is the C++ backend on a lower SIMD path, see ``simd_path``), 'torch' (PyTorch eager, NCHW) and
'torch-cl' (channels_last; only where the layout matters: convolution, pooling, the CNN step).
PyTorch backwards are timed as the backward kernels alone (``aten.convolution_backward``,
``aten.max_pool2d_with_indices_backward``, ``aten.threshold_backward``, ...), with the
forward's saved tensors prepared outside the timed call, as autograd would hold them.

``run`` first calls ``steady_allocator``, so that neither library's timings include page
faults on buffers glibc mapped afresh. PyTorch is optional: it is imported only when a
PyTorch case runs, and ``run`` reports layerforge alone when it is missing. Rates: GFLOP/s for
the compute-bound ops (convolution, dense, training steps), GB/s of bytes read + written for the
memory-bound ones; "% of peak" divides them by the measured float32 FMA peak
(``_C.fma_peak_gflops``), respectively by the bandwidth of a memcpy moving the same number of
bytes with the same threads (``_C.copy_bandwidth_gbs``), so cache-resident sizes are compared
with cache-resident copies.
"""

from __future__ import annotations

import contextlib
import datetime
import importlib
import json
import math
import os
import platform
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import _backend, ops
from ._info import steady_allocator

Fn = Callable[[], object]
Factory = Callable[[str], Fn]

OPS: tuple[str, ...] = ("conv2d", "conv2d_relu_maxpool", "max_pool2d", "avg_pool2d", "relu", "linear", "softmax",
                        "log_softmax", "cross_entropy", "sigmoid", "tanh", "rnn")
TRAIN: tuple[str, ...] = ("train_cnn", "train_rnn")
TORCH_IMPLS: tuple[str, ...] = ("torch", "torch-cl")
LOSS_RTOL = 1e-5  # copied weights must give the same first loss to this relative tolerance

_F32 = 4  # bytes
_I64 = 8


# ---------------------------------------------------------------------------- optional parts

def import_torch() -> Any | None:
    """The ``torch`` module, or None when PyTorch is not installed (it is an optional extra)."""
    try:
        return importlib.import_module("torch")
    except ImportError:
        return None


def _require_torch() -> Any:
    torch = import_torch()
    if torch is None:
        raise RuntimeError("PyTorch is not installed: pip install 'layerforge[torch]' for the PyTorch columns")
    return torch


def add_allocator_option(parser: Any) -> None:
    """``--default-allocator`` for the benchmark scripts that time one library in its own
    process: without it they call ``steady_allocator`` first, as ``run`` does."""
    parser.add_argument("--default-allocator", action="store_true",
                        help="leave glibc's malloc as it is (default: layerforge.steady_allocator, so "
                             "that no library's steps pay page faults on freshly mapped buffers)")


def apply_allocator_option(args: Any) -> None:
    """``steady_allocator()`` unless the parsed ``args`` asked for ``--default-allocator``."""
    if not args.default_allocator:
        steady_allocator()


def default_threads() -> int:
    """Cores this process may run on (its CPU affinity), the default for both sides."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def simd_paths() -> list[str]:
    """SIMD paths of the C++ backend other than the one in force (lowest first); [] without _C."""
    c = _backend.load("cpp")
    if c is None or not hasattr(c, "supported_simd_paths"):
        return []
    return [p for p in c.supported_simd_paths() if p != c.simd_path()]


def cpp_impls() -> list[str]:
    """'cpp' and one 'cpp:<path>' per lower SIMD path this CPU supports, plus 'cpp:im2col' (the
    im2col + GEMM convolution) where the direct AVX-512 convolution runs: the kernel versions."""
    c = _backend.load("cpp")
    im2col = ["cpp:im2col"] if c is not None and hasattr(c, "set_conv_algorithm") and c.simd_path() == "avx512" else []
    return ["cpp"] + [f"cpp:{p}" for p in simd_paths()] + im2col


@contextlib.contextmanager
def kernel_version(path: str | None) -> Iterator[None]:
    """Run the C++ kernels on SIMD path ``path`` ('scalar', 'avx2', 'avx512') inside the block,
    or with the im2col + GEMM convolution ('im2col'); None leaves the kernels alone. Raises
    ValueError for a path this CPU or build lacks."""
    if not path:
        yield
        return
    c = _backend.load("cpp")
    if c is None:
        raise RuntimeError(f"kernel_version({path!r}): the C++ backend is not available: "
                           f"{_backend.unavailable_reason('cpp')}")
    if path == "im2col":
        c.set_conv_algorithm("im2col")
        try:
            yield
        finally:
            c.set_conv_algorithm("auto")
        return
    supported = list(c.supported_simd_paths())
    if path not in supported:
        raise ValueError(f"kernel_version: expected one of {supported}, got {path!r}")
    old = c.simd_path()
    c.set_simd_path(path)
    try:
        yield
    finally:
        c.set_simd_path(old)


def fma_peak_gflops(threads: int) -> float | None:
    """Measured float32 FMA peak (GFLOP/s) of ``threads`` threads on the SIMD path in force;
    None when the compiled module _C is missing."""
    c = _backend.load("cpp")
    return float(c.fma_peak_gflops(threads)) if c is not None and hasattr(c, "fma_peak_gflops") else None


def copy_bandwidth_gbs(threads: int, nbytes: int = 64 << 20) -> float | None:
    """Measured GB/s (read + written) of a memcpy of ``nbytes`` bytes with up to ``threads``
    threads; None when the compiled module _C is missing."""
    c = _backend.load("cpp")
    if c is None or not hasattr(c, "copy_bandwidth_gbs"):
        return None
    return float(c.copy_bandwidth_gbs(threads, int(min(max(nbytes, 64), 1 << 34))))


@contextlib.contextmanager
def threads_set(threads: int, torch: Any | None) -> Iterator[None]:
    """layerforge's (and torch's, when given) thread count set to ``threads`` inside the block."""
    from ._info import get_num_threads, set_num_threads

    old = get_num_threads()
    old_torch = torch.get_num_threads() if torch is not None else None
    set_num_threads(threads)
    if torch is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        set_num_threads(old)
        if torch is not None:
            torch.set_num_threads(old_torch)


# ---------------------------------------------------------------------------- the cases

@dataclass(frozen=True)
class Case:
    """One benchmark: an op (or training step) in one direction on one shape.

    ``work`` is flops (bound 'compute') or bytes read + written (bound 'memory').
    ``setup()`` allocates the inputs (seeded, so every call gives the same) and returns a
    factory ``make(impl) -> fn``; fn() runs the timed call once.
    """

    op: str
    direction: str  # 'forward' | 'backward' | 'step'
    shape: str
    batch: int
    bound: str  # 'compute' | 'memory'
    work: float
    torch_impls: tuple[str, ...]
    setup: Callable[[], Factory] = field(repr=False, compare=False)

    @property
    def name(self) -> str:
        """Unique, human-readable id, also the pytest-benchmark group."""
        return f"{self.op} {self.shape} {self.direction}"

    @property
    def label(self) -> str:
        """Short row label: 'conv2d fwd', 'train step'."""
        if self.direction == "step":
            return "train step"
        short = {"forward": "fwd", "backward": "bwd", "forward+backward": "fwd+bwd"}
        return f"{self.op} {short[self.direction]}"

    @property
    def unit(self) -> str:
        return "GFLOP/s" if self.bound == "compute" else "GB/s"


def _layout(torch: Any, impl: str, a: np.ndarray) -> Any:
    t = torch.from_numpy(a)
    return t.contiguous(memory_format=torch.channels_last) if impl == "torch-cl" and t.dim() == 4 else t


def _ours(impl: str) -> str:
    """Backend name for ``ops.*(backend=)`` of an impl ('cpp:avx2' runs as 'cpp' on that path)."""
    return impl.split(":", 1)[0]


def _conv_case(name: str, c: int, h: int, w: int, k: int, n: int, direction: str) -> Case:
    oh, ow = h - 2, w - 2
    fwd = direction == "forward"
    flops = 2.0 * n * k * oh * ow * c * 9 * (1 if fwd else 2)  # backward: dx and dw (db is negligible)

    def setup() -> Factory:
        rng = np.random.default_rng(0)
        x = rng.standard_normal((n, c, h, w), dtype=np.float32)
        wt = rng.standard_normal((k, c, 3, 3), dtype=np.float32)
        b = rng.standard_normal(k, dtype=np.float32)
        dy = rng.standard_normal((n, k, oh, ow), dtype=np.float32)

        def make(impl: str) -> Fn:
            if impl in TORCH_IMPLS:
                torch = _require_torch()
                tx, tw, tdy = (_layout(torch, impl, a) for a in (x, wt, dy))
                tb = torch.from_numpy(b)
                if fwd:
                    conv = torch.nn.functional.conv2d
                    return lambda: conv(tx, tw, tb)
                bwd = torch.ops.aten.convolution_backward
                return lambda: bwd(tdy, tx, tw, [k], [1, 1], [0, 0], [1, 1], False, [0, 0], 1, [True, True, True])
            be = _ours(impl)
            if fwd:
                return lambda: ops.conv2d(x, wt, b, backend=be)
            return lambda: ops.conv2d_backward(dy, x, wt, b, backend=be)

        return make

    return Case("conv2d", direction, f"{name} ({n},{c},{h},{w})", n, "compute", flops, TORCH_IMPLS, setup)


def _conv_pool_case(name: str, c: int, h: int, w: int, k: int, n: int, direction: str) -> Case:
    """conv -> relu -> 2x2 max pool (indices kept), ours fused, PyTorch's three kernels."""
    oh, ow = h - 2, w - 2
    fwd = direction == "forward"
    flops = 2.0 * n * k * oh * ow * c * 9 * (1 if fwd else 2)

    def setup() -> Factory:
        rng = np.random.default_rng(0)
        x = rng.standard_normal((n, c, h, w), dtype=np.float32)
        wt = rng.standard_normal((k, c, 3, 3), dtype=np.float32)
        b = rng.standard_normal(k, dtype=np.float32)
        dy = rng.standard_normal((n, k, oh // 2, ow // 2), dtype=np.float32)

        def make(impl: str) -> Fn:
            if impl in TORCH_IMPLS:
                torch = _require_torch()
                aten = torch.ops.aten
                tx, tw, tdy = (_layout(torch, impl, a) for a in (x, wt, dy))
                tb = torch.from_numpy(b)

                def forward() -> Any:
                    a = torch.relu(torch.nn.functional.conv2d(tx, tw, tb))
                    return a, aten.max_pool2d_with_indices(a, [2, 2], [2, 2])

                if fwd:
                    return forward
                a, (_, tidx) = forward()

                def backward() -> Any:  # the three backward kernels autograd would run
                    da = aten.max_pool2d_with_indices_backward(tdy, a, [2, 2], [2, 2], [0, 0], [1, 1], False, tidx)
                    da = aten.threshold_backward(da, a, 0)
                    return aten.convolution_backward(da, tx, tw, [k], [1, 1], [0, 0], [1, 1], False, [0, 0], 1,
                                                     [True, True, True])

                return backward
            be = _ours(impl)
            if fwd:
                return lambda: ops.conv2d_relu_maxpool(x, wt, b, backend=be)
            y, ix = ops.conv2d_relu_maxpool(x, wt, b, backend=be)
            return lambda: ops.conv2d_relu_maxpool_backward(dy, x, wt, b, y=y, indices=ix, backend=be)

        return make

    return Case("conv2d_relu_maxpool", direction, f"{name} ({n},{c},{h},{w})", n, "compute", flops, TORCH_IMPLS,
                setup)


def _rnn_case(n: int, direction: str, steps: int = 28, features: int = 28, units: int = 128) -> Case:
    """The Elman RNN over a sequence: ours fused, PyTorch's nn.RNN (tanh). PyTorch has no
    backward kernel of its own for it (autograd runs the unrolled steps), so the second row
    times forward + backward on both sides."""
    fwd = direction == "forward"
    flops = 2.0 * n * steps * (features * units + units * units) * (1 if fwd else 3)

    def setup() -> Factory:
        rng = np.random.default_rng(0)
        x = rng.standard_normal((n, steps, features), dtype=np.float32)
        wx = (rng.standard_normal((units, features)) * 0.1).astype(np.float32)
        wh = (rng.standard_normal((units, units)) * 0.05).astype(np.float32)
        b = np.zeros(units, np.float32)
        dhs = rng.standard_normal((n, steps, units), dtype=np.float32)

        def make(impl: str) -> Fn:
            if impl in TORCH_IMPLS:
                torch = _require_torch()
                rnn = torch.nn.RNN(features, units, nonlinearity="tanh", batch_first=True)
                with torch.no_grad():
                    rnn.weight_ih_l0.copy_(torch.from_numpy(wx))
                    rnn.weight_hh_l0.copy_(torch.from_numpy(wh))
                    rnn.bias_ih_l0.zero_()
                    rnn.bias_hh_l0.zero_()
                tx, tdhs = torch.from_numpy(x), torch.from_numpy(dhs)
                if fwd:
                    def forward() -> Any:
                        with torch.no_grad():
                            return rnn(tx)
                    return forward

                def both() -> Any:
                    xs = tx.requires_grad_(True)
                    out, _ = rnn(xs)
                    out.backward(tdhs)
                    return out

                return both
            be = _ours(impl)
            if fwd:
                return lambda: ops.rnn(x, wx, wh, b, activation="tanh", backend=be)

            def ours_both() -> Any:
                hs = ops.rnn(x, wx, wh, b, activation="tanh", backend=be)
                return ops.rnn_backward(dhs, x, wx, wh, b, activation="tanh", hs=hs, backend=be)

            return ours_both

        return make

    return Case("rnn", direction, f"({n},{steps},{features})->{units}", n, "compute", flops, ("torch",), setup)


def _pool_case(kind: str, c: int, h: int, w: int, n: int, direction: str) -> Case:
    oh, ow = h // 2, w // 2
    fwd = direction == "forward"
    small = n * c * oh * ow
    big = n * c * h * w
    idx = _I64 if kind == "max" else 0  # max pooling writes (forward) or reads (backward) int64 indices
    nbytes = big * _F32 + small * (_F32 + idx)

    def setup() -> Factory:
        rng = np.random.default_rng(0)
        x = rng.standard_normal((n, c, h, w), dtype=np.float32)
        dy = rng.standard_normal((n, c, oh, ow), dtype=np.float32)

        def make(impl: str) -> Fn:
            if impl in TORCH_IMPLS:
                torch = _require_torch()
                aten = torch.ops.aten
                tx, tdy = _layout(torch, impl, x), _layout(torch, impl, dy)
                if kind == "max":
                    if fwd:
                        return lambda: aten.max_pool2d_with_indices(tx, [2, 2], [2, 2])
                    _, tidx = aten.max_pool2d_with_indices(tx, [2, 2], [2, 2])
                    return lambda: aten.max_pool2d_with_indices_backward(tdy, tx, [2, 2], [2, 2], [0, 0], [1, 1],
                                                                         False, tidx)
                if fwd:
                    return lambda: aten.avg_pool2d(tx, [2, 2], [2, 2])
                return lambda: aten.avg_pool2d_backward(tdy, tx, [2, 2], [2, 2], [0, 0], False, True, None)
            be = _ours(impl)
            if kind == "max":
                if fwd:
                    return lambda: ops.max_pool2d(x, 2, return_indices=True, backend=be)
                _, ix = ops.max_pool2d(x, 2, return_indices=True, backend=be)
                return lambda: ops.max_pool2d_backward(dy, x, 2, indices=ix, backend=be)
            if fwd:
                return lambda: ops.avg_pool2d(x, 2, backend=be)
            return lambda: ops.avg_pool2d_backward(dy, x, 2, backend=be)

        return make

    return Case(f"{kind}_pool2d", direction, f"({n},{c},{h},{w})", n, "memory", nbytes, TORCH_IMPLS, setup)


def _linear_case(name: str, fin: int, fout: int, n: int, direction: str) -> Case:
    fwd = direction == "forward"
    flops = 2.0 * n * fin * fout * (1 if fwd else 2)

    def setup() -> Factory:
        rng = np.random.default_rng(0)
        x = rng.standard_normal((n, fin), dtype=np.float32)
        w = rng.standard_normal((fout, fin), dtype=np.float32)
        b = rng.standard_normal(fout, dtype=np.float32)
        dy = rng.standard_normal((n, fout), dtype=np.float32)

        def make(impl: str) -> Fn:
            if impl in TORCH_IMPLS:
                torch = _require_torch()
                tx, tw, tb, tdy = (torch.from_numpy(a) for a in (x, w, b, dy))
                if fwd:
                    lin = torch.nn.functional.linear
                    return lambda: lin(tx, tw, tb)
                # What autograd runs for F.linear: dx = dy w, dw = dy^T x, db = sum(dy).
                return lambda: (tdy.mm(tw), tdy.t().mm(tx), tdy.sum(0))
            be = _ours(impl)
            if fwd:
                return lambda: ops.linear(x, w, b, backend=be)
            return lambda: ops.linear_backward(dy, x, w, b, backend=be)

        return make

    return Case("linear", direction, f"{name} ({n},{fin})", n, "compute", flops, ("torch",), setup)


def _rowwise_case(op: str, shape: tuple[int, ...], direction: str) -> Case:
    """relu, sigmoid, tanh, softmax, log_softmax (dim 1): elementwise or row-wise, memory-bound."""
    fwd = direction == "forward"
    size = int(np.prod(shape))
    nbytes = size * _F32 * (2 if fwd else 3)  # forward: x, y; backward: dy, x or y, dx

    def setup() -> Factory:
        rng = np.random.default_rng(0)
        x = rng.standard_normal(shape, dtype=np.float32)
        dy = rng.standard_normal(shape, dtype=np.float32)

        def make(impl: str) -> Fn:
            if impl in TORCH_IMPLS:
                torch = _require_torch()
                aten = torch.ops.aten
                tx, tdy = torch.from_numpy(x), torch.from_numpy(dy)
                f32 = torch.float32
                if op == "relu":
                    return (lambda: torch.relu(tx)) if fwd else (lambda: aten.threshold_backward(tdy, tx, 0))
                if op in ("sigmoid", "tanh"):
                    f = getattr(torch, op)
                    if fwd:
                        return lambda: f(tx)
                    ty = f(tx)
                    g = getattr(aten, f"{op}_backward")
                    return lambda: g(tdy, ty)
                f = getattr(torch, op)
                if fwd:
                    return lambda: f(tx, 1)
                ty = f(tx, 1)
                g = aten._softmax_backward_data if op == "softmax" else aten._log_softmax_backward_data
                return lambda: g(tdy, ty, 1, f32)
            be = _ours(impl)
            if op == "relu":
                return (lambda: ops.relu(x, backend=be)) if fwd else (lambda: ops.relu_backward(dy, x, backend=be))
            if op in ("sigmoid", "tanh"):
                f, g = getattr(ops, op), getattr(ops, f"{op}_backward")
                if fwd:
                    return lambda: f(x, backend=be)
                y = f(x, backend=be)
                return lambda: g(dy, y=y, backend=be)
            f, g = getattr(ops, op), getattr(ops, f"{op}_backward")
            if fwd:
                return lambda: f(x, 1, backend=be)
            y = f(x, 1, backend=be)
            return lambda: g(dy, dim=1, y=y, backend=be)

        return make

    return Case(op, direction, "(" + ",".join(map(str, shape)) + ")", shape[0], "memory", nbytes, ("torch",), setup)


def _cross_entropy_case(n: int, classes: int, direction: str) -> Case:
    fwd = direction == "forward"
    nbytes = n * (classes * _F32 * (1 if fwd else 2) + _I64)  # logits (+ dlogits) and the labels

    def setup() -> Factory:
        rng = np.random.default_rng(0)
        x = rng.standard_normal((n, classes), dtype=np.float32)
        labels = rng.integers(0, classes, n)

        def make(impl: str) -> Fn:
            if impl in TORCH_IMPLS:
                torch = _require_torch()
                aten = torch.ops.aten
                tx, tl = torch.from_numpy(x), torch.from_numpy(labels)
                if fwd:
                    ce = torch.nn.functional.cross_entropy
                    return lambda: ce(tx, tl)
                # Autograd's backward of F.cross_entropy: nll_loss_backward, then log_softmax's.
                logp = torch.log_softmax(tx, 1)
                _, total = aten.nll_loss_forward(logp, tl, None, 1, -100)
                one = torch.ones((), dtype=torch.float32)
                return lambda: aten._log_softmax_backward_data(
                    aten.nll_loss_backward(one, logp, tl, None, 1, -100, total), logp, 1, torch.float32)
            be = _ours(impl)
            if fwd:
                return lambda: ops.cross_entropy(x, labels, backend=be)
            return lambda: ops.cross_entropy_backward(1.0, x, labels, backend=be)

        return make

    return Case("cross_entropy", direction, f"({n},{classes})", n, "memory", nbytes, ("torch",), setup)


def op_cases(batches: Sequence[int] = (32,), op_names: Sequence[str] | None = None) -> list[Case]:
    """Every op, forward then backward, on the documents' shapes, for each batch size in turn.

    op_names: a subset of OPS (None: all).
    """
    _check_batches(batches)
    wanted = set(OPS if op_names is None else op_names)
    unknown = wanted - set(OPS)
    if unknown:
        raise ValueError(f"op_cases: unknown ops {sorted(unknown)}; expected some of {list(OPS)}")
    out: list[Case] = []
    dirs = ("forward", "backward")
    for n in batches:
        for d in dirs:
            out += [_conv_case("conv1", 1, 28, 28, 32, n, d), _conv_case("conv2", 32, 13, 13, 64, n, d)]
        for d in dirs:
            out += [_conv_pool_case("conv1", 1, 28, 28, 32, n, d), _conv_pool_case("conv2", 32, 13, 13, 64, n, d)]
        for kind in ("max", "avg"):
            for d in dirs:
                out += [_pool_case(kind, 32, 26, 26, n, d), _pool_case(kind, 64, 11, 11, n, d)]
        for d in dirs:
            out += [_rowwise_case("relu", (n, 32, 26, 26), d), _rowwise_case("relu", (n, 64, 11, 11), d)]
        for d in dirs:
            out += [_linear_case("dense1", 1600, 64, n, d), _linear_case("dense2", 64, 10, n, d)]
        for op in ("softmax", "log_softmax"):
            out += [_rowwise_case(op, (n, 10), d) for d in dirs]
        out += [_cross_entropy_case(n, 10, d) for d in dirs]
        for op in ("sigmoid", "tanh"):
            out += [_rowwise_case(op, (n, 128), d) for d in dirs]
        out += [_rnn_case(n, d) for d in ("forward", "forward+backward")]
    return [c for c in out if c.op in wanted]


# ---------------------------------------------------------------------------- training steps

def _cnn_step_flops(n: int) -> float:
    """Useful flops of one CNN training step: forward, then weight gradients of every layer and
    input gradients of all but the first (which nobody needs)."""
    conv1 = 2.0 * n * 32 * 26 * 26 * 9
    rest = 2.0 * n * (64 * 11 * 11 * 32 * 9 + 1600 * 64 + 64 * 10)
    return conv1 * 2 + rest * 3


def _rnn_step_flops(n: int, steps: int = 28, features: int = 28, units: int = 128, classes: int = 10) -> float:
    inp = 2.0 * n * steps * features * units
    rest = 2.0 * n * (steps * units * units + units * classes)
    return inp * 2 + rest * 3


def layerforge_model(kind: str, backend: str | None = None) -> Any:
    """The documents' CNN or RNN as a layerforge ``Sequential`` compiled with Adam (lr 1e-3)
    and sparse categorical cross-entropy, weights seeded with set_random_seed(0). No metrics,
    so a step does what the PyTorch step does (the accuracy would cost an argmax)."""
    from .layers import Conv2D, Dense, Flatten, MaxPooling2D, SimpleRNN
    from .models import Sequential
    from .optimizers import Adam
    from .utils import set_random_seed

    set_random_seed(0)
    if kind == "cnn":
        model = Sequential([
            Conv2D(32, (3, 3), activation="relu", input_shape=(28, 28, 1)), MaxPooling2D((2, 2)),
            Conv2D(64, (3, 3), activation="relu"), MaxPooling2D((2, 2)), Flatten(),
            Dense(64, activation="relu"), Dense(10, activation="softmax"),
        ], backend=backend)
    elif kind == "rnn":
        model = Sequential([SimpleRNN(128, activation="tanh", input_shape=(28, 28)), Dense(10, activation="softmax")],
                           backend=backend)
    else:
        raise ValueError(f"layerforge_model: kind must be 'cnn' or 'rnn', got {kind!r}")
    model.compile(optimizer=Adam(learning_rate=1e-3), loss="sparse_categorical_crossentropy")
    return model


def torch_model(kind: str, weights: Sequence[np.ndarray], channels_last: bool = False) -> Any:
    """The same network in PyTorch (returns logits), its parameters copied from layerforge's
    ``get_weights()`` list. Layouts already agree: conv (out, in, kh, kw), dense (out, in),
    Flatten in (C, H, W) order, SimpleRNN kernel (units, features) and recurrent kernel
    (units, units) as nn.RNN's weight_ih / weight_hh (its second bias, bias_hh, is zero)."""
    torch = _require_torch()
    nn = torch.nn
    if kind == "cnn":
        model = nn.Sequential(nn.Conv2d(1, 32, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(32, 64, 3), nn.ReLU(),
                              nn.MaxPool2d(2), nn.Flatten(), nn.Linear(1600, 64), nn.ReLU(), nn.Linear(64, 10))
        params = list(model.parameters())
        sources = list(weights)
    elif kind == "rnn":
        class RNN(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.rnn = nn.RNN(28, 128, nonlinearity="tanh", batch_first=True)
                self.fc = nn.Linear(128, 10)

            def forward(self, x: Any) -> Any:
                return self.fc(self.rnn(x)[1][-1])

        model = RNN()
        r = model.rnn
        params = [r.weight_ih_l0, r.weight_hh_l0, r.bias_ih_l0, model.fc.weight, model.fc.bias]
        sources = list(weights)
        with torch.no_grad():
            r.bias_hh_l0.zero_()
    else:
        raise ValueError(f"torch_model: kind must be 'cnn' or 'rnn', got {kind!r}")
    if len(sources) != len(params):
        raise ValueError(f"torch_model: the {kind} takes {len(params)} weight arrays, got {len(sources)}")
    with torch.no_grad():
        for i, (p, w) in enumerate(zip(params, sources)):
            if tuple(p.shape) != tuple(np.shape(w)):
                raise ValueError(f"torch_model: weight {i} of the {kind} must have shape {tuple(p.shape)}, "
                                 f"got {tuple(np.shape(w))}")
            p.copy_(torch.from_numpy(np.ascontiguousarray(w, np.float32)))
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


def _train_case(kind: str, n: int) -> Case:
    flops = _cnn_step_flops(n) if kind == "cnn" else _rnn_step_flops(n)

    def setup() -> Factory:
        # Real images: the embedded Fashion-MNIST sample (5,000 training images), scaled to
        # [0, 1] as the training scripts do; repeated when the batch is larger.
        from .datasets import fashion_mnist

        (images, labels), _ = fashion_mnist.load_sample()
        take = np.arange(n) % len(images)
        shape = (n, 28, 28, 1) if kind == "cnn" else (n, 28, 28)
        x = (images[take] / np.float32(255)).astype(np.float32).reshape(shape)
        y = labels[take].astype(np.int64)
        weights = layerforge_model(kind).get_weights()
        ours_loss: list[float] = []

        def reference_loss() -> float:
            """Our forward loss with the initial weights (float64 log of the probabilities)."""
            if not ours_loss:
                p = layerforge_model(kind).predict(x, batch_size=n).astype(np.float64)
                ours_loss.append(float(-np.log(p[np.arange(n), y]).mean()))
            return ours_loss[0]

        def make(impl: str) -> Fn:
            if impl in TORCH_IMPLS:
                torch = _require_torch()
                fn = torch.nn.functional.cross_entropy
                model = torch_model(kind, weights, channels_last=impl == "torch-cl")
                tx = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)) if kind == "cnn" else x)
                if impl == "torch-cl":
                    tx = tx.contiguous(memory_format=torch.channels_last)
                ty = torch.from_numpy(y)
                with torch.no_grad():
                    first = float(fn(model(tx), ty))
                check_same_loss(f"{kind} {impl}", reference_loss(), first)
                # Keras's Adam epsilon; PyTorch puts it outside the bias correction, which does
                # not change the work of a step.
                opt = torch.optim.Adam(model.parameters(), lr=1e-3, eps=1e-7)

                def step() -> object:
                    opt.zero_grad(set_to_none=True)
                    loss = fn(model(tx), ty)
                    loss.backward()
                    opt.step()
                    return loss

                return step
            model = layerforge_model(kind, _ours(impl))
            model.set_weights(weights)
            return lambda: model.train_on_batch(x, y)

        return make

    impls = TORCH_IMPLS if kind == "cnn" else ("torch",)
    return Case(f"train_{kind}", "step", f"{kind.upper()} batch {n}", n, "compute", flops, impls, setup)


def check_same_loss(what: str, ours: float, theirs: float, rtol: float = LOSS_RTOL) -> None:
    """Raise RuntimeError unless the two first-step losses agree to ``rtol`` (relative): the
    models are the same network with the same weights, so the timings compare like with like."""
    if not (math.isfinite(ours) and math.isfinite(theirs)) or abs(ours - theirs) > rtol * max(1.0, abs(ours)):
        raise RuntimeError(f"{what}: with copied weights PyTorch's first loss is {theirs:.7f} but layerforge's is "
                           f"{ours:.7f} (|diff| {abs(ours - theirs):.2e} > {rtol:g}); the models differ, so the "
                           "timings would not compare the same network")


def train_cases(batches: Sequence[int] = (32,), models: Sequence[str] = ("cnn", "rnn")) -> list[Case]:
    """One training step (forward, backward, Adam) of each model at each batch size."""
    _check_batches(batches)
    for m in models:
        if m not in ("cnn", "rnn"):
            raise ValueError(f"train_cases: models must be 'cnn' or 'rnn', got {m!r}")
    return [_train_case(m, n) for n in batches for m in models]


def _check_batches(batches: Sequence[int]) -> None:
    if not batches:
        raise ValueError("expected at least one batch size, got none")
    for n in batches:
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise ValueError(f"batch sizes must be positive ints, got {n!r}")


# ---------------------------------------------------------------------------- timing

SETTLE_S = 0.02  # pause before each sample (see measure_samples)
# Seconds of calls a sample runs at least. At 1 ms the batch-32 rows' samples spread by up
# to 2.3x their median (interquartile range) on our shared 2-core machine, the wake-up after
# each pause weighing on a few calls; at 5 ms by at most 0.14x, in back-to-back runs of the
# same rows (session 9). The pauses, not the samples, take most of a run's time.
MIN_SAMPLE_S = 5e-3


def measure_samples(fns: dict[str, Fn], repeats: int, min_time: float = MIN_SAMPLE_S) -> dict[str, list[float]]:
    """Seconds per call of each fn, ``repeats`` samples each.

    Each fn is called once first (JIT compilation, allocator, caches), then timed three
    times; the fastest of those sets how many calls a sample runs back to back, to last at
    least ``min_time`` seconds. (Timing only the second call had set one call a sample for the
    multi-megabyte elementwise ops: that call still page-faulted its fresh output buffer.)
    Samples of the different fns are interleaved, so a change in machine load hits all of
    them alike.
    """
    if repeats < 1:
        raise ValueError(f"measure: repeats must be >= 1, got {repeats}")
    inner: dict[str, int] = {}
    for k, f in fns.items():
        f()
        dt = math.inf
        for _ in range(3):
            t0 = time.perf_counter()
            f()
            dt = min(dt, time.perf_counter() - t0)
        inner[k] = max(1, min(100_000, math.ceil(min_time / max(dt, 1e-8))))
    samples: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for k, f in fns.items():
            reps = inner[k]
            # Let the previous implementation's OpenMP workers stop spinning and sleep: two
            # runtimes (ours, PyTorch's) spinning on two cores at once distort both timings.
            time.sleep(SETTLE_S)
            f()
            t0 = time.perf_counter()
            for _ in range(reps):
                f()
            samples[k].append((time.perf_counter() - t0) / reps)
    return samples


def measure(fns: dict[str, Fn], repeats: int, min_time: float = MIN_SAMPLE_S) -> dict[str, float]:
    """Median seconds per call of each fn (see ``measure_samples``)."""
    return {k: float(np.median(v)) for k, v in measure_samples(fns, repeats, min_time).items()}


NOISY_SPREAD = 0.25  # interquartile range / median above which a row is flagged as noisy


def spread(samples: Sequence[float]) -> float:
    """Interquartile range over the median of timing samples (0 for fewer than 4 samples)."""
    if len(samples) < 4:
        return 0.0
    q1, med, q3 = np.percentile(samples, [25, 50, 75])
    return float((q3 - q1) / med) if med > 0 else 0.0


@dataclass
class Row:
    """One line of the table: our median and PyTorch's per layout, in milliseconds."""

    op: str
    direction: str
    shape: str
    batch: int
    bound: str
    work: float
    label: str
    ours_ms: float
    torch_ms: dict[str, float]
    peak: float | None  # the rate 100% stands for: FMA GFLOP/s or memcpy GB/s (None: not measured)
    spread: float = 0.0  # the largest interquartile range / median among the row's timings

    @property
    def torch_best(self) -> tuple[str, float] | None:
        """(impl, ms) of PyTorch's fastest layout here, or None without PyTorch."""
        if not self.torch_ms:
            return None
        impl = min(self.torch_ms, key=self.torch_ms.__getitem__)
        return impl, self.torch_ms[impl]

    @property
    def ratio(self) -> float | None:
        """PyTorch's best time / ours: > 1 means layerforge is faster."""
        best = self.torch_best
        return best[1] / self.ours_ms if best and self.ours_ms > 0 else None

    @property
    def rate(self) -> float:
        """Ours in GFLOP/s (compute-bound) or GB/s (memory-bound)."""
        return self.work / (self.ours_ms * 1e-3) / 1e9

    @property
    def peak_fraction(self) -> float | None:
        return self.rate / self.peak if self.peak else None

    def to_dict(self) -> dict[str, Any]:
        best = self.torch_best
        return {
            "op": self.op, "direction": self.direction, "shape": self.shape, "batch": self.batch,
            "bound": self.bound, "unit": "GFLOP/s" if self.bound == "compute" else "GB/s",
            "work": self.work, "ours_ms": self.ours_ms, "ours_rate": self.rate,
            "torch_ms": dict(self.torch_ms), "torch_best": best[0] if best else None,
            "torch_best_ms": best[1] if best else None, "ratio": self.ratio,
            "peak": self.peak, "peak_kind": "fma" if self.bound == "compute" else "memcpy",
            "peak_fraction": self.peak_fraction, "spread": self.spread,
        }


@dataclass
class Result:
    """Everything ``run`` measured; ``to_dict`` is the JSON written by ``--json``."""

    rows: list[Row]
    backend: str
    simd: str | None
    threads: int
    repeats: int
    torch_version: str | None
    torch_note: str | None  # why there are no PyTorch columns, when there are none
    fma_gflops: float | None
    copy_gbs: float | None
    copy_bytes: int
    steady_allocator: bool = False  # steady_allocator() took: freed memory stays in the process

    def to_dict(self) -> dict[str, Any]:
        from . import __version__

        return {
            "layerforge": __version__, "backend": self.backend, "simd_path": self.simd, "threads": self.threads,
            "repeats": self.repeats, "dtype": "float32", "torch": self.torch_version, "torch_note": self.torch_note,
            "peaks": {"fma_gflops": self.fma_gflops, "copy_gbs": self.copy_gbs, "copy_bytes": self.copy_bytes},
            "steady_allocator": self.steady_allocator,
            "machine": {"platform": platform.platform(), "processor": _cpu_name(), "python": sys.version.split()[0]},
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "ratio": "PyTorch's best layout time / ours (> 1: layerforge faster)",
            "rows": [r.to_dict() for r in self.rows],
        }


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def run(batches: Sequence[int] = (32,), op_names: Sequence[str] | None = None, threads: int | None = None,
        repeats: int = 15, backend: str | None = None, use_torch: bool = True, min_time: float = MIN_SAMPLE_S,
        progress: bool | None = None) -> Result:
    """Time each case for ours and PyTorch (when installed and ``use_torch``) and return the rows.

    batches: batch sizes of the op cases and training steps. op_names: a subset of OPS + TRAIN
    (None: all). threads: for both sides (None: ``default_threads()``). backend: 'cpp', 'numba'
    or None (layerforge's default). progress: a tqdm bar on stderr (None: only on a terminal).
    Raises ValueError for bad arguments, RuntimeError when a backend is missing or the copied
    PyTorch models do not reproduce layerforge's loss.
    """
    names = list(OPS + TRAIN) if op_names is None else list(op_names)
    unknown = [n for n in names if n not in OPS + TRAIN]
    if unknown:
        raise ValueError(f"unknown op {unknown[0]!r}; expected some of {', '.join(OPS + TRAIN)}")
    _check_batches(batches)
    threads = default_threads() if threads is None else threads
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be an int >= 1, got {threads!r}")
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"repeats must be an int >= 1, got {repeats!r}")
    # PyTorch before our kernels: its wheel ships its own libgomp.so.1, and whichever of the
    # two loads first serves both. Ours first, PyTorch's many small parallel regions were
    # seen to run up to 30x slower after our kernels ran (its RNN step: 2.8 -> 95 ms).
    torch = import_torch() if use_torch else None
    be, _ = _backend.resolve(backend, where="bench")
    allocator = steady_allocator()
    note = None if torch is not None else ("PyTorch is not installed (pip install 'layerforge[torch]')"
                                           if use_torch else "PyTorch disabled (--no-torch)")
    cases = op_cases(batches, [n for n in names if n in OPS]) if any(n in OPS for n in names) else []
    models = [m for m in ("cnn", "rnn") if f"train_{m}" in names]
    cases += train_cases(batches, models) if models else []

    from tqdm import tqdm

    rows: list[Row] = []
    with threads_set(threads, torch):
        c = _backend.load("cpp")
        simd = c.simd_path() if c is not None and be == "cpp" else None
        fma = fma_peak_gflops(threads)
        copy_bytes = 64 << 20
        copy = copy_bandwidth_gbs(threads, copy_bytes)
        copies: dict[int, float | None] = {}
        bar = tqdm(cases, desc="layerforge bench", unit="case", file=sys.stderr, leave=False,
                   disable=None if progress is None else not progress)
        for case in bar:
            bar.set_postfix_str(f"{case.label} {case.shape}", refresh=False)
            make = case.setup()
            fns = {"ours": make(be)}
            if torch is not None:
                fns.update({impl: make(impl) for impl in case.torch_impls})
            samples = measure_samples(fns, repeats, min_time)
            t = {k: float(np.median(v)) for k, v in samples.items()}
            if case.bound == "compute":
                peak = fma
            else:
                half = int(case.work // 2)  # a memcpy of n bytes moves 2n
                if half not in copies:
                    copies[half] = copy_bandwidth_gbs(threads, half)
                peak = copies[half]
            rows.append(Row(case.op, case.direction, case.shape, case.batch, case.bound, case.work, case.label,
                            t.pop("ours") * 1e3, {k: v * 1e3 for k, v in t.items()}, peak,
                            max(spread(v) for v in samples.values())))
        bar.close()
    return Result(rows, be, simd, threads, repeats, getattr(torch, "__version__", None), note, fma, copy, copy_bytes,
                  allocator)


# ---------------------------------------------------------------------------- output

COLUMNS: tuple[str, ...] = ("op", "shape", "ours (ms)", "PyTorch (ms)", "ratio", "% of peak")


def format_table(result: Result) -> str:
    """The table ``layerforge bench`` prints: one row per case, with a header and a legend."""
    head = f"layerforge bench: backend {result.backend}"
    if result.simd:
        head += f" (SIMD {result.simd})"
    head += f" vs PyTorch {result.torch_version}" if result.torch_version else ""
    head += f", {result.threads} thread{'s' if result.threads != 1 else ''} each, float32, median of {result.repeats}"
    lines = [head]
    if result.torch_note:
        lines.append(f"{result.torch_note}: showing layerforge's timings only.")
    if result.fma_gflops:
        lines.append(f"measured peaks: {result.fma_gflops:.1f} GFLOP/s float32 FMA, {result.copy_gbs:.1f} GB/s memcpy "
                     f"({result.copy_bytes >> 20} MiB, read + written)")
    else:
        lines.append("peaks not measured: they need the compiled module layerforge._C")
    if not result.steady_allocator:
        lines.append("allocator not steadied (not glibc): timings may include page faults on fresh buffers")
    table = [COLUMNS]
    noisy = False
    for r in result.rows:
        best = r.torch_best
        theirs = "-" if best is None else f"{best[1]:.3f}" + (" cl" if best[0] == "torch-cl" else "")
        ratio = "-" if r.ratio is None else f"{r.ratio:.2f}x"
        if r.spread > NOISY_SPREAD:
            ratio += " *"
            noisy = True
        frac = r.peak_fraction
        pk = "-" if frac is None else f"{100 * frac:.0f}% " + ("FMA" if r.bound == "compute" else "BW")
        table.append((r.label, r.shape, f"{r.ours_ms:.3f}", theirs, ratio, pk))
    widths = [max(len(row[i]) for row in table) for i in range(len(COLUMNS))]
    left = {0, 1}
    lines.append("")
    for i, row in enumerate(table):
        cells = [c.ljust(w) if j in left else c.rjust(w) for j, (c, w) in enumerate(zip(row, widths))]
        lines.append("  ".join(cells).rstrip())
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    lines.append("")
    if result.torch_version:
        lines.append("ratio = PyTorch's best layout (cl: channels_last) / ours; > 1 means layerforge is faster.")
    lines.append("% of peak: FMA = ours in GFLOP/s / the measured FMA peak; BW = ours in GB/s (read + written) / "
                 "a memcpy of the same bytes with the same threads.")
    if noisy:
        lines.append(f"*: the timings of this row varied by more than {100 * NOISY_SPREAD:.0f}% (interquartile range / "
                     "median): the machine was busy; rerun on a quiet machine before trusting it.")
    return "\n".join(lines)


def write_json(result: Result, path: str | os.PathLike) -> None:
    """Write ``result.to_dict()`` as JSON to ``path``."""
    with open(path, "w") as f:
        json.dump(result.to_dict(), f, indent=1)
        f.write("\n")


def write_png(result: Result, path: str | os.PathLike) -> bool:
    """Draw the ratio bar chart into ``path``; False (nothing written) without PyTorch timings."""
    from . import _png

    rows = [r for r in result.rows if r.ratio is not None]
    if not rows:
        return False
    labels = [f"{r.label} {r.shape}" for r in rows]
    title = f"layerforge {result.backend} vs PyTorch {result.torch_version}: PyTorch time / ours (>1: layerforge faster)"
    note = f"{result.threads} threads each, float32, median of {result.repeats}; PyTorch's best of NCHW / channels_last"
    _png.write_png(path, _png.ratio_chart(labels, [r.ratio for r in rows], title, note))
    return True


# ---------------------------------------------------------------------------- command line

def add_arguments(p: Any) -> None:
    """The options of ``layerforge bench`` on an argparse parser."""
    p.add_argument("--full", action="store_true",
                   help="every op shape at batch 32 and 256 (unless --batch), 25 repeats; default: the quick run "
                        "(batch 32, 15 repeats)")
    p.add_argument("--batch", type=int, nargs="+", default=None, metavar="N",
                   help="batch size(s) of the op shapes and training steps (default 32; with --full 32 256)")
    p.add_argument("--threads", type=int, default=None,
                   help=f"threads for layerforge and PyTorch alike (default: the cores this process may use, "
                        f"here {default_threads()})")
    p.add_argument("--repeats", type=int, default=None, help="timed samples per implementation (median reported)")
    p.add_argument("--only", default=None, metavar="OP[,OP...]",
                   help=f"run only these: {', '.join(OPS + TRAIN)}")
    p.add_argument("--backend", default="auto", choices=["auto", "cpp", "numba"], help="layerforge backend")
    p.add_argument("--no-torch", action="store_true", help="time layerforge only, even when PyTorch is installed")
    p.add_argument("--json", default=None, metavar="PATH", help="also write every measurement as JSON")
    p.add_argument("--png", default="layerforge-bench.png", metavar="PATH",
                   help="bar chart of the ratios (default: %(default)s)")
    p.add_argument("--no-png", action="store_true", help="do not write the chart")


def _check_output(option: str, path: str) -> str | None:
    """An error message when ``path`` cannot be written, checked before the (long) run."""
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        return f"{option}: {path!r} is a folder; expected a file path"
    if not os.path.isdir(folder):
        return f"{option}: the folder {folder!r} does not exist"
    if not os.access(folder, os.W_OK):
        return f"{option}: the folder {folder!r} is not writable"
    return None


def main(args: Any) -> int:
    """Run ``layerforge bench`` with parsed arguments; returns the exit status (2: bad options)."""
    err = sys.stderr
    only = None
    if args.only is not None:
        only = [s.strip() for s in args.only.split(",") if s.strip()]
        bad = [s for s in only if s not in OPS + TRAIN]
        if not only or bad:
            print(f"layerforge bench: --only: unknown op {bad[0] if bad else args.only!r}; expected a comma-separated "
                  f"list of {', '.join(OPS + TRAIN)}", file=err)
            return 2
    batches = args.batch if args.batch is not None else ([32, 256] if args.full else [32])
    if any(b < 1 for b in batches):
        print(f"layerforge bench: --batch: expected sizes >= 1, got {' '.join(map(str, batches))}", file=err)
        return 2
    if args.threads is not None and args.threads < 1:
        print(f"layerforge bench: --threads: expected >= 1, got {args.threads}", file=err)
        return 2
    repeats = args.repeats if args.repeats is not None else (25 if args.full else 15)
    if repeats < 1:
        print(f"layerforge bench: --repeats: expected >= 1, got {repeats}", file=err)
        return 2
    outputs = [("--json", args.json)] + ([] if args.no_png else [("--png", args.png)])
    for option, path in outputs:
        msg = _check_output(option, path) if path else None
        if msg:
            print(f"layerforge bench: {msg}", file=err)
            return 2
    backend = None if args.backend == "auto" else args.backend
    try:
        result = run(batches, only, args.threads, repeats, backend, use_torch=not args.no_torch)
    except ValueError as exc:
        print(f"layerforge bench: {exc}", file=err)
        return 2
    except RuntimeError as exc:
        print(f"layerforge bench: {exc}", file=err)
        return 1
    print(format_table(result))
    if args.json:
        write_json(result, args.json)
        print(f"JSON written to {args.json}")
    if not args.no_png and args.png:
        if write_png(result, args.png):
            print(f"chart written to {args.png}")
        else:
            print("no chart: it plots the ratios to PyTorch, and there are no PyTorch timings")
    return 0
