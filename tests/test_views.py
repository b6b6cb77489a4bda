"""The versioned SQL views: normalisation, variability statistics and ESE detection, against numpy."""
import numpy as np
import polars as pl
import pytest
from click.testing import CliRunner

from eselake import Lake, Source, detect_ese_candidates
from eselake.cli import main
from eselake.errors import EselakeError
from eselake.lake.derived import refresh
from eselake.sim.lightcurves import Dip, simulate_photometry

PRESETS = ("conservative", "moderate", "sensitive")


def _lake_with(tmp_path, sim, name="lake"):
    lake = Lake(tmp_path / name)
    lake.commit_batch(sim.images, sim.photometry)
    refresh(lake)                          # as every ingest does
    return lake


def _numpy_stats(f, e):
    """Independent computation of every per-source metric (f, e in mJy)."""
    n = f.size
    w = 1 / e**2
    wmean = (w * f).sum() / w.sum()
    std = f.std(ddof=1)
    vs_best = np.nan
    i, j = np.triu_indices(n, 1)
    vs = (f[i] - f[j]) / np.sqrt(e[i] ** 2 + e[j] ** 2)
    m = 2 * (f[i] - f[j]) / (f[i] + f[j])
    sig = np.abs(vs) >= 4.3
    if sig.any():
        vs_best = np.abs(m[sig]).max()
    return {
        "n_obs": n, "mean_flux_mjy": f.mean(), "std_flux_mjy": std, "min_flux_mjy": f.min(),
        "max_flux_mjy": f.max(), "wmean_flux_mjy": wmean,
        "chi2_nu": (w * (f - wmean) ** 2).sum() / (n - 1),
        "eta_metric": n / (n - 1) * ((w * f * f).mean() - (w * f).mean() ** 2 / w.mean()),
        "v_metric": std / f.mean(), "sigma_deviation": np.abs(f - f.mean()).max() / std,
        "vs_max_abs_m": vs_best, "vs_max_abs": np.abs(vs).max(),
    }


def test_metrics_match_numpy(tmp_path):
    # few sources (so no image can be normalised: raw fluxes are used, and counted) with real variability
    sim = simulate_photometry(2, 80, noise_jy=2e-3, frac_noise=0.05, seed=4,
                              dips=[Dip(0, 60020, 25, 0.4)])
    lake = _lake_with(tmp_path, sim)
    stats = lake.sql("SELECT * FROM variability_stats ORDER BY source_id")
    ph = sim.photometry.to_pandas()
    for row in stats.iter_rows(named=True):
        sub = ph[ph.source_id == row["source_id"]]
        ref = _numpy_stats(sub.peak_jyb.to_numpy() * 1000, sub.peak_err_jyb.to_numpy() * 1000)
        for k, v in ref.items():
            if isinstance(v, float) and np.isnan(v):
                assert row[k] is None, k
            else:
                assert row[k] == pytest.approx(v, rel=1e-9), k
        assert row["n_unnormalized"] == 80
        assert row["sigma_deviation"] <= (row["n_obs"] - 1) / np.sqrt(row["n_obs"])
    assert (lake.sql("SELECT norm_flag FROM image_gains")["norm_flag"] == "too_few_refs").all()


def test_normalisation_removes_shared_calibration_error(tmp_path):
    sim = simulate_photometry(40, 200, noise_jy=1e-3, frac_noise=0.01, gain_sigma=0.03, seed=5)
    ph = sim.photometry.to_pandas()
    # a 30% calibration drop shared by every source of 20 consecutive images
    bad = ph.image_id.isin([f"sim-{k:06d}" for k in range(100, 120)])
    ph.loc[bad, "peak_jyb"] *= 0.7
    import pyarrow as pa
    sim.photometry = pa.Table.from_pandas(ph, preserve_index=False)
    lake = _lake_with(tmp_path, sim)
    gains = lake.sql("SELECT image_id, gain, n_refs, norm_ok FROM image_gains ORDER BY image_id")
    assert gains["norm_ok"].all() and gains["n_refs"].min() >= 30
    true_g = sim.gains * np.where(np.isin(np.arange(200), np.arange(100, 120)), 0.7, 1.0)
    # gains recovered up to the overall scale (baselines are medians)
    rel = gains["gain"].to_numpy() / true_g
    assert np.std(rel) < 0.005
    for preset in PRESETS:
        assert detect_ese_candidates(lake, preset=preset).height == 0
    # without normalisation the same data would look like a dip in every source
    depth = lake.sql("SELECT max(depth) AS d FROM ese_search WHERE is_dip")["d"][0]
    assert depth is None or depth < 0.05


