"""Fixtures shared by the op tests: the backend grid, dtypes, the oracle comparison.

Backends: 'cpp' (once per SIMD path the CPU supports, when _C can switch paths, and once
with the im2col convolution where the direct one would run) and 'numba'. Test modules that
set ``STREAMING_KERNELS = True`` also run 'cpp:stream' (on the AVX-512 path, where they
exist): every memory-bound kernel writes with non-temporal stores, which by default only
calls bigger than the caches do. Modules that set ``THREADED_NUMBA = True`` also run
'numba:threads': the Numba backend's worker threads on every call.
A backend that is missing is skipped, unless LAYERFORGE_REQUIRE_BACKENDS names it (CI sets
it), in which case its tests fail: a build that silently lost _C must not look green.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from layerforge import _backend

REQUIRED = {b for b in os.environ.get("LAYERFORGE_REQUIRE_BACKENDS", "").split(",") if b}


def _cpp_variants() -> list[str]:
    c = _backend.load("cpp")
    if c is None or not hasattr(c, "supported_simd_paths"):
        return ["cpp"]
    variants = ["cpp"] + [f"cpp:{p}" for p in c.supported_simd_paths() if p != c.simd_path()]
    if c.simd_path() == "avx512":  # the direct conv kernels run there; also test im2col + GEMM
        variants.append("cpp:im2col")
    return variants


BACKENDS = _cpp_variants() + ["numba"]
# Modules that set THREADED_NUMBA = True also run 'numba:threads': every call in chunks of
# about one image (the poolings: in plane ranges; the elementwise ops: in element ranges),
# spread over 3 worker threads however small (the ops that use them).
NUMBA_THREADS_VARIANT = ["numba:threads"]


def _stream_variants() -> list[str]:
    # The non-temporal stores exist on the AVX-512 path only; elsewhere it would repeat 'cpp'.
    c = _backend.load("cpp")
    return ["cpp:stream"] if c is not None and c.simd_path() == "avx512" else []


STREAM_VARIANTS = _stream_variants()


def _parametrized_by_test(metafunc, name: str) -> bool:
    for mark in metafunc.definition.iter_markers("parametrize"):
        names = mark.args[0]
        if name in ([n.strip() for n in names.split(",")] if isinstance(names, str) else list(names)):
            return True
    return False


def pytest_generate_tests(metafunc):
    # The backend grid, plus 'cpp:stream' for the modules whose kernels have a streaming path.
    if "backend" not in metafunc.fixturenames or _parametrized_by_test(metafunc, "backend"):
        return
    extra = STREAM_VARIANTS if getattr(metafunc.module, "STREAMING_KERNELS", False) else []
    if getattr(metafunc.module, "THREADED_NUMBA", False):
        extra = extra + NUMBA_THREADS_VARIANT
    metafunc.parametrize("backend", BACKENDS + extra, indirect=True)


@pytest.fixture
def backend(request):
    """Backend name to pass as ``backend=``; 'cpp:<path>' forces a lower SIMD path for the test,
    'cpp:im2col' the im2col + GEMM convolution where the direct kernels would run, 'cpp:stream'
    the non-temporal stores on every call, however small."""
    name, _, path = request.param.partition(":")
    if _backend.load(name) is None:
        msg = f"backend {name!r} unavailable: {_backend.unavailable_reason(name)}"
        if name in REQUIRED:
            pytest.fail(msg + " (required by LAYERFORGE_REQUIRE_BACKENDS)")
        pytest.skip(msg)
    if name == "numba" and path == "threads":
        nb = _backend.load("numba")
        if nb._blas_local is None:
            pytest.skip("the Numba backend runs one thread here: NumPy's BLAS has no per-thread setting")
        names = ("_PARALLEL_WORK", "_COL_BYTES", "_POOL_PARALLEL", "_ELTWISE_PARALLEL")
        saved, threads = [getattr(nb, a) for a in names], nb.get_num_threads()
        for a, v in zip(names, (0, 1 << 12, 0, 0)):
            setattr(nb, a, v)
        nb.set_num_threads(3)
        yield name
        for a, v in zip(names, saved):
            setattr(nb, a, v)
        nb.set_num_threads(threads)
        return
    c = _backend.load("cpp")
    if path == "im2col":
        c.set_conv_algorithm("im2col")
        yield name
        c.set_conv_algorithm("auto")
    elif path == "stream":
        c.set_stream_threshold(0)
        yield name
        c.set_stream_threshold(-1)
    elif path:
        old = c.simd_path()
        c.set_simd_path(path)
        yield name
        c.set_simd_path(old)
    else:
        yield name


@pytest.fixture(params=[np.float32, np.float64], ids=["f32", "f64"])
def dtype(request):
    return request.param


def tolerance(dtype) -> tuple[float, float]:
    """(rtol, atol relative to the reference's scale) for a dtype."""
    return (2e-4, 2e-5) if np.dtype(dtype) == np.float32 else (1e-10, 1e-11)


def assert_close(ours, ref, dtype, what: str = "") -> None:
    """|ours - ref| <= atol + rtol*|ref| elementwise, atol scaled by max|ref|; NaN where ref is NaN."""
    ours = np.asarray(ours)
    ref = np.asarray(ref, np.float64)
    assert ours.shape == ref.shape, f"{what}: shape {ours.shape} != reference {ref.shape}"
    assert ours.dtype == np.dtype(dtype), f"{what}: dtype {ours.dtype} != {np.dtype(dtype)}"
    if ref.size == 0:
        return
    nan = np.isnan(ref)
    assert np.array_equal(np.isnan(ours), nan), f"{what}: NaN pattern differs from the reference"
    o, r = ours[~nan].astype(np.float64), ref[~nan]
    if r.size == 0:
        return
    inf = np.isinf(r)
    assert np.array_equal(o[inf], r[inf]), f"{what}: infinities differ from the reference"
    o, r = o[~inf], r[~inf]
    rtol, atol = tolerance(dtype)
    scale = max(1.0, float(np.max(np.abs(r)))) if r.size else 1.0
    err = np.abs(o - r)
    bad = err > atol * scale + rtol * np.abs(r)
    assert not bad.any(), (
        f"{what}: {int(bad.sum())} of {r.size} elements off; max abs error {err.max():.3e} "
        f"(scale {scale:.3e}, rtol {rtol}, atol {atol}*scale)"
    )


def rand(rng: np.random.Generator, shape, dtype) -> np.ndarray:
    return rng.standard_normal(shape).astype(dtype)


GUARD = 0xA5  # the byte around an output placed by `placed`


def placed(shape, dtype, byte_offset: int, boundary: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """An array of `shape` starting byte_offset bytes past a `boundary`-byte boundary, inside a
    byte buffer filled with GUARD: (array, buffer). See `assert_only_written`."""
    nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
    buf = np.full(nbytes + boundary + byte_offset + 128, GUARD, np.uint8)
    start = (-buf.ctypes.data) % boundary + byte_offset
    return buf[start:start + nbytes].view(dtype).reshape(shape), buf


def assert_only_written(arr: np.ndarray, buf: np.ndarray, what: str) -> None:
    """Every byte of buf outside the placed array arr still holds GUARD."""
    start = arr.ctypes.data - buf.ctypes.data
    guard = np.concatenate([buf[:start], buf[start + arr.nbytes:]])
    assert (guard == GUARD).all(), f"{what}: bytes outside the output written"


def threaded_numba():
    """The Numba backend module, or a skip where it is missing or runs one thread only."""
    nb = _backend.load("numba")
    if nb is None:
        pytest.skip(f"numba unavailable: {_backend.unavailable_reason('numba')}")
    if nb._blas_local is None:
        pytest.skip("the Numba backend runs one thread here: NumPy's BLAS has no per-thread setting")
    return nb


def same_bits_on_1_2_3_threads(nb, run) -> list:
    """run() (a sequence of arrays) with 1, 2 and 3 Numba worker threads; asserts that every
    array has the same bits each time, and returns the one-thread results."""
    saved = nb.get_num_threads()
    try:
        results = []
        for t in (1, 2, 3):
            nb.set_num_threads(t)
            results.append(run())
    finally:
        nb.set_num_threads(saved)
    for got in results[1:]:
        for a, r in zip(got, results[0]):
            np.testing.assert_array_equal(a, r)
    return results[0]
