"""Running jobs in this process, in a pool of local worker processes, or as tasks on a Dask distributed cluster.

``run_jobs(fn, jobs, workers, on_result, scheduler=None)`` is the one entry point (tile ingest, photometry
batches). Without a scheduler the jobs run here or in ``workers`` spawned processes, as they always did; with
``scheduler`` (a ``tcp://host:port`` address, ``local:N`` for a LocalCluster of N worker processes, or an open
``distributed.Client``) every job becomes one Dask task. Jobs must be idempotent (the lake's per-image commits
make re-running a tile or an image harmless), since Dask re-runs the tasks of a worker that dies.
"""
from __future__ import annotations

import contextlib
import multiprocessing as mp
import threading
import uuid
from concurrent.futures import CancelledError, ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from eselake.errors import EselakeError

CONNECT_TIMEOUT_S = 5.0        # an unreachable scheduler is reported after this long
TASK_RETRIES = 2               # re-runs of a task that raised (a worker that dies is handled by the scheduler)

_ONE_JOB_AT_A_TIME = threading.Lock()


class TaskLost(EselakeError):
    """A Dask task that never finished: cancelled, or its scheduler connection was lost."""


def run_jobs(fn: Callable[..., Any], jobs: Sequence[tuple], workers: int, on_result: Callable[[Any], None],
             scheduler=None, on_failure: Callable[[tuple, BaseException], Any] | None = None) -> None:
    """Call ``fn(*job)`` for every job, here (``workers`` <= 1) or in ``workers`` processes, passing each
    result to ``on_result`` as it completes. Workers are spawned, not forked: polars, DuckDB, CASA and
    delta-rs hold thread pools that a forked child would deadlock on.

    With ``scheduler`` the jobs run on a Dask cluster instead (see :func:`dask_client`). A job whose task
    fails for good (it raised ``TASK_RETRIES`` + 1 times, or killed the workers it ran on) is passed with the
    exception to ``on_failure``, whose return value goes to ``on_result``; the other jobs continue.
    """
    if scheduler:
        with dask_client(scheduler, workers) as client:
            _run_on_dask(client, fn, jobs, on_result, on_failure)
        return
    if workers <= 1:
        for job in jobs:
            on_result(fn(*job))
        return
    _run_in_pool(fn, jobs, workers, on_result, on_failure)


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


def _is_client(obj) -> bool:
    return hasattr(obj, "submit") and hasattr(obj, "scheduler_info")


@contextlib.contextmanager
def dask_client(scheduler, workers: int = 1) -> Iterator[Any]:
    """A ``distributed.Client`` for ``scheduler``: an open client (yielded as is, left open), ``local:N`` (or
    ``local``: ``workers`` processes) for a LocalCluster of N single-threaded worker processes started here and
    closed afterwards, or the address of a running scheduler (``tcp://host:8786``, from ``dask scheduler``,
    dask-jobqueue, ...). An unreachable scheduler is an :class:`EselakeError` after ``CONNECT_TIMEOUT_S``."""
    if _is_client(scheduler):
        yield scheduler
        return
    try:
        import dask
        from distributed import Client, LocalCluster
    except ImportError as exc:
        raise EselakeError(f"--scheduler needs Dask distributed ({exc}); install it with: "
                           "pip install 'eselake[dist]'") from None
    spec = str(scheduler).strip()
    if spec == "local" or spec.startswith("local:"):
        count = spec.partition(":")[2]
        if count and not (count.isdigit() and int(count) >= 1):
            raise EselakeError(f"--scheduler {spec}: expected local:N with N >= 1 worker processes")
        import logging
        # worker processes are spawned (delta-rs, DuckDB and CASA are not fork-safe), one thread each
        with dask.config.set({"distributed.worker.multiprocessing-method": "spawn"}):
            cluster = LocalCluster(n_workers=int(count) if count else max(1, workers), threads_per_worker=1,
                                   processes=True, host="127.0.0.1", dashboard_address=None,
                                   silence_logs=logging.ERROR)
        try:
            with Client(cluster, set_as_default=False) as client:
                yield client
        finally:
            cluster.close(timeout=30)
        return
    if "://" not in spec:
        spec = f"tcp://{spec}"
    _probe(spec)
    try:
        client = Client(spec, timeout=CONNECT_TIMEOUT_S, set_as_default=False)
    except Exception as exc:  # noqa: BLE001 - OSError, TimeoutError, ValueError for a malformed address
        detail = " ".join(str(exc).split()) or type(exc).__name__
        raise EselakeError(f"cannot reach the Dask scheduler at {spec} ({detail})") from None
    try:
        yield client
    finally:
        client.close(timeout=10)


