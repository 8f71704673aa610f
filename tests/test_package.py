"""The package's face: import hygiene, info(), the CLI, threads and the CUDA module's report."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

import layerforge
from layerforge import _backend

REQUIRED = {b for b in os.environ.get("LAYERFORGE_REQUIRE_BACKENDS", "").split(",") if b}


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=600)


def test_import_needs_only_numpy():
    code = ("import sys, layerforge, layerforge.ops; "
            "bad = [m for m in ('numba', 'torch', 'cupy', 'jax', 'layerforge._cuda') if m in sys.modules]; "
            "print(bad); sys.exit(1 if bad else 0)")
    r = _run("-c", code)
    assert r.returncode == 0, r.stdout + r.stderr


def test_info_reports_every_backend(capsys):
    d = layerforge.info()
    out = capsys.readouterr().out
    assert out.startswith(f"layerforge {layerforge.__version__}")
    for key in ("cpp", "numba", "cuda", "default backend"):
        assert key in out
    assert set(d) >= {"version", "cpp", "numba", "cuda", "default_backend"}
    if d["cpp"]["built"]:
        assert d["cpp"]["simd_path"] in ("scalar", "avx2", "avx512")
        assert d["cpp"]["threads"] >= 1


def test_python_m_layerforge_info():
    r = _run("-m", "layerforge", "info")
    assert r.returncode == 0, r.stderr
    assert "layerforge" in r.stdout and "default backend" in r.stdout


@pytest.mark.parametrize("name", ["cpp", "numba"])
def test_required_backends_are_present(name):
    if name in REQUIRED:
        assert _backend.load(name) is not None, _backend.unavailable_reason(name)
    elif _backend.load(name) is None:
        pytest.skip(f"{name} unavailable and not required: {_backend.unavailable_reason(name)}")


def test_demo_runs_and_matches_oracle():
    if _backend.load("cpp") is None:
        pytest.skip("_C unavailable")
    r = _run("-m", "layerforge", "demo", "--backend", "cpp", "--batch-size", "4", "--repeats", "2")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "oracle" in r.stdout and "cpp" in r.stdout


def test_thread_count_round_trip():
    if _backend.load("cpp") is None:
        pytest.skip("_C unavailable")
    old = layerforge.get_num_threads()
    try:
        layerforge.set_num_threads(1)
        assert layerforge.get_num_threads() == 1
    finally:
        layerforge.set_num_threads(old)
    with pytest.raises(ValueError, match=r"expected an int >= 1, got 0"):
        layerforge.set_num_threads(0)


def test_cuda_module_reports_without_a_gpu():
    """_cuda (built whenever nvcc was found) must import and answer with or without a driver."""
    cu = _backend.load("cuda")
    if cu is None:
        if "cuda" in REQUIRED:
            pytest.fail(f"_cuda required but unavailable: {_backend.unavailable_reason('cuda')}")
        pytest.skip(f"_cuda not built: {_backend.unavailable_reason('cuda')}")
    st = cu.status()
    assert st["device_count"] == len(st["devices"]) >= 0
    assert "90" in cu.build_info()["architectures"]
    if st["device_count"] == 0:
        assert st["error"], "no device and no reason given"


@pytest.mark.gpu
def test_cuda_sees_the_gpu():
    cu = _backend.load("cuda")
    if cu is None or cu.device_count() == 0:
        pytest.skip("no CUDA GPU here")
    dev = cu.status()["devices"][0]
    assert dev["compute_capability"][0] >= 7 and dev["total_memory"] > 0


@pytest.mark.parametrize("model", ["cnn", "rnn"])
def test_train_command_runs_end_to_end(model):
    r = _run("-m", "layerforge", "train", model, "--epochs", "1", "--limit", "640", "--quiet")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "data: Fashion-MNIST" in r.stdout
    assert "test accuracy" in r.stdout and "s per epoch" in r.stdout and "training images/s" in r.stdout
    acc = float(r.stdout.split("test accuracy ")[1].split()[0])
    assert acc > 0.3, r.stdout  # 20 steps; chance is 0.1


def test_train_command_names_a_missing_data_folder(tmp_path):
    r = _run("-m", "layerforge", "train", "cnn", "--data", str(tmp_path / "nowhere"), "--quiet")
    assert r.returncode == 2
    assert "Fashion-MNIST not found" in r.stderr and str(tmp_path / "nowhere") in r.stderr


def test_train_command_rejects_bad_numbers():
    r = _run("-m", "layerforge", "train", "cnn", "--epochs", "0")
    assert r.returncode == 2 and "--epochs" in r.stderr
