"""The lake on Delta tables: the cases that lost, doubled or resurrected rows under the old file protocol."""
import contextlib
import multiprocessing as mp
import shutil
import sqlite3
import time

import numpy as np
import pyarrow as pa
import pytest
from click.testing import CliRunner

from eselake import Lake
from eselake.cli import main
from eselake.errors import EselakeError
from eselake.lake import maintain

SPAWN = mp.get_context("spawn")      # delta-rs is not fork-safe


def _run_together(*runs, timeout: float = 300) -> None:
    """Start a spawned process per (target, args) at once; each must exit cleanly
    within ``timeout`` s."""
    procs = [SPAWN.Process(target=target, args=args) for target, args in runs]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout)
        assert p.exitcode == 0


def _image(image_id, mjd, path=None):
    return {"image_id": image_id, "path": path or f"/data/{image_id}.fits", "mjd": mjd, "freq_hz": 1.4e9,
            "rms_jyb": 1e-3, "kind": "image", "ra_center_deg": 10.0, "dec_center_deg": 40.0}


def _phot(image_id, mjd, value, n=20):
    return pa.table({"source_id": [f"SRC {i:04d}" for i in range(n)], "image_id": [image_id] * n,
                     "mjd": [mjd] * n, "peak_jyb": [float(value)] * n, "peak_err_jyb": [0.01] * n})


def _values(lake, image_id):
    return sorted(set(lake.sql("SELECT peak_jyb FROM photometry WHERE image_id = ?", [image_id])["peak_jyb"]))


def _cli(lake, *args):
    return CliRunner().invoke(main, ["--lake", str(lake.path), *args])


def test_compact_then_remeasure_to_earlier_night_never_resurrects(tmp_path):
    """compact; re-measure an image so it moves to an earlier night; add an image to its old night; compact
    again: the old values must not come back (they did with the hand-written compaction)."""
    lake = Lake(tmp_path / "lake")
    for k in range(4):
        lake.commit_image(_image(f"img{k}", 60010.5 + k), _phot(f"img{k}", 60010.5 + k, 1.0))
    maintain.compact(lake)
    lake.commit_image(_image("img2", 60001.5), _phot("img2", 60001.5, 2.0))      # moved to an earlier night
    lake.commit_image(_image("img9", 60012.6), _phot("img9", 60012.6, 3.0))      # img2's old night
    maintain.compact(lake)
    assert _values(lake, "img2") == [2.0]
    assert lake.sql("SELECT count(*) AS n FROM photometry")["n"][0] == 5 * 20
    assert lake.sql("SELECT night FROM images WHERE image_id = 'img2'")["night"][0] == "2023-02-26"
    assert [f for f in maintain.check(lake) if f.severity == "error"] == []


def test_remeasure_finds_rows_of_a_killed_ingest_in_another_night(tmp_path, monkeypatch):
    """An ingest killed between its photometry and images commits leaves hidden rows; re-measured into
    another night (a corrected timestamp), the image must not gain them back (old and new rows doubled).
    Image ids in no order (UUID-like): the log's min/max statistics prune nothing and nothing is missed."""
    import uuid

    from eselake.lake import delta
    lake = Lake(tmp_path / "lake")
    ids = [str(uuid.UUID(int=int(k))) for k in np.random.default_rng(1).integers(0, 2**62, 6)]
    for k, i in enumerate(ids[:5]):
        lake.commit_image(_image(i, 60010.5 + k), _phot(i, 60010.5 + k, 1.0))
    real = delta.commit

    def killed(root, name, table, **kw):          # the images commit of this ingest never happens
        if name == "images":
            raise SystemExit("killed")
        return real(root, name, table, **kw)
    monkeypatch.setattr(delta, "commit", killed)
    with pytest.raises(SystemExit):
        lake.commit_image(_image(ids[5], 60011.5), _phot(ids[5], 60011.5, 5.0))
    monkeypatch.setattr(delta, "commit", real)
    assert lake.sql("SELECT count(*) AS n FROM photometry")["n"][0] == 5 * 20       # hidden rows
    assert lake._nights_of_images([ids[5]]) == ["2023-03-08"]
    lake.commit_image(_image(ids[5], 60003.5), _phot(ids[5], 60003.5, 6.0))          # another night
    assert _values(lake, ids[5]) == [6.0]
    assert lake.sql("SELECT count(*) AS n FROM photometry")["n"][0] == 6 * 20
    assert lake._nights_of_images(ids[:2]) == ["2023-03-07", "2023-03-08"]
    assert lake._nights_of_images(["not-an-image"]) == []


