"""Derived datasets equal their views computed from scratch, after random sequences of ingests, re-ingests,
deletions and compactions, refreshed incrementally."""
import numpy as np
import pytest
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
from click.testing import CliRunner
from polars.testing import assert_frame_equal

from eselake import Lake
from eselake.cli import main
from eselake.lake import maintain
from eselake.lake.derived import refresh
from eselake.lake.lake import fetch_arrow
from eselake.sim.lightcurves import Dip, simulate_photometry

KEYS = {"image_gains": ["image_id"], "daily_lightcurves": ["source_id", "day"],
        "variability_stats": ["source_id"], "measurements": ["source_id", "image_id"]}


def _frame(con, view):
    df = pl.from_arrow(fetch_arrow(con, f"SELECT * FROM {view}"))
    drop = [c for c in ("extremes", "month") if c in df.columns]
    return df.drop(drop).sort(KEYS[view])


def assert_derived_equal_views(lake):
    derived = lake.connect(derived=True)
    scratch = lake.connect(derived=False)
    try:
        assert lake.stale == []
        for view in KEYS:
            a, b = _frame(derived, view), _frame(scratch, view)
            assert a.height == b.height, view
            assert_frame_equal(a.select(b.columns), b, check_exact=False, rel_tol=1e-9, abs_tol=1e-9,
                               check_dtypes=False)
    finally:
        derived.close()
        scratch.close()


def _sim(n_images=30, seed=1):
    return simulate_photometry(25, n_images, cadence_days=0.5, noise_jy=2e-3, frac_noise=0.02, seed=seed,
                               dips=[Dip(3, 60004, 5, 0.4)], id_prefix="NVSS J0000+00 ")


def _rows(sim, image_id):
    return sim.photometry.filter(pc.equal(sim.photometry.column("image_id"), image_id))


def test_random_sequences_keep_derived_equal_to_views(tmp_path):
    rng = np.random.default_rng(7)
    sim = _sim()
    images = sim.images.to_pylist()
    lake = Lake(tmp_path / "lake")
    lake.commit_batch(sim.images.slice(0, 12), sim.photometry.filter(
        pc.is_in(sim.photometry.column("image_id"), sim.images.column("image_id").slice(0, 12))))
    assert refresh(lake)["mode"] == "full"
    assert_derived_equal_views(lake)
    in_lake = [im["image_id"] for im in images[:12]]
    for step in range(8):
        op = rng.choice(["ingest", "reingest", "delete", "compact", "ingest"])
        if op == "ingest" and len(in_lake) < len(images):
            im = images[len(in_lake)]
            lake.commit_image(im, _rows(sim, im["image_id"]))
            in_lake.append(im["image_id"])
        elif op == "reingest":
            im = images[int(rng.integers(len(in_lake)))]
            rows = _rows(sim, im["image_id"])
            scaled = rows.set_column(rows.schema.get_field_index("peak_jyb"), "peak_jyb",
                                     pc.multiply(rows.column("peak_jyb"), float(rng.uniform(0.8, 1.2))))
            moved = dict(im, mjd=im["mjd"] + float(rng.choice([0.0, -1.0, 2.0])))   # maybe to another night
            lake.commit_image(moved, scaled.set_column(scaled.schema.get_field_index("mjd"), "mjd",
                                                        pa.array([moved["mjd"]] * scaled.num_rows)))
        elif op == "delete" and len(in_lake) > 6:
            victim = in_lake.pop(int(rng.integers(len(in_lake))))
            assert lake.delete_images([victim]) == 1
        elif op == "compact":
            maintain.compact(lake)
        res = refresh(lake)
        assert res["mode"] in ("incremental", "current", "full"), res
        assert_derived_equal_views(lake)


