"""Compilation of the search's per-row loops (numba, installed with pyuvdata): ``nogil`` so that the search's
worker threads run them at once, ``cache`` so that a process loads them from disk instead of compiling."""
from __future__ import annotations

import numba


def jit(fn):
    """The loop ``fn`` compiled to machine code with numpy's arithmetic: IEEE, no fast-math reordering, and a
    division by zero gives inf/NaN (masked by the search as before) instead of raising.

    numba's disk cache is keyed by the source file of ``fn``, not by these options: after changing them, change
    (or touch) the modules that use them, or their cached loops stay those of the old options."""
    return numba.njit(nogil=True, cache=True, error_model="numpy")(fn)
