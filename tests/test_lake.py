"""The lake: atomic idempotent writes, consistent reads during writes, views from any cwd."""
import multiprocessing as mp
import os
import subprocess
import sys

import pyarrow as pa
import pytest

from eselake import Lake
from eselake.errors import LakeError


def _image(image_id="img-1", mjd=60300.25):
    return {"image_id": image_id, "path": f"/data/{image_id}.fits", "mjd": mjd, "freq_hz": 1.4e9,
            "rms_jyb": 1e-3, "kind": "image"}


def _phot(n, value, image_id="img-1", mjd=60300.25):
    return pa.table({
        "source_id": [f"SRC {i:05d}" for i in range(n)],
        "image_id": [image_id] * n,
        "mjd": [mjd] * n,
        "peak_jyb": [float(value)] * n,
        "peak_err_jyb": [0.001] * n,
    })


def test_round_trip(lake):
    lake.commit_image(_image(), _phot(50, 1.5))
    df = lake.sql("SELECT source_id, peak_jyb, night, image_path FROM photometry ORDER BY source_id")
    assert df.height == 50
    assert df["peak_jyb"].to_list() == [1.5] * 50
    assert df["night"][0] == "2023-12-22"
    assert lake.sql("SELECT count(*) AS n FROM images")["n"][0] == 1


def test_reingest_replaces_rows(lake):
    lake.commit_image(_image(), _phot(40, 1.0))
    lake.commit_image(_image(), _phot(40, 2.0))
    df = lake.sql("SELECT peak_jyb FROM photometry")
    assert df.height == 40 and set(df["peak_jyb"]) == {2.0}
    # version 0 creates the table empty, 1 and 2 are the two measurements
    assert lake.table("photometry").version() == 2 and len(lake.table("photometry").file_uris()) == 1
    info = lake.info()
    assert dict(zip(info["table"], info["rows"]))["photometry"] == 40


def test_files_outside_the_log_are_invisible(lake):
    """A stray copy of a data file, or a file of a foreign schema, in a partition folder adds nothing."""
    import shutil

    lake.commit_image(_image(), _phot(10, 1.0))
    f = lake.table("photometry").file_uris()[0]
    shutil.copy(f, f.replace(".parquet", "-copy.parquet"))
    import pyarrow.parquet as pq
    pq.write_table(pa.table({"peak_jyb": ["not a number"]}), f.rsplit("/", 1)[0] + "/foreign.parquet")
    assert lake.sql("SELECT count(*) AS n FROM photometry")["n"][0] == 10


def _writer(path, rounds):
    lake = Lake(path)
    for k in range(rounds):
        lake.commit_image(_image(), _phot(300, 1.0 + k % 2))


def test_reader_never_sees_a_mix(lake):
    lake.commit_image(_image(), _phot(300, 1.0))
    proc = mp.get_context("spawn").Process(target=_writer, args=(str(lake.path), 40))
    proc.start()
    seen = set()
    reader = Lake(lake.path)
    while proc.is_alive():
        df = reader.sql("SELECT count(*) AS n, min(peak_jyb) AS lo, max(peak_jyb) AS hi FROM photometry")
        n, lo, hi = df.row(0)
        assert n == 300 and lo == hi, f"mixed or partial read: n={n} lo={lo} hi={hi}"
        seen.add(lo)
    proc.join()
    assert proc.exitcode == 0
    assert seen <= {1.0, 2.0}


