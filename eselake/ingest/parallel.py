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
    _run_in_pool(fn, jobs, workers, on_result, None)


POOL_RETRIES = 2               # re-runs of a job whose worker process died (BrokenProcessPool)


def _run_in_pool(fn, jobs, workers, on_result, on_failure) -> None:
    """A worker that dies (killed, out of memory, a crash in C code) breaks a ProcessPoolExecutor and fails
    every job still in it. Finished results are kept; each failed job runs again alone in a fresh one-process
    pool (so one fatal job cannot take the others down again), up to POOL_RETRIES times; a job that still
    fails goes to ``on_failure`` (or raises without one)."""
    from concurrent.futures.process import BrokenProcessPool

    ctx = mp.get_context("spawn")
    broken = []
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
        futures = {pool.submit(fn, *job): job for job in jobs}
        for fut in as_completed(futures):
            try:
                result = fut.result()
            except BrokenProcessPool as exc:
                broken.append((futures[fut], exc))
                continue
            on_result(result)
    for job, exc in broken:
        for _ in range(POOL_RETRIES):
            try:
                with ProcessPoolExecutor(max_workers=1, mp_context=ctx) as pool:
                    result = pool.submit(fn, *job).result()
                break
            except BrokenProcessPool as again:
                exc = again
        else:
            if on_failure is None:
                raise exc
            result = on_failure(job, exc)
        on_result(result)
