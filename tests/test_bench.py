"""`layerforge bench`: the CLI in a tiny mode (table, JSON, PNG), its option errors, the run
without PyTorch, the peak microbenchmarks of _C, the PNG writer and benchmarks/report.py.
Nothing here checks a timing."""

from __future__ import annotations

import json
import math
import os
import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest

from layerforge import _backend, _png, bench, cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["--batch", "2", "--repeats", "1", "--threads", "1"]


def _needs_cpp():
    if _backend.load("cpp") is None:
        pytest.skip(f"_C unavailable: {_backend.unavailable_reason('cpp')}")


def read_png(path) -> np.ndarray:
    """Parse an 8-bit RGB PNG written by _png: signature, chunk CRCs, IHDR, IDAT -> (H, W, 3)."""
    with open(path, "rb") as f:
        data = f.read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "bad PNG signature"
    pos, chunks = 8, []
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length:pos + 12 + length])
        assert crc == zlib.crc32(kind + body) & 0xFFFFFFFF, f"bad CRC in chunk {kind!r}"
        chunks.append((kind, body))
        pos += 12 + length
    assert pos == len(data), "trailing bytes after the last chunk"
    kinds = [k for k, _ in chunks]
    assert kinds[0] == b"IHDR" and kinds[-1] == b"IEND" and b"IDAT" in kinds, kinds
    w, h, depth, color, comp, filt, interlace = struct.unpack(">IIBBBBB", chunks[0][1])
    assert (depth, color, comp, filt, interlace) == (8, 2, 0, 0, 0)
    raw = zlib.decompress(b"".join(b for k, b in chunks if k == b"IDAT"))
    assert len(raw) == h * (1 + 3 * w), f"IDAT holds {len(raw)} bytes, IHDR says {w}x{h}"
    rows = np.frombuffer(raw, np.uint8).reshape(h, 1 + 3 * w)
    assert np.all(rows[:, 0] == 0), "expected filter type 0 on every scanline"
    return rows[:, 1:].reshape(h, w, 3)


def _run_cli(capsys, *args: str) -> tuple[int, str, str]:
    code = cli.main(["bench", *args])
    out, err = capsys.readouterr()
    return code, out, err


# ---------------------------------------------------------------------------- _C peaks

def test_fma_peak_is_positive_and_finite():
    _needs_cpp()
    from layerforge import _C

    for threads in (1, 0):
        v = _C.fma_peak_gflops(threads)
        assert math.isfinite(v) and v > 0, v
    with pytest.raises(ValueError, match="threads"):
        _C.fma_peak_gflops(-1)


def test_copy_bandwidth_is_positive_and_finite():
    _needs_cpp()
    from layerforge import _C

    for nbytes in (64, 1 << 20):
        v = _C.copy_bandwidth_gbs(1, nbytes)
        assert math.isfinite(v) and v > 0, v
    with pytest.raises(ValueError, match="nbytes"):
        _C.copy_bandwidth_gbs(1, 3)


# ---------------------------------------------------------------------------- the CLI

def test_cli_tiny_run_prints_table_json_and_png(tmp_path, capsys):
    _needs_cpp()
    j, png = tmp_path / "b.json", tmp_path / "b.png"
    code, out, err = _run_cli(capsys, "--only", "relu", *TINY, "--json", str(j), "--png", str(png))
    assert code == 0, err
    header = next(line for line in out.splitlines() if line.startswith("op "))
    for col in bench.COLUMNS:
        assert col in header
    assert "relu fwd" in out and "relu bwd" in out and "(2,32,26,26)" in out
    d = json.loads(j.read_text())
    assert {"layerforge", "backend", "threads", "repeats", "torch", "peaks", "rows"} <= set(d)
    assert d["threads"] == 1 and d["repeats"] == 1
    assert len(d["rows"]) == 4
    for row in d["rows"]:
        assert {"op", "direction", "shape", "batch", "ours_ms", "torch_ms", "ratio", "unit", "peak_fraction"} <= set(row)
        assert row["op"] == "relu" and row["batch"] == 2 and row["ours_ms"] > 0 and row["unit"] == "GB/s"
    if bench.import_torch() is None:
        assert "PyTorch is not installed" in out and not png.exists()
    else:
        assert all(r["ratio"] > 0 and "torch" in r["torch_ms"] for r in d["rows"])
        img = read_png(png)
        assert img.shape[0] > 50 and img.shape[1] > 200
        assert (img != 255).any() and (img == 255).all(axis=2).any(), "blank or fully painted chart"


