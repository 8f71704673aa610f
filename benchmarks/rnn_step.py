"""The row-sequence RNN training step, layerforge vs PyTorch, side by side in one process.

layerforge: ``Sequential([SimpleRNN(128, input_shape=(28, 28)), Dense(10, activation='softmax')])``
with Adam and sparse categorical cross-entropy, one ``train_on_batch`` per step (no metrics).
PyTorch: ``nn.RNN(28, 128, batch_first=True)`` + ``nn.Linear(128, 10)``, ``CrossEntropyLoss`` on
the logits, ``torch.optim.Adam`` (eps 1e-7, as Keras), zero_grad / forward / backward / step /
``loss.item()``. The PyTorch weights are copied from the layerforge model (bias_hh = 0), and
the first-step losses are checked to agree before anything is timed.

Both sides run 2 threads by default (``torch.set_num_threads``, ``layerforge.set_num_threads``).
Timings alternate between the two sides in blocks, so load from other processes hits both
alike; the figures are medians of per-step times.

``--with-old`` adds, in the same interleaved timing, the SimpleRNN of before the fused op (a
Python loop of ``ops.linear`` and activation calls per time step, kept here as
``PerStepSimpleRNN``), with the same weights. ``--breakdown`` times the parts of the
layerforge step one by one (medians), to show what the rest of the step costs.

``--ops`` also times the RNN alone: ``ops.rnn`` / ``ops.rnn_backward`` (or, when the fused op
is absent, the SimpleRNN layer's forward/backward) vs ``torch.nn.RNN`` forward and
forward + backward (``torch.autograd.grad`` of every input and weight).

Timings on a machine shared with other jobs are noisy: every 2-thread OpenMP region (ours and
PyTorch's) waits for a descheduled thread, which costs PyTorch, with its many small parallel
ops per step, far more than the fused kernels; compare runs taken on an idle machine.

Usage: python3 benchmarks/rnn_step.py [--batch-size 32] [--steps 400] [--threads 2] [--with-old]
                                      [--breakdown] [--ops]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np


def _median_ms(times: list[float]) -> float:
    return statistics.median(times) * 1e3


def _interleave(fns: dict[str, Callable[[], object]], steps: int, block: int = 20) -> dict[str, float]:
    """Median ms per call of each fn, alternating blocks of ``block`` calls."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    for f in fns.values():  # warm-up
        for _ in range(10):
            f()
    done = 0
    while done < steps:
        n = min(block, steps - done)
        for k, f in fns.items():
            for _ in range(n):
                t0 = time.perf_counter()
                f()
                times[k].append(time.perf_counter() - t0)
        done += n
    return {k: _median_ms(v) for k, v in times.items()}


def _per_step_rnn_class():
    """The SimpleRNN of before the fused op (layerforge up to commit ffafbc2), for --with-old."""
    from layerforge import ops
    from layerforge._device import array_module as _xp
    from layerforge.layers import SimpleRNN

    class PerStepSimpleRNN(SimpleRNN):
        def forward(self, x, training=False, logits=False):
            n, t, _ = x.shape
            xw = ops.linear(x, self.kernel, self.bias, backend=self.backend)
            xp = _xp(x)
            hs = xp.empty((n, t, self.units), x.dtype)
            h = xp.zeros((n, self.units), x.dtype)
            for s in range(t):
                a = xw[:, s] + ops.linear(h, self.recurrent_kernel, backend=self.backend)
                h = self._act_forward(a, False)
                hs[:, s] = h
            if training:
                self._saved = (x, hs)
            return hs if self.return_sequences else h

        def backward(self, dy, logits=False):
            x, hs = self._saved
            n, t, _ = x.shape
            xp = _xp(x)
            whh_t = xp.ascontiguousarray(self.recurrent_kernel.T)
            da = xp.empty_like(hs)
            dh = xp.zeros((n, self.units), hs.dtype)
            for s in range(t - 1, -1, -1):
                if self.return_sequences:
                    dh = dh + dy[:, s]
                elif s == t - 1:
                    dh = dh + dy
                da[:, s] = self._act_backward(dh, hs[:, s], False)
                dh = ops.linear(da[:, s], whh_t, backend=self.backend)
            h_prev = xp.concatenate([xp.zeros((n, 1, self.units), hs.dtype), hs[:, :-1]], axis=1)
            _, dwhh, _ = ops.linear_backward(da, h_prev, self.recurrent_kernel, backend=self.backend)
            dx, dwxh, db = ops.linear_backward(da, x, self.kernel, self.bias, backend=self.backend)
            self.grads = [dwxh, dwhh] + ([db] if self.use_bias else [])
            return dx

    return PerStepSimpleRNN


