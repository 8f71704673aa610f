"""What it costs the Numba backend to hand work to a second thread, two ways, in one process:

- ``workers``: the backend's helper threads (``layerforge._numba._workers``): the caller posts a
  job on a queue, a helper wakes, runs it, and the caller waits on a semaphore. Measured with
  two empty jobs, so the figure is the dispatch alone.
- ``spin``: a helper that spins inside a nogil Numba loop on an int64 flag (the atomic loads
  and stores of ``layerforge._numba_spin``), and a caller that spins on the reply: the round
  trip of one empty request, the floor of a handoff that never sleeps.

The gap between the two is why the Numba backend hands its mid-size calls (tens of us) to
``_numba_spin``'s helper, which runs their kernels inside its Numba loop without the GIL, and
keeps the worker threads for the convolutions' chunks and the largest calls.

Usage: python3 benchmarks/handoff.py [--requests 20000]
"""

from __future__ import annotations

import argparse
import threading
import time

import numba
import numpy as np

from layerforge._numba_spin import _aload as _load
from layerforge._numba_spin import _astore as _store


@numba.njit(nogil=True)
def _serve(ctl):
    # ctl[0]: the last request, ctl[1]: the last reply, ctl[2]: nonzero to stop.
    seen = _load(ctl, 0)
    served = 0
    while _load(ctl, 2) == 0:
        s = _load(ctl, 0)
        if s != seen:
            seen = s
            _store(ctl, 1, s)
            served += 1
    return served


@numba.njit(nogil=True)
def _request(ctl, seq, max_spins):
    _store(ctl, 0, seq)
    spins = 0
    while _load(ctl, 1) != seq and spins < max_spins:
        spins += 1
    return _load(ctl, 1) == seq


def _per_call_us(fn, n: int) -> float:
    t = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t) / n * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=20000)
    n = ap.parse_args().requests

    from layerforge import _numba as nb

    def noop() -> None:
        pass

    nb._workers.run([noop, noop])  # start the helper
    workers = [_per_call_us(lambda: nb._workers.run([noop, noop]), max(n // 20, 100)) for _ in range(3)]

    ctl = np.zeros(3, np.int64)
    _request(ctl, 0, 1)  # compile both loops before the helper starts
    _serve(np.ones(3, np.int64))
    helper = threading.Thread(target=_serve, args=(ctl,), daemon=True)
    helper.start()
    seq = [0]

    def ask() -> None:
        seq[0] += 1
        if not _request(ctl, seq[0], 1 << 30):
            raise RuntimeError("the spinning helper did not answer")

    try:
        spin = [_per_call_us(ask, n) for _ in range(3)]
    finally:
        ctl[2] = 1
        helper.join()
    print(f"workers (queue + semaphore), two empty jobs: {min(workers):.2f}-{max(workers):.2f} us a dispatch")
    print(f"spinning handoff, one empty request:         {min(spin):.2f}-{max(spin):.2f} us a round trip")


if __name__ == "__main__":
    main()
