"""lake check and lake compact."""
import os
import time

import pyarrow as pa
from click.testing import CliRunner

from eselake import Lake
from eselake.cli import main
from eselake.sim.lightcurves import Dip, simulate_photometry
from eselake.lake import maintain

QUERIES = [
    "SELECT source_id, n_obs, mean_flux_mjy, chi2_nu, sigma_deviation FROM variability_stats ORDER BY source_id",
    "SELECT source_id, composite_score FROM ese_candidates ORDER BY source_id",
    "SELECT mjd, peak_jyb, normalized_flux_jy FROM photometry WHERE source_id = 'SIM J000004' ORDER BY mjd",
    "SELECT count(*) AS n, sum(peak_jyb) AS s FROM photometry",
]


def _per_image_lake(path, n_images=24):
    sim = simulate_photometry(20, n_images, cadence_days=0.25, noise_jy=2e-3, frac_noise=0.02, seed=4,
                              dips=[Dip(4, 60002, 3, 0.4)])
    lake = Lake(path)
    ph = sim.photometry
    for img in sim.images.to_pylist():
        rows = ph.filter(pa.compute.equal(ph.column("image_id"), img["image_id"]))
        lake.commit_image(img, rows)
    return lake, sim


def test_compact_keeps_every_query_result(tmp_path):
    lake, sim = _per_image_lake(tmp_path / "lake")
    # re-ingest a few images: superseded files are gone, results are what they are
    before = [lake.sql(q) for q in QUERIES]
    n_files = len(lake.files("photometry"))
    res = CliRunner().invoke(main, ["--lake", str(lake.path), "lake", "compact"])
    assert res.exit_code == 0, res.output
    assert len(lake.files("photometry")) < n_files
    nights = {p.parent.name for p in lake.files("photometry")}
    assert len(lake.files("photometry")) == len(nights)
    after = [lake.sql(q) for q in QUERIES]
    from polars.testing import assert_frame_equal
    for b, a in zip(before, after):          # equal up to floating-point summation order
        assert_frame_equal(b, a, check_exact=False, rel_tol=1e-9, abs_tol=1e-12)
    # compacted files are sorted by source_id
    import pyarrow.parquet as pq
    ids = pq.read_table(lake.files("photometry")[0], columns=["source_id"]).column(0).to_pylist()
    assert ids == sorted(ids)
    # an image committed after compaction is still skipped as already ingested, re-ingest replaces
    img = sim.images.to_pylist()[0]
    assert lake.committed_image(img["image_id"]) is not None
    ph = sim.photometry.filter(pa.compute.equal(sim.photometry.column("image_id"), img["image_id"]))
    lake.commit_image(img, ph)
    assert lake.sql("SELECT count(*) AS n FROM photometry")["n"][0] == before[3]["n"][0]
    assert maintain.check(lake) == [] or all(f.severity == "leftover" for f in maintain.check(lake))


def test_check_reports_leftovers_and_errors(tmp_path):
    lake, sim = _per_image_lake(tmp_path / "lake", n_images=4)
    runner = CliRunner()
    res = runner.invoke(main, ["--lake", str(lake.path), "lake", "check"])
    assert res.exit_code == 0 and "is clean" in res.output and "leftover(s) of" not in res.output
    # an interrupted write leaves a temp file and an uncommitted photometry file
    night_dir = lake.files("photometry")[0].parent
    (night_dir / ".x.parquet.abcd.tmp").write_bytes(b"partial")
    from eselake.lake.layout import PHOTOMETRY_SCHEMA
    from eselake.lake.write import conform, write_parquet_atomic
    orphan = conform(sim.photometry.slice(0, 5).append_column("ingest_id", pa.array(["zzz"] * 5)), PHOTOMETRY_SCHEMA)
    write_parquet_atomic(orphan, night_dir / "sim-000000~zzz.parquet")
    res = runner.invoke(main, ["--lake", str(lake.path), "lake", "check"])
    assert res.exit_code == 0 and "2 leftover" in res.output
    old = time.time() - 7200
    for p in night_dir.iterdir():
        os.utime(p, (old, old))
    res = runner.invoke(main, ["--lake", str(lake.path), "lake", "check", "--fix"])
    assert "removed 2" in res.output
    assert "is clean" in runner.invoke(main, ["--lake", str(lake.path), "lake", "check"]).output
    # an unreadable file is an error
    (night_dir / "broken.parquet").write_bytes(b"PAR1 not really")
    res = runner.invoke(main, ["--lake", str(lake.path), "lake", "check"])
    assert res.exit_code == 1 and "unreadable file" in res.output
