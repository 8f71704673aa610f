"""layerforge.interop.torch: the custom ops (opcheck, gradcheck), the functional API against
torch.nn.functional, lft.nn as a drop-in for torch.nn (training step by step, torch.compile
without graph breaks), and the README/docs code blocks for PyTorch and for CuPy/NumPy.

Skipped when torch is not installed. CUDA tensors are not exercised (no GPU in CI).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
from conftest import assert_close

from layerforge import _reference as ref

torch = pytest.importorskip("torch")
lft = pytest.importorskip("layerforge.interop.torch")
F = torch.nn.functional
pytestmark = [
    pytest.mark.torch,
    # raised inside torch by inductor's own imports (torch.utils.mkldnn), not by this code
    pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning"),
]

ROOT = Path(__file__).resolve().parents[1]
DOC_HEADING = "## Using layerforge from"
FLOATS = [torch.float32, torch.float64]


# ---------------------------------------------------------------------------- the docs' code blocks

def doc_sections() -> dict[tuple[str, str], list[str]]:
    """{(file, heading): python blocks} for every '## Using layerforge from ...' section of
    docs/interop.md, and of README.md once the sections are pasted there."""
    found: dict[tuple[str, str], list[str]] = {}
    for name in ("docs/interop.md", "README.md"):
        path = ROOT / name
        if not path.exists():
            continue
        heading, fence, block = None, None, []
        for line in path.read_text(encoding="utf-8").splitlines():
            if fence is None:
                if line.startswith("## "):
                    heading = line.strip() if line.startswith(DOC_HEADING) else None
                    if heading:
                        found[(name, heading)] = []
                elif line.startswith("```"):
                    fence, block = line[3:].strip(), []
            elif line.startswith("```"):
                if heading and fence == "python":
                    found[(name, heading)].append("\n".join(block))
                fence = None
            else:
                block.append(line)
    return found


def _doc_params(framework: str) -> list[Any]:
    return [pytest.param(code, id=f"{file}:{framework}")
            for (file, heading), blocks in doc_sections().items() if heading.endswith(framework)
            for code in blocks]


def test_docs_sections_have_one_python_block_each():
    sections = doc_sections()
    headings = {h for (f, h) in sections if f == "docs/interop.md"}
    assert headings == {f"{DOC_HEADING} PyTorch", f"{DOC_HEADING} JAX", f"{DOC_HEADING} CuPy and NumPy"}
    for (file, heading), blocks in sections.items():
        assert len(blocks) == 1, f"{file} '{heading}': {len(blocks)} python blocks, expected exactly one"


@pytest.mark.parametrize("code", _doc_params("PyTorch") + _doc_params("CuPy and NumPy"))
def test_docs_code_runs(code):
    exec(compile(code, "<docs example>", "exec"), {"__name__": "__docs_example__"})


# ---------------------------------------------------------------------------- package hygiene

def test_interop_package_imports_no_framework():
    code = ("import sys, layerforge.interop as i; i.frameworks(); "
            "bad = [m for m in ('torch', 'jax', 'cupy') if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr


def test_nn_is_a_drop_in_namespace():
    import layerforge.interop.torch.nn as lnn
    from layerforge.interop.torch.nn import Conv2d

    assert lnn is lft.nn and Conv2d is lft.Conv2d
    assert lft.nn.Module is torch.nn.Module and lft.nn.Sequential is torch.nn.Sequential
    assert lft.nn.Flatten is torch.nn.Flatten
    assert lft.nn.functional.conv2d is lft.conv2d and lft.nn.functional.dropout is F.dropout
    assert isinstance(lft.nn.Conv2d(1, 2, 3), torch.nn.Conv2d)
    assert isinstance(lft.nn.RNN(3, 4), torch.nn.RNN) and "RNN" in lft.nn.__all__
    for name in ("conv2d", "conv2d_backward", "max_pool2d", "cross_entropy_backward", "rnn", "rnn_backward"):
        assert hasattr(torch.ops.layerforge, name)


# ---------------------------------------------------------------------------- opcheck on every op

def _t(rng: np.random.Generator, shape: tuple[int, ...], dtype: Any, rg: bool = False) -> Any:
    return torch.from_numpy(rng.standard_normal(shape)).to(dtype).requires_grad_(rg)


def _samples(dtype: Any, rg: bool) -> list[tuple[str, tuple[Any, ...]]]:
    """(op name, positional args) covering each op's schema: bias or not, stride, padding,
    dilation, 'same' with an even kernel, overlapping pools, leading batch dims, both reductions."""
    rng = np.random.default_rng(0)
    t = lambda *s: _t(rng, s, dtype, rg)  # noqa: E731
    g = lambda *s: _t(rng, s, dtype)  # noqa: E731  (upstream gradients never require grad)
    x = t(2, 3, 7, 6)
    idx = lft.OPS["max_pool2d"](x.detach(), (3, 3), (2, 2), (1, 1))[1]
    target = torch.tensor([0, 4, 2, 1, 4, 3])
    return [
        ("conv2d", (x, t(4, 3, 3, 3), t(4), (1, 1), (1, 0), (1, 1), False)),
        ("conv2d", (x, t(4, 3, 2, 3), None, (2, 1), (0, 1), (1, 2), False)),
        ("conv2d", (x, t(4, 3, 4, 4), t(4), (1, 1), (0, 0), (1, 1), True)),
        ("conv2d_backward", (g(2, 4, 7, 4), x, t(4, 3, 3, 3), t(4), (1, 1), (1, 0), (1, 1), False)),
        ("conv2d_backward", (g(2, 4, 7, 6), x, t(4, 3, 4, 4), None, (1, 1), (0, 0), (1, 1), True)),
        ("max_pool2d", (x, (3, 3), (2, 2), (1, 1))),
        ("max_pool2d", (x, (2, 2), (2, 2), (0, 0))),
        ("max_pool2d_backward", (g(2, 3, 4, 3), x, idx, (3, 3), (2, 2), (1, 1))),
        ("avg_pool2d", (x, (3, 2), (2, 1), (1, 1), False)),
        ("avg_pool2d_backward", (g(2, 3, 4, 7), x, (3, 2), (2, 1), (1, 1), True)),
        ("linear", (t(3, 4, 5), t(6, 5), t(6))),
        ("linear", (t(3, 5), t(6, 5), None)),
        ("linear_backward", (g(3, 4, 6), t(3, 4, 5), t(6, 5), t(6))),
        ("softmax", (t(3, 5, 7), 1)),
        ("softmax_backward", (g(3, 5, 7), t(3, 5, 7), -1)),
        ("log_softmax", (t(4, 9), -1)),
        ("log_softmax_backward", (g(4, 9), t(4, 9), 0)),
        ("relu", (t(3, 4, 5),)),
        ("relu_backward", (g(3, 4, 5), t(3, 4, 5))),
        ("sigmoid", (t(3, 4, 5),)),
        ("sigmoid_backward", (g(3, 4, 5), t(3, 4, 5))),
        ("tanh", (t(7,),)),
        ("tanh_backward", (g(7,), t(7,))),
        ("cross_entropy", (t(6, 5), target, "mean")),
        ("cross_entropy", (t(6, 5), target, "sum")),
        ("cross_entropy_backward", (g(), t(6, 5), target, "sum")),
        ("rnn", (t(2, 5, 3), t(4, 3), t(4, 4), t(4), t(2, 4), "tanh")),
        ("rnn", (t(3, 4, 2), t(5, 2), t(5, 5), None, None, "relu")),
        ("rnn", (t(1, 6, 3), t(2, 3), t(2, 2), t(2), None, "sigmoid")),
        # rnn_backward has no double backward (its autograd formula raises), so its inputs never
        # require grad here; hs is the forward's output, as autograd passes it.
        *[("rnn_backward", (g(*a[0].shape[:2], 4), *a, lft.OPS["rnn"](*a, act), act, need_dx))
          for a, act, need_dx in (((g(2, 5, 3), g(4, 3), g(4, 4), g(4), g(2, 4)), "tanh", True),
                                  ((g(3, 4, 3), g(4, 3), g(4, 4), None, None), "relu", False))],
    ]


def test_every_op_is_sampled():
    assert {name for name, _ in _samples(torch.float32, False)} == set(lft.OPS)


@pytest.mark.parametrize("rg", [False, True], ids=["plain", "requires_grad"])
@pytest.mark.parametrize("dtype", FLOATS, ids=["f32", "f64"])
def test_opcheck(dtype, rg):
    for name, args in _samples(dtype, rg):
        result = torch.library.opcheck(lft.OPS[name], args)
        assert all(v == "SUCCESS" for v in result.values()), (name, result)


# ---------------------------------------------------------------------------- gradcheck (float64)

def _gradcheck_cases() -> list[Any]:
    """(id, function of float64 leaves, leaves) for every differentiable op of the functional API."""
    rng = np.random.default_rng(1)
    t = lambda *s: _t(rng, s, torch.float64, True)  # noqa: E731
    target = torch.tensor([1, 0, 3, 3, 2])
    return [
        pytest.param(lambda x, w, b: lft.conv2d(x, w, b, stride=(2, 1), padding=(1, 2), dilation=(1, 2)),
                     (t(2, 2, 6, 5), t(3, 2, 3, 2), t(3)), id="conv2d"),
        pytest.param(lambda x, w: lft.conv2d(x, w, padding="same"), (t(1, 2, 5, 5), t(2, 2, 4, 4)), id="conv2d_same"),
        pytest.param(lambda x: lft.max_pool2d(x, 3, 2, 1), (t(2, 2, 6, 7),), id="max_pool2d"),
        pytest.param(lambda x: lft.avg_pool2d(x, (2, 3), 1, (1, 1), count_include_pad=False), (t(2, 2, 5, 6),),
                     id="avg_pool2d"),
        pytest.param(lambda x, w, b: lft.linear(x, w, b), (t(2, 3, 5), t(4, 5), t(4)), id="linear"),
        pytest.param(lambda x: lft.softmax(x, 1), (t(3, 4, 2),), id="softmax"),
        pytest.param(lambda x: lft.log_softmax(x, -1), (t(3, 6),), id="log_softmax"),
        pytest.param(lft.relu, (t(4, 5),), id="relu"),
        pytest.param(lft.sigmoid, (t(4, 5),), id="sigmoid"),
        pytest.param(lft.tanh, (t(4, 5),), id="tanh"),
        pytest.param(lambda z: lft.cross_entropy(z, target), (t(5, 4),), id="cross_entropy_mean"),
        pytest.param(lambda z: lft.cross_entropy(z, target, reduction="sum"), (t(5, 4),), id="cross_entropy_sum"),
    ]


@pytest.mark.parametrize("fn, leaves", _gradcheck_cases())
def test_gradcheck(fn: Callable[..., Any], leaves: tuple[Any, ...]):
    assert torch.autograd.gradcheck(fn, leaves)


@pytest.mark.parametrize("fn, leaves", _gradcheck_cases())
def test_gradgradcheck(fn: Callable[..., Any], leaves: tuple[Any, ...]):
    """The *_backward ops are differentiable too: double backward matches finite differences."""
    assert torch.autograd.gradgradcheck(fn, leaves)


# ---------------------------------------------------------------------------- rnn: the op against the oracle, gradcheck

_RNN_CASES = [  # (N, T, I, H, bias, h0, activation)
    pytest.param(3, 5, 4, 6, True, True, "tanh", id="tanh_bias_h0"),
    pytest.param(2, 7, 3, 5, False, False, "relu", id="relu_nobias_noh0"),
    pytest.param(1, 4, 2, 3, True, False, "sigmoid", id="sigmoid_bias"),
    pytest.param(4, 3, 5, 2, False, True, "linear", id="linear_h0"),
]


def _rnn_leaves(rng: np.random.Generator, n: int, t: int, i: int, h: int, bias: bool, h0: bool, dtype: Any,
                rg: bool = False) -> tuple[Any, ...]:
    """(x, w_xh, w_hh, b or None, h0 or None); w_hh scaled so a relu or linear RNN stays O(1)."""
    x, w_xh, w_hh = _t(rng, (n, t, i), dtype), _t(rng, (h, i), dtype), (0.4 * _t(rng, (h, h), dtype))
    b = _t(rng, (h,), dtype) if bias else None
    state = _t(rng, (n, h), dtype) if h0 else None
    return tuple(a if a is None else a.detach().requires_grad_(rg) for a in (x, w_xh, w_hh, b, state))


@pytest.mark.parametrize("dtype", FLOATS, ids=["f32", "f64"])
@pytest.mark.parametrize("n, t, i, h, bias, h0, activation", _RNN_CASES)
def test_rnn_matches_oracle(n, t, i, h, bias, h0, activation, dtype):
    """lft.rnn's forward and autograd gradients against _reference.rnn / rnn_backward (float64)."""
    rng = np.random.default_rng(7)
    leaves = _rnn_leaves(rng, n, t, i, h, bias, h0, dtype, rg=True)
    hs = lft.rnn(*leaves, activation=activation)
    npy = [None if a is None else a.detach().numpy() for a in leaves]
    np_dtype = np.float32 if dtype == torch.float32 else np.float64
    assert_close(hs.detach().numpy(), ref.rnn(*npy, activation), np_dtype, "hs")
    dhs = _t(rng, (n, t, h), dtype)
    present = [a for a in leaves if a is not None]
    grads = torch.autograd.grad(hs, present, dhs)
    expected = [e for e in ref.rnn_backward(dhs.numpy(), *npy, activation) if e is not None]
    assert len(grads) == len(expected) == len(present)
    for k, (g, e) in enumerate(zip(grads, expected)):
        assert_close(g.numpy(), e, np_dtype, f"grad {k}")


