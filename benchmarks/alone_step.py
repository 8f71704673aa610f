"""One implementation alone in its own process: the documents' CNN training step (forward,
backward, Adam 1e-3) on the embedded Fashion-MNIST sample, cycling through its batches; the
median of 15 samples of 8 steps. Run it once per implementation to compare each at its best,
without the other library's threads in the same process.

Usage: python3 benchmarks/alone_step.py --impl cpp|numba|torch|torch-cl [--batch 32] [--threads 2]
       [--show-samples] [--default-allocator]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np

from layerforge.bench import add_allocator_option, apply_allocator_option


def _ours(backend: str, batches: list) -> Callable[[int], None]:
    from layerforge.cli import build_model

    model = build_model("cnn", backend)
    return lambda k: model.train_on_batch(*batches[k % len(batches)])


def _torch(channels_last: bool, batches: list, threads: int) -> Callable[[int], None]:
    import torch
    import torch.nn.functional as F
    from torch import nn

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = nn.Sequential(nn.Conv2d(1, 32, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(32, 64, 3), nn.ReLU(),
                          nn.MaxPool2d(2), nn.Flatten(), nn.Linear(1600, 64), nn.ReLU(), nn.Linear(64, 10))
    model = model.to(memory_format=fmt)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, eps=1e-7)
    tb = [(torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2))).contiguous(memory_format=fmt),
           torch.from_numpy(y.astype(np.int64))) for x, y in batches]

    def step(k: int) -> None:
        x, y = tb[k % len(tb)]
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        opt.step()

    return step


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--impl", choices=["cpp", "numba", "torch", "torch-cl"], required=True)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--show-samples", action="store_true",
                   help="also print every sample (ms per step), to see a run change speed midway")
    add_allocator_option(p)
    a = p.parse_args()
    apply_allocator_option(a)
    if a.impl.startswith("torch"):
        import torch  # noqa: F401  (first: its libgomp then serves both, see README)
    import layerforge
    from layerforge.datasets import fashion_mnist

    layerforge.set_num_threads(a.threads)
    (images, labels), _ = fashion_mnist.load_sample()
    x = (images / np.float32(255)).astype(np.float32).reshape(-1, 28, 28, 1)
    batches = [(x[i:i + a.batch], labels[i:i + a.batch]) for i in range(0, len(x) - a.batch + 1, a.batch)]
    step = _torch(a.impl == "torch-cl", batches, a.threads) if a.impl.startswith("torch") else _ours(a.impl, batches)
    k = 0
    for _ in range(10):
        step(k)
        k += 1
    samples = []
    for _ in range(15):
        t0 = time.perf_counter()
        for _ in range(8):
            step(k)
            k += 1
        samples.append((time.perf_counter() - t0) / 8)
    ms = float(np.median(samples)) * 1e3
    print(f"{a.impl}: CNN training step, batch {a.batch}, {a.threads} threads: {ms:.3f} ms "
          f"({a.batch / ms * 1e3:,.0f} images/s)")
    if a.show_samples:
        print("samples (ms per step): " + " ".join(f"{v * 1e3:.1f}" for v in samples))


if __name__ == "__main__":
    main()