def test_cli_training_steps_with_copied_weights(capsys):
    pytest.importorskip("torch")
    _needs_cpp()
    code, out, err = _run_cli(capsys, "--only", "train_rnn,train_cnn", *TINY, "--no-png")
    assert code == 0, err
    assert "train step" in out and "CNN batch 2" in out and "RNN batch 2" in out


def test_cli_without_torch(monkeypatch, tmp_path, capsys):
    _needs_cpp()
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch now raises ImportError
    assert bench.import_torch() is None
    j, png = tmp_path / "b.json", tmp_path / "b.png"
    code, out, err = _run_cli(capsys, "--only", "sigmoid,train_rnn", *TINY, "--json", str(j), "--png", str(png))
    assert code == 0, err
    assert "PyTorch is not installed" in out
    assert "no chart" in out and not png.exists()
    rows = [line for line in out.splitlines() if line.startswith(("sigmoid", "train step"))]
    assert len(rows) == 3 and all(" - " in line for line in rows)
    d = json.loads(j.read_text())
    assert d["torch"] is None and all(r["ratio"] is None and r["torch_ms"] == {} for r in d["rows"])


def test_cli_no_torch_flag(capsys):
    _needs_cpp()
    code, out, err = _run_cli(capsys, "--only", "tanh", *TINY, "--no-torch", "--no-png")
    assert code == 0, err
    assert "PyTorch disabled" in out and "tanh fwd" in out


@pytest.mark.parametrize(("args", "message"), [
    (["--threads", "0"], "--threads"),
    (["--batch", "0"], "--batch"),
    (["--repeats", "0"], "--repeats"),
    (["--only", "conv3d"], "--only"),
    (["--only", ","], "--only"),
    (["--json", "/nonexistent-folder/x.json"], "--json"),
])
def test_cli_bad_options(args, message, capsys):
    code, out, err = _run_cli(capsys, *args, "--no-png")
    assert code == 2
    assert message in err and "layerforge bench" in err
    assert out == ""


def test_cli_png_path_is_a_folder(tmp_path, capsys):
    code, _, err = _run_cli(capsys, "--png", str(tmp_path))
    assert code == 2 and "--png" in err and "folder" in err


def test_cli_rejects_non_integers(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["bench", "--batch", "many"])
    assert e.value.code == 2
    assert "--batch" in capsys.readouterr().err


def test_run_validates_arguments():
    with pytest.raises(ValueError, match="unknown op"):
        bench.run(op_names=["conv3d"])
    with pytest.raises(ValueError, match="batch"):
        bench.run(batches=[0], op_names=["relu"])
    with pytest.raises(ValueError, match="threads"):
        bench.run(threads=0, op_names=["relu"])
    with pytest.raises(ValueError, match="repeats"):
        bench.run(repeats=0, op_names=["relu"])


# ---------------------------------------------------------------------------- cases and checks

def test_every_op_has_forward_and_backward_cases():
    cases = bench.op_cases((32, 256))
    assert {c.op for c in cases} == set(bench.OPS)
    for op in bench.OPS:
        for n in (32, 256):
            dirs = {c.direction for c in cases if c.op == op and c.batch == n}
            # PyTorch's RNN has no backward kernel of its own: that row times forward + backward.
            want = {"forward", "forward+backward"} if op == "rnn" else {"forward", "backward"}
            assert dirs == want, (op, n, dirs)
    assert len({c.name for c in cases}) == len(cases), "case names must be unique (they are the groups)"
    assert all(c.work > 0 and c.bound in ("compute", "memory") for c in cases)


def test_loss_mismatch_is_an_error():
    bench.check_same_loss("same", 2.302585, 2.302586)
    with pytest.raises(RuntimeError, match="models differ"):
        bench.check_same_loss("cnn", 2.30, 2.31)
    with pytest.raises(RuntimeError):
        bench.check_same_loss("nan", 2.30, float("nan"))


def test_torch_model_refuses_wrong_weights():
    pytest.importorskip("torch")
    weights = bench.layerforge_model("rnn").get_weights()
    bench.torch_model("rnn", weights)
    with pytest.raises(ValueError, match="shape"):
        bench.torch_model("rnn", [w.T for w in weights])
    with pytest.raises(ValueError, match="weight arrays"):
        bench.torch_model("cnn", weights)


def test_bench_module_imports_no_framework():
    code = ("import sys, layerforge.bench, layerforge.cli; "
            "bad = [m for m in ('torch', 'cupy', 'jax') if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)")
    r = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr


# ---------------------------------------------------------------------------- PNG writer and report