@pytest.mark.parametrize("n, t, i, h, bias, h0, activation", _RNN_CASES)
def test_rnn_gradcheck(n, t, i, h, bias, h0, activation):
    leaves = _rnn_leaves(np.random.default_rng(8), n, t, i, h, bias, h0, torch.float64, rg=True)
    present = tuple(a for a in leaves if a is not None)

    def fn(*args):
        it = iter(args)
        return lft.rnn(*[None if a is None else next(it) for a in leaves], activation=activation)

    assert torch.autograd.gradcheck(fn, present)


def test_rnn_gradcheck_through_the_module():
    """lft.nn.RNN in float64, sequence first, with hx: d/dinput and d/dhx by finite differences,
    and both biases get the kernel's bias gradient."""
    torch.manual_seed(0)
    rnn = lft.nn.RNN(3, 4, dtype=torch.float64)
    x = torch.randn(5, 2, 3, dtype=torch.float64, requires_grad=True)
    hx = torch.randn(1, 2, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, hx: rnn(x, hx), (x, hx))
    out, h_n = rnn(x, hx)
    (out.sum() + h_n.sum()).backward()
    assert rnn.bias_ih_l0.grad is not None and torch.equal(rnn.bias_ih_l0.grad, rnn.bias_hh_l0.grad)


