"""Data sets and to_categorical: IDX codec, search order, corruption reports, embedded sample.

Synthetic IDX sets (a few 28x28 images) are written into tmp_path; nothing is downloaded and
nothing outside tmp_path is needed. Every test runs with the search places isolated (no
LAYERFORGE_DATA, caches and the Debian folder pointed into tmp_path), except the one that reads
the real full set, which is skipped when /usr/share/datasets/fashion-mnist is absent.
"""

from __future__ import annotations

import gzip
import hashlib
import re
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from layerforge.datasets import _idx, fashion_mnist, mnist
from layerforge.utils import to_categorical

REAL_DIR = Path("/usr/share/datasets/fashion-mnist")
N_TRAIN, N_TEST = 12, 7


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """Point every search place into tmp_path so the machine's own data cannot leak in."""
    monkeypatch.delenv("LAYERFORGE_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setattr(fashion_mnist, "SYSTEM_DIR", str(tmp_path / "system" / "fashion-mnist"))
    monkeypatch.setattr(mnist, "SYSTEM_DIR", str(tmp_path / "system" / "mnist"))
    return tmp_path


def synthetic(seed: int = 0) -> dict[str, np.ndarray]:
    """A tiny set by role: images (N, 28, 28) uint8, labels (N,) uint8 in 0..9."""
    rng = np.random.default_rng(seed)
    return {
        "x_train": rng.integers(0, 256, (N_TRAIN, 28, 28), dtype=np.uint8),
        "y_train": rng.integers(0, 10, N_TRAIN, dtype=np.uint8),
        "x_test": rng.integers(0, 256, (N_TEST, 28, 28), dtype=np.uint8),
        "y_test": rng.integers(0, 10, N_TEST, dtype=np.uint8),
    }


def write_set(folder: Path, arrays: dict[str, np.ndarray] | None = None,
              gz: bool = True) -> dict[str, Path]:
    """Write the four files into ``folder``; returns their paths by role."""
    folder.mkdir(parents=True, exist_ok=True)
    arrays = arrays or synthetic()
    return {role: _idx.write_idx(folder / (stem + (".gz" if gz else "")), arrays[role])
            for role, stem in _idx.SET_FILES.items()}


def assert_same(data, arrays: dict[str, np.ndarray]) -> None:
    (xtr, ytr), (xte, yte) = data
    for got, role in ((xtr, "x_train"), (ytr, "y_train"), (xte, "x_test"), (yte, "y_test")):
        assert got.dtype == np.uint8 and got.flags.writeable
        np.testing.assert_array_equal(got, arrays[role])


# ---- codec ---------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", ["u1", "i1", "i2", "i4", "f4", "f8"])
def test_idx_roundtrip_every_dtype(tmp_path, dtype):
    a = (np.arange(24).reshape(2, 3, 4) - 5).astype(dtype)
    for name in ("a.idx", "a.idx.gz"):
        b = _idx.read_idx(_idx.write_idx(tmp_path / name, a))
        assert b.dtype == np.dtype(dtype) and b.dtype.isnative and b.shape == (2, 3, 4)
        np.testing.assert_array_equal(a, b)


def test_gzip_output_is_deterministic(tmp_path):
    a = synthetic()["x_train"]
    p1 = _idx.write_idx(tmp_path / "1.gz", a)
    p2 = _idx.write_idx(tmp_path / "2.gz", a)
    assert p1.read_bytes() == p2.read_bytes()


# ---- search order --------------------------------------------------------------------------

def test_load_via_path(tmp_path):
    arrays = synthetic()
    write_set(tmp_path / "d", arrays)
    assert_same(fashion_mnist.load_data(path=tmp_path / "d"), arrays)
    assert_same(mnist.load_data(path=str(tmp_path / "d")), arrays)


def test_load_uncompressed_and_mixed(tmp_path):
    arrays = synthetic()
    files = write_set(tmp_path / "d", arrays, gz=False)
    assert_same(fashion_mnist.load_data(path=tmp_path / "d"), arrays)
    # A .gz beside the plain file wins; both hold the same arrays here.
    _idx.write_idx(files["x_train"].with_name(files["x_train"].name + ".gz"), arrays["x_train"])
    assert_same(fashion_mnist.load_data(path=tmp_path / "d"), arrays)


def test_load_via_env_root_and_subfolder(tmp_path, monkeypatch):
    root = tmp_path / "data"
    a_root, a_fashion, a_mnist = synthetic(1), synthetic(2), synthetic(3)
    write_set(root, a_root)
    monkeypatch.setenv("LAYERFORGE_DATA", str(root))
    assert_same(fashion_mnist.load_data(), a_root)
    # The named subfolder comes first, so one LAYERFORGE_DATA can hold both sets.
    write_set(root / "fashion-mnist", a_fashion)
    write_set(root / "mnist", a_mnist)
    assert_same(fashion_mnist.load_data(), a_fashion)
    assert_same(mnist.load_data(), a_mnist)


def test_path_comes_before_env(tmp_path, monkeypatch):
    a_path, a_env = synthetic(1), synthetic(2)
    write_set(tmp_path / "p", a_path)
    write_set(tmp_path / "e", a_env)
    monkeypatch.setenv("LAYERFORGE_DATA", str(tmp_path / "e"))
    assert_same(fashion_mnist.load_data(path=tmp_path / "p"), a_path)


def test_incomplete_folder_is_skipped(tmp_path, monkeypatch):
    files = write_set(tmp_path / "env" / "fashion-mnist")
    files["y_test"].unlink()
    arrays = synthetic(5)
    write_set(tmp_path / "env", arrays)
    monkeypatch.setenv("LAYERFORGE_DATA", str(tmp_path / "env"))
    assert_same(fashion_mnist.load_data(), arrays)


def test_explicit_path_is_the_only_place(tmp_path, monkeypatch):
    """A path= that lacks the files fails, even when another search place holds them."""
    files = write_set(tmp_path / "partial")
    files["y_test"].unlink()
    write_set(tmp_path / "full", synthetic(5))
    monkeypatch.setenv("LAYERFORGE_DATA", str(tmp_path / "full"))
    with pytest.raises(FileNotFoundError, match="path= argument"):
        fashion_mnist.load_data(path=tmp_path / "partial")
    with pytest.raises(FileNotFoundError):
        fashion_mnist.load_data_or_sample(path=tmp_path / "partial")


def test_system_folder_and_caches(tmp_path, monkeypatch):
    a_sys, a_xdg, a_keras = synthetic(1), synthetic(2), synthetic(3)
    write_set(tmp_path / "keras" / "datasets" / "fashion-mnist", a_keras)
    assert_same(fashion_mnist.load_data(), a_keras)
    write_set(tmp_path / "xdg" / "layerforge" / "fashion-mnist", a_xdg)
    assert_same(fashion_mnist.load_data(), a_xdg)
    write_set(Path(fashion_mnist.SYSTEM_DIR), a_sys)
    assert_same(fashion_mnist.load_data(), a_sys)


def test_relative_xdg_cache_home_is_ignored(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/cache")
    arrays = synthetic(4)
    write_set(tmp_path / "home" / ".cache" / "layerforge" / "mnist", arrays)
    assert_same(mnist.load_data(), arrays)


def test_not_found_lists_every_place(tmp_path, monkeypatch):
    files = write_set(tmp_path / "env" / "fashion-mnist")
    files["x_test"].unlink()
    monkeypatch.setenv("LAYERFORGE_DATA", str(tmp_path / "env"))
    with pytest.raises(FileNotFoundError) as e:
        fashion_mnist.load_data()
    msg = str(e.value)
    for place in (tmp_path / "env" / "fashion-mnist", tmp_path / "env",
                  fashion_mnist.SYSTEM_DIR, tmp_path / "xdg" / "layerforge" / "fashion-mnist",
                  tmp_path / "keras" / "datasets" / "fashion-mnist"):
        assert str(place) in msg
    assert "missing t10k-images-idx3-ubyte" in msg
    assert "apt-get install dataset-fashion-mnist" in msg
    assert "github.com/zalandoresearch/fashion-mnist" in msg


def test_not_found_mnist_and_unset_env():
    with pytest.raises(FileNotFoundError) as e:
        mnist.load_data()
    msg = str(e.value)
    assert mnist.SYSTEM_DIR in msg and "LAYERFORGE_DATA  (not set)" in msg
    assert "MNIST project page" in msg


# ---- corruption ----------------------------------------------------------------------------

def _gz(data: bytes) -> bytes:
    return gzip.compress(data, mtime=0)


def _labels_bytes(y) -> bytes:
    return _idx.encode_idx(np.asarray(y, np.uint8))


def corrupt(case: str, files: dict[str, Path]) -> tuple[Path, str]:
    """Damage one file of a written set; returns (damaged file, regex the error must match)."""
    xtr, ytr = files["x_train"], files["y_train"]
    x_raw = gzip.decompress(xtr.read_bytes())
    if case == "bad_magic":
        ytr.write_bytes(_gz(struct.pack(">I", 2051) + _labels_bytes(range(10))[4:]))
        return ytr, "magic number 2051, expected 2049"
    if case == "not_idx":
        xtr.write_bytes(_gz(b"\x1f\x8b" + x_raw[2:]))
        return xtr, "bad IDX magic"
    if case == "bad_dtype":
        a = np.zeros((N_TRAIN, 28, 28), ">i4")
        xtr.write_bytes(_gz(_idx.encode_idx(a)))
        return xtr, r"dtype code 0x0C \(int32\), expected 0x08"
    if case == "truncated_gz":
        xtr.write_bytes(xtr.read_bytes()[:-30])
        return xtr, "gzip"
    if case == "gz_crc":
        raw = bytearray(xtr.read_bytes())
        raw[-8] ^= 0xFF  # the CRC32 in the gzip trailer
        xtr.write_bytes(bytes(raw))
        return xtr, "gzip"
    if case == "gz_garbled":
        raw = bytearray(xtr.read_bytes())
        for i in range(20, 60):
            raw[i] ^= 0x5A
        xtr.write_bytes(bytes(raw))
        return xtr, "gzip"
    if case == "not_gzip":
        xtr.write_bytes(x_raw)  # plain IDX under a .gz name
        return xtr, "bad gzip file"
    if case == "truncated_payload":
        xtr.write_bytes(_gz(x_raw[:-100]))
        return xtr, "truncated"
    if case == "truncated_plain":
        p = xtr.with_suffix("")  # plain file: the loader takes it when no .gz is there
        p.write_bytes(x_raw[:-1])
        xtr.unlink()
        return p, "truncated"
    if case == "truncated_header":
        xtr.write_bytes(_gz(x_raw[:10]))
        return xtr, "truncated header"
    if case == "trailing_bytes":
        ytr.write_bytes(_gz(gzip.decompress(ytr.read_bytes()) + b"\0"))
        return ytr, "trailing bytes"
    if case == "count_mismatch":
        ytr.write_bytes(_gz(_labels_bytes([0] * (N_TRAIN - 1))))
        return ytr, f"{N_TRAIN} images but .*{N_TRAIN - 1} labels"
    if case == "bad_dims":
        xtr.write_bytes(_gz(_idx.encode_idx(np.zeros((N_TRAIN, 27, 28), np.uint8))))
        return xtr, "27x28, expected 28x28"
    if case == "label_range":
        ytr.write_bytes(_gz(_labels_bytes([0] * (N_TRAIN - 2) + [10, 255])))
        return ytr, r"2 label\(s\) out of range 0..9, first at index 10: 10"
    raise AssertionError(case)


CASES = ["bad_magic", "not_idx", "bad_dtype", "truncated_gz", "gz_crc", "gz_garbled", "not_gzip",
         "truncated_payload", "truncated_plain", "truncated_header", "trailing_bytes",
         "count_mismatch", "bad_dims", "label_range"]


@pytest.mark.parametrize("case", CASES)
def test_corruption_is_a_value_error_naming_the_file(tmp_path, case):
    bad, pattern = corrupt(case, write_set(tmp_path / "d"))
    with pytest.raises(ValueError, match=pattern) as e:
        fashion_mnist.load_data(path=tmp_path / "d")
    assert str(bad) in str(e.value)


def test_corrupt_full_set_does_not_fall_back_to_sample(tmp_path):
    corrupt("truncated_gz", write_set(tmp_path / "d"))
    with pytest.raises(ValueError):
        fashion_mnist.load_data_or_sample(path=tmp_path / "d")


def test_verify_rejects_unknown_content(tmp_path):
    files = write_set(tmp_path / "d")
    with pytest.raises(ValueError, match="uncompressed content mismatch") as e:
        fashion_mnist.load_data(path=tmp_path / "d", verify=True)
    assert any(str(p) in str(e.value) for p in files.values())


# ---- embedded sample -----------------------------------------------------------------------

def test_sample_shapes_balance_and_checksums():
    (xtr, ytr), (xte, yte) = fashion_mnist.load_sample()
    assert xtr.shape == (5000, 28, 28) and ytr.shape == (5000,)
    assert xte.shape == (1000, 28, 28) and yte.shape == (1000,)
    assert {a.dtype for a in (xtr, ytr, xte, yte)} == {np.dtype(np.uint8)}
    assert np.bincount(ytr, minlength=10).tolist() == [500] * 10
    assert np.bincount(yte, minlength=10).tolist() == [100] * 10
    assert xtr.std() > 10  # real images, not zeros
    meta = fashion_mnist._manifest()["files"]
    total = 0
    for stem in _idx.SET_FILES.values():
        p = fashion_mnist.SAMPLE_DIR / (stem + ".gz")
        raw = p.read_bytes()
        total += len(raw)
        assert hashlib.sha256(raw).hexdigest() == meta[p.name]["sha256"]
        assert hashlib.sha256(gzip.decompress(raw)).hexdigest() == meta[p.name]["payload_sha256"]
    assert total < 4_000_000
    for name in ("LICENSE", "README.md"):
        assert "Zalando" in (fashion_mnist.SAMPLE_DIR / name).read_text(encoding="utf-8")


def test_sample_checksum_mismatch_is_reported(monkeypatch):
    import copy
    m = copy.deepcopy(fashion_mnist._manifest())
    m["files"]["t10k-labels-idx1-ubyte.gz"]["sha256"] = "0" * 64
    monkeypatch.setattr(fashion_mnist, "_manifest", lambda: m)
    with pytest.raises(ValueError, match=r"t10k-labels-idx1-ubyte\.gz: SHA-256 mismatch"):
        fashion_mnist.load_sample()


def test_load_data_or_sample(tmp_path):
    data, desc, is_sample = fashion_mnist.load_data_or_sample()
    assert is_sample and "sample" in desc and "apt-get install dataset-fashion-mnist" in desc
    assert data[0][0].shape == (5000, 28, 28)
    arrays = synthetic()
    write_set(tmp_path / "d", arrays)
    data, desc, is_sample = fashion_mnist.load_data_or_sample(path=tmp_path / "d")
    assert not is_sample and str(tmp_path / "d") in desc and "full set" in desc
    assert_same(data, arrays)


def test_sample_is_the_documented_subset_of_the_real_set(monkeypatch):
    if not (REAL_DIR / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"full Fashion-MNIST not installed in {REAL_DIR}")
    (xtr, ytr), (xte, yte) = fashion_mnist.load_data(path=REAL_DIR, verify=True)
    assert xtr.shape == (60000, 28, 28) and xte.shape == (10000, 28, 28)
    assert np.bincount(ytr).tolist() == [6000] * 10 and np.bincount(yte).tolist() == [1000] * 10
    (sxtr, sytr), (sxte, syte) = fashion_mnist.load_sample()
    for x, y, sx, sy, k in ((xtr, ytr, sxtr, sytr, 500), (xte, yte, sxte, syte, 100)):
        idx = np.sort(np.concatenate([np.flatnonzero(y == c)[:k] for c in range(10)]))
        np.testing.assert_array_equal(sx, x[idx])
        np.testing.assert_array_equal(sy, y[idx])


def test_import_is_cheap():
    code = ("import sys; from layerforge.datasets import fashion_mnist, mnist; "
            "import layerforge.utils; "
            "bad = [m for m in ('numba', 'torch', 'cupy', 'jax', 'layerforge._cuda') "
            "if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr


# ---- to_categorical ------------------------------------------------------------------------

def keras_to_categorical(y, num_classes=None, dtype="float32"):
    """Keras 3's algorithm (keras/src/utils/numerical_utils.py), for valid inputs."""
    y = np.array(y, dtype="int64")
    input_shape = y.shape
    if input_shape and input_shape[-1] == 1 and len(input_shape) > 1:
        input_shape = tuple(input_shape[:-1])
    y = y.reshape(-1)
    if not num_classes:
        num_classes = np.max(y) + 1
    n = y.shape[0]
    categorical = np.zeros((n, num_classes), dtype=dtype)
    categorical[np.arange(n), y] = 1
    return np.reshape(categorical, input_shape + (num_classes,))


@pytest.mark.parametrize("y, num_classes", [
    ([0, 2, 1, 2, 0], None),
    ([0, 2, 1, 2, 0], 5),
    (np.array([[1], [0], [3]]), None),      # (N, 1) -> (N, C)
    (np.array([[1, 0], [2, 2]]), 4),       # (N, 2) -> (N, 2, C)
    (np.array([[[1]], [[0]]]), 3),         # (N, 1, 1) -> (N, 1, C)
    (np.array([3]), None),                 # (1,) stays (1, C)
    (4, 6),                                # scalar -> (C,)
    (np.array([1.0, 0.0, 2.0]), None),     # whole-number floats are accepted
    (np.array([True, False]), None),
    (np.arange(10, dtype=np.uint8), 10),
])
def test_to_categorical_matches_keras(y, num_classes):
    ours = to_categorical(y, num_classes)
    ref = keras_to_categorical(y, num_classes)
    assert ours.dtype == np.float32 and ours.shape == ref.shape
    np.testing.assert_array_equal(ours, ref)


def test_to_categorical_dtype_and_empty():
    assert to_categorical([1, 0], 2, dtype="int8").dtype == np.int8
    out = to_categorical(np.zeros(0, np.int64), num_classes=3)
    assert out.shape == (0, 3)
    assert to_categorical(np.zeros((0, 1), np.int64), num_classes=3).shape == (0, 3)


@pytest.mark.parametrize("y, num_classes, exc, pattern", [
    ([0, -1, 2], None, ValueError, "must be >= 0, got -1 at flat index 1"),
    ([0, 1.5], None, ValueError, "must be integers, got 1.5"),
    ([0, np.nan], None, ValueError, "finite"),
    ([0, 3, 1], 3, ValueError, "label 3 at flat index 1 is out of range for num_classes=3"),
    ([0, 1], 0, ValueError, "num_classes must be >= 1"),
    ([0, 1], 2.0, TypeError, "num_classes must be an int"),
    (["a", "b"], None, TypeError, "labels must be integers, got dtype"),
    ([], None, ValueError, "cannot infer num_classes"),
])
def test_to_categorical_errors(y, num_classes, exc, pattern):
    with pytest.raises(exc, match=re.escape(pattern)):
        to_categorical(y, num_classes)
