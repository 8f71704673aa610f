"""The CUDA backend through layerforge.ops and the layer API: CuPy and torch arrays in, the
caller's array type out, on the caller's stream; mixed kinds refused; 64-bit indexing; the
documents' CNN on the GPU. Skipped (with the reason) without a GPU, _cuda kernels or CuPy."""

from __future__ import annotations

import numpy as np
import pytest
from cases import CONV, POOL
from conftest import assert_close

from layerforge import _backend, _reference as ref, ops

pytestmark = pytest.mark.gpu


def _need_gpu():
    cu = _backend.load("cuda")
    if cu is None:
        pytest.skip(f"layerforge._cuda unavailable: {_backend.unavailable_reason('cuda')}")
    if not hasattr(cu, "has_kernels"):
        pytest.skip("this _cuda build has no op kernels")
    if cu.device_count() == 0:
        pytest.skip(f"no CUDA GPU here ({cu.status()['error']})")
    return cu


@pytest.fixture
def cp():
    _need_gpu()
    return pytest.importorskip("cupy")


@pytest.fixture
def torch_cuda():
    _need_gpu()
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("torch has no CUDA here")
    return torch


@pytest.mark.parametrize("c", CONV, ids=[str(c) for c in CONV])
def test_conv2d_cupy_matches_oracle(cp, dtype, c):
    n, ci, h, w, k, r, s, stride, padding, dilation, bias = c
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, ci, h, w)).astype(dtype)
    wt = rng.standard_normal((k, ci, r, s)).astype(dtype)
    b = rng.standard_normal(k).astype(dtype) if bias else None
    kw = dict(stride=stride, padding=padding, dilation=dilation)
    y = ops.conv2d(cp.asarray(x), cp.asarray(wt), None if b is None else cp.asarray(b), **kw)
    assert isinstance(y, cp.ndarray)
    assert_close(y.get(), ref.conv2d(x, wt, b, **kw), dtype, "y")
    dy = rng.standard_normal(y.shape).astype(dtype)
    got = ops.conv2d_backward(cp.asarray(dy), cp.asarray(x), cp.asarray(wt), None if b is None else cp.asarray(b), **kw)
    for g, r_ in zip(got, ref.conv2d_backward(dy, x, wt, b, **kw)):
        if r_ is not None:
            assert_close(g.get(), r_, dtype, "grad")


@pytest.mark.parametrize("c", POOL, ids=[str(c) for c in POOL])
def test_pools_cupy_match_oracle(cp, dtype, c):
    n, ch, h, w, k, s, p = c
    x = np.random.default_rng(0).integers(-2, 3, (n, ch, h, w)).astype(dtype)
    if x.size:
        x.reshape(-1)[::7] = np.nan
    kw = dict(kernel_size=k, stride=s, padding=p)
    y, idx = ops.max_pool2d(cp.asarray(x), **kw, return_indices=True)
    ry, ridx = ref.max_pool2d_with_indices(x, **kw)
    assert_close(y.get(), ry, dtype, "y")
    np.testing.assert_array_equal(idx.get(), ridx)
    dy = np.ones(y.shape, dtype)
    assert_close(ops.max_pool2d_backward(cp.asarray(dy), cp.asarray(x), **kw).get(), ref.max_pool2d_backward(dy, x, **kw), dtype, "dx")


def test_torch_in_torch_out_on_a_side_stream(torch_cuda):
    torch = torch_cuda
    x = torch.randn(16, 8, 20, 20, device="cuda")
    w = torch.randn(12, 8, 3, 3, device="cuda")
    want = torch.nn.functional.conv2d(x, w, padding=1)
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        outs = [ops.conv2d(x, w, padding=1) for _ in range(50)]  # no sync inside the loop
    s.synchronize()
    for y in outs:
        assert isinstance(y, torch.Tensor) and y.is_cuda
        torch.testing.assert_close(y, want, rtol=1e-4, atol=1e-4)


def test_cupy_side_stream_many_runs(cp):
    rng = np.random.default_rng(1)
    z = rng.standard_normal((64, 1000)).astype(np.float32)
    want = ref.softmax(z, 1)
    stream = cp.cuda.Stream(non_blocking=True)
    with stream:
        zd = cp.asarray(z)
        outs = [ops.softmax(zd, 1) for _ in range(100)]
    stream.synchronize()
    for y in outs:
        assert_close(y.get(), want, np.float32)


class _DLPackOnly:
    """A producer with only the DLPack protocol (as JAX GPU arrays are)."""

    def __init__(self, t):
        self._t = t

    def __dlpack__(self, **kw):
        return self._t.__dlpack__(**kw)

    def __dlpack_device__(self):
        return self._t.__dlpack_device__()


def test_dlpack_and_cuda_array_interface_inputs(cp, torch_cuda):
    torch = torch_cuda
    t = torch.randn(4, 5, device="cuda")
    y = ops.relu(t)                      # torch in, torch out
    assert isinstance(y, torch.Tensor) and y.is_cuda
    c = ops.relu(cp.asarray(t))          # __cuda_array_interface__ view of torch memory: CuPy out
    assert isinstance(c, cp.ndarray)
    d = ops.relu(_DLPackOnly(t))         # DLPack-only producer: CuPy out
    assert isinstance(d, cp.ndarray)
    torch.cuda.synchronize()
    np.testing.assert_array_equal(c.get(), y.cpu().numpy())
    np.testing.assert_array_equal(d.get(), y.cpu().numpy())