def test_rnn_double_backward_raises():
    leaves = _rnn_leaves(np.random.default_rng(9), 2, 3, 2, 3, True, True, torch.float64, rg=True)
    hs = lft.rnn(*leaves)
    (dw,) = torch.autograd.grad(hs.square().sum(), leaves[1], create_graph=True)
    with pytest.raises(RuntimeError, match="double backward"):
        dw.sum().backward()
    with pytest.raises(RuntimeError, match="double backward"):
        torch.autograd.gradgradcheck(lambda *a: lft.rnn(*a), leaves)


# ---------------------------------------------------------------------------- against torch.nn.functional

def _pairs() -> list[Any]:
    """(id, lft call, torch call, input shapes) on the same arguments."""
    target = torch.tensor([2, 0, 9, 4])
    return [
        pytest.param(lambda x, w, b: lft.conv2d(x, w, b, 1, 1), lambda x, w, b: F.conv2d(x, w, b, 1, 1),
                     [(4, 3, 9, 9), (5, 3, 3, 3), (5,)], id="conv2d"),
        pytest.param(lambda x, w: lft.conv2d(x, w, padding="same", dilation=2),
                     lambda x, w: F.conv2d(x, w, padding="same", dilation=2), [(2, 3, 8, 7), (4, 3, 2, 4)], id="conv2d_same"),
        pytest.param(lambda x, w: lft.conv2d(x, w, stride=2), lambda x, w: F.conv2d(x, w, stride=2),
                     [(3, 8, 8), (2, 3, 3, 3)], id="conv2d_unbatched"),
        pytest.param(lambda x: lft.max_pool2d(x, 3, 2, 1), lambda x: F.max_pool2d(x, 3, 2, 1), [(2, 3, 9, 8)], id="max_pool2d"),
        pytest.param(lambda x: lft.max_pool2d(x, 2), lambda x: F.max_pool2d(x, 2), [(3, 7, 7)], id="max_pool2d_unbatched"),
        pytest.param(lambda x: lft.avg_pool2d(x, 3, 2, 1, count_include_pad=False),
                     lambda x: F.avg_pool2d(x, 3, 2, 1, count_include_pad=False), [(2, 3, 9, 8)], id="avg_pool2d"),
        pytest.param(lft.linear, F.linear, [(2, 3, 7), (5, 7), (5,)], id="linear"),
        pytest.param(lambda x: lft.softmax(x, 0), lambda x: F.softmax(x, 0), [(4, 6)], id="softmax"),
        pytest.param(lambda x: lft.log_softmax(x, 1), lambda x: F.log_softmax(x, 1), [(4, 6, 2)], id="log_softmax"),
        pytest.param(lft.relu, F.relu, [(3, 5)], id="relu"),
        pytest.param(lft.sigmoid, torch.sigmoid, [(3, 5)], id="sigmoid"),
        pytest.param(lft.tanh, torch.tanh, [(3, 5)], id="tanh"),
        pytest.param(lambda z: lft.cross_entropy(z, target), lambda z: F.cross_entropy(z, target), [(4, 10)], id="ce_mean"),
        pytest.param(lambda z: lft.cross_entropy(z, target, reduction="sum"),
                     lambda z: F.cross_entropy(z, target, reduction="sum"), [(4, 10)], id="ce_sum"),
    ]


