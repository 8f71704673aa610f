"""Array kinds for ops.py: NumPy on the host, and CUDA arrays (CuPy, torch, or any
``__cuda_array_interface__`` / ``__dlpack__`` producer) for the CUDA backend.

ops.py validates and allocates through a small namespace per kind (``NumpyNS``, ``CupyNS``,
``TorchNS``) so one code path serves every kind without copies: outputs are allocated by the
caller's framework (a torch tensor gets torch outputs from torch's caching allocator, anything
else CuPy outputs), and the CUDA kernels run on that framework's *current* stream. Nothing here
synchronises the device. Only ``_backend`` and this module import optional frameworks, lazily.

``cuda_kernels(mod)`` wraps the compiled ``_cuda`` module so it presents the same kernel
interface as ``_C``: each array becomes a ``(ptr, shape, typestr)`` descriptor, and the stream
and device ordinal of the call's arrays are appended.
"""

from __future__ import annotations

import sys
from typing import Any, Callable

import numpy as np


def _module_root(a: Any) -> str:
    return type(a).__module__.split(".")[0]


class NumpyNS:
    """The host kind: NumPy arrays (and anything np.asarray takes)."""

    name = "numpy"
    is_device = False

    @staticmethod
    def asarray(a: Any) -> np.ndarray:
        return a if isinstance(a, np.ndarray) else np.asarray(a)

    @staticmethod
    def dtype(a: np.ndarray) -> np.dtype:
        return a.dtype

    @staticmethod
    def contiguous(a: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(a)

    @staticmethod
    def is_contiguous(a: np.ndarray) -> bool:
        return bool(a.flags.c_contiguous and a.flags.writeable)

    @staticmethod
    def empty(shape: tuple[int, ...], dtype: Any, like: Any) -> np.ndarray:
        return np.empty(shape, dtype)

    @staticmethod
    def zero_(a: np.ndarray) -> None:
        a.fill(0)

    @staticmethod
    def size(a: np.ndarray) -> int:
        return int(a.size)

    @staticmethod
    def astype(a: np.ndarray, dtype: Any) -> np.ndarray:
        return np.ascontiguousarray(a, dtype)

    @staticmethod
    def scalar(value: Any, dtype: Any, like: Any) -> np.ndarray:
        return np.array(value, dtype)

    @staticmethod
    def sum0(a: np.ndarray) -> np.ndarray:
        return a.sum(axis=0)

    @staticmethod
    def device_id(a: Any) -> int:
        return -1


class CupyNS:
    """CuPy arrays; also the kind for foreign CUDA arrays (wrapped without a copy)."""

    name = "cupy"
    is_device = True

    @staticmethod
    def _cp():
        import cupy

        return cupy

    @classmethod
    def asarray(cls, a: Any) -> Any:
        cp = cls._cp()
        if isinstance(a, cp.ndarray):
            return a
        if hasattr(a, "__cuda_array_interface__"):
            return cp.asarray(a)  # zero-copy view of the producer's memory
        return cp.from_dlpack(a)

    @staticmethod
    def dtype(a: Any) -> np.dtype:
        return np.dtype(a.dtype)

    @classmethod
    def contiguous(cls, a: Any) -> Any:
        return cls._cp().ascontiguousarray(a)

    @staticmethod
    def is_contiguous(a: Any) -> bool:
        return bool(a.flags.c_contiguous)

    @classmethod
    def empty(cls, shape: tuple[int, ...], dtype: Any, like: Any) -> Any:
        cp = cls._cp()
        with cp.cuda.Device(like.device.id):
            return cp.empty(shape, dtype)

    @staticmethod
    def zero_(a: Any) -> None:
        a.fill(0)

    @staticmethod
    def size(a: Any) -> int:
        return int(a.size)

    @classmethod
    def astype(cls, a: Any, dtype: Any) -> Any:
        return cls._cp().ascontiguousarray(a.astype(dtype, copy=False))

    @classmethod
    def scalar(cls, value: Any, dtype: Any, like: Any) -> Any:
        cp = cls._cp()
        with cp.cuda.Device(like.device.id):
            return cp.array(value, dtype)

    @staticmethod
    def mean64(a: Any, dtype: Any) -> Any:
        return a.mean(dtype=np.float64).astype(dtype)

    @staticmethod
    def sum0(a: Any) -> Any:
        return a.sum(axis=0)

    @staticmethod
    def device_id(a: Any) -> int:
        return int(a.device.id)

    @staticmethod
    def stream(a: Any) -> int:
        import cupy

        return int(cupy.cuda.get_current_stream().ptr)

    @staticmethod
    def data_ptr(a: Any) -> int:
        return int(a.data.ptr)


class TorchNS:
    """torch CUDA tensors: outputs from torch's allocator, kernels on torch's current stream."""

    name = "torch"
    is_device = True

    @staticmethod
    def asarray(a: Any) -> Any:
        return a

    @staticmethod
    def dtype(a: Any) -> np.dtype:
        import torch

        table = {torch.float32: np.float32, torch.float64: np.float64, torch.int64: np.int64,
                 torch.int32: np.int32, torch.float16: np.float16, torch.bfloat16: None,
                 torch.uint8: np.uint8, torch.int8: np.int8, torch.int16: np.int16, torch.bool: np.bool_,
                 torch.complex64: np.complex64, torch.complex128: np.complex128}
        d = table.get(a.dtype)
        if d is None:
            return np.dtype("V2")  # bfloat16 and friends: no NumPy dtype; refused by the float check
        return np.dtype(d)

    @staticmethod
    def contiguous(a: Any) -> Any:
        return a.contiguous()

    @staticmethod
    def is_contiguous(a: Any) -> bool:
        return bool(a.is_contiguous())

    @staticmethod
    def _torch_dtype(dtype: Any) -> Any:
        import torch

        return {np.dtype(np.float32): torch.float32, np.dtype(np.float64): torch.float64,
                np.dtype(np.int64): torch.int64}[np.dtype(dtype)]

    @classmethod
    def empty(cls, shape: tuple[int, ...], dtype: Any, like: Any) -> Any:
        import torch

        return torch.empty(tuple(shape), dtype=cls._torch_dtype(dtype), device=like.device)

    @staticmethod
    def zero_(a: Any) -> None:
        a.zero_()

    @staticmethod
    def size(a: Any) -> int:
        return int(a.numel())

    @classmethod
    def astype(cls, a: Any, dtype: Any) -> Any:
        return a.to(cls._torch_dtype(dtype)).contiguous()

    @classmethod
    def scalar(cls, value: Any, dtype: Any, like: Any) -> Any:
        import torch

        return torch.tensor(value, dtype=cls._torch_dtype(dtype), device=like.device)

    @classmethod
    def mean64(cls, a: Any, dtype: Any) -> Any:
        import torch

        return a.to(torch.float64).mean().to(cls._torch_dtype(dtype))

    @staticmethod
    def sum0(a: Any) -> Any:
        return a.sum(dim=0)

    @staticmethod
    def device_id(a: Any) -> int:
        return int(a.device.index if a.device.index is not None else 0)

    @staticmethod
    def stream(a: Any) -> int:
        import torch

        return int(torch.cuda.current_stream(a.device).cuda_stream)

    @staticmethod
    def data_ptr(a: Any) -> int:
        return int(a.data_ptr())


def array_module(a: Any) -> Any:
    """NumPy, or CuPy for a CuPy array: the module the layer API computes glue with
    (Sequential(device='cuda') keeps its weights and activations as CuPy arrays)."""
    if _module_root(a) == "cupy":
        import cupy

        return cupy
    return np


def _is_torch_cuda(a: Any) -> bool:
    return _module_root(a) == "torch" and getattr(a, "is_cuda", False)


def _dlpack_on_cuda(a: Any) -> bool:
    dev = getattr(a, "__dlpack_device__", None)
    if dev is None or not hasattr(a, "__dlpack__"):
        return False
    try:
        return int(dev()[0]) in (2, 3, 13)  # kDLCUDA, kDLCUDAHost, kDLCUDAManaged
    except Exception:
        return False


def namespace(a: Any) -> type:
    """The kind of one array argument: NumpyNS, CupyNS or TorchNS."""
    if isinstance(a, np.ndarray):
        return NumpyNS
    if _is_torch_cuda(a):
        return TorchNS
    root = _module_root(a)
    if root == "cupy" or hasattr(a, "__cuda_array_interface__") or _dlpack_on_cuda(a):
        if "cupy" not in sys.modules:
            try:
                import cupy  # noqa: F401
            except ImportError as exc:
                raise TypeError(
                    f"a CUDA array ({type(a).__module__}.{type(a).__name__}) needs CuPy to be wrapped "
                    "without a copy: pip install 'layerforge[cuda]'"
                ) from exc
        return CupyNS
    return NumpyNS


_TYPESTR = {np.dtype(np.float32): "<f4", np.dtype(np.float64): "<f8", np.dtype(np.int64): "<i8"}


def cuda_kernels(mod: Any) -> Any:
    """The ``_cuda`` module behind the ``_C`` kernel interface (see _backend's docstring)."""
    return _CudaKernels(mod)


class _CudaKernels:
    def __init__(self, mod: Any) -> None:
        self._mod = mod

    def __getattr__(self, name: str) -> Callable[..., None]:
        fn = getattr(self._mod, name)

        def call(*args: Any) -> None:
            arrays = [a for a in args if a is not None and not isinstance(a, (bool, int, float))]
            ns = namespace(arrays[0])
            dev = ns.device_id(arrays[0])
            descs = [self._descriptor(a, ns, dev, name) if a is not None and not isinstance(a, (bool, int, float)) else a
                     for a in args]
            fn(*descs, ns.stream(arrays[0]), dev)

        call.__name__ = name
        return call

    @staticmethod
    def _descriptor(a: Any, ns: type, dev: int, fname: str) -> tuple[int, tuple[int, ...], str]:
        if namespace(a) is not ns or ns.device_id(a) != dev:
            raise ValueError(f"{fname}: all arrays of one call must be of one kind on one device")
        return ns.data_ptr(a), tuple(int(d) for d in a.shape), _TYPESTR[ns.dtype(a)]