@contextlib.contextmanager
def _in_the_gap(monkeypatch, action):
    """Run ``action()`` when an ingest reaches its images commit (its photometry committed), inside the block."""
    from eselake.lake import delta
    real = delta.commit

    def hooked(root, name, table, **kw):
        if name == "images":
            action()
        return real(root, name, table, **kw)
    monkeypatch.setattr(delta, "commit", hooked)
    try:
        yield
    finally:
        monkeypatch.setattr(delta, "commit", real)


def _killed():
    raise SystemExit("killed")


def test_first_ingest_killed_between_its_commits_is_not_doubled(tmp_path, monkeypatch):
    """The lake's very first ingest killed after its photometry commit (no images table yet): running it again
    replaces the hidden rows rather than adding a second copy."""
    lake = Lake(tmp_path / "lake")
    with _in_the_gap(monkeypatch, _killed), pytest.raises(SystemExit):
        lake.commit_image(_image("img0", 60010.5), _phot("img0", 60010.5, 1.0))
    assert [f.kind for f in maintain.check(lake)] == ["photometry without image"]     # lake check says so
    lake.commit_image(_image("img0", 60010.5), _phot("img0", 60010.5, 1.0))
    assert lake.sql("SELECT count(*) AS n FROM photometry_files")["n"][0] == 20


def _ingest_same(path, barrier, rounds):
    lake = Lake(path)
    for k in range(rounds):
        barrier.wait()
        images = pa.Table.from_pylist([_image(f"new{k}-{j}", 60020.5 + j / 100) for j in range(3)])
        phot = pa.concat_tables([_phot(f"new{k}-{j}", 60020.5 + j / 100, 2.0) for j in range(3)])
        lake.commit_batch(images, phot)


def test_concurrent_ingests_of_the_same_new_images_never_double(tmp_path):
    """Two processes ingest the same new images at the same moment: one copy of each image's rows."""
    lake = Lake(tmp_path / "lake")
    lake.commit_image(_image("img0", 60010.5), _phot("img0", 60010.5, 1.0))
    barrier = SPAWN.Barrier(2)
    _run_together(*[(_ingest_same, (str(lake.path), barrier, 6))] * 2, timeout=180)
    assert lake.sql("SELECT count(*) AS n FROM photometry_files")["n"][0] == 20 + 6 * 3 * 20
    assert lake.sql("SELECT count(*) AS n FROM images")["n"][0] == 1 + 6 * 3


def _first_ingests(base, barrier, rounds, who):
    for k in range(rounds):
        lake = Lake(f"{base}/lake{k}")
        barrier.wait()
        lake.commit_image(_image(f"w{who}-{k}", 60020.5 + who / 100), _phot(f"w{who}-{k}", 60020.5 + who / 100, 2.0))


def test_concurrent_first_ingests_of_a_new_lake_lose_nothing(tmp_path):
    """Three processes each commit their own image to a lake that does not exist yet, at the same moment: every
    image and all its rows are kept (before, a writer that found no table wrote without its replace-where
    predicate and replaced the rows of the writer that had just created it)."""
    barrier = SPAWN.Barrier(3)
    rounds = 8
    _run_together(*[(_first_ingests, (str(tmp_path), barrier, rounds, w)) for w in range(3)])
    for k in range(rounds):
        lake = Lake(tmp_path / f"lake{k}")
        assert lake.sql("SELECT count(*) AS n FROM images")["n"][0] == 3, k
        assert lake.sql("SELECT count(*) AS n FROM photometry_files")["n"][0] == 3 * 20, k


