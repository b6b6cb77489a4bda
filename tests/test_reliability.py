"""Reliability: kill -9 during ingest, concurrent ingest, queries during ingest, API fuzzing."""
import random
import signal
import subprocess
import sys
import time

import pytest

from eselake import Lake
from eselake.lake import maintain
from tests.test_measure import make_field

N_SRC = 30


@pytest.fixture(scope="module")
def image_set(tmp_path_factory):
    """12 small FITS images of one field (30 sources each) and the source list."""
    root = tmp_path_factory.mktemp("images")
    folder = root / "all"
    folder.mkdir()
    cat = None
    for k in range(12):
        _, cat, _ = make_field(folder, f"img{k:02d}.fits", mjd=60500.3 + k, seed=0, shape=(300, 300), n=N_SRC)
    src = root / "sources.csv"
    src.write_text("name,ra,dec\n" + "\n".join(
        f"{s},{r},{d}" for s, r, d in zip(cat.column("source_id").to_pylist(), cat.column("ra_deg").to_pylist(),
                                           cat.column("dec_deg").to_pylist())))
    return folder, src


def _batch_cmd(lake_path, image_dir, src, *extra):
    return [sys.executable, "-m", "eselake", "--lake", str(lake_path), "photometry", "batch", "--source-list",
            str(src), "--image-dir", str(image_dir), *extra]


def _assert_all_or_nothing(lake):
    per_image = lake.sql("SELECT image_id, count(*) AS n FROM photometry GROUP BY image_id")
    assert set(per_image["n"].to_list()) <= {N_SRC}, per_image
    n_images = lake.sql("SELECT count(*) AS n FROM images")["n"][0]
    assert n_images == per_image.height
    errors = [f for f in maintain.check(lake) if f.severity == "error"]
    assert not errors, errors


def test_kill_9_during_ingest_leaves_all_or_nothing(image_set, tmp_path):
    folder, src = image_set
    lake = Lake(tmp_path / "lake")
    rng = random.Random(7)
    for trial in range(6):
        proc = subprocess.Popen(_batch_cmd(lake.path, folder, src, "--force"), stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(1.0, 4.0))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        _assert_all_or_nothing(lake)
    done = subprocess.run(_batch_cmd(lake.path, folder, src), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert lake.sql("SELECT count(*) AS n FROM images")["n"][0] == 12
    assert lake.sql("SELECT count(*) AS n FROM photometry")["n"][0] == 12 * N_SRC
    _assert_all_or_nothing(lake)


def test_four_concurrent_ingests_over_overlapping_sets(image_set, tmp_path):
    folder, src = image_set
    images = sorted(folder.glob("*.fits"))
    sets = [images[0:6], images[3:9], images[0:12], images[6:12]]
    dirs = []
    for k, subset in enumerate(sets):
        d = tmp_path / f"set{k}"
        d.mkdir()
        for img in subset:
            (d / img.name).symlink_to(img)          # the same files: the same image ids
        dirs.append(d)
    lake = Lake(tmp_path / "lake")
    procs = [subprocess.Popen(_batch_cmd(lake.path, d, src), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for d in dirs]
    outs = [p.communicate(timeout=600) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    import re
    measured = sum(int(re.search(r"(\d+) images measured", o).group(1)) for o, _ in outs)
    assert measured == 12                          # each image measured exactly once
    assert lake.sql("SELECT count(*) AS n FROM images")["n"][0] == 12
    assert lake.sql("SELECT count(*) AS n FROM photometry")["n"][0] == 12 * N_SRC
    _assert_all_or_nothing(lake)


def test_queries_during_ingest(image_set, tmp_path):
    from fastapi.testclient import TestClient

    from eselake.api import create_app

    folder, src = image_set
    lake = Lake(tmp_path / "lake")
    subprocess.run(_batch_cmd(lake.path, folder, src), check=True, capture_output=True)
    stop = time.time() + 12
    proc = subprocess.Popen([sys.executable, "-c", (
        "import subprocess, sys, time\n"
        f"end = time.time() + 11\n"
        f"while time.time() < end:\n"
        f"    subprocess.run({_batch_cmd(lake.path, folder, src, '--force')!r}, capture_output=True)\n")])
    client = TestClient(create_app(Lake(lake.path)))
    reader = Lake(lake.path)
    n_queries = 0
    try:
        while time.time() < stop:
            per_image = reader.sql("SELECT image_id, count(*) AS n FROM photometry GROUP BY image_id")
            assert set(per_image["n"].to_list()) == {N_SRC} and per_image.height == 12
            r = client.get("/api/v1/sources", params={"limit": 100})
            assert r.status_code == 200 and r.json()["total"] == N_SRC
            cli = subprocess.run([sys.executable, "-m", "eselake", "--lake", str(lake.path), "sql",
                                  "SELECT count(*) AS n FROM photometry", "--format", "csv"],
                                 capture_output=True, text=True)
            assert cli.returncode == 0 and cli.stdout.split() == ["n", str(12 * N_SRC)], cli.stderr
            n_queries += 1
    finally:
        proc.kill()
        proc.wait()
    assert n_queries >= 3


# ---------------------------------------------------------------------------- API fuzzing (schemathesis)
schemathesis = pytest.importorskip("schemathesis")


@pytest.fixture(scope="module")
def api_app(tmp_path_factory):
    from eselake.api import create_app
    from tests.conftest import simulated_lake

    lake, _ = simulated_lake(tmp_path_factory.mktemp("fuzz") / "lake", 12, 40, dip=(4, 60010, 14, 0.4))
    return create_app(lake)


def test_api_fuzz_no_server_errors(api_app):
    """Every operation of the served OpenAPI schema, with generated (valid and invalid) inputs: never a 5xx."""
    from hypothesis import HealthCheck, given, settings

    schema = schemathesis.openapi.from_asgi("/openapi.json", api_app)
    operations = [r.ok() for r in schema.get_all_operations()]
    assert len(operations) >= 10
    failures, calls = [], []
    for op in operations:
        @settings(max_examples=25, deadline=None, database=None, suppress_health_check=list(HealthCheck))
        @given(case=op.as_strategy())
        def run(case):
            response = case.call()
            calls.append(response.status_code)
            if response.status_code >= 500:
                failures.append((case.method, case.formatted_path, case.query, response.status_code,
                                 response.text[:300]))
        run()
    assert not failures, failures[:5]
    assert len(calls) > 100 and any(c < 300 for c in calls) and any(400 <= c < 500 for c in calls)
