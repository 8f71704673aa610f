"""IDX files (the MNIST format) and the four-file image/label sets stored in them.

IDX layout (big-endian): a 4-byte magic ``0x00 0x00 <dtype code> <ndim>``, then ``ndim``
uint32 dimension sizes, then the payload in C order. MNIST and Fashion-MNIST use
dtype code 0x08 (uint8): labels are magic 2049 (1 dim, ``(N,)``), images magic 2051
(3 dims, ``(N, 28, 28)``). Files may be gzip-compressed (``.gz``) or plain.

This module holds:

- ``parse_idx`` / ``read_idx`` / ``write_idx``: the codec, strict about sizes;
- ``read_images`` / ``read_labels`` / ``load_set``: the checks a classification set needs
  (28x28 uint8 images, labels in 0..num_classes-1, as many labels as images);
- ``candidate_folders`` / ``find_folder`` / ``not_found_message``: where the data sets live.

Every problem raises ``ValueError`` naming the file and what is wrong, before any array is
returned: a caller never sees half-read data. Needs only NumPy and the standard library.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import struct
import zlib
from pathlib import Path
from typing import NamedTuple

import numpy as np

__all__ = [
    "IDX_DTYPES", "LABELS_MAGIC", "IMAGES_MAGIC", "SET_FILES",
    "parse_idx", "read_idx", "encode_idx", "write_idx", "read_bytes",
    "read_images", "read_labels", "load_set",
    "Candidate", "candidate_folders", "find_folder", "set_files_in", "not_found_message",
    "locate_set", "user_cache_dir",
]

# IDX dtype codes; multi-byte types are big-endian by the format's definition.
IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_CODE_NAMES = {0x08: "uint8", 0x09: "int8", 0x0B: "int16", 0x0C: "int32",
               0x0D: "float32", 0x0E: "float64"}
LABELS_MAGIC = 0x0801  # 2049: uint8, 1 dimension
IMAGES_MAGIC = 0x0803  # 2051: uint8, 3 dimensions

# The four files of an MNIST-format set, keyed by role, named as the projects publish them.
SET_FILES: dict[str, str] = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}

ArraySets = tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


# ---- the codec ---------------------------------------------------------------------------

def read_bytes(path: str | os.PathLike, sha256: str | None = None,
               payload_sha256: str | None = None) -> bytes:
    """The file's content, gunzipped when its name ends in ``.gz``.

    ``sha256``, when given, is checked against the file as stored; ``payload_sha256``
    against the content after gunzip (the same for any recompression of the file).
    Gzip damage (bad header, CRC or length mismatch, truncated stream) raises ValueError
    naming the file; gzip.decompress reads the whole member, so the CRC is always checked.
    """
    path = Path(path)
    raw = path.read_bytes()
    if sha256 is not None:
        got = hashlib.sha256(raw).hexdigest()
        if got != sha256.lower():
            raise ValueError(f"{path}: SHA-256 mismatch: expected {sha256}, got {got} "
                             "(the file is damaged or was replaced)")
    data = raw
    if path.suffix == ".gz":
        try:
            data = gzip.decompress(raw)
        except gzip.BadGzipFile as e:
            raise ValueError(f"{path}: bad gzip file ({e})") from None
        except EOFError as e:
            raise ValueError(f"{path}: gzip stream is truncated ({e})") from None
        except zlib.error as e:
            raise ValueError(f"{path}: corrupt gzip data ({e})") from None
    if payload_sha256 is not None:
        got = hashlib.sha256(data).hexdigest()
        if got != payload_sha256.lower():
            raise ValueError(f"{path}: SHA-256 of the uncompressed content mismatch: expected "
                             f"{payload_sha256}, got {got} (not the known release of this file)")
    return data


def parse_idx(data: bytes, name: str = "<bytes>", expect_magic: int | None = None) -> np.ndarray:
    """Decode one IDX payload into a writable native-endian array of its declared shape.

    ``expect_magic`` (e.g. ``IMAGES_MAGIC``) pins dtype code and number of dimensions.
    The byte count must equal the header's implied size exactly: fewer means truncation,
    more means trailing garbage or a wrong header; both are errors, never guessed around.
    """
    if len(data) < 4:
        raise ValueError(f"{name}: {len(data)} bytes, too short for an IDX header (4-byte magic)")
    zero, code, ndim = struct.unpack(">HBB", data[:4])
    magic = (code << 8) | ndim
    if zero != 0:
        raise ValueError(f"{name}: bad IDX magic number {int.from_bytes(data[:4], 'big')} "
                         f"(0x{data[:4].hex()}): the first two bytes must be zero; "
                         "not an IDX file (or a gzip file without the .gz suffix)")
    if expect_magic is not None and magic != expect_magic:
        want_code, want_ndim = expect_magic >> 8, expect_magic & 0xFF
        what = []
        if code != want_code:
            what.append(f"dtype code 0x{code:02X} ({_CODE_NAMES.get(code, 'unknown')}), "
                        f"expected 0x{want_code:02X} ({_CODE_NAMES[want_code]})")
        if ndim != want_ndim:
            what.append(f"{ndim} dimensions, expected {want_ndim}")
        looks = {LABELS_MAGIC: " (this is a labels file)",
                 IMAGES_MAGIC: " (this is an images file)"}.get(magic, "")
        raise ValueError(f"{name}: wrong IDX magic number {magic}, expected {expect_magic}"
                         f"{looks}: " + "; ".join(what))
    if code not in IDX_DTYPES:
        raise ValueError(f"{name}: unknown IDX dtype code 0x{code:02X} "
                         f"(known: {', '.join(f'0x{c:02X}' for c in IDX_DTYPES)})")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError(f"{name}: truncated header: {len(data)} bytes, "
                         f"{ndim} dimensions need {header}")
    shape = struct.unpack(f">{ndim}I", data[4:header])
    dtype = IDX_DTYPES[code]
    expected = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(data) != expected:
        kind = "truncated" if len(data) < expected else "has trailing bytes"
        raise ValueError(f"{name}: file {kind}: header {shape} of {_CODE_NAMES[code]} implies "
                         f"{expected} bytes, found {len(data)}")
    arr = np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)
    # Copy: frombuffer over bytes is read-only; callers (Keras-style) expect to own the array.
    return arr.astype(dtype.newbyteorder("="), copy=True)


def read_idx(path: str | os.PathLike, expect_magic: int | None = None,
             sha256: str | None = None, payload_sha256: str | None = None) -> np.ndarray:
    """Read an IDX file (``.gz`` or plain) into an array; see ``parse_idx`` and
    ``read_bytes`` for the checks."""
    return parse_idx(read_bytes(path, sha256, payload_sha256), str(path), expect_magic)


def _idx_code(dtype: np.dtype) -> int:
    for code, dt in IDX_DTYPES.items():
        if dt.kind == dtype.kind and dt.itemsize == dtype.itemsize:
            return code
    raise TypeError(f"dtype {dtype} has no IDX code (supported: "
                    f"{', '.join(_CODE_NAMES.values())})")


def encode_idx(array: np.ndarray) -> bytes:
    """The IDX bytes of ``array`` (any shape up to 255 dims, each size < 2**32)."""
    array = np.asarray(array)
    code = _idx_code(array.dtype)
    if array.ndim > 255 or any(s >= 2**32 for s in array.shape):
        raise ValueError(f"shape {array.shape} does not fit an IDX header")
    header = struct.pack(f">HBB{array.ndim}I", 0, code, array.ndim, *array.shape)
    return header + np.ascontiguousarray(array, dtype=IDX_DTYPES[code]).tobytes()


def write_idx(path: str | os.PathLike, array: np.ndarray) -> Path:
    """Write ``array`` as IDX; gzip it when the name ends in ``.gz``.

    The gzip stream carries no file name and mtime 0, so equal arrays give equal bytes
    (with the same zlib): the embedded sample's checksums are reproducible.
    """
    path = Path(path)
    data = encode_idx(array)
    if path.suffix == ".gz":
        with open(path, "wb") as f, gzip.GzipFile(filename="", mode="wb", fileobj=f,
                                                 compresslevel=9, mtime=0) as g:
            g.write(data)
    else:
        path.write_bytes(data)
    return path


# ---- a classification set: images + labels -------------------------------------------------

def read_images(path: str | os.PathLike, size: tuple[int, int] = (28, 28),
                **checksums: str | None) -> np.ndarray:
    """Images file -> uint8 array ``(N, H, W)``; ``size`` is the required ``(H, W)``.

    ``checksums``: ``sha256=`` / ``payload_sha256=`` as in ``read_bytes``.
    """
    x = read_idx(path, IMAGES_MAGIC, **checksums)
    if x.shape[1:] != tuple(size):
        raise ValueError(f"{path}: images are {x.shape[1]}x{x.shape[2]}, "
                         f"expected {size[0]}x{size[1]}")
    return x


def read_labels(path: str | os.PathLike, num_classes: int = 10,
                **checksums: str | None) -> np.ndarray:
    """Labels file -> uint8 array ``(N,)`` with every value in ``0..num_classes-1``.

    ``checksums``: ``sha256=`` / ``payload_sha256=`` as in ``read_bytes``.
    """
    y = read_idx(path, LABELS_MAGIC, **checksums)
    bad = np.flatnonzero(y >= num_classes)
    if bad.size:
        raise ValueError(f"{path}: {bad.size} label(s) out of range 0..{num_classes - 1}, "
                         f"first at index {bad[0]}: {y[bad[0]]}")
    return y


def load_set(files: dict[str, Path], num_classes: int = 10,
             sha256: dict[str, str] | None = None,
             payload_sha256: dict[str, str] | None = None) -> ArraySets:
    """Read the four files of a set -> ``((x_train, y_train), (x_test, y_test))``.

    ``files`` maps the ``SET_FILES`` roles to paths; ``sha256`` / ``payload_sha256``
    optionally map roles to the expected checksums of the stored file / its uncompressed
    content. Images are ``(N, 28, 28)`` uint8, labels ``(N,)`` uint8.
    """
    sha256, payload_sha256 = sha256 or {}, payload_sha256 or {}
    out: dict[str, np.ndarray] = {}
    for role, p in files.items():
        sums = {"sha256": sha256.get(role), "payload_sha256": payload_sha256.get(role)}
        out[role] = (read_images(p, **sums) if role.startswith("x")
                     else read_labels(p, num_classes, **sums))
    for split in ("train", "test"):
        x, y = out[f"x_{split}"], out[f"y_{split}"]
        if len(x) != len(y):
            raise ValueError(f"{files[f'x_{split}']} holds {len(x)} images but "
                             f"{files[f'y_{split}']} holds {len(y)} labels")
    return (out["x_train"], out["y_train"]), (out["x_test"], out["y_test"])


# ---- where the files live ------------------------------------------------------------------

class Candidate(NamedTuple):
    """A folder to look in, and why it is on the list (shown in the not-found message)."""

    folder: Path
    origin: str


def user_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/layerforge`` (when absolute, as the XDG spec requires), else
    ``~/.cache/layerforge``."""
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    base = Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".cache"
    return base / "layerforge"