def _first_catalog_loads(base, barrier, rounds):
    cat = pa.table({"source_id": [f"NVSS J{i:05d}" for i in range(50)], "ra_deg": [float(i) for i in range(50)],
                    "dec_deg": [1.0] * 50, "flux_mjy": [100.0] * 50})
    for k in range(rounds):
        lake = Lake(f"{base}/cat{k}")
        barrier.wait()
        lake.write_catalog("nvss", cat)


def test_concurrent_first_loads_of_a_catalogue_keep_one_copy(tmp_path):
    """Two processes load the same catalogue into a lake without a catalogue table at the same moment: one copy
    (before, both found no table and appended)."""
    barrier = SPAWN.Barrier(2)
    rounds = 6
    _run_together(*[(_first_catalog_loads, (str(tmp_path), barrier, rounds))] * 2)
    for k in range(rounds):
        assert Lake(tmp_path / f"cat{k}").sql("SELECT count(*) AS n FROM catalog_sources")["n"][0] == 50, k


def _remeasure(path, rounds, value):
    lake = Lake(path)
    for _ in range(rounds):
        lake.commit_image(_image("img0", 60010.5), _phot("img0", 60010.5, value))


def _compactor(path, rounds):
    lake = Lake(path)
    for _ in range(rounds):
        maintain.compact(lake)


def test_compact_racing_remeasurement(tmp_path):
    """Concurrent compaction and re-measurement: every image holds exactly one measurement's rows."""
    lake = Lake(tmp_path / "lake")
    for k in range(6):
        lake.commit_image(_image(f"img{k}", 60010.5 + k / 100), _phot(f"img{k}", 60010.5 + k / 100, 1.0))
    _run_together((_remeasure, (str(lake.path), 8, 7.0)), (_compactor, (str(lake.path), 4)), timeout=120)
    assert _values(lake, "img0") == [7.0]
    assert lake.sql("SELECT count(*) AS n FROM photometry")["n"][0] == 6 * 20
    res = _cli(lake, "lake", "check", "--fix", "--min-age-s", "0")
    assert res.exit_code == 0, res.output
    assert _values(lake, "img0") == [7.0]          # check --fix never deletes live files


def _load_catalog(path, rounds):
    lake = Lake(path)
    for k in range(rounds):
        lake.write_catalog("nvss", pa.table({"source_id": [f"S{i}" for i in range(500)],
                                             "ra_deg": np.full(500, 10.0), "dec_deg": np.full(500, 40.0),
                                             "flux_mjy": np.full(500, 10.0 + k)}))


def test_catalogue_replacement_never_doubles(tmp_path):
    lake = Lake(tmp_path / "lake")
    _load_catalog(lake.path, 1)
    proc = SPAWN.Process(target=_load_catalog, args=(str(lake.path), 10))
    proc.start()
    reader = Lake(lake.path)
    seen = set()
    while proc.is_alive():
        seen.add(reader.sql("SELECT count(*) AS n FROM catalog_sources")["n"][0])
    proc.join()
    assert seen <= {500}
    # killed mid-load: still one copy
    proc = SPAWN.Process(target=_load_catalog, args=(str(lake.path), 50))
    proc.start()
    time.sleep(1.5)
    proc.kill()
    proc.join()
    assert Lake(lake.path).sql("SELECT count(*) AS n FROM catalog_sources")["n"][0] == 500


