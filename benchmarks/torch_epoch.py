"""The PyTorch side of the full-epoch comparison with ``layerforge train cnn``: the same
network, data (Fashion-MNIST via layerforge's loader), batch 32, Adam 1e-3, a shuffled pass
over the 60,000 training images, then the 10,000 test images, timed like layerforge's epoch.

Usage: python3 benchmarks/torch_epoch.py [--epochs 1] [--channels-last] [--threads 2]
       [--default-allocator]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from layerforge.bench import add_allocator_option, apply_allocator_option


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    add_allocator_option(p)
    a = p.parse_args()
    apply_allocator_option(a)
    import torch
    import torch.nn.functional as F
    from torch import nn

    from layerforge.datasets import fashion_mnist

    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    (xtr, ytr), (xte, yte) = fashion_mnist.load_data()
    fmt = torch.channels_last if a.channels_last else torch.contiguous_format

    def tensor(x: np.ndarray) -> torch.Tensor:
        return torch.from_numpy((x.astype(np.float32) / 255.0).reshape(-1, 1, 28, 28)).contiguous(memory_format=fmt)

    xtr_t, xte_t = tensor(xtr), tensor(xte)
    ytr_t, yte_t = torch.from_numpy(ytr.astype(np.int64)), torch.from_numpy(yte.astype(np.int64))
    model = nn.Sequential(nn.Conv2d(1, 32, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(32, 64, 3), nn.ReLU(),
                          nn.MaxPool2d(2), nn.Flatten(), nn.Linear(1600, 64), nn.ReLU(), nn.Linear(64, 10))
    model = model.to(memory_format=fmt)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, eps=1e-7)
    rng = np.random.default_rng(a.seed)
    n = len(xtr_t)
    for epoch in range(a.epochs):
        t0 = time.perf_counter()
        model.train()
        for idx in np.array_split(rng.permutation(n), range(32, n, 32)):
            i = torch.from_numpy(idx)
            opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(xtr_t[i]), ytr_t[i])
            loss.backward()
            opt.step()
        t1 = time.perf_counter()
        model.eval()
        with torch.no_grad():
            acc = float((model(xte_t).argmax(1) == yte_t).float().mean())
        t2 = time.perf_counter()
        print(f"epoch {epoch + 1}: train {t1 - t0:.1f} s ({n / (t1 - t0):,.0f} images/s), "
              f"with test {t2 - t0:.1f} s, test accuracy {acc:.4f} "
              f"({'channels_last' if a.channels_last else 'NCHW'}, {a.threads} threads)")


if __name__ == "__main__":
    main()
