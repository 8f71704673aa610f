"""Bad input gets a clear ValueError/TypeError naming expected and actual, never a crash.

One test per class of bad input; each checks the error type and that the message names the
offending argument or value.
"""

from __future__ import annotations

import numpy as np
import pytest

from layerforge import _backend, ops

f32 = np.float32
X = np.zeros((2, 3, 8, 8), f32)
W = np.zeros((4, 3, 3, 3), f32)


def test_wrong_ndim():
    with pytest.raises(ValueError, match=r"x must be 4-D.*\(3, 8, 8\)"):
        ops.conv2d(X[0], W)
    with pytest.raises(ValueError, match=r"w must be 4-D"):
        ops.conv2d(X, W[0])
    with pytest.raises(ValueError, match=r"x must be 4-D"):
        ops.max_pool2d(X[0], 2)
    with pytest.raises(ValueError, match=r"w must be 2-D"):
        ops.linear(np.zeros((2, 3), f32), np.zeros(3, f32))
    with pytest.raises(ValueError, match=r"logits must be 2-D"):
        ops.cross_entropy(np.zeros(3, f32), np.zeros(3, int))


def test_channel_mismatch():
    with pytest.raises(ValueError, match=r"x has 3 channels but w expects 5"):
        ops.conv2d(X, np.zeros((4, 5, 3, 3), f32))
    with pytest.raises(ValueError, match=r"x has 3 features .* w expects 4"):
        ops.linear(np.zeros((2, 3), f32), np.zeros((5, 4), f32))


def test_bias_of_wrong_length():
    with pytest.raises(ValueError, match=r"b must have shape \(4,\), got \(5,\)"):
        ops.conv2d(X, W, np.zeros(5, f32))
    with pytest.raises(ValueError, match=r"b must have shape \(5,\), got \(3,\)"):
        ops.linear(np.zeros((2, 4), f32), np.zeros((5, 4), f32), np.zeros(3, f32))


@pytest.mark.parametrize("stride", [0, -1, (1, 0)])
def test_stride_not_positive(stride):
    with pytest.raises(ValueError, match=r"stride must be >= 1"):
        ops.conv2d(X, W, stride=stride)
    with pytest.raises(ValueError, match=r"stride must be >= 1"):
        ops.max_pool2d(X, 2, stride=stride)


def test_negative_padding():
    with pytest.raises(ValueError, match=r"padding must be >= 0"):
        ops.conv2d(X, W, padding=-1)
    with pytest.raises(ValueError, match=r"padding must be >= 0"):
        ops.avg_pool2d(X, 2, padding=(0, -1))
    with pytest.raises(ValueError, match=r"padding must be an int, a pair, 'valid' or 'same'"):
        ops.conv2d(X, W, padding="full")


def test_dilation_below_one():
    with pytest.raises(ValueError, match=r"dilation must be >= 1"):
        ops.conv2d(X, W, dilation=0)


def test_kernel_larger_than_padded_input():
    with pytest.raises(ValueError, match=r"kernel extent \(9, 9\).*larger than the padded input \(8, 8\)"):
        ops.conv2d(X, np.zeros((4, 3, 9, 9), f32))
    with pytest.raises(ValueError, match=r"kernel extent \(9, 3\).*dilation \(4, 1\)"):
        ops.conv2d(X, W, dilation=(4, 1))
    with pytest.raises(ValueError, match=r"kernel_size \(9, 9\) is larger than the padded input \(8, 8\)"):
        ops.max_pool2d(X, 9)


def test_pool_padding_more_than_half_kernel():
    with pytest.raises(ValueError, match=r"padding \(2, 2\) must be at most half the kernel size \(3, 3\)"):
        ops.max_pool2d(X, 3, padding=2)
    with pytest.raises(ValueError, match=r"at most half"):
        ops.avg_pool2d(X, 2, padding=(0, 2))


def test_same_padding_needs_stride_one():
    with pytest.raises(ValueError, match=r"'same' needs stride 1"):
        ops.conv2d(X, W, stride=2, padding="same")