def test_refresh_is_incremental_and_reads_derived(tmp_path):
    sim = _sim(n_images=40, seed=3)
    lake = Lake(tmp_path / "lake")
    lake.commit_batch(sim.images.slice(0, 36), sim.photometry.filter(
        pc.is_in(sim.photometry.column("image_id"), sim.images.column("image_id").slice(0, 36))))
    assert refresh(lake)["mode"] == "full"
    im = sim.images.to_pylist()[36]
    lake.commit_image(im, _rows(sim, im["image_id"]))
    # before the refresh, queries compute the stale datasets from the views and say so
    lake.sql("SELECT count(*) FROM variability_stats")
    assert "source_stats" in lake.stale
    out = CliRunner().invoke(main, ["--lake", str(lake.path), "ese-detect", "--format", "csv"])
    assert out.exit_code == 0 and "derived data stale" in out.output          # every face says so
    from eselake import faces
    notes: list[str] = []
    faces.detect(Lake(lake.path), notes=notes)
    assert any("derived data stale" in n for n in notes)                      # the API's and page's notes
    res = refresh(lake)
    assert res["mode"] == "incremental" and res["nights"] == 1
    lake.sql("SELECT count(*) FROM variability_stats")
    assert lake.stale == []
    con = lake.connect()
    sql = con.execute("SELECT sql FROM duckdb_views() WHERE view_name = 'variability_stats'").fetchone()[0]
    con.close()
    assert "d_source_stats" in sql                # served from the derived dataset
    con = lake.connect()
    sql = con.execute("SELECT sql FROM duckdb_views() WHERE view_name = 'measurements'").fetchone()[0]
    con.close()
    assert "d_measurements_by_source" in sql        # one-source lookups read the copy laid out by source
    assert refresh(lake)["mode"] == "current"
    maintain.compact(lake)                          # compaction changes files, not data: still current
    assert refresh(lake)["mode"] == "current"
    info = CliRunner().invoke(main, ["--lake", str(lake.path), "lake", "info", "--format", "csv"])
    assert info.exit_code == 0 and "source_stats" in info.output and "stale" not in info.output
    assert_derived_equal_views(lake)


def test_candidates_are_current_for_other_readers_when_the_refresh_says_so(tmp_path):
    """The refresh says "candidates current" once its candidate list holds the new image: a reader opened at
    that moment is served the kept candidates, equal to the views computed from scratch on its snapshot."""
    from eselake.detection.search import search_lightcurves
    from eselake.lake.derived import derived_state

    sim = _sim(n_images=30, seed=2)
    lake = Lake(tmp_path / "lake")
    lake.commit_batch(sim.images.slice(0, 29), sim.photometry.filter(
        pc.is_in(sim.photometry.column("image_id"), sim.images.column("image_id").slice(0, 29))))
    refresh(lake, full=True)
    im = sim.images.to_pylist()[29]
    lake.commit_image(im, _rows(sim, im["image_id"]))
    seen = []

    def say(msg):
        if msg != "refresh: candidates current":
            return
        reader = Lake(lake.path)
        state = derived_state(reader)
        kept, scratch = reader.connect(derived=True), reader.connect(derived=False)
        try:
            q = "SELECT * FROM {} ORDER BY source_id"
            seen.append((state, pl.from_arrow(fetch_arrow(kept, q.format("ese_search"))),
                         search_lightcurves(fetch_arrow(scratch, q.format("daily_lightcurves")))))
        finally:
            kept.close()
            scratch.close()
    assert refresh(lake, progress=say)["mode"] == "incremental"
    assert len(seen) == 1
    state, kept, scratch = seen[0]
    assert state["ese_candidates"] == "current" and state["ese_search"] == "current"
    assert kept.height == 25 and kept["last_mjd"].max() == pytest.approx(im["mjd"])  # holds the new image
    assert_frame_equal(kept, scratch, check_exact=False, rel_tol=1e-9, abs_tol=1e-9, check_dtypes=False)


def test_full_refresh_rederives_reference_set(tmp_path):
    sim = _sim(n_images=20, seed=5)
    lake = Lake(tmp_path / "lake")
    lake.commit_batch(sim.images, sim.photometry)
    res = CliRunner().invoke(main, ["--lake", str(lake.path), "refresh", "--full"])
    assert res.exit_code == 0 and "full refresh" in res.output, res.output
    con = lake.connect(derived=False)
    try:
        refs = pl.from_arrow(fetch_arrow(con, "SELECT * FROM reference_baselines_current")).sort("source_id")
        scratch = pl.from_arrow(fetch_arrow(con, "SELECT * FROM source_baselines")).sort("source_id")
    finally:
        con.close()
    assert_frame_equal(refs, scratch, check_exact=False, rel_tol=1e-12, check_dtypes=False)


def test_reference_set_of_a_large_survey_reads_only_its_nights(tmp_path, monkeypatch):
    """Past 1000 images the reference set is derived from every k-th night (here every 2nd of 501): the full
    refresh reads only those nights' photometry files and gets the view's answer over the whole lake."""
    from eselake.lake import derived

    sim = simulate_photometry(6, 1503, cadence_days=1 / 3, noise_jy=2e-3, frac_noise=0.02, gain_sigma=0.03, seed=3)
    lake = Lake(tmp_path / "lake")
    lake.commit_batch(sim.images, sim.photometry)
    opened = []
    real = derived.open_connection

    def spy(snaps, *a, **k):
        opened.append((k.get("until"), len(snaps["photometry"].files)))
        return real(snaps, *a, **k)
    monkeypatch.setattr(derived, "open_connection", spy)
    assert refresh(lake, full=True)["mode"] == "full"
    n_files = len(lake.snapshots()["photometry"].files)
    read = dict(opened)["source_baselines"]
    assert 0.4 * n_files <= read <= 0.6 * n_files, (read, n_files)
    con = lake.connect(derived=False)
    try:
        nights = fetch_arrow(con, "SELECT count(*) AS n FROM reference_nights").column("n")[0].as_py()
        refs = pl.from_arrow(fetch_arrow(con, "SELECT * FROM reference_baselines_current")).sort("source_id")
        scratch = pl.from_arrow(fetch_arrow(con, "SELECT * FROM source_baselines")).sort("source_id")
    finally:
        con.close()
    assert nights == 251 and refs.height == 6 and 700 < refs["n_clean"].max() <= 251 * 3
    assert_frame_equal(refs, scratch, check_exact=False, rel_tol=1e-12, check_dtypes=False)


