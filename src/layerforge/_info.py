"""What this installation holds: version, compiled backends, CPU features, threads, GPUs."""

from __future__ import annotations

import os
import platform
import sys
from typing import Any, TextIO

from . import _backend


def get_num_threads() -> int:
    """Threads the C++ kernels use (OpenMP), or os.cpu_count() when _C is not built."""
    c = _backend.load("cpp")
    return int(c.get_num_threads()) if c is not None else (os.cpu_count() or 1)


def set_num_threads(n: int) -> None:
    """Threads for the C++ (OpenMP) and the Numba kernels."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"set_num_threads: expected an int >= 1, got {n!r}")
    c = _backend.load("cpp")
    if c is not None:
        c.set_num_threads(n)
    nb = sys.modules.get("layerforge._numba")
    if nb is not None:
        nb.set_num_threads(n)
    else:
        _backend.numba_threads = n  # read when the Numba backend loads


# glibc mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
STEADY_MMAP_BYTES = 32 << 20  # glibc's largest heap-served block (DEFAULT_MMAP_THRESHOLD_MAX, 64-bit)


def steady_allocator() -> bool:
    """Keep freed memory in this process (glibc only): blocks up to 32 MiB come from the heap
    and the heap is never trimmed, so an op that allocates its output on every call reuses the
    memory freed by the calls before it instead of having fresh zeroed pages mapped in.

    Left to itself, glibc hands blocks above a moving threshold to mmap and returns freed memory
    at the top of a heap to the system, and where a block lands depends on what the process
    allocated before. On our 2-core machine (session 15) a loop of conv -> relu -> max pool twice
    through ``ops`` at batch 32, each call allocating its output, took 2.61 ms and 1,321 page
    faults a pass with glibc's defaults and 0.93 ms and none after this call (batch 256: 16.4
    against 9.6 ms). PyTorch's CPU ops pay the same: its conv1 forward ran in 0.17 ms in one
    process state and 1.9-2.2 ms in another (session 14). The price is memory: up to the
    process's peak heap stays mapped. The layer API's training reuses its buffers and does not
    need it; ``layerforge bench`` and the benchmark scripts call it so that neither library's
    timings include page faults. Passing ``out=`` to the ops avoids the allocation altogether.
    Returns whether the settings took (False off glibc: nothing changes there).
    """
    import ctypes

    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, STEADY_MMAP_BYTES)) and bool(mallopt(_M_TRIM_THRESHOLD, 1 << 30))


def collect() -> dict[str, Any]:
    """The facts info() prints, as a dict."""
    from . import __version__

    d: dict[str, Any] = {"version": __version__, "python": sys.version.split()[0], "platform": platform.platform()}
    c = _backend.load("cpp")
    if c is not None:
        d["cpp"] = {"built": True, **dict(c.build_info()), "simd_path": c.simd_path(),
                    "cpu_features": list(c.cpu_features()), "threads": int(c.get_num_threads())}
    else:
        d["cpp"] = {"built": False, "reason": _backend.unavailable_reason("cpp")}
    nb = _backend.load("numba")
    if nb is not None:
        import numba

        d["numba"] = {"available": True, "version": numba.__version__, "threads": nb.get_num_threads()}
    else:
        d["numba"] = {"available": False, "reason": _backend.unavailable_reason("numba")}
    cu = _backend.load("cuda")
    if cu is not None:
        d["cuda"] = {"built": True, "has_kernels": hasattr(cu, "has_kernels"), **dict(cu.build_info()), **dict(cu.status())}
    else:
        d["cuda"] = {"built": False, "reason": _backend.unavailable_reason("cuda")}
    try:
        d["default_backend"] = _backend.default_backend()
    except RuntimeError as exc:
        d["default_backend"] = f"none ({exc})"
    return d


def info(file: TextIO | None = None) -> dict[str, Any]:
    """Print what this installation holds and return it as a dict."""
    d = collect()
    out = file or sys.stdout
    w = lambda s="": print(s, file=out)  # noqa: E731
    w(f"layerforge {d['version']}  (Python {d['python']}, {d['platform']})")
    c = d["cpp"]
    if c["built"]:
        w(f"  cpp    : built ({c.get('compiler', '?')}, OpenMP {c.get('openmp', '?')}), "
          f"SIMD path {c['simd_path']}, {c['threads']} threads")
        w(f"           CPU features used: {', '.join(c['cpu_features']) or 'none (scalar)'}")
    else:
        w(f"  cpp    : not available ({c['reason']})")
    n = d["numba"]
    w(f"  numba  : {'numba ' + n['version'] + ', ' + str(n['threads']) + ' threads' if n['available'] else 'not available (' + str(n['reason']) + ')'}")
    cu = d["cuda"]
    if cu["built"]:
        kernels = "op kernels built" if cu.get("has_kernels") else "no op kernels"
        w(f"  cuda   : built with CUDA {cu['cuda_compiler_version']} for {cu['architectures']} ({kernels})")
        if cu["devices"]:
            for dev in cu["devices"]:
                cc = ".".join(map(str, dev["compute_capability"]))
                w(f"           GPU {dev['index']}: {dev['name']} (sm_{cc.replace('.', '')}, {dev['total_memory'] / 2**30:.1f} GiB)")
        else:
            w(f"           GPUs seen: 0 ({cu['error'] or 'no device'})")
    else:
        w(f"  cuda   : not built ({cu['reason']})")
    w(f"  default backend: {d['default_backend']}")
    return d