def candidate_folders(path: str | os.PathLike | None, subdir: str, system_dir: str,
                      extra: list[Candidate] | None = None) -> list[Candidate]:
    """The search order: ``$LAYERFORGE_DATA/<subdir>``, ``$LAYERFORGE_DATA``, the Debian
    folder, the user cache, then ``extra``; or, when ``path`` is given, that folder alone
    (and its ``<subdir>``).

    The named subfolder of LAYERFORGE_DATA comes before the folder itself, so one
    LAYERFORGE_DATA can hold both ``mnist/`` and ``fashion-mnist/`` (the file names clash).
    """
    out: list[Candidate] = []
    if path is not None:
        # An explicit folder is the only place looked at: a mistyped path must fail loudly,
        # not quietly load a data set from somewhere else.
        root = Path(path).expanduser()
        return [Candidate(root, "path= argument"), Candidate(root / subdir, "path= argument, subfolder")]
    env = os.environ.get("LAYERFORGE_DATA", "")
    if env:
        root = Path(env).expanduser()
        out.append(Candidate(root / subdir, "LAYERFORGE_DATA subfolder"))
        out.append(Candidate(root, "LAYERFORGE_DATA"))
    out.append(Candidate(Path(system_dir), "Debian package folder"))
    out.append(Candidate(user_cache_dir() / subdir, "user cache"))
    out.extend(extra or [])
    return out