def test_constant_flux_keeps_zero_scatter_when_merged_across_days(tmp_path):
    """Daily central moments merged with Chan's formula: a source of constant flux (10-17 Jy, with 3 images a
    day ingested one at a time) keeps std = 0 in the kept statistics and in the view, where sums of squares
    would leave sqrt(rounding) ~ 1e-4 mJy."""
    sim = simulate_photometry(8, 24, cadence_days=1 / 3, noise_jy=1e-3, seed=2)
    phot = sim.photometry
    const = pc.add(pa.array(np.repeat(np.arange(8.0), 24)), 10.0).cast(phot.schema.field("peak_jyb").type)
    phot = phot.sort_by("source_id").set_column(phot.schema.get_field_index("peak_jyb"), "peak_jyb", const)
    sim = type(sim)(**{**sim.__dict__, "photometry": phot})
    lake = Lake(tmp_path / "lake")
    lake.commit_batch(sim.images.slice(0, 20), sim.photometry.filter(
        pc.is_in(sim.photometry.column("image_id"), sim.images.column("image_id").slice(0, 20))))
    refresh(lake)
    for im in sim.images.to_pylist()[20:]:
        lake.commit_image(im, _rows(sim, im["image_id"]))
        assert refresh(lake)["mode"] == "incremental"
    for derived in (True, False):
        con = lake.connect(derived=derived)
        try:
            n, worst, chi2 = con.execute("SELECT min(n_obs), max(std_flux_mjy), max(chi2_nu) FROM variability_stats"
                                         ).fetchone()
        finally:
            con.close()
        # chi2 within one day comes from weighted sums: absolute error ~ eps * SNR^2 (here SNR ~ 1e4)
        assert n == 24 and worst < 1e-9 and chi2 < 1e-6, (derived, worst, chi2)
    assert_derived_equal_views(lake)


def test_full_refresh_in_parts_equals_views(tmp_path, monkeypatch):
    """A full refresh computes gains and daily bins a few nights at a time (bounded memory); with one night per
    part the result is the same as the views over everything, and a part left behind by a killed refresh is
    never taken as current."""
    from eselake.lake import derived

    monkeypatch.setattr(derived, "CHUNK_BYTES", 1)
    sim = _sim(n_images=16, seed=9)
    lake = Lake(tmp_path / "lake")
    lake.commit_batch(sim.images, sim.photometry)
    nights = len(set(lake.sql("SELECT night FROM images")["night"].to_list()))
    assert len(derived._night_chunks(lake.snapshots())) == nights > 1
    assert refresh(lake, full=True)["mode"] == "full"
    assert_derived_equal_views(lake)
    info = lake.derived_snapshots()["daily_lightcurves"].info
    assert "partial" not in info
    snaps, dsnaps = lake.snapshots(), lake.derived_snapshots()
    partial = dsnaps["daily_lightcurves"]
    partial = type(partial)(**{**partial.__dict__, "info": dict(info, partial=True)})
    assert not derived._is_current(snaps, {**dsnaps, "daily_lightcurves": partial}, "daily_lightcurves")


def test_tile_of_one_field_touches_only_its_sources(tmp_path):
    """Every bin of a tile's night is recomputed, but statistics and search re-run only for the sources whose
    bins changed; after a refresh killed between its commits, every source of the night is redone."""
    sim = _sim(n_images=20, seed=4)
    lake = Lake(tmp_path / "lake")
    lake.commit_batch(sim.images.slice(0, 19), sim.photometry.filter(
        pc.is_in(sim.photometry.column("image_id"), sim.images.column("image_id").slice(0, 19))))
    refresh(lake, full=True)
    im = sim.images.to_pylist()[19]
    rows = _rows(sim, im["image_id"])
    field = sorted(set(rows.column("source_id").to_pylist()))[:7]
    lake.commit_image(im, rows.filter(pc.is_in(rows.column("source_id"), pa.array(field))))
    res = refresh(lake)
    assert res["mode"] == "incremental" and res["sources"] == 7, res
    assert_derived_equal_views(lake)
    # a refresh killed after the daily bins: the statistics are behind the bins, so all sources are redone
    from eselake.lake import derived
    dsnaps = lake.derived_snapshots()
    assert derived._in_step(dsnaps)
    stats = dsnaps["source_stats"]
    behind = {**dsnaps, "source_stats": type(stats)(**{**stats.__dict__, "info": {"sources": {"images": -1}}})}
    assert not derived._in_step(behind)