def test_injected_dip_found_with_its_edges(tmp_path):
    start, duration = 60130.0, 40.0
    sim = simulate_photometry(30, 300, noise_jy=2e-3, frac_noise=0.03, gain_sigma=0.03, seed=11,
                              dips=[Dip(7, start, duration, 0.30)])
    lake = _lake_with(tmp_path, sim)
    cands = detect_ese_candidates(lake, preset="moderate")
    assert cands["source_id"].to_list() == [sim.source_ids[7]]
    c = cands.row(0, named=True)
    assert abs(c["dip_start_mjd"] - start) <= 5 and abs(c["dip_end_mjd"] - (start + duration)) <= 5
    assert 0.2 < c["depth"] < 0.4 and c["confidence"] == "high"
    assert c["alt_lr"] > 0 and c["fap_per_source_year"] <= 1e-4
    # the seed's view answers the seed's query
    q = ("SELECT e.source_id, e.significance, v.chi2_nu, v.eta_metric, v.n_obs FROM ese_candidates e "
         "JOIN variability_stats v ON e.source_id = v.source_id WHERE e.status = 'active' "
         "ORDER BY e.significance DESC;")
    assert lake.sql(q)["source_id"].to_list() == [sim.source_ids[7]]


def test_white_noise_is_never_a_candidate(tmp_path):
    sim = simulate_photometry(30, 1000, noise_jy=2e-3, frac_noise=0.02, gain_sigma=0.02, seed=3)
    lake = _lake_with(tmp_path, sim)
    for preset in PRESETS:
        assert detect_ese_candidates(lake, preset=preset).height == 0
    # the seed's sigma threshold alone would pass many of them
    assert lake.sql("SELECT count(*) AS n FROM variability_stats WHERE sigma_deviation >= 3")["n"][0] > 0


def test_new_measurements_visible_immediately(tmp_path):
    sim = simulate_photometry(30, 150, noise_jy=2e-3, frac_noise=0.02, seed=2,
                              dips=[Dip(4, 60100, 30, 0.4)])
    lake = Lake(tmp_path / "lake")
    half = sim.images.slice(0, 90)
    ids = set(half.column("image_id").to_pylist())
    first = pl.from_arrow(sim.photometry)["image_id"].is_in(list(ids))
    lake.commit_batch(half, sim.photometry.filter(first.to_arrow()))
    refresh(lake)
    assert detect_ese_candidates(lake).height == 0
    rest = sim.images.slice(90)
    lake.commit_batch(rest, sim.photometry.filter((~first).to_arrow()))
    assert refresh(lake)["mode"] in ("incremental", "full")
    assert detect_ese_candidates(lake)["source_id"].to_list() == [sim.source_ids[4]]


def test_source_api_review_and_cli(tmp_path):
    sim = simulate_photometry(30, 150, noise_jy=2e-3, frac_noise=0.02, seed=2, dips=[Dip(4, 60100, 30, 0.4)],
                              id_prefix="NVSS J1234+42")
    lake = _lake_with(tmp_path, sim)
    sid = sim.source_ids[4]
    s = Source(sid, products_db=lake.path)
    m = s.measurements
    assert m.height == 150 and {"mjd", "peak_jyb", "peak_err_jyb", "normalized_flux_jy"} <= set(m.columns)
    assert m["mjd"].is_sorted()
    assert s.variability["n_obs"] == 150
    with pytest.raises(EselakeError, match="no measurements"):
        Source("nope", lake).measurements
    runner = CliRunner()
    base = ["--lake", str(lake.path)]
    res = runner.invoke(main, base + ["review", sid, "--status", "dismissed", "--notes", "RFI"])
    assert res.exit_code == 0, res.output
    assert detect_ese_candidates(lake, status="active").height == 0
    assert detect_ese_candidates(lake)["status"].to_list() == ["dismissed"]
    runner.invoke(main, base + ["review", sid, "--status", "active"])
    assert lake.sql("SELECT status FROM ese_candidates")["status"].to_list() == ["active"]
    res = runner.invoke(main, base + ["review", "unknown", "--status", "active"])
    assert res.exit_code == 2 and "no measurements" in res.output
    res = runner.invoke(main, base + ["ese-detect", "--preset", "sensitive", "--format", "json"])
    assert res.exit_code == 0 and sid in res.output
    res = runner.invoke(main, base + ["ese-detect", "--source-id", sim.source_ids[0]])
    assert "not an ESE candidate" in res.output
    for fmt in ("csv", "json", "votable", "parquet"):
        out = tmp_path / f"lc.{fmt}"
        res = runner.invoke(main, base + ["export", "--source-id", sid, "--format", fmt, "-o", str(out)])
        assert res.exit_code == 0, res.output
        assert out.stat().st_size > 1000
    back = pl.read_csv(tmp_path / "lc.csv")
    assert back.height == 150
    from astropy.table import Table
    assert len(Table.read(tmp_path / "lc.votable", format="votable")) == 150