@pytest.mark.parametrize("dtype", FLOATS, ids=["f32", "f64"])
@pytest.mark.parametrize("ours, theirs, shapes", _pairs())
def test_matches_torch_functional(ours, theirs, shapes, dtype):
    rng = np.random.default_rng(2)
    leaves = [_t(rng, s, dtype, True) for s in shapes]
    y, yt = ours(*leaves), theirs(*leaves)
    assert y.shape == yt.shape and y.dtype == yt.dtype
    tol = dict(rtol=2e-5, atol=2e-6) if dtype == torch.float32 else dict(rtol=1e-12, atol=1e-13)
    torch.testing.assert_close(y, yt, **tol)
    dy = _t(rng, tuple(y.shape), dtype)
    for g, gt in zip(torch.autograd.grad(y, leaves, dy), torch.autograd.grad(yt, leaves, dy)):
        torch.testing.assert_close(g, gt, **tol)


def test_max_pool2d_indices_and_empty_sum():
    x = torch.randn(2, 3, 6, 6)
    y, idx = lft.max_pool2d(x, 2, return_indices=True)
    yt, idxt = F.max_pool2d(x, 2, return_indices=True)
    torch.testing.assert_close(y, yt)
    assert torch.equal(idx, idxt)
    z = torch.zeros(0, 4, requires_grad=True)
    assert lft.cross_entropy(z, torch.zeros(0, dtype=torch.int64), reduction="sum").item() == 0.0
    assert torch.isnan(lft.cross_entropy(z, torch.zeros(0, dtype=torch.int64)))