def test_summaries_move_forward_and_survive_a_refresh_killed_after_them(tmp_path, monkeypatch):
    """Statistics come from the kept summaries of all but the newest days merged with those days' bins: the
    summaries move forward as new days land, are rebuilt for the sources of a re-measured old image, and a
    refresh killed after committing them (before the statistics) is redone to the same numbers as the views."""
    from eselake.lake import derived, summaries

    sim = _sim(n_images=40, seed=21)
    images = sim.images.to_pylist()
    lake = Lake(tmp_path / "lake")
    lake.commit_batch(sim.images.slice(0, 28), sim.photometry.filter(
        pc.is_in(sim.photometry.column("image_id"), sim.images.column("image_id").slice(0, 28))))
    refresh(lake, full=True)

    def until():
        return lake.derived_snapshots()["source_summaries"].info["until_day"]
    first = until()
    newest = int(lake.sql("SELECT max(floor(mjd)) AS d FROM images")["d"][0])
    assert first == newest - summaries.RECENT_DAYS + 1
    assert derived.derived_state(lake)["source_summaries"] == f"kept (days before MJD {first})"
    for im in images[28:32]:
        lake.commit_image(im, _rows(sim, im["image_id"]))
        assert refresh(lake)["mode"] == "incremental"
    assert until() > first
    assert_derived_equal_views(lake)
    # killed between the summaries and the statistics: the summaries moved, the statistics did not
    real = derived._merge_whole

    def killed(lake_, snaps, name, *a, **kw):
        if name == "source_stats":
            raise SystemExit("killed")
        return real(lake_, snaps, name, *a, **kw)
    before = until()
    for im in images[32:35]:
        lake.commit_image(im, _rows(sim, im["image_id"]))
    monkeypatch.setattr(derived, "_merge_whole", killed)
    with pytest.raises(SystemExit):
        refresh(lake)
    monkeypatch.setattr(derived, "_merge_whole", real)
    assert until() > before
    assert refresh(lake)["mode"] == "incremental"
    assert_derived_equal_views(lake)
    # an old image re-measured: its sources' summaries are rebuilt from their bins
    old = _rows(sim, images[2]["image_id"])
    lake.commit_image(images[2], old.set_column(old.schema.get_field_index("peak_jyb"), "peak_jyb",
                                                pc.multiply(old.column("peak_jyb"), 0.5)))
    assert refresh(lake)["mode"] == "incremental"
    assert_derived_equal_views(lake)
    # an old day's images deleted (its bins vanish) and the refresh killed before the summaries: the next
    # refresh cannot see which sources lost a bin, so it redoes every source
    day = lake.sql("SELECT image_id FROM images WHERE floor(mjd) = (SELECT min(floor(mjd)) + 3 FROM images)")
    assert lake.delete_images(day["image_id"].to_list()) == day.height > 0

    def killed_sums(lake_, snaps, name, *a, **kw):
        if name == "source_summaries":
            raise SystemExit("killed")
        return real(lake_, snaps, name, *a, **kw)
    monkeypatch.setattr(derived, "_merge_whole", killed_sums)
    with pytest.raises(SystemExit):
        refresh(lake)
    monkeypatch.setattr(derived, "_merge_whole", real)
    res = refresh(lake)
    assert res["mode"] == "incremental" and res["sources"] == 25, res
    assert_derived_equal_views(lake)


def test_changed_sources_ignores_last_bit_differences_of_recomputed_bins():
    """DuckDB may sum a day's points in another order: bins equal to 1e-9 are unchanged; a new point, a new
    value or a bin gone are changes."""
    from eselake.lake.derived import _changed_sources
    old = pa.table({"source_id": ["A", "B", "C", "D"], "day": [1, 1, 1, 1], "flux_jy": [0.1, 0.2, 0.3, 0.4],
                    "n_points": [3, 3, 3, 3], "mjd": [1.5, 1.5, 1.5, None]})
    new = pa.table({"source_id": ["A", "B", "C"], "day": [1, 1, 1],
                    "flux_jy": [0.1 * (1 + 1e-14), 0.2 * (1 + 1e-6), 0.3], "n_points": [3, 3, 4],
                    "mjd": [1.5, 1.5, 1.5]})
    assert _changed_sources(old, new) == {"B", "C", "D"}
    assert _changed_sources(None, new) == {"A", "B", "C"}