def test_views_from_another_cwd(lake, tmp_path):
    lake.commit_image(_image(), _phot(5, 1.0))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    code = ("from eselake import Lake; import sys; "
            f"print(Lake({str(lake.path)!r}).sql('SELECT count(*) AS n FROM photometry')['n'][0])")
    out = subprocess.run([sys.executable, "-c", code], cwd=elsewhere, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "5"
    # no path is ever part of the SQL text: file lists are bound variables
    con = lake.connect()
    sql = con.execute("SELECT sql FROM duckdb_views() WHERE view_name = 'photometry_files'").fetchone()[0]
    assert str(lake.path) not in sql


def test_views_are_versioned(lake):
    views = lake.sql("SELECT view_name, version FROM eselake_views")
    names = set(views["view_name"])
    assert {"images", "measurements", "photometry"} <= names
    assert all(v >= 1 for v in views["version"])


def test_lake_path_that_is_a_file(tmp_path):
    f = tmp_path / "not-a-folder"
    f.write_text("x")
    with pytest.raises(LakeError, match="is a file"):
        Lake(f)


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write to read-only folders")
def test_read_only_lake(tmp_path):
    root = tmp_path / "ro"
    root.mkdir()
    root.chmod(0o555)
    try:
        with pytest.raises(LakeError, match="not writable"):
            Lake(root).commit_image(_image(), _phot(3, 1.0))
    finally:
        root.chmod(0o755)


def test_remeasure_and_delete_after_a_delete_rewrote_a_file(tmp_path):
    """Deleting one image of a many-image file makes delta-rs rewrite the file with string_view columns;
    re-measuring and deleting other images of that night still work (before: pyarrow's is_in had no kernel)."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from eselake.sim.lightcurves import simulate_photometry

    sim = simulate_photometry(20, 12, cadence_days=0.25, noise_jy=2e-3, frac_noise=0.02, seed=4)
    ids = sim.images.column("image_id").to_pylist()

    def rows(keep):
        return (sim.images.filter(pc.is_in(sim.images.column("image_id"), pa.array(keep))),
                sim.photometry.filter(pc.is_in(sim.photometry.column("image_id"), pa.array(keep))))
    lake = Lake(tmp_path / "lake")
    lake.commit_batch(*rows(ids[0::2]))
    lake.commit_batch(*rows([ids[1]]))
    assert lake.delete_images([ids[0]]) == 1
    types = {str(pq.read_schema(f.removeprefix("file://")).field("image_id").type)
             for f in lake.table("photometry").file_uris()}
    assert "string_view" in types                       # the case this test is about
    lake.commit_batch(*rows([ids[2]]))                   # re-measured
    assert lake.delete_images([ids[4]]) == 1
    per = lake.sql("SELECT image_id, count(*) AS n FROM photometry GROUP BY ALL ORDER BY image_id")
    assert per["image_id"].to_list() == sorted(set(ids[0::2] + [ids[1]]) - {ids[0], ids[4]})
    assert set(per["n"]) == {20}


def test_newest_snapshot_is_kept_while_the_log_is_unchanged(lake):
    """A process reuses a table's newest snapshot (no replay of the log) only while the log is unchanged: a new
    commit, a commit set aside and written again with the same version, and a damaged older commit are seen."""
    import glob

    from eselake.lake import delta

    for k in range(3):
        lake.commit_image(_image(f"img-{k}", 60300.25 + k), _phot(10, 1.0 + k, f"img-{k}", 60300.25 + k))
    first = lake.snapshots()["photometry"]
    assert lake.snapshots()["photometry"] is first           # kept: the same snapshot object
    lake.commit_image(_image("img-9", 60310.25), _phot(10, 9.0, "img-9", 60310.25))
    newer = lake.snapshots()["photometry"]
    assert newer.version == first.version + 1 and len(newer.files) == len(first.files) + 1
    assert lake.sql("SELECT count(*) AS n FROM photometry")["n"][0] == 40
    # the newest commit set aside and another one written with its version number
    log = lake.path / "photometry" / "_delta_log"
    newest = log / f"{newer.version:020d}.json"
    os.rename(newest, lake.path / "aside.json")
    delta.forget_listing(log)
    assert lake.snapshots()["photometry"].version == first.version
    lake.commit_image(_image("img-8", 60311.25), _phot(10, 8.0, "img-8", 60311.25))
    again = lake.snapshots()["photometry"]
    assert again.version == newer.version and again.files != newer.files
    # an older commit emptied (a crash): refused, as when the table is opened afresh
    older = sorted(glob.glob(str(log / "*.json")))[1]
    open(older, "wb").close()
    with pytest.raises(LakeError, match=os.path.basename(older)):
        lake.snapshots()


def test_a_connection_up_to_a_view_binds_only_what_that_view_reads():
    """open_connection(until=...) creates the views that view reads (directly or through others), and none of
    those a derived dataset replaces reads."""
    from eselake.lake.connect import _needed, view_files

    files = view_files()
    assert _needed(files, "measurements", set()) == {"images", "measurements"}
    daily = _needed(files, "daily_lightcurves", set())
    assert {"measurements", "image_gains", "lightcurve_points", "daily_lightcurves"} <= daily
    assert "variability_stats" not in daily and "ese_search" not in daily
    cands = _needed(files, "ese_candidates_all", {"variability_stats", "ese_search"})
    assert {"variability_stats", "ese_search", "ese_scores"} <= cands
    assert not cands & {"measurements", "daily_lightcurves", "image_gains"}


def test_commit_removed_between_the_log_listing_and_its_stat(tmp_path, monkeypatch):
    """Log cleanup (after a checkpoint) may remove a commit file between a reader's listing of the log and its
    look at that file: the reader opens the table as it is then, no error."""
    from deltalake import DeltaTable

    from eselake.lake import delta

    for i in range(4):
        delta.commit(tmp_path, "t", pa.table({"x": [i]}), mode="append", operation="w")
    log = tmp_path / "t" / "_delta_log"
    newest = DeltaTable(str(tmp_path / "t")).version()
    real = os.scandir

    class Listing:
        def __init__(self, path):
            self.it = real(path)
            self.entries = list(self.it)

        def __enter__(self):
            victim = log / f"{1:020d}.json"
            if victim.exists() and any(e.path == str(victim) for e in self.entries):
                # after the listing, before the stat: a writer checkpoints and cleans up the log
                DeltaTable(str(tmp_path / "t")).create_checkpoint()
                victim.unlink()
            return iter(self.entries)

        def __exit__(self, *exc):
            self.it.close()

    monkeypatch.setattr(delta.os, "scandir", Listing)
    snap = delta.current_snapshot(tmp_path, "t")
    assert snap.version == newest and len(snap.files) == 4
