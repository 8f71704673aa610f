"""Time the documents' CNN training step through the layer API (Sequential.fit: forward,
backward, Adam) on random data; prints the best of three 200-step epochs.

Usage: python3 benchmarks/fit_step.py [--batch-size 32] [--backend cpp|numba]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from layerforge.cli import build_model
from layerforge.utils import set_random_seed


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--backend", default=None)
    p.add_argument("--steps", type=int, default=200)
    a = p.parse_args()
    set_random_seed(0)
    model = build_model("cnn", a.backend)
    rng = np.random.default_rng(0)
    n = a.batch_size * a.steps
    x = rng.random((n, 28, 28, 1), dtype=np.float32)
    y = rng.integers(0, 10, n)
    model.fit(x[: a.batch_size * 10], y[: a.batch_size * 10], batch_size=a.batch_size, verbose=0)  # warm-up
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        model.fit(x, y, batch_size=a.batch_size, epochs=1, verbose=0)
        best = min(best, time.perf_counter() - t0)
    print(f"batch {a.batch_size}: {best / a.steps * 1e3:.2f} ms per step, {n / best:,.0f} images/s")


if __name__ == "__main__":
    main()