def test_image_split_across_nights_by_a_killed_remeasurement(tmp_path, monkeypatch):
    """A re-measurement into another night killed between its photometry and images commits leaves the
    image's rows in one night and its images row in another (the measurements view joins them by image_id).
    Incremental refreshes of either night, a full refresh a night at a time and a rebuild of the by-source
    copy a year at a time must still see the whole image."""
    import shutil

    from eselake.lake import delta, derived

    sim = _sim(n_images=24, seed=12)
    images = sim.images.to_pylist()
    lake = Lake(tmp_path / "lake")
    lake.commit_batch(sim.images.slice(0, 20), sim.photometry.filter(
        pc.is_in(sim.photometry.column("image_id"), sim.images.column("image_id").slice(0, 20))))
    refresh(lake, full=True)
    real = delta.commit

    def killed(root, name, table, **kw):             # the images commit of this re-measurement never happens
        if name == "images":
            raise SystemExit("killed")
        return real(root, name, table, **kw)
    im = images[5]
    moved = dict(im, mjd=im["mjd"] + 400.0)          # another night, month and year
    rows = _rows(sim, im["image_id"])
    rows = rows.set_column(rows.schema.get_field_index("mjd"), "mjd", pa.array([moved["mjd"]] * rows.num_rows))
    monkeypatch.setattr(delta, "commit", killed)
    with pytest.raises(SystemExit):
        lake.commit_image(moved, rows)
    monkeypatch.setattr(delta, "commit", real)
    nights = lake.sql("SELECT DISTINCT night FROM photometry_files WHERE image_id = ?", [im["image_id"]])["night"]
    assert nights.to_list() != lake.sql("SELECT night FROM images WHERE image_id = ?", [im["image_id"]])["night"].to_list()
    assert refresh(lake)["mode"] == "incremental"
    assert_derived_equal_views(lake)
    # a new image in the night of the moved rows only (their images row is in the other night)
    late = dict(images[20], mjd=moved["mjd"] + 0.01)
    late_rows = _rows(sim, late["image_id"])
    late_rows = late_rows.set_column(late_rows.schema.get_field_index("mjd"), "mjd",
                                     pa.array([late["mjd"]] * late_rows.num_rows))
    lake.commit_image(late, late_rows)
    assert refresh(lake)["mode"] == "incremental"
    assert_derived_equal_views(lake)
    # a new image in the night of the images row only
    lake.commit_image(dict(images[21], mjd=im["mjd"] + 0.01), _rows(sim, images[21]["image_id"]).set_column(
        sim.photometry.schema.get_field_index("mjd"), "mjd", pa.array([im["mjd"] + 0.01] * 25)))
    assert refresh(lake)["mode"] == "incremental"
    assert_derived_equal_views(lake)
    # a full refresh a night at a time, and the by-source copy rebuilt a year at a time
    monkeypatch.setattr(derived, "CHUNK_BYTES", 1)
    shutil.rmtree(lake.dataset_dir("measurements_by_source"))
    assert refresh(lake, full=True)["mode"] == "full"
    assert_derived_equal_views(lake)


def test_refresh_without_change_feed_is_full(tmp_path, monkeypatch):
    """A re-measurement killed before its images row changes only photometry: where the change data feed since
    the last refresh is gone, the refresh cannot tell which nights changed and recomputes everything."""
    from eselake.lake import derived

    sim = _sim(n_images=12, seed=6)
    lake = Lake(tmp_path / "lake")
    lake.commit_batch(sim.images, sim.photometry)
    refresh(lake)
    im = sim.images.to_pylist()[4]
    rows = _rows(sim, im["image_id"])
    lake.commit_batch(pa.Table.from_pylist([im]), rows.set_column(
        rows.schema.get_field_index("peak_jyb"), "peak_jyb", pc.multiply(rows.column("peak_jyb"), 1.3)))
    monkeypatch.setattr(derived, "_cdf_rows", lambda *a: None)
    assert refresh(lake)["mode"] == "full"
    assert_derived_equal_views(lake)


def _assert_files_sorted_by_source(lake, *, ranges: bool = True):
    """Every file of the by-source copy holds its rows sorted by (source_id, mjd); with ``ranges`` the files of
    each partition (a year, or a year's recent rows) hold disjoint ranges of sources (no source cut between
    two files)."""
    import pyarrow.parquet as pq

    snap = lake.derived_snapshots()["measurements_by_source"]
    assert snap.files
    spans = []
    for f in snap.files:
        t = pl.from_arrow(pq.read_table(f, columns=["source_id", "mjd"]))
        assert t.equals(t.sort(["source_id", "mjd"])), f
        spans.append((_part(f), t["source_id"][0], t["source_id"][-1]))
    if ranges:
        spans.sort()
        for (q0, _, hi), (q1, lo, _) in zip(spans, spans[1:]):
            assert q0 != q1 or hi < lo, (q0, hi, lo)