def _breakdown(model, x, y, steps: int) -> None:
    """Medians of the parts of one layerforge train step, each timed alone."""
    rnn, dense = model.layers
    xi = model._inputs(x, "breakdown")
    t = model._targets(y, x.shape[0], "breakdown")
    out = model._forward(xi, True, True)
    _, d = model._loss_and_grad(out, t)
    d1 = dense.backward(d, logits=True)
    h = rnn.forward(xi, True)
    rnn.backward(d1)
    params, grads = model._params_and_grads()
    adam = type(model.optimizer)()
    parts = {
        "train_on_batch, the whole step": lambda: model.train_on_batch(x, y),
        "  Sequential._inputs (cast, NaN check)": lambda: model._inputs(x, "breakdown"),
        "  Sequential._targets": lambda: model._targets(y, x.shape[0], "breakdown"),
        "  SimpleRNN.forward (ops.rnn)": lambda: rnn.forward(xi, True),
        "  Dense.forward (logits)": lambda: dense.forward(h, True, True),
        "  loss value and gradient (fused softmax CE)": lambda: model._loss_and_grad(out, t),
        "  Dense.backward": lambda: dense.backward(d, logits=True),
        "  SimpleRNN.backward (ops.rnn_backward)": lambda: rnn.backward(d1),
        "  Adam.apply (5 weight arrays)": lambda: adam.apply(params, grads),
    }
    r = _interleave(parts, steps, block=10)
    print(f"layerforge step breakdown, medians of {steps} (us):")
    for k, v in r.items():
        print(f"  {k:50s} {v * 1e3:8.1f}")
    rest = r[next(iter(parts))] - sum(v for k, v in r.items() if k.startswith("  "))
    print(f"  {'  the rest (Sequential glue: train_step, lists, checks)':50s} {rest * 1e3:8.1f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--backend", default=None)
    p.add_argument("--with-old", action="store_true", help="also time the per-step SimpleRNN of before")
    p.add_argument("--breakdown", action="store_true", help="time the parts of the layerforge step")
    p.add_argument("--ops", action="store_true", help="also time the RNN op alone")
    a = p.parse_args()

    import torch

    import layerforge
    from layerforge import ops
    from layerforge.layers import Dense, SimpleRNN
    from layerforge.models import Sequential
    from layerforge.utils import set_random_seed

    torch.set_num_threads(a.threads)
    layerforge.set_num_threads(a.threads)
    n, t, d, h = a.batch_size, 28, 28, 128

    set_random_seed(0)
    model = Sequential([SimpleRNN(h, input_shape=(t, d)), Dense(10, activation="softmax")], backend=a.backend)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    wxh, whh, b, wo, bo = model.get_weights()

    rnn = torch.nn.RNN(d, h, batch_first=True)
    lin = torch.nn.Linear(h, 10)
    with torch.no_grad():
        rnn.weight_ih_l0.copy_(torch.from_numpy(wxh))
        rnn.weight_hh_l0.copy_(torch.from_numpy(whh))
        rnn.bias_ih_l0.copy_(torch.from_numpy(b))
        rnn.bias_hh_l0.zero_()
        lin.weight.copy_(torch.from_numpy(wo))
        lin.bias.copy_(torch.from_numpy(bo))
    params = list(rnn.parameters()) + list(lin.parameters())
    opt = torch.optim.Adam(params, lr=1e-3, eps=1e-7)
    ce = torch.nn.CrossEntropyLoss()

    rng = np.random.default_rng(0)
    x = rng.random((n, t, d), dtype=np.float32)
    y = rng.integers(0, 10, n)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)

    def torch_step() -> float:
        opt.zero_grad(set_to_none=True)
        out, _ = rnn(xt)
        loss = ce(lin(out[:, -1]), yt)
        loss.backward()
        opt.step()
        return loss.item()

    def lf_step() -> float:
        return model.train_on_batch(x, y)

    steps = {"layerforge": lf_step, "torch": torch_step}
    if a.with_old:
        old = Sequential([_per_step_rnn_class()(h, input_shape=(t, d)), Dense(10, activation="softmax")],
                         backend=a.backend)
        old.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
        old.set_weights(model.get_weights())

        def old_step() -> float:
            return old.train_on_batch(x, y)

        steps["layerforge per-step (before)"] = old_step
    first = {k: f() for k, f in steps.items()}
    print("first-step loss: " + ", ".join(f"{k} {v:.7f}" for k, v in first.items()))
    worst = max(abs(v - first["layerforge"]) for v in first.values())
    print(f"  largest difference from layerforge: {worst:.1e}")
    if worst > 1e-5:
        raise SystemExit("the models disagree: weights were not copied faithfully")
    # Later steps drift apart by ~1e-3: torch's nn.RNN has two bias vectors (bias_ih, bias_hh),
    # which Adam moves separately, and torch's Adam applies eps to the bias-corrected v.

    r = _interleave(steps, a.steps)
    print(f"train step, batch {n}, {a.threads} threads, medians of {a.steps} (interleaved):")
    for k, v in r.items():
        print(f"  {k:30s} {v:7.3f} ms   torch / this = {r['torch'] / v:.2f}x")

    if a.breakdown:
        _breakdown(model, x, y, a.steps)

    if not a.ops:
        return
    dhs = rng.standard_normal((n, t, h)).astype(np.float32)
    xr = torch.from_numpy(x).requires_grad_(True)
    h0 = torch.zeros(1, n, h, requires_grad=True)
    dht = torch.from_numpy(dhs)
    rp = list(rnn.parameters())

    def t_fwd() -> object:
        with torch.no_grad():
            return rnn(xt)

    def t_fwd_train() -> object:
        return rnn(xr, h0)

    def t_fwd_bwd() -> object:
        out, _ = rnn(xr, h0)
        return torch.autograd.grad(out, [xr, h0] + rp, dht)

    layer = model.layers[0]
    w_xh, w_hh, bb = layer.kernel, layer.recurrent_kernel, layer.bias
    fused = hasattr(ops, "rnn")
    if fused:
        hs = ops.rnn(x, w_xh, w_hh, bb, backend=a.backend)

        def l_fwd() -> object:
            return ops.rnn(x, w_xh, w_hh, bb, backend=a.backend)

        def l_bwd() -> object:
            return ops.rnn_backward(dhs, x, w_xh, w_hh, bb, hs=hs, backend=a.backend)

        def l_fwd_bwd() -> object:
            hs2 = ops.rnn(x, w_xh, w_hh, bb, backend=a.backend)
            return ops.rnn_backward(dhs, x, w_xh, w_hh, bb, hs=hs2, backend=a.backend)
    else:
        layer.return_sequences = True

        def l_fwd() -> object:
            return layer.forward(x, training=False)

        def l_bwd() -> object:
            return layer.backward(dhs)

        def l_fwd_bwd() -> object:
            layer.forward(x, training=True)
            return layer.backward(dhs)

        layer.forward(x, training=True)
    what = "ops.rnn / rnn_backward" if fused else "SimpleRNN layer forward / backward (no fused op)"
    r = _interleave({"lf fwd": l_fwd, "lf bwd": l_bwd, "lf fwd+bwd": l_fwd_bwd,
                     "torch fwd": t_fwd, "torch fwd (grad)": t_fwd_train, "torch fwd+bwd": t_fwd_bwd}, a.steps)
    print(f"RNN alone ({what}), N={n} T={t} I={d} H={h}, float32, medians (ms):")
    print(f"  forward           layerforge {r['lf fwd']:.3f}   torch (no_grad) {r['torch fwd']:.3f}   "
          f"torch (grad) {r['torch fwd (grad)']:.3f}   ratio {r['torch fwd'] / r['lf fwd']:.2f}x")
    print(f"  backward          layerforge {r['lf bwd']:.3f}   torch (fwd+bwd - fwd) "
          f"{r['torch fwd+bwd'] - r['torch fwd (grad)']:.3f}")
    print(f"  forward+backward  layerforge {r['lf fwd+bwd']:.3f}   torch {r['torch fwd+bwd']:.3f}   "
          f"ratio {r['torch fwd+bwd'] / r['lf fwd+bwd']:.2f}x")


if __name__ == "__main__":
    main()
