"""Ingest on Dask distributed: a LocalCluster of worker processes, the `dask` command-line scheduler and worker,
a worker killed during a run, and an unreachable scheduler. Small images, few sources (the file takes ~1 min)."""
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import polars as pl
import pytest
from click.testing import CliRunner

pytest.importorskip("distributed")

from eselake import Lake  # noqa: E402
from eselake.cli import main  # noqa: E402
from eselake.ingest.parallel import dask_client  # noqa: E402
from tests.test_measure import make_field  # noqa: E402

N_IMG, N_SRC = 4, 10
COLUMNS = ("source_id, image_id, mjd, peak_jyb, peak_err_jyb, local_rms_jyb, snr, flags, normalized_flux_jy, "
           "norm_flag")


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """4 small FITS images of one field (10 sources), its source list, and its catalogue as a table."""
    root = tmp_path_factory.mktemp("dist")
    folder = root / "images"
    folder.mkdir()
    for k in range(N_IMG):
        _, cat, _ = make_field(folder, f"img{k:02d}.fits", mjd=60500.3 + k, seed=0, shape=(200, 200), n=N_SRC)
    src = root / "sources.csv"
    src.write_text("name,ra,dec\n" + "\n".join(
        f"{s},{r},{d}" for s, r, d in zip(cat.column("source_id").to_pylist(), cat.column("ra_deg").to_pylist(),
                                           cat.column("dec_deg").to_pylist())))
    return folder, src, cat


@pytest.fixture(scope="module")
def cluster():
    """A LocalCluster of 2 spawned single-threaded worker processes (the `--scheduler local:2` code path)."""
    with dask_client("local:2") as client:
        client.wait_for_workers(2, timeout=60)
        yield client


def _batch(lake_path, folder, src, *extra, env=None):
    env = {"ESELAKE_SCHEDULER": None, **(env or {})}      # local unless the test says otherwise
    return CliRunner().invoke(main, ["--lake", str(lake_path), "photometry", "batch", "--source-list", str(src),
                                     "--image-dir", str(folder), *extra], env=env)


def _rows(lake: Lake) -> pl.DataFrame:
    return lake.sql(f"SELECT {COLUMNS} FROM photometry ORDER BY image_id, source_id")


def _count(lake: Lake, table: str) -> int:
    return lake.sql(f"SELECT count(*) AS n FROM {table}")["n"][0]


def _assert_whole_images(lake: Lake, n_images: int) -> None:
    """Exactly ``n_images`` committed images with all N_SRC rows each: nothing partial, nothing doubled."""
    assert _count(lake, "images") == n_images
    assert _count(lake, "photometry") == n_images * N_SRC
    per_image = lake.sql("SELECT image_id, count(*) AS n FROM photometry GROUP BY image_id")
    assert per_image.height == n_images and set(per_image["n"].to_list()) <= {N_SRC}


def test_distributed_equals_local(images, cluster, tmp_path):
    folder, src, _ = images
    local = _batch(tmp_path / "local", folder, src, "--workers", "1")
    assert local.exit_code == 0, local.output
    dist = _batch(tmp_path / "dist", folder, src, "--scheduler", cluster.scheduler.address)
    assert dist.exit_code == 0, dist.output
    assert f"{N_IMG} images measured, 0 already in the lake, 0 failed; {N_IMG * N_SRC} measurements" in dist.output
    a, b = _rows(Lake(tmp_path / "local")), _rows(Lake(tmp_path / "dist"))
    assert a.height == N_IMG * N_SRC and a.equals(b)       # same rows, same values (bit for bit)
    _assert_whole_images(Lake(tmp_path / "dist"), N_IMG)
    # a second distributed run finds everything in the lake: nothing doubled
    again = _batch(tmp_path / "dist", folder, src, "--scheduler", cluster.scheduler.address)
    assert again.exit_code == 0 and f"0 images measured, {N_IMG} already in the lake" in again.output
    _assert_whole_images(Lake(tmp_path / "dist"), N_IMG)


def test_ingest_fits_with_env_scheduler(images, cluster, tmp_path):
    """`ingest fits` with ESELAKE_SCHEDULER equals `ingest fits` in this process."""
    folder, _, cat = images
    for name in ("local", "dist"):
        Lake(tmp_path / name).write_catalog("nvss", cat)
    local = CliRunner().invoke(main, ["--lake", str(tmp_path / "local"), "ingest", "fits", str(folder)],
                               env={"ESELAKE_SCHEDULER": None})
    assert local.exit_code == 0, local.output
    dist = CliRunner().invoke(main, ["--lake", str(tmp_path / "dist"), "ingest", "fits", str(folder)],
                              env={"ESELAKE_SCHEDULER": cluster.scheduler.address})
    assert dist.exit_code == 0, dist.output
    assert _rows(Lake(tmp_path / "local")).equals(_rows(Lake(tmp_path / "dist")))
    _assert_whole_images(Lake(tmp_path / "dist"), N_IMG)