@pytest.mark.parametrize("name", ["la'ke *x{1}", "湖 lake ~!"])
def test_paths_with_glob_sql_and_unicode_characters(tmp_path, name):
    sibling = Lake(tmp_path / "lake2")
    sibling.commit_image(_image("other", 60010.5), _phot("other", 60010.5, 5.0, n=7))
    lake = Lake(tmp_path / name)
    lake.commit_image(_image("mine", 60010.5), _phot("mine", 60010.5, 1.0, n=3))
    assert lake.sql("SELECT count(*) AS n FROM photometry")["n"][0] == 3
    res = _cli(lake, "lake", "check", "--fix", "--min-age-s", "0")
    assert res.exit_code == 0, res.output
    assert sibling.sql("SELECT count(*) AS n FROM photometry")["n"][0] == 7
    assert _cli(lake, "sql", "SELECT count(*) AS n FROM measurements", "--format", "csv").output.split()[-1] == "3"


def test_unsupported_path_characters_are_a_clear_error(tmp_path):
    for name in ("lake[2]", "lake%41", "lake?", "lake #1"):   # '#', '?': delta-rs loses the tables' history
        res = CliRunner().invoke(main, ["--lake", str(tmp_path / name), "init"])
        assert res.exit_code == 2 and "cannot be used in a lake's path" in res.output, res.output


def test_check_finds_missing_and_foreign_files(tmp_path):
    lake = Lake(tmp_path / "lake")
    lake.commit_image(_image("a", 60010.5), _phot("a", 60010.5, 1.0))
    lake.commit_image(_image("b", 60011.5), _phot("b", 60011.5, 1.0))
    files = lake.table("photometry").file_uris()
    folder = files[0].rsplit("/", 1)[0]
    shutil.copy(files[0], folder + "/stray-copy.parquet")
    found = maintain.check(lake)
    assert [f.kind for f in found] == ["unreferenced file"]
    assert lake.sql("SELECT count(*) AS n FROM photometry")["n"][0] == 40
    import os
    os.remove(files[1])
    res = _cli(lake, "lake", "check")
    assert res.exit_code == 1 and "missing file" in res.output


def test_sql_console_is_read_only_and_sandboxed(tmp_path):
    lake = Lake(tmp_path / "lake")
    lake.commit_image(_image("a", 60010.5), _phot("a", 60010.5, 1.0))
    target = tmp_path / "out.csv"
    for q in [f"COPY (SELECT 1) TO '{target}'", f"COPY (SELECT 1) TO '{lake.path}/images/x.parquet'",
              "ATTACH '/tmp/x.db'", "INSTALL httpfs", "LOAD httpfs", "CREATE TABLE t AS SELECT 1",
              "SELECT * FROM read_csv('/etc/passwd')", "SET enable_external_access = true"]:
        res = _cli(lake, "sql", q)
        assert res.exit_code == 2 and "Traceback" not in res.output, (q, res.output)
    assert not target.exists()
    assert _cli(lake, "sql", "SELECT count(*) AS n FROM photometry").exit_code == 0
    res = _cli(lake, "sql", "--unsafe", f"COPY (SELECT 1 AS x) TO '{target}'")
    assert res.exit_code == 0, res.output
    assert target.exists()


def test_time_travel_and_history(tmp_path):
    lake = Lake(tmp_path / "lake")
    lake.commit_image(_image("a", 60010.5), _phot("a", 60010.5, 1.0))
    v = lake.table("images").version()
    time.sleep(0.05)
    lake.commit_image(_image("a", 60010.5), _phot("a", 60010.5, 2.0))
    lake.commit_image(_image("b", 60011.5), _phot("b", 60011.5, 2.0))
    assert _values(Lake(lake.path, as_of=v), "a") == [1.0]
    assert Lake(lake.path, as_of=v).sql("SELECT count(*) AS n FROM photometry")["n"][0] == 20
    res = _cli(lake, "sql", "--as-of", str(v), "SELECT max(peak_jyb) AS m FROM photometry", "--format", "csv")
    assert res.exit_code == 0 and res.output.split()[-1] == "1.0", res.output
    res = _cli(lake, "lake", "history", "--format", "csv")
    assert res.exit_code == 0 and "ingest" in res.output
    assert _cli(lake, "sql", "--as-of", "99", "SELECT 1").exit_code == 2
    with pytest.raises(EselakeError):
        Lake(lake.path, as_of=v).commit_image(_image("c", 60012.5), _phot("c", 60012.5, 1.0))


