"""Turn a benchmark JSON file into the README's Markdown table.

Reads either kind:
- pytest-benchmark's (``pytest benchmarks --benchmark-json=F``): one row per group (op, shape,
  direction), each implementation's median in ms with its rate (GFLOP/s or GB/s), and the
  ratio of PyTorch's best layout to the C++ backend (> 1: layerforge faster);
- ``layerforge bench --json F``: one row per case with ours, PyTorch's best, the ratio and the
  fraction of the measured peak; a ratio whose samples varied by more than the CLI's
  threshold is marked ``*``, as in the CLI's table.

Given several ``layerforge bench --json`` files (repeated runs of the same cases), it prints
one row per case with the median over the runs of each run's ratio, the lowest and highest,
how many runs came in below 1.0x, the median times and the median fraction of the peak: the
issue's "medians of repeated runs". Rows are matched by (op, direction, shape); a case
missing from some runs counts the runs it has.

Usage: python3 benchmarks/report.py BENCH.json [BENCH2.json ...]
"""

from __future__ import annotations

import json
import statistics
import sys
from typing import Any

ORDER = ["cpp", "numba", "torch", "torch-cl"]


def _impl_order(impls: set[str]) -> list[str]:
    """cpp, cpp:<simd paths> (highest first), numba, torch, torch-cl, then anything else."""
    simd = sorted((i for i in impls if i.startswith("cpp:")), key=lambda i: ["avx512", "avx2", "scalar"].index(
        i[4:]) if i[4:] in ("avx512", "avx2", "scalar") else 9)
    known = [i for i in ORDER if i in impls]
    return known[:1] + simd + known[1:] + sorted(impls - set(known) - set(simd))


def _rate(b: dict[str, Any]) -> float | None:
    info = b.get("extra_info", {})
    if "rate" in info:
        return info["rate"]
    if "work" in info and b.get("stats", {}).get("median"):
        return info["work"] / b["stats"]["median"] / 1e9
    return info.get("gflops")  # files written before the rates had units


def pytest_benchmark_table(data: dict[str, Any]) -> list[str]:
    groups: dict[str, dict[str, dict[str, Any]]] = {}
    for b in data["benchmarks"]:
        impl = b.get("extra_info", {}).get("impl") or b.get("params", {}).get("impl")
        groups.setdefault(b["group"], {})[impl] = b
    impls = _impl_order({i for g in groups.values() for i in g})
    lines = ["| op | shape | dir | unit | " + " | ".join(f"{i} ms (rate)" for i in impls) + " | torch best / cpp |",
             "|---" * (len(impls) + 5) + "|"]
    for group in sorted(groups, key=_group_key(groups)):
        g = groups[group]
        info = next(iter(g.values())).get("extra_info", {})
        cells = []
        for i in impls:
            if i in g and g[i].get("stats"):
                rate = _rate(g[i])
                cells.append(f"{g[i]['stats']['median'] * 1e3:.3f}" + (f" ({rate:.0f})" if rate is not None else ""))
            else:
                cells.append("-")
        torch = [g[i]["stats"]["median"] for i in ("torch", "torch-cl") if i in g and g[i].get("stats")]
        ratio = f"{min(torch) / g['cpp']['stats']['median']:.2f}x" if torch and "cpp" in g else "-"
        op = info.get("op", group)
        shape = info.get("shape", "")
        direction = info.get("direction", "")
        lines.append(f"| {op} | {shape} | {direction} | {info.get('unit', 'GFLOP/s')} | " + " | ".join(cells)
                     + f" | {ratio} |")
    return lines


def _group_key(groups: dict[str, dict[str, dict[str, Any]]]):
    def key(group: str) -> tuple:
        info = next(iter(groups[group].values())).get("extra_info", {})
        return (info.get("batch", 0), info.get("op", group), info.get("shape", ""), info.get("direction", ""))
    return key


