"""pytest plugin for tools/gpu_check.sh: CuPy allocates straight from the driver (no memory
pool), so that compute-sanitizer sees every allocation's true bounds. (PyTorch's caching
allocator is turned off by PYTORCH_NO_CUDA_MEMORY_CACHING=1 in the same script.)"""

from __future__ import annotations

try:
    import cupy
except ImportError:  # no CuPy: nothing to turn off
    cupy = None

if cupy is not None:
    cupy.cuda.set_allocator(None)
    cupy.cuda.set_pinned_memory_allocator(None)