def test_non_contiguous_inputs_give_the_same_result():
    x = torch.randn(2, 3, 8, 10)[:, :, :, ::2]  # strided view
    w = torch.randn(3, 4, 3, 3).transpose(0, 1)  # (4, 3, 3, 3), not contiguous
    torch.testing.assert_close(lft.conv2d(x, w), F.conv2d(x, w))


def test_cpu_tensors_reach_the_kernels_without_copies(monkeypatch):
    from layerforge import ops

    seen: dict[str, Any] = {}
    real = ops.relu

    def spy(x, **kw):
        seen["x"] = x
        seen["y"] = real(x, **kw)
        return seen["y"]

    monkeypatch.setattr(ops, "relu", spy)
    x = torch.randn(4, 5)
    y = lft.relu(x)
    assert isinstance(seen["x"], np.ndarray) and np.shares_memory(seen["x"], x.numpy())
    assert np.shares_memory(seen["y"], y.numpy())


# ---------------------------------------------------------------------------- refusals

@pytest.mark.parametrize("call, exc, match", [
    (lambda x: lft.conv2d(x, torch.randn(4, 1, 3, 3), groups=3), ValueError, "groups"),
    (lambda x: lft.conv2d(x, torch.randn(4, 3, 3, 3), stride=2, padding="same"), ValueError, "same"),
    (lambda x: lft.max_pool2d(x, 2, ceil_mode=True), ValueError, "ceil_mode"),
    (lambda x: lft.max_pool2d(x, 2, dilation=2), ValueError, "dilation"),
    (lambda x: lft.avg_pool2d(x, 2, divisor_override=3), ValueError, "divisor_override"),
    (lambda x: lft.relu(x.to(torch.bfloat16)), TypeError, "float32 or float64"),
    (lambda x: lft.softmax(x), TypeError, "dim"),
    (lambda x: lft.cross_entropy(x[:, 0, 0], torch.tensor([0, 1]), reduction="none"), ValueError, "reduction"),
    (lambda x: lft.cross_entropy(x[:, 0, 0], torch.tensor([0, 1]), label_smoothing=0.1), ValueError, "label_smoothing"),
    (lambda x: lft.cross_entropy(x[:, 0, 0], torch.rand(2, 6)), TypeError, "class indices"),
    (lambda x: lft.nn.Conv2d(3, 6, 3, groups=3), ValueError, "groups"),
    (lambda x: lft.nn.Conv2d(3, 6, 3, padding_mode="reflect"), ValueError, "padding_mode"),
    (lambda x: lft.nn.CrossEntropyLoss(label_smoothing=0.1), ValueError, "label_smoothing"),
    (lambda x: lft.nn.RNN(6, 4, num_layers=2), ValueError, "num_layers"),
    (lambda x: lft.nn.RNN(6, 4, bidirectional=True), ValueError, "bidirectional"),
    (lambda x: lft.nn.RNN(6, 4, proj_size=2), ValueError, "proj_size"),
    (lambda x: lft.rnn(x[:, :, 0], torch.randn(4, 6), torch.randn(4, 4), activation="elu"), ValueError, "activation"),
    (lambda x: lft.rnn(x[:, :, 0], torch.randn(4, 5), torch.randn(4, 4)), ValueError, r"w_xh must have shape \(H, I\)"),
    (lambda x: lft.rnn(x[:, :, 0], torch.randn(4, 6), torch.randn(4, 4), h0=torch.randn(3, 4)), ValueError, "h0"),
    (lambda x: lft.rnn(x[:, :, 0], torch.randn(4, 6, dtype=torch.float64), torch.randn(4, 4)), TypeError, "one dtype"),
])
def test_unsupported_arguments_are_refused(call, exc, match):
    with pytest.raises(exc, match=match):
        call(torch.randn(2, 3, 6, 6))


