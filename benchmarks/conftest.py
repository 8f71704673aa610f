"""Benchmark setup shared by test_ops.py and test_train_step.py.

glibc keeps freed memory in the process (``bench.steady_allocator``), as in `layerforge bench`.
Two threads everywhere by default (the reference machine's core count; LAYERFORGE_BENCH_THREADS
changes it), so our kernels and PyTorch race on equal terms; PyTorch joins a group only when
installed. Each entry's extra_info holds the case (op, shape, direction, batch, impl), its work
(flops or bytes read + written) and, when timed, its rate (GFLOP/s or GB/s); the JSON hook
below adds, per entry, the ratio of PyTorch's best median in the same group to the entry's own
median (> 1: faster than PyTorch's best layout).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import pytest

from layerforge import _backend, bench

THREADS = int(os.environ.get("LAYERFORGE_BENCH_THREADS", "2"))


@pytest.fixture(scope="session", autouse=True)
def _threads():
    import layerforge

    bench.steady_allocator()  # no page faults on fresh buffers in either library's timings
    layerforge.set_num_threads(THREADS)
    torch = bench.import_torch()
    if torch is not None:
        torch.set_num_threads(THREADS)


def _skip_missing(impl: str) -> None:
    if impl.startswith("torch"):
        if bench.import_torch() is None:
            pytest.skip("torch not installed")
    elif _backend.load(impl.split(":")[0]) is None:
        pytest.skip(f"{impl} unavailable: {_backend.unavailable_reason(impl.split(':')[0])}")


def _rate(work: float, seconds: float) -> float:
    return work / seconds / 1e9


@pytest.fixture
def run_case(benchmark) -> Callable[[bench.Case, str], None]:
    """run_case(case, impl): time ``case`` for ``impl`` ('cpp', 'cpp:avx2', 'numba', 'torch',
    'torch-cl') in the case's group, the inputs prepared outside the timed call."""

    def run(case: bench.Case, impl: str) -> None:
        _skip_missing(impl)
        path = impl.split(":", 1)[1] if impl.startswith("cpp:") else None
        benchmark.group = case.name
        benchmark.extra_info.update(op=case.op, shape=case.shape, direction=case.direction, batch=case.batch,
                                    impl=impl, bound=case.bound, work=case.work, unit=case.unit)
        with bench.kernel_version(path):
            fn = case.setup()(impl)
            fn()
            benchmark(fn)
        stats = getattr(benchmark, "stats", None)
        if stats is not None:  # None under --benchmark-disable
            benchmark.extra_info["rate"] = _rate(case.work, stats.stats.median)

    return run


def pytest_benchmark_update_json(config: Any, benchmarks: list, output_json: dict) -> None:
    """Add to every entry the ratio of PyTorch's best median in its group to its own median
    (extra_info['ratio_to_torch_best'], > 1: faster) and which PyTorch layout that was."""
    groups: dict[str, list[dict]] = {}
    for b in output_json.get("benchmarks", []):
        groups.setdefault(b.get("group") or "", []).append(b)
    for entries in groups.values():
        torch_entries = [b for b in entries if str(b.get("extra_info", {}).get("impl", "")).startswith("torch")
                         and b.get("stats")]
        best = min(torch_entries, key=lambda b: b["stats"]["median"], default=None)
        for b in entries:
            info = b.setdefault("extra_info", {})
            if b.get("stats") and "work" in info:
                info["rate"] = _rate(info["work"], b["stats"]["median"])
            if best is not None and b.get("stats"):
                info["torch_best"] = best["extra_info"]["impl"]
                info["ratio_to_torch_best"] = best["stats"]["median"] / b["stats"]["median"]