def _part(path: str) -> str:
    return path.split("year=")[1].split("/")[0]


def _assert_lookups_narrowed(lake, ids):
    """A one-source read (Lake.sql's source_id) opens fewer files than the copy has and answers as the
    whole copy does."""
    q = "SELECT * FROM photometry WHERE source_id = ? ORDER BY mjd"
    n_sources = lake.sql("SELECT count(DISTINCT source_id) AS n FROM photometry")["n"][0]
    for sid in ids:
        narrowed = lake.sql(q, [sid], source_id=sid)
        files = lake._source_files(sid)
        assert files is not None and len(files) < len(lake.derived_snapshots()["measurements_by_source"].files)
        assert narrowed.height > 0 and narrowed.equals(lake.sql(q, [sid]))
        lake.sql(q, [sid], source_id=sid)          # the next query without source_id reads every source again
        assert lake.sql("SELECT count(DISTINCT source_id) AS n FROM photometry")["n"][0] == n_sources
    assert lake.sql(q, ["NVSS J9999+99 none"], source_id="NVSS J9999+99 none").height == 0


def test_write_files_cuts_between_sources(tmp_path):
    """write_files starts a new file only where the sorted key changes, across batch boundaries, once a file
    holds max_rows; input failing part-way leaves no file behind."""
    import pyarrow.parquet as pq

    from eselake.lake import delta

    keys = ["a"] * 5 + ["b"] + ["c"] * 4 + ["d"] * 3
    schema = pa.schema([("source_id", pa.string()), ("x", pa.int64())])
    batches = [pa.record_batch([pa.array(keys[i:i + 2]), pa.array(range(i, min(i + 2, len(keys))))], schema=schema)
               for i in range(0, len(keys), 2)]
    counter = iter(range(100))

    def next_file(folder=tmp_path / "ok"):
        folder.mkdir(exist_ok=True)
        k = next(counter)
        return f"f{k}.parquet", folder / f"f{k}.parquet"
    names, _ = delta.write_files(next_file, pa.RecordBatchReader.from_batches(schema, batches), max_rows=3,
                                 cut_on="source_id")
    files = [pq.read_table(tmp_path / "ok" / n) for n in names]
    assert [sorted(set(t.column("source_id").to_pylist())) for t in files] == [["a"], ["b", "c"], ["d"]]
    assert pa.concat_tables(files).column("x").to_pylist() == list(range(len(keys)))

    def failing():
        yield from batches[:4]
        raise ValueError("input failed")
    with pytest.raises(ValueError):
        delta.write_files(lambda: next_file(tmp_path / "failed"), pa.RecordBatchReader.from_batches(schema, failing()),
                          max_rows=3, cut_on="source_id")
    assert list((tmp_path / "failed").iterdir()) == []


def _lookup_lake(tmp_path, monkeypatch, sim, **limits):
    """A lake of the first 60 images of ``sim``, refreshed, with by-source files of 200 rows and the by-source
    ``limits`` of eselake.lake.derived set; returns it, the image ids and the sorted source ids."""
    from eselake.lake import derived

    for name, value in dict(limits, LOOKUP_FILE_ROWS=200).items():
        monkeypatch.setattr(derived, name, value)
    ids = sim.images.column("image_id")
    lake = Lake(tmp_path / "lake")
    lake.commit_batch(sim.images.slice(0, 60), sim.photometry.filter(pc.is_in(sim.photometry.column("image_id"),
                                                                               ids.slice(0, 60))))
    refresh(lake)
    return lake, ids, sorted(set(sim.photometry.column("source_id").to_pylist()))


