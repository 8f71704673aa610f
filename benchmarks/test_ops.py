"""Op benchmarks on the documents' CNN layer shapes: layerforge (cpp, numba) and PyTorch CPU
in the same pytest-benchmark group, so each ratio comes from one run.

Run: python3 -m pytest benchmarks -q --benchmark-group-by=group --benchmark-columns=median,ops
extra_info holds the GFLOP/s of each entry.
"""

from __future__ import annotations

import numpy as np
import pytest

from layerforge import _backend, ops

try:
    import torch
    import torch.nn.functional as F
except ImportError:  # torch is optional: its entries skip
    torch = None

# (name, N, C, H, W, K) for the documents' two 3x3 convolutions
CONVS = [("conv1", 1, 28, 28, 32), ("conv2", 32, 13, 13, 64)]
BATCHES = [32, 256]
IMPLS = ["cpp", "numba", "torch", "torch-cl"]


def _skip_missing(impl: str) -> None:
    if impl.startswith("torch"):
        if torch is None:
            pytest.skip("torch not installed")
    elif _backend.load(impl) is None:
        pytest.skip(f"{impl} unavailable")


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("direction", ["forward", "backward"])
@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("layer", CONVS, ids=[c[0] for c in CONVS])
def test_conv2d(benchmark, layer, batch, direction, impl):
    _skip_missing(impl)
    name, c, h, w, k = layer
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, c, h, w), dtype=np.float32)
    wt = rng.standard_normal((k, c, 3, 3), dtype=np.float32)
    b = rng.standard_normal(k, dtype=np.float32)
    dy = rng.standard_normal((batch, k, h - 2, w - 2), dtype=np.float32)
    flops = 2.0 * batch * k * (h - 2) * (w - 2) * c * 9 * (1 if direction == "forward" else 2)
    benchmark.group = f"conv2d {name} {direction} batch {batch}"
    if impl.startswith("torch"):
        fmt = torch.channels_last if impl == "torch-cl" else torch.contiguous_format
        tx = torch.from_numpy(x).contiguous(memory_format=fmt)
        tw = torch.from_numpy(wt).contiguous(memory_format=fmt)
        tb = torch.from_numpy(b)
        tdy = torch.from_numpy(dy).contiguous(memory_format=fmt)
        if direction == "forward":
            def run():
                with torch.no_grad():
                    return F.conv2d(tx, tw, tb)
        else:
            # The backward kernel alone (what autograd calls), so no forward is timed with it.
            def run():
                return torch.ops.aten.convolution_backward(
                    tdy, tx, tw, [k], [1, 1], [0, 0], [1, 1], False, [0, 0], 1, [True, True, True])
    elif direction == "forward":
        def run():
            return ops.conv2d(x, wt, b, backend=impl)
    else:
        def run():
            return ops.conv2d_backward(dy, x, wt, b, backend=impl)
    run()
    benchmark(run)
    benchmark.extra_info["gflops"] = flops / benchmark.stats.stats.median / 1e9


@pytest.mark.parametrize("impl", IMPLS[:3])
@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("layer", [("dense1", 1600, 64), ("dense2", 64, 10)], ids=["dense1", "dense2"])
def test_linear(benchmark, layer, batch, impl):
    _skip_missing(impl)
    name, fin, fout = layer
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, fin), dtype=np.float32)
    w = rng.standard_normal((fout, fin), dtype=np.float32)
    b = rng.standard_normal(fout, dtype=np.float32)
    benchmark.group = f"linear {name} forward batch {batch}"
    if impl == "torch":
        tx, tw, tb = map(torch.from_numpy, (x, w, b))

        def run():
            with torch.no_grad():
                return F.linear(tx, tw, tb)
    else:
        def run():
            return ops.linear(x, w, b, backend=impl)
    run()
    benchmark(run)
    benchmark.extra_info["gflops"] = 2.0 * batch * fin * fout / benchmark.stats.stats.median / 1e9