def test_mixed_kinds_and_devices_are_refused(cp, torch_cuda):
    torch = torch_cuda
    with pytest.raises(TypeError, match="one kind on one device"):
        ops.linear(cp.ones((2, 3), cp.float32), torch.ones(4, 3, device="cuda"))
    with pytest.raises(TypeError, match="one kind on one device"):
        ops.linear(cp.ones((2, 3), cp.float32), np.ones((4, 3), np.float32))
    with pytest.raises(ValueError, match="runs on the CPU but the arrays are on a CUDA device"):
        ops.relu(cp.ones(3, cp.float32), backend="cpp")


def test_weight_gradients_are_deterministic(cp):
    rng = np.random.default_rng(2)
    x = cp.asarray(rng.standard_normal((64, 32, 13, 13)).astype(np.float32))
    w = cp.asarray(rng.standard_normal((64, 32, 3, 3)).astype(np.float32))
    dy = cp.asarray(rng.standard_normal((64, 64, 11, 11)).astype(np.float32))
    first = [g.get() for g in ops.conv2d_backward(dy, x, w, cp.zeros(64, cp.float32))]
    for _ in range(5):
        again = [g.get() for g in ops.conv2d_backward(dy, x, w, cp.zeros(64, cp.float32))]
        for a, b in zip(first, again):
            np.testing.assert_array_equal(a, b)


def test_index_math_above_2_pow_31(cp):
    n = 2**31 + 4097
    free, _ = cp.cuda.runtime.memGetInfo()
    if free < 3 * 4 * n + (1 << 30):
        pytest.skip(f"needs about {3 * 4 * n / 2**30:.1f} GiB of free GPU memory, {free / 2**30:.1f} free")
    x = cp.full(n, -1.0, cp.float32)
    x[-3:] = cp.asarray([1.0, 2.0, 3.0], cp.float32)
    y = ops.relu(x)
    assert float(y[-1].get()) == 3.0 and float(y[-4].get()) == 0.0 and float(y[2**31 + 5].get()) == 0.0
    dx = ops.relu_backward(cp.ones_like(x), x)
    assert float(dx[-2].get()) == 1.0 and float(dx[2**31].get()) == 0.0


def test_documents_cnn_trains_on_the_gpu_like_on_the_cpu(cp):
    from layerforge.datasets import fashion_mnist
    from layerforge.layers import Conv2D, Dense, Flatten, MaxPooling2D
    from layerforge.models import Sequential
    from layerforge.utils import set_random_seed

    (x, y), (xt, yt) = fashion_mnist.load_sample()
    x, xt = (x / 255.0).reshape(-1, 28, 28, 1).astype(np.float32), (xt / 255.0).reshape(-1, 28, 28, 1).astype(np.float32)
    accs = []
    for device in ("cpu", "cuda"):
        set_random_seed(0)
        m = Sequential(device=device)
        m.add(Conv2D(32, (3, 3), activation="relu", input_shape=(28, 28, 1)))
        m.add(MaxPooling2D((2, 2)))
        m.add(Conv2D(64, (3, 3), activation="relu"))
        m.add(MaxPooling2D((2, 2)))
        m.add(Flatten())
        m.add(Dense(64, activation="relu"))
        m.add(Dense(10, activation="softmax"))
        m.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        m.fit(x, y, epochs=2, batch_size=32, shuffle=False, verbose=0)
        accs.append(m.evaluate(xt, yt, verbose=0)[1])
    assert accs[1] > 0.65 and abs(accs[0] - accs[1]) < 0.03, accs


def test_torch_custom_ops_on_cuda_tensors(torch_cuda):
    """Issue 5's CUDA path: the layerforge:: custom ops on CUDA tensors, forward and autograd."""
    torch = torch_cuda
    import layerforge.interop.torch as lft

    x = torch.randn(4, 3, 12, 12, device="cuda", dtype=torch.float64, requires_grad=True)
    w = torch.randn(5, 3, 3, 3, device="cuda", dtype=torch.float64, requires_grad=True)
    b = torch.randn(5, device="cuda", dtype=torch.float64, requires_grad=True)
    y = lft.max_pool2d(lft.relu(lft.conv2d(x, w, b, padding=1)), 2)
    want = torch.nn.functional.max_pool2d(torch.relu(torch.nn.functional.conv2d(x, w, b, padding=1)), 2)
    assert y.is_cuda
    torch.testing.assert_close(y, want)
    g = torch.randn_like(y)
    got = torch.autograd.grad(y, (x, w, b), g)
    ref_ = torch.autograd.grad(want, (x, w, b), g)
    for a, r_ in zip(got, ref_):
        torch.testing.assert_close(a, r_)
    assert torch.autograd.gradcheck(lambda t: lft.linear(t, w.reshape(5, -1)[:, :12]), (x.reshape(-1, 12)[:6].detach().requires_grad_(),))