def test_delete_images_and_refresh(tmp_path):
    lake = Lake(tmp_path / "lake")
    for k in range(3):
        lake.commit_image(_image(f"i{k}", 60010.5 + k), _phot(f"i{k}", 60010.5 + k, 1.0))
    assert lake.delete_images(["i1"]) == 1
    assert lake.sql("SELECT count(*) AS n FROM photometry")["n"][0] == 40


def _seed_db(path, rows):
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE photometry (source_id TEXT, mjd REAL, peak_jyb REAL, peak_err_jyb REAL, "
                "image_path TEXT, flags INTEGER)")
    con.executemany("INSERT INTO photometry VALUES (?, ?, ?, ?, ?, ?)", rows)
    con.commit()
    con.close()


def test_ingest_table_sqlite_csv_parquet(tmp_path):
    rows = [(f"NVSS J{i:06d}+420000", 60000.5 + d, 0.1 + 0.001 * i, 0.002, f"/img/d{d}.fits", 0)
            for d in range(12) for i in range(15)]
    rows += [("", 60000.5, 0.1, 0.002, "/img/d0.fits", 0),          # no source id
             ("NVSS X", 60000.5, float("nan"), 0.002, "/img/d0.fits", 0),
             ("NVSS Y", 60000.5, 0.1, -1.0, "/img/d0.fits", 0)]
    db = tmp_path / "products.sqlite3"
    _seed_db(db, rows)
    lake = Lake(tmp_path / "lake")
    res = _cli(lake, "ingest", "table", str(db))
    assert res.exit_code == 0, res.output
    assert "imported 180 row(s) of 12 image(s)" in res.output
    assert "rejected 1 row(s): missing source_id" in res.output and "peak_err_jyb not > 0" in res.output
    assert _cli(lake, "ingest", "table", str(db)).exit_code == 0           # idempotent
    assert lake.sql("SELECT count(*) AS n FROM photometry")["n"][0] == 180
    stats = lake.sql("SELECT count(*) AS n FROM variability_stats")["n"][0]
    assert stats == 15 and lake.stale == []
    df = lake.sql("SELECT source_id, mjd, peak_jyb, peak_err_jyb, image_id FROM measurements").to_pandas()
    df.to_csv(tmp_path / "m.csv", index=False)
    df.to_parquet(tmp_path / "m.parquet")
    other = Lake(tmp_path / "other")
    for f in ("m.csv", "m.parquet"):
        assert _cli(other, "ingest", "table", str(tmp_path / f)).exit_code == 0
    assert other.sql("SELECT count(*) AS n FROM photometry")["n"][0] == 180
    bad = tmp_path / "bad.csv"
    bad.write_text("name,flux\na,1\n")
    res = _cli(other, "ingest", "table", str(bad))
    assert res.exit_code == 2 and "missing column" in res.output
    assert other.sql("SELECT count(*) AS n FROM photometry")["n"][0] == 180


