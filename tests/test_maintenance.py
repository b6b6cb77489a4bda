"""lake compact, vacuum and check --fix: results unchanged, files clustered, only unreferenced files removed."""
import os
import time

import pyarrow as pa
import pyarrow.parquet as pq
from click.testing import CliRunner
from polars.testing import assert_frame_equal

from eselake import Lake
from eselake.cli import main
from eselake.lake import maintain
from eselake.lake.derived import refresh
from eselake.sim.lightcurves import Dip, simulate_photometry

QUERIES = [
    "SELECT source_id, n_obs, mean_flux_mjy, chi2_nu, sigma_deviation FROM variability_stats ORDER BY source_id",
    "SELECT mjd, peak_jyb, normalized_flux_jy FROM photometry WHERE source_id = 'SIM J000004' ORDER BY mjd",
    "SELECT count(*) AS n, sum(peak_jyb) AS s FROM photometry",
]


def _per_image_lake(path, n_images=24):
    sim = simulate_photometry(20, n_images, cadence_days=0.25, noise_jy=2e-3, frac_noise=0.02, seed=4,
                              dips=[Dip(4, 60002, 3, 0.4)])
    lake = Lake(path)
    ph = sim.photometry
    for img in sim.images.to_pylist():
        lake.commit_image(img, ph.filter(pa.compute.equal(ph.column("image_id"), img["image_id"])))
    refresh(lake)
    return lake, sim


def _cli(lake, *args):
    return CliRunner().invoke(main, ["--lake", str(lake.path), *args])


def test_compact_keeps_every_query_result_and_clusters_by_source(tmp_path):
    lake, sim = _per_image_lake(tmp_path / "lake")
    before = [lake.sql(q) for q in QUERIES]
    n_files = len(lake.table("photometry").file_uris())
    res = _cli(lake, "lake", "compact")
    assert res.exit_code == 0 and "photometry" in res.output, res.output
    files = lake.table("photometry").file_uris()
    assert len(files) < n_files
    after = [lake.sql(q) for q in QUERIES]
    for b, a in zip(before, after):
        assert_frame_equal(b, a, check_exact=False, rel_tol=1e-9, abs_tol=1e-12)
    ids = pq.read_table(files[0], columns=["source_id"]).column(0).to_pylist()
    assert ids == sorted(ids)                      # Z-ordered on one column: sorted by source_id
    assert "nothing to compact" in _cli(lake, "lake", "compact").output
    assert lake.stale == []                        # compaction does not make derived data stale


def test_vacuum_and_check_fix_remove_only_what_no_version_needs(tmp_path):
    lake, sim = _per_image_lake(tmp_path / "lake", n_images=6)
    img = sim.images.to_pylist()[0]
    rows = sim.photometry.filter(pa.compute.equal(sim.photometry.column("image_id"), img["image_id"]))
    lake.commit_image(img, rows)                   # the old file is now only needed for time travel
    folder = os.path.dirname(lake.table("photometry").file_uris()[0])
    stray = os.path.join(folder, "stray.parquet")
    pq.write_table(rows, stray)
    old = time.time() - 7200
    os.utime(stray, (old, old))
    res = _cli(lake, "lake", "check")
    assert res.exit_code == 0 and "1 unreferenced file" in " ".join(res.output.split()), res.output
    res = _cli(lake, "lake", "check", "--fix")
    assert "removed 1 leftover" in res.output and not os.path.exists(stray)
    assert "is clean" in " ".join(_cli(lake, "lake", "check").output.split())
    n = lake.sql("SELECT count(*) AS n FROM photometry")["n"][0]
    res = _cli(lake, "lake", "vacuum", "--retention-hours", "0")
    assert res.exit_code == 0 and "deleted" in res.output, res.output
    assert lake.sql("SELECT count(*) AS n FROM photometry")["n"][0] == n
    # an unreadable referenced file is an error
    f = lake.table("photometry").file_uris()[0]
    with open(f, "wb") as fh:
        fh.write(b"PAR1 not really")
    res = _cli(lake, "lake", "check")
    assert res.exit_code == 1 and "unreadable file" in res.output


def test_vacuum_leaves_derived_data_current(tmp_path):
    """Vacuum commits to the derived tables (the references included) but changes no data: nothing becomes
    stale, and the next refresh has nothing to do (not a full refresh with a new reference set)."""
    from eselake.lake.derived import derived_state

    lake, sim = _per_image_lake(tmp_path / "lake")
    img = sim.images.to_pylist()[0]
    lake.commit_image(img, sim.photometry.filter(pa.compute.equal(sim.photometry.column("image_id"), img["image_id"])))
    refresh(lake, full=True)                       # a new reference set: the old one's files are vacuumed
    before = derived_state(lake)
    assert not [n for n, s in before.items() if s.startswith("stale")], before
    maintain.vacuum(lake, retention_hours=0)
    assert derived_state(lake) == before
    assert refresh(lake)["mode"] not in ("full",)