def test_png_writer_round_trip(tmp_path):
    img = _png.ratio_chart(["conv2d fwd conv1", "relu bwd (32,64,11,11)", "no torch"], [2.5, 0.4, None],
                           "title gjpqy", "note")
    path = tmp_path / "c.png"
    _png.write_png(path, img)
    back = read_png(path)
    np.testing.assert_array_equal(back, img)
    assert (back == np.array(_png.GREEN, np.uint8)).all(axis=2).any()
    assert (back == np.array(_png.RED, np.uint8)).all(axis=2).any()
    with pytest.raises(ValueError, match="labels"):
        _png.ratio_chart(["a"], [1.0, 2.0], "t")
    with pytest.raises(ValueError, match="uint8"):
        _png.encode_png(np.zeros((4, 4), np.float32))


def test_report_reads_both_json_kinds(tmp_path):
    pytest_json = {"benchmarks": [
        {"group": "conv2d conv1 (32,1,28,28) forward", "params": {"impl": impl}, "stats": {"median": t},
         "extra_info": {"op": "conv2d", "shape": "conv1 (32,1,28,28)", "direction": "forward", "batch": 32,
                        "impl": impl, "work": 1e9, "unit": "GFLOP/s", "bound": "compute"}}
        for impl, t in (("cpp", 1e-3), ("torch", 2e-3), ("torch-cl", 1.5e-3))]}
    p1 = tmp_path / "pb.json"
    p1.write_text(json.dumps(pytest_json))
    r = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "report.py"), str(p1)],
                       check=False, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "conv2d" in r.stdout and "1.50x" in r.stdout and "cpp ms" in r.stdout
    cli_json = {"backend": "cpp", "threads": 2, "rows": [
        {"op": "relu", "direction": "forward", "shape": "(32,10)", "ours_ms": 0.01, "ours_rate": 1.0, "unit": "GB/s",
         "torch_best": "torch", "torch_best_ms": 0.02, "ratio": 2.0, "peak_fraction": 0.5, "peak_kind": "memcpy"},
        {"op": "tanh", "direction": "forward", "shape": "(32,10)", "ours_ms": 0.01, "ours_rate": 1.0, "unit": "GB/s",
         "torch_best": "torch", "torch_best_ms": 0.03, "ratio": 3.0, "peak_fraction": 0.5, "peak_kind": "memcpy",
         "spread": 2 * bench.NOISY_SPREAD}]}
    p2 = tmp_path / "cli.json"
    p2.write_text(json.dumps(cli_json))
    r = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "report.py"), str(p2)],
                       check=False, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "relu" in r.stdout and "2.00x |" in r.stdout  # no spread recorded: not marked noisy
    assert "3.00x * |" in r.stdout  # a noisy row is marked, as in the CLI's table


def test_report_summarises_repeated_runs(tmp_path):
    """Several bench JSONs: per case, the median of the runs' ratios, their range and the count
    below 1.0x; a case missing from a run counts the runs it has; a pytest-benchmark file among
    them is refused."""
    def row(shape, ours, theirs):
        return {"op": "relu", "direction": "forward", "shape": shape, "ours_ms": ours, "ours_rate": 1.0,
                "unit": "GB/s", "torch_best": "torch", "torch_best_ms": theirs, "ratio": theirs / ours,
                "peak_fraction": 0.5 / ours, "peak_kind": "memcpy"}
    runs = [[row("(32,10)", 1.0, 0.99), row("(8,10)", 1.0, 3.0)],
            [row("(32,10)", 1.0, 1.5)],
            [row("(32,10)", 2.0, 2.2), row("(8,10)", 1.0, 1.0)]]
    paths = []
    for i, rows in enumerate(runs):
        paths.append(tmp_path / f"run{i}.json")
        paths[-1].write_text(json.dumps({"backend": "cpp", "rows": rows}))
    script = os.path.join(ROOT, "benchmarks", "report.py")
    r = subprocess.run([sys.executable, script, *map(str, paths)], check=False, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    lines = {ln.split("|")[2].strip(): [c.strip() for c in ln.split("|")[3:-1]] for ln in r.stdout.splitlines()[2:]}
    # ratios 0.99, 1.5, 1.1: median 1.10 (mean 1.20), one run below 1.0; ours 1, 1, 2 ms -> median 1.
    assert lines["(32,10)"] == ["3", "1.000", "1.500", "1.10x (0.99-1.50)", "1", "50% BW"]
    # ratios 3.0 and 1.0 (level, not below): median 2.0.
    assert lines["(8,10)"] == ["2", "1.000", "2.000", "2.00x (1.00-3.00)", "0", "50% BW"]
    other = tmp_path / "pb.json"
    other.write_text(json.dumps({"benchmarks": []}))
    r = subprocess.run([sys.executable, script, str(paths[0]), str(other)], check=False, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode != 0 and "pb.json" in r.stderr


def test_measure_calibrates_on_warm_calls(monkeypatch):
    """A sample runs enough calls for min_time, counted from the fastest of three timed calls
    after the warm-up: a slow first or second call (a fresh buffer's page faults) must not
    leave one call a sample. The fn sleeps instead of working, so only its call count is
    checked, never a speed."""
    import time

    monkeypatch.setattr(bench, "SETTLE_S", 0.0)
    calls = []

    def fn():
        calls.append(None)
        time.sleep(0.02 if len(calls) <= 2 else 0.0)

    samples = bench.measure_samples({"f": fn}, repeats=2, min_time=0.01)
    assert len(samples["f"]) == 2
    per_sample = (len(calls) - 4) // 2 - 1  # warm-up + three timed calls, then (1 + inner) a sample
    assert per_sample >= 2, f"{per_sample} call(s) a sample: calibrated on a slow call"


def test_handoff_script_runs():
    # benchmarks/handoff.py: both handoffs answer every request (it raises if the spinning
    # helper does not) and it prints both figures. Nothing is asserted about their size.
    if _backend.load("numba") is None:
        pytest.skip(f"numba unavailable: {_backend.unavailable_reason('numba')}")
    r = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "handoff.py"), "--requests", "200"],
                       check=False, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "us a dispatch" in r.stdout and "us a round trip" in r.stdout, r.stdout


