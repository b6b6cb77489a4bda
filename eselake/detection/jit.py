"""Compilation of the search's per-row loops (numba, installed with pyuvdata): ``nogil`` so that the search's
worker threads run them at once, ``cache`` so that a process loads them from disk instead of compiling."""
from __future__ import annotations

import numba
import numpy as np


def jit(fn):
    """The loop ``fn`` compiled to machine code with numpy's arithmetic: IEEE, no fast-math reordering, and a
    division by zero gives inf/NaN (masked by the search as before) instead of raising.

    numba's disk cache is keyed by the source file of ``fn``, not by these options: after changing them, change
    (or touch) the modules that use them, or their cached loops stay those of the old options."""
    return numba.njit(nogil=True, cache=True, error_model="numpy")(fn)


@jit
def pairwise_sum(a, start, n):
    """0.0 + the sum of a[start:start + n] as numpy's ``add.reduce`` over a contiguous axis adds: its
    ``pairwise_sum`` (blocks of at most 128 summed in 8 accumulators, longer runs halved at a multiple of 8 and
    the halves added), so numpy's result bit for bit. The halving runs on an explicit stack (numba's disk cache
    cannot link a recursive function)."""
    if n <= 128:
        return 0.0 + _block_sum(a, start, n)
    task_start = np.empty(128, np.int64)
    task_n = np.empty(128, np.int64)        # -1: add the two values on top of the value stack
    value = np.empty(128)
    tasks = 1
    values = 0
    task_start[0] = start
    task_n[0] = n
    while tasks:
        tasks -= 1
        s, m = task_start[tasks], task_n[tasks]
        if m < 0:
            values -= 1
            value[values - 1] = value[values - 1] + value[values]
        elif m <= 128:
            value[values] = _block_sum(a, s, m)
            values += 1
        else:
            m2 = m // 2
            m2 -= m2 % 8
            task_n[tasks] = -1                      # then the sum of the two halves
            task_start[tasks + 1], task_n[tasks + 1] = s + m2, m - m2   # then the second half
            task_start[tasks + 2], task_n[tasks + 2] = s, m2            # first the first half
            tasks += 3
    return 0.0 + value[0]


@jit
def _block_sum(a, start, n):
    """numpy's pairwise_sum of n <= 128 values: in order below 8, else in 8 accumulators."""
    if n < 8:
        res = 0.0
        for i in range(start, start + n):
            res += a[i]
        return res
    r0, r1, r2, r3 = a[start], a[start + 1], a[start + 2], a[start + 3]
    r4, r5, r6, r7 = a[start + 4], a[start + 5], a[start + 6], a[start + 7]
    i = 8
    while i < n - (n % 8):
        j = start + i
        r0 += a[j]
        r1 += a[j + 1]
        r2 += a[j + 2]
        r3 += a[j + 3]
        r4 += a[j + 4]
        r5 += a[j + 5]
        r6 += a[j + 6]
        r7 += a[j + 7]
        i += 8
    res = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
    while i < n:
        res += a[start + i]
        i += 1
    return res