def test_rnn_module_refuses_bad_inputs():
    rnn = lft.nn.RNN(6, 4, batch_first=True)
    x = torch.randn(2, 3, 6)
    packed = torch.nn.utils.rnn.pack_padded_sequence(x, torch.tensor([3, 2]), batch_first=True)
    with pytest.raises(ValueError, match="PackedSequence"):
        rnn(packed)
    with pytest.raises(ValueError, match=r"hx must have shape \(1, 2, 4\)"):
        rnn(x, torch.zeros(1, 3, 4))
    with pytest.raises(ValueError, match="input_size=6"):
        rnn(torch.randn(2, 3, 5))
    with pytest.raises(ValueError, match="at least one step"):
        rnn(torch.randn(2, 0, 6))
    rnn.num_layers = 2  # changed after construction: refused at the call, not computed as one layer
    with pytest.raises(ValueError, match="num_layers"):
        rnn(x)


def test_bad_shapes_raise_the_ops_error():
    with pytest.raises(ValueError, match="channels"):
        lft.conv2d(torch.randn(2, 3, 6, 6), torch.randn(4, 2, 3, 3))
    with pytest.raises(ValueError, match="labels"):
        lft.cross_entropy(torch.randn(2, 5), torch.tensor([0, 5]))


# ---------------------------------------------------------------------------- lft.nn: training and compile

def _cnn(nn: Any) -> Any:
    """The documents' CNN, written against a torch.nn-like namespace."""
    return nn.Sequential(
        nn.Conv2d(1, 32, 3), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(1600, 64), nn.ReLU(), nn.Linear(64, 10),
    )