def _probe(address: str) -> None:
    """Fail fast, with one line, on a malformed or unreachable ``tcp://`` scheduler address (before a Client
    exists: a Client that never connected complains again when garbage-collected)."""
    import socket

    from distributed.comm import parse_address, parse_host_port

    try:
        protocol, loc = parse_address(address)
        if protocol != "tcp":
            return                      # tls://, ucx://, ...: left to the Client
        host, port = parse_host_port(loc)
    except Exception as exc:  # noqa: BLE001 - ValueError and friends for a malformed address
        raise EselakeError(f"--scheduler {address}: not a scheduler address ({' '.join(str(exc).split())}); "
                           "expected tcp://host:port or local:N") from None
    if not port:
        raise EselakeError(f"--scheduler {address}: no port; the dask scheduler listens on tcp://host:8786")
    try:
        socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as exc:
        reason = "timed out" if isinstance(exc, TimeoutError) else (exc.strerror or str(exc)).lower()
        raise EselakeError(f"cannot reach the Dask scheduler at {address} ({reason}); is `dask scheduler` "
                           "running there, and is ESELAKE_SCHEDULER / --scheduler right?") from None


def _one_at_a_time(fn: Callable[..., Any], *args):
    """Run ``fn(*args)`` on a Dask worker, one eselake job per worker process at a time (CASA is not
    thread-safe; a worker started with several threads still runs the chain like a local pool process)."""
    with _ONE_JOB_AT_A_TIME:
        return fn(*args)


_SCALAR = (str, bytes, int, float, bool, type(None), Path)


def _run_on_dask(client, fn, jobs: Sequence[tuple], on_result, on_failure) -> None:
    from distributed import as_completed as dask_completed

    jobs = list(jobs)
    if not jobs:
        return
    # an argument shared by every job (a source list, options) is sent to the cluster once, to every worker
    # (so that losing one worker does not lose it)
    shared = {}
    if len(jobs) > 1:
        for i, arg in enumerate(jobs[0]):
            if not isinstance(arg, _SCALAR) and all(len(j) > i and j[i] is arg for j in jobs):
                shared[i] = client.scatter([arg], hash=False, broadcast=True)[0]
    name = getattr(fn, "__name__", "job").strip("_")
    run = uuid.uuid4().hex[:8]
    futures = {}
    for k, job in enumerate(jobs):
        args = tuple(shared.get(i, a) for i, a in enumerate(job))
        fut = client.submit(_one_at_a_time, fn, *args, key=f"eselake-{name}-{run}-{k}", pure=False,
                            retries=TASK_RETRIES)
        futures[fut] = job
    try:
        for fut in dask_completed(list(futures), loop=client.loop):
            try:
                result = fut.result()
            except Exception as exc:  # noqa: BLE001 - one failed task must not stop the others
                if on_failure is None:
                    raise
                if isinstance(exc, CancelledError):
                    exc = TaskLost(" ".join(str(exc).split()) + " Run the command again to resume.")
                result = on_failure(futures[fut], exc)
            on_result(result)
    finally:
        pending = [f for f in futures if not f.done()]
        if pending:                    # interrupted: do not leave our tasks running on the cluster
            client.cancel(pending)