def test_relative_lightcurve(tmp_path):
    sim = simulate_photometry(12, 60, noise_jy=1e-3, frac_noise=0.01, gain_sigma=0.1, seed=9)
    import pyarrow as pa
    n = sim.photometry.num_rows
    ph = sim.photometry.append_column("ra_deg", pa.array(np.full(n, 150.0) + np.tile(np.arange(12) * 0.02, 60)))
    ph = ph.append_column("dec_deg", pa.array(np.full(n, 40.0)))
    sim.photometry = ph
    lake = _lake_with(tmp_path, sim)
    rel = Source(sim.source_ids[0], lake).relative_lightcurve(radius_deg=0.5, max_eta=5.0, min_neighbors=3)
    assert rel.height == 60 and rel["n_neighbors"].min() >= 3
    raw_scatter = np.std(rel["peak_jyb"].to_numpy()) / np.mean(rel["peak_jyb"].to_numpy())
    rel_scatter = np.std(rel["relative_flux_jy"].to_numpy()) / np.mean(rel["relative_flux_jy"].to_numpy())
    assert rel_scatter < raw_scatter / 3          # the 10% shared gain errors are divided out
    with pytest.raises(EselakeError, match="stable neighbours"):
        Source(sim.source_ids[0], lake).relative_lightcurve(radius_deg=0.001)


def test_few_references_never_flatten_a_variable_source(tmp_path):
    """With a handful of bright sources, none normalises itself: a strongly variable one keeps its
    variability (it used to be forced flat when it was the median reference), stable ones stay at eta ~ 1, and
    gain errors never collapse to 0."""
    sim = simulate_photometry(6, 150, flux_range_jy=(0.5, 0.6), noise_jy=1e-3, frac_noise=0.005,
                              gain_sigma=0.02, seed=9)
    import pyarrow as pa
    ph = sim.photometry.to_pandas()
    var = ph.source_id == sim.source_ids[2]
    k = ph.loc[var, "image_id"].str[-6:].astype(int).to_numpy()
    ph.loc[var, "peak_jyb"] *= 1.0 + 0.15 * np.sin(k / 7.0)        # a 15% variable among 6 sources
    sim.photometry = pa.Table.from_pandas(ph, preserve_index=False)
    lake = _lake_with(tmp_path, sim)
    eta = dict(lake.sql("SELECT source_id, eta_metric FROM variability_stats").iter_rows())
    assert eta[sim.source_ids[2]] > 100
    stable = [eta[s] for s in sim.source_ids if s != sim.source_ids[2]]
    assert max(stable) < 5
    g = lake.sql("SELECT gain_err FROM image_gains WHERE norm_ok")
    assert g.height >= 130 and g["gain_err"].min() > 0
    # every reference is divided by a gain its own flux did not enter
    rows = lake.sql("SELECT count(*) AS n FROM photometry WHERE gain_leave_one_out")["n"][0]
    assert rows > 0
    # the leave-one-out gain is the median of the other kept references' ratios (numpy, independently)
    con = lake.connect(derived=False)
    try:
        rows = pl.from_arrow(con.sql("""SELECT p.image_id, p.source_id, p.peak_jyb / b.baseline_jyb AS r, p.gain,
                                               p.gain_leave_one_out FROM photometry p
                                        JOIN reference_baselines_current b USING (source_id)""").arrow().read_all())
    finally:
        con.close()
    for (iid,), grp in rows.group_by("image_id"):
        kept = grp.filter(pl.col("gain_leave_one_out"))
        for r in kept.iter_rows(named=True):
            others = kept.filter(pl.col("source_id") != r["source_id"])["r"].to_numpy()
            assert abs(r["gain"] - np.median(others)) < 1e-12


