"""Turn a pytest-benchmark JSON file into the README's table: median time and GFLOP/s of each
implementation per group, and the speed ratio of the C++ backend to PyTorch's best layout.

Usage: python3 benchmarks/report.py BENCH.json
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict

IMPLS = ["cpp", "numba", "torch", "torch-cl"]


def main(path: str) -> None:
    rows: dict[str, dict[str, tuple[float, float]]] = defaultdict(dict)
    for b in json.load(open(path))["benchmarks"]:
        rows[b["group"]][b["params"]["impl"]] = (b["stats"]["median"] * 1e3, b["extra_info"]["gflops"])
    print("| op, shape | " + " | ".join(f"{i} ms (GFLOP/s)" for i in IMPLS) + " | torch best / cpp |")
    print("|---" * (len(IMPLS) + 2) + "|")
    for group in sorted(rows):
        r = rows[group]
        cells = [f"{r[i][0]:.3f} ({r[i][1]:.0f})" if i in r else "-" for i in IMPLS]
        torch_best = min((r[i][0] for i in ("torch", "torch-cl") if i in r), default=None)
        ratio = f"{torch_best / r['cpp'][0]:.2f}x" if torch_best and "cpp" in r else "-"
        print(f"| {group} | " + " | ".join(cells) + f" | {ratio} |")


if __name__ == "__main__":
    main(sys.argv[1])
