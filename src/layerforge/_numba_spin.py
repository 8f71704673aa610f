"""A spinning helper thread for the Numba backend's mid-size calls (``_numba._size_split``,
for poolings and elementwise ops, from 64 K elements up to the worker-thread splits).

Handing work to ``_numba._Workers`` costs 46-60 us (a queue, a semaphore and waking an idle
vCPU; ``benchmarks/handoff.py``), so calls shorter than about 0.1 ms used to run in one thread
and took up to 3x the two-thread C++ time. This helper instead waits for work inside a nogil
Numba loop (atomic loads, a CPU pause per turn) and runs the work there, through the kernels
that ``_numba._serve`` calls: arrays travel as addresses and shapes in an int64 control
array, so neither side needs the GIL or a lock on the way.

Protocol (all atomics sequentially consistent, each word on its own cache line):
- the caller writes the request, then CLAIM = REQ = seq (``_post``), runs its own half, and
  then tries to take the helper's half back (CAS CLAIM seq -> 0, ``_finish``): if that
  succeeds the helper never started it and the caller runs it too, else it waits for
  DONE == seq. So a call never waits on a helper that is asleep or descheduled.
- the helper claims a request with the same CAS, runs it, and sets DONE = seq
  (``serve_turn``, ``served``).
- after ``_SPINS`` idle turns (about 1 ms) or when STOP is set (``_Workers`` is about to run
  its threads on the cores), the helper sets PARKED and sleeps on a semaphore. A caller that
  finds it parked runs its whole call and then releases the semaphore, off the call's
  critical path, so that the calls after it find the helper spinning.
"""

from __future__ import annotations

import platform
import threading
import time
from collections.abc import Callable

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

# Words of the control array (8 int64 apart: one 64-byte line each) and the arguments.
REQ, CLAIM, DONE, PARKED, STOP = 0, 8, 16, 24, 32
ARGS = 40  # ARGS + 0..15: the request (Spinner.split2)
_SIZE = ARGS + 16
_SPINS = 40_000  # idle turns before parking: about 1 ms (27 ns a turn with its pause on Zen 4)
_X86 = platform.machine().lower() in ("x86_64", "amd64", "i686", "x86")
_I64 = ir.IntType(64)


@intrinsic
def _aload(typingctx, arr, idx):
    sig = types.int64(arr, idx)

    def codegen(context, builder, sig, args):
        ary = context.make_array(sig.args[0])(context, builder, args[0])
        return builder.load_atomic(builder.gep(ary.data, [args[1]]), "seq_cst", 8)

    return sig, codegen


@intrinsic
def _astore(typingctx, arr, idx, val):
    sig = types.void(arr, idx, val)

    def codegen(context, builder, sig, args):
        ary = context.make_array(sig.args[0])(context, builder, args[0])
        builder.store_atomic(args[2], builder.gep(ary.data, [args[1]]), "seq_cst", 8)
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def _cas(typingctx, arr, idx, old, new):
    """arr[idx] = new if it equals old (atomically); whether it did."""
    sig = types.boolean(arr, idx, old, new)

    def codegen(context, builder, sig, args):
        ary = context.make_array(sig.args[0])(context, builder, args[0])
        r = builder.cmpxchg(builder.gep(ary.data, [args[1]]), args[2], args[3], "seq_cst", "seq_cst")
        return builder.extract_value(r, 1)

    return sig, codegen


@intrinsic
def _pause(typingctx):
    """The x86 spin-wait hint (nothing elsewhere)."""
    sig = types.void()

    def codegen(context, builder, sig, args):
        if _X86:
            fn = builder.module.declare_intrinsic("llvm.x86.sse2.pause", fnty=ir.FunctionType(ir.VoidType(), []))
            builder.call(fn, [])
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def pointer(typingctx, addr, like):
    """A typed pointer (to ``like``'s type) from an integer address, for ``numba.carray``."""
    sig = types.CPointer(like)(addr, like)

    def codegen(context, builder, sig, args):
        return builder.inttoptr(args[0], context.get_value_type(sig.return_type))

    return sig, codegen


@intrinsic
def _address(typingctx, a):
    sig = types.int64(a)

    def codegen(context, builder, sig, args):
        return builder.ptrtoint(context.make_array(sig.args[0])(context, builder, args[0]).data, _I64)

    return sig, codegen


@numba.njit(cache=True, nogil=True)
def _post(ctl, seq, op, lo, hi, out, a, b, dims, flag):
    """Writes the request (see ``Spinner.split2``) and publishes it as seq; True when the
    helper was parked (and is now marked awake: the caller then owes it a wake). One call
    for it all: reading three addresses through ``ndarray.ctypes`` and assigning the request
    from Python cost 4-5 us a call."""
    ctl[ARGS], ctl[ARGS + 1], ctl[ARGS + 2], ctl[ARGS + 3] = op, 1 if out.itemsize == 8 else 0, lo, hi
    ctl[ARGS + 4], ctl[ARGS + 5], ctl[ARGS + 6] = _address(out), _address(a), _address(b)
    for i in range(len(dims)):
        ctl[ARGS + 7 + i] = dims[i]
    ctl[ARGS + 12] = flag
    _astore(ctl, CLAIM, seq)
    _astore(ctl, REQ, seq)
    return _cas(ctl, PARKED, 1, 0)


