"""Compilation of the search's per-row loops (numba, installed with pyuvdata): ``nogil`` so that the search's
worker threads run them at once, ``cache`` so that a process loads them from disk instead of compiling."""
from __future__ import annotations

import numba


def jit(fn):
    """The loop ``fn`` compiled to machine code (IEEE arithmetic: no fast-math reordering)."""
    return numba.njit(nogil=True, cache=True)(fn)
