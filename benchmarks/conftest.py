"""Benchmark setup: two threads everywhere (the reference machine's core count), so our
kernels and PyTorch race on equal terms; torch joins a group only when installed."""

from __future__ import annotations

import os

import pytest

THREADS = int(os.environ.get("LAYERFORGE_BENCH_THREADS", "2"))


@pytest.fixture(scope="session", autouse=True)
def _threads():
    import layerforge

    layerforge.set_num_threads(THREADS)
    try:
        import torch

        torch.set_num_threads(THREADS)
    except ImportError:
        pass