def _train_in_lockstep(ours: Any, ref: Any, loss_ours: Any, loss_ref: Any, x_shape: tuple[int, ...]) -> None:
    """Five Adam steps of two models holding the same weights, on the same random batches:
    the losses, every gradient and every weight after each step must agree."""
    ref.load_state_dict(ours.state_dict())  # same names and shapes: a drop-in
    opt_ours = torch.optim.Adam(ours.parameters(), lr=1e-3)
    opt_ref = torch.optim.Adam(ref.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(1)
    for step in range(5):
        x = torch.randn(*x_shape, generator=gen)
        y = torch.randint(0, 10, (x_shape[0],), generator=gen)
        for opt in (opt_ours, opt_ref):
            opt.zero_grad()
        lo, lr = loss_ours(ours(x), y), loss_ref(ref(x), y)
        torch.testing.assert_close(lo, lr, rtol=1e-5, atol=1e-6, msg=f"loss at step {step}")
        lo.backward()
        lr.backward()
        for (name, p), q in zip(ours.named_parameters(), ref.parameters()):
            scale = q.grad.abs().max().item()
            torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-5 * scale, msg=f"grad {name} at step {step}")
        opt_ours.step()
        opt_ref.step()
        # Adam moves every weight by about lr = 1e-3 whatever its gradient's size, so float32
        # noise in a near-zero gradient shows as up to ~2e-6 here (measured); 1e-5 is 1% of a step.
        for (name, p), q in zip(ours.named_parameters(), ref.parameters()):
            torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-5, msg=f"{name} after step {step}")


def test_cnn_trains_step_by_step_like_torch_nn():
    torch.manual_seed(0)
    _train_in_lockstep(_cnn(lft.nn), _cnn(torch.nn), lft.nn.CrossEntropyLoss(), torch.nn.CrossEntropyLoss(),
                       (16, 1, 28, 28))

def _has_cxx_compiler() -> bool:
    return any(shutil.which(c) for c in ("g++", "c++", "clang++"))


@pytest.mark.parametrize("backend", [
    "aot_eager",
    pytest.param("inductor", marks=pytest.mark.skipif(not _has_cxx_compiler(), reason="inductor needs a C++ compiler")),
])
def test_torch_compile_without_graph_breaks(backend):
    torch.manual_seed(0)
    model = _cnn(lft.nn)
    loss_fn = lft.nn.CrossEntropyLoss()
    x, y = torch.randn(8, 1, 28, 28), torch.randint(0, 10, (8,))

    def loss_of(x, y):
        return loss_fn(model(x), y)

    explained = torch._dynamo.explain(loss_of)(x, y)
    assert explained.graph_break_count == 0 and explained.graph_count == 1, explained.break_reasons
    torch._dynamo.reset()
    compiled = torch.compile(loss_of, backend=backend, fullgraph=True, dynamic=backend == "aot_eager")
    loss = compiled(x, y)
    grads = torch.autograd.grad(loss, list(model.parameters()))
    loss_eager = loss_of(x, y)
    grads_eager = torch.autograd.grad(loss_eager, list(model.parameters()))
    torch.testing.assert_close(loss, loss_eager)
    for g, ge in zip(grads, grads_eager):
        torch.testing.assert_close(g, ge)
    if backend == "aot_eager":  # dynamic=True: another batch size reuses the graph's fake shapes
        torch.testing.assert_close(compiled(x[:5], y[:5]), loss_of(x[:5], y[:5]))


# ---------------------------------------------------------------------------- lft.nn.RNN: against torch.nn.RNN, training, compile

