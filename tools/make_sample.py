#!/usr/bin/env python3
"""Regenerate the embedded Fashion-MNIST sample from the full data set.

The sample is the first 500 training images of each class and the first 100 test images of
each class, taken in file order from the official train / t10k files and kept in file order
(so the classes stay interleaved as in the release). No random numbers: the rule alone fixes
the subset. Output: the four IDX .gz files (gzip with no name and mtime 0, level 9) and
``manifest.json`` (SHA-256 of each file as stored and of its uncompressed content, shapes,
the rule and the source's content hashes) in src/layerforge/datasets/sample/.

Usage (from the repository root; the full set from `apt-get install dataset-fashion-mnist`
or any folder the loader searches):

    python3 tools/make_sample.py                 # write the sample
    python3 tools/make_sample.py --check         # rebuild in memory, compare with the manifest
    python3 tools/make_sample.py --source DIR    # take the full set from DIR first

The uncompressed content is fully determined by the rule; the .gz bytes may differ with
another zlib version, which is why the manifest holds both hashes and --check compares the
content hashes.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from layerforge.datasets import _idx, fashion_mnist  # noqa: E402

PER_CLASS = {"train": 500, "test": 100}
NUM_CLASSES = 10
DEFAULT_OUT = ROOT / "src" / "layerforge" / "datasets" / "sample"


def select(y: np.ndarray, per_class: int) -> np.ndarray:
    """Indices ``(per_class * 10,)`` of the first ``per_class`` items of each class, ascending."""
    idx = []
    for c in range(NUM_CLASSES):
        hits = np.flatnonzero(y == c)[:per_class]
        if len(hits) < per_class:
            raise SystemExit(f"class {c} has only {len(hits)} items, need {per_class}")
        idx.append(hits)
    return np.sort(np.concatenate(idx))


def build(source: str | None, verify: bool) -> tuple[dict[str, np.ndarray], dict]:
    """The sample's four arrays by role, and the source description for the manifest."""
    where, _ = fashion_mnist._locate(source)
    (x_tr, y_tr), (x_te, y_te) = fashion_mnist.load_data(source, verify=verify)
    i_tr, i_te = select(y_tr, PER_CLASS["train"]), select(y_te, PER_CLASS["test"])
    arrays = {"x_train": x_tr[i_tr], "y_train": y_tr[i_tr],
              "x_test": x_te[i_te], "y_test": y_te[i_te]}
    src = {
        "data_set": "Fashion-MNIST (Zalando Research), train and t10k files",
        "read_from": str(where.folder),
        "content_sha256": {role: hashlib.sha256(_idx.encode_idx(a)).hexdigest()
                           for role, a in (("x_train", x_tr), ("y_train", y_tr),
                                           ("x_test", x_te), ("y_test", y_te))},
        "train_indices_sha256": hashlib.sha256(i_tr.astype("<i8").tobytes()).hexdigest(),
        "test_indices_sha256": hashlib.sha256(i_te.astype("<i8").tobytes()).hexdigest(),
    }
    return arrays, src


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--source", help="folder holding the full set (searched first)")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="sample folder to write")
    ap.add_argument("--check", action="store_true",
                    help="compare a rebuild with the manifest in --out; write nothing")
    ap.add_argument("--no-verify", action="store_true",
                    help="accept a full set whose content hashes differ from the release's")
    args = ap.parse_args(argv)

    arrays, src = build(args.source, verify=not args.no_verify)
    stems = _idx.SET_FILES

    if args.check:
        manifest = json.loads((args.out / "manifest.json").read_text(encoding="utf-8"))
        bad = [stems[r] for r, a in arrays.items()
               if hashlib.sha256(_idx.encode_idx(a)).hexdigest()
               != manifest["files"][stems[r] + ".gz"]["payload_sha256"]]
        print("sample content differs for: " + ", ".join(bad) if bad
              else "sample content matches the manifest")
        return 1 if bad else 0

    args.out.mkdir(parents=True, exist_ok=True)
    files = {}
    for role, a in arrays.items():
        p = _idx.write_idx(args.out / (stems[role] + ".gz"), a)
        raw = p.read_bytes()
        files[p.name] = {
            "sha256": hashlib.sha256(raw).hexdigest(),
            "payload_sha256": hashlib.sha256(_idx.encode_idx(a)).hexdigest(),
            "bytes": len(raw),
            "shape": list(a.shape),
        }
    manifest = {
        "description": "Class-balanced subset of Fashion-MNIST; regenerate with "
                       "tools/make_sample.py",
        "rule": f"first {PER_CLASS['train']} per class of train-*, first {PER_CLASS['test']} "
                "per class of t10k-*, in file order",
        "per_class": PER_CLASS,
        "source": src,
        "files": files,
    }
    (args.out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n",
                                            encoding="utf-8")
    total = sum(f["bytes"] for f in files.values())
    print(f"wrote {len(files)} files ({total} bytes) and manifest.json to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
