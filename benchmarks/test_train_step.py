"""One whole training step (forward, backward, Adam lr 1e-3) of the documents' CNN at batch 32
and 256 and of the RNN (SimpleRNN(128) over 28 rows of 28 -> Dense(10, softmax)) at batch 32:
layerforge's Sequential.train_on_batch on each backend against the same network in PyTorch
(NCHW and channels_last for the CNN; nn.RNN for the RNN) with copied weights. Setting up a
PyTorch entry checks that one forward gives layerforge's loss (to 1e-5), so both sides train
the same network. extra_info['rate'] is GFLOP/s of the step's useful flops.
"""

from __future__ import annotations

import pytest

from layerforge import bench

CASES = bench.train_cases((32, 256), models=("cnn",)) + bench.train_cases((32,), models=("rnn",))
IMPLS = ["cpp", "numba"]


def _params() -> list:
    return [pytest.param(case, impl, id=f"{case.op}-b{case.batch}-{impl}")
            for case in CASES for impl in IMPLS + list(case.torch_impls)]


@pytest.mark.parametrize(("case", "impl"), _params())
def test_train_step(run_case, case, impl):
    run_case(case, impl)