@numba.njit(cache=True, nogil=True)
def _finish(ctl, seq, spins):
    """1: the caller took the request back (run it); 0: the helper ran it; 2: the helper is
    still running it after ``spins`` turns."""
    if _cas(ctl, CLAIM, seq, 0):
        return 1
    for _ in range(spins):
        if _aload(ctl, DONE) == seq:
            return 0
        _pause()
    return 2


@numba.njit(cache=True, nogil=True)
def _stop(ctl):
    _astore(ctl, STOP, 1)


@numba.njit(cache=True, nogil=True, inline="always")
def serve_turn(ctl, seen, idle, spins):
    """One turn of a helper's loop (``_numba._spin_loop``, which calls the served kernels):
    returns (seen, idle, action): action 1 = claimed request ``seen`` (serve it, then
    ``served``), 2 = park (return ``seen``), 0 = nothing this turn."""
    s = _aload(ctl, REQ)
    if s != seen:
        return s, 0, 1 if _cas(ctl, CLAIM, s, 0) else 0
    if idle >= spins or _aload(ctl, STOP) != 0:
        _astore(ctl, STOP, 0)
        _astore(ctl, PARKED, 1)
        # A request that came in between: serve it, unless its caller has already seen
        # PARKED (then a wake is on its way, and the thread takes it first).
        if _aload(ctl, REQ) == seen or not _cas(ctl, PARKED, 1, 0):
            return seen, idle, 2
        return seen, 0, 0
    _pause()
    return seen, idle + 1, 0


@numba.njit(cache=True, nogil=True, inline="always")
def served(ctl, seq):
    _astore(ctl, DONE, seq)


class Spinner:
    """One spinning helper thread that runs ``loop`` (serving the requests posted in ``ctl``).
    ``split2`` is its only entry; it is safe from any thread (one caller at a time uses the
    helper, the others run their calls alone). Forgotten in a forked child."""

    def __init__(self, loop: Callable) -> None:
        self._loop = loop  # loop(ctl, seen, spins) -> seen, built on serve_turn
        self.reset()

    def reset(self) -> None:
        self.ctl = np.zeros(_SIZE, np.int64)
        self._seq = 0
        self._sem = threading.Semaphore(0)
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.served = 0  # requests the helper ran (for tests)

    def stop(self) -> None:
        """Asks a spinning helper to park (before other threads need the cores)."""
        if self._thread is not None:
            _stop(self.ctl)

    def _run_helper(self) -> None:
        seen = 0
        while True:
            self._sem.acquire()
            seen = self._loop(self.ctl, seen, _SPINS)

    def _start(self) -> None:
        self.ctl[PARKED] = 1  # it starts asleep: the first call wakes it when done
        self._thread = threading.Thread(target=self._run_helper, daemon=True, name="layerforge-numba-spin")
        self._thread.start()

    def split2(self, n: int, run: Callable[[slice], object], op: int, out: np.ndarray, a: np.ndarray,
               b: np.ndarray | None, dims: tuple[int, ...], flag: int = 0,
               result: Callable[[], object] | None = None) -> list:
        """[run(0:n/2), part 2]: the caller runs the first half while the helper runs the
        loop's serve function on the request at ctl[ARGS:]: 0 op, 1 dtype (0 float32, 1
        float64, from ``out``), 2-3 the range (n/2, n), 4-6 the addresses of out, a and b
        (a again when b is None), 7-11 dims (up to 5), 12 flag, and ARGS + 13 for a result.
        It must do what run(n/2:n) does. Part 2 is ``result()`` read after the helper ran
        it (None without ``result``), or run(n/2:n) when the caller took it back."""
        mid = n // 2
        if not self._lock.acquire(blocking=False):
            return [run(slice(0, n))]
        try:
            if self._thread is None:
                self._start()
            ctl = self.ctl
            self._seq += 1
            seq = self._seq
            parked = _post(ctl, seq, op, mid, n, out, a, a if b is None else b, dims, flag)
            first = run(slice(0, mid))
            state = _finish(ctl, seq, _SPINS)
            while state == 2:  # the helper is still at it (a long half, or descheduled): yield
                time.sleep(0)
                state = _finish(ctl, seq, _SPINS // 8)
            if state == 1:
                second = run(slice(mid, n))
            else:
                self.served += 1
                second = result() if result is not None else None
            if parked:
                self._sem.release()  # after the call: the next one finds it spinning
            return [first, second]
        finally:
            self._lock.release()