_FAULTS_SCRIPT = r"""
import resource, sys
from layerforge import bench, set_num_threads
steady = bench.steady_allocator() if sys.argv[1] == "steady" else None
torch = bench.import_torch()
set_num_threads(2); torch.set_num_threads(2)
case = next(c for c in bench.op_cases((32,), ["conv2d"]) if "conv1" in c.shape and c.direction == "forward")
ours, theirs = case.setup()("cpp"), case.setup()("torch")
for _ in range(100):
    ours()
theirs()
f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(40):
    theirs()
print(steady, (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0) / 40)
"""


def _faults_per_call(script: str) -> dict[str, float]:
    """{'steady': n, 'default': n}: the page faults per timed call that ``script`` prints
    ("<steady_allocator() result> <faults>") in a fresh process with and without the
    allocator setting; skips where mallopt is unavailable."""
    counts = {}
    for mode in ("steady", "default"):
        r = subprocess.run([sys.executable, "-c", script, mode], check=False, capture_output=True,
                           text=True, timeout=300)
        assert r.returncode == 0, r.stderr
        took, faults = r.stdout.split()
        counts[mode] = float(faults)
        if mode == "steady" and took != "True":
            pytest.skip("mallopt unavailable (not glibc)")
    return counts


def test_steady_allocator_keeps_pytorch_buffers_mapped():
    """The state `layerforge bench` found PyTorch in (session 14): after our conv1 forward had
    run in the process, each torch conv1 forward at batch 32 took about 1,320 page faults (its
    2.8 MB outputs mapped afresh), 10x its time. With steady_allocator, a fresh process must show
    next to none. Without it the count depends on glibc's history, so it is only printed."""
    _needs_cpp()
    if bench.import_torch() is None:
        pytest.skip("torch not installed")
    counts = _faults_per_call(_FAULTS_SCRIPT)
    print(f"page faults per PyTorch conv1 call: {counts}")
    assert counts["steady"] < 20, counts


_OPS_FAULTS_SCRIPT = r"""
import resource, sys
import numpy as np
import layerforge
from layerforge import ops
steady = layerforge.steady_allocator() if sys.argv[1] == "steady" else None
layerforge.set_num_threads(2)
rng = np.random.default_rng(0)
x = rng.standard_normal((32, 1, 28, 28)).astype(np.float32)
w1, w2 = rng.standard_normal((32, 1, 3, 3)).astype(np.float32), rng.standard_normal((64, 32, 3, 3)).astype(np.float32)
def step():
    p = ops.max_pool2d(ops.relu(ops.conv2d(x, w1)), 2)
    return ops.max_pool2d(ops.relu(ops.conv2d(p, w2)), 2)
for _ in range(5):
    step()
f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    step()
print(steady, (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0) / 20)
"""


def test_steady_allocator_keeps_op_outputs_mapped():
    """A user's loop of our ops, each call allocating its output (conv -> relu -> max pool twice,
    batch 32): with glibc's defaults it took about 1,320 page faults a pass on our machine
    (2.61 against 0.93 ms, session 15); after layerforge.steady_allocator() a fresh process
    must show next to none. The default count is only printed (it depends on glibc's history)."""
    _needs_cpp()
    counts = _faults_per_call(_OPS_FAULTS_SCRIPT)
    print(f"page faults per pass of the op loop: {counts}")
    assert counts["steady"] < 20, counts