def test_image_gains_against_numpy_with_ties_clipping_and_few_references():
    """image_gains on hand-made images (0-40 references, tied ratios, MAD 0, outliers, flagged and non-reference
    rows) equals numpy: median, MAD clipping, the kept ratios' median and middle three, and gain_err."""
    import duckdb

    from eselake.lake.connect import view_files

    rng = np.random.default_rng(5)
    rows, images = [], []
    for i in range(300):
        img = f"i{i:04d}"
        images.append((img, "ingest", "2024-01-01", 60000.0 + i))
        g = rng.normal(1, 0.05)
        for s in range([0, 1, 2, 3, 4, 5, 6, 7, 40][i % 9]):
            if i % 5 == 0:
                f = round(g * 10, 1)                                     # all tied: MAD 0
            elif i % 5 == 1:
                f = round(g * 10 + rng.normal(0, 0.2), 1)                # some ties
            else:
                f = g * 10 * (1 + rng.normal(0, 0.02)) * (3 if rng.random() < 0.1 else 1)      # outliers
            rows.append((f"s{s:03d}", img, f, abs(rng.normal(0.1, 0.02)), int(rng.random() < 0.05)))
    con = duckdb.connect()
    con.execute("CREATE TABLE measurements (source_id VARCHAR, image_id VARCHAR, peak_jyb DOUBLE, "
                "peak_err_jyb DOUBLE, flags INTEGER)")
    con.executemany("INSERT INTO measurements VALUES (?, ?, ?, ?, ?)", rows)
    con.execute("CREATE TABLE images (image_id VARCHAR, ingest_id VARCHAR, night VARCHAR, mjd DOUBLE)")
    con.executemany("INSERT INTO images VALUES (?, ?, ?, ?)", images)
    con.execute("CREATE TABLE reference_baselines_current AS SELECT 's' || lpad(CAST(i AS VARCHAR), 3, '0') "
                "AS source_id, 10.0 AS baseline_jyb, i % 13 <> 5 AS is_reference FROM range(40) t(i)")
    con.execute(next(v.text for v in view_files() if v.name == "image_gains"))
    got = {r["image_id"]: r for r in pl.from_arrow(con.sql("SELECT * FROM image_gains").to_arrow_table()).to_dicts()}
    m = pl.DataFrame(rows, schema=["source_id", "image_id", "f", "e", "flags"], orient="row")
    m = m.filter((pl.col("flags") == 0) & (pl.col("source_id").str.slice(1).cast(pl.Int64) % 13 != 5))
    by_image = {k[0]: g for k, g in m.group_by("image_id")}
    assert len(got) == 300
    for img, row in got.items():
        if img not in by_image:
            assert row["n_refs"] == 0 and row["gain"] is None and row["norm_flag"] == "too_few_refs"
            continue
        r, fe = by_image[img]["f"].to_numpy() / 10.0, by_image[img]["e"].to_numpy() / 10.0
        med = np.median(r)
        mad = np.median(np.abs(r - med))
        keep = (mad == 0) | (np.abs(r - med) <= 3.0 * 1.4826 * mad)
        k = np.sort(r[keep])
        n, lo = k.size, (k.size - 1) // 2
        assert row["n_refs"] == n and row["clip_med"] == pytest.approx(med) and row["clip_mad"] == pytest.approx(mad)
        assert row["loo_m2"] == pytest.approx(k[lo])
        assert row["loo_m1"] == (pytest.approx(k[lo - 1]) if lo >= 1 else None)
        assert row["loo_m3"] == (pytest.approx(k[lo + 1]) if lo + 1 < n else None)
        if n >= 4:
            gain = np.median(k)
            err = 1.2533 * max(1.4826 * np.median(np.abs(k - gain)), np.median(fe[keep])) / np.sqrt(n)
            assert row["norm_ok"] and row["gain"] == pytest.approx(gain) and row["gain_err"] == pytest.approx(err)
        else:
            assert not row["norm_ok"] and row["gain"] is None


def test_a_source_list_without_sizes_keeps_the_references(tmp_path):
    """A plain source list (no major-axis column: sizes NaN) says nothing about sizes: its sources stay compact,
    so loading it must not take every reference away (every image would be flagged too_few_refs)."""
    from eselake.ingest.catalogs.catalog import parse_catalog

    sim = simulate_photometry(30, 40, noise_jy=1e-3, frac_noise=0.01, gain_sigma=0.03, seed=2)
    lake = _lake_with(tmp_path, sim)
    before = lake.sql("SELECT count(*) FILTER (WHERE is_reference) AS n FROM source_baselines")["n"][0]
    ids = lake.sql("SELECT DISTINCT source_id FROM measurements ORDER BY 1")["source_id"].to_list()
    from astropy.table import Table
    lake.write_catalog("sources", parse_catalog(Table({"name": ids, "ra": [10.0] * len(ids),
                                                       "dec": np.linspace(1, 2, len(ids))}), "sources"))
    refresh(lake, full=True)
    after = lake.sql("SELECT count(*) FILTER (WHERE is_reference) AS n, bool_and(compact) AS c "
                     "FROM source_baselines")
    assert before >= 20 and after["n"][0] == before and after["c"][0]
    assert lake.sql("SELECT bool_and(norm_ok) AS ok FROM image_gains")["ok"][0]
