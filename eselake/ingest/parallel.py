"""Running jobs in this process or in a pool of worker processes."""
from __future__ import annotations

import multiprocessing as mp
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Any, Callable, Sequence


def run_jobs(fn: Callable[..., Any], jobs: Sequence[tuple], workers: int, on_result: Callable[[Any], None]) -> None:
    """Call ``fn(*job)`` for every job, here (``workers`` <= 1) or in ``workers`` processes, passing each
    result to ``on_result`` as it completes. Workers are spawned, not forked: polars, DuckDB and CASA hold
    thread pools that a forked child would deadlock on."""
    if workers <= 1:
        for job in jobs:
            on_result(fn(*job))
        return
    with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn")) as pool:
        for fut in as_completed([pool.submit(fn, *job) for job in jobs]):
            on_result(fut.result())
