"""Fashion-MNIST (Zalando Research, MIT licence), read from local IDX files, Keras's shapes.

``load_data()`` -> ``((x_train, y_train), (x_test, y_test))``: images uint8 ``(60000, 28, 28)``
and ``(10000, 28, 28)``, labels uint8 ``(60000,)`` and ``(10000,)`` with values 0..9
(names in ``CLASS_NAMES``).

Nothing is downloaded: the four files are looked for, in order, in the ``path=`` folder,
``$LAYERFORGE_DATA/fashion-mnist``, ``$LAYERFORGE_DATA``, ``/usr/share/datasets/fashion-mnist``
(Debian's ``dataset-fashion-mnist``), ``$XDG_CACHE_HOME/layerforge/fashion-mnist`` (default
``~/.cache/layerforge/fashion-mnist``), and Keras's download cache
(``$KERAS_HOME/datasets/fashion-mnist``, default ``~/.keras/datasets/fashion-mnist``), which
holds the same four files.

``load_sample()`` returns a class-balanced subset shipped inside the package (5000 train /
1000 test images, see ``sample/README.md``), checked against its SHA-256 manifest.
``load_data_or_sample()`` is the full set when found, else the sample.
"""

from __future__ import annotations

import json
import os
from functools import lru_cache
from pathlib import Path

from . import _idx

__all__ = ["load_data", "load_sample", "load_data_or_sample", "CLASS_NAMES", "NAME",
           "SYSTEM_DIR", "SAMPLE_DIR", "KNOWN_PAYLOAD_SHA256"]

NAME = "fashion-mnist"
SYSTEM_DIR = "/usr/share/datasets/fashion-mnist"
SAMPLE_DIR = Path(__file__).resolve().parent / "sample"
_TITLE = "Fashion-MNIST"

CLASS_NAMES: tuple[str, ...] = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)

# SHA-256 of the *uncompressed* IDX content of the released files, computed from Debian's
# dataset-fashion-mnist 0.0~git20200523.55506a9-1. Debian recompressed the .gz files, so the
# MD5s the Fashion-MNIST README lists (of its own .gz files) do not match Debian's; the
# content hashes do not depend on the compression, so they hold for both.
KNOWN_PAYLOAD_SHA256: dict[str, str] = {
    "x_train": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    "y_train": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    "x_test": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    "y_test": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
}

_HOW_TO_GET = (
    "To get it: on Debian/Ubuntu, `apt-get install dataset-fashion-mnist` (installs into "
    f"{SYSTEM_DIR}); or download train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, "
    "t10k-images-idx3-ubyte.gz and t10k-labels-idx1-ubyte.gz from the Fashion-MNIST project "
    "page (https://github.com/zalandoresearch/fashion-mnist) into one of the folders above, "
    "or set LAYERFORGE_DATA to the folder holding them (or to its parent, with them in "
    "fashion-mnist/)."
)


def _keras_cache() -> _idx.Candidate:
    home = os.environ.get("KERAS_HOME") or str(Path.home() / ".keras")
    return _idx.Candidate(Path(home).expanduser() / "datasets" / NAME, "Keras download cache")


def _locate(path: str | os.PathLike | None) -> tuple[_idx.Candidate, dict[str, Path]]:
    return _idx.locate_set(_TITLE, path, NAME, SYSTEM_DIR, _HOW_TO_GET, [_keras_cache()])


def load_data(path: str | os.PathLike | None = None, verify: bool = False) -> _idx.ArraySets:
    """Load the full Fashion-MNIST from the first folder in the search order holding it.

    Args:
        path: a folder holding the files; when given, the only place looked at.
        verify: also check each file's uncompressed content against ``KNOWN_PAYLOAD_SHA256``
            (about 0.2 s more); without it the structural checks still catch truncation,
            gzip damage and bad headers.

    Returns:
        ``((x_train, y_train), (x_test, y_test))``: uint8 images ``(N, 28, 28)``, uint8
        labels ``(N,)`` in 0..9; N = 60000 / 10000 for the released files.

    Raises:
        FileNotFoundError: no folder holds the four files; the message lists every place
            looked at and how to get the data.
        ValueError: a file is corrupt, truncated or (with ``verify``) not the release.
    """
    _, files = _locate(path)
    return _idx.load_set(files, payload_sha256=KNOWN_PAYLOAD_SHA256 if verify else None)


@lru_cache(maxsize=1)
def _manifest() -> dict:
    with open(SAMPLE_DIR / "manifest.json", encoding="utf-8") as f:
        return json.load(f)


def load_sample() -> _idx.ArraySets:
    """The embedded class-balanced sample, each file checked against its SHA-256.

    Returns:
        ``((x_train, y_train), (x_test, y_test))``: uint8 images ``(5000, 28, 28)`` and
        ``(1000, 28, 28)``, uint8 labels ``(5000,)`` and ``(1000,)``; 500 / 100 per class.

    Raises:
        ValueError: a sample file does not match the manifest (a damaged installation).
    """
    files_meta = _manifest()["files"]
    files = {role: SAMPLE_DIR / (stem + ".gz") for role, stem in _idx.SET_FILES.items()}
    sums = {role: files_meta[p.name]["sha256"] for role, p in files.items()}
    data = _idx.load_set(files, sha256=sums)
    (x_train, y_train), (x_test, y_test) = data
    for role, arr in (("x_train", x_train), ("y_train", y_train),
                      ("x_test", x_test), ("y_test", y_test)):
        want = tuple(files_meta[files[role].name]["shape"])
        if arr.shape != want:
            raise ValueError(f"{files[role]}: shape {arr.shape}, manifest says {want}")
    return data


def load_data_or_sample(path: str | os.PathLike | None = None,
                        ) -> tuple[_idx.ArraySets, str, bool]:
    """The full set when one of the search folders holds it, else the embedded sample.

    Only a missing full set falls back, and only when no ``path`` was given: a full set that is found but corrupt raises
    ValueError, so damage is never hidden behind the smaller sample.

    Returns:
        ``(data, source_description, is_sample)``; ``data`` as ``load_data()``;
        ``source_description`` is one line for a CLI to print.
    """
    try:
        where, files = _locate(path)
    except FileNotFoundError:
        if path is not None:
            raise  # the caller named a folder: falling back would hide the mistake
        data = load_sample()
        (xtr, _), (xte, _) = data
        desc = (f"Fashion-MNIST embedded sample ({len(xtr)} train / {len(xte)} test images, "
                f"class-balanced); full set not found: `apt-get install dataset-fashion-mnist` "
                "or set LAYERFORGE_DATA (see fashion_mnist.load_data() for the search order)")
        return data, desc, True
    data = _idx.load_set(files)
    (xtr, _), (xte, _) = data
    desc = (f"Fashion-MNIST full set ({len(xtr)} train / {len(xte)} test images) "
            f"from {where.folder} ({where.origin})")
    return data, desc, False
