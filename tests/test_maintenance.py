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