def test_worker_killed_during_a_run(images, cluster, tmp_path):
    """SIGKILL a worker busy with an image: Dask re-runs its tasks elsewhere; every image ends up committed
    exactly once (or is reported failed), and a rerun completes the lake without doubling anything."""
    from eselake.ingest.catalogs.catalog import load_catalog_file
    from eselake.ingest.photometry.measure import find_images, measure_batch

    folder, src, _ = images
    lake = Lake(tmp_path / "lake")
    pids = cluster.run(os.getpid)
    killed = []

    def killer():                                  # SIGKILL the first worker seen with a task in hand
        deadline = time.time() + 30
        while time.time() < deadline:
            busy = [w for w, keys in cluster.processing().items() if keys and w in pids]
            if busy:
                os.kill(pids[busy[0]], signal.SIGKILL)
                killed.append(busy[0])
                return
            time.sleep(0.01)

    sources = load_catalog_file(src, "sources")
    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    done, errors = measure_batch(lake, find_images(folder), scheduler=cluster, sources=sources, skip_existing=True)
    thread.join(timeout=30)
    assert killed, "no worker was busy to kill"
    assert len(done) + len(errors) == N_IMG                 # every image reported once
    assert all("Killed" in e or "worker" in e.lower() for e in errors.values()), errors
    _assert_whole_images(lake, len(done))
    # a rerun (here, in this process) measures only what is missing
    done2, errors2 = measure_batch(lake, find_images(folder), sources=sources, skip_existing=True)
    assert not errors2 and sum(not r.skipped for r in done2) == len(errors)
    _assert_whole_images(lake, N_IMG)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _dask_cmd(*args) -> list[str]:
    exe = Path(sys.executable).parent / "dask"
    return [str(exe), *args] if exe.exists() else [sys.executable, "-m", "dask", *args]


def _stop(proc: subprocess.Popen) -> None:
    """Stop a process started here and its process group (the worker's nanny spawns the worker)."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)             # its own session: only what this test started
    except ProcessLookupError:
        pass
    proc.wait(timeout=10)


def test_dask_command_line_scheduler_and_worker(images, tmp_path):
    """`dask scheduler` and `dask worker` on 127.0.0.1, as on a cluster; `photometry batch --scheduler` there."""
    from distributed import Client

    folder, src, _ = images
    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    log = open(tmp_path / "dask.log", "w")
    common = dict(stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    scheduler = subprocess.Popen(_dask_cmd("scheduler", "--host", "127.0.0.1", "--port", str(port),
                                           "--no-dashboard"), **common)
    worker = None
    try:
        deadline = time.time() + 30
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.2)
        worker = subprocess.Popen(_dask_cmd("worker", address, "--host", "127.0.0.1", "--nworkers", "1",
                                            "--nthreads", "1", "--no-dashboard", "--death-timeout", "60"),
                                  **common)
        with Client(address, timeout=10, set_as_default=False) as client:
            client.wait_for_workers(1, timeout=60)
        res = _batch(tmp_path / "lake", folder, src, "--scheduler", address)
        assert res.exit_code == 0, res.output + (tmp_path / "dask.log").read_text()[-3000:]
        _assert_whole_images(Lake(tmp_path / "lake"), N_IMG)
    finally:
        for proc in (worker, scheduler):
            if proc is not None:
                _stop(proc)
        log.close()


def test_scheduler_unreachable_is_one_clear_line(images, tmp_path):
    folder, src, _ = images
    port = _free_port()                                  # nothing listens there
    t = time.perf_counter()
    res = _batch(tmp_path / "lake", folder, src, "--scheduler", f"tcp://127.0.0.1:{port}")
    assert time.perf_counter() - t < 15
    assert res.exit_code == 2
    assert f"cannot reach the Dask scheduler at tcp://127.0.0.1:{port}" in res.output
    assert "Traceback" not in res.output
    bad = _batch(tmp_path / "lake", folder, src, env={"ESELAKE_SCHEDULER": "127.0.0.1:notaport"})
    assert bad.exit_code == 2 and "not a scheduler address" in bad.output and "Traceback" not in bad.output
    local0 = _batch(tmp_path / "lake", folder, src, "--scheduler", "local:0")
    assert local0.exit_code == 2 and "local:N" in local0.output