def test_upgrade_from_file_layout(tmp_path):
    """A lake of eselake 0.1 (hive folders of Parquet files, images rows as commit markers) converts."""
    import pyarrow.parquet as pq

    from eselake.lake.layout import IMAGES_SCHEMA, PHOTOMETRY_SCHEMA
    from eselake.lake.write import conform

    root = tmp_path / "old"
    img = conform(pa.Table.from_pylist([dict(_image("a", 60010.5), ingest_id="2", n_sources=20)]), IMAGES_SCHEMA)
    phot = conform(_phot("a", 60010.5, 1.0).append_column("ingest_id", pa.array(["2"] * 20)), PHOTOMETRY_SCHEMA)
    stale = conform(_phot("a", 60010.5, 9.0).append_column("ingest_id", pa.array(["1"] * 20)), PHOTOMETRY_SCHEMA)
    for t, d, n in ((img, "images", "a~2"), (phot, "photometry", "a~2"), (stale, "photometry", "a~1")):
        (root / d / "night=2023-02-25").mkdir(parents=True, exist_ok=True)
        pq.write_table(t.drop_columns(["night"]), root / d / "night=2023-02-25" / f"{n}.parquet")
    lake = Lake(root)
    res = _cli(lake, "lake", "check")
    assert res.exit_code == 2 and "lake upgrade" in res.output
    res = _cli(lake, "lake", "upgrade")
    assert res.exit_code == 0, res.output
    assert _values(Lake(root), "a") == [1.0]
    assert (root / "_old_layout" / "photometry").is_dir()
    assert _cli(Lake(root), "lake", "check").exit_code == 0


def test_creation_killed_before_its_first_commit_is_no_old_layout(tmp_path):
    """A first ingest killed after writing data files but before the Delta log exists: leftovers, not a lake
    of eselake 0.1; the next ingest creates the tables."""
    import uuid

    import pyarrow.parquet as pq

    root = tmp_path / "lake"
    for name, fname in (("images", f"part-00000-{uuid.uuid4()}-c000.zstd.parquet"),
                        ("photometry", f"part-{uuid.uuid4()}.zstd.parquet")):
        (root / name / "night=2023-02-25").mkdir(parents=True)
        pq.write_table(pa.table({"x": [1]}), root / name / "night=2023-02-25" / fname)
    lake = Lake(root)
    found = maintain.check(lake)
    assert {f.severity for f in found} == {"leftover"} and all("never committed" in f.detail for f in found)
    for cmd in (("lake", "check"), ("sql", "SELECT 1")):
        res = _cli(lake, *cmd)
        assert res.exit_code == 2 and "no lake at" in res.output and "upgrade" not in res.output, res.output
    lake.commit_image(_image("a", 60010.5), _phot("a", 60010.5, 1.0))
    assert _values(lake, "a") == [1.0]
    assert not [f for f in maintain.check(lake) if f.severity == "error"]


def test_missing_lake_is_an_error(tmp_path):
    res = CliRunner().invoke(main, ["--lake", str(tmp_path / "typo"), "sql", "SELECT 1"])
    assert res.exit_code == 2 and "no lake at" in res.output
    res = CliRunner().invoke(main, ["--lake", str(tmp_path / "typo"), "lake", "check"])
    assert res.exit_code == 2


def test_full_disk_and_read_only_lake_maintenance(tmp_path):
    """Catalogue loads, reviews and compaction on a full disk, and compaction of a read-only lake: one-line
    errors, the lake as it was."""
    import subprocess

    from tests.test_bad_inputs import _tmpfs

    with _tmpfs(tmp_path / "small", "400k") as mnt:
        lake = Lake(mnt / "lake")
        lake.commit_image(_image("a", 60010.5), _phot("a", 60010.5, 1.0))
        big = 60_000
        cat = pa.table({"source_id": [f"S{i:07d}" for i in range(big)],
                        "ra_deg": np.random.default_rng(1).random(big), "dec_deg": np.zeros(big),
                        "flux_mjy": np.random.default_rng(2).random(big)})
        for args in (["catalog", "load", "sources"],):
            f = tmp_path / "big.csv"
            cat.rename_columns(["name", "ra", "dec", "flux_mjy"]).to_pandas().to_csv(f, index=False)
            res = _cli(lake, *args, str(f))
            assert res.exit_code == 2 and "disk is full" in res.output and "Traceback" not in res.output, res.output
        assert lake.sql("SELECT count(*) AS n FROM catalog_sources")["n"][0] == 0
        assert lake.sql("SELECT count(*) AS n FROM photometry")["n"][0] == 20
        res = _cli(lake, "review", "SRC 0001", "--status", "investigated", "--notes", "x" * 2_000_000)
        assert res.exit_code == 2 and "Traceback" not in res.output, res.output
        assert lake.sql("SELECT count(*) AS n FROM reviews_files")["n"][0] == 0
    with _tmpfs(tmp_path / "ro", "1m") as mnt:
        lake = Lake(mnt / "lake")
        for k in range(3):
            lake.commit_image(_image(f"i{k}", 60010.5), _phot(f"i{k}", 60010.5 + k / 1e3, 1.0))
        subprocess.run(["mount", "-o", "remount,ro", str(mnt)], check=True)
        res = _cli(lake, "lake", "compact")
        assert res.exit_code == 2 and "read-only" in res.output and "Traceback" not in res.output, res.output
        assert Lake(mnt / "lake").sql("SELECT count(*) AS n FROM photometry")["n"][0] == 60


