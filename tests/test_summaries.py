"""Source summaries merged with newer bins give variability_stats exactly as the view computes it from all bins:
moved forward a day at a time, rebuilt after a change to an older day, and through evictions of the pairs
that reach the two-epoch maxima."""
import duckdb
import numpy as np
import polars as pl
import pyarrow as pa
from polars.testing import assert_frame_equal

from eselake.lake import summaries
from eselake.lake.derived import _view_text


def _bins(rng, n_sources, days, *, dips=()):
    """Random daily bins (the daily_lightcurves columns) of ``n_sources`` over ``days``; 1-3 points a day."""
    rows = []
    for s in range(n_sources):
        base = 50.0 + 40.0 * s
        for d in days:
            n = int(rng.integers(1, 4))
            f = base * (1 + 0.05 * rng.standard_normal(n)) * (0.5 if (s, d) in dips else 1.0)
            e = np.exp(rng.uniform(np.log(0.01), np.log(2.0), n))     # some tiny errors: maximal Vs pairs
            w = 1 / e ** 2
            wmean = float((w * f).sum() / w.sum())
            rows.append(dict(source_id=f"S{s:03d}", day=int(d), mjd=d + 0.5, flux_jy=wmean / 1e3,
                             err_jy=float(1 / np.sqrt(w.sum())) / 1e3, n_points=n, mean_f_mjy=float(f.mean()),
                             m2_f=float(((f - f.mean()) ** 2).sum()), sum_w=float(w.sum()), wmean_f_mjy=wmean,
                             wm2_f=float((w * (f - wmean) ** 2).sum()) if n > 1 else 0.0,
                             min_f_mjy=float(f.min()), err_at_min_mjy=float(e[f.argmin()]),
                             max_f_mjy=float(f.max()), err_at_max_mjy=float(e[f.argmax()]),
                             first_mjd=d + 0.1, last_mjd=d + 0.9, n_unnormalized=int(rng.integers(0, 2))))
    return pa.Table.from_pylist(rows)


def _view_stats(bins: pa.Table) -> pl.DataFrame:
    con = duckdb.connect()
    con.register("daily_lightcurves", bins)
    con.execute(_view_text("variability_stats"))
    out = pl.from_arrow(con.sql("SELECT * FROM variability_stats ORDER BY source_id").to_arrow_table())
    con.close()
    return out


def _step(bins: pa.Table, kept: pa.Table | None, until, touched, days):
    con = duckdb.connect()
    con.register("daily_all", bins)
    if kept is not None:
        con.register("kept_sums", kept)
    if touched is not None:
        con.register("_touched", pa.table({"source_id": pa.array(sorted(touched), pa.string())}))
    out = summaries.statistics(con, kept="kept_sums" if kept is not None else None, until_day=until,
                               touched=None if touched is None else "_touched", changed_days=days)
    con.close()
    return out


def _keep(kept: pa.Table, new: pa.Table, changed) -> pa.Table:
    if changed is None:
        return new
    old = pl.from_arrow(kept).filter(~pl.col("source_id").is_in(changed))
    return pl.concat([old, pl.from_arrow(new)]).sort("source_id").to_arrow()


def test_summaries_merged_with_new_days_equal_the_view():
    rng = np.random.default_rng(3)
    # 8 sources over 130 days (more than the 50 two-epoch candidates a side), then 12 more days one at a time;
    # on some new days a source dims by half (its faintest point ever: the minima lists evict their last).
    # S000's 50th faintest and its brightest day have tiny errors (the others 1 mJy), so that pair reaches the
    # largest |Vs|: the first dip evicts its faint member from the candidates
    bins = pl.from_arrow(_bins(rng, 8, range(60000, 60130)))
    s0 = bins.filter(pl.col("source_id") == "S000")
    x, top = s0.sort("min_f_mjy")["day"][49], s0.sort("max_f_mjy")["day"][-1]
    one = pl.col("n_points") == 1
    is0 = pl.col("source_id") == "S000"
    lo = is0 & (pl.col("day") == x)
    hi = is0 & (pl.col("day") == top)
    bins = bins.with_columns(
        pl.when(lo | (hi & one)).then(1e-4).when(is0).then(1.0).otherwise(pl.col("err_at_min_mjy")).alias("err_at_min_mjy"),
        pl.when(hi | (lo & one)).then(1e-4).when(is0).then(1.0).otherwise(pl.col("err_at_max_mjy")).alias("err_at_max_mjy"),
    ).to_arrow()
    stats, kept, until, changed = _step(bins, None, None, None, None)
    assert changed is None and until == 60129 - summaries.RECENT_DAYS + 1
    assert x * 2 in pl.from_arrow(kept).filter(pl.col("source_id") == "S000")["pm_v_keys"][0].to_list()
    assert_frame_equal(pl.from_arrow(stats), _view_stats(bins), check_exact=False, rel_tol=1e-12)
    evicted = 0
    for d in range(60130, 60142):
        dips = {(s, d) for s in range(8) if rng.random() < 0.4 or s == 0}
        new = _bins(rng, 8, [d], dips=dips)
        touched = {f"S{s:03d}" for s in range(8)} if d % 3 else {"S001", "S004"}
        new = new.filter(pa.compute.is_in(new.column("source_id"), pa.array(sorted(touched))))
        bins = pa.concat_tables([bins, new.cast(bins.schema)])
        stats, sums, until2, changed = _step(bins, kept, until, touched, [d])
        assert until2 == d - summaries.RECENT_DAYS + 1 and changed          # moved forward a day
        # a member of a maximal pair left the candidates: the source was paired whole again
        was = pl.from_arrow(kept).select("source_id", "pm_v_keys", "pm_m_keys")
        now = pl.from_arrow(sums).select("source_id", keys=pl.concat_list(pl.col("lo").list.eval(
            pl.element().struct.field("key")), pl.col("hi").list.eval(pl.element().struct.field("key"))))
        j = was.join(now, on="source_id")
        evicted += sum(not set(a or []) <= set(k) or not set(b or []) <= set(k)
                       for a, b, k in j.select("pm_v_keys", "pm_m_keys", "keys").iter_rows())
        kept = _keep(kept, sums, changed)
        until = until2
        want = _view_stats(bins).filter(pl.col("source_id").is_in(sorted(touched)))
        assert_frame_equal(pl.from_arrow(stats), want, check_exact=False, rel_tol=1e-12)
    assert evicted > 0
    # a change to an old day (a re-measured image): the touched sources' summaries are rebuilt
    old = pl.from_arrow(bins)
    old = old.with_columns(pl.when((pl.col("source_id") == "S002") & (pl.col("day") == 60020))
                           .then(pl.col("min_f_mjy") * 0.1).otherwise(pl.col("min_f_mjy")).alias("min_f_mjy"))
    bins = old.to_arrow()
    stats, sums, until2, changed = _step(bins, kept, until, {"S002"}, [60020])
    assert until2 == until and "S002" in changed
    assert_frame_equal(pl.from_arrow(stats), _view_stats(bins).filter(pl.col("source_id") == "S002"),
                       check_exact=False, rel_tol=1e-12)
    kept = _keep(kept, sums, changed)
    # every source from the kept summaries (a tile of the whole survey), nothing to move
    stats, sums, _, changed = _step(bins, kept, until, None, [until])
    assert changed == []
    assert_frame_equal(pl.from_arrow(stats), _view_stats(bins), check_exact=False, rel_tol=1e-12)


