"""Every op of layerforge.ops, forward and backward, on the documents' CNN layer shapes (and the
RNN's hidden state) at batch 32 and 256: each C++ kernel version ('cpp' and 'cpp:<simd path>'),
Numba, and PyTorch CPU (NCHW 'torch'; 'torch-cl' channels_last where the layout matters) in
one pytest-benchmark group per case, so each ratio comes from one run. The cases (inputs,
work, PyTorch's backward kernels timed alone) live in layerforge.bench, shared with
`layerforge bench`.

Run: python3 -m pytest benchmarks --benchmark-json=bench.json && python3 benchmarks/report.py bench.json
Subsets: -k conv2d, -k "not cpp:" (skip the lower SIMD paths), -k 256x ...
"""

from __future__ import annotations

import pytest

from layerforge import bench

BATCHES = (32, 256)
CASES = bench.op_cases(BATCHES)
IMPLS = bench.cpp_impls() + ["numba"]


def _params() -> list:
    out = []
    for case in CASES:
        shape = case.shape.replace(" (", "-").strip("()").replace(",", "x")  # 'conv1-32x1x28x28'
        tag = f"{case.op}-{shape}-{'fwd' if case.direction == 'forward' else 'bwd'}"
        for impl in IMPLS + list(case.torch_impls):
            out.append(pytest.param(case, impl, id=f"{tag}-{impl}"))
    return out


@pytest.mark.parametrize(("case", "impl"), _params())
def test_op(run_case, case, impl):
    run_case(case, impl)