def test_as_of_reproduces_candidates_and_exports(tmp_path):
    from tests.conftest import simulated_lake

    lake, sim = simulated_lake(tmp_path / "lake", 12, 120, dip=(3, 60040, 30, 0.4))
    v = lake.table("images").version()
    before = _cli(lake, "ese-detect", "--format", "csv").output
    exported = _cli(lake, "export", "--source-id", sim.source_ids[3], "--format", "csv").output
    assert sim.source_ids[3] in before
    time.sleep(0.05)
    lake.delete_images(sim.images.column("image_id").to_pylist()[30:80])
    from eselake.lake.derived import refresh
    refresh(lake)
    assert sim.source_ids[3] not in _cli(lake, "ese-detect", "--format", "csv").output
    assert _cli(lake, "ese-detect", "--as-of", str(v), "--format", "csv").output == before
    assert _cli(lake, "export", "--source-id", sim.source_ids[3], "--as-of", str(v), "--format", "csv").output \
        == exported


def test_cli_delete_image_and_one_line_sql_errors(tmp_path):
    lake = Lake(tmp_path / "lake")
    for k in range(3):
        lake.commit_image(_image(f"img{k}", 60010.5 + k), _phot(f"img{k}", 60010.5 + k, 1.0))
    res = _cli(lake, "lake", "delete-image", "img1")
    assert res.exit_code == 0 and "removed 1 image(s)" in res.output, res.output
    assert lake.sql("SELECT count(*) AS n FROM photometry")["n"][0] == 40
    res = _cli(lake, "lake", "delete-image", "img9")
    assert res.exit_code == 2 and "no image 'img9' in the lake" in res.output
    for sql in ("SELECT 'a'::INT", "SELECT * FROM no_such_table"):
        res = _cli(lake, "sql", sql)
        lines = [ln for ln in res.output.splitlines() if ln.strip()]
        assert res.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error: "), res.output


def test_commit_that_may_not_fit_on_the_disk_is_refused_before_writing(tmp_path, monkeypatch):
    """A nearly full disk: the ingest is refused in one line before any file is written (a write that runs
    out of space leaves partial files and delta-rs panic messages behind); the committed data are untouched."""
    import collections
    import shutil as sh

    from eselake.errors import LakeError
    from eselake.lake import delta

    lake = Lake(tmp_path / "lake")
    lake.commit_image(_image("img0", 60010.5), _phot("img0", 60010.5, 1.0))
    files = sorted(str(p) for p in lake.path.rglob("*") if p.is_file())
    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr(delta.shutil, "disk_usage", lambda p: usage(1 << 30, (1 << 30) - (16 << 10), 16 << 10))
    with pytest.raises(LakeError, match="the disk is full or nearly"):
        lake.commit_image(_image("img1", 60011.5), _phot("img1", 60011.5, 1.0))
    monkeypatch.setattr(delta.shutil, "disk_usage", sh.disk_usage)
    assert sorted(str(p) for p in lake.path.rglob("*") if p.is_file()) == files
    assert lake.sql("SELECT count(*) AS n FROM photometry_files")["n"][0] == 20