def _rows_of(sim, image_id):
    return sim.photometry.filter(pa.compute.equal(sim.photometry.column("image_id"), image_id))


def test_check_finds_damaged_and_missing_files_and_fix_repairs_the_lake(tmp_path):
    """A truncated photometry file and a lost derived file make every query fail; `lake check` names both,
    `--fix` sets the damaged file aside, drops both from their tables and rebuilds derived data; the image
    that lost its rows is reported, and measuring it again leaves a clean lake equal to its views."""
    from tests.test_derived import assert_derived_equal_views

    lake, sim = _per_image_lake(tmp_path / "lake", n_images=8)
    n_rows = lake.sql("SELECT count(*) AS n FROM photometry")["n"][0]
    ph = lake.table("photometry")
    victim = sorted(ph.file_uris())[2].removeprefix("file://")
    lost = set(pq.read_table(victim, columns=["image_id"]).column(0).to_pylist())
    with open(victim, "r+b") as fh:
        fh.truncate(os.path.getsize(victim) // 2)
    derived_file = lake.table("source_stats").file_uris()[0].removeprefix("file://")
    os.remove(derived_file)

    found = {(f.kind, f.table) for f in maintain.check(lake) if f.severity == "error"}
    assert found == {("unreadable file", "photometry"), ("missing file", "source_stats")}
    res = _cli(lake, "lake", "check", "--fix")
    assert res.exit_code == 1, res.output                     # the image that lost its rows is still reported
    assert "repaired" in res.output and "row count" in res.output
    assert list((lake.path / "quarantine").rglob("*.parquet"))[0].name == os.path.basename(victim)
    assert {f.path for f in maintain.check(lake) if f.kind == "row count"} == lost
    assert lake.sql("SELECT count(*) AS n FROM photometry")["n"][0] == n_rows - 20 * len(lost)

    for img in sim.images.to_pylist():                       # measure the image again
        if img["image_id"] in lost:
            lake.commit_image(img, _rows_of(sim, img["image_id"]))
    refresh(lake)
    assert not [f for f in maintain.check(lake, full=True) if f.severity == "error"]
    assert lake.sql("SELECT count(*) AS n FROM photometry")["n"][0] == n_rows
    assert_derived_equal_views(lake)


def test_full_check_reads_values_the_footer_check_cannot_see(tmp_path):
    """A flipped bit in a data page that still decodes (same size, same footer) changes a value beyond the
    range the Delta log recorded: only `lake check --full` finds it."""
    import random

    lake, _ = _per_image_lake(tmp_path / "lake", n_images=4)
    victim = sorted(lake.table("photometry").file_uris())[0].removeprefix("file://")
    good_bytes = open(victim, "rb").read()
    good = pq.read_table(victim)
    data_end = len(good_bytes) - pq.ParquetFile(victim).metadata.serialized_size - 8
    rng = random.Random(3)
    for _ in range(400):
        bad = bytearray(good_bytes)
        pos = rng.randrange(4, data_end)
        bad[pos] ^= 1 << rng.randrange(8)
        with open(victim, "wb") as fh:
            fh.write(bad)
        try:
            changed = not pq.read_table(victim).equals(good)
        except Exception:  # noqa: BLE001 - this flip does not decode: try another
            continue
        if not changed or [f for f in maintain.check(lake) if f.severity == "error"]:
            continue
        full = [f for f in maintain.check(lake, full=True) if f.severity == "error"]
        if full:
            break
    else:
        raise AssertionError("no decodable flip out of the recorded range found")
    assert [(f.kind, f.path) for f in full] == [("damaged file", victim)]
    assert "the log recorded" in full[0].detail
    res = _cli(lake, "lake", "check", "--full", "--format", "json")
    assert res.exit_code == 1 and "damaged file" in res.output


def test_damaged_log_is_named_and_never_read_as_a_lost_commit(tmp_path):
    """An emptied commit file (a machine crash before the data reached the disk) would make delta-rs drop that
    commit's rows silently, and a commit that is not JSON fails with no file named: both are refused naming the
    file, `lake check` reports them and `--fix` deletes nothing; the restored file gives the lake back."""
    import glob

    import pytest

    from eselake.errors import LakeError

    lake, _ = _per_image_lake(tmp_path / "lake", n_images=5)
    n_rows = lake.sql("SELECT count(*) AS n FROM photometry")["n"][0]
    commit = sorted(glob.glob(str(lake.path / "images" / "_delta_log" / "*.json")))[2]
    good = open(commit, "rb").read()
    for damage in (b"", good[: len(good) // 2]):
        with open(commit, "wb") as fh:
            fh.write(damage)
        with pytest.raises(LakeError, match=os.path.basename(commit)):
            Lake(lake.path).sql("SELECT count(*) FROM images")
        res = _cli(lake, "lake", "check", "--fix", "--format", "csv")
        assert res.exit_code == 1 and "damaged log" in res.output and os.path.basename(commit) in res.output
        assert "photometry rows" not in res.output
        with open(commit, "wb") as fh:
            fh.write(good)
        assert Lake(lake.path).sql("SELECT count(*) AS n FROM photometry")["n"][0] == n_rows
    assert _cli(lake, "lake", "check").exit_code == 0


def test_vacuum_retries_on_the_version_it_lost_to(tmp_path, monkeypatch):
    """A re-measurement committed while vacuum works on its snapshot: vacuum retries on the new version and
    succeeds (before, every retry reused the old snapshot and failed with 'too many concurrent writers')."""
    from eselake.lake import delta

    lake, sim = _per_image_lake(tmp_path / "lake", n_images=4)
    again = sim.images.to_pylist()[2]
    lake.commit_image(again, _rows_of(sim, again["image_id"]))        # its old files are now vacuum's to delete
    img = sim.images.to_pylist()[1]
    real = delta.open_table
    done = []

    def open_then_commit(root, name, *a, **kw):
        dt = real(root, name, *a, **kw)
        if name == "images" and not done:
            done.append(1)
            Lake(lake.path).commit_image(img, _rows_of(sim, img["image_id"]))     # a concurrent writer
        return dt
    monkeypatch.setattr(delta, "open_table", open_then_commit)
    monkeypatch.setattr(delta, "ATTEMPTS", 4)
    maintain.vacuum(lake, retention_hours=0)
    monkeypatch.setattr(delta, "open_table", real)
    assert done and lake.sql("SELECT count(*) AS n FROM photometry")["n"][0] == 4 * 20


def test_check_finds_a_doubled_catalogue_and_a_reload_replaces_it(tmp_path):
    """A catalogue whose rows were committed twice (an older version's racing first loads) is an error for
    `lake check` (before: clean), and loading it again leaves one copy."""
    from eselake.lake import delta
    from eselake.lake.layout import CATALOG_SCHEMA
    from eselake.lake.write import conform

    lake, _ = _per_image_lake(tmp_path / "lake", n_images=2)
    cat = pa.table({"source_id": [f"NVSS J{i:05d}" for i in range(30)], "ra_deg": [float(i) for i in range(30)],
                    "dec_deg": [1.0] * 30, "flux_mjy": [10.0] * 30})
    lake.write_catalog("nvss", cat)
    rows = delta.open_table(lake.path, "catalog_sources").to_pyarrow_table()
    delta.commit(lake.path, "catalog_sources", conform(rows, CATALOG_SCHEMA), mode="append",
                 partition_by=["catalog"])                                       # the second copy
    found = [f for f in maintain.check(lake) if f.severity == "error"]
    assert {f.kind for f in found} == {"duplicate catalogue rows"} and len(found) == 20   # (listed up to 20)
    lake.write_catalog("nvss", cat)
    assert lake.sql("SELECT count(*) AS n FROM catalog_sources")["n"][0] == 30
    assert not [f for f in maintain.check(lake) if f.severity == "error"]


def test_lost_newest_commit_is_set_aside_and_its_image_measured_again(tmp_path):
    """The newest photometry commit emptied by a crash: readers and writers refuse the table (a writer would
    build on the hole for good), `lake check --fix` sets the commit aside so the table returns to its previous
    version, the image it held is reported, and measuring it again leaves a clean lake equal to its views."""
    import glob

    import pytest

    from eselake.errors import LakeError
    from tests.test_derived import assert_derived_equal_views

    lake, sim = _per_image_lake(tmp_path / "lake", n_images=5)
    newest = sorted(glob.glob(str(lake.path / "photometry" / "_delta_log" / "*.json")))[-1]
    open(newest, "wb").close()
    last = sim.images.to_pylist()[-1]
    with pytest.raises(LakeError, match="is empty"):
        Lake(lake.path).commit_image(last, _rows_of(sim, last["image_id"]))
    res = _cli(lake, "lake", "check", "--fix", "--format", "csv")
    assert "lost commit" in res.output and res.exit_code == 1, res.output
    assert {f.path for f in maintain.check(lake) if f.severity == "error"} == {last["image_id"]}   # row count
    Lake(lake.path).commit_image(last, _rows_of(sim, last["image_id"]))
    refresh(lake)
    assert not [f for f in maintain.check(lake) if f.severity == "error"]
    assert lake.sql("SELECT count(*) AS n FROM photometry")["n"][0] == 5 * 20
    assert_derived_equal_views(lake)