def test_dtype_mismatch_between_arguments():
    with pytest.raises(TypeError, match=r"x is float32 but w is float64"):
        ops.conv2d(X, W.astype(np.float64))
    with pytest.raises(TypeError, match=r"share one dtype"):
        ops.linear(np.zeros((2, 3), f32), np.zeros((4, 3), f32), np.zeros(4, np.float64))
    with pytest.raises(TypeError, match=r"share one dtype"):
        ops.relu_backward(np.zeros(3, np.float64), np.zeros(3, f32))


@pytest.mark.parametrize("dt", [np.int32, np.int64, np.uint8, np.bool_, np.complex64, np.float16])
def test_integer_complex_and_other_dtypes(dt):
    with pytest.raises(TypeError, match=rf"x must be float32 or float64, got dtype {np.dtype(dt)}"):
        ops.conv2d(X.astype(dt), W)
    with pytest.raises(TypeError, match=r"float32 or float64"):
        ops.relu(np.zeros(3, dt))


@pytest.mark.parametrize("bad", [float("inf"), float("nan"), -float("inf")])
def test_non_finite_sizes(bad):
    with pytest.raises(ValueError, match=r"finite integer"):
        ops.conv2d(X, W, stride=bad)
    with pytest.raises(ValueError, match=r"kernel_size must be a finite integer"):
        ops.max_pool2d(X, bad)
    with pytest.raises(ValueError, match=r"padding must be a finite integer"):
        ops.avg_pool2d(X, 2, padding=(0, bad))


@pytest.mark.parametrize("bad", [2.0, "2", True, None, (1, 2, 3)])
def test_sizes_that_are_not_ints(bad):
    with pytest.raises((TypeError, ValueError), match=r"kernel_size"):
        ops.max_pool2d(X, bad)


@pytest.mark.parametrize("labels", [[0, 10], [-1, 0], np.array([0, 2**64 - 1], np.uint64)])
def test_labels_out_of_range(labels, backend):
    logits = np.zeros((2, 10), f32)
    hi = r"18446744073709551615" if isinstance(labels, np.ndarray) else r"-?\d+"  # as given, not wrapped
    msg = rf"labels must lie in \[0, 10\), got values in \[-?\d+, {hi}\]"
    with pytest.raises(ValueError, match=msg):
        ops.cross_entropy(logits, np.array(labels), backend=backend)
    with pytest.raises(ValueError, match=msg):
        ops.cross_entropy_backward(1.0, logits, np.array(labels), backend=backend)


def test_labels_not_integer_or_wrong_length():
    with pytest.raises(TypeError, match=r"labels must be an integer array"):
        ops.cross_entropy(np.zeros((2, 3), f32), np.array([0.0, 1.0]))
    with pytest.raises(ValueError, match=r"labels must have shape \(2,\), got \(3,\)"):
        ops.cross_entropy(np.zeros((2, 3), f32), np.array([0, 1, 2]))


def test_gradient_of_wrong_shape():
    with pytest.raises(ValueError, match=r"dy must have shape \(2, 4, 6, 6\), got \(2, 4, 5, 5\)"):
        ops.conv2d_backward(np.zeros((2, 4, 5, 5), f32), X, W)
    with pytest.raises(ValueError, match=r"dy must have shape"):
        ops.max_pool2d_backward(np.zeros((2, 3, 3, 3), f32), X, 2)
    with pytest.raises(ValueError, match=r"indices must lie in \[0, 64\)"):
        ops.max_pool2d_backward(np.zeros((2, 3, 4, 4), f32), X, 2, indices=np.full((2, 3, 4, 4), 64))


def test_softmax_dim():
    with pytest.raises(ValueError, match=r"dim 2 is out of range for a 2-D input"):
        ops.softmax(np.zeros((2, 3), f32), 2)
    with pytest.raises(TypeError, match=r"dim must be given"):
        ops.softmax(np.zeros((2, 3), f32), None)


def test_out_of_wrong_shape():
    with pytest.raises(ValueError, match=r"out must have shape \(2, 4, 6, 6\) and dtype float32"):
        ops.conv2d(X, W, out=np.zeros((2, 4, 5, 5), f32))