def test_lookup_copy_stays_sorted_by_source(tmp_path, monkeypatch):
    """delta-rs's writer does not keep the order of many input batches: the by-source copy is written sorted
    (each year in files of source ranges) whether built whole, updated by a few rows (into the year's recent
    partition) or by many (the year rewritten), and compaction merges a year's recent files, or rewrites the
    year once they hold RECENT_SHARE of it."""
    from eselake.lake import derived

    sim = simulate_photometry(30, 81, start_mjd=60200.0, cadence_days=6.0, noise_jy=2e-3, seed=11,
                              id_prefix="NVSS J0000+00 ")
    lake, ids, sources = _lookup_lake(tmp_path, monkeypatch, sim, LOOKUP_ROWS_AT_ONCE=100)

    def land(sl):
        rows = sim.photometry.filter(pc.is_in(sim.photometry.column("image_id"), ids[sl]))
        lake.commit_batch(sim.images[sl], rows)
        res = refresh(lake)
        return res, lake.derived_snapshots()["measurements_by_source"]
    snap = lake.derived_snapshots()["measurements_by_source"]
    years = {_part(f) for f in snap.files}
    assert len(years) == 2 and len(snap.files) >= 3 * len(years)      # years cut into source ranges
    _assert_files_sorted_by_source(lake)
    _assert_lookups_narrowed(lake, [sources[0], sources[13], sources[-1]])
    # two small updates: the new rows go to the last year's recent partition, earlier files untouched
    last = max(years)
    for sl in (slice(60, 61), slice(61, 62)):
        before = set(lake.derived_snapshots()["measurements_by_source"].files)
        res, snap = land(sl)
        assert res["mode"] == "incremental" and before < set(snap.files)
        assert {_part(f) for f in set(snap.files) - before} == {last + derived.RECENT}
        _assert_files_sorted_by_source(lake, ranges=False)
        assert_derived_equal_views(lake)
    _assert_lookups_narrowed(lake, [sources[5]])
    # the two recent files overlap: compaction merges them alone (the year's files are not rewritten)
    assert derived._lookup_to_compact(snap) == {last: False}
    kept = {f for f in snap.files if _part(f) == last}
    got = maintain.compact(lake)["measurements_by_source"]
    snap = lake.derived_snapshots()["measurements_by_source"]
    assert got["removed"] == 2 and kept <= set(snap.files) and not derived._lookup_to_compact(snap)
    _assert_files_sorted_by_source(lake)
    assert_derived_equal_views(lake)
    # many rows (over LOOKUP_ROWS_AT_ONCE): the year rewritten whole, its recent partition emptied
    res, snap = land(slice(62, 72))
    assert res["mode"] == "incremental" and not any(_part(f).endswith(derived.RECENT) for f in snap.files)
    _assert_files_sorted_by_source(lake)
    assert_derived_equal_views(lake)
    # recent rows reaching RECENT_SHARE of their year: compaction rewrites the year whole
    monkeypatch.setattr(derived, "RECENT_SHARE", 0.01)
    res, snap = land(slice(72, 73))
    assert derived._lookup_to_compact(snap) == {last: True}
    maintain.compact(lake)
    snap = lake.derived_snapshots()["measurements_by_source"]
    assert not derived._lookup_to_compact(snap) and not any(_part(f).endswith(derived.RECENT) for f in snap.files)
    _assert_files_sorted_by_source(lake)
    assert_derived_equal_views(lake)
    _assert_lookups_narrowed(lake, sources[::7])
    # an early image re-measured, another deleted: delta-rs rewrites the files holding them, and compaction
    # rewrites their year whole (delta-rs's writer may not keep the order)
    first = min(years)
    im = sim.images.slice(2, 1)
    rows = sim.photometry.filter(pc.equal(sim.photometry.column("image_id"), ids[2]))
    lake.commit_batch(im, rows.set_column(rows.schema.get_field_index("peak_jyb"), "peak_jyb",
                                          pc.multiply(rows.column("peak_jyb"), 1.2)))
    lake.delete_images([ids[4].as_py()])
    assert refresh(lake)["mode"] == "incremental"
    assert_derived_equal_views(lake)
    snap = lake.derived_snapshots()["measurements_by_source"]
    assert derived._lookup_to_compact(snap).get(first) is True
    maintain.compact(lake)
    snap = lake.derived_snapshots()["measurements_by_source"]
    assert not derived._lookup_to_compact(snap)
    _assert_files_sorted_by_source(lake)
    assert_derived_equal_views(lake)
    _assert_lookups_narrowed(lake, sources[::9])
    # a copy of another layout: not compacted (no error), rebuilt by the next refresh
    monkeypatch.setattr(derived, "LOOKUP_LAYOUT", derived.LOOKUP_LAYOUT + 1)
    assert derived.derived_state(lake)["measurements_by_source"].startswith("stale")
    assert "measurements_by_source" not in maintain.compact(lake)
    refresh(lake)
    assert derived.derived_state(lake)["measurements_by_source"] == "current"
    _assert_files_sorted_by_source(lake)
    assert_derived_equal_views(lake)