def set_files_in(folder: Path) -> tuple[dict[str, Path], list[str]]:
    """(found, missing): each role's file in ``folder`` (``.gz`` preferred over plain)."""
    found: dict[str, Path] = {}
    missing: list[str] = []
    for role, stem in SET_FILES.items():
        for name in (stem + ".gz", stem):
            if (folder / name).is_file():
                found[role] = folder / name
                break
        else:
            missing.append(stem + "[.gz]")
    return found, missing


def find_folder(candidates: list[Candidate]) -> tuple[Candidate, dict[str, Path]] | None:
    """The first candidate holding all four files, with their paths; None if none does."""
    for c in candidates:
        if c.folder.is_dir():
            found, missing = set_files_in(c.folder)
            if not missing:
                return c, found
    return None


def _state(folder: Path) -> str:
    if not folder.exists():
        return "does not exist"
    if not folder.is_dir():
        return "not a folder"
    found, missing = set_files_in(folder)
    if not found:
        return "no IDX files"
    return "missing " + ", ".join(missing)


def not_found_message(title: str, candidates: list[Candidate], how_to_get: str) -> str:
    """The FileNotFoundError text: every place looked at and its state, then how to get the data."""
    lines = [f"{title} not found. Looked for the four IDX files "
             f"({', '.join(s + '.gz' for s in SET_FILES.values())}; "
             "uncompressed names also accepted) in:"]
    lines += [f"  - {c.folder}  ({c.origin}: {_state(c.folder)})" for c in candidates]
    if not os.environ.get("LAYERFORGE_DATA"):
        lines.append("  - $LAYERFORGE_DATA  (not set)")
    lines.append(how_to_get)
    lines.append("Nothing is downloaded automatically.")
    return "\n".join(lines)


def locate_set(title: str, path: str | os.PathLike | None, subdir: str, system_dir: str,
               how_to_get: str, extra: list[Candidate] | None = None,
               ) -> tuple[Candidate, dict[str, Path]]:
    """The first folder of the search order holding all four files, and their paths.

    Raises FileNotFoundError listing every place looked at and ``how_to_get``.
    """
    candidates = candidate_folders(path, subdir, system_dir, extra)
    hit = find_folder(candidates)
    if hit is None:
        raise FileNotFoundError(not_found_message(title, candidates, how_to_get))
    return hit