def test_ties_in_flux_give_the_view_s_candidates():
    """Many days of exactly equal flux: the 50 candidates are one set (ties broken by day), so a summary of the
    first half merged with the second gives the view's two-epoch maxima."""
    rng = np.random.default_rng(1)
    b = pl.from_arrow(_bins(rng, 1, range(60000, 60120)))
    flat = pl.when(pl.col("day") < 60100).then(10.0).otherwise(100.0)
    b = b.with_columns(n_points=pl.lit(1, pl.Int64), min_f_mjy=flat, max_f_mjy=flat)
    bins = b.with_columns(err_at_max_mjy=pl.col("err_at_min_mjy")).to_arrow()
    _, kept, until, _ = _step(bins.filter(pa.compute.less(bins.column("day"), 60060)), None, None, None, None)
    stats, _, _, _ = _step(bins, kept, until, None, [60119])
    assert_frame_equal(pl.from_arrow(stats).select("vs_max_abs", "vs_max_abs_m"),
                       _view_stats(bins).select("vs_max_abs", "vs_max_abs_m"), check_exact=False, rel_tol=1e-12)


def test_screened_merge_of_a_few_days_equals_the_whole_merge():
    """Merging a summary with a day or two of bins screens the sources first (only those whose candidate lists
    the new bins can change are merged in full): the same summaries as merging every source, with short lists,
    new extremes, NULL fluxes and sources without new bins among them."""
    rng = np.random.default_rng(7)
    old = _bins(rng, 30, range(60000, 60110))
    short = _bins(rng, 3, range(60090, 60110)).to_pylist()           # S000-S002 again: 20 days, lists < 50
    new = pl.from_arrow(pa.concat_tables([_bins(rng, 25, [60110, 60111], dips={(s, 60111) for s in range(0, 25, 4)}),
                                          pa.Table.from_pylist([dict(r, source_id="T" + r["source_id"]) for r in short])]))
    new = new.with_columns(pl.when((pl.col("source_id") == "S007") & (pl.col("day") == 60110)).then(None)
                           .otherwise(pl.col("min_f_mjy")).alias("min_f_mjy")).to_arrow()
    con = duckdb.connect()
    con.register("old_bins", pa.concat_tables([old, pa.Table.from_pylist(
        [dict(r, source_id="T" + r["source_id"]) for r in short[:10]])]))
    con.register("new_bins", new)
    summaries._merge(con, "base", None, "SELECT * FROM old_bins")
    summaries._merge(con, "screened", "SELECT * FROM base", "SELECT * FROM new_bins", days=2)
    con.execute(f"CREATE TABLE whole AS {summaries.MERGE_SQL}")       # the same sum_base and sum_bins views
    a, b = (pl.from_arrow(con.sql(f"SELECT * FROM {t} ORDER BY source_id").to_arrow_table()) for t in ("screened", "whole"))
    assert a.height == 33
    assert_frame_equal(a, b, check_exact=False, rel_tol=1e-12)
    kept = pl.from_arrow(con.sql("SELECT * FROM base ORDER BY source_id").to_arrow_table())
    same = a.join(kept, on="source_id").filter(pl.col("lo") == pl.col("lo_right"), pl.col("hi") == pl.col("hi_right"))
    assert 0 < same.height < 33           # some sources kept their lists, the dimmed ones did not
    assert not set(same["source_id"]) & {f"S{s:03d}" for s in range(0, 25, 4)}