@pytest.mark.parametrize("name", ["relu", "relu_backward"])
def test_elementwise_out_that_does_not_fit(name):
    # The host fast path takes only a writeable C-contiguous out of the input's shape and
    # dtype; every other out reaches the checks that say what is wrong, and is not written.
    x = np.linspace(-1, 1, 12, dtype=f32).reshape(3, 4)
    args = (x, x) if name == "relu_backward" else (x,)
    f = getattr(ops, name)
    readonly = np.full((3, 4), 7, f32)
    readonly.flags.writeable = False
    for out, err, msg in (
        (np.full((4, 3), 7, f32), ValueError, r"out must have shape \(3, 4\) and dtype float32, got \(4, 3\)"),
        (np.full((3, 4), 7, np.float64), ValueError, r"out must have shape \(3, 4\) and dtype float32, got .* float64"),
        (np.full((4, 3), 7, f32).T, ValueError, r"out must be a writeable C-contiguous array"),
        (readonly, ValueError, r"out must be a writeable C-contiguous array"),
        ([7.0] * 12, TypeError, r"out must be a numpy array .*, got list"),
    ):
        with pytest.raises(err, match=msg):
            f(*args, out=out)
        assert (np.asarray(out) == 7).all(), "an out that was refused was written"
    good = np.full((3, 4), np.nan, f32)
    assert f(*args, out=good) is good and not np.isnan(good).any()


class _FakeGpuArray:
    __cuda_array_interface__ = {"shape": (2,), "typestr": "<f4", "data": (0, False), "version": 3}


def test_gpu_array_without_a_cuda_path():
    """A CUDA array on a machine without CuPy, a driver or the CUDA kernels: a clear error, no crash."""
    with pytest.raises((TypeError, RuntimeError), match=r"relu: x: a CUDA array .* needs CuPy|relu: .*CUDA|cuda"):
        ops.relu(_FakeGpuArray())


def test_cpu_backend_refuses_device_arrays_and_cuda_refuses_host_arrays():
    with pytest.raises(ValueError, match=r"backend 'cuda' needs CUDA arrays"):
        ops.relu(np.zeros(2, f32), backend="cuda")


def test_unknown_backend(monkeypatch):
    with pytest.raises(ValueError, match=r"relu: backend: expected one of .* got 'fortran'"):
        ops.relu(np.zeros(2, f32), backend="fortran")
    monkeypatch.setenv("LAYERFORGE_BACKEND", "nope")
    with pytest.raises(ValueError, match=r"LAYERFORGE_BACKEND"):
        ops.relu(np.zeros(2, f32))


def test_backend_from_environment(monkeypatch):
    monkeypatch.setenv("LAYERFORGE_BACKEND", "numba")
    if _backend.load("numba") is None:
        pytest.skip("numba missing")
    assert _backend.default_backend() == "numba"


def test_compiled_kernels_reject_bad_arrays_directly():
    """The C++ bindings re-check what they are given: a direct call must raise, not crash."""
    c = _backend.load("cpp")
    if c is None:
        pytest.skip(f"_C unavailable: {_backend.unavailable_reason('cpp')}")
    y = np.zeros((2, 4, 6, 6), f32)
    with pytest.raises((ValueError, TypeError)):
        c.conv2d_forward(y, X, W.astype(np.float64), None, 1, 1, 0, 0, 1, 1)  # dtype mix
    with pytest.raises((ValueError, TypeError)):
        c.conv2d_forward(y, X, np.zeros((4, 5, 3, 3), f32), None, 1, 1, 0, 0, 1, 1)  # channels
    with pytest.raises((ValueError, TypeError)):
        c.conv2d_forward(y, X[:, :, ::2], W, None, 1, 1, 0, 0, 1, 1)  # non-contiguous
    with pytest.raises((ValueError, TypeError)):
        c.relu_forward(np.zeros(3, f32), np.zeros(4, f32))  # size mismatch
    with pytest.raises((ValueError, TypeError)):
        c.max_pool2d_backward(np.zeros((2, 3, 8, 8), f32), np.zeros((2, 3, 4, 4), f32),
                              np.zeros((2, 3, 4, 4), np.int32), 2, 2, 2, 2, 0, 0)  # int32 indices