def test_check_fix_never_deletes_the_photometry_of_an_ingest_in_flight(tmp_path, monkeypatch):
    """`lake check --fix` run between an ingest's photometry and images commits sees 'photometry without
    image': it keeps rows younger than the grace period (the ingest then completes whole), and removes them
    only once they are older (an ingest that was killed there)."""
    lake = Lake(tmp_path / "lake")
    lake.commit_image(_image("img0", 60010.5), _phot("img0", 60010.5, 1.0))
    seen = []

    def fixer():
        found = maintain.check(Lake(lake.path))
        seen.extend(f.kind for f in found)
        maintain.fix(Lake(lake.path), found)                      # default grace: one hour
    with _in_the_gap(monkeypatch, fixer):
        lake.commit_image(_image("img1", 60011.5), _phot("img1", 60011.5, 1.0))
    assert seen == ["photometry without image"]
    assert not [f for f in maintain.check(lake) if f.severity == "error"]
    assert lake.sql("SELECT count(*) AS n FROM photometry")["n"][0] == 40

    with _in_the_gap(monkeypatch, _killed), pytest.raises(SystemExit):     # an ingest killed in the gap
        lake.commit_image(_image("img2", 60012.5), _phot("img2", 60012.5, 1.0))
    found = maintain.check(lake)
    assert maintain.fix(lake, found) == []                        # too young to be removed
    assert maintain.fix(lake, found, min_age_s=0) == ["photometry rows of img2"]
    assert [f.kind for f in maintain.check(lake)] == []
    assert lake.sql("SELECT count(*) AS n FROM photometry_files")["n"][0] == 40


def test_delete_and_remeasure_of_one_image_never_interleave(tmp_path, monkeypatch):
    """A delete of an image arriving between the two commits of its re-measurement waits for it, so the image
    ends deleted in both tables (before, it ended as an images row without measurements)."""
    import threading

    lake = Lake(tmp_path / "lake")
    lake.commit_image(_image("img0", 60010.5), _phot("img0", 60010.5, 1.0))
    deleter = threading.Thread(target=lambda: Lake(lake.path).delete_images(["img0"]))

    def delete():
        deleter.start()
        deleter.join(1.0)
        assert deleter.is_alive()                         # it waits for this ingest's images commit
    with _in_the_gap(monkeypatch, delete):
        lake.commit_image(_image("img0", 60010.5), _phot("img0", 60010.5, 2.0))
    deleter.join(30)
    assert lake.sql("SELECT count(*) AS n FROM images")["n"][0] == 0
    assert lake.sql("SELECT count(*) AS n FROM photometry_files")["n"][0] == 0
    assert not [f for f in maintain.check(lake) if f.severity == "error"]


def test_as_of_a_version_whose_commit_file_was_written_late(tmp_path):
    """delta-rs travels in time by commit files' modification times; a commit file written some time after its
    commitInfo timestamp (a slow disk, a loaded machine) is still the version --as-of names (before, the lake
    as of it showed the version before, once the first ingest's table creation made that an empty one)."""
    import os

    lake = Lake(tmp_path / "lake")
    lake.commit_image(_image("a", 60010.5), _phot("a", 60010.5, 1.0))
    v = lake.table("images").version()
    log = lake.path / "images" / "_delta_log" / f"{v:020d}.json"
    st = os.stat(log)
    os.utime(log, ns=(st.st_atime_ns, st.st_mtime_ns + 100_000_000))       # written 0.1 s late
    time.sleep(0.3)
    lake.commit_image(_image("a", 60010.5), _phot("a", 60010.5, 2.0))
    assert _values(Lake(lake.path, as_of=v), "a") == [1.0]
    assert _values(Lake(lake.path), "a") == [2.0]