def test_refresh_merges_a_year_s_recent_files_before_lookups_read_too_many(tmp_path, monkeypatch):
    """Every refresh that adds rows adds a file to its year's recent partition, and a one-source lookup reads
    each of them: once they outnumber LOOKUP_RECENT_FILES the refresh merges them (their rows only, the year's
    files untouched), so the count stays bounded at any rate of tiles, and the copy stays equal to its view."""
    from eselake.lake import derived

    sim = simulate_photometry(30, 70, start_mjd=60330.0, cadence_days=0.5, noise_jy=2e-3, seed=12,
                              id_prefix="NVSS J0000+00 ")
    lake, ids, sources = _lookup_lake(tmp_path, monkeypatch, sim, LOOKUP_RECENT_FILES=3)
    year = {_part(f) for f in lake.derived_snapshots()["measurements_by_source"].files}
    assert len(year) == 1
    year = year.pop()
    kept = set(lake.derived_snapshots()["measurements_by_source"].files)
    counts = []
    for i in range(60, 68):
        lake.commit_batch(sim.images.slice(i, 1), sim.photometry.filter(pc.equal(sim.photometry.column("image_id"),
                                                                                  ids[i])))
        assert refresh(lake)["mode"] == "incremental"
        snap = lake.derived_snapshots()["measurements_by_source"]
        counts.append(sum(_part(f) == year + derived.RECENT for f in snap.files))
        assert kept <= set(snap.files)                  # the year's own files are not rewritten
    assert max(counts) == 3 and counts[:4] == [1, 2, 3, 1]     # the fourth merged with the three before
    # recent rows beyond what a refresh rewrites at once: left to `lake compact`
    monkeypatch.setattr(derived, "LOOKUP_ROWS_AT_ONCE", 200)
    for i in range(68, 70):
        lake.commit_batch(sim.images.slice(i, 1), sim.photometry.filter(pc.equal(sim.photometry.column("image_id"),
                                                                                  ids[i])))
        refresh(lake)
    snap = lake.derived_snapshots()["measurements_by_source"]
    assert sum(_part(f) == year + derived.RECENT for f in snap.files) == counts[-1] + 2 > 3
    _assert_files_sorted_by_source(lake, ranges=False)
    assert_derived_equal_views(lake)
    _assert_lookups_narrowed(lake, sources[::6])


def test_long_lived_connection_holds_the_gains_and_follows_every_change(tmp_path):
    """A process's connection (a server, a notebook) holds image gains and reference baselines in memory; after
    each re-measurement and refresh by another writer its lightcurves equal the views computed from scratch."""
    sim = _sim(n_images=16, seed=4)
    writer = Lake(tmp_path / "lake")
    writer.commit_batch(sim.images, sim.photometry)
    refresh(writer)
    reader = Lake(tmp_path / "lake")
    q = "SELECT source_id, image_id, normalized_flux_jy, gain FROM photometry ORDER BY source_id, image_id"
    sid = sim.photometry.column("source_id")[0].as_py()
    one = q.replace("ORDER BY", "WHERE source_id = ? ORDER BY")
    for k, image in enumerate(sim.images.to_pylist()[:3]):
        held = reader._sync().sql("SELECT table_name FROM duckdb_tables() WHERE temporary").fetchall()
        assert {("_held_image_gains",), ("_held_reference_baselines",)} <= set(held)
        scratch = writer.connect(derived=False)
        try:
            want = pl.from_arrow(fetch_arrow(scratch, q))
        finally:
            scratch.close()
        assert_frame_equal(reader.sql(q), want, check_exact=False, rel_tol=1e-9)
        assert_frame_equal(reader.sql(one, [sid], source_id=sid), want.filter(pl.col("source_id") == sid),
                           check_exact=False, rel_tol=1e-9)
        rows = _rows(sim, image["image_id"])         # re-measured 30 % brighter: its gain changes
        writer.commit_image(image, rows.set_column(rows.schema.get_field_index("peak_jyb"), "peak_jyb",
                                                   pc.multiply(rows.column("peak_jyb"), 1.3)))
        assert refresh(writer)["mode"] == "incremental"


def test_lake_emptied_of_every_image_has_current_empty_derived_data(tmp_path):
    """Deleting every image leaves no stale derived data behind: the refresh empties them (before, the ESE
    search of deleted images was still served, said to be stale, for good)."""
    from eselake.lake.derived import derived_state

    sim = _sim(n_images=6)
    lake = Lake(tmp_path / "lake")
    lake.commit_batch(sim.images, sim.photometry)
    refresh(lake)
    assert lake.sql("SELECT count(*) AS n FROM ese_search")["n"][0] == 25
    lake.delete_images(sim.images.column("image_id").to_pylist())
    refresh(lake)
    state = derived_state(lake)
    assert not [n for n, s in state.items() if s.startswith("stale")], state
    for view in ("ese_search", "variability_stats", "daily_lightcurves", "ese_candidates"):
        assert lake.sql(f"SELECT count(*) AS n FROM {view}")["n"][0] == 0, view
    assert lake.stale == []
    lake.commit_batch(sim.images, sim.photometry)             # and it fills again
    refresh(lake)
    assert_derived_equal_views(lake)