def bench_cli_table(data: dict[str, Any]) -> list[str]:
    from layerforge.bench import NOISY_SPREAD

    head = (f"| op | shape | ours ({data.get('backend', 'cpp')}) ms (rate) | PyTorch ms | PyTorch best / ours "
            "| % of peak |")
    lines = [head, "|---|---|---|---|---|---|"]
    for r in data["rows"]:
        theirs = "-" if r.get("torch_best_ms") is None else (
            f"{r['torch_best_ms']:.3f}" + (" (cl)" if r.get("torch_best") == "torch-cl" else ""))
        ratio = "-" if r.get("ratio") is None else f"{r['ratio']:.2f}x"
        if r.get("spread", 0.0) > NOISY_SPREAD:
            ratio += " *"
        frac = r.get("peak_fraction")
        kind = "FMA" if r.get("peak_kind") == "fma" else "BW"
        peak = "-" if frac is None else f"{100 * frac:.0f}% {kind}"
        lines.append(f"| {r['op']} {r['direction']} | {r['shape']} | {r['ours_ms']:.3f} ({r['ours_rate']:.0f} "
                     f"{r['unit']}) | {theirs} | {ratio} | {peak} |")
    return lines


def runs_table(runs: list[dict[str, Any]]) -> list[str]:
    """Per case over several ``layerforge bench --json`` runs: median ratio, range, runs below 1.0x."""
    cases: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for data in runs:
        for r in data["rows"]:
            cases.setdefault((r["op"], r["direction"], r["shape"]), []).append(r)
    lines = ["| op | shape | runs | ours ms (median) | PyTorch ms (median) | ratio: median (lowest-highest) "
             "| runs below 1.0x | % of peak (median) |", "|---|---|---|---|---|---|---|---|"]
    for (op, direction, shape), rs in cases.items():
        ratios = [r["ratio"] for r in rs if r.get("ratio") is not None]
        theirs = [r["torch_best_ms"] for r in rs if r.get("torch_best_ms") is not None]
        ours = statistics.median(r["ours_ms"] for r in rs)
        if ratios:
            ratio = f"{statistics.median(ratios):.2f}x ({min(ratios):.2f}-{max(ratios):.2f})"
            below = str(sum(x < 1.0 for x in ratios))
        else:
            ratio, below = "-", "-"
        torch_ms = f"{statistics.median(theirs):.3f}" if theirs else "-"
        fracs = [r["peak_fraction"] for r in rs if r.get("peak_fraction") is not None]
        kind = "FMA" if rs[0].get("peak_kind") == "fma" else "BW"
        peak = f"{100 * statistics.median(fracs):.0f}% {kind}" if fracs else "-"
        lines.append(f"| {op} {direction} | {shape} | {len(rs)} | {ours:.3f} | {torch_ms} | {ratio} | {below} "
                     f"| {peak} |")
    return lines


def main(paths: list[str]) -> None:
    runs = []
    for path in paths:
        with open(path) as f:
            runs.append(json.load(f))
    if len(runs) > 1:
        bad = [p for p, d in zip(paths, runs) if "rows" not in d]
        if bad:
            raise SystemExit(f"{', '.join(bad)}: several files must all be `layerforge bench --json` files "
                             "('rows')")
        print("\n".join(runs_table(runs)))
        return
    path, data = paths[0], runs[0]
    if "benchmarks" in data:
        lines = pytest_benchmark_table(data)
    elif "rows" in data:
        lines = bench_cli_table(data)
    else:
        raise SystemExit(f"{path}: neither a pytest-benchmark JSON ('benchmarks') nor a `layerforge bench --json` "
                         "file ('rows')")
    print("\n".join(lines))


if __name__ == "__main__":
    if len(sys.argv) < 2:
        raise SystemExit("usage: python3 benchmarks/report.py BENCH.json [BENCH2.json ...]")
    main(sys.argv[1:])