@pytest.mark.parametrize("dtype", FLOATS, ids=["f32", "f64"])
@pytest.mark.parametrize("kwargs, unbatched, with_hx", [
    pytest.param({"batch_first": True}, False, False, id="batch_first"),
    pytest.param({}, False, True, id="seq_first_hx"),
    pytest.param({"nonlinearity": "relu", "bias": False}, False, True, id="relu_nobias_hx"),
    pytest.param({"batch_first": True, "nonlinearity": "relu"}, True, True, id="unbatched_hx"),
    pytest.param({}, True, False, id="unbatched"),
])
def test_rnn_module_matches_torch_nn(kwargs, unbatched, with_hx, dtype):
    """Same state_dict, same (output, h_n) shapes and values, same gradients for the input, hx
    and every Parameter (both biases included)."""
    torch.manual_seed(3)
    ours = lft.nn.RNN(5, 7, dtype=dtype, **kwargs)
    theirs = torch.nn.RNN(5, 7, dtype=dtype, **kwargs)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    theirs.load_state_dict(ours.state_dict())
    n, t = 3, 4
    shape = (t, 5) if unbatched else ((n, t, 5) if kwargs.get("batch_first") else (t, n, 5))
    x = torch.randn(shape, dtype=dtype, requires_grad=True)
    args = (x,)
    if with_hx:
        args += (torch.randn((1, 7) if unbatched else (1, n, 7), dtype=dtype, requires_grad=True),)
    out, h_n = ours(*args)
    out_t, h_n_t = theirs(*args)
    assert out.shape == out_t.shape and h_n.shape == h_n_t.shape and out.dtype == out_t.dtype
    assert out.is_contiguous() and h_n.is_contiguous()
    tol = {"rtol": 2e-5, "atol": 2e-6} if dtype == torch.float32 else {"rtol": 1e-12, "atol": 1e-13}
    torch.testing.assert_close(out, out_t, **tol)
    torch.testing.assert_close(h_n, h_n_t, **tol)
    d_out, d_h = torch.randn_like(out), torch.randn_like(h_n)
    leaves = [*args, *ours.parameters()]
    leaves_t = [*args, *theirs.parameters()]
    grads = torch.autograd.grad((out * d_out).sum() + (h_n * d_h).sum(), leaves)
    grads_t = torch.autograd.grad((out_t * d_out).sum() + (h_n_t * d_h).sum(), leaves_t)
    for k, (g, gt) in enumerate(zip(grads, grads_t)):
        torch.testing.assert_close(g, gt, **tol, msg=f"gradient {k}")


class _RowRNN(torch.nn.Module):
    """Image rows as a sequence: RNN(28, 32) over the 28 rows, a Linear head on the last state."""

    def __init__(self, nn: Any) -> None:
        super().__init__()
        self.rnn = nn.RNN(28, 32, batch_first=True)
        self.head = torch.nn.Linear(32, 10)

    def forward(self, x: Any) -> Any:
        _, h_n = self.rnn(x)
        return self.head(h_n[0])


def test_rnn_trains_step_by_step_like_torch_nn():
    torch.manual_seed(0)
    loss_fn = torch.nn.CrossEntropyLoss()
    _train_in_lockstep(_RowRNN(lft.nn), _RowRNN(torch.nn), loss_fn, loss_fn, (16, 28, 28))


@pytest.mark.parametrize("backend", [
    "aot_eager",
    pytest.param("inductor", marks=pytest.mark.skipif(not _has_cxx_compiler(), reason="inductor needs a C++ compiler")),
])
def test_rnn_torch_compile_without_graph_breaks(backend):
    """Dynamo refuses every torch.nn.RNN (subclasses included) unless allow_rnn is set; with it,
    the model is one graph, forward and backward match eager. The functional lft.rnn needs no flag."""
    torch.manual_seed(0)
    model = _RowRNN(lft.nn)
    x = torch.randn(8, 28, 28)
    params = list(model.parameters())
    with torch._dynamo.config.patch(allow_rnn=True):
        torch._dynamo.reset()
        explained = torch._dynamo.explain(model)(x)
        assert explained.graph_break_count == 0 and explained.graph_count == 1, explained.break_reasons
        torch._dynamo.reset()
        compiled = torch.compile(model, backend=backend, fullgraph=True, dynamic=backend == "aot_eager")
        y = compiled(x)
        grads = torch.autograd.grad(y.square().sum(), params)
        y_eager = model(x)
        grads_eager = torch.autograd.grad(y_eager.square().sum(), params)
        torch.testing.assert_close(y, y_eager)
        for g, ge in zip(grads, grads_eager):
            torch.testing.assert_close(g, ge)
        if backend == "aot_eager":  # dynamic=True: another batch size reuses the graph's fake shapes
            torch.testing.assert_close(compiled(x[:5]), model(x[:5]))
    torch._dynamo.reset()
    w_xh, w_hh = model.rnn.weight_ih_l0, model.rnn.weight_hh_l0
    fn = torch.compile(lambda x: lft.rnn(x, w_xh, w_hh, activation="tanh").sum(), backend=backend, fullgraph=True)
    torch.testing.assert_close(fn(x), lft.rnn(x, w_xh, w_hh).sum())
    torch._dynamo.reset()
